"""What the benchmarks share: a cheap HTTP client, CPU accounting, hub processes, ports.

bench/api.py and bench/spawn.py import from here; see bench/README.md. A hub is
"jupyterhub", "courtyard" (this checkout) or "courtyard@REF" (the baseline: the code of a git
ref, exported and installed in a venv of its own: bench/baseline.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from baseline import (  # noqa: F401  (re-exported: the scripts import them from here)
    BASELINE_PREFIX,
    COURTYARD_BIN,
    baseline,
    baseline_hub,
    checked_baseline_hub,
    is_baseline,
    is_courtyard,
)

BENCH_DIR = Path(__file__).resolve().parent
JUPYTERHUB_BIN = BENCH_DIR / ".venv" / "bin" / "jupyterhub"
CHP_BIN = BENCH_DIR / ".node" / "node_modules" / ".bin" / "configurable-http-proxy"
RESULTS_DIR = BENCH_DIR / "results"
WRK_SCRIPT = BENCH_DIR / "wrk_get.lua"

TOKEN = "bench-secret-token-123"
# pid files the hubs write in their working directory, and a word in each proxy's command
PROXY_PID_FILES = {
    "jupyterhub-proxy.pid": b"configurable-http-proxy",
    "courtyard-proxy.pid": b"courtyard.proxy",
}
HUBS = ("jupyterhub", "courtyard")
PAGINATION_ACCEPT = "application/jupyterhub-pagination+json"
CLK_TCK = os.sysconf("SC_CLK_TCK")
QUIET_OTHER_CPU_PCT = 15.0

CONFIG_TEMPLATE = """\
# Written by courtyard's bench/api.py. Both hubs load this file unchanged.
c = get_config()  # noqa: F821

c.JupyterHub.ip = '127.0.0.1'
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = '127.0.0.1'
c.JupyterHub.hub_port = {hub_port}
c.JupyterHub.db_url = 'sqlite:///{tmp}/hub.sqlite'
c.JupyterHub.cookie_secret_file = '{tmp}/cookie_secret'
c.JupyterHub.api_tokens = {{'{token}': 'admin'}}
c.Authenticator.admin_users = {{'admin'}}
c.JupyterHub.authenticator_class = 'dummy'

# JupyterHub starts configurable-http-proxy itself (Courtyard ignores the command
# unless proxy_class = 'chp'). Both hubs' proxies read api_url from c.Proxy, and a free
# port keeps parallel runs off the default 8001. Nothing is ever spawned.
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.Proxy.api_url = 'http://127.0.0.1:{proxy_api_port}'
"""


# --------------------------------------------------------------------------- HTTP client


class Connection:
    """One keep-alive HTTP/1.1 connection with a few microseconds of client CPU per request.

    httpx.AsyncClient took about 1.6 ms of CPU per request on the 2-core benchmark machine,
    this about 30 µs. With httpx the load generator would have measured itself.
    """

    def __init__(self, port: int, token: str = TOKEN) -> None:
        self.port = port
        self._head = f"Host: 127.0.0.1:{port}\r\nAuthorization: token {token}\r\n"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, accept: str = "application/json") -> tuple[int, bytes]:
        """Send one request with an empty body; return (status, body)."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self._reader is not None  # set together with the writer
        length = "Content-Length: 0\r\n" if method != "GET" else ""
        self._writer.write(
            f"{method} {path} HTTP/1.1\r\n{self._head}Accept: {accept}\r\n{length}\r\n".encode()
        )
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        if "content-length" in headers:
            body = await self._reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            body = await self._read_chunked()
        else:
            body = await self._reader.read()
            headers["connection"] = "close"
        if headers.get("connection") == "close":
            await self.close()
        return status, body

    async def _read_chunked(self) -> bytes:
        assert self._reader is not None
        parts = []
        while True:
            size = int((await self._reader.readline()).split(b";")[0], 16)
            chunk = await self._reader.readexactly(size + 2)
            if size == 0:
                return b"".join(parts)
            parts.append(chunk[:-2])

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None


def probe(port: int, timeout: float = 30.0) -> int | None:
    """Status of `GET /hub/api/`, or None while nothing listens on the port yet."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"GET /hub/api/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            reply = sock.recv(64)
    except OSError:
        return None
    try:
        return int(reply.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


# --------------------------------------------------------------------------- CPU accounting


def tree_cpu_seconds(root: int) -> float:
    """User+system CPU of a process and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        cpu[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0.0)
        todo.extend(children.get(pid, []))
    return total


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, for the results ("?" if unknown)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent on anything but idle and iowait, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK_TCK


