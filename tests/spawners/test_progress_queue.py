"""Slow spawns (202), the progress stream over a real socket, the spawn queue, cancelling."""

from __future__ import annotations

import asyncio

from tests.conftest import ADMIN_TOKEN, client_for
from tests.spawners.conftest import alive, server_row, serving, sse_events, wait_until


def started(hub, user, server=""):
    row = server_row(hub, user, server)
    return bool(row and row["state"].get("pid"))


async def test_slow_spawn_202_then_ready_through_progress(spawn_hub, uname, gate):
    hub = spawn_hub(slow_spawn_timeout=0.05)
    alice, door = uname("alice"), gate()
    async with serving(hub) as api:
        await api.post(f"/users/{alice}")
        r = await api.post(f"/users/{alice}/server", json={"gate": str(door)})
        assert r.status_code == 202 and r.json()["pending"] == "spawn"
        assert r.json()["ready"] is False
        user = (await api.get(f"/users/{alice}")).json()
        assert user["pending"] == "spawn" and user["server"] is None
        assert (await api.post(f"/users/{alice}/server")).status_code == 202  # still pending
        reader = asyncio.create_task(sse_events(api, f"/users/{alice}/server/progress"))
        await wait_until(lambda: started(hub, alice), what="the process to start")
        door.touch()
        events = await reader
        assert events[0] == {"progress": 0, "message": "Server requested"}
        assert any("started" in e["message"] for e in events)
        assert [e["progress"] for e in events] == sorted(e["progress"] for e in events)
        last = events[-1]
        assert last["ready"] is True and last["progress"] == 100
        assert last["url"] == f"/user/{alice}/" and "html_message" in last
        assert not any(e.get("ready") for e in events[:-1])
        # once ready, the stream is a single ready event
        assert [e.get("ready") for e in await sse_events(
            api, f"/users/{alice}/server/progress")] == [True]
        user = (await api.get(f"/users/{alice}")).json()
        assert user["server"] == f"/user/{alice}/" and user["pending"] is None


async def test_progress_errors(hub, api, uname):
    alice = uname("alice")
    await api.post(f"/users/{alice}")
    assert (await api.get(f"/users/{alice}/servers/nope/progress")).status_code == 404
    assert (await api.get("/users/nobody-here/server/progress")).status_code == 404
    await api.put(f"/users/{alice}/servers/lab")
    r = await api.get(f"/users/{alice}/servers/lab/progress")
    assert r.status_code == 400 and "not starting" in r.json()["message"]


async def test_stop_202_while_stopping(spawn_hub, uname):
    from traitlets.config import Config

    c = Config()
    c.LocalProcessSpawner.term_timeout = 1  # the server ignores SIGTERM; SIGKILL follows
    hub = spawn_hub(c, slow_spawn_timeout=0.05)
    alice = uname("alice")
    async with client_for(hub, ADMIN_TOKEN) as api:
        await api.post(f"/users/{alice}")
        r = await api.post(f"/users/{alice}/server", json={"mode": "ignore-term"})
        await wait_until(lambda: server_row(hub, alice)["url"] is not None, what="ready")
        pid = server_row(hub, alice)["state"]["pid"]
        r = await api.delete(f"/users/{alice}/server")
        assert r.status_code == 202
        assert (await api.get(f"/users/{alice}")).json()["pending"] == "stop"
        r = await api.post(f"/users/{alice}/server")
        assert r.status_code == 400 and "pending stop" in r.json()["message"]
        assert (await api.delete(f"/users/{alice}/server")).status_code == 202
        await wait_until(lambda: hub.lifecycle.pending(alice, "") is None, what="stopped")
        assert not alive(pid) and server_row(hub, alice)["url"] is None


async def test_queue_is_fifo_and_reports_positions(spawn_hub, uname, gate):
    hub = spawn_hub(concurrent_spawn_limit=1, slow_spawn_timeout=0.05)
    a, b, c = uname("a"), uname("b"), uname("c")
    doors = {a: gate(), b: gate(), c: gate()}
    async with serving(hub) as api:
        for name in (a, b, c):
            await api.post(f"/users/{name}")
            r = await api.post(f"/users/{name}/server", json={"gate": str(doors[name])})
            assert r.status_code == 202
        readers = {n: asyncio.create_task(sse_events(api, f"/users/{n}/server/progress"))
                   for n in (b, c)}
        await wait_until(lambda: started(hub, a), what="a to start")
        assert (await api.get(f"/users/{c}")).json()["pending"] == "spawn"
        doors[a].touch()
        await wait_until(lambda: started(hub, b), what="b to start after a")
        doors[c].touch()  # c may not jump the queue although it could answer at once
        await wait_until(lambda: server_row(hub, a)["url"] is not None, what="a ready")
        assert not started(hub, c) and server_row(hub, b)["url"] is None
        doors[b].touch()
        events = {n: await task for n, task in readers.items()}
        assert server_row(hub, b)["started"] <= server_row(hub, c)["started"]
        positions = {n: [(e["queue_position"], e["queue_length"]) for e in events[n]
                         if "queue_position" in e] for n in (b, c)}
        assert positions[b] == [(1, 1)]
        assert positions[c] == [(2, 2), (1, 1)]
        assert all(events[n][-1]["ready"] for n in (b, c))


