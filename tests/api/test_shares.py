"""Sharing: shares to users and groups, share codes, what a user was given, revocation."""

from __future__ import annotations

from courtyard.api.shares import accept_share_code
from courtyard.db import queries
from courtyard.db.models import Server
from tests.conftest import client_for, new_token

PAGE = {"Accept": "application/jupyterhub-pagination+json"}


def add_server(hub, owner: str, name: str = "") -> None:
    with hub.session() as db:
        user = queries.get_user(db, owner)
        db.add(Server(user=user, name=name, state={}, user_options={}))
        db.commit()


async def test_share_with_user_grants_access_scope(api, hub):
    owner_token = await new_token(api, "owner")
    guest_token = await new_token(api, "guest")
    add_server(hub, "owner")
    async with client_for(hub, owner_token) as owner, client_for(hub, guest_token) as guest:
        r = await owner.post("/shares/owner/", json={"user": "guest"})
        assert r.status_code == 403  # sharing needs the shares scope, which users lack
        await api.post("/roles", json={"name": "sharers", "scopes": ["shares!user", "read:users:name"],
                                       "users": ["owner"]})
        r = await owner.post("/shares/owner/", json={"user": "guest"})
        assert r.status_code == 200, r.text
        share = r.json()
        assert share["scopes"] == ["access:servers!server=owner/"]
        assert share["user"] == {"name": "guest"} and share["server"]["name"] == ""
        me = (await guest.get("/user")).json()
        assert "access:servers!server=owner/" in me["scopes"]
        r = await guest.get("/users/guest/shared")
        assert [s["server"]["user"]["name"] for s in r.json()["items"]] == ["owner"]
        r = await owner.get("/shares/owner")
        assert r.json()["_pagination"]["total"] == 1
        for bad in ({"user": "ghost"}, {"user": "guest", "group": "g"}, {},
                    {"user": "guest", "scopes": ["admin:users"]}, {"user": "owner"}):
            assert (await owner.post("/shares/owner/", json=bad)).status_code == 400, bad
        assert (await owner.post("/shares/owner/nosuch", json={"user": "guest"})).status_code \
            == 404
        r = await owner.patch("/shares/owner/", json={"user": "guest"})
        assert r.status_code == 200 and r.json() == {}
        me = (await guest.get("/user")).json()
        assert "access:servers!server=owner/" not in me["scopes"]


async def test_share_with_group_and_revoke_all(api, hub):
    await api.post("/users", json={"usernames": ["o2", "m1", "m2"]})
    await api.post("/groups/team", json={"users": ["m1", "m2"]})
    add_server(hub, "o2", "gpu")
    r = await api.post("/shares/o2/gpu", json={"group": "team"})
    assert r.status_code == 200 and r.json()["group"] == {"name": "team"}
    token = await new_token(api, "m2")
    async with client_for(hub, token) as m2:
        assert "access:servers!server=o2/gpu" in (await m2.get("/user")).json()["scopes"]
        r = await api.get("/groups/team/shared", headers=PAGE)
        assert len(r.json()["items"]) == 1
        assert (await api.delete("/shares/o2/gpu")).status_code == 204
        assert "access:servers!server=o2/gpu" not in (await m2.get("/user")).json()["scopes"]


async def test_share_codes(api, hub):
    await api.post("/users", json={"usernames": ["o3", "taker"]})
    add_server(hub, "o3")
    r = await api.post("/share-codes/o3/", json={"expires_in": 3600})
    assert r.status_code == 201
    code = r.json()
    assert code["code"].startswith("sc_") and code["id"].startswith("sc_")
    assert code["accept_url"].startswith("/hub/accept-share?code=")
    assert (await api.post("/share-codes/o3/", json={"expires_in": 5})).status_code == 400
    r = await api.get("/share-codes/o3")
    assert [c["id"] for c in r.json()["items"]] == [code["id"]]
    assert "code" not in r.json()["items"][0]
    with hub.session() as db:
        share = accept_share_code(db, queries.get_user(db, "taker"), code["code"])
        db.commit()
        assert share.scopes == ["access:servers!server=o3/"]
    hub.scope_cache.invalidate()
    token = await new_token(api, "taker")
    async with client_for(hub, token) as taker:
        assert "access:servers!server=o3/" in (await taker.get("/user")).json()["scopes"]
        r = await taker.get("/users/taker/shared/o3/")
        assert r.status_code == 200
        assert (await taker.delete("/users/taker/shared/o3/")).status_code == 204
        assert "access:servers!server=o3/" not in (await taker.get("/user")).json()["scopes"]
    assert (await api.delete("/share-codes/o3", params={"id": code["id"]})).status_code == 204
    assert (await api.get("/share-codes/o3")).json()["items"] == []
