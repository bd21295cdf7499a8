"""New connections while the hub is busy: Courtyard against JupyterHub 6.

A hub that serves its existing keep-alive connections well can still leave new ones waiting in
the kernel's accept queue: a user who opens a page while others hammer the API waits for the
hub to accept, not for it to answer. This script measures exactly that, side by side.

For each hub, one after the other (never both at once), on a fresh database with a few users:

1. ``--clients`` keep-alive clients (default 500, in two load processes) connect all at once
   and each sends ``GET /hub/api/users/{name}`` back to back for ``--seconds``.
2. Meanwhile a probe opens a NEW connection every 50 ms and sends one ``GET /hub/api/``; the
   figure is the time from ``connect()`` to the whole answer (the TCP handshake completes in
   the kernel, so nearly all of it is time in the accept queue plus one request).
3. The listening socket's accept queue is sampled from ``/proc/net/tcp`` every 50 ms.

Printed per hub: new-connection latency (p50, p99, max, how many over 1 s), the load's own
req/s and p99, the time until all clients of the initial burst had their first answer, the
longest accept queue seen, and errors. ``--floor`` adds the same run against a bare
uvicorn+Starlette app answering a constant (no hub at all).

    python bench/connect.py                      # both hubs, 500 clients, 20 s each
    python bench/connect.py --only courtyard --clients 200 --seconds 10
    python bench/connect.py --via proxy          # through each hub's proxy (CHP for JupyterHub)
    python bench/connect.py --only courtyard --baseline 18a5b5a   # against Courtyard at 18a5b5a
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    HUBS,
    Connection,
    HubFailed,
    HubRun,
    baseline,
    checked_baseline_hub,
    ensure_environment,
)

USERS = 50
PROBE_EVERY = 0.05
LOAD_PROCESSES = 2


# --------------------------------------------------------------------------- load process


async def load(port: int, clients: int, seconds: float, users: int) -> dict[str, float]:
    """``clients`` connections at once, each sending GETs back to back until ``seconds``."""
    latencies: list[float] = []
    errors = 0
    first_answers: list[float] = []
    began = time.perf_counter()
    deadline = began + seconds

    async def client(i: int) -> None:
        nonlocal errors
        conn = Connection(port)
        clock = time.perf_counter
        answered = False
        try:
            while (sent := clock()) < deadline:
                try:
                    status, _ = await conn.request("GET", f"/hub/api/users/user{i % users}")
                except (OSError, asyncio.IncompleteReadError):
                    errors += 1
                    await conn.close()
                    continue
                now = clock()
                latencies.append(now - sent)
                if status != 200:
                    errors += 1
                if not answered:
                    answered = True
                    first_answers.append(now - began)
        finally:
            await conn.close()

    await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "seconds": elapsed,
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else 0.0,
        "all_answered_s": max(first_answers) if len(first_answers) == clients else -1.0,
    }


# --------------------------------------------------------------------------- probe


def accept_queue(port: int) -> int | None:
    """Connections waiting in the accept queue of the socket listening on ``port``."""
    hex_port = f"{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[1].endswith(":" + hex_port) and fields[3] == "0A":  # LISTEN
                return int(fields[4].split(":")[1], 16)
    return None


async def probe_once(port: int) -> float | None:
    """Seconds from connect() to a whole ``GET /hub/api/`` answer on a new connection."""
    began = time.perf_counter()
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), timeout=120)
        writer.write(b"GET /hub/api/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        reply = await asyncio.wait_for(reader.read(), timeout=120)
        writer.close()
    except (TimeoutError, OSError):
        return None
    if not reply.startswith(b"HTTP/1.1 200"):
        return None
    return time.perf_counter() - began


async def measure(port: int, clients: int, seconds: float) -> dict[str, object]:
    """Start the load processes, probe and sample until they finish; the figures."""
    share = [clients // LOAD_PROCESSES + (i < clients % LOAD_PROCESSES)
             for i in range(LOAD_PROCESSES)]
    procs = [await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--load", str(port), str(n), str(seconds), str(USERS),
        stdout=subprocess.PIPE) for n in share if n]
    probes: list[asyncio.Task[float | None]] = []
    queue_max = 0
    began = time.perf_counter()
    while time.perf_counter() - began < seconds:
        probes.append(asyncio.create_task(probe_once(port)))
        queue_max = max(queue_max, accept_queue(port) or 0)
        await asyncio.sleep(PROBE_EVERY)
    outputs = [json.loads((await p.communicate())[0]) for p in procs]
    done = await asyncio.gather(*probes)
    times = sorted(t for t in done if t is not None)
    requests = sum(o["requests"] for o in outputs)
    answered = [o["all_answered_s"] for o in outputs]
    return {
        "new_p50_ms": round(1000 * statistics.median(times), 1) if times else None,
        "new_p99_ms": round(1000 * times[int(len(times) * 0.99)], 1) if times else None,
        "new_max_ms": round(1000 * times[-1], 1) if times else None,
        "new_over_1s": sum(t > 1 for t in times),
        "new_failed": len(done) - len(times),
        "probes": len(done),
        "load_per_s": round(requests / max(o["seconds"] for o in outputs)),
        "load_p99_ms": round(max(o["p99_ms"] for o in outputs), 1),
        "load_errors": sum(o["errors"] for o in outputs),
        "burst_all_answered_s": round(max(answered), 2) if min(answered) >= 0 else None,
        "accept_queue_max": queue_max,
    }


# --------------------------------------------------------------------------- hubs


async def create_users(port: int) -> None:
    conn = Connection(port)
    try:
        for i in range(USERS):
            status, _ = await conn.request("POST", f"/hub/api/users/user{i}")
            if status != 201:
                raise RuntimeError(f"creating user{i} answered {status}")
    finally:
        await conn.close()


def run_hub(hub: str, clients: int, seconds: float, via: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix=f"bench-connect-{hub}-") as tmp:
        run = HubRun(hub, Path(tmp))
        run.write_config()
        try:
            run.start(timeout=60)
            run.settle()
            asyncio.run(create_users(run.hub_port))
            port = run.hub_port if via == "hub" else run.port
            return asyncio.run(measure(port, clients, seconds))
        finally:
            run.stop()


FLOOR_APP = """
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
async def ok(request):
    return JSONResponse({"version": "floor"})
