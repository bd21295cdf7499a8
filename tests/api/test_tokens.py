"""Tokens: config tokens, API tokens with scopes and expiry, revocation, hashing at rest."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from courtyard.db.models import APIToken
from tests.conftest import ADMIN_TOKEN, client_for, new_token


async def test_token_lifecycle(api, hub):
    await api.post("/users/alice")
    r = await api.post("/users/alice/tokens", json={"note": "for ci", "expires_in": 3600})
    assert r.status_code == 201
    model = r.json()
    secret = model["token"]
    assert len(secret) == 32
    assert model["id"].startswith("a") and model["kind"] == "api_token"
    assert model["user"] == "alice" and model["note"].startswith("for ci")
    assert model["expires_at"].endswith("Z") and model["scopes"] == ["inherit"]
    async with client_for(hub, secret) as alice:
        r = await alice.get("/user")
        assert r.status_code == 200 and r.json()["name"] == "alice"
        assert r.json()["token_id"] == model["id"]
        r = await alice.get("/users")  # alice may not list users
        assert r.status_code == 403
        r = await alice.get("/users/admin")  # hidden, not forbidden
        assert r.status_code == 404
    r = await api.get("/users/alice/tokens")
    assert [t["id"] for t in r.json()["api_tokens"]] == [model["id"]]
    assert "token" not in r.json()["api_tokens"][0]
    assert (await api.get(f"/users/alice/tokens/{model['id']}")).json()["note"] == model["note"]
    for bad in ("a999999", "x1", "1", "a99999999999", "a\u00b2"):  # too big for an id; "²"
        assert (await api.get(f"/users/alice/tokens/{bad}")).status_code == 404
    assert (await api.delete(f"/users/alice/tokens/{model['id']}")).status_code == 204
    async with client_for(hub, secret) as alice:
        assert (await alice.get("/user")).status_code == 403
    # stored only hashed
    with hub.session() as db:
        stored = [t.hashed for t in db.scalars(select(APIToken))]
    assert all(secret not in h and ADMIN_TOKEN not in h for h in stored)


async def test_token_scopes_limited_to_owner(api, hub):
    await api.post("/users/bob")
    r = await api.post("/users/bob/tokens", json={"scopes": ["read:users!user=bob"]})
    assert r.status_code == 201
    async with client_for(hub, r.json()["token"]) as bob:
        me = (await bob.get("/user")).json()
        assert "read:users!user=bob" in me["scopes"]
        assert "tokens!user=bob" not in me["scopes"]
        assert (await bob.post("/users/bob/tokens")).status_code == 403
    r = await api.post("/users/bob/tokens", json={"scopes": ["admin:users"]})
    assert r.status_code == 400 and "admin:users" in r.json()["message"]
    for bad in ({"scopes": ["nonsense"]}, {"scopes": "x"}, {"expires_in": -1},
                {"expires_in": "soon"}, {"note": 5}, {"roles": ["nosuch"]}):
        assert (await api.post("/users/bob/tokens", json=bad)).status_code == 400, bad
    r = await api.post("/users/bob/tokens", json={"roles": ["user"]})
    assert r.status_code == 201 and r.json()["scopes"] == ["self"]


async def test_expired_token_refused(api, hub):
    await api.post("/users/carl")
    r = await api.post("/users/carl/tokens", json={"expires_in": 1})
    secret = r.json()["token"]
    async with client_for(hub, secret) as carl:
        assert (await carl.get("/user")).status_code == 200
        await asyncio.sleep(1.1)
        assert (await carl.get("/user")).status_code == 403
    assert (await api.get("/users/carl/tokens")).json()["api_tokens"] == []


async def test_token_expiry_cap(make_hub):
    hub = make_hub(token_expires_in_max_seconds=60)
    async with client_for(hub, ADMIN_TOKEN) as api:
        await api.post("/users/dan")
        r = await api.post("/users/dan/tokens", json={"expires_in": 600})
        assert r.status_code == 400
        r = await api.post("/users/dan/tokens", json={})
        assert r.status_code == 201 and r.json()["expires_at"] is not None


async def test_auth_header_forms(hub):
    for header in (f"token {ADMIN_TOKEN}", f"Bearer {ADMIN_TOKEN}", f"TOKEN {ADMIN_TOKEN}"):
        async with client_for(hub) as c:
            r = await c.get("/user", headers={"Authorization": header})
            assert r.status_code == 200, header
    async with client_for(hub) as c:
        r = await c.get("/user")
        assert r.status_code == 403
        assert r.json() == {"status": 403, "message": "Missing or invalid credentials."}
        r = await c.get("/users", params={"token": ADMIN_TOKEN})  # not accepted by the hub API
        assert r.status_code == 403
        r = await c.get("/user", headers={"Authorization": "token wrong-token"})
        assert r.status_code == 403


async def test_config_token_removed_from_config_is_revoked(make_hub, client):
    hub = make_hub(api_tokens={"first-config-token": "admin"})
    async with client(hub, "first-config-token") as c:
        assert (await c.get("/user")).status_code == 200
    hub2 = make_hub(api_tokens={"second-config-token": "admin"})
    async with client(hub2, "first-config-token") as c:
        assert (await c.get("/user")).status_code == 403
    async with client(hub2, "second-config-token") as c:
        assert (await c.get("/user")).json()["name"] == "admin"
        r = await c.get("/users/admin/tokens")
        token_id = r.json()["api_tokens"][0]["id"]
        assert (await c.delete(f"/users/admin/tokens/{token_id}")).status_code == 403


async def test_revoking_changes_permissions_immediately(api, hub):
    token = await new_token(api, "erin")
    await api.post("/groups/staff", json={"users": ["erin"]})
    await api.post("/roles", json={"name": "staff-readers", "scopes": ["list:users"],
                                   "groups": ["staff"]})
    async with client_for(hub, token) as erin:
        assert (await erin.get("/users")).status_code == 200
        await api.request("DELETE", "/groups/staff/users", json={"users": ["erin"]})
        assert (await erin.get("/users")).status_code == 403


async def test_config_token_kept_across_restarts_and_moved_between_owners(make_hub, client):
    """A restart finds the stored row by its slow hash; a token given to someone else is
    reissued to them, never left with its old owner."""
    async def whoami(hub) -> tuple[str, int]:
        async with client(hub, "shared-config-token") as c:
            me = (await c.get("/user")).json()
            tokens = (await c.get(f"/users/{me['name']}/tokens")).json()["api_tokens"]
            return me["name"], tokens[0]["id"]

    first = await whoami(make_hub(api_tokens={"shared-config-token": "admin"}))
    assert await whoami(make_hub(api_tokens={"shared-config-token": "admin"})) == first
    hub = make_hub(api_tokens={"shared-config-token": "bob", "admin-config-token": "admin"})
    assert (await whoami(hub))[0] == "bob"
    async with client(hub, "admin-config-token") as admin:
        notes = [t["note"] for t in (await admin.get("/users/admin/tokens")).json()["api_tokens"]]
        assert notes == ["from config"]  # only the admin's new token; the moved one is bob's
