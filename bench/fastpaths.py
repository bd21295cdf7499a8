"""What Courtyard's fast paths buy: each one against the library path it bypasses.

    python bench/fastpaths.py                    # API variants and HTTP clients, 4 rounds
    python bench/fastpaths.py --rounds 2 --only api --seconds 3

API (a real ``courtyard serve`` on a fresh SQLite database with 1,000 users, wrk and the
raw client of ``harness.py``), each variant in turn, round after round (interleaved, so that
load from other work on the machine falls on every variant alike):

- ``fast``: the hub as it is;
- ``bare-dispatch``: the shortcut without the app's middleware around it (as it was
  before 2026-12-07): what running the middleware on API requests costs;
- ``no-dispatch``: every API request through Starlette's middleware and route scan
  (``ApiDispatcher.match`` finds nothing);
- ``no-records``: no user snapshots kept (``RecordCache`` reads every user again);
- ``no-identity``: no scope sets kept (``ScopeCache`` computes the caller's scopes from the
  database on every request; the token's hash-to-row map stays, as config tokens need it).

The variants are the checkout's own code patched in the hub process at start
(``--hub-variant``, below), so the product carries no switch.

HTTP clients (in this process, against a real ``courtyard-proxy`` REST API and a small
HTTP server standing in for a notebook server): the proxy API calls of ``RestProxy``
(add and delete a route, 10 in flight as ``concurrency`` allows) and readiness probes
(``GET`` on a fresh connection, 50 in flight), over each HTTP client the hub has.

In process (``--only inproc``): the hub's ASGI app called directly, no HTTP server nor
client, so that what the dispatcher saves is not lost in their noise: µs per request of
``GET /user`` and ``GET /users/{name}`` through the shortcut with the app's middleware
around it (as the hub runs), the shortcut alone, and Starlette's routing.

Prints medians with min-max over the rounds, and the load average before each round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    COURTYARD_BIN,
    TOKEN,
    WRK_SCRIPT,
    Connection,
    HubRun,
    free_ports,
    probe,
    run_workers,
)

API_VARIANTS = ("fast", "bare-dispatch", "no-dispatch", "no-records", "no-identity")
USERS = 1000
CONCURRENCY = 16


# -- the hub process, patched per variant ------------------------------------------------------


def _patch(variant: str) -> None:
    """Turn one fast path off in this process, before the hub starts."""
    if variant == "no-dispatch":
        from courtyard.api.dispatch import ApiDispatcher

        assert hasattr(ApiDispatcher, "match")
        ApiDispatcher.match = lambda self, method, path: None  # type: ignore[method-assign]
    elif variant == "bare-dispatch":
        from courtyard.api.dispatch import ApiDispatcher

        def bare(self: Any) -> Any:
            self._shortcut = self._answer
            return self._answer

        assert hasattr(ApiDispatcher, "_wrap")
        ApiDispatcher._wrap = bare  # type: ignore[method-assign]
    elif variant == "no-records":
        from courtyard.db.records import RecordCache

        user, page = RecordCache.user, RecordCache.page

        def fresh_user(self: Any, db: Any, name: str) -> Any:
            self.clear()
            return user(self, db, name)

        def fresh_page(self: Any, db: Any, query: Any, offset: int, limit: int) -> Any:
            self.clear()
            return page(self, db, query, offset, limit)

        RecordCache.user, RecordCache.page = fresh_user, fresh_page  # type: ignore[method-assign]
    elif variant == "no-identity":
        from courtyard.auth import identity

        class NoStore(dict[Any, Any]):
            def __setitem__(self, key: Any, value: Any) -> None:
                pass

        init = identity.ScopeCache.__init__

        def init_without(self: Any) -> None:
            init(self)
            self.identities = NoStore()

        identity.ScopeCache.__init__ = init_without  # type: ignore[method-assign]
    elif variant != "fast":
        raise SystemExit(f"unknown variant {variant}")


class VariantRun(HubRun):
    variant: str = "fast"

    def command(self) -> list[str]:
        python = COURTYARD_BIN.parent / "python"
        exe = str(python if python.exists() else sys.executable)
        return [exe, __file__, "--hub-variant", self.variant, "serve", "-f", str(self.config)]


def _wrk(port: int, path: str, names: Path | None, seconds: float) -> float:
    env = {**os.environ, "BENCH_TOKEN": TOKEN, "BENCH_PATH": path}
    if names is not None:
        env["BENCH_NAMES"] = str(names)
    out = subprocess.run(["wrk", "-t1", f"-c{CONCURRENCY}", f"-d{max(1, round(seconds))}s",
                          "--timeout", "10s", "-s", str(WRK_SCRIPT), f"http://127.0.0.1:{port}"],
                         env=env, capture_output=True, text=True, timeout=seconds + 30)
    line = next(x for x in out.stdout.splitlines() if x.startswith("BENCH_JSON "))
    got = json.loads(line.removeprefix("BENCH_JSON "))
    if any(v for k, v in got.items() if k.startswith("errors_")):
        raise RuntimeError(f"wrk saw errors: {got}")
    return float(got["requests"]) / (float(got["duration_us"]) / 1e6)


async def _create(port: int, names: list[str]) -> float:
    todo = iter(names)
    began = time.perf_counter()

    async def work(conn: Connection) -> None:
        for name in todo:
            status, body = await conn.request("POST", f"/hub/api/users/{name}")
            if status != 201:
                raise RuntimeError(f"POST {name}: {status} {body[:200]!r}")

    await run_workers(CONCURRENCY, port, work)
    return len(names) / (time.perf_counter() - began)


async def _page_all(port: int) -> float:
    conn = Connection(port)
    began = time.perf_counter()
    try:
        for offset in range(0, USERS + 1, 200):
            status, _ = await conn.request("GET", f"/hub/api/users?offset={offset}&limit=200")
            if status != 200:
                raise RuntimeError(f"paging: {status}")
    finally:
        await conn.close()
    return (USERS + 1) / (time.perf_counter() - began)


def api_round(variant: str, seconds: float) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-fastpaths-{variant}-"))
    run = VariantRun("courtyard", tmp)
    run.variant = variant
    run.write_config()
    try:
        run.start(60)
        run.settle(10)
        names = [f"user{i:05d}" for i in range(USERS)]
        got = {"create users/s": asyncio.run(_create(run.hub_port, names))}
        names_file = tmp / "names.txt"
        names_file.write_text("\n".join(names) + "\n")
        _wrk(run.hub_port, "/hub/api/users/", names_file, 1)  # warm-up
        got["GET /users/{name} req/s"] = _wrk(run.hub_port, "/hub/api/users/", names_file,
                                              seconds)
        got["GET /user req/s"] = _wrk(run.hub_port, "/hub/api/user", None, seconds)
        got["GET /users pages, users/s"] = statistics.median(
            asyncio.run(_page_all(run.hub_port)) for _ in range(3))
        return got
    finally:
        run.stop()
        shutil.rmtree(tmp, ignore_errors=True)


# -- HTTP clients --------------------------------------------------------------------------------


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A notebook server's ``/api`` as far as a readiness probe cares."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            body = b'{"version": "2.0.0"}'
            close = b"connection: close" in head.lower()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n%s\r\n%s"
                         % (len(body), b"Connection: close\r\n" if close else b"", body))
            await writer.drain()
            if close:
                break
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def backend(port: int) -> None:
    async def serve() -> None:
        server = await asyncio.start_server(_answer, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


async def _timed(calls: int, inflight: int, call: Callable[[], Awaitable[None]]
                 ) -> tuple[float, float]:
    """(µs of this process's CPU per call, calls per second)."""
    left = iter(range(calls))

    async def worker() -> None:
        for _ in left:
            await call()

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return 1e6 * cpu / calls, calls / wall


async def proxy_calls(api_port: int, client: str, calls: int) -> tuple[float, float]:
    """``RestProxy.add_route`` then ``delete_route``, 10 in flight (its concurrency)."""
    from courtyard.proxy import rest

    proxy = rest.RestProxy(api_url=f"http://127.0.0.1:{api_port}", auth_token="bench")
    if client == "httpx" and hasattr(proxy, "_fast_client"):
        proxy._fast_client = lambda: None  # type: ignore[method-assign]
    counter = iter(range(1 << 30))

    async def call() -> None:
        spec = f"/user/u{next(counter)}/"
        await proxy.add_route(spec, "http://127.0.0.1:1", {"user": "u"})
        await proxy.delete_route(spec)

    try:
        await call()  # warm-up: httpx loads its CA bundle when the client is made
        return await _timed(calls // 2, 10, call)
    finally:
        await proxy.aclose()


async def probes(port: int, client: str, calls: int) -> tuple[float, float]:
    """``GET /api`` on a fresh connection each, as ``Lifecycle._wait_http`` probes."""
    import httpx

    url = f"http://127.0.0.1:{port}/user/x/api"
    if client == "http11":
        from courtyard import http11

        async def call() -> None:
            if await http11.get_status(url, 5.0) != 200:
                raise RuntimeError("probe failed")

        await call()
        return await _timed(calls, 50, call)
    async with httpx.AsyncClient(
            trust_env=False, follow_redirects=False,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=0)) as http:
        async def call() -> None:
            if (await http.get(url, timeout=5.0)).status_code != 200:
                raise RuntimeError("probe failed")

        await call()
        return await _timed(calls, 50, call)


def client_rounds(rounds: int, calls: int, results: dict[str, dict[str, list[float]]],
                  loads: list[str]) -> None:
    from courtyard import http11

    clients = ("http11", "httpx") if hasattr(http11, "Client") else ("httpx",)
    proxy_port, api_port, backend_port = free_ports(3)
    env = {**os.environ, "CONFIGPROXY_AUTH_TOKEN": "bench"}
    procs = [
        subprocess.Popen([sys.executable, "-m", "courtyard.proxy", "--port", str(proxy_port),
                          "--api-port", str(api_port), "--workers", "1", "--log-level", "error"],
                         env=env, start_new_session=True),
        subprocess.Popen([sys.executable, __file__, "--backend", str(backend_port)],
                         start_new_session=True),
    ]
    try:
        deadline = time.monotonic() + 30
        while probe(api_port, 1) is None or probe(backend_port, 1) is None:
            if time.monotonic() > deadline:
                raise RuntimeError("proxy or backend did not start")
            time.sleep(0.1)
        for n in range(rounds):
            loads.append(f"clients round {n + 1}: load {os.getloadavg()[0]:.2f}")
            for client in clients if n % 2 == 0 else reversed(clients):
                cpu, rate = asyncio.run(proxy_calls(api_port, client, calls))
                results.setdefault(f"proxy API call, {client}", {}).setdefault(
                    "µs CPU/call", []).append(cpu)
                results[f"proxy API call, {client}"].setdefault("calls/s", []).append(rate)
                cpu, rate = asyncio.run(probes(backend_port, client, calls))
                results.setdefault(f"readiness probe, {client}", {}).setdefault(
                    "µs CPU/call", []).append(cpu)
                results[f"readiness probe, {client}"].setdefault("calls/s", []).append(rate)
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


async def _inproc(rounds: int, calls: int, results: dict[str, dict[str, list[float]]]) -> None:
    from traitlets.config import Config

    from courtyard.api.dispatch import ApiDispatcher
    from courtyard.app import Hub

    tmp = tempfile.mkdtemp(prefix="bench-fastpaths-inproc-")
    config = Config()
    config.Courtyard.db_url = f"sqlite:///{tmp}/hub.sqlite"
    config.Courtyard.data_files_path = tmp
    config.Courtyard.api_tokens = {TOKEN: "admin"}
    config.Authenticator.admin_users = {"admin"}
    config.Courtyard.authenticator_class = "dummy"
    hub = Hub(config)
    hub.initialize()
    app = hub.asgi
    headers = [(b"host", b"127.0.0.1:8081"), (b"authorization", f"token {TOKEN}".encode()),
               (b"accept", b"application/json")]

    async def call(method: str, path: str, expect: int) -> None:
        scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(),
                 "root_path": "", "query_string": b"", "scheme": "http", "http_version": "1.1",
                 "server": ("127.0.0.1", 8081), "client": ("127.0.0.1", 5000),
                 "headers": headers}
        status: list[int] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(scope, receive, send)
        if status != [expect]:
            raise RuntimeError(f"{method} {path}: {status}")

    try:
        for i in range(USERS):
            await call("POST", f"/hub/api/users/user{i:05d}", 201)
        await call("GET", "/hub/api/user", 200)
        wrapped, match = app._wrap(), ApiDispatcher.match
        paths: list[tuple[str, Callable[[], str]]] = [
            ("GET /user", lambda: "/hub/api/user"),
            ("GET /users/{name}", lambda: f"/hub/api/users/user{random.randrange(USERS):05d}")]
        ways = {"shortcut + middleware": wrapped, "shortcut alone": app._answer,
                "Starlette routing": None}
        for _ in range(rounds):
            for way, shortcut in ways.items():
                ApiDispatcher.match = match if shortcut is not None else (  # type: ignore[method-assign]
                    lambda self, method, path: None)
                app._shortcut = shortcut
                for label, path in paths:
                    began = time.perf_counter()
                    for _ in range(calls):
                        await call("GET", path(), 200)
                    per = 1e6 * (time.perf_counter() - began) / calls
                    results.setdefault(f"in process, {way}", {}).setdefault(
                        f"{label} µs", []).append(per)
    finally:
        ApiDispatcher.match = match  # type: ignore[method-assign]
        hub.session.kw["bind"].dispose()
        shutil.rmtree(tmp, ignore_errors=True)


