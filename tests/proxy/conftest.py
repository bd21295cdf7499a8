"""Fixtures for the proxy: real processes on loopback, free ports, readiness by polling.

``courtyard_proxy`` starts ``python -m courtyard.proxy``; ``api_proxy`` is parametrized
over Courtyard's proxy and Node's configurable-http-proxy (the reference), so the REST
API tests prove conformance. CHP is found through ``$COURTYARD_CHP``,
``./node_modules/.bin``, ``bench/.node/node_modules/.bin`` or ``$PATH``; without it those
cases skip, except under ``CI`` where they fail.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.ports import free_port

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
TOKEN = "test-proxy-token"




def wait_for(check: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    """Poll ``check`` with a short back-off; no fixed sleeps in tests."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def find_chp() -> str | None:
    candidates = [
        os.environ.get("COURTYARD_CHP", ""),
        str(ROOT / "node_modules/.bin/configurable-http-proxy"),
        str(ROOT / "bench/.node/node_modules/.bin/configurable-http-proxy"),
        shutil.which("configurable-http-proxy") or "",
    ]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def require_chp() -> str:
    chp = find_chp()
    if chp is None:
        reason = "configurable-http-proxy not found (npm install --prefix bench/.node " \
            "configurable-http-proxy, or set COURTYARD_CHP)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must provide it")
        pytest.skip(reason)
    return chp


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants, read from /proc."""
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
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class ProxyProcess:
    """A running proxy: ``url`` is the public base URL, ``api`` the REST API base URL."""

    kind: str
    proc: subprocess.Popen[bytes]
    port: int
    api_port: int
    token: str = TOKEN
    scheme: str = "http"
    log_path: Path | None = None
    clients: list[httpx.Client] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def api_client(self) -> httpx.Client:
        """A client with the right token, kept for the life of the proxy."""
        if not self.clients:
            self.clients.append(httpx.Client(
                base_url=self.api, headers={"Authorization": f"token {self.token}"}, timeout=10
            ))
        return self.clients[0]

    def add_route(self, path: str, target: str, **data: object) -> None:
        response = self.api_client().post(f"/api/routes{path}", json={"target": target, **data})
        assert response.status_code == 201, response.text

    def delete_route(self, path: str) -> None:
        self.api_client().delete(f"/api/routes{path}")

    def pids(self) -> list[int]:
        return process_tree(self.proc.pid)

    def rss_kib(self) -> int:
        return sum(rss_kib(p) for p in self.pids())

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _api_ready(p: ProxyProcess) -> bool:
    if p.proc.poll() is not None:
        raise RuntimeError(f"{p.kind} exited with {p.proc.returncode}:\n{p.log()}")
    try:
        r = httpx.get(f"{p.api}/api/routes", headers={"Authorization": f"token {p.token}"},
                      timeout=1)
    except httpx.HTTPError:
        return False
    return r.status_code == 200 and port_open(p.port)


def start_proxy(
    kind: str, tmp_path: Path, *args: str, workers: int = 1, token: str = TOKEN
) -> ProxyProcess:
    """Start ``courtyard`` or ``chp`` on free ports and wait until both ports answer."""
    port, api_port = free_port(), free_port()
    if kind == "chp":
        cmd = [require_chp()]
    else:
        cmd = [sys.executable, "-m", "courtyard.proxy", "--workers", str(workers)]
    cmd += ["--ip", "127.0.0.1", "--port", str(port), "--api-ip", "127.0.0.1",
            "--api-port", str(api_port), *args]
    log_path = tmp_path / f"{kind}-{port}.log"
    env = dict(os.environ, CONFIGPROXY_AUTH_TOKEN=token)
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    scheme = "https" if "--ssl-cert" in args else "http"
    p = ProxyProcess(kind, proc, port, api_port, token, scheme, log_path)
    try:
        wait_for(lambda: _api_ready(p), 20, f"{kind} to start")
    except BaseException:
        p.stop()
        raise
    return p


@pytest.fixture(scope="session")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real target server (tests/proxy/backend.py) shared by the session."""
    yield from _run_backend("one")


@pytest.fixture(scope="session")
def backend2() -> Iterator[str]:
    yield from _run_backend("two")


def _run_backend(name: str) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(HERE / "backend.py"), str(port), name])
    try:
        wait_for(lambda: port_open(port), 20, f"backend {name}")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def proxy_factory(tmp_path: Path) -> Iterator[Callable[..., ProxyProcess]]:
    """Start proxies with extra CLI args; all are stopped after the test."""
    started: list[ProxyProcess] = []

    def factory(*args: str, kind: str = "courtyard", workers: int = 1) -> ProxyProcess:
        p = start_proxy(kind, tmp_path, *args, workers=workers)
        started.append(p)
        return p

    yield factory
    for p in started:
        p.stop()


def reset_routes(p: ProxyProcess) -> ProxyProcess:
    """Leave only the default route, so module-scoped proxies start each test clean."""
    api = p.api_client()
    for path in api.get("/api/routes").json():
        if path != "/":
            api.delete(f"/api/routes{path}")
    return p


@pytest.fixture(scope="module")
def _shared_proxies(
    tmp_path_factory: pytest.TempPathFactory, backend: str
) -> Iterator[dict[str, ProxyProcess]]:
    """One proxy of each kind per test module: starting one costs about a second."""
    started: dict[str, ProxyProcess] = {}
    tmp = tmp_path_factory.mktemp("proxies")

    def get(kind: str) -> ProxyProcess:
        if kind not in started:
            started[kind] = start_proxy(kind, tmp, "--default-target", backend)
        return started[kind]

    yield _LazyDict(get)  # type: ignore[misc]
    for p in started.values():
        p.stop()


class _LazyDict(dict):  # type: ignore[type-arg]
    def __init__(self, get: Callable[[str], ProxyProcess]) -> None:
        super().__init__()
        self._get = get

    def __missing__(self, kind: str) -> ProxyProcess:
        return self._get(kind)


@pytest.fixture
def proxy(_shared_proxies: dict[str, ProxyProcess]) -> ProxyProcess:
    """Courtyard's proxy (one worker) with the backend as default target."""
    return reset_routes(_shared_proxies["courtyard"])


@pytest.fixture(params=["courtyard", pytest.param("chp", marks=pytest.mark.chp)])
def api_proxy(
    request: pytest.FixtureRequest, _shared_proxies: dict[str, ProxyProcess]
) -> ProxyProcess:
    """The same tests run against Courtyard's proxy and the reference CHP."""
    if request.param == "chp":
        require_chp()
    return reset_routes(_shared_proxies[request.param])
