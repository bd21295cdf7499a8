"""LocalProcessSpawner as root (real system users), and the spawner pieces on their own."""

from __future__ import annotations

import asyncio
import os
import pwd
import secrets
import stat
import subprocess
from pathlib import Path

import pytest
from traitlets import TraitError
from traitlets.config import Config

from courtyard.app import Hub
from courtyard.config import normalize, resolve_class
from courtyard.spawners.base import Spawner
from courtyard.spawners.credentials import client_id, token_scopes
from courtyard.spawners.env import format_template
from courtyard.spawners.local import LocalProcessSpawner, SimpleLocalProcessSpawner, safe_filename
from courtyard.spawners.queue import SpawnQueue
from tests.conftest import ADMIN_TOKEN, client_for, tool_missing
from tests.spawners.conftest import ROOT, server_get, server_row


def need_root() -> None:
    if not ROOT:
        tool_missing("switching users needs root (CI runs the tests as root)")


def proc_ids(pid: int, field: str) -> set[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return {int(x) for x in line.split()[1:]}
    raise AssertionError(f"no {field} in /proc/{pid}/status")


async def test_server_runs_as_its_system_user(spawn_hub, uname):
    need_root()
    alice, group = uname("alice"), f"cyg{secrets.token_hex(3)}"
    subprocess.run(["groupadd", group], check=True)
    try:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", "-G", group, alice],
                       check=True)
        pw = pwd.getpwnam(alice)
        gid = int(subprocess.run(["getent", "group", group], capture_output=True, text=True,
                                 check=True).stdout.split(":")[2])
        c = Config()  # an account made by the admin, not by Courtyard: allowed by name
        c.LocalProcessSpawner.allowed_system_users = {alice}
        hub = spawn_hub(c)
        api = client_for(hub, ADMIN_TOKEN)
        await api.post(f"/users/{alice}")
        assert (await api.post(f"/users/{alice}/server")).status_code == 201
        pid = server_row(hub, alice)["state"]["pid"]
        assert proc_ids(pid, "Uid") == {pw.pw_uid}
        assert proc_ids(pid, "Gid") == {pw.pw_gid}
        assert proc_ids(pid, "Groups") == {pw.pw_gid, gid}
        who = await server_get(hub, alice, "", "whoami")
        assert who["uid"] == pw.pw_uid and who["cwd"] == pw.pw_dir
        assert os.getpgid(pid) == pid and os.getsid(pid) == pid  # its own session and group
        env = await server_get(hub, alice, "", "env")
        assert (env["HOME"], env["USER"], env["SHELL"]) == (pw.pw_dir, alice, "/bin/bash")
        log = Path(server_row(hub, alice)["state"]["log_path"])
        info = log.stat()
        assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == 0
        assert (await api.delete(f"/users/{alice}/server")).status_code == 204
        await api.aclose()
    finally:
        subprocess.run(["groupdel", group], capture_output=True)


async def test_missing_system_user_is_created_or_refused(spawn_hub, uname):
    need_root()
    c = Config()
    c.LocalProcessSpawner.create_system_users = False
    strict = spawn_hub(c)
    bob = uname("bob")
    async with client_for(strict, ADMIN_TOKEN) as api:
        await api.post(f"/users/{bob}")
        r = await api.post(f"/users/{bob}/server")
        assert r.status_code == 500 and "no system user" in r.json()["message"]
    with pytest.raises(KeyError):
        pwd.getpwnam(bob)
    creating = spawn_hub()  # the suite's set-up: create_system_users as root
    async with client_for(creating, ADMIN_TOKEN) as api:
        assert (await api.post(f"/users/{bob}/server")).status_code == 201
    assert Path(pwd.getpwnam(bob).pw_dir).is_dir()


async def test_not_root_runs_in_a_per_user_directory(hub, api, uname, tmp_path, monkeypatch):
    if ROOT:  # take the not-root path anyway: the spawner decides by its effective uid
        monkeypatch.setattr(os, "geteuid", lambda: 65534)
    alice = uname("alice")
    await api.post(f"/users/{alice}")
    assert (await api.post(f"/users/{alice}/server")).status_code == 201
    who = await server_get(hub, alice, "", "whoami")
    assert who["uid"] == os.getuid()
    assert who["cwd"] == str(tmp_path / "users" / alice)
    assert LocalProcessSpawner.startup_warnings()


# -- the pieces, without processes ---------------------------------------------------------------
def test_aliases_resolve_to_local_process_spawner():
    for name in ("local", "localprocess", "jupyterhub.spawner.LocalProcessSpawner",
                 "courtyard.spawners.local.LocalProcessSpawner"):
        assert resolve_class("spawner", name, Spawner) is LocalProcessSpawner
    for name in ("simple", "jupyterhub.spawner.SimpleLocalProcessSpawner"):
        assert resolve_class("spawner", name, Spawner) is SimpleLocalProcessSpawner


def test_hub_resolves_spawner_and_knows_its_options(tmp_path):
    c = Config()
    c.JupyterHub.spawner_class = "jupyterhub.spawner.LocalProcessSpawner"
    c.JupyterHub.db_url = f"sqlite:///{tmp_path}/t.sqlite"
    c.Spawner.cmd = "jupyterhub-singleuser --debug"
    c.Spawner.bogus = 1
    c.LocalProcessSpawner.term_timeout = 2
    hub = Hub(normalize(c))
    hub.init_components()
    assert hub.spawner_class is LocalProcessSpawner
    problems = hub.warn_unknown_options()
    assert problems == ["c.Spawner.bogus is not supported by Courtyard; it is ignored"]