app = Starlette(routes=[Route("/hub/api/", ok), Route("/hub/api/users/{name}", ok)])
"""


def run_floor(clients: int, seconds: float) -> dict[str, object]:
    """The same load against uvicorn+Starlette answering a constant: no hub at all."""
    with tempfile.TemporaryDirectory(prefix="bench-connect-floor-") as tmp:
        (Path(tmp) / "floorapp.py").write_text(FLOOR_APP)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "floorapp:app", "--port", str(port),
             "--loop", "uvloop", "--log-level", "warning", "--no-access-log"], cwd=tmp)
        try:
            deadline = time.perf_counter() + 30
            while time.perf_counter() < deadline:
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.05)
            return asyncio.run(measure(port, clients, seconds))
        finally:
            proc.terminate()
            proc.wait(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=HUBS, action="append")
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--via", choices=["hub", "proxy"], default="hub",
                        help="load the hub port (default) or the proxy's public port")
    parser.add_argument("--floor", action="store_true", help="also measure a bare uvicorn app")
    parser.add_argument("--baseline", metavar="REF",
                        help="also measure Courtyard at git ref REF (see bench/README.md)")
    parser.add_argument("--load", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load:
        port, clients, seconds, users = args.load
        global USERS
        USERS = int(users)
        print(json.dumps(asyncio.run(load(int(port), int(clients), float(seconds), USERS))))
        return 0
    hubs = args.only or list(HUBS)
    base = checked_baseline_hub(parser, args.baseline)
    if base is not None:
        hubs.append(base)
    ensure_environment(hubs)
    results: dict[str, dict[str, object]] = {}
    for hub in hubs:
        print(f"{hub}: {args.clients} clients for {args.seconds:.0f} s on the {args.via} port ...",
              flush=True)
        try:
            results[hub] = run_hub(hub, args.clients, args.seconds, args.via)
        except HubFailed as e:
            print(f"  {hub} failed: {e}", file=sys.stderr)
            return 1
        print("  " + json.dumps(results[hub]), flush=True)
    if args.floor:
        results["floor"] = run_floor(args.clients, args.seconds)
        print("  floor: " + json.dumps(results["floor"]), flush=True)
    keys = list(next(iter(results.values())))
    width = max(14, *(len(h) + 2 for h in results))
    print(f"\n{'figure':<22}" + "".join(f"{h:>{width}}" for h in results))
    for key in keys:
        print(f"{key:<22}" + "".join(f"{r[key]!s:>{width}}" for r in results.values()))
    out = Path(__file__).parent / "results" / f"connect-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    saved: dict[str, object] = {"clients": args.clients, "seconds": args.seconds, "via": args.via,
                                "cpus": os.cpu_count(), "results": results}
    if base is not None:
        saved["baseline"] = baseline(base).commit
    out.write_text(json.dumps(saved, indent=2))
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
