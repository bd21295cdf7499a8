"""A new install, as a real ``courtyard serve`` process: the admin password is printed once."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from .backends import free_port


@contextmanager
def serving(cwd: Path) -> Iterator[tuple[str, Path]]:
    """``courtyard serve`` in ``cwd`` until the block ends; (hub URL, its stderr file)."""
    port = free_port()
    log = cwd / f"serve-{port}.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "courtyard", "serve", "--hub-port",
                                 str(port), "--port", str(free_port())], cwd=cwd,
                                stdout=subprocess.DEVNULL, stderr=out)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                try:
                    if httpx.get(f"{url}/hub/api/").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.05)
            yield url, log
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)


def test_new_install_prints_admin_password_once(tmp_path, db_url):
    # a new install: all defaults, but for a private proxy API port, no proxy left behind,
    # and the run's kind of database (a new, empty one)
    (tmp_path / "courtyard_config.py").write_text(
        f"c.BuiltinProxy.api_url = 'http://127.0.0.1:{free_port()}'\n"
        "c.JupyterHub.cleanup_proxy = True\n"
        f"c.JupyterHub.db_url = {db_url!r}\n")
    with serving(tmp_path) as (_url, log):
        err = log.read_text()
    match = re.search(r"username: (\S+)\n\s+password: (\S+)", err)
    assert match and match.group(1) == "admin", err
    assert err.count("password:") == 1
    with serving(tmp_path) as (url, log), httpx.Client(base_url=url) as client:
        assert "password:" not in log.read_text()
        # the printed password works, through the form
        page = client.get("/hub/login")
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
        response = client.post("/hub/login", data={
            "_xsrf": xsrf, "username": "admin", "password": match.group(2)})
        assert response.status_code == 303, response.text
        me = client.get("/hub/api/user", headers={"X-XSRFToken": client.cookies["_xsrf"]})
        assert me.json()["admin"] is True
