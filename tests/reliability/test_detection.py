"""A server or the proxy killed under a real hub is noticed at once (issue 14, item 6).

A real ``courtyard serve`` with real servers (``mocksu.py``, as real system users when run
as root) and the built-in proxy, with ``c.Spawner.poll_interval`` and
``c.BuiltinProxy.check_running_interval`` at 30 s: polling alone would notice nothing
for half a minute. A server killed with SIGKILL, whether this hub started it (its child)
or adopted it after a restart (not its child), is shown stopped, its route and its token
gone, and it can be started again, with Courtyard's LocalProcessSpawner and with a
subclass of JupyterHub's; a killed proxy master (courtyard-proxy, started or adopted, and
Node's configurable-http-proxy) is started again with every route back. Without pidfds the
hub falls back to polling, and says so.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from courtyard import pidfd
from tests.conftest import free_port
from tests.hubprocess import wait_for
from tests.spawners.conftest import alive, server_row, serving, wait_until
from tests.spawners.test_hub_signals import ServeProcess

# How long the hub may take to notice: a behavioural bound (a third of poll_interval, so
# polling cannot be what passes the test), not a timing benchmark; those live in bench/.
NOTICED_WITHIN = 10

CHP_PID_FILE = "jupyterhub-proxy.pid"
SLOW_POLLING = ("c.Spawner.poll_interval = 30\n"
                "c.BuiltinProxy.check_running_interval = 30\n")

# a subclass of JupyterHub's own LocalProcessSpawner runs through courtyard.compat
JUPYTERHUB_SPAWNER = ("from jupyterhub.spawner import LocalProcessSpawner\n"
                      "class TheirSpawner(LocalProcessSpawner):\n"
                      "    pass\n"
                      "c.JupyterHub.spawner_class = TheirSpawner\n")


@pytest.fixture(params=["courtyard", "jupyterhub"])
def spawner_config(request: pytest.FixtureRequest) -> str:
    """Courtyard's LocalProcessSpawner, or a subclass of JupyterHub's."""
    if request.param == "jupyterhub":
        pytest.importorskip("jupyterhub")
        return JUPYTERHUB_SPAWNER
    return ""


@pytest.fixture
def chp_config() -> str:
    """Node's configurable-http-proxy as the hub's proxy, as JupyterHub runs it."""
    chp = os.environ.get("COURTYARD_CHP") or shutil.which("configurable-http-proxy")
    if not chp:
        if os.environ.get("CI"):
            pytest.fail("configurable-http-proxy not found (COURTYARD_CHP); CI must have it")
        pytest.skip("configurable-http-proxy not found (npm install, or set COURTYARD_CHP)")
    return ("c.JupyterHub.proxy_class = 'chp'\n"
            f"c.ConfigurableHTTPProxy.command = [{chp!r}]\n"
            f"c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:{free_port()}'\n"
            "c.ConfigurableHTTPProxy.check_running_interval = 30\n")


@pytest.fixture
def courtyard(tmp_path: Path, db_url: str, mocksu_cmd: list[str], open_dir: Path,
              request: pytest.FixtureRequest) -> Iterator[ServeProcess]:
    """``courtyard serve``, started, polling every 30 s; stopped after, with its servers
    and the proxy it leaves running."""
    reports = Path(tempfile.mkdtemp(prefix="reports-", dir=open_dir))
    reports.chmod(0o777)
    extra = SLOW_POLLING
    for name in ("spawner_config", "chp_config"):
        if name in request.fixturenames:
            extra += request.getfixturevalue(name)
    hub = ServeProcess(tmp_path, db_url, mocksu_cmd, reports, extra)
    hub.pids = []  # type: ignore[attr-defined]
    hub.start()
    yield hub
    hub.close()
    chp = proxy_pid(hub, CHP_PID_FILE)  # stopped with the hub, but the hub was killed
    if chp and alive(chp):
        os.kill(chp, signal.SIGTERM)
    for pid in hub.pids:  # type: ignore[attr-defined]
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def start(hub: ServeProcess, user: str) -> tuple[int, str]:
    """Start ``user``'s server; its pid and its API token (from its environment)."""
    pid = hub.start_server(user)
    hub.pids.append(pid)  # type: ignore[attr-defined]
    env = httpx.get(f"{hub.url}/user/{user}/env", trust_env=False, timeout=10).json()
    return pid, env["JUPYTERHUB_API_TOKEN"]


def gone(hub: ServeProcess, user: str) -> bool:
    """The API shows the server stopped and the proxy has no route to it."""
    routes = hub.api("GET", "/proxy").json()
    return hub.servers(user) == {} and f"/user/{user}/" not in routes


