"""Servers that crash or die, hub restarts that find their servers again, clean-up at exit."""

from __future__ import annotations

import asyncio
import os
import pwd
import signal
import subprocess

from traitlets.config import Config

from tests.conftest import ADMIN_TOKEN, client_for
from tests.spawners.conftest import (
    ROOT,
    alive,
    server_get,
    server_row,
    serving,
    sse_events,
    wait_until,
)


async def test_crash_during_start_fails_with_reason_and_log(hub, uname):
    alice = uname("alice")
    async with serving(hub) as api:
        await api.post(f"/users/{alice}")
        r = await api.post(f"/users/{alice}/server", json={"mode": "crash"})
        assert r.status_code == 500  # it fails well within slow_spawn_timeout
        events = await sse_events(api, f"/users/{alice}/server/progress")
        last = events[-1]
        assert last["failed"] is True and last["progress"] == 100
        assert last["message"].startswith("Spawn failed:")
        assert "exited with status 3" in last["message"]
        assert "crashing on purpose" in last["message"]
        r = await api.get(f"/users/{alice}/server/logs", params={"tail": 1})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        assert r.text.strip() == "mocksu: crashing on purpose"
        assert "pid" in (await api.get(f"/users/{alice}/server/logs")).text
        assert (await api.get(f"/users/{alice}/server/logs", params={"tail": "x"})).status_code \
            == 400
        user = (await api.get(f"/users/{alice}")).json()
        assert user["server"] is None and user["pending"] is None and user["servers"] == {}
        assert (await api.get(f"/users/{alice}/tokens")).json()["api_tokens"] == []
        # a new start clears the failure
        r = await api.post(f"/users/{alice}/server", json={"mode": ""})
        assert r.status_code == 201  # ready at once
        await wait_until(lambda: server_row(hub, alice)["url"] is not None, what="ready")


async def test_crash_answers_500_when_quick(hub, api, uname):
    alice = uname("alice")
    await api.post(f"/users/{alice}")
    r = await api.post(f"/users/{alice}/server", json={"mode": "crash"})
    assert r.status_code == 500
    assert "exited with status 3" in r.json()["message"]


async def test_dead_server_is_noticed_by_poll(hub, api, uname):
    alice = uname("alice")
    await api.post(f"/users/{alice}")
    assert (await api.post(f"/users/{alice}/server")).status_code == 201
    pid = server_row(hub, alice)["state"]["pid"]
    os.kill(pid, signal.SIGKILL)
    await wait_until(lambda: server_row(hub, alice)["url"] is None, what="the poll to notice")
    user = (await api.get(f"/users/{alice}")).json()
    assert user["server"] is None and user["pending"] is None
    assert server_row(hub, alice)["state"] == {}
    assert (await api.get(f"/users/{alice}/tokens")).json()["api_tokens"] == []


async def test_start_over_a_dead_server(spawn_hub, uname):
    c = Config()
    c.Spawner.poll_interval = 3600  # only the start request notices
    hub = spawn_hub(c)
    alice = uname("alice")
    async with client_for(hub, ADMIN_TOKEN) as api:
        await api.post(f"/users/{alice}")
        assert (await api.post(f"/users/{alice}/server")).status_code == 201
        pid = server_row(hub, alice)["state"]["pid"]
        os.kill(pid, signal.SIGKILL)
        await wait_until(lambda: not alive(pid), what="the process to die")
        r = await api.post(f"/users/{alice}/server")
        assert r.status_code == 201, r.text
        assert server_row(hub, alice)["state"]["pid"] != pid


