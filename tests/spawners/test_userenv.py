"""The users' environment (``courtyard.spawners.userenv``) and system-user defaults.

The decision logic and the build's bookkeeping are unit tests with a fake build step. As
root, one end-to-end test runs a hub with the defaults for spawner and single-user server:
a brand-new user gets a system account and a real JupyterLab server from the users'
environment, built by the hub itself on the first spawn into
``/var/cache/courtyard-tests/user-env-<key>`` (reused across runs; a changed Courtyard
source only reinstalls Courtyard, a few seconds).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest
from traitlets.config import Config

from courtyard.app import Hub
from courtyard.errors import SpawnError
from courtyard.spawners import local, userenv
from courtyard.spawners.base import HubInfo, UserInfo, uses_system_accounts
from courtyard.spawners.local import LocalProcessSpawner
from tests.conftest import free_port
from tests.spawners.conftest import ROOT, serving, sse_events, wait_until

CACHE = Path("/var/cache/courtyard-tests")
TOKEN = "userenv-" + secrets.token_hex(8)


def spawner(tmp_path: Path, **kwargs: Any) -> LocalProcessSpawner:
    return LocalProcessSpawner(user=UserInfo("someone"), hub=HubInfo(
        api_url="http://127.0.0.1:1/hub/api", data_dir=str(tmp_path)), **kwargs)


# -- when the env is used ----------------------------------------------------------------------
@pytest.mark.parametrize(("root", "shared", "jupyter", "needed"), [
    (True, False, True, True),     # root, pyenv under /root: others cannot run it
    (True, False, False, True),
    (True, True, True, False),     # root, a world-readable Python with Jupyter
    (True, True, False, True),     # ... without Jupyter
    (False, False, True, False),   # not root: servers run as the hub's user
    (False, True, False, True),    # not root, no courtyard[singleuser]
    (False, False, False, True),
])
def test_reason(root: bool, shared: bool, jupyter: bool, needed: bool) -> None:
    assert (userenv.user_env_reason(root, shared, jupyter) is not None) is needed


def test_world_accessible(open_dir: Path) -> None:
    closed = open_dir / f"closed-{secrets.token_hex(4)}"
    closed.mkdir(mode=0o700)
    closed.chmod(0o700)
    inner = closed / "python"
    inner.write_text("")
    inner.chmod(0o755)
    assert not userenv.world_accessible(inner, executable=True)
    closed.chmod(0o755)
    assert userenv.world_accessible(inner, executable=True)
    inner.chmod(0o644)
    assert userenv.world_accessible(inner) and not userenv.world_accessible(inner, True)


def test_user_environment_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Non-root: the env only when the hub's Python lacks Jupyter, and only for the default cmd."""
    monkeypatch.setattr(local.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(local, "_SHARED", False)
    monkeypatch.setattr(local, "_JUPYTER", True)
    assert spawner(tmp_path).user_environment() is None
    monkeypatch.setattr(local, "_JUPYTER", False)
    env = spawner(tmp_path).user_environment()
    assert env is not None and env.path == tmp_path / "user-env"
    assert env.cmd == [str(tmp_path / "user-env" / "bin" / "courtyard-singleuser")]
    assert spawner(tmp_path, user_env_dir=str(tmp_path / "x")).user_environment().path == \
        tmp_path / "x"  # type: ignore[union-attr]
    assert spawner(tmp_path, user_env="never").user_environment() is None
    assert spawner(tmp_path, cmd=["jupyterhub-singleuser"]).user_environment() is None
    monkeypatch.setattr(local.os, "geteuid", lambda: 0)
    assert spawner(tmp_path).user_environment().path == Path("/opt/courtyard/user-env")  # type: ignore[union-attr]


def test_create_system_users_default(tmp_path: Path) -> None:
    from courtyard.auth.dummy import DummyAuthenticator
    from courtyard.auth.multi import MultiAuthenticator
    from courtyard.auth.native import NativeAuthenticator
    from courtyard.auth.pam import PAMAuthenticator

    assert not uses_system_accounts(NativeAuthenticator())
    assert not uses_system_accounts(DummyAuthenticator())
    assert uses_system_accounts(PAMAuthenticator())
    assert uses_system_accounts(MultiAuthenticator([DummyAuthenticator(), PAMAuthenticator()]))
    assert spawner(tmp_path).creates_system_users
    pam_hub = HubInfo(api_url="", data_dir=str(tmp_path), system_accounts=True)
    assert not LocalProcessSpawner(user=UserInfo("x"), hub=pam_hub).creates_system_users
    assert LocalProcessSpawner(user=UserInfo("x"), hub=pam_hub,
                               create_system_users=True).creates_system_users
    assert not spawner(tmp_path, create_system_users=False).creates_system_users


async def test_bad_system_name(tmp_path: Path) -> None:
    with pytest.raises(SpawnError, match=r"username_pattern.*create_system_users"):
        await spawner(tmp_path)._system_user("Not A-Name")
    with pytest.raises(SpawnError, match="no system user"):
        await spawner(tmp_path, create_system_users=False)._system_user("cy-none-such")


# -- the build's bookkeeping (fake steps) ------------------------------------------------------
class FakeEnv(userenv.UserEnv):
    runs: list[str]

    async def _run(self, cmd: list[str], what: str, hint: str = "", on_line: Any = None
                   ) -> None:
        self.runs.append(what)
        await asyncio.sleep(0.05)
        if what == "pip install":
            if os.environ.get("FAKE_PIP_FAIL"):
                raise userenv.UserEnvError("building the users' environment failed: nope",
                                           "ERROR: nope")
            for line in ["Collecting x"] * 10 + ["Installing collected packages: x"]:
                on_line(line)
            (self.path / "bin" / "courtyard-singleuser").write_text("#!/bin/sh\n")
        else:
            (self.path / "bin").mkdir(parents=True)
            (self.path / "bin" / "python").write_text("")


def fake_env(path: Path, key: str = "k1") -> FakeEnv:
    env = FakeEnv(path, "/usr/bin/python3", userenv.Source(None, "0.1.0", key))
    env.runs = []
    return env


async def test_build_once_then_reuse(tmp_path: Path) -> None:
    path = tmp_path / "env"
    env = fake_env(path)
    assert env.state() == "build"
    first = userenv.ensure_user_env(env)
    second = userenv.ensure_user_env(fake_env(path))
    assert first is not None and second == first  # concurrent spawns share one build
    await first[0]
    messages = [e["message"] for e in first[1].events]
    assert messages[0] == userenv.PREPARING
    assert any("Fetching packages (10 so far)" in m for m in messages)
    assert first[1].done and first[1].events[-1]["ready"]
    assert env.runs == ["creating the venv", "pip install"]
    marker = json.loads((path / userenv.MARKER).read_text())
    assert marker["source"] == "k1" and marker["requirements"] == env.requirements
    assert userenv.ensure_user_env(fake_env(path)) is None  # ready: no build
    assert fake_env(path).state() == "ok"  # what a restarted hub sees
    updated = fake_env(path, key="k2")  # a new Courtyard source: reinstall it only
    assert updated.state() == "update"
    running = userenv.ensure_user_env(updated)
    assert running is not None
    await running[0]
    assert updated.runs == ["pip install"]
    assert running[1].events[0]["message"] == userenv.UPDATING


async def test_spawn_progress_and_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    """The spawner's progress shows the build; a failed build fails the spawn with its output."""
    env = fake_env(tmp_path / "env")
    sp = spawner(tmp_path)
    monkeypatch.setattr(sp, "user_environment", lambda: env)
    events: list[dict[str, Any]] = []

    async def collect() -> None:
        async for event in sp.progress():
            events.append(event)

    collector = asyncio.create_task(collect())
    await sp.prepare()
    sp._started.set()
    await asyncio.wait_for(collector, 5)
    assert events[0]["message"] == userenv.PREPARING
    assert events[-2]["message"].startswith("Starting the server process")
    assert [e["progress"] for e in events] == sorted(e["progress"] for e in events)

    monkeypatch.setenv("FAKE_PIP_FAIL", "1")
    bad = fake_env(tmp_path / "bad")
    sp = spawner(tmp_path)
    monkeypatch.setattr(sp, "user_environment", lambda: bad)
    with pytest.raises(SpawnError, match="nope"):
        await sp.prepare()
    assert "ERROR: nope" in (await sp.read_log() or "")


# -- the real thing: defaults, as root ---------------------------------------------------------
def cache_dir() -> Path:
    python = userenv.system_python()
    return CACHE / f"user-env-{userenv.requirements_key(python, userenv.courtyard_source())}"


@pytest.mark.timeout(900)
@pytest.mark.skipif(not ROOT, reason="spawning as a new system user needs root")
async def test_defaults_as_root(tmp_path: Path, db_url: str, uname: Any) -> None:
    if not userenv.world_accessible(userenv.SYSTEM_PYTHON, executable=True):
        pytest.skip(f"{userenv.SYSTEM_PYTHON} is needed")
    c = Config()
    c.Courtyard.db_url = db_url
    c.Courtyard.data_files_path = str(tmp_path)
    c.Courtyard.port = free_port()
    c.Courtyard.hub_port = 0
    c.BuiltinProxy.api_url = f"http://127.0.0.1:{free_port()}"
    c.Courtyard.cleanup_proxy = True
    c.Courtyard.api_tokens = {TOKEN: "admin"}  # to drive the API; the authenticator is native
    c.Courtyard.slow_spawn_timeout = 0  # the start answers 202 at once, built env or not
    path = cache_dir()  # instead of /opt/courtyard/user-env: shared by test runs
    c.LocalProcessSpawner.user_env_dir = str(path)
    state_before = userenv.UserEnv(path, userenv.system_python()).state()
    name = uname("new")
    hub = Hub(c)
    hub.initialize()
    try:
        async with serving(hub, token=TOKEN) as api:
            assert (await api.post(f"/users/{name}")).status_code == 201
            r = await api.post(f"/users/{name}/server")
            assert r.status_code == 202, r.text
            api.timeout = httpx.Timeout(900)
            events = await sse_events(api, f"/users/{name}/server/progress")
            assert events[-1].get("ready"), events
            messages = [e["message"] for e in events]
            if r.status_code == 201:
                # ready within slow_spawn_timeout: the stream only repeats the end
                messages = []
                assert userenv.UserEnv(path, userenv.system_python()).state() == "ok"
            elif state_before == "build":
                assert userenv.PREPARING in messages
            elif state_before == "update":
                assert userenv.UPDATING in messages
            elif r.status_code == 202:
                assert not any("Python environment" in m for m in messages)
            pid = hub.lifecycle._slots[(name, "")].spawner.pid  # type: ignore[attr-defined]
            import pwd

            uid = pwd.getpwnam(name).pw_uid  # the account was created
            status = Path(f"/proc/{pid}/status").read_text()
            uids = next(line for line in status.splitlines() if line.startswith("Uid:"))
            assert uids.split()[1:] == [str(uid)] * 4
            assert Path(pwd.getpwnam(name).pw_dir).is_dir()
            async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
                r = await client.get(f"{hub.public_url.rstrip('/')}/user/{name}/api",
                                     headers={"Authorization": f"token {TOKEN}"})
            assert r.status_code == 200, r.text
            assert "version" in r.json()
            await api.delete(f"/users/{name}/server")
            await wait_until(lambda: hub.lifecycle.pending(name, "") is None and
                             (name, "") not in hub.lifecycle._slots, what="the stop")
    finally:
        hub.session.kw["bind"].dispose()
