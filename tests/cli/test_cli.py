"""The courtyard command, run as a real process."""

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

SEED_CONFIG = """
c.JupyterHub.api_tokens = {'secret-token': 'admin'}
c.Authenticator.admin_users = {'admin'}
"""


def courtyard(*args: str, cwd: Path, check: bool = True, timeout: float = 60
              ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "courtyard", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=timeout, check=check)


def test_help_everywhere(tmp_path):
    for args in ([], ["serve"], ["token"], ["upgrade-db"], ["generate-config"], ["check-config"]):
        out = courtyard(*args, "--help", cwd=tmp_path).stdout
        assert "usage: courtyard" in out
    out = courtyard("--help", cwd=tmp_path).stdout
    for flag in ("--ip", "--port", "--config", "--db", "--base-url", "--debug"):
        assert flag in out


def test_token_command(tmp_path):
    (tmp_path / "courtyard_config.py").write_text(SEED_CONFIG)
    r = courtyard("token", "nobody", cwd=tmp_path, check=False)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "no user named 'nobody'" in r.stderr
    token = courtyard("token", "admin", "--note", "ci", "--expires-in", "600",
                      cwd=tmp_path).stdout.strip()
    assert len(token) == 32
    r = courtyard("token", "admin", "--scopes", "bogus", cwd=tmp_path, check=False)
    assert r.returncode == 1 and "unknown scope" in r.stderr


def test_generate_and_check_config(tmp_path):
    courtyard("generate-config", cwd=tmp_path)
    text = (tmp_path / "courtyard_config.py").read_text()
    assert "# c.Courtyard.hub_port = 8081" in text and "## Port the hub's own" in text
    r = courtyard("generate-config", cwd=tmp_path, check=False)
    assert r.returncode == 1 and "--force" in r.stderr
    assert "Configuration OK" in courtyard("check-config", cwd=tmp_path).stdout
    bad = tmp_path / "bad.py"
    bad.write_text("c.JupyterHub.port = 'x'\nc.JupyterHub.frobnicate = 1\n"
                   "c.JupyterHub.ssl_cert = '/nonexistent.pem'\n")
    r = courtyard("check-config", "-f", str(bad), cwd=tmp_path, check=False)
    assert r.returncode == 1 and "port" in r.stdout and "Traceback" not in r.stdout + r.stderr
    bad.write_text("c.JupyterHub.frobnicate = 1\nc.JupyterHub.ssl_cert = '/nonexistent.pem'\n"
                   "c.JupyterHub.authenticator_class = 'nonesuch'\n")
    r = courtyard("check-config", "-f", str(bad), cwd=tmp_path, check=False)
    assert r.returncode == 1
    assert "nonesuch" in r.stdout and "/nonexistent.pem" in r.stdout


def test_upgrade_db(tmp_path):
    r = courtyard("upgrade-db", "--db", f"sqlite:///{tmp_path}/u.sqlite", cwd=tmp_path)
    assert "up to date" in r.stdout
    r = courtyard("upgrade-db", "--db", f"sqlite:///{tmp_path}/u.sqlite", cwd=tmp_path)
    assert "Backed up" in r.stdout


def test_serve_bad_config_is_one_line(tmp_path):
    (tmp_path / "courtyard_config.py").write_text("c.JupyterHub.hub_port = 'eighty'\n")
    r = courtyard(cwd=tmp_path, check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "hub_port" in r.stderr


@pytest.fixture
def running_hub(tmp_path):
    """`courtyard serve` as a real process with the seed config; yields its API URL."""
    port = free_port()
    (tmp_path / "courtyard_config.py").write_text(SEED_CONFIG + "c.JupyterHub.cleanup_proxy = True\n"
        f"c.BuiltinProxy.api_url = 'http://127.0.0.1:{free_port()}'\n")
    proc = subprocess.Popen([sys.executable, "-m", "courtyard", "--hub-port", str(port),
                             "--port", str(free_port())], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COURTYARD_TEST": "1"})
    url = f"http://127.0.0.1:{port}/hub/api"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.05)
        if proc.poll() is not None:
            pytest.fail(proc.stdout.read())
    yield url, tmp_path
    proc.send_signal(signal.SIGTERM)
    proc.wait(15)


def test_seed_examples_verbatim(running_hub):
    url, cwd = running_hub
    curl = ["curl", "-s", "-H", "Authorization: token secret-token"]
    out = subprocess.run([*curl, f"{url}/users"], capture_output=True, text=True).stdout
    assert '"name":"admin"' in out
    subprocess.run([*curl, "-X", "POST", "-d", '{"usernames": ["user1", "user2"]}',
                    f"{url}/users"], check=True, capture_output=True)
    out = subprocess.run([*curl, "-X", "POST", f"{url}/groups/formgrade-data301"],
                         capture_output=True, text=True).stdout
    assert '"formgrade-data301"' in out
    out = subprocess.run([*curl, "-X", "POST", "-d", '{"users": ["user1", "user2"]}',
                          f"{url}/groups/formgrade-data301/users"],
                         capture_output=True, text=True).stdout
    assert '"users":["user1","user2"]' in out
    token = courtyard("token", "user1", cwd=cwd).stdout.strip()
    r = httpx.get(f"{url}/user", headers={"Authorization": f"token {token}"})
    assert r.status_code == 200 and r.json()["name"] == "user1"
