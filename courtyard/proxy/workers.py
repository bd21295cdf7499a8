"""Master/worker split: N worker processes serve the public port, the master owns routes.

Each worker binds the public port itself with ``SO_REUSEPORT``, so the kernel spreads
connections over them. The master keeps the authoritative :class:`RouteTable` and talks
to each worker over a Unix socket pair carrying one JSON object per line:

    master -> worker   {"op": "sync", "seq", "routes": [[prefix, target], ...]}
                       {"op": "add", "seq", "prefix", "target"}  {"op": "remove", "seq", "prefix"}
    worker -> master   {"op": "ready"}  {"op": "ack", "seq"}  {"op": "activity", "routes": {prefix: t}}

A stream keeps updates in order. The master answers an API call only after every worker
acknowledged it, so a route that was just added is routable on every worker (the hub
redirects the user there right after adding it). Workers report activity once a second.
Workers are started with ``python -m courtyard.proxy.workers`` rather than ``fork()``:
forking a process with a running event loop is not safe. A worker that dies is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import orjson

from .options import ProxyOptions
from .routes import RouteTable
from .server import ProxyContext, serve

log = logging.getLogger("courtyard.proxy")

_ENV_OPTIONS = "COURTYARD_PROXY_OPTIONS"
_ACK_TIMEOUT = 5.0
_LINE_LIMIT = 256 * 1024 * 1024


def _line(message: dict[str, object]) -> bytes:
    return orjson.dumps(message) + b"\n"


class WorkerHandle:
    """The master's view of one worker process."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: subprocess.Popen[bytes] | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.ready: asyncio.Future[None] | None = None
        self.acked = 0
        self.waiters: list[tuple[int, asyncio.Future[None]]] = []

    def send(self, message: dict[str, object]) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(_line(message))

    def wait_ack(self, seq: int) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.acked >= seq or self.writer is None:
            fut.set_result(None)
        else:
            self.waiters.append((seq, fut))
        return fut

    def acknowledge(self, seq: int) -> None:
        self.acked = max(self.acked, seq)
        keep = []
        for wanted, fut in self.waiters:
            if wanted <= seq:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((wanted, fut))
        self.waiters = keep

    def release_waiters(self) -> None:
        """A dead worker will be resynced from scratch; nobody should wait on it."""
        for _, fut in self.waiters:
            if not fut.done():
                fut.set_result(None)
        self.waiters = []


class WorkerSet:
    """Starts, feeds, watches and replaces the worker processes."""

    def __init__(
        self,
        options: ProxyOptions,
        table: RouteTable,
        on_activity: Callable[[dict[str, float]], None],
    ) -> None:
        self.options = options
        self.table = table
        self.on_activity = on_activity
        self.workers = [WorkerHandle(i) for i in range(options.workers)]
        self.seq = 0
        self.stopping = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, timeout: float = 30.0) -> None:
        """Start every worker and wait until each listens on the public port."""
        for handle in self.workers:
            await self._spawn(handle)
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(h.ready for h in self.workers if h.ready is not None))

    async def _spawn(self, handle: WorkerHandle) -> None:
        loop = asyncio.get_running_loop()
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ, **{_ENV_OPTIONS: self.options.to_json()})
        env.pop("CONFIGPROXY_AUTH_TOKEN", None)  # workers never need the API token
        handle.proc = subprocess.Popen(
            [sys.executable, "-m", "courtyard.proxy.workers", str(child.fileno()), str(handle.index)],
            pass_fds=[child.fileno()],
            env=env,
        )
        child.close()
        handle.reader, handle.writer = await asyncio.open_unix_connection(
            sock=parent, limit=_LINE_LIMIT
        )
        handle.ready = loop.create_future()
        handle.acked = self.seq
        self.seq += 1
        routes = [[r.prefix, r.target.url] for r in self.table]
        handle.send({"op": "sync", "seq": self.seq, "routes": routes})
        task = asyncio.ensure_future(self._watch(handle))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, handle: WorkerHandle) -> None:
        """Read one worker's messages until it exits; then replace it."""
        reader = handle.reader
        assert reader is not None
        while True:
            try:
                line = await reader.readline()
            except (OSError, ValueError) as exc:
                log.error("Lost worker %d: %s", handle.index, exc)
                line = b""
            if not line:
                break
            try:
                message = orjson.loads(line)
            except orjson.JSONDecodeError:
                log.error("Garbled message from worker %d: %r", handle.index, line[:200])
                continue
            op = message.get("op")
            if op == "ack":
                handle.acknowledge(message["seq"])
            elif op == "activity":
                self.on_activity(message["routes"])
            elif op == "ready" and handle.ready is not None and not handle.ready.done():
                handle.ready.set_result(None)
        handle.release_waiters()
        if handle.writer is not None:
            handle.writer.close()
        handle.writer = None
        code = await asyncio.get_running_loop().run_in_executor(None, self._reap, handle)
        if self.stopping:
            return
        if handle.ready is not None and not handle.ready.done():
            handle.ready.set_exception(RuntimeError(f"worker {handle.index} exited with {code}"))
            return
        log.error("Worker %d exited with status %s; starting a new one", handle.index, code)
        await asyncio.sleep(0.5)  # don't spin if workers die at once on start
        if not self.stopping:
            await self._spawn(handle)

    @staticmethod
    def _reap(handle: WorkerHandle) -> int | None:
        if handle.proc is None:
            return None
        try:
            return handle.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            handle.proc.kill()
            return handle.proc.wait()

    async def broadcast(self, message: dict[str, object]) -> None:
        """Send an update to every worker and wait until all applied it."""
        self.seq += 1
        message["seq"] = self.seq
        waits = []
        for handle in self.workers:
            handle.send(message)
            waits.append(handle.wait_ack(self.seq))
        try:
            async with asyncio.timeout(_ACK_TIMEOUT):
                await asyncio.gather(*waits)
        except TimeoutError:
            log.warning("Not every worker acknowledged route update %d in time", self.seq)

    async def add(self, prefix: str, target: str) -> None:
        await self.broadcast({"op": "add", "prefix": prefix, "target": target})

    async def remove(self, prefix: str) -> None:
        await self.broadcast({"op": "remove", "prefix": prefix})

    async def stop(self) -> None:
        self.stopping = True
        for handle in self.workers:
            if handle.writer is not None:
                handle.writer.close()
            if handle.proc is not None and handle.proc.poll() is None:
                handle.proc.terminate()
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(None, self._reap, h) for h in self.workers),
            return_exceptions=True,
        )
        for task in list(self._tasks):
            task.cancel()

    def pids(self) -> list[int]:
        return [h.proc.pid for h in self.workers if h.proc is not None]