async def test_restart_recovers_live_and_cleans_dead(spawn_hub, uname, mocksu_cmd, open_dir):
    alice, bob, carol = uname("alice"), uname("bob"), uname("carol")
    first = spawn_hub(cleanup_servers=False)
    async with serving(first) as api:
        for name in (alice, bob):
            await api.post(f"/users/{name}")
            assert (await api.post(f"/users/{name}/server")).status_code == 201
        await api.post(f"/users/{carol}")
        await api.put(f"/users/{carol}/servers/lab")
        token = (await server_get(first, alice, "", "env"))["JUPYTERHUB_API_TOKEN"]
    pids = {n: server_row(first, n)["state"]["pid"] for n in (alice, bob)}
    assert all(alive(p) for p in pids.values())  # cleanup_servers=False: left running
    os.kill(pids[bob], signal.SIGKILL)
    # carol's "lab" was mid-spawn when the hub died: a process and state, no URL
    orphan = subprocess.Popen([*mocksu_cmd], start_new_session=True, env={
        **os.environ, "JUPYTERHUB_SERVICE_URL": "http://127.0.0.1:1/user/x/",
        "MOCKSU_GATE": str(open_dir / "never")}, stdout=subprocess.DEVNULL)
    with first.session() as db:
        from courtyard.db import queries

        lab = next(s for s in queries.get_user(db, carol).servers if s.name == "lab")
        lab.state = {"pid": orphan.pid, "pgid": orphan.pid}
        db.commit()
    first.lifecycle._slots.clear()  # the first hub is gone

    second = spawn_hub()
    async with serving(second) as api:
        # the hub serves at once; the checks run behind it, servers pending "check" meanwhile
        user = (await api.get(f"/users/{alice}")).json()
        assert user["servers"][""]["pending"] in ("check", None)
        await asyncio.wait_for(second.lifecycle.recovered.wait(), 30)
        users = {u["name"]: u for u in (await api.get("/users")).json()}
        assert users[alice]["server"] == f"/user/{alice}/", str(users[alice])
        assert users[alice]["servers"][""]["ready"] is True
        assert users[bob]["server"] is None
        assert server_row(second, bob)["url"] is None
        assert server_row(second, carol, "lab")["state"] == {}
        await wait_until(lambda: orphan.poll() is not None, what="the orphan to be killed")
        # the recovered server keeps its token and is watched again
        async with client_for(second, token) as server_api:
            assert (await server_api.get("/user")).json()["name"] == alice
        os.kill(pids[alice], signal.SIGKILL)
        await wait_until(lambda: server_row(second, alice)["url"] is None, what="noticed")
        async with client_for(second, token) as server_api:
            assert (await server_api.get("/user")).status_code == 403


async def test_recovered_server_can_be_stopped(spawn_hub, uname):
    alice = uname("alice")
    first = spawn_hub(cleanup_servers=False)
    async with serving(first) as api:
        await api.post(f"/users/{alice}")
        await api.post(f"/users/{alice}/server")
    pid = server_row(first, alice)["state"]["pid"]
    first.lifecycle._slots.clear()
    second = spawn_hub()
    async with serving(second) as api:
        await asyncio.wait_for(second.lifecycle.recovered.wait(), 30)
        assert (await api.delete(f"/users/{alice}/server")).status_code == 204
        assert not alive(pid)


async def test_servers_outlive_the_hub_by_default(hub, uname):
    alice = uname("alice")
    async with serving(hub) as api:
        await api.post(f"/users/{alice}")
        await api.post(f"/users/{alice}/server")
    pid = server_row(hub, alice)["state"]["pid"]
    assert alive(pid) and server_row(hub, alice)["url"] is not None


async def test_cleanup_servers_at_shutdown(spawn_hub, uname):
    hub = spawn_hub(cleanup_servers=True)
    alice = uname("alice")
    async with serving(hub) as api:
        await api.post(f"/users/{alice}")
        await api.post(f"/users/{alice}/servers/one")
        await api.post(f"/users/{alice}/servers/two")
        pids = [server_row(hub, alice, s)["state"]["pid"] for s in ("one", "two")]
    assert not any(alive(p) for p in pids)
    assert server_row(hub, alice, "one")["url"] is None


async def test_shutdown_api_can_keep_servers(spawn_hub, uname):
    hub = spawn_hub(cleanup_servers=True)
    alice = uname("alice")
    async with serving(hub) as api:
        await api.post(f"/users/{alice}")
        await api.post(f"/users/{alice}/server")
        assert (await api.post("/shutdown", json={"servers": False})).status_code == 202
        await wait_until(lambda: hub.shutdown_event.is_set(), what="shutdown")
    pid = server_row(hub, alice)["state"]["pid"]
    assert alive(pid) and server_row(hub, alice)["url"] is not None


