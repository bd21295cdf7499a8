"""A delegated (filtered or partial) admin acts only within its filter, and never on, or to
grant, more rights than it holds (issue 12, finding 3).

Every test builds the same hub: group ``g2`` holds ordinary users (alice, dan), users with
more rights (the admin; boss, in group ``admins`` that carries the admin role; ops, with an
extra role; bob, whose group ``readers`` grants ``read:users!group=g2``), and carol is
outside it. ``deputy`` holds the scopes under test. The matrix runs each write endpoint
as the deputy and asserts the one right status: 404 outside the filter, 403 on a target
above the deputy or a grant beyond it, success otherwise; a refusal leaves the database
exactly as it was (read back with the full admin's token, and the password hashes in SQL).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from traitlets.config import Config

from tests.conftest import ADMIN_TOKEN, client_for, raw_sql

G2 = ["alice", "bob", "dan", "admin", "boss", "ops"]
USERS = [*G2, "carol", "deputy"]


def hub_config() -> Config:
    c = Config()
    c.Courtyard.authenticator_class = "native"
    c.Courtyard.allow_named_servers = True
    c.Authenticator.admin_users = {"admin", "admin2"}
    c.Courtyard.load_groups = {"g2": G2, "admins": ["boss"], "readers": ["bob"],
                               "plain": ["carol"]}
    c.Courtyard.load_roles = [
        {"name": "admin", "groups": ["admins"]},
        {"name": "ops", "scopes": ["admin:servers"], "users": ["ops"]},
        {"name": "g2-readers", "scopes": ["read:users!group=g2"], "groups": ["readers"]},
    ]
    return c


class World:
    """The hub, the full admin's client, and the deputy's token and target ids."""

    def __init__(self, hub: Any, api: httpx.AsyncClient, db_url: str) -> None:
        self.hub, self.api, self.db_url = hub, api, db_url
        self.ids: dict[str, str] = {}

    async def build(self) -> None:
        api = self.api
        await ok(api.post("/users", json={"usernames": ["carol", "deputy"]}))
        for name in ("alice", "admin"):
            await ok(api.put(f"/users/{name}/password", json={"password": f"{name}-password"}))
        for name in ("alice", "admin", "carol"):
            await ok(api.put(f"/users/{name}/servers/s1"))
        for name in ("alice", "admin", "carol", "boss"):
            self.ids[f"tok_{name}"] = (await ok(api.post(f"/users/{name}/tokens")))["id"]
        await ok(api.post("/shares/alice/s1", json={"user": "admin"}))
        await ok(api.post("/shares/admin/s1", json={"user": "dan"}))
        await ok(api.post("/roles", json={"name": "power", "scopes": ["admin:users"]}))
        await ok(api.post("/roles", json={"name": "small", "scopes": ["read:roles"]}))
        await ok(api.post("/services/adminsvc", json={"admin": True}))
        await ok(api.post("/services/plainsvc", json={}))

    @contextlib.asynccontextmanager
    async def deputy(self, scopes: list[str]) -> AsyncIterator[httpx.AsyncClient]:
        """A client for the deputy holding exactly ``scopes`` (through its role), whose
        token has been used once (so using it again changes nothing a snapshot holds)."""
        if (await self.api.get("/roles/deputy")).status_code == 404:
            await ok(self.api.post("/roles", json={"name": "deputy", "scopes": scopes,
                                                   "users": ["deputy"]}))
        else:
            await ok(self.api.patch("/roles/deputy", json={"scopes": scopes}))
        token = (await ok(self.api.post("/users/deputy/tokens")))["token"]
        async with client_for(self.hub, token) as client:
            await ok(client.get("/user"))
            yield client

    async def snapshot(self) -> dict[str, Any]:
        """Everything a write could change, as the full admin reads it."""
        api = self.api
        users = await ok(api.get("/users", params={"include_stopped_servers": "1"}))
        state: dict[str, Any] = {
            "users": sorted(users, key=lambda u: u["name"]),
            "groups": await ok(api.get("/groups")),
            "roles": await ok(api.get("/roles")),
            "services": await ok(api.get("/services")),
            "passwords": raw_sql(self.db_url, "SELECT string_agg(username || ':' || "
                                 "password_hash, ',' ORDER BY username) FROM native_accounts")
            if "postgresql" in self.db_url else raw_sql(
                self.db_url, "SELECT group_concat(username || ':' || password_hash) FROM "
                "(SELECT * FROM native_accounts ORDER BY username)"),
        }
        for user in users:
            name = user["name"]
            tokens = (await ok(api.get(f"/users/{name}/tokens")))["api_tokens"]
            state[f"tokens {name}"] = sorted((t["id"], t["scopes"]) for t in tokens)
            state[f"shares {name}"] = (await ok(api.get(f"/shares/{name}")))["items"]
            state[f"codes {name}"] = (await ok(api.get(f"/share-codes/{name}")))["items"]
        return state


async def ok(request: Any) -> Any:
    response = await request
    assert response.status_code < 300, response.text
    return response.json() if response.content else None


@pytest.fixture
async def world(make_hub: Any, db_url: str) -> Any:
    hub = make_hub(hub_config())
    async with client_for(hub, ADMIN_TOKEN) as api:
        w = World(hub, api, db_url)
        await w.build()
        yield w


# -- the matrix ----------------------------------------------------------------------------------

ACTORS = {
    "users": ["admin:users!group=g2"],
    "users+roles": ["admin:users!group=g2", "admin:roles"],
    "users+groups": ["admin:users!group=g2", "groups!group=admins", "groups!group=g2",
                     "groups!group=plain"],
    "groups": ["admin:groups!group=g2", "groups!group=admins", "groups!group=readers",
               "admin:groups!group=plain", "read:users:name"],
    "tokens": ["tokens!group=g2"],
    "servers": ["admin:servers!group=g2"],
    "shares": ["shares!group=g2", "read:users:name", "read:groups:name"],
    "roles": ["admin:roles", "read:users:name"],
    "services": ["admin:services"],
    "users-only": ["users"],
}

PW = {"password": "a-new-password"}
# (actor, method, path, body, status); {tok_NAME} is the id of one of NAME's tokens
CELLS: list[tuple[str, str, str, Any, int]] = [
    # passwords: reset = take over the account
    ("users", "PUT", "/users/alice/password", PW, 200),
    ("users", "PUT", "/users/bob/password", PW, 200),  # bob's extra scope is within g2
    ("users", "PUT", "/users/admin/password", PW, 403),
    ("users", "PUT", "/users/boss/password", PW, 403),
    ("users", "PUT", "/users/ops/password", PW, 403),
    ("users", "PUT", "/users/dan/password", PW, 403),  # dan was lent the admin's server
    ("users", "PUT", "/users/carol/password", PW, 404),
    ("users-only", "PUT", "/users/alice/password", PW, 403),
    # users: create, edit, delete
    ("users", "POST", "/users", {"usernames": ["newbie"]}, 404),
    ("users", "POST", "/users/newbie", None, 404),
    ("users", "POST", "/users", {"usernames": ["alice2"], "admin": True}, 403),
    ("users", "DELETE", "/users/alice", None, 204),
    ("users", "DELETE", "/users/admin", None, 403),
    ("users", "DELETE", "/users/boss", None, 403),
    ("users", "DELETE", "/users/ops", None, 403),
    ("users", "DELETE", "/users/carol", None, 404),
    ("users-only", "DELETE", "/users/alice", None, 403),
    ("users", "PATCH", "/users/alice", {"name": "alice2"}, 200),
    ("users", "PATCH", "/users/admin", {"name": "admin3"}, 403),
    ("users", "PATCH", "/users/boss", {"name": "boss2"}, 403),
    ("users", "PATCH", "/users/carol", {"name": "carol2"}, 404),
    ("users", "PATCH", "/users/alice", {"admin": True}, 403),
    ("users", "PATCH", "/users/admin", {"admin": False}, 403),
    ("users", "PATCH", "/users/ops", {"auth_state": {"k": "v"}}, 403),
    ("users", "PATCH", "/users/alice", {"groups": ["g2", "admins"]}, 400),  # unseen group
    ("users", "PATCH", "/users/alice", {"groups": []}, 403),  # g2 is not its to manage
    ("users+groups", "PATCH", "/users/alice", {"groups": ["g2", "admins"]}, 403),
    ("users+groups", "PATCH", "/users/alice", {"groups": ["g2", "plain"]}, 200),
    ("users+groups", "PATCH", "/users/boss", {"groups": ["g2"]}, 403),
    ("users", "PATCH", "/users/alice", {"roles": ["user", "small"]}, 403),
    ("users+roles", "PATCH", "/users/alice", {"roles": ["user", "small"]}, 200),
    ("users+roles", "PATCH", "/users/alice", {"roles": ["user", "admin"]}, 403),
    ("users+roles", "PATCH", "/users/alice", {"roles": ["user", "power"]}, 403),
    ("users+roles", "PATCH", "/users/alice", {"roles": ["user", "ops"]}, 403),
    ("users-only", "PATCH", "/users/alice", {"name": "alice2"}, 403),
    # groups: membership carries the group's roles and shares
    ("groups", "POST", "/groups/g2/users", {"users": ["carol"]}, 200),
    ("groups", "POST", "/groups/plain/users", {"users": ["alice"]}, 200),
    ("groups", "POST", "/groups/plain/users", {"users": ["admin"]}, 403),
    ("groups", "POST", "/groups/plain/users", {"users": ["ops"]}, 403),
    ("groups", "POST", "/groups/admins/users", {"users": ["alice"]}, 403),
    ("groups", "POST", "/groups/readers/users", {"users": ["carol"]}, 403),
    ("groups", "DELETE", "/groups/g2/users", {"users": ["alice"]}, 200),
    ("groups", "DELETE", "/groups/g2/users", {"users": ["admin"]}, 403),
    ("groups", "DELETE", "/groups/admins/users", {"users": ["boss"]}, 403),
    ("groups", "PUT", "/groups/plain/properties", {"image": "x"}, 200),
    ("groups", "PUT", "/groups/g2/properties", {"image": "x"}, 403),  # the admin is in it
    ("groups", "PUT", "/groups/admins/properties", {"image": "x"}, 403),
    ("groups", "DELETE", "/groups/plain", None, 204),
    ("groups", "DELETE", "/groups/admins", None, 404),
    ("groups", "POST", "/groups/newgroup", None, 404),
    ("groups", "POST", "/groups", {"groups": ["plain2"]}, 404),
    # tokens: never for a user above the requester, never beyond the requester
    ("tokens", "POST", "/users/alice/tokens", {}, 201),
    ("tokens", "POST", "/users/alice/tokens", {"scopes": ["read:users!user=alice"]}, 201),
    ("tokens", "POST", "/users/admin/tokens", {}, 403),
    ("tokens", "POST", "/users/boss/tokens", {"scopes": ["read:users!user=boss"]}, 403),
    ("tokens", "POST", "/users/ops/tokens", {}, 403),
    ("tokens", "POST", "/users/bob/tokens", {}, 403),
    ("tokens", "POST", "/users/carol/tokens", {}, 404),
    ("tokens", "DELETE", "/users/alice/tokens/{tok_alice}", None, 204),
    ("tokens", "DELETE", "/users/admin/tokens/{tok_admin}", None, 403),
    ("tokens", "DELETE", "/users/boss/tokens/{tok_boss}", None, 403),
    ("tokens", "DELETE", "/users/carol/tokens/{tok_carol}", None, 404),
    # servers: nothing may be started or set up as a user above; stopping gains nothing
    ("servers", "PUT", "/users/alice/servers/new", None, 201),
    ("servers", "PUT", "/users/admin/servers/new", None, 403),
    ("servers", "PUT", "/users/carol/servers/new", None, 404),
    ("servers", "POST", "/users/admin/servers/s1", None, 403),
    ("servers", "POST", "/users/boss/server", None, 403),
    ("servers", "POST", "/users/carol/servers/s1", None, 404),
    ("servers", "PATCH", "/users/alice/servers/s1", {"display_name": "x"}, 200),
    ("servers", "PATCH", "/users/admin/servers/s1", {"display_name": "x"}, 403),
    ("servers", "PATCH", "/users/admin/servers/s1", {"user_options": {"p": 1}}, 403),
    ("servers", "DELETE", "/users/admin/servers/s1", None, 204),  # as the idle culler does
    ("servers", "DELETE", "/users/carol/servers/s1", None, 404),
    # shares: never lend a server of a user above, nor more than the caller holds
    ("shares", "POST", "/shares/alice/s1", {"user": "carol"}, 200),
    ("shares", "POST", "/shares/admin/s1", {"user": "deputy"}, 403),
    ("shares", "POST", "/shares/carol/s1", {"user": "deputy"}, 404),
    ("shares", "PATCH", "/shares/alice/s1", {"user": "admin"}, 200),
    ("shares", "PATCH", "/shares/admin/s1", {"user": "dan"}, 403),
    ("shares", "DELETE", "/shares/alice/s1", None, 204),
    ("shares", "DELETE", "/shares/admin/s1", None, 403),
    ("shares", "POST", "/share-codes/alice/s1", {}, 201),
    ("shares", "POST", "/share-codes/admin/s1", {}, 403),
    ("shares", "DELETE", "/share-codes/admin/s1", None, 403),
    ("shares", "DELETE", "/share-codes/carol/s1", None, 404),
    ("shares", "DELETE", "/users/dan/shared/admin/s1", None, 204),
    ("shares", "DELETE", "/users/admin/shared/alice/s1", None, 403),
    ("shares", "DELETE", "/groups/plain/shared/alice/s1", None, 404),
    # roles: never grant, assign or edit beyond the caller
    ("roles", "POST", "/roles", {"name": "mine", "scopes": ["read:roles"]}, 201),
    ("roles", "POST", "/roles", {"name": "mine", "scopes": ["read:roles"],
                                 "users": ["alice"]}, 201),
    ("roles", "POST", "/roles", {"name": "mine", "scopes": ["admin:users"]}, 403),
    ("roles", "POST", "/roles", {"name": "mine", "scopes": ["admin:users!user=alice"]}, 403),
    ("roles", "POST", "/roles", {"name": "mine", "scopes": ["read:roles"],
                                 "users": ["admin"]}, 403),
    ("roles", "PATCH", "/roles/power", {"users": ["deputy"]}, 403),
    ("roles", "PATCH", "/roles/small", {"scopes": ["admin:users"]}, 403),
    ("roles", "PATCH", "/roles/small", {"users": ["deputy"]}, 200),
    ("roles", "DELETE", "/roles/power", None, 403),
    ("roles", "DELETE", "/roles/small", None, 204),
    # services: an admin service with a token of the caller's choice is full admin
    ("services", "POST", "/services/evil", {"admin": True, "api_token": "chosen-token-1"}, 403),
    ("services", "POST", "/services/sneaky", {"url": "http://127.0.0.1:9/",
                                               "oauth_no_confirm": True}, 403),
    ("services", "POST", "/services/fine", {}, 201),
    ("services", "DELETE", "/services/adminsvc", None, 403),
    ("services", "DELETE", "/services/plainsvc", None, 200),
]


def _cell_id(cell: tuple[str, str, str, Any, int]) -> str:
    actor, method, path, body, status = cell
    extra = f" {json.dumps(body, separators=(',', ':'))}" if body and body is not PW else ""
    return f"{actor}: {method} {path}{extra} -> {status}"


@pytest.mark.parametrize("cell", CELLS, ids=[_cell_id(c) for c in CELLS])
async def test_matrix(world: World, cell: tuple[str, str, str, Any, int]) -> None:
    actor, method, path, body, status = cell
    path = path.format(**world.ids)
    async with world.deputy(ACTORS[actor]) as deputy:
        before = await world.snapshot()
        response = await deputy.request(method, path, json=body)
        assert response.status_code == status, response.text
        if status >= 400:
            error = response.json()
            assert error["status"] == status and error["message"]
            assert await world.snapshot() == before


# -- the reported attacks, and the next ones an attacker tries ----------------------------------

async def test_repro_filtered_admin_cannot_reset_the_admins_password(world: World) -> None:
    async with world.deputy(["admin:users!group=g2"]) as deputy:
        r = await deputy.put("/users/admin/password", json={"password": "owned-by-deputy"})
        assert r.status_code == 403, r.text
    r = await world.api.post("/users/admin/tokens",
                             json={"auth": {"username": "admin", "password": "admin-password"}},
                             headers={"Authorization": ""})
    assert r.status_code == 201  # the admin's own password still works


async def test_repro_filtered_admin_cannot_delete_admins(world: World) -> None:
    async with world.deputy(["admin:users!group=g2", "delete:users!group=g2"]) as deputy:
        for name in ("admin", "boss"):
            assert (await deputy.delete(f"/users/{name}")).status_code == 403
    users = {u["name"] for u in await ok(world.api.get("/users"))}
    assert {"admin", "boss"} <= users


async def test_repro_filtered_admin_cannot_join_groups_carrying_admin(world: World) -> None:
    scopes = ["admin:users!group=g2", "groups!group=admins", "groups!group=g2"]
    async with world.deputy(scopes) as deputy:
        r = await deputy.patch("/users/alice", json={"groups": ["g2", "admins"]})
        assert r.status_code == 403, r.text
        r = await deputy.post("/groups/admins/users", json={"users": ["deputy"]})
        assert r.status_code == 403, r.text
    admins = await ok(world.api.get("/groups/admins"))
    assert admins["users"] == ["boss"]


async def test_rename_into_a_configured_admin_name(world: World) -> None:
    await ok(world.api.delete("/users/admin2"))  # admin_users names it; gone for now
    async with world.deputy(["admin:users!group=g2"]) as deputy:
        r = await deputy.patch("/users/alice", json={"name": "admin2"})
        assert r.status_code == 403 and "admin" in r.json()["message"]
        assert (await deputy.post("/users/admin2")).status_code == 404  # outside the filter
    async with world.deputy(["admin:users!user=admin2"]) as deputy:
        r = await deputy.post("/users/admin2")
        assert r.status_code == 403, r.text
    names = {u["name"] for u in await ok(world.api.get("/users"))}
    assert "alice" in names and "admin2" not in names


async def test_recreated_group_keeps_what_the_config_gives_it(world: World) -> None:
    """load_roles gives ``readers`` its role again at the next start: recreating the group
    with members is granting that role."""
    await ok(world.api.delete("/groups/readers"))
    async with world.deputy(["admin:groups!group=readers", "read:users:name"]) as deputy:
        r = await deputy.post("/groups/readers", json={"users": ["carol"]})
        assert r.status_code == 403, r.text
        r = await deputy.post("/groups", json={"groups": ["readers"], "users": ["carol"]})
        assert r.status_code == 403, r.text
    assert (await world.api.get("/groups/readers")).status_code == 404


async def test_rename_stays_inside_the_filter(world: World) -> None:
    async with world.deputy(["admin:users!user=alice"]) as deputy:
        r = await deputy.patch("/users/alice", json={"name": "zed"})
        assert r.status_code == 403, r.text
    async with world.deputy(["admin:users!group=g2"]) as deputy:
        r = await deputy.patch("/users/alice", json={"name": "zed"})
        assert r.status_code == 200, r.text  # still in g2: still within the filter


async def test_token_for_another_user_does_not_grow_with_them(world: World) -> None:
    async with world.deputy(["tokens!group=g2"]) as deputy:
        made = await ok(deputy.post("/users/alice/tokens", json={}))
    assert made["scopes"] != ["inherit"]
    await ok(world.api.post("/groups/admins/users", json={"users": ["alice"]}))
    async with client_for(world.hub, made["token"]) as alice_by_deputy:
        assert (await alice_by_deputy.get("/users/admin")).status_code == 404
        r = await alice_by_deputy.put("/users/admin/password", json=PW)
        assert r.status_code == 403


async def test_narrowed_token_cannot_mint_a_wider_one(world: World) -> None:
    narrow = await ok(world.api.post("/users/alice/tokens", json={"scopes": ["tokens!user"]}))
    async with client_for(world.hub, narrow["token"]) as c:
        assert (await c.post("/users/alice/tokens", json={})).status_code == 403
        r = await c.post("/users/alice/tokens", json={"scopes": ["read:users!user=alice"]})
        assert r.status_code == 403, r.text
        r = await c.post("/users/alice/tokens", json={"scopes": ["read:tokens!user=alice"]})
        assert r.status_code == 201, r.text


async def test_narrowed_admin_token_is_not_a_full_admin(world: World) -> None:
    narrow = await ok(world.api.post("/users/admin/tokens",
                                     json={"scopes": ["admin:users!group=g2"]}))
    async with client_for(world.hub, narrow["token"]) as c:
        assert (await c.patch("/users/alice", json={"admin": True})).status_code == 403
        assert (await c.put("/users/boss/password", json=PW)).status_code == 403
    assert (await ok(world.api.get("/users/alice")))["admin"] is False


async def test_share_scopes_beyond_the_callers(world: World) -> None:
    # alice's default server, as a first start leaves it (without starting one here)
    raw_sql(world.db_url, "INSERT INTO servers (user_id, name, state, user_options, created) "
            "SELECT id, '', '{}', '{}', CURRENT_TIMESTAMP FROM users WHERE name = 'alice'")
    async with world.deputy(["shares!server=alice/", "read:users:name"]) as deputy:
        # the whole of alice's servers, where the deputy may lend only the default one: a
        # share names one server, so any other filter is bad input for everyone (JupyterHub)
        r = await deputy.post("/shares/alice/", json={"user": "carol",
                                                      "scopes": ["access:servers!user=alice"]})
        assert r.status_code == 400, r.text
        assert (await ok(world.api.get("/shares/alice/")))["items"] == []
        r = await deputy.post("/shares/alice/", json={"user": "carol"})
        assert r.status_code == 200, r.text
        assert r.json()["scopes"] == ["access:servers!server=alice/"]
        r = await deputy.post("/shares/alice/s1", json={"user": "deputy"})
        assert r.status_code == 404  # not its server to share


async def test_full_admin_keeps_every_power(world: World) -> None:
    api = world.api
    await ok(api.patch("/users/boss", json={"name": "boss2"}))
    await ok(api.post("/groups/admins/users", json={"users": ["alice"]}))
    await ok(api.put("/users/ops/password", json=PW))
    await ok(api.post("/users/ops/tokens", json={}))
    assert (await ok(api.post("/users/carol/tokens", json={})))["scopes"] == ["inherit"]
