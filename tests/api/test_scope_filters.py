"""Scope filters end to end: 404 for hidden resources, !user, !group, !server, !service."""

from __future__ import annotations

from tests.conftest import client_for


async def _token(api, user, scopes):
    await api.post(f"/users/{user}")
    await api.post("/roles", json={"name": f"r-{user}", "scopes": scopes, "users": [user]})
    r = await api.post(f"/users/{user}/tokens", json={"scopes": scopes})
    assert r.status_code == 201, r.text
    return r.json()["token"]


async def test_user_filter_hides_others(api, hub):
    await api.post("/users", json={"usernames": ["alice", "bob"]})
    token = await _token(api, "watcher", ["read:users!user=alice", "list:users!user=alice"])
    async with client_for(hub, token) as c:
        assert (await c.get("/users/alice")).status_code == 200
        r = await c.get("/users/bob")
        assert r.status_code == 404  # not 403: existence is not leaked
        assert (await c.get("/users/ghost")).status_code == 404
        assert [u["name"] for u in (await c.get("/users")).json()] == ["alice"]
        r = await c.get("/groups")
        assert r.status_code == 403 and "list:groups" in r.json()["message"]


async def test_group_filter(api, hub):
    await api.post("/users", json={"usernames": ["s1", "s2", "outsider"]})
    await api.post("/groups/class", json={"users": ["s1", "s2"]})
    token = await _token(api, "teacher", ["read:users!group=class", "list:users!group=class",
                                          "groups!group=class"])
    async with client_for(hub, token) as c:
        assert [u["name"] for u in (await c.get("/users")).json()] == ["s1", "s2"]
        assert (await c.get("/users/s1")).json()["name"] == "s1"
        assert (await c.get("/users/outsider")).status_code == 404
        r = await c.post("/groups/class/users", json={"users": ["outsider"]})
        assert r.status_code == 200
        assert (await c.get("/users/outsider")).status_code == 200
        assert (await c.post("/groups/other")).status_code == 403


async def test_field_trimming_by_scope(api, hub):
    await api.post("/users/zoe")
    await api.post("/groups/g", json={"users": ["zoe"]})
    token = await _token(api, "peeker", ["read:users:name", "read:users:groups!user=zoe"])
    async with client_for(hub, token) as c:
        r = await c.get("/users/zoe")
        assert r.json() == {"kind": "user", "name": "zoe", "admin": False, "groups": ["g"]}
        r = await c.get("/users/admin")
        assert set(r.json()) == {"kind", "name", "admin"}


async def test_service_filter(make_hub):
    from traitlets.config import Config

    c = Config()
    c.Courtyard.services = [{"name": "a", "url": "http://127.0.0.1:1"},
                            {"name": "b", "url": "http://127.0.0.1:2"}]
    hub = make_hub(c)
    from tests.conftest import ADMIN_TOKEN

    async with client_for(hub, ADMIN_TOKEN) as api:
        token = await _token(api, "svcwatch", ["read:services!service=a",
                                               "list:services!service=a"])
        async with client_for(hub, token) as w:
            assert (await w.get("/services/a")).status_code == 200
            assert (await w.get("/services/b")).status_code == 404
            assert list((await w.get("/services")).json()) == ["a"]


async def test_server_filter_grants_only_that_server_info(api, hub):
    await api.post("/users/owner")
    token = await _token(api, "viewer", ["read:servers!server=owner/"])
    async with client_for(hub, token) as c:
        r = await c.get("/users/owner")
        # read:servers implies read:users:name for the user, and the servers key
        assert r.status_code == 200 and "servers" in r.json()
        assert (await c.get("/users/admin")).status_code == 404