def reaches(hub: ServeProcess, user: str, pid: int) -> bool:
    """A request through the proxy reaches the server ``pid``."""
    r = httpx.get(f"{hub.url}/user/{user}/whoami", trust_env=False, timeout=10)
    return r.status_code == 200 and r.json()["pid"] == pid


def assert_cleaned_up(hub: ServeProcess, user: str, token: str) -> None:
    """As after any server that died: its token revoked, and it starts again."""
    r = httpx.get(f"http://127.0.0.1:{hub.hub_port}/hub/api/user", trust_env=False,
                  headers={"Authorization": f"token {token}"})
    assert r.status_code == 403, r.text
    r = hub.api("POST", f"/users/{user}/server")
    assert r.status_code == 201, r.text
    pid = hub.whoami(user)["pid"]
    hub.pids.append(pid)  # type: ignore[attr-defined]
    assert reaches(hub, user, pid)


def test_a_killed_server_is_noticed_at_once(spawner_config, courtyard, uname):
    alice = uname("alice")
    pid, token = start(courtyard, alice)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: gone(courtyard, alice), "the hub to notice its server died",
             timeout=NOTICED_WITHIN)
    assert_cleaned_up(courtyard, alice, token)


def test_a_killed_adopted_server_is_noticed_at_once(spawner_config, courtyard, uname):
    alice = uname("alice")
    pid, token = start(courtyard, alice)
    assert courtyard.signal(signal.SIGKILL) == -signal.SIGKILL
    courtyard.start()  # the server is no child of this hub: no SIGCHLD will come
    wait_for(lambda: courtyard.servers(alice)[""]["ready"], "the server to be adopted")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: gone(courtyard, alice), "the hub to notice an adopted server died",
             timeout=NOTICED_WITHIN)
    assert_cleaned_up(courtyard, alice, token)


def proxy_pid(hub: ServeProcess, pid_file: str = "courtyard-proxy.pid") -> int:
    """The proxy master's pid from its pid file; 0 while there is none."""
    try:
        return int((hub.dir / pid_file).read_text())
    except (FileNotFoundError, ValueError):
        return 0


def kill_proxy_and_wait(hub: ServeProcess, user: str, pid: int,
                        pid_file: str = "courtyard-proxy.pid") -> None:
    master = proxy_pid(hub, pid_file)
    os.kill(master, signal.SIGKILL)
    wait_for(lambda: proxy_pid(hub, pid_file) not in (0, master) and reaches(hub, user, pid),
             "a new proxy with the server's route", timeout=NOTICED_WITHIN)
    assert hub.servers(user)[""]["ready"]  # nothing else changed
    assert hub.proc is not None and hub.proc.poll() is None


def test_a_killed_proxy_master_is_restarted_with_its_routes(courtyard, uname):
    alice = uname("alice")
    pid, _token = start(courtyard, alice)
    kill_proxy_and_wait(courtyard, alice, pid)


def test_a_killed_adopted_proxy_master_is_restarted_with_its_routes(courtyard, uname):
    alice = uname("alice")
    pid, _token = start(courtyard, alice)
    assert courtyard.signal(signal.SIGKILL) == -signal.SIGKILL  # the proxy stays up
    courtyard.start()  # and this hub adopts it: not its child
    wait_for(lambda: courtyard.servers(alice)[""]["ready"], "the server to be adopted")
    kill_proxy_and_wait(courtyard, alice, pid)


@pytest.mark.chp
def test_a_killed_configurable_http_proxy_is_restarted_with_its_routes(chp_config, courtyard,
                                                                       uname):
    alice = uname("alice")
    pid, _token = start(courtyard, alice)
    kill_proxy_and_wait(courtyard, alice, pid, CHP_PID_FILE)


async def test_without_pidfds_a_killed_server_is_noticed_by_polling(spawn_hub, uname,
                                                                    monkeypatch, caplog):
    """Where ``pidfd_open`` is missing (another OS, an old kernel, seccomp), the hub says so
    once and falls back to ``poll()`` every ``poll_interval`` (0.2 s for these hubs)."""
    monkeypatch.delattr(os, "pidfd_open")
    monkeypatch.setattr(pidfd, "_warned", False)
    hub = spawn_hub()
    alice = uname("alice")
    async with serving(hub) as api:
        assert (await api.post(f"/users/{alice}")).status_code == 201
        r = await api.post(f"/users/{alice}/server")
        assert r.status_code == 201, r.text
        pid = server_row(hub, alice)["state"]["pid"]
        os.kill(pid, signal.SIGKILL)
        await wait_until(lambda: server_row(hub, alice)["url"] is None, timeout=NOTICED_WITHIN,
                         what="polling to notice the server died")
        assert (await api.get(f"/users/{alice}")).json()["servers"] == {}
    assert "Cannot watch processes with pidfds (no os.pidfd_open)" in caplog.text
