"""A real JupyterHub 6 drives courtyard-proxy instead of configurable-http-proxy.

JupyterHub runs from its own virtualenv (it must not share our interpreter's packages):
``$COURTYARD_JUPYTERHUB_VENV`` if set, else ``/var/cache/courtyard-tests/jupyterhub-venv``
(built here with ``python3 -m venv`` + ``pip install 'jupyterhub>=6,<7'`` when missing,
under a lock, then reused), else an existing ``bench/.venv`` holding JupyterHub 6.
Without JupyterHub (and no way to install it) the test skips, except under ``CI`` where it
fails. Prebuild in CI with::

    python3 -m venv /var/cache/courtyard-tests/jupyterhub-venv
    /var/cache/courtyard-tests/jupyterhub-venv/bin/pip install 'jupyterhub>=6,<7'

The hub's ``ConfigurableHTTPProxy`` starts ``python -m courtyard.proxy`` with the flags it
would give CHP; the single-user server is tests/spawners/mocksu.py under the
``SimpleLocalProcessSpawner``. Everything goes through the proxy's public port.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, free_port, wait_for

CACHE_VENV = Path("/var/cache/courtyard-tests/jupyterhub-venv")
MOCKSU = ROOT / "tests/spawners/mocksu.py"
SERVICE_TOKEN = "courtyard-proxy-test-service-token"
PROXY_TOKEN = "courtyard-proxy-test-proxy-token"
USER = "alice"


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must provide it (see tests/proxy/test_jupyterhub.py)")
    pytest.skip(reason)


def _has_jupyterhub6(python: Path) -> bool:
    if not os.access(python, os.X_OK):
        return False
    check = "import jupyterhub, sys; sys.exit(jupyterhub.version_info[0] != 6)"
    return subprocess.run([python, "-c", check], capture_output=True, timeout=60).returncode == 0


def _build_venv(venv: Path) -> None:
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run may be building it
        if _has_jupyterhub6(venv / "bin/python"):
            return
        shutil.rmtree(venv, ignore_errors=True)
        base = shutil.which("python3") or sys.executable
        subprocess.run([base, "-m", "venv", str(venv)], check=True, capture_output=True)
        pip = subprocess.run(
            [str(venv / "bin/python"), "-m", "pip", "install", "--quiet", "jupyterhub>=6,<7"],
            capture_output=True, text=True, timeout=900,
        )
        if pip.returncode:
            shutil.rmtree(venv, ignore_errors=True)
            raise RuntimeError(f"pip install jupyterhub failed:\n{pip.stderr[-3000:]}")


def hub_python() -> Path:
    """A Python that can import JupyterHub 6, building the cached venv when needed."""
    override = os.environ.get("COURTYARD_JUPYTERHUB_VENV")
    venv = Path(override) if override else CACHE_VENV
    if _has_jupyterhub6(venv / "bin/python"):
        return venv / "bin/python"
    bench = ROOT / "bench/.venv/bin/python"
    if not override and _has_jupyterhub6(bench):
        return bench
    try:
        _build_venv(venv)
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        _missing(f"no JupyterHub 6 venv at {venv} and building it failed: {exc}")
    if not _has_jupyterhub6(venv / "bin/python"):
        _missing(f"{venv} does not import jupyterhub 6 after installing it")
    return venv / "bin/python"


@dataclass
class Hub:
    proc: subprocess.Popen[bytes]
    url: str
    proxy_api: str
    log_path: Path
    pid_file: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=f"{self.url}/hub/api", timeout=10,
                            headers={"Authorization": f"token {SERVICE_TOKEN}"})

    def proxy_routes(self) -> dict[str, object]:
        r = httpx.get(f"{self.proxy_api}/api/routes", timeout=5,
                      headers={"Authorization": f"token {PROXY_TOKEN}"})
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]


# JupyterHub's own database stays SQLite whatever --db says: this hub is the reference the
# built-in proxy is tested under, not Courtyard, and its venv has no PostgreSQL driver.
CONFIG = """\
c = get_config()  # noqa
c.JupyterHub.bind_url = "http://127.0.0.1:{port}"
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub_port}"
c.JupyterHub.db_url = "sqlite:///{tmp}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{tmp}/cookie_secret"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = "simple"
c.Spawner.cmd = [{hub_python!r}, {mocksu!r}]
c.Spawner.start_timeout = 30
c.Spawner.http_timeout = 30
c.ConfigurableHTTPProxy.command = [{python!r}, "-m", "courtyard.proxy", "--workers", "2"]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{api_port}"
c.ConfigurableHTTPProxy.auth_token = {proxy_token!r}
c.ConfigurableHTTPProxy.pid_file = "{tmp}/proxy.pid"
c.ConfigurableHTTPProxy.debug = True
c.JupyterHub.services = [{{"name": "tester", "api_token": {token!r}}}]
c.JupyterHub.load_roles = [{{
    "name": "tester",
    "scopes": ["admin:users", "admin:servers", "proxy"],
    "services": ["tester"],
}}]
"""


def _ready(hub: Hub) -> bool:
    if hub.proc.poll() is not None:
        raise RuntimeError(f"jupyterhub exited with {hub.proc.returncode}:\n{hub.log()}")
    try:
        return httpx.get(f"{hub.url}/hub/api", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    python = hub_python()
    port, hub_port, api_port = free_port(), free_port(), free_port()
    config = tmp_path / "jupyterhub_config.py"
    config.write_text(CONFIG.format(
        port=port, hub_port=hub_port, api_port=api_port, tmp=tmp_path, hub_python=str(python),
        mocksu=str(MOCKSU), python=sys.executable, proxy_token=PROXY_TOKEN, token=SERVICE_TOKEN,
    ))
    env = dict(os.environ)
    env.pop("CONFIGPROXY_AUTH_TOKEN", None)
    check = subprocess.run([sys.executable, "-c", "import courtyard.proxy"], cwd=tmp_path,
                           capture_output=True)
    if check.returncode:  # running from a checkout that is not installed
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    log_path = tmp_path / "jupyterhub.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [str(python), "-m", "jupyterhub", "-f", str(config)], cwd=tmp_path, env=env,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    h = Hub(proc, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{api_port}", log_path,
            tmp_path / "proxy.pid")
    try:
        wait_for(lambda: _ready(h), 45, "jupyterhub behind courtyard-proxy")
        yield h
    finally:
        proxy_pid = int(h.pid_file.read_text()) if h.pid_file.exists() else None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the hub stops its servers and the proxy
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if proxy_pid:  # the hub's cleanup should have stopped it; make sure
            try:
                wait_for(lambda: not Path(f"/proc/{proxy_pid}").exists(), 10, "proxy to stop")
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proxy_pid, signal.SIGTERM)  # the master stops its workers


@pytest.mark.timeout(900)  # the first run may build JupyterHub's venv
def test_jupyterhub_runs_on_courtyard_proxy(hub: Hub) -> None:
    # The hub started our proxy (not CHP) and registered itself as the default route.
    routes = hub.proxy_routes()
    assert "/" in routes, routes
    assert "[courtyard-proxy master]" in hub.log_path.read_text(errors="replace"), hub.log()

    # Log in through the proxy with the form and its _xsrf value.
    with httpx.Client(base_url=hub.url, timeout=10) as browser:
        page = browser.get("/hub/login")
        assert page.status_code == 200, page.text
        match = re.search(r'name="_xsrf"\s+value="([^"]+)"', page.text)
        assert match, page.text
        login = browser.post("/hub/login", data={
            "username": USER, "password": "any", "_xsrf": match.group(1),
        })
        assert login.status_code == 302, (login.status_code, login.text, hub.log())
        assert "jupyterhub-session-id" in browser.cookies
        home = browser.get("/hub/home")
        assert home.status_code == 200 and USER in home.text, hub.log()

    with hub.api() as api:
        # Spawn through the API and wait until the hub says the server is ready.
        r = api.post(f"/users/{USER}/server")  # mocksu is ready at once
        assert r.status_code == 201, (r.status_code, r.text, hub.log())

        def ready() -> bool:
            server = api.get(f"/users/{USER}").json()["servers"].get("", {})
            return bool(server.get("ready"))

        wait_for(ready, 30, "the single-user server")

        # The hub's view of the proxy (read back from courtyard-proxy's API) has the route.
        prefix = f"/user/{USER}/"
        proxy_view = api.get("/proxy").json()
        assert prefix in proxy_view, proxy_view
        assert proxy_view[prefix]["data"]["user"] == USER
        assert f"/user/{USER}" in hub.proxy_routes()

        # Traffic to the server goes through courtyard-proxy to mocksu.
        r = httpx.get(f"{hub.url}/user/{USER}/api", timeout=10)
        assert r.status_code == 200, (r.status_code, r.text)
        assert r.json() == {"version": "0.0-mocksu"}

        # Stopping the server removes the route.
        r = api.delete(f"/users/{USER}/server")  # mocksu exits at SIGTERM
        assert r.status_code == 204, (r.status_code, r.text)
        wait_for(lambda: prefix not in api.get("/proxy").json(), 30, "the route to go")
        assert f"/user/{USER}" not in hub.proxy_routes()
        r = httpx.get(f"{hub.url}/user/{USER}/api", timeout=10)
        # no route: the proxy hands the request to JupyterHub, which sends it on to its own
        # /hub/user/ page (the server is not running)
        assert r.status_code == 302, (r.status_code, r.text)
        assert r.headers["location"] == f"/hub/user/{USER}/api", r.headers["location"]