# -- the worker process ------------------------------------------------------------------


def _apply(table: RouteTable, message: dict[str, object]) -> None:
    op = message["op"]
    if op == "add":
        table.add(str(message["prefix"]), str(message["target"]))
    elif op == "remove":
        table.remove(str(message["prefix"]))
    elif op == "sync":
        table.clear()
        for prefix, target in message["routes"]:  # type: ignore[attr-defined]
            table.add(prefix, target)


async def run_worker(fd: int, options: ProxyOptions) -> None:
    """Serve the public port until the master goes away or asks us to stop."""
    loop = asyncio.get_running_loop()
    table = RouteTable()
    ctx = ProxyContext(options, table)
    reader, writer = await asyncio.open_unix_connection(
        sock=socket.socket(fileno=fd), limit=_LINE_LIMIT
    )
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # Ctrl-C reaches the whole process group; the master decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    async def follow_master() -> None:
        while line := await reader.readline():
            message = orjson.loads(line)
            try:
                _apply(table, message)
            except Exception as exc:  # keep following the master whatever happens
                log.error("Bad route update %s: %s", message, exc)
            writer.write(_line({"op": "ack", "seq": message.get("seq", 0)}))
        stop.set()

    async def report_activity() -> None:
        while True:
            await asyncio.sleep(1.0)
            activity = ctx.take_activity()
            if activity:
                writer.write(_line({"op": "activity", "routes": activity}))

    # Apply the initial sync before accepting anyone, so the first request is routed.
    first = await reader.readline()
    if first:
        message = orjson.loads(first)
        _apply(table, message)
        writer.write(_line({"op": "ack", "seq": message["seq"]}))
    server = await serve(ctx, reuse_port=True)
    writer.write(_line({"op": "ready"}))
    tasks = [asyncio.ensure_future(follow_master()), asyncio.ensure_future(report_activity())]
    await stop.wait()
    server.close()
    for conn in list(ctx.connections):
        conn.abort()
    ctx.pool.close_all()
    for task in tasks:
        task.cancel()
    with contextlib.suppress(Exception):
        writer.close()


def main(argv: list[str] | None = None) -> None:
    from .cli import install_event_loop, setup_logging

    args = sys.argv[1:] if argv is None else argv
    fd, index = int(args[0]), int(args[1])
    options = ProxyOptions.from_json(os.environ[_ENV_OPTIONS])
    setup_logging(options.log_level, f"worker {index}")
    install_event_loop()
    started = time.monotonic()
    asyncio.run(run_worker(fd, options))
    log.debug("Worker %d stopped after %.0f s", index, time.monotonic() - started)


if __name__ == "__main__":
    main()
