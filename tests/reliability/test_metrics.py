"""``/hub/metrics`` after real work: a real hub (uvicorn, the built-in proxy) starts real
servers (``tests/spawners/mocksu.py``) through a spawn queue of one, one of them crashes, one
is stopped, a route is deleted behind the hub's back; the scrape, parsed as Prometheus
parses it, counts each of these under JupyterHub's names and Courtyard's own.
"""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from courtyard.routing import sync_routes
from tests.conftest import ADMIN_TOKEN
from tests.spawners.conftest import server_row, serving, wait_until

ADMIN = {"Authorization": f"token {ADMIN_TOKEN}"}


async def scrape(hub: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` of ``GET /hub/metrics`` over real HTTP."""
    host, port = hub.hub_bound
    async with httpx.AsyncClient(trust_env=False) as client:
        r = await client.get(f"http://{host}:{port}/hub/metrics", headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def sample(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def test_scrape_counts_spawns_queue_stops_and_routes(spawn_hub, uname, gate) -> None:
    hub = spawn_hub(concurrent_spawn_limit=1, slow_spawn_timeout=0.05)
    a, b, c = uname("ma"), uname("mb"), uname("mc")
    doors = {a: gate(), b: gate()}
    async with serving(hub) as api:
        for name in (a, b, c):
            assert (await api.post(f"/users/{name}")).status_code == 201
        # a holds the one slot (its server waits at its gate); b, then c (whose server
        # crashes at start) wait in the queue
        for name, body in ((a, {"gate": str(doors[a])}), (b, {"gate": str(doors[b])}),
                           (c, {"mode": "crash"})):
            assert (await api.post(f"/users/{name}/server", json=body)).status_code == 202
        await wait_until(lambda: hub.lifecycle.queue.waiting == 2, what="b, c to queue")
        queued = await scrape(hub)
        assert sample(queued, "courtyard_spawn_queue_length") == 2
        assert sample(queued, "courtyard_spawns_active") == 1
        assert sample(queued, "courtyard_servers_pending", state="spawn") == 3

        for door in doors.values():
            door.touch()
        for name in (a, b, c):
            await wait_until(lambda n=name: hub.lifecycle.pending(n, "") is None,
                             what=f"{name}'s spawn to end")
        assert [(server_row(hub, n) or {}).get("url") is not None for n in (a, b, c)] == [
            True, True, False]
        hub.options.slow_spawn_timeout = 30  # the stop's answer waits for it to end: 204
        assert (await api.delete(f"/users/{b}/server")).status_code == 204
        await wait_until(lambda: hub.lifecycle.pending(b, "") is None, what="b stopped")
        await wait_until(lambda: hub.metrics.poll.count("running") > 0, what="a poll of a")

        # a route lost behind the hub's back is put back by the next check, and counted
        await hub.proxy.delete_route(hub.server_proxy_spec(a, ""))
        repairs = hub.metrics.route_repairs.series[("added",)]
        await sync_routes(hub)
        routes = len(await hub.proxy.get_all_routes())
        after = await scrape(hub)
        users = len((await api.get("/users")).json())

    assert sample(after, "jupyterhub_total_users") == users == 4  # admin, a, b, c
    assert sample(after, "jupyterhub_running_servers") == 1
    spawned = "jupyterhub_server_spawn_duration_seconds_count"
    assert sample(after, spawned, status="success", reason="") == 2
    assert sample(after, spawned, status="failure", reason="") == 1
    assert sample(after, "jupyterhub_server_stop_seconds_count", status="success") == 1
    assert sample(after, "jupyterhub_proxy_add_duration_seconds_count", status="success") == 2
    assert sample(after, "jupyterhub_proxy_delete_duration_seconds_count",
                  status="success") == 1
    assert sample(after, "jupyterhub_server_poll_duration_seconds_count", status="running") > 0
    stages = "courtyard_spawn_stage_duration_seconds_count"
    assert [sample(after, stages, stage=s) for s in ("queue", "prepare", "route")] == [3, 3, 2]
    assert sample(after, "courtyard_spawn_queue_length") == 0
    assert sample(after, "courtyard_proxy_routes") == routes
    assert sample(after, "courtyard_proxy_route_repairs_total", change="added") == repairs + 1
    # cumulative buckets: the last (+Inf) holds every spawn
    assert sample(after, "jupyterhub_server_spawn_duration_seconds_bucket", status="success",
                  reason="", le="+Inf") == 2


async def test_refused_spawns_are_counted_with_jupyterhub_reasons(spawn_hub, uname, gate
                                                                  ) -> None:
    """With the queue off (JupyterHub's behaviour), a spawn over the limit is refused (429)
    and counted as JupyterHub counts it: failure, reason ``throttled``."""
    hub = spawn_hub(concurrent_spawn_limit=1, spawn_queue=False,
                    slow_spawn_timeout=0.05)
    a, b = uname("mq"), uname("mr")
    door = gate()
    async with serving(hub) as api:
        for name in (a, b):
            assert (await api.post(f"/users/{name}")).status_code == 201
        assert (await api.post(f"/users/{a}/server", json={"gate": str(door)})).status_code \
            == 202
        assert (await api.post(f"/users/{b}/server")).status_code == 429
        samples = await scrape(hub)
        door.touch()
        await wait_until(lambda: hub.lifecycle.pending(a, "") is None, what="a ready")
    assert sample(samples, "jupyterhub_server_spawn_duration_seconds_count",
                  status="failure", reason="throttled") == 1