async def test_queue_off_answers_429(spawn_hub, uname, gate):
    hub = spawn_hub(concurrent_spawn_limit=1, spawn_queue=False, slow_spawn_timeout=0.05)
    a, b = uname("a"), uname("b")
    door = gate()
    async with client_for(hub, ADMIN_TOKEN) as api:
        await api.post(f"/users/{a}")
        await api.post(f"/users/{b}")
        assert (await api.post(f"/users/{a}/server", json={"gate": str(door)})).status_code == 202
        r = await api.post(f"/users/{b}/server")
        assert r.status_code == 429
        assert 30 <= int(r.headers["retry-after"]) <= 60
        assert server_row(hub, b) is None  # nothing was created for the refused spawn
        door.touch()
        await wait_until(lambda: server_row(hub, a)["url"] is not None, what="a ready")
        door_b = gate()  # held: accepted and pending, whatever the machine's speed
        assert (await api.post(f"/users/{b}/server", json={"gate": str(door_b)})).status_code \
            == 202
        door_b.touch()
        await wait_until(lambda: server_row(hub, b)["url"] is not None, what="b ready")


async def test_active_server_limit(spawn_hub, uname):
    hub = spawn_hub(active_server_limit=1)
    a, b = uname("a"), uname("b")
    async with client_for(hub, ADMIN_TOKEN) as api:
        await api.post(f"/users/{a}")
        await api.post(f"/users/{b}")
        assert (await api.post(f"/users/{a}/server")).status_code == 201
        r = await api.post(f"/users/{b}/server")
        assert r.status_code == 429 and "retry-after" in r.headers
        await api.delete(f"/users/{a}/server")
        assert (await api.post(f"/users/{b}/server")).status_code == 201


async def test_cancel_pending_spawn(spawn_hub, uname, gate):
    # held starts answer 202 once slow_spawn_timeout has passed; a cancel (a SIGKILL and a
    # database write) is done well within it: 204
    hub = spawn_hub(slow_spawn_timeout=2)
    alice, door = uname("alice"), gate()
    async with serving(hub) as api:
        await api.post(f"/users/{alice}")
        body = {"gate": str(door)}
        assert (await api.post(f"/users/{alice}/server", json=body)).status_code == 202
        await wait_until(lambda: started(hub, alice), what="the process to start")
        pid = server_row(hub, alice)["state"]["pid"]
        r = await api.delete(f"/users/{alice}/server")
        assert r.status_code == 204
        await wait_until(lambda: hub.lifecycle.pending(alice, "") is None, what="cancelled")
        assert not alive(pid)
        row = server_row(hub, alice)
        assert row["url"] is None and row["state"] == {}
        assert (await api.get(f"/users/{alice}/tokens")).json()["api_tokens"] == []
        events = await sse_events(api, f"/users/{alice}/server/progress")
        assert events == [{"progress": 100, "failed": True, "message": "Spawn cancelled"}]
        again = gate()
        assert (await api.post(f"/users/{alice}/server", json={"gate": str(again)})
                ).status_code == 202  # a new start is accepted, held until the test lets it
        again.touch()
        await wait_until(lambda: server_row(hub, alice)["url"] is not None, what="ready")


async def test_cancel_queued_spawn(spawn_hub, uname, gate):
    hub = spawn_hub(concurrent_spawn_limit=1, slow_spawn_timeout=0.05)
    a, b, c = uname("a"), uname("b"), uname("c")
    door = gate()
    async with client_for(hub, ADMIN_TOKEN) as api:
        for name in (a, b, c):
            await api.post(f"/users/{name}")
            await api.post(f"/users/{name}/server", json={"gate": str(door)})
        queued_c = hub.lifecycle._slots[(c, "")].progress
        assert queued_c.events[-1]["queue_position"] == 2
        assert (await api.delete(f"/users/{b}/server")).status_code == 204
        assert hub.lifecycle.pending(b, "") is None and not started(hub, b)
        assert queued_c.events[-1]["queue_position"] == 1  # moved up when b left
        door.touch()
        await wait_until(lambda: server_row(hub, c)["url"] is not None, what="c ready")
        assert server_row(hub, b)["url"] is None
