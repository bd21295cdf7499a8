"""Soak test: courtyard-proxy leaks no file descriptors and no memory.

    python bench/proxy_soak.py [--requests 1000000] [--workers N] [--interval 3]

Starts a raw uvloop + httptools backend and ``courtyard-proxy --workers N`` (default: CPUs),
then, round after round until ``--requests`` keep-alive requests went through:

- ``wrk`` (keep-alive) with 16, 64 and 256 connections in turn, and at the same time
- clients that drop the connection in the middle of a 50 MiB streamed download
  (after reading 0 to 1 MiB of it), and
- clients that drop it in the middle of an upload (after sending part of a declared
  ``Content-Length`` or chunked body),

half of them closing with FIN, half with RST. Every ``--interval`` seconds it samples each
proxy process's open file descriptors (``/proc/<pid>/fd``) and RSS (``VmRSS``), master and
workers, and prints a row. The baseline is taken after ``--warmup-rounds`` full rounds
(RSS first climbs to the allocator's high-water mark for this load) and an idle pause; the
final sample after the same idle pause. Verdict: per process, fds back to the baseline
(within ``--fd-tolerance``), RSS growth within ``--rss-tolerance`` MiB of the baseline and
within ``--rss-trend-tolerance`` MiB over the second half of the soak (a leak grows with
traffic; a high-water mark does not), no worker restarted, no traceback in the proxy's log.

The backend and the aborting clients are reused by tests/proxy/test_leaks.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TOKEN = "soak-token"
BIG = 50 * 1024 * 1024
HELLO = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world!"
UPLOADED = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 8\r\n\r\nuploaded"
# After traffic stops: client keep-alive (5 s) and idle upstream pool (4 s) close, plus the
# once-a-second sweep.
SETTLE = 7.0


# -- the backend (python bench/proxy_soak.py --backend PORT) ------------------------------------


def run_backend(port: int) -> None:
    """``/big[/<bytes>]`` streams that many bytes (default 50 MiB, with Content-Length,
    respecting flow control); ``/upload`` reads the whole body; anything else: 13 bytes."""
    import httptools

    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    chunk = b"x" * (256 * 1024)

    class Backend(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: asyncio.Transport = transport  # type: ignore[assignment]
            self.parser = httptools.HttpRequestParser(self)
            self.url = b""
            self.drained: asyncio.Future[None] | None = None
            self.task: asyncio.Task[None] | None = None

        def data_received(self, data: bytes) -> None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.transport.close()

        def on_message_begin(self) -> None:
            self.url = b""

        def on_url(self, url: bytes) -> None:
            self.url += url

        def on_message_complete(self) -> None:
            if self.url.startswith(b"/big"):
                rest = self.url[4:].strip(b"/").split(b"?")[0]
                size = int(rest) if rest.isdigit() else BIG
                self.task = asyncio.ensure_future(self.stream(size))
            elif self.url.startswith(b"/upload"):
                self.transport.write(UPLOADED)
            else:
                self.transport.write(HELLO)

        async def stream(self, size: int) -> None:
            head = (
                f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n"
            )
            self.transport.write(head.encode())
            left = size
            while left > 0 and not self.transport.is_closing():
                if self.drained is not None:
                    await self.drained
                piece = chunk if left >= len(chunk) else chunk[:left]
                self.transport.write(piece)
                left -= len(piece)

        def pause_writing(self) -> None:
            self.drained = asyncio.get_running_loop().create_future()

        def resume_writing(self) -> None:
            if self.drained is not None and not self.drained.done():
                self.drained.set_result(None)
            self.drained = None

        def connection_lost(self, exc: Exception | None) -> None:
            self.resume_writing()
            if self.task is not None:
                self.task.cancel()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await loop.create_server(Backend, "127.0.0.1", port, backlog=4096)
        await asyncio.Future()

    asyncio.run(main())


# -- clients ---------------------------------------------------------------------------------


def _drop(writer: asyncio.StreamWriter, reset: bool) -> None:
    if reset:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


async def _bounded(n: int, concurrency: int, one) -> int:  # type: ignore[no-untyped-def]
    sem = asyncio.Semaphore(concurrency)
    done = 0

    async def run(i: int) -> None:
        nonlocal done
        async with sem:
            try:
                await one(i)
                done += 1
            except (TimeoutError, OSError, asyncio.IncompleteReadError):
                pass

    await asyncio.gather(*(run(i) for i in range(n)))
    return done


async def aborted_downloads(
    port: int, n: int, concurrency: int = 32, max_read: int = 1 << 20, path: str = "/big"
) -> int:
    """``n`` clients that ask for a big download, read part of it and drop the socket."""
    rng = random.Random(1)

    async def one(i: int) -> None:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: soak\r\n\r\n".encode())
            want = rng.choice([0, rng.randrange(1, max_read + 1)])
            got = 0
            while got < want:
                data = await asyncio.wait_for(reader.read(min(65536, want - got)), 10)
                if not data:
                    break
                got += len(data)
        finally:
            _drop(writer, reset=i % 2 == 1)

    return await _bounded(n, concurrency, one)


async def aborted_uploads(port: int, n: int, concurrency: int = 32, size: int = 1 << 20) -> int:
    """``n`` clients that start an upload (sized or chunked), send part of it and drop."""
    rng = random.Random(2)
    piece = b"u" * 65536

    async def one(i: int) -> None:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        try:
            chunked = i % 4 >= 2
            framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
            writer.write(f"POST /upload HTTP/1.1\r\nHost: soak\r\n{framing}\r\n\r\n".encode())
            sent, stop = 0, rng.randrange(0, size // 2 + 1)
            while sent < stop:
                part = piece[: min(len(piece), stop - sent)]
                writer.write(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
                sent += len(part)
                await asyncio.wait_for(writer.drain(), 10)
            # give the proxy time to open the target connection and forward some of it
            await asyncio.sleep(rng.random() * 0.02)
        finally:
            _drop(writer, reset=i % 2 == 1)

    return await _bounded(n, concurrency, one)


async def keepalive_requests(port: int, total: int, connections: int = 16) -> int:
    """``total`` GETs over ``connections`` keep-alive connections; returns how many got 200."""
    ok = 0
    per = [total // connections + (1 if i < total % connections else 0) for i in range(connections)]
    request = b"GET /hello HTTP/1.1\r\nHost: soak\r\n\r\n"

    async def one(count: int) -> None:
        nonlocal ok
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(count):
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                length = int(re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
                await reader.readexactly(length)
                ok += head.startswith(b"HTTP/1.1 200")
        finally:
            writer.close()

    await asyncio.gather(*(one(c) for c in per if c))
    return ok


# -- process sampling ------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """``pid`` then its descendants, sorted, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], list(children.get(pid, []))
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return [pid, *sorted(tree)]