def test_bad_spawner_option_fails_at_start_up(tmp_path):
    from courtyard.errors import ConfigError

    c = Config()
    c.Spawner.mem_limit = "lots"
    with pytest.raises(ConfigError, match="mem_limit"):
        Hub(c).init_components()


async def test_event_stream_keepalive_and_events():
    from courtyard.spawners.progress import ProgressLog, event_stream

    log = ProgressLog()
    chunks = []
    async for chunk in event_stream(log.follow(), keepalive=0.01):
        chunks.append(chunk)
        if chunk.startswith(b":") and len(chunks) == 1:
            log.emit({"progress": 0, "message": "Server requested"})
        elif chunk.startswith(b"data"):
            log.emit({"progress": 100, "failed": True, "message": "x"})
    assert chunks[0] == b": keepalive\n\n"
    data = [c for c in chunks if c.startswith(b"data: ")]
    assert data == [b'data: {"progress":0,"message":"Server requested"}\n\n',
                    b'data: {"progress":100,"failed":true,"message":"x"}\n\n']


def test_spawner_options_from_config():
    c = Config()
    c.Spawner.cmd = "python3 -m my.server --flag 'a b'"
    c.Spawner.mem_limit = "512M"
    c.Spawner.args = ["--notebook-dir=/home/{username}", "--who=%U"]
    c.LocalProcessSpawner.kill_timeout = 1
    spawner = LocalProcessSpawner(config=c, name="gpu")
    from courtyard.spawners.base import UserInfo

    spawner.user = UserInfo("alice")
    assert spawner.cmd == ["python3", "-m", "my.server", "--flag", "a b"]
    assert spawner.mem_limit == 512 * 1024**2
    assert spawner.get_args() == ["--notebook-dir=/home/alice", "--who=alice"]
    assert spawner.kill_timeout == 1 and spawner.log_name == "alice/gpu"
    assert spawner.run_options_from_form({"a": ["1"]}) == {"a": ["1"]}
    spawner.options_from_form = lambda form, spawner: {"who": spawner.user.name, **form}
    assert spawner.run_options_from_form({"a": ["1"]}) == {"who": "alice", "a": ["1"]}
    spawner.options_form = lambda s: f"<input name='{s.user.name}'>"
    assert asyncio.run(spawner.get_options_form()) == "<input name='alice'>"
    with pytest.raises(TraitError):
        spawner.mem_limit = "lots"
    assert Spawner().cmd == ["courtyard-singleuser"] and Spawner().default_url == "/lab"


def test_templates_and_names():
    assert format_template("/home/{username}/%U/{servername}", "al", "gpu") == \
        "/home/al/al/gpu"
    assert format_template("{unknown} {0} %U", "al") == "{unknown} {0} al"
    assert safe_filename("../a.b/c") == "%2E%2E%2Fa%2Eb%2Fc"
    assert client_id("a b", "") == "jupyterhub-user-a%20b"
    assert client_id("al", "gpu") == "jupyterhub-user-al-gpu"
    assert token_scopes([], "al", "gpu") == [
        "access:servers!server=al/gpu", "users:activity!user=al"]
    assert token_scopes(["read:users!user", "custom:x"], "al", "") == [
        "custom:x", "read:users!user=al", "users:activity!user=al"]


def test_documented():
    from courtyard.docs import configuration_markdown

    text = configuration_markdown()
    for option in ("c.Spawner.cmd", "c.Spawner.start_timeout", "c.Spawner.pre_spawn_hook",
                   "c.LocalProcessSpawner.term_timeout",
                   "c.LocalProcessSpawner.create_system_users", "c.Courtyard.spawn_queue"):
        assert option in text
    assert (Path(__file__).parents[2] / "docs" / "spawners.md").is_file()


async def test_spawn_queue_fifo_and_cancel():
    queue = SpawnQueue(lambda: 1)
    heard: dict[str, list[tuple[int, int]]] = {"b": [], "c": [], "d": []}
    order: list[str] = []

    async def spawn(name: str) -> None:
        await queue.acquire(lambda pos, n: heard[name].append((pos, n)))
        order.append(name)

    await queue.acquire(lambda pos, n: None)  # "a" holds the only slot
    tasks = {n: asyncio.create_task(spawn(n)) for n in ("b", "c", "d")}
    await asyncio.sleep(0)
    assert heard == {"b": [(1, 1)], "c": [(2, 2)], "d": [(3, 3)]}
    tasks["c"].cancel()
    await asyncio.sleep(0)
    assert heard["d"][-1] == (2, 2) and queue.waiting == 2
    queue.release()  # a is done
    await tasks["b"]
    assert order == ["b"] and heard["d"][-1] == (1, 1)
    queue.release()
    await tasks["d"]
    assert order == ["b", "d"] and queue.active == 1
    unlimited = SpawnQueue(lambda: 0)
    for _ in range(5):
        await unlimited.acquire(lambda pos, n: None)
    assert unlimited.active == 5 and unlimited.has_room()
