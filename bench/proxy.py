"""Benchmark: a trivial backend directly, through configurable-http-proxy, through ours.

    python bench/proxy.py [--duration 10] [--connections 64] [--workers N] [--baseline REF]

Runs ``wrk -c64 -d10s`` against each (Debian package ``wrk``), then a WebSocket echo
round-trip test when the ``websockets`` package is installed, and prints req/s, p99
latency, the ratios against CHP and against direct, and each proxy's RSS afterwards.
CHP is installed into bench/.node with npm when it is missing.

With ``--baseline REF`` Courtyard's proxy at git ref REF (bench/README.md) runs too, and each
figure gets its ratio against it ("vs base"); this checkout's proxy then runs with
bench/.venv-courtyard's Python, so that both use the same libraries.

The backend is a raw uvloop + httptools server answering a 13-byte body; it does more than
50k req/s here, so it is not what limits the proxies.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from harness import COURTYARD_BIN, baseline, checked_baseline_hub, ensure_environment  # noqa: E402

ROOT = HERE.parent
CHP = HERE / ".node/node_modules/.bin/configurable-http-proxy"
TOKEN = "bench-token"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world!"


# -- the backend (runs in a child process: python bench/proxy.py --backend PORT WSPORT) --------


def run_backend(port: int, ws_port: int) -> None:
    import httptools

    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass

    class Hello(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)

        def data_received(self, data: bytes) -> None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.transport.close()

        def on_message_complete(self) -> None:
            self.transport.write(RESPONSE)  # type: ignore[attr-defined]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await loop.create_server(Hello, "127.0.0.1", port, backlog=4096)
        try:
            import websockets

            async def echo(ws) -> None:  # type: ignore[no-untyped-def]
                async for message in ws:
                    await ws.send(message)

            await websockets.serve(echo, "127.0.0.1", ws_port)
        except ImportError:
            pass
        await asyncio.Future()

    asyncio.run(main())


# -- helpers ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port}")


def tree_rss_mib(pid: int) -> float:
    """RSS of ``pid`` and its descendants (our proxy has worker processes)."""
    pids, total = [pid], 0
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,rss="], capture_output=True, text=True)
    rows = [tuple(map(int, line.split())) for line in out.stdout.splitlines() if line.strip()]
    i = 0
    while i < len(pids):
        pids.extend(p for p, pp, _ in rows if pp == pids[i])
        i += 1
    total = sum(rss for p, _, rss in rows if p in pids)
    return total / 1024


def ensure_chp() -> str:
    if not CHP.exists():
        if not shutil.which("npm"):
            raise SystemExit("npm is needed to install configurable-http-proxy")
        print("installing configurable-http-proxy into bench/.node ...", file=sys.stderr)
        subprocess.run(
            [
                "npm",
                "install",
                "--silent",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(HERE / ".node"),
                "configurable-http-proxy",
            ],
            check=True,
        )
    return str(CHP)


_LAT = re.compile(r"^\s*99%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(url: str, duration: int, connections: int, close: bool = False) -> tuple[float, float, str]:
    """(req/s, p99 ms, errors line) from one wrk run; ``close``: a new connection per request."""
    extra = ["-H", "Connection: close"] if close else []
    out = subprocess.run(
        ["wrk", f"-c{connections}", f"-d{duration}s", "-t2", "--latency", *extra, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(_RPS.search(out).group(1))  # type: ignore[union-attr]
    lat = _LAT.search(out)
    p99 = float(lat.group(1)) * _UNIT[lat.group(2)] if lat else float("nan")
    errors = " ".join(line.strip() for line in out.splitlines() if "errors" in line or "Non-2xx" in line)
    return rps, p99, errors


async def ws_echo(url: str, conns: int = 8, messages: int = 2000) -> tuple[float, float]:
    """(messages/s, p99 round trip ms) for ``conns`` clients each echoing ``messages``."""
    import websockets

    latencies: list[float] = []
    payload = b"x" * 100

    async def one() -> None:
        async with websockets.connect(url) as ws:
            for _ in range(messages):
                t = time.perf_counter()
                await ws.send(payload)
                await ws.recv()
                latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(conns)))
    elapsed = time.perf_counter() - start
    p99 = statistics.quantiles(latencies, n=100)[98] * 1000
    return conns * messages / elapsed, p99


def add_route(api_port: int, path: str, target: str) -> None:
    import httpx

    r = httpx.post(
        f"http://127.0.0.1:{api_port}/api/routes{path}",
        json={"target": target},
        headers={"Authorization": f"token {TOKEN}"},
    )
    r.raise_for_status()


# -- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--backend", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--baseline", metavar="REF", help="also run Courtyard's proxy at git ref REF")
    args = parser.parse_args()
    base = checked_baseline_hub(parser, args.baseline)
    if base is not None:
        ensure_environment(["courtyard", base])
    if args.backend:
        run_backend(*args.backend)
        return
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")

    chp = ensure_chp()
    port, ws_port = free_port(), free_port()
    chp_port, chp_api, cy_port, cy_api, base_port, base_api = (free_port() for _ in range(6))
    env = dict(os.environ, CONFIGPROXY_AUTH_TOKEN=TOKEN, PYTHONPATH=str(ROOT))
    backend = f"http://127.0.0.1:{port}"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = {
        "backend": subprocess.Popen(
            [sys.executable, __file__, "--backend", str(port), str(ws_port)], **quiet
        ),
        "chp": subprocess.Popen(
            [
                chp,
                "--ip",
                "127.0.0.1",
                "--port",
                str(chp_port),
                "--api-ip",
                "127.0.0.1",
                "--api-port",
                str(chp_api),
                "--default-target",
                backend,
                "--log-level",
                "error",
            ],
            env=env,
            **quiet,
        ),
        "courtyard": subprocess.Popen(
            [
                str(COURTYARD_BIN.parent / "python") if base else sys.executable,
                "-m",
                "courtyard.proxy",
                "--port",
                str(cy_port),
                "--api-port",
                str(cy_api),
                "--default-target",
                backend,
                "--workers",
                str(args.workers),
                "--log-level",
                "warn",
            ],
            env=env,
        ),
    }
    ports = [port, chp_port, chp_api, cy_port, cy_api]
    if base is not None:  # its own code: no PYTHONPATH, and not started from this checkout
        procs[base] = subprocess.Popen(
            [str(baseline(base).bin("python")), "-m", "courtyard.proxy", "--port", str(base_port),
             "--api-port", str(base_api), "--default-target", backend, "--workers", str(args.workers),
             "--log-level", "warn"],
            env={k: v for k, v in env.items() if k != "PYTHONPATH"},
            cwd=baseline(base).venv,
        )
        ports += [base_port, base_api]
    try:
        for p in ports:
            wait_port(p)
        for api in (chp_api, cy_api, *([base_api] if base else [])):
            add_route(api, "/ws", f"http://127.0.0.1:{ws_port}")
        targets = {
            "direct": f"{backend}/",
            "chp": f"http://127.0.0.1:{chp_port}/",
            "courtyard": f"http://127.0.0.1:{cy_port}/",
        }
        if base is not None:
            targets[base] = f"http://127.0.0.1:{base_port}/"
        width = max(10, *(len(name) for name in targets))
        vs_base = f" {'vs base':>8}" if base else ""
        for close in (False, True):
            results = {}
            for name, url in targets.items():
                wrk(url, 1, args.connections, close)  # warm-up: pools, JIT, page cache
                results[name] = wrk(url, args.duration, args.connections, close)
            rss = {name: tree_rss_mib(procs[name].pid) for name in targets if name in procs}

            kind = "a new connection per request" if close else "keep-alive"
            print(
                f"\nwrk -c{args.connections} -d{args.duration}s -t2 ({kind}), {os.cpu_count()} "
                f"CPUs, courtyard-proxy --workers {args.workers}\n"
            )
            print(f"{'':{width}} {'req/s':>10} {'p99 ms':>9} {'vs CHP':>8} {'vs direct':>10} "
                  f"{'RSS MiB':>8}{vs_base}  errors")
            for name, (rps, p99, errors) in results.items():
                against = f" {rps / results[base][0]:7.2f}x" if base else ""
                print(
                    f"{name:{width}} {rps:10.0f} {p99:9.2f} {rps / results['chp'][0]:7.2f}x "
                    f"{rps / results['direct'][0]:9.1%} {rss.get(name, 0):8.1f}{against}  {errors}"
                )

        try:
            import websockets  # noqa: F401
        except ImportError:
            print("\n(websockets not installed: WebSocket figures skipped)")
            return
        print("\nWebSocket echo, 8 connections x 2000 messages of 100 bytes")
        ws_targets = {
            "direct": f"ws://127.0.0.1:{ws_port}/ws",
            "chp": f"ws://127.0.0.1:{chp_port}/ws",
            "courtyard": f"ws://127.0.0.1:{cy_port}/ws",
        }
        if base is not None:
            ws_targets[base] = f"ws://127.0.0.1:{base_port}/ws"
        ws_results = {name: asyncio.run(ws_echo(url)) for name, url in ws_targets.items()}
        for name, (mps, p99) in ws_results.items():
            against = f"  {mps / ws_results[base][0]:5.2f}x base" if base else ""
            print(
                f"{name:{width}} {mps:10.0f} msg/s  p99 {p99:6.2f} ms  "
                f"{mps / ws_results['chp'][0]:5.2f}x CHP  {mps / ws_results['direct'][0]:6.1%} "
                f"of direct{against}"
            )
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(10)


if __name__ == "__main__":
    main()
