"""``courtyard serve`` as a real process in a directory of its own (its own data, ports and
proxy), for tests that start several hubs on one database and break its files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port
from tests.hubprocess import TOKEN, wait_for


class Serve:
    """``courtyard serve`` with its own data directory and ports on ``db_url``."""

    def __init__(self, directory: Path, db_url: str, *args: str) -> None:
        directory.mkdir(mode=0o700, exist_ok=True)
        self.dir, self.port = directory, free_port()
        (directory / "courtyard_config.py").write_text(
            f"c.JupyterHub.db_url = {db_url!r}\n"
            f"c.JupyterHub.data_files_path = {str(directory)!r}\n"
            f"c.JupyterHub.api_tokens = {{{TOKEN!r}: 'admin'}}\n"
            "c.Authenticator.admin_users = {'admin'}\n"
            "c.JupyterHub.authenticator_class = 'dummy'\n"
            "c.JupyterHub.cleanup_proxy = True\n"
            f"c.BuiltinProxy.api_url = 'http://127.0.0.1:{free_port()}'\n"
            "c.BuiltinProxy.workers = 1\n")
        self.log = directory / "hub.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "courtyard", "serve", "--port", str(self.port),
             "--hub-port", str(free_port()), *args],
            cwd=directory, stdout=self.log.open("w"), stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def serving(self) -> Serve:
        wait_for(lambda: self.proc.poll() is not None or httpx.get(
            f"{self.url}hub/api/").status_code == 200, "the hub")
        assert self.proc.poll() is None, self.log.read_text()
        return self

    def refused(self) -> str:
        """The hub exits at start-up: status 1 and one error line, no traceback; that line."""
        assert self.proc.wait(60) == 1, self.log.read_text()
        output = self.log.read_text()
        errors = [line for line in output.splitlines() if line.startswith("courtyard: error:")]
        assert len(errors) == 1 and "Traceback" not in output, output
        assert not (self.dir / "courtyard-proxy.pid").exists()  # it never got as far
        return errors[0]

    def users(self) -> list[str]:
        r = httpx.get(f"{self.url}hub/api/users", headers={"Authorization": f"token {TOKEN}"})
        assert r.status_code == 200, r.text
        return [u["name"] for u in r.json()]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        pidfile = self.dir / "courtyard-proxy.pid"  # a killed hub leaves its proxy up
        if sig == signal.SIGKILL and pidfile.exists():
            try:
                os.kill(int(pidfile.read_text()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass


@pytest.fixture
def hubs() -> Iterator[Any]:
    """``hubs(directory, db_url, *args)``: a ``courtyard serve``; every one still running is
    killed at the end, with the proxy it left."""
    started: list[Serve] = []

    def run(directory: Path, db_url: str, *args: str) -> Serve:
        started.append(Serve(directory, db_url, *args))
        return started[-1]

    yield run
    for hub in started:
        hub.stop(signal.SIGKILL if hub.proc.poll() is None else signal.SIGTERM)
