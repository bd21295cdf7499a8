"""A new user's first steps, as real ``courtyard serve`` processes: the quick start run in a
source checkout keeps its state out of the repository and says where it is, and two hubs
on one machine, on different ports, do not collide on the proxy's API port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import free_port
from tests.hubprocess import wait_for

# the installed command, as a user runs it: ``python -m courtyard`` would import the
# checkout's own package from the working directory
COURTYARD = [str(Path(sys.executable).with_name("courtyard"))]

CONFIG = """\
c.JupyterHub.api_tokens = {'first-steps-token': 'admin'}
c.Authenticator.admin_users = {'admin'}
c.JupyterHub.cleanup_proxy = True
c.BuiltinProxy.workers = 1
"""


def free_pair() -> int:
    """A port P with P + 1 free too (the proxy's API port derived from P)."""
    for _ in range(100):
        port = free_port()
        if port >= 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two free ports in a row")


@contextmanager
def serve(cwd: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Path]:
    """``courtyard serve ARGS`` in ``cwd`` until the block ends (then SIGTERM, exit 0);
    yields its log file, which is kept outside ``cwd``."""
    log = cwd.parent / f"{cwd.name}-serve.log"
    port = args[args.index("--port") + 1]
    with log.open("w") as out:
        proc = subprocess.Popen([*COURTYARD, "serve", *args], cwd=cwd,
                                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    try:
        wait_for(lambda: proc.poll() is not None or httpx.get(
            f"http://127.0.0.1:{port}/hub/api/", trust_env=False).status_code == 200,
            "the hub, through its proxy")
        assert proc.poll() is None, log.read_text()
        yield log
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()


def test_quick_start_in_a_checkout_keeps_state_out_of_it(tmp_path):
    checkout = tmp_path / "courtyard-src"  # what a clone of the repository looks like
    (checkout / "courtyard").mkdir(parents=True)
    (checkout / "courtyard" / "__init__.py").write_text("")
    (checkout / "pyproject.toml").write_text("[project]\nname = 'courtyard'\n")
    (checkout / "courtyard_config.py").write_text(CONFIG)
    before = sorted(p.relative_to(checkout) for p in checkout.rglob("*"))
    xdg = tmp_path / "xdg"
    data = xdg / "courtyard"
    env = {"XDG_DATA_HOME": str(xdg)}
    with serve(checkout, "--port", str(free_port()), "--hub-port", str(free_port()),
               "--proxy-api-port", str(free_port()), env=env) as log:
        assert f"Data directory: {data} " in log.read_text()
    assert sorted(p.relative_to(checkout) for p in checkout.rglob("*")) == before
    assert (data / "courtyard.sqlite").is_file() and (data / "courtyard_cookie_secret").is_file()
    assert data.stat().st_mode & 0o777 == 0o700
    # the other commands find the same database from the same place
    r = subprocess.run([*COURTYARD, "token", "admin"], cwd=checkout,
                       env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and len(r.stdout.strip()) == 32, r.stderr
    assert sorted(p.relative_to(checkout) for p in checkout.rglob("*")) == before


def test_outside_a_checkout_the_working_directory_holds_the_state(tmp_path):
    (tmp_path / "courtyard_config.py").write_text(CONFIG)
    with serve(tmp_path, "--port", str(free_port()), "--hub-port", str(free_port()),
               "--proxy-api-port", str(free_port())) as log:
        assert f"Data directory: {tmp_path} " in log.read_text()
    assert (tmp_path / "courtyard.sqlite").is_file()


def test_two_hubs_on_different_ports_run_side_by_side(tmp_path, new_db_url):
    hubs = []
    for name in ("one", "two"):
        directory = tmp_path / name
        directory.mkdir()
        (directory / "courtyard_config.py").write_text(
            CONFIG + f"c.JupyterHub.db_url = {new_db_url(name)!r}\n")
        hubs.append((directory, free_pair(), free_port()))
    (one, port1, hub1), (two, port2, hub2) = hubs
    with serve(one, "--port", str(port1), "--hub-port", str(hub1)), \
            serve(two, "--port", str(port2), "--hub-port", str(hub2)):
        for port, hub_port in ((port1, hub1), (port2, hub2)):
            # each proxy carries its own hub, and its API is on the public port + 1
            r = httpx.get(f"http://127.0.0.1:{port}/hub/api/user", trust_env=False,
                          headers={"Authorization": "token first-steps-token"})
            assert r.status_code == 200 and r.json()["name"] == "admin"
            token = (tmp_path / ("one" if port == port1 else "two") /
                     "courtyard-proxy.token").read_text()
            r = httpx.get(f"http://127.0.0.1:{port + 1}/api/routes", trust_env=False,
                          headers={"Authorization": f"token {token}"})
            assert r.status_code == 200
            assert r.json()["/"]["target"] == f"http://127.0.0.1:{hub_port}"


def test_proxy_api_port_flag(tmp_path):
    (tmp_path / "courtyard_config.py").write_text(CONFIG)
    api_port = free_port()
    with serve(tmp_path, "--port", str(free_port()), "--hub-port", str(free_port()),
               "--proxy-api-port", str(api_port)):
        token = (tmp_path / "courtyard-proxy.token").read_text()
        r = httpx.get(f"http://127.0.0.1:{api_port}/api/routes", trust_env=False,
                      headers={"Authorization": f"token {token}"})
        assert r.status_code == 200 and "/" in r.json()
