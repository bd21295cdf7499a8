"""A hub killed with SIGKILL in the middle of many spawns: the next hub finds every process
and every credential the killed one made, and keeps or cleans up each (issue 14, item 1).

A real ``courtyard serve`` spawns servers held at each stage of a launch (credentials made
but no process yet; a process but its pid not yet recorded; a process recorded but not
answering; ready), is killed with SIGKILL, and is started again on the same database.
Processes are found by a marker in their environment, as an operator would find them.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.hubprocess import HubProcess, wait_for
from tests.spawners.conftest import ROOT

# each a stage of a launch the hub is killed in; the first two are held inside start()
STAGES = ("before-popen", "after-popen", "not-answering", "ready")
EACH = 3  # servers per stage: 12 spawns in flight when the hub dies

HELD_SPAWNER = '''
import asyncio, pathlib
from %s import LocalProcessSpawner

class HeldSpawner(LocalProcessSpawner):
    """Holds a launch inside start(): before the process exists, or after Popen returned
    and before the hub could record the pid; writes the launch's token where the test
    finds it once held."""

    async def start(self):
        hold = self.user_options.get("hold", "")
        if hold == "before-popen":
            self._held()
            await asyncio.Event().wait()
        url = await super().start()
        if hold == "after-popen":
            self._held()
            await asyncio.Event().wait()
        return url

    def _held(self):
        pathlib.Path(HOLDS, self.user.name).write_text(self.api_token)

c.JupyterHub.spawner_class = HeldSpawner
'''


def marked(mark: str) -> dict[str, list[tuple[int, str]]]:
    """``{user: [(pid, its JUPYTERHUB_API_TOKEN)]}`` of the live processes carrying
    ``MOCKSU_MARK=mark``: what runs on this machine, whatever the database says."""
    found: dict[str, list[tuple[int, str]]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            env = dict(v.split("=", 1) for v in Path(entry.path, "environ").read_text(
                errors="replace").split("\0") if "=" in v)
            state = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if env.get("MOCKSU_MARK") == mark and state != "Z":
            found.setdefault(env["JUPYTERHUB_USER"], []).append(
                (int(entry.name), env["JUPYTERHUB_API_TOKEN"]))
    return found


def restart(hub: HubProcess) -> None:
    """Start ``courtyard serve`` again on the same directory, database and ports (a log of
    its own: servers of JupyterHub's spawner still write to the killed hub's)."""
    hub.log = hub.dir / "hub-restarted.log"
    hub.proc = subprocess.Popen(
        [sys.executable, "-m", "courtyard", "-f", "jupyterhub_config.py", "--port",
         str(hub.port), "--hub-port", str(hub.hub_port)],
        cwd=hub.dir, stdout=hub.log.open("w"), stderr=subprocess.STDOUT)
    wait_for(lambda: hub.proc.poll() is not None or httpx.get(
        f"{hub.url}/hub/api/").status_code == 200, "the restarted hub")
    assert hub.proc.poll() is None, hub.log.read_text()


def whoami(hub: HubProcess, token: str) -> int:
    return httpx.get(f"{hub.url}/hub/api/user",
                     headers={"Authorization": f"token {token}"}).status_code


@pytest.fixture
def mark() -> Iterator[str]:
    """The marker of this test's servers; any left at the end are killed."""
    value = secrets.token_hex(8)
    yield value
    for procs in marked(value).values():
        for pid, _ in procs:
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("spawners", ["courtyard.spawners.local", "jupyterhub.spawner"])
def test_sigkill_mid_spawn_leaves_no_orphan(tmp_path, db_url, uname, mocksu_cmd, open_dir,
                                            mark, spawners):
    """Courtyard's LocalProcessSpawner, and JupyterHub's run through courtyard.compat."""
    holds = open_dir / f"holds-{mark}"
    holds.mkdir()
    never = open_dir / f"never-{mark}"  # a gate never opened: those servers never answer
    config = (f"HOLDS = {str(holds)!r}\n" + HELD_SPAWNER % spawners +
              f"c.Spawner.cmd = {mocksu_cmd!r}\n"
              "c.Spawner.environment = {'MOCKSU_MARK': %r, 'MOCKSU_GATE': "
              "lambda s: str(s.user_options.get('gate', ''))}\n" % mark +
              "c.Spawner.start_timeout = 300\nc.Spawner.http_timeout = 300\n"
              "c.Spawner.poll_interval = 1\n"
              "c.JupyterHub.slow_spawn_timeout = 0.01\n"
              f"c.LocalProcessSpawner.create_system_users = {ROOT}\n")
    users = {stage: [uname(stage[:3]) for _ in range(EACH)] for stage in STAGES}
    options = {"before-popen": {"hold": "before-popen"}, "after-popen": {"hold": "after-popen"},
               "not-answering": {"gate": str(never)}, "ready": {}}
    hub = HubProcess(tmp_path, db_url, config)
    try:
        # users made first, so that user ids and server ids differ (recovery once read the
        # user's id where it meant the server's, and missed launches where they differed)
        others = [uname("oth") for _ in range(20)]
        assert hub.api("POST", "/users", json={"usernames": others}).status_code == 201
        everyone = [u for names in users.values() for u in names]
        assert hub.api("POST", "/users", json={"usernames": everyone}).status_code == 201
        for stage, names in users.items():
            for name in names:
                r = hub.api("POST", f"/users/{name}/server", json=options[stage])
                assert r.status_code in (201, 202), r.text
        # every launch has reached its stage
        held = [*users["before-popen"], *users["after-popen"]]
        wait_for(lambda: all((holds / n).exists() for n in held), "the held launches")
        running = {*users["after-popen"], *users["not-answering"], *users["ready"]}
        wait_for(lambda: set(marked(mark)) == running, "the servers' processes")
        wait_for(lambda: all(hub.api("GET", f"/users/{n}").json()["servers"].get(
            "", {}).get("ready") for n in users["ready"]), "the ready servers")
        tokens = {n: (holds / n).read_text() for n in held}
        tokens.update({n: procs[0][1] for n, procs in marked(mark).items()})
        assert all(whoami(hub, t) == 200 for t in tokens.values())

        hub.proc.send_signal(signal.SIGKILL)
        hub.proc.wait(30)
        assert set(marked(mark)) == running  # the killed hub's processes live on
        restart(hub)
        wait_for(lambda: all(hub.api("GET", f"/users/{n}").json()["pending"] is None
                             for n in everyone), "the restarted hub's checks", timeout=120)

        # no process without a server: only the ready ones were kept, one each
        left = marked(mark)
        assert set(left) == set(users["ready"]), left
        assert all(len(procs) == 1 for procs in left.values()), left
        for name in everyone:
            expected = 200 if name in users["ready"] else 403
            assert whoami(hub, tokens[name]) == expected, name
            server = hub.api("GET", f"/users/{name}").json()["servers"].get("")
            assert (server is not None and server["ready"]) == (name in users["ready"]), name

        # starting every user (again) gives one process each
        for name in everyone:
            r = hub.api("POST", f"/users/{name}/server", json={})
            # 202: the spawn takes longer than slow_spawn_timeout; 400: already running
            assert r.status_code == (400 if name in users["ready"] else 202), (name, r.text)
        wait_for(lambda: all(hub.api("GET", f"/users/{n}").json()["servers"].get(
            "", {}).get("ready") for n in everyone), "every server", timeout=120)
        left = marked(mark)
        assert set(left) == set(everyone) and all(len(p) == 1 for p in left.values()), left
    finally:
        log = hub.stop()
    assert "left by a launch the last hub did not finish" in log
