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

from courtyard.db.session import SCHEMA_REVISION
from tests.conftest import free_port, raw_sql

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


def seed_config(db_url: str) -> str:
    """The README's example config, on the run's kind of database."""
    return SEED_CONFIG + f"c.JupyterHub.db_url = {db_url!r}\n"


def test_token_command(tmp_path, db_url):
    (tmp_path / "courtyard_config.py").write_text(seed_config(db_url))
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


def test_check_config_reports_a_database_it_cannot_open(tmp_path, db_url):
    from sqlalchemy.engine import make_url

    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        url = url.set(database=str(tmp_path))  # a directory, not a database file
    else:  # the run's server, a database it does not have, and a password never printed
        url = url.set(database="no_such_database", password="pg-secret-42")
    config = tmp_path / "c.py"
    config.write_text(f"c.JupyterHub.db_url = {url.render_as_string(False)!r}\n")
    r = courtyard("check-config", "-f", str(config), cwd=tmp_path, check=False)
    assert r.returncode == 1 and "c.JupyterHub.db_url: cannot open" in r.stdout, r.stdout
    assert "pg-secret-42" not in r.stdout + r.stderr and "Traceback" not in r.stderr


def test_upgrade_db(tmp_path, db_url):
    from sqlalchemy.engine import make_url

    if db_url.startswith("postgresql"):  # a password in the URL is never printed
        db_url = make_url(db_url).set(password="pg-secret-42%").render_as_string(False)
    for _ in range(2):  # a new database gets the schema; then there is nothing to do
        r = courtyard("upgrade-db", "--db", db_url, cwd=tmp_path)
        assert "up to date" in r.stdout and "Traceback" not in r.stderr
        assert "pg-secret-42" not in r.stdout + r.stderr
    assert raw_sql(db_url, "SELECT version_num FROM alembic_version") == SCHEMA_REVISION


def test_upgrade_db_backs_up_sqlite(tmp_path):
    # SQLite only, whatever --db says: the copy aside is made for SQLite files alone
    r = courtyard("upgrade-db", "--db", f"sqlite:///{tmp_path}/u.sqlite", cwd=tmp_path)
    assert "up to date" in r.stdout and "Backed up" not in r.stdout  # nothing to back up
    r = courtyard("upgrade-db", "--db", f"sqlite:///{tmp_path}/u.sqlite", cwd=tmp_path)
    assert f"Backed up the database to {tmp_path}/u.sqlite." in r.stdout


def test_serve_bad_config_is_one_line(tmp_path):
    (tmp_path / "courtyard_config.py").write_text("c.JupyterHub.hub_port = 'eighty'\n")
    r = courtyard(cwd=tmp_path, check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "hub_port" in r.stderr


@pytest.fixture
def running_hub(tmp_path, db_url):
    """`courtyard serve` as a real process with the seed config; yields its API URL."""
    port = free_port()
    (tmp_path / "courtyard_config.py").write_text(seed_config(db_url) +
        "c.JupyterHub.cleanup_proxy = True\n"
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