def sample(pid: int) -> dict[int, tuple[int, int]]:
    """``{pid: (open fds, RSS KiB)}`` for ``pid`` and its descendants."""
    out = {}
    for p in process_tree(pid):
        try:
            fds = len(os.listdir(f"/proc/{p}/fd"))
            with open(f"/proc/{p}/status") as f:
                rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            continue
        out[p] = (fds, rss)
    return out


# -- the soak --------------------------------------------------------------------------------


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


_REQS = re.compile(r"(\d+) requests in")
_SOCKERR = re.compile(r"Socket errors: (.*)")
_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


@dataclass
class Soak:
    master: int
    interval: float
    labels: dict[int, str] = field(default_factory=dict)
    rows: list[tuple[float, str, int, dict[int, tuple[int, int]]]] = field(default_factory=list)
    requests: int = 0
    aborted: int = 0
    phase: str = "start"
    started: float = field(default_factory=time.monotonic)

    def label(self, pid: int) -> str:
        if pid not in self.labels:
            self.labels[pid] = "master" if pid == self.master else f"worker{len(self.labels)}"
        return self.labels[pid]

    def take(self) -> dict[int, tuple[int, int]]:
        s = sample(self.master)
        self.rows.append((time.monotonic() - self.started, self.phase, self.requests, s))
        cells = "  ".join(f"{self.label(p)} {fds:4d} fd {rss / 1024:6.1f} MiB" for p, (fds, rss) in s.items())
        print(
            f"{self.rows[-1][0]:7.1f}s {self.phase:10} {self.requests:>9} req "
            f"{self.aborted:>6} aborted  {cells}",
            flush=True,
        )
        return s

    async def sampler(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.take()


async def wrk(url: str, connections: int, duration: int) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "wrk",
        f"-c{connections}",
        f"-d{duration}s",
        "-t2",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out = (await proc.communicate())[0].decode()
    m = _REQS.search(out)
    if proc.returncode or not m:
        raise SystemExit(f"wrk failed:\n{out}")
    problems = []
    if e := _SOCKERR.search(out):
        problems.append(f"socket errors {e.group(1)}")
    if e := _NON2XX.search(out):
        problems.append(f"{e.group(1)} non-2xx")
    return int(m.group(1)), ", ".join(problems)


async def round_(soak: Soak, port: int, connections: int, duration: int, aborts: int) -> list[str]:
    url = f"http://127.0.0.1:{port}/hello"
    (count, problems), downloads, uploads = await asyncio.gather(
        wrk(url, connections, duration),
        aborted_downloads(port, aborts),
        aborted_uploads(port, aborts),
    )
    soak.requests += count
    soak.aborted += downloads + uploads
    notes = []
    if problems:
        notes.append(f"wrk -c{connections}: {problems}")
    if downloads + uploads < 2 * aborts:
        notes.append(f"{2 * aborts - downloads - uploads} aborting clients failed early")
    return notes


async def soak_main(args: argparse.Namespace, master: int, port: int) -> Soak:
    soak = Soak(master, args.interval)
    soak.take()
    sampler = asyncio.ensure_future(soak.sampler())
    notes: list[str] = []
    try:
        soak.phase = "warm-up"
        for i in range(args.warmup_rounds):
            c = args.connections[i % len(args.connections)]
            notes += await round_(soak, port, c, args.round_seconds, args.aborts)
        soak.phase = "settle"
        await asyncio.sleep(SETTLE)
        baseline = soak.take()
        soak.requests = 0
        soak.aborted = 0
        soak.phase = "soak"
        i = 0
        while soak.requests < args.requests:
            c = args.connections[i % len(args.connections)]
            notes += await round_(soak, port, c, args.round_seconds, args.aborts)
            i += 1
        soak.phase = "settle"
        await asyncio.sleep(SETTLE)
        final = soak.take()
    finally:
        sampler.cancel()
    soak.baseline, soak.final, soak.notes = baseline, final, notes  # type: ignore[attr-defined]
    return soak


def verdict(soak: Soak, args: argparse.Namespace, log_text: str) -> bool:
    baseline, final = soak.baseline, soak.final  # type: ignore[attr-defined]
    peak: dict[int, tuple[int, int]] = {}
    soaking = [s for _t, phase, _n, s in soak.rows if phase == "soak"]
    # a leak grows with traffic: compare the end with the half-way sample too
    half = soaking[len(soaking) // 2] if soaking else baseline
    for s in soaking:
        for p, (fds, rss) in s.items():
            old = peak.get(p, (0, 0))
            peak[p] = (max(old[0], fds), max(old[1], rss))
    print(
        f"\n{soak.requests} keep-alive requests (wrk, -c {'/'.join(map(str, args.connections))})"
        f" + {soak.aborted} aborted downloads/uploads after warm-up\n"
    )
    print(
        f"{'process':8} {'fds base':>9} {'peak':>6} {'final':>6}   "
        f"{'RSS base':>9} {'peak':>8} {'final':>8} {'growth':>8} {'2nd half':>9}"
    )
    ok = True
    for p in baseline:
        fb, rb = baseline[p]
        ff, rf = final.get(p, (-1, 0))
        fp, rp = peak.get(p, (0, 0))
        growth = (rf - rb) / 1024
        late = (rf - half.get(p, (0, rb))[1]) / 1024
        good = (abs(ff - fb) <= args.fd_tolerance and growth <= args.rss_tolerance
                and late <= args.rss_trend_tolerance)
        ok &= good
        print(
            f"{soak.label(p):8} {fb:9d} {fp:6d} {ff:6d}   {rb / 1024:7.1f}M {rp / 1024:7.1f}M "
            f"{rf / 1024:7.1f}M {growth:+7.1f}M {late:+8.1f}M  {'ok' if good else 'LEAK?'}"
        )
    if set(final) != set(baseline):
        ok = False
        print(f"processes changed (worker restarted?): {sorted(baseline)} -> {sorted(final)}")
    tracebacks = log_text.count("Traceback")
    if tracebacks:
        ok = False
        print(f"{tracebacks} traceback(s) in the proxy's log")
    for note in soak.notes:  # type: ignore[attr-defined]
        print("note:", note)
    print(
        f"\nverdict: {'PASS' if ok else 'FAIL'} (fds within ±{args.fd_tolerance}, RSS growth "
        f"<= {args.rss_tolerance} MiB per process after warm-up)"
    )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--interval", type=float, default=3.0, help="seconds between samples")
    parser.add_argument(
        "--connections",
        type=lambda s: [int(c) for c in s.split(",")],
        default=[16, 64, 256],
        help="wrk connection counts, in turn",
    )
    parser.add_argument("--round-seconds", type=int, default=5)
    parser.add_argument(
        "--aborts", type=int, default=200, help="aborted downloads and as many aborted uploads per round"
    )
    parser.add_argument("--warmup-rounds", type=int, default=6,
                        help="full rounds before the baseline (allocator high-water marks)")
    parser.add_argument("--fd-tolerance", type=int, default=2)
    parser.add_argument("--rss-tolerance", type=float, default=5.0, help="MiB")
    parser.add_argument("--rss-trend-tolerance", type=float, default=2.0,
                        help="MiB of growth allowed over the second half of the soak")
    parser.add_argument("--backend", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.backend:
        run_backend(args.backend)
        return
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")

    bport, port, api_port = free_port(), free_port(), free_port()
    env = dict(
        os.environ,
        CONFIGPROXY_AUTH_TOKEN=TOKEN,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    logdir = Path(tempfile.mkdtemp(prefix="proxy-soak-"))
    log_path = logdir / "proxy.log"
    backend = subprocess.Popen([sys.executable, __file__, "--backend", str(bport)])
    with open(log_path, "wb") as log:
        proxy = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "courtyard.proxy",
                "--workers",
                str(args.workers),
                "--port",
                str(port),
                "--api-port",
                str(api_port),
                "--default-target",
                f"http://127.0.0.1:{bport}",
                "--log-level",
                "warn",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        for p in (bport, api_port, port):
            wait_port(p)
        print(
            f"courtyard-proxy --workers {args.workers} (pid {proxy.pid}), {os.cpu_count()} CPUs;"
            f" target {args.requests} requests; log {log_path}\n",
            flush=True,
        )
        soak = asyncio.run(soak_main(args, proxy.pid, port))
        ok = verdict(soak, args, log_path.read_text(errors="replace"))
    finally:
        for proc in (proxy, backend):
            proc.terminate()
        for proc in (proxy, backend):
            proc.wait(10)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
