"""/users: listing, paging, creating, editing, deleting, activity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from tests.conftest import new_token, raw_sql

PAGE = {"Accept": "application/jupyterhub-pagination+json"}


async def test_list_users_bare_and_version_header(api):
    r = await api.get("/users")
    assert r.status_code == 200
    assert r.headers["x-jupyterhub-version"]
    users = r.json()
    assert [u["name"] for u in users] == ["admin"]
    admin = users[0]
    assert admin["kind"] == "user" and admin["admin"] is True
    assert set(admin["roles"]) == {"admin", "user"}
    assert admin["server"] is None and admin["servers"] == {}
    assert admin["created"].endswith("Z")


async def test_create_users_bulk_and_conflicts(api):
    r = await api.post("/users", json={"usernames": ["user1", "User2"]})
    assert r.status_code == 201
    assert [u["name"] for u in r.json()] == ["user1", "user2"]  # normalized
    r = await api.post("/users", json={"usernames": ["user1", "user3"]})
    assert r.status_code == 201 and [u["name"] for u in r.json()] == ["user3"]
    r = await api.post("/users", json={"usernames": ["user1", "user3"]})
    assert r.status_code == 409
    assert r.json() == {"status": 409, "message": "All 2 users already exist"}


async def test_create_users_bad_input(api):
    for body, fragment in [
        ({"usernames": "bob"}, "usernames"),
        ({"usernames": []}, "usernames"),
        ({"usernames": ["ok", "bad/name"]}, "Invalid username"),
        ({"usernames": [3]}, "string"),
        ({"usernames": ["a"], "admin": "yes"}, "admin"),
        ({"usernames": ["a"], "color": "red"}, "unknown field"),  # not in JupyterHub's model
        ({"usernames": ["a"], "groups": "g"}, "user.groups must be list"),
    ]:
        r = await api.post("/users", json=body)
        assert r.status_code == 400, body
        assert fragment in r.json()["message"]
    r = await api.post("/users", content=b"{not json")
    assert r.status_code == 400 and "invalid JSON" in r.json()["message"]
    r = await api.post("/users", content=b"[1, 2]")
    assert r.status_code == 400 and "JSON object" in r.json()["message"]
    # nothing was half-written
    assert [u["name"] for u in (await api.get("/users")).json()] == ["admin"]


async def test_single_user_crud(api):
    r = await api.post("/users/alice", json={"admin": False})
    assert r.status_code == 201 and r.json()["name"] == "alice"
    # the model returned on create is the one a later read gives
    assert r.json() == (await api.get("/users/alice")).json()
    r = await api.post("/users/alice")
    assert r.json() == {"status": 409, "message": "User alice already exists"}
    r = await api.post("/users/root", json={"admin": True})
    assert r.json() == (await api.get("/users/root")).json()
    assert r.json()["roles"] == ["admin", "user"] and r.json()["admin"] is True
    r = await api.get("/users/alice")
    assert r.status_code == 200 and r.json()["roles"] == ["user"]
    assert (await api.get("/users/nobody")).status_code == 404
    r = await api.patch("/users/alice", json={"admin": True})
    assert r.status_code == 200 and r.json()["admin"] is True
    assert set(r.json()["roles"]) == {"admin", "user"}
    r = await api.patch("/users/alice", json={"name": "alicia"})
    assert r.json()["name"] == "alicia"
    assert (await api.get("/users/alice")).status_code == 404
    await api.post("/users/bob")
    r = await api.patch("/users/alicia", json={"name": "bob"})
    assert r.status_code == 400 and "already exists" in r.json()["message"]
    for bad in ({"admin": "no"}, {"groups": "x"}, {"groups": ["nogroup"]}, {"bogus": 1}):
        assert (await api.patch("/users/alicia", json=bad)).status_code == 400, bad
    assert (await api.patch("/users/alicia")).status_code == 400  # body required
    assert (await api.delete("/users/alicia")).status_code == 204
    assert (await api.delete("/users/alicia")).status_code == 404
    assert (await api.delete("/users/admin")).status_code == 400  # not yourself


async def test_patch_groups_and_roles(api):
    await api.post("/users/carol")
    await api.post("/groups/g1")
    r = await api.patch("/users/carol", json={"groups": ["g1"]})
    assert r.json()["groups"] == ["g1"]
    r = await api.patch("/users/carol", json={"roles": ["user", "nosuch"]})
    assert r.status_code == 400
    r = await api.patch("/users/carol", json={"roles": ["admin", "user"]})
    assert r.status_code == 200 and r.json()["admin"] is True


async def test_paging_envelope(api):
    names = [f"u{i:03d}" for i in range(25)]
    await api.post("/users", json={"usernames": names})
    r = await api.get("/users", params={"limit": 10}, headers=PAGE)
    body = r.json()
    assert len(body["items"]) == 10
    page = body["_pagination"]
    assert page["total"] == 26 and page["offset"] == 0 and page["limit"] == 10
    assert page["next"]["offset"] == 10
    seen = [u["name"] for u in body["items"]]
    url = page["next"]["url"]
    while url:
        r = await api.get(url, headers=PAGE)
        seen += [u["name"] for u in r.json()["items"]]
        nxt = r.json()["_pagination"]["next"]
        url = nxt["url"] if nxt else None
    assert seen == ["admin", *names]
    assert (await api.get("/users", params={"limit": "x"})).status_code == 400
    # as in JupyterHub, a negative offset or limit counts as its absolute value
    r = await api.get("/users", params={"offset": -1})
    assert [u["name"] for u in r.json()] == seen[1:]
    r = await api.get("/users", params={"offset": 2**63})  # more than any database takes
    assert r.status_code == 400 and r.json()["message"] == "offset is too large"
    assert (await api.get("/users", params={"offset": 2**63 - 1})).json() == []
    # limit is clamped to api_page_max_limit
    r = await api.get("/users", params={"limit": 100000}, headers=PAGE)
    assert r.json()["_pagination"]["limit"] == 200


async def test_paging_total_follows_writes(api):
    """The total is remembered between pages, never past a write."""
    async def total() -> int:
        return (await api.get("/users", params={"limit": 1}, headers=PAGE)).json()[
            "_pagination"]["total"]

    assert await total() == 1
    await api.post("/users/one")
    assert await total() == 2
    await api.post("/users", json={"usernames": ["two", "three"]})
    assert await total() == 4
    assert (await api.delete("/users/two")).status_code == 204
    assert await total() == 3
    assert (await api.post("/users/one")).status_code == 409  # a failed write changes nothing
    assert await total() == 3


async def test_sort_state_and_name_filter(api):
    await api.post("/users", json={"usernames": ["zed", "amy", "Mia"]})
    r = await api.get("/users", params={"sort": "name"})
    assert [u["name"] for u in r.json()] == ["admin", "amy", "mia", "zed"]
    r = await api.get("/users", params={"sort": "-name"})
    assert [u["name"] for u in r.json()] == ["zed", "mia", "amy", "admin"]
    r = await api.get("/users", params={"name_filter": "M"})
    assert sorted(u["name"] for u in r.json()) == ["admin", "amy", "mia"]
    assert (await api.get("/users", params={"sort": "color"})).status_code == 400
    r = await api.get("/users", params={"state": "active"})
    assert r.json() == []
    r = await api.get("/users", params={"state": "inactive"})
    assert len(r.json()) == 4
    assert (await api.get("/users", params={"state": "sleepy"})).status_code == 400


async def test_activity(api):
    await api.post("/users/dave")
    when = (datetime.now(UTC) - timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    r = await api.post("/users/dave/activity", json={"last_activity": when})
    assert r.status_code == 200
    assert (await api.get("/users/dave")).json()["last_activity"].startswith(when[:19])
    older = (datetime.now(UTC) - timedelta(hours=5)).isoformat()
    await api.post("/users/dave/activity", json={"last_activity": older})
    assert (await api.get("/users/dave")).json()["last_activity"].startswith(when[:19])
    future = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    for body in ({}, {"last_activity": future}, {"last_activity": "yesterday"},
                 {"servers": {"nosuch": {"last_activity": when}}}):
        assert (await api.post("/users/dave/activity", json=body)).status_code == 400, body
    assert (await api.post("/users/ghost/activity", json={"last_activity": when})).status_code \
        == 404


async def test_only_admins_grant_admin(api):
    token = await new_token(api, "manager", scopes=[])
    await api.patch("/users/manager", json={"roles": ["user"]})
    # give manager admin:users through a role, but not admin
    r = await api.post("/roles", json={"name": "user-admins", "scopes": ["admin:users"],
                                        "users": ["manager"]})
    assert r.status_code == 201, r.text
    r = await api.post("/users/manager/tokens", json={"scopes": ["admin:users"]})
    token = r.json()["token"]
    from tests.conftest import client_for

    async with client_for(api._transport.app.state.hub, token) as manager:
        r = await manager.post("/users/newbie", json={"admin": True})
        assert r.status_code == 403
        r = await manager.post("/users/newbie")
        assert r.status_code == 201
        r = await manager.patch("/users/admin", json={"name": "x"})
        assert r.status_code == 403


async def test_sort_by_activity_puts_never_active_last_when_most_recent_first(api):
    await api.post("/users", json={"usernames": ["never", "jan", "feb"]})
    await api.post("/users/jan/activity", json={"last_activity": "2024-01-01T00:00:00Z"})
    await api.post("/users/feb/activity", json={"last_activity": "2024-02-01T00:00:00Z"})
    await api.post("/users/admin/activity", json={"last_activity": "2024-03-01T00:00:00Z"})
    # the admin page's "Most recently active": PostgreSQL would put NULLs first unasked
    r = await api.get("/users", params={"sort": "-last_activity"})
    assert [u["name"] for u in r.json()] == ["admin", "feb", "jan", "never"]
    r = await api.get("/users", params={"sort": "last_activity"})
    assert [u["name"] for u in r.json()] == ["never", "jan", "feb", "admin"]
    r = await api.get("/users", params={"sort": "-last_activity", "offset": 3, "limit": 1},
                      headers=PAGE)
    assert [u["name"] for u in r.json()["items"]] == ["never"]


async def test_names_every_database_holds(api):
    longest = "u" * 255  # the width of the name columns
    r = await api.post(f"/users/{longest}")
    assert r.status_code == 201 and r.json()["name"] == longest
    for bad in ("u" * 256, "nul\x00char", "tab\tchar"):
        r = await api.post("/users", json={"usernames": [bad]})
        assert r.status_code == 400 and "Invalid username" in r.json()["message"], bad
    r = await api.patch(f"/users/{longest}", json={"name": "v" * 256})
    assert r.status_code == 400 and "Invalid username" in r.json()["message"]
    assert (await api.get(f"/users/{longest}")).status_code == 200


# names that are paths once decoded (issue 12): refused wherever a name arrives
PATH_TRICKS = [".", "..", "%2e%2e", "%2E.", "%2e", "%252e%252e", "a/b", "a%2fb", "%2F",
               "x%00y", "nul\x00", "bell\x07", "line\nbreak", "%0d%0a"]
# names JupyterHub accepts, which must keep working
JUPYTERHUB_NAMES = ["first.last@example.com", "o'brien", "δοκιμή", "a+b", "...", "x.y",
                    "100%", "a b", "user-1_2"]


async def test_path_tricks_are_not_user_names(api):
    await api.post("/users/alice")
    for bad in PATH_TRICKS:
        r = await api.post("/users", json={"usernames": [bad]})
        assert r.status_code == 400, bad
        assert r.json()["status"] == 400 and "Invalid username" in r.json()["message"], bad
        r = await api.patch("/users/alice", json={"name": bad})
        assert r.status_code == 400 and "Invalid username" in r.json()["message"], bad
        # in a URL: '/' would be another path, and clients drop literal dot segments ('%2e'
        # and '%2e%2e' above arrive as '.' and '..' once the server decodes the path)
        if "/" not in bad and "%2f" not in bad.lower() and bad not in (".", ".."):
            r = await api.post(f"/users/{quote(bad, safe='')}")
            assert r.status_code == 400 and "Invalid username" in r.json()["message"], bad
    for raw in ("%2e%2e", "%2E", ".%2e"):  # decoded by the server: '..' and '.' as names
        r = await api.post(f"/users/{raw}")
        assert r.status_code == 400 and "Invalid username" in r.json()["message"], raw
    names = {u["name"] for u in (await api.get("/users")).json()}
    assert names == {"admin", "alice"}


async def test_jupyterhub_names_still_work(api):
    for name in JUPYTERHUB_NAMES:
        r = await api.post(f"/users/{quote(name, safe='')}")
        assert r.status_code == 201 and r.json()["name"] == name, name
    r = await api.post("/users", json={"usernames": ["bulk.one@example.org"]})
    assert r.status_code == 201
    r = await api.patch("/users/bulk.one@example.org", json={"name": "renamed.one"})
    assert r.status_code == 200 and r.json()["name"] == "renamed.one"


async def test_values_the_database_cannot_hold_are_the_requests_fault(api, hub):
    """Not a 500: a NUL character PostgreSQL refuses (SQLite keeps it) is a 400 there."""
    postgres = hub.session.kw["bind"].dialect.name == "postgresql"
    await api.post("/users/nina")
    refused = {"status": 400, "message": "a value in the request is not one the database can "
                                         "hold (too long, too large, or with a NUL character)"}
    r = await api.get("/users/nina%00x")
    assert (r.json() == refused) if postgres else r.status_code == 404
    r = await api.get("/users", params={"name_filter": "ni\x00"})
    assert (r.json() == refused) if postgres else r.json() == []
    r = await api.post("/users/nina/tokens", json={"note": "a\x00b"})
    assert (r.json() == refused) if postgres else r.status_code == 201
    # the request's transaction was rolled back and the hub carries on
    tokens = (await api.get("/users/nina/tokens")).json()["api_tokens"]
    assert len(tokens) == (0 if postgres else 1)
    assert (await api.get("/users/nina")).status_code == 200


async def test_times_are_utc_whatever_the_database_zone(api, db_url):
    """The test PostgreSQL runs at UTC+05:45: what the hub stores and shows is still UTC."""
    before = datetime.now(UTC).replace(tzinfo=None)
    r = await api.post("/users/tz")
    after = datetime.now(UTC).replace(tzinfo=None)
    created = datetime.fromisoformat(r.json()["created"].rstrip("Z"))
    assert before - timedelta(seconds=1) <= created <= after + timedelta(seconds=1)
    stored = raw_sql(db_url, "SELECT created FROM users WHERE name = 'tz'")
    assert str(stored)[:19] == str(created)[:19]  # SQLite gives text, PostgreSQL a datetime