def table(results: dict[str, dict[str, list[float]]]) -> str:
    rows = [("variant", "figure", "median", "min", "max", "n")]
    for variant, figures in results.items():
        for figure, values in figures.items():
            rows.append((variant, figure, f"{statistics.median(values):,.1f}",
                         f"{min(values):,.1f}", f"{max(values):,.1f}", str(len(values))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(row, widths, strict=True))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--hub-variant":
        _patch(sys.argv[2])
        from courtyard.cli import main as courtyard_main

        courtyard_main(sys.argv[3:])
        return
    if len(sys.argv) > 2 and sys.argv[1] == "--backend":
        backend(int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=4.0, help="each GET load")
    parser.add_argument("--calls", type=int, default=2000, help="per HTTP client and round")
    parser.add_argument("--only", choices=("api", "clients", "inproc"))
    parser.add_argument("--variants", default=",".join(API_VARIANTS))
    args = parser.parse_args()
    results: dict[str, dict[str, list[float]]] = {}
    loads: list[str] = []
    if args.only in (None, "inproc"):
        loads.append(f"in process: load {os.getloadavg()[0]:.2f}")
        asyncio.run(_inproc(max(args.rounds, 5), args.calls, results))
    if args.only in (None, "clients"):
        client_rounds(args.rounds, args.calls, results, loads)
    if args.only in (None, "api"):
        variants = args.variants.split(",")
        for n in range(args.rounds):
            order = variants if n % 2 == 0 else variants[::-1]
            loads.append(f"api round {n + 1}: load {os.getloadavg()[0]:.2f}")
            for variant in order:
                for figure, value in api_round(variant, args.seconds).items():
                    results.setdefault(variant, {}).setdefault(figure, []).append(value)
                print(f"  round {n + 1} {variant} done", file=sys.stderr, flush=True)
    print(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), f"{os.cpu_count()} CPUs;",
          "; ".join(loads))
    print(table(results))


if __name__ == "__main__":
    main()