async def test_consecutive_failure_limit(spawn_hub, uname):
    c = Config()
    c.Spawner.consecutive_failure_limit = 2
    hub = spawn_hub(c)
    alice = uname("alice")
    async with client_for(hub, ADMIN_TOKEN) as api:
        await api.post(f"/users/{alice}")
        assert (await api.post(f"/users/{alice}/servers/a", json={"mode": "crash"})).status_code \
            == 500
        assert (await api.post(f"/users/{alice}/servers/b")).status_code == 201  # resets
        assert (await api.post(f"/users/{alice}/servers/c", json={"mode": "crash"})).status_code \
            == 500
        assert not hub.shutdown_event.is_set()
        assert (await api.post(f"/users/{alice}/servers/d", json={"mode": "crash"})).status_code \
            == 500
        assert hub.shutdown_event.is_set()


async def test_hub_serves_while_servers_are_checked(spawn_hub, uname, mocksu_cmd, open_dir):
    """A recorded server that is alive but slow to answer does not hold the hub's API back."""
    from tests.conftest import free_port

    alice = uname("alice")
    first = spawn_hub()
    async with client_for(first, ADMIN_TOKEN) as api:
        await api.post(f"/users/{alice}")
        assert (await api.put(f"/users/{alice}/servers/lab")).status_code == 201
        if ROOT:  # as root, the server runs as alice's own account (made by a first start)
            assert (await api.post(f"/users/{alice}/server")).status_code == 201
            assert (await api.delete(f"/users/{alice}/server")).status_code == 204
    pw = pwd.getpwnam(alice) if ROOT else None
    account = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []} if pw else {}
    gate = open_dir / f"gate-{alice}"
    port = free_port()
    slow = subprocess.Popen([*mocksu_cmd], start_new_session=True, env={
        **os.environ, "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}/user/{alice}/lab/",
        "MOCKSU_GATE": str(gate)}, stdout=subprocess.DEVNULL, **account)
    try:
        with first.session() as db:
            from courtyard.db import queries

            lab = next(s for s in queries.get_user(db, alice).servers if s.name == "lab")
            lab.url = f"http://127.0.0.1:{port}"
            lab.state = {"pid": slow.pid, "pgid": slow.pid}
            db.commit()
        second = spawn_hub()
        async with serving(second) as api:
            model = (await api.get(f"/users/{alice}")).json()["servers"]["lab"]
            assert model["pending"] == "check" and model["ready"] is False
            assert not second.lifecycle.recovered.is_set()
            ready = (await api.get("/users", params={"state": "ready"})).json()
            assert alice not in [u["name"] for u in ready]
            gate.touch()  # now it answers: the check succeeds
            await asyncio.wait_for(second.lifecycle.recovered.wait(), 30)
            model = (await api.get(f"/users/{alice}")).json()["servers"]["lab"]
            assert model["pending"] is None and model["ready"] is True
            assert (await api.delete(f"/users/{alice}/servers/lab")).status_code == 204
        assert slow.wait(10) is not None
    finally:
        if slow.poll() is None:
            slow.kill()


async def test_stop_does_not_wait_for_the_route_removal(hub, uname):
    """The spawner's ``stop()`` begins while the proxy is still removing the route: with many
    stops at once each route change waits on every proxy worker, and a cluster engine's
    stop need not queue behind that. Both are done before the stop is."""
    alice = uname("alice")
    async with serving(hub) as api:
        await api.post(f"/users/{alice}")
        assert (await api.post(f"/users/{alice}/server")).status_code == 201
        spawner = hub.lifecycle._slots[(alice, "")].spawner
        stopping, route_release = asyncio.Event(), asyncio.Event()
        real_stop, real_remove = spawner.stop, hub.remove_server_route

        async def watched_stop(now: bool = False) -> None:
            stopping.set()
            await real_stop(now)

        async def held_remove(user: str, server: str) -> None:
            await route_release.wait()
            await real_remove(user, server)

        spawner.stop = watched_stop
        hub.remove_server_route = held_remove
        hub.options.slow_spawn_timeout = 0.1  # answer 202 while the route removal is held
        assert (await api.delete(f"/users/{alice}/server")).status_code == 202
        try:
            await asyncio.wait_for(stopping.wait(), 10)  # begun, the route still being removed
            assert f"/user/{alice}/" in (await api.get("/proxy")).json()
            assert (await api.get(f"/users/{alice}")).json()["pending"] == "stop"
        finally:
            route_release.set()
        await wait_until(lambda: server_row(hub, alice)["url"] is None, what="the stop")
        assert f"/user/{alice}/" not in (await api.get("/proxy")).json()