def wait_quiet(limit: float = 30.0) -> float:
    """Wait until processes other than this one and its children use < 15% of a core.

    The benchmark machine may be shared; starting a phase in a quiet moment keeps the
    figures comparable. Gives up after `limit` seconds; returns that share in %.
    """
    deadline = time.perf_counter() + limit
    while True:
        machine, own = machine_busy_seconds(), tree_cpu_seconds(os.getpid())
        time.sleep(0.5)
        other = machine_busy_seconds() - machine - (tree_cpu_seconds(os.getpid()) - own)
        pct = max(0.0, 100 * other / 0.5)
        if pct < QUIET_OTHER_CPU_PCT or time.perf_counter() > deadline:
            return pct


@dataclass
class CpuMeter:
    """CPU used during one phase by the client, the hub and everything else on the machine.

    The client share shows whether the load generator was the bottleneck; the share of
    other processes shows whether the figure is noisy (the machine may be shared).
    """

    hub_pid: int
    wall: float = 0.0
    client: float = 0.0
    server: float = 0.0
    machine: float = 0.0

    @contextlib.contextmanager
    def measure(self) -> Iterator[CpuMeter]:
        wall, client = time.perf_counter(), time.process_time()
        server, machine = tree_cpu_seconds(self.hub_pid), machine_busy_seconds()
        yield self
        self.wall = time.perf_counter() - wall
        self.client += time.process_time() - client
        self.server = tree_cpu_seconds(self.hub_pid) - server
        self.machine = machine_busy_seconds() - machine

    def report(self) -> dict[str, float]:
        wall = max(self.wall, 1e-9)
        other = max(0.0, self.machine - self.server - self.client)
        return {
            "client_cpu_pct": round(100 * self.client / wall, 1),
            "server_cpu_pct": round(100 * self.server / wall, 1),
            "other_cpu_pct": round(100 * other / wall, 1),
        }


# --------------------------------------------------------------------------- hub processes


