"""The hub and its proxy, as real processes: routes, proxy restarts, hub restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

TOKEN = "hub-proxy-test-token"


def wait_for(check, timeout: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


class HubProcess:
    def __init__(self, cwd: Path, hub_port: int, port: int, api_port: int) -> None:
        self.cwd, self.hub_port, self.port, self.api_port = cwd, hub_port, port, api_port
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "courtyard", "--hub-port", str(self.hub_port), "--port",
             str(self.port)], cwd=self.cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{self.port}/hub/api/").status_code == 200,
                 what="the hub through the proxy")

    def stop(self) -> str:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        return out


@pytest.fixture
def hub_dir(tmp_path, db_url):
    api_port = free_port()
    (tmp_path / "courtyard_config.py").write_text(
        f"c.JupyterHub.db_url = {db_url!r}\n"
        f"c.JupyterHub.api_tokens = {{'{TOKEN}': 'admin'}}\n"
        "c.Authenticator.admin_users = {'admin'}\n"
        "c.JupyterHub.authenticator_class = 'dummy'\n"
        "c.JupyterHub.last_activity_interval = 1\n"
        f"c.BuiltinProxy.api_url = 'http://127.0.0.1:{api_port}'\n"
        "c.BuiltinProxy.workers = 1\n"
        "c.JupyterHub.services = [{'name': 'echo', 'url': 'http://127.0.0.1:9'}]\n")
    yield tmp_path, api_port
    pid_file = tmp_path / "courtyard-proxy.pid"
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
        except (ProcessLookupError, ValueError):
            pass


def routes(hub: HubProcess) -> dict:
    r = httpx.get(f"http://127.0.0.1:{hub.hub_port}/hub/api/proxy",
                  headers={"Authorization": f"token {TOKEN}"})
    assert r.status_code == 200, r.text
    return r.json()


def test_routes_survive_proxy_and_hub_restarts(hub_dir):
    cwd, api_port = hub_dir
    hub = HubProcess(cwd, free_port(), free_port(), api_port)
    hub.start()
    try:
        table = routes(hub)
        assert table["/"]["data"]["hub"] is True
        assert table["/services/echo/"]["target"] == "http://127.0.0.1:9"
        # the proxy dies; the hub notices within seconds, starts a new one, restores routes
        pid = int((cwd / "courtyard-proxy.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)

        def restored():
            new_pid = int((cwd / "courtyard-proxy.pid").read_text().split()[0])
            return new_pid != pid and "/services/echo/" in routes(hub)

        wait_for(restored, timeout=30, what="a new proxy with the routes back")
        r = httpx.get(f"http://127.0.0.1:{hub.port}/hub/api/")
        assert r.status_code == 200
    finally:
        out = hub.stop()
    assert "Traceback" not in out, out
    # a new hub starts a new proxy and puts the routes back
    hub.start()
    try:
        assert "/services/echo/" in routes(hub)
        proxy_pid = int((cwd / "courtyard-proxy.pid").read_text().split()[0])
    finally:
        hub.stop()
    # the proxy outlives the hub (cleanup_proxy is off): users' traffic keeps flowing
    os.kill(proxy_pid, 0)
    r = httpx.get(f"http://127.0.0.1:{api_port}/api/routes",
                  headers={"Authorization": "token " + (cwd / "courtyard-proxy.token")
                           .read_text().strip()})
    assert "/services/echo" in r.json() or "/services/echo/" in r.json()
    hub.start()  # adopts the running proxy
    try:
        assert int((cwd / "courtyard-proxy.pid").read_text().split()[0]) == proxy_pid
        assert "/services/echo/" in routes(hub)
    finally:
        hub.stop()


def test_proxy_api_requires_scope(hub_dir):
    cwd, api_port = hub_dir
    hub = HubProcess(cwd, free_port(), free_port(), api_port)
    hub.start()
    try:
        r = httpx.get(f"http://127.0.0.1:{hub.hub_port}/hub/api/proxy")
        assert r.status_code == 403
        r = httpx.patch(f"http://127.0.0.1:{hub.hub_port}/hub/api/proxy", json={"api_url": 5},
                        headers={"Authorization": f"token {TOKEN}"})
        assert r.status_code == 400
    finally:
        hub.stop()


def test_api_answers_while_a_slow_proxy_starts(hub_dir):
    """The hub listens before its proxy is up; proxy reads wait for the first route sync."""
    cwd, api_port = hub_dir
    gate = cwd / "proxy-may-start"
    (cwd / "slow_proxy.py").write_text(
        "import os, sys, time\n"
        f"while not os.path.exists({str(gate)!r}):\n"
        "    time.sleep(0.02)\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'courtyard.proxy', *sys.argv[1:]])\n")
    with (cwd / "courtyard_config.py").open("a") as f:
        f.write(f"c.BuiltinProxy.command = [{sys.executable!r}, {str(cwd / 'slow_proxy.py')!r}]\n")
    hub = HubProcess(cwd, free_port(), free_port(), api_port)
    hub.proc = subprocess.Popen(
        [sys.executable, "-m", "courtyard", "--hub-port", str(hub.hub_port), "--port",
         str(hub.port)], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{hub.hub_port}/hub/api/").status_code
                 == 200, what="the hub's own port")
        with pytest.raises(httpx.ConnectError):  # the proxy is held back: nothing public yet
            httpx.get(f"http://127.0.0.1:{hub.port}/hub/api/")
        r = httpx.get(f"http://127.0.0.1:{hub.hub_port}/hub/api/users",
                      headers={"Authorization": f"token {TOKEN}"})
        assert r.status_code == 200
        gate.touch()
        table = routes(hub)  # waits for the proxy and its first sync: never half-filled
        assert table["/"]["data"]["hub"] is True and "/services/echo/" in table
        assert httpx.get(f"http://127.0.0.1:{hub.port}/hub/api/").status_code == 200
    finally:
        gate.touch()
        out = hub.stop()
    assert "Traceback" not in out, out
