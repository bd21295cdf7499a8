"""``consecutive_failure_limit`` stops ``courtyard serve`` with a failing exit status."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx

from tests.conftest import free_port

CONFIG = """
from courtyard.spawners.base import Spawner


class Failing(Spawner):
    async def start(self):
        raise RuntimeError("this server never starts")

    async def stop(self, now=False):
        pass

    async def poll(self):
        return 0


c.JupyterHub.api_tokens = {"secret-token": "admin"}
c.Authenticator.admin_users = {"admin"}
c.JupyterHub.proxy_class = "none"
c.JupyterHub.spawner_class = Failing
c.Spawner.consecutive_failure_limit = 2
"""


def test_failure_limit_exits_nonzero(tmp_path, db_url):
    (tmp_path / "courtyard_config.py").write_text(CONFIG + f"c.JupyterHub.db_url = {db_url!r}\n")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "courtyard", "--hub-port", str(port)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        url = f"http://127.0.0.1:{port}/hub/api"
        headers = {"Authorization": "token secret-token"}
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(url + "/").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the hub never answered"
                time.sleep(0.05)
        assert httpx.post(f"{url}/users/alice", headers=headers).status_code == 201
        for server in ("a", "b"):
            r = httpx.post(f"{url}/users/alice/server", headers=headers, timeout=30)
            assert r.status_code == 500, (server, r.text)
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = proc.stdout.read()
    assert code == 1, output
    assert "consecutive_failure_limit" in output