@dataclass
class HubRun:
    """One hub instance on its own temp dir, ports and database."""

    hub: str
    tmp: Path
    port: int = 0
    hub_port: int = 0
    proxy_api_port: int = 0
    users: int = 0
    boost: bool = False
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def config(self) -> Path:
        return self.tmp / "jupyterhub_config.py"

    def write_config(self) -> None:
        self.port, self.hub_port, self.proxy_api_port = free_ports(3)
        self.config.write_text(
            CONFIG_TEMPLATE.format(
                port=self.port,
                hub_port=self.hub_port,
                proxy_api_port=self.proxy_api_port,
                tmp=self.tmp,
                token=TOKEN,
                chp=str(CHP_BIN),
            )
        )

    def command(self) -> list[str]:
        if self.hub == "jupyterhub":
            return [str(JUPYTERHUB_BIN), "-f", str(self.config)]
        if is_baseline(self.hub):
            return [str(baseline(self.hub).bin("courtyard")), "serve", "-f", str(self.config)]
        return [*courtyard_command(), "serve", "-f", str(self.config)]

    def environment(self) -> dict[str, str]:
        """The hub's environment: a baseline gets no PYTHONPATH, which could name this
        checkout and so run its code instead of the baseline's (its proxy too)."""
        if is_baseline(self.hub):
            return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        return dict(os.environ)

    def start(self, timeout: float) -> tuple[float, float]:
        """Start the hub; seconds from process start until `/hub/api/` answers 200.

        Also returns the % of a core that other processes used meanwhile, to flag noise.
        """
        self.starts += 1
        log = (self.tmp / f"hub-{self.starts}.log").open("wb")
        machine, own = machine_busy_seconds(), time.process_time()
        began = time.perf_counter()
        self.proc = subprocess.Popen(
            self.command(),
            cwd=self.tmp,
            env=self.environment(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        if self.boost:
            boost_priority(self.proc.pid)
        while time.perf_counter() - began < timeout:
            if self.proc.poll() is not None:
                raise HubFailed(self, f"exited with {self.proc.returncode} before answering")
            if probe(self.hub_port) == 200:
                elapsed = time.perf_counter() - began
                used = tree_cpu_seconds(self.proc.pid) + time.process_time() - own
                other = max(0.0, machine_busy_seconds() - machine - used)
                return elapsed, round(100 * other / elapsed, 1)
            time.sleep(0.005)
        raise HubFailed(self, f"/hub/api/ did not answer 200 within {timeout:.0f} s")

    def meter(self) -> CpuMeter:
        """A CPU meter for the next phase, once other processes leave the machine quiet."""
        assert self.proc is not None, "the hub is running during every phase"
        wait_quiet()
        return CpuMeter(self.proc.pid)

    def settle(self, timeout: float = 30.0) -> bool:
        """Wait until start-up has finished, not only until the hub port answers.

        JupyterHub answers `/hub/api/` before it has configured its proxy and installed its
        SIGTERM handler; a SIGTERM then kills it without cleanup and orphans the proxy.
        The public port routing `/hub/api/` to the hub marks the end of start-up. A hub
        without a working proxy gets `timeout` seconds and is then measured anyway.
        """
        deadline = time.perf_counter() + timeout
        routed = True
        while probe(self.port, timeout=5) != 200:
            if time.perf_counter() > deadline:
                print(f"  {self.hub}: public port {self.port} never routed /hub/api/; going on")
                routed = False
                break
            time.sleep(0.05)
        time.sleep(1.0)  # JupyterHub installs its signal handlers just after routing
        return routed

    def stop(self, proxy: bool = True) -> None:
        """SIGTERM the hub and wait, then clear its process group; with `proxy`, also stop
        a proxy it left running.

        Courtyard's proxy outlives the hub by design, so that users' traffic keeps flowing
        while the hub restarts. JupyterHub stops its CHP itself.
        """
        if self.proc is not None:
            pid = self.proc.pid
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    print(f"  {self.hub} ignored SIGTERM for 30 s; killing it", file=sys.stderr)
                    self.proc.kill()
                    self.proc.wait()
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(pid, sig)  # the group is the hub's own session, see start()
                except ProcessLookupError:
                    break
                time.sleep(0.5)
            self.proc = None
        if proxy:
            self.stop_proxy()

    def proxy_left_running(self) -> int | None:
        """PID of a proxy the stopped hub left running in its directory, if any."""
        for name, marker in PROXY_PID_FILES.items():
            with contextlib.suppress(OSError, ValueError):
                pid = int((self.tmp / name).read_text())
                if marker in Path(f"/proc/{pid}/cmdline").read_bytes() and alive(pid):
                    return pid
        return None

    def stop_proxy(self) -> None:
        pid = self.proxy_left_running()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.perf_counter() + 10
        while alive(pid) and time.perf_counter() < deadline:
            time.sleep(0.05)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)

    def log_tail(self, lines: int = 30) -> str:
        log = self.tmp / f"hub-{self.starts}.log"
        if not log.exists():
            return ""
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


class HubFailed(RuntimeError):
    """The hub under test did not start or answered with unexpected statuses."""

    def __init__(self, run: HubRun, message: str) -> None:
        super().__init__(f"{run.hub}: {message}")
        self.run = run


BOOST_NICE = -10


def boost_priority(pid: int | None = None) -> bool:
    """Give a process precedence over the rest of a shared machine (needs root).

    With autogroup scheduling every session competes as one unit and a process's nice
    value only counts inside its session, so a process that leads a session the benchmark
    made (a hub, wrk) gets its session's nice set too. This process shares its session
    with whatever started it, so it only gets a process nice. Both hubs get the same
    boost: it changes no ratio, only the noise from other work.
    """
    if os.geteuid() != 0:
        return False
    target = pid or os.getpid()
    try:
        os.setpriority(os.PRIO_PROCESS, target, BOOST_NICE)
        if pid is not None and os.getsid(pid) == pid:
            with contextlib.suppress(OSError):  # absent when the kernel has no autogroup
                Path(f"/proc/{pid}/autogroup").write_text(str(BOOST_NICE))
    except OSError:
        return False
    return True


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def courtyard_command() -> list[str]:
    """bench/.venv-courtyard's `courtyard` (this checkout, in an environment of its own, as
    JupyterHub has bench/.venv), else the one beside this interpreter."""
    for script in (COURTYARD_BIN, Path(sys.executable).parent / "courtyard"):
        if script.exists():
            return [str(script)]
    return [sys.executable, "-m", "courtyard"]


def ensure_environment(hubs: list[str]) -> None:
    """Build bench/.venv, bench/.node and bench/.venv-courtyard with setup_env.sh if missing,
    and each baseline's venv (Baseline.ensure)."""
    needed = {"jupyterhub": [JUPYTERHUB_BIN, CHP_BIN], "courtyard": [COURTYARD_BIN]}
    if any(not path.exists() for hub in hubs for path in needed.get(hub, [])):
        subprocess.run(["bash", str(BENCH_DIR / "setup_env.sh")], check=True)
    for hub in hubs:
        if is_baseline(hub):
            baseline(hub).ensure()
    if "courtyard" in hubs:
        # JupyterHub runs from bytecode pip compiled at install; an editable checkout has
        # only what earlier runs wrote, and nothing under PYTHONDONTWRITEBYTECODE=1
        python = COURTYARD_BIN.parent / "python"
        subprocess.run([str(python if python.exists() else sys.executable), "-m", "compileall",
                        "-q", str(BENCH_DIR.parent / "courtyard")], check=True,
                       stdout=subprocess.DEVNULL)


async def run_workers(concurrency: int, port: int, work: Callable[[Connection], Awaitable[None]]) -> None:
    """Run `work` on `concurrency` keep-alive connections at once."""
    conns = [Connection(port) for _ in range(concurrency)]
    try:
        await asyncio.gather(*(work(conn) for conn in conns))
    finally:
        for conn in conns:
            await conn.close()


def better_by(new: float | None, old: float | None, higher_is_better: bool) -> float | None:
    """How many times better `new` is than `old` (a higher rate, or a shorter time); None when
    either is missing or zero."""
    if not new or not old:
        return None
    return new / old if higher_is_better else old / new
