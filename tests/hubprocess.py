"""A hub as a real process: ``courtyard -f jupyterhub_config.py`` with the built-in proxy,
on private ports, for tests that check what a user or a service sees over HTTP."""

from __future__ import annotations

import html
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port

TOKEN = "hub-process-admin-token"


def wait_for(check: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


class HubProcess:
    """``courtyard -f jupyterhub_config.py`` with the built-in proxy, on private ports."""

    def __init__(self, directory: Path, db_url: str, config: str) -> None:
        self.dir = directory
        self.port, self.hub_port, api_port = free_port(), free_port(), free_port()
        (directory / "jupyterhub_config.py").write_text(
            f"c.JupyterHub.db_url = {db_url!r}\n"
            f"c.JupyterHub.data_files_path = {str(directory)!r}\n"
            f"c.JupyterHub.api_tokens = {{{TOKEN!r}: 'admin'}}\n"
            "c.Authenticator.admin_users = {'admin'}\n"
            "c.JupyterHub.authenticator_class = 'dummy'\n"
            "c.JupyterHub.cleanup_proxy = True\n"
            "c.JupyterHub.cleanup_servers = True\n"
            f"c.BuiltinProxy.api_url = 'http://127.0.0.1:{api_port}'\n"
            "c.BuiltinProxy.workers = 1\n" + config)
        self.log = directory / "hub.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "courtyard", "-f", "jupyterhub_config.py", "--port",
             str(self.port), "--hub-port", str(self.hub_port)],
            cwd=directory, stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        wait_for(lambda: self.proc.poll() is not None or httpx.get(
            f"{self.url}/hub/api/").status_code == 200, "the hub")
        assert self.proc.poll() is None, self.log.read_text()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(method, f"{self.url}/hub/api{path}",
                             headers={"Authorization": f"token {TOKEN}"}, **kw)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.log.read_text()


@pytest.fixture
def run_hub(tmp_path: Path, db_url: str) -> Iterator[Any]:
    """``run_hub(config_text)``: a hub process with these config lines; stopped at the end."""
    hubs: list[HubProcess] = []

    def run(config: str) -> HubProcess:
        hubs.append(HubProcess(tmp_path, db_url, config))
        return hubs[-1]

    yield run
    for hub in hubs:
        hub.stop()


def sign_in(hub: HubProcess, client: httpx.Client, url: str, user: str) -> httpx.Response:
    """Open ``url`` as a browser would, signing in on the hub's login page on the way
    (the dummy authenticator: any password)."""
    page = client.get(url)
    assert page.status_code == 200 and "/hub/login" in str(page.url), page.text[:300]
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
    found = re.search(r'name="next" value="([^"]*)"', page.text)
    data = {"_xsrf": xsrf, "username": user, "password": ""}
    if found:
        data["next"] = html.unescape(found.group(1))
    return client.post(f"{hub.url}/hub/login", data=data)
