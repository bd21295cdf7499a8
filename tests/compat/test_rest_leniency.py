"""The REST API takes what JupyterHub takes: the empty server name, and the extra model keys
JupyterHub's handlers accept and ignore (``APIHandler._check_model``), against real hubs
and, for servers, real single-user processes."""

from __future__ import annotations

import pytest

from tests.conftest import ADMIN_TOKEN, client_for, new_token
from tests.spawners.conftest import server_row, sse_events


@pytest.mark.parametrize("named", [True, False])
async def test_empty_server_name_is_the_default_server(spawn_hub, uname, named):
    """JupyterHub routes ``/users/{name}/servers/`` (its own server-API example uses it) to
    the default server, for every method, named servers on or off."""
    hub = spawn_hub(allow_named_servers=named)
    alice = uname("alice")
    async with client_for(hub, ADMIN_TOKEN) as api:
        await api.post(f"/users/{alice}")
        r = await api.post(f"/users/{alice}/servers/")
        assert r.status_code == 201, r.text
        assert r.json()["name"] == "" and r.json()["url"] == f"/user/{alice}/"
        assert server_row(hub, alice, "")["state"]["pid"] > 0
        user = (await api.get(f"/users/{alice}")).json()
        assert user["server"] == f"/user/{alice}/" and list(user["servers"]) == [""]

        r = await api.get(f"/users/{alice}/servers/")
        assert r.status_code == 200 and r.json()["ready"] is True
        events = await sse_events(api, f"/users/{alice}/servers//progress")
        assert [e.get("ready") for e in events] == [True]
        assert (await api.get(f"/users/{alice}/servers//logs")).status_code == 200
        r = await api.post(f"/users/{alice}/servers/")
        assert r.status_code == 400 and "already running" in r.json()["message"]
        r = await api.put(f"/users/{alice}/servers/")  # JupyterHub: the default always exists
        assert r.status_code == 409

        assert (await api.delete(f"/users/{alice}/servers/")).status_code == 204
        assert (await api.get(f"/users/{alice}")).json()["server"] is None
        assert server_row(hub, alice, "")["url"] is None
        r = await api.patch(f"/users/{alice}/servers/", json={"user_options": {"a": 1}})
        assert r.status_code == 200 and r.json()["user_options"] == {"a": 1}
        r = await api.request("DELETE", f"/users/{alice}/servers/", json={"remove": True})
        assert r.status_code == 400 and "default server" in r.json()["message"]


async def test_empty_server_name_keeps_its_scopes(spawn_hub, uname):
    """The default server's scope filter (``!server=alice/``) applies to the new path too."""
    hub = spawn_hub()
    alice, bob = uname("alice"), uname("bob")
    async with client_for(hub, ADMIN_TOKEN) as api:
        await api.post(f"/users/{bob}")
        token = await new_token(api, alice, scopes=[f"servers!server={alice}/"])
    async with client_for(hub, token) as as_alice:
        assert (await as_alice.get(f"/users/{alice}/servers/")).status_code == 404  # none yet
        assert (await as_alice.post(f"/users/{bob}/servers/")).status_code == 404
        assert (await as_alice.post(f"/users/{alice}/servers/")).status_code == 201
        assert (await as_alice.post(f"/users/{alice}/servers/gpu")).status_code == 404
        assert (await as_alice.delete(f"/users/{alice}/servers/")).status_code == 204


async def test_seed_group_recipe_with_name_key(api):
    """The seeds post ``{"name": ..., "users": [...]}`` to ``/groups/{name}/users``;
    JupyterHub checks the body against its group model and uses only ``users``."""
    await api.post("/users", json={"usernames": ["user1", "user2", "user3"]})
    assert (await api.post("/groups/formgrade-data301")).status_code == 201
    r = await api.post("/groups/formgrade-data301/users",
                       json={"name": "formgrade-data301", "users": ["user1", "user2"]})
    assert r.status_code == 200, r.text
    assert r.json()["users"] == ["user1", "user2"]
    r = await api.request("DELETE", "/groups/formgrade-data301/users",
                          json={"name": "formgrade-data301", "users": ["user2"]})
    assert r.status_code == 200 and r.json()["users"] == ["user1"]
    # the whole model, on create and bulk create too; "name" in the body never renames
    r = await api.post("/groups/g2", json={"name": "other", "users": ["user3"], "roles": []})
    assert r.status_code == 201 and r.json()["name"] == "g2" and r.json()["users"] == ["user3"]
    r = await api.post("/groups", json={"groups": ["g3", "g4"], "name": "x", "users": ["user1"]})
    assert r.status_code == 201 and [g["name"] for g in r.json()] == ["g3", "g4"]
    assert (await api.get("/groups/x")).status_code == 404


async def test_ignored_model_keys_grant_nothing(api, hub):
    """``roles`` in a group or user body is accepted and ignored, as in JupyterHub: it must
    not become a way to grant a role (roles go through load_roles or the roles API)."""
    await api.post("/users/user1")
    r = await api.post("/groups/g1", json={"users": ["user1"], "roles": ["admin"]})
    assert r.status_code == 201 and r.json()["roles"] == []
    r = await api.post("/groups/g1/users", json={"users": ["user1"], "roles": ["admin"]})
    assert r.status_code == 200 and r.json()["roles"] == []
    r = await api.post("/users", json={"usernames": ["user2"], "roles": ["admin"],
                                       "groups": ["g1"], "auth_state": {"k": 1}})
    assert r.status_code == 201
    [model] = r.json()
    assert model["admin"] is False and model["roles"] == ["user"] and model["groups"] == []
    r = await api.post("/users/user3", json={"name": "user3", "roles": ["admin"],
                                             "groups": ["g1"]})
    assert r.status_code == 201 and r.json()["roles"] == ["user"] and r.json()["groups"] == []
    async with client_for(hub, await new_token(api, "user2")) as user2:
        assert (await user2.get("/users")).status_code == 403


@pytest.mark.parametrize(("path", "body", "fragment"), [
    ("/groups/g1/users", {"users": ["user1"], "colour": "red"}, "unknown field(s): colour"),
    ("/groups/g1/users", {"users": ["user1"], "name": 5}, "group.name must be str"),
    ("/groups/g1/users", {"users": ["user1"], "roles": "admin"}, "group.roles must be list"),
    ("/groups/g2", {"users": [], "properties": {}}, "unknown field(s): properties"),
    ("/users", {"usernames": ["u9"], "auth_state": "x"}, "user.auth_state must be dict"),
    ("/users/u9", {"groups": "g1"}, "user.groups must be list"),
    ("/users/u9", {"servers": {}}, "unknown field(s): servers"),
])
async def test_keys_outside_jupyterhub_models_are_refused(api, path, body, fragment):
    """What JupyterHub refuses (a key outside the model, a value of the wrong type) stays
    a 400 with JupyterHub's error body."""
    await api.post("/users/user1")
    await api.post("/groups/g1")
    r = await api.post(path, json=body)
    assert r.status_code == 400
    assert r.json() == {"status": 400, "message": r.json()["message"]}
    assert fragment in r.json()["message"]


async def test_token_request_ignores_unknown_fields(api):
    """JupyterHub reads the token fields it knows and ignores the rest."""
    await api.post("/users/bob")
    r = await api.post("/users/bob/tokens", json={"note": "for ci", "colour": "red",
                                                  "scopes": ["read:users!user=bob"]})
    assert r.status_code == 201, r.text
    assert r.json()["note"].startswith("for ci")
    assert r.json()["scopes"] == ["read:users!user=bob"]


async def test_service_body_may_carry_its_name(api):
    """JupyterHub sets the body's ``name`` from the URL before checking the service model."""
    r = await api.post("/services/ext", json={"name": "other", "url": "http://127.0.0.1:9"})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "ext"
    assert (await api.get("/services/other")).status_code == 404


async def test_api_root_with_and_without_slash(hub):
    async with client_for(hub) as anonymous:
        for path in ("", "/"):
            r = await anonymous.get(path)
            assert r.status_code == 200 and "version" in r.json()


async def test_query_parameters_as_jupyterhub_reads_them(api):
    """Paging takes absolute values, any ``include_stopped_servers`` value but 0/false is
    true, and the pagination media type is matched without regard to case."""
    await api.post("/users", json={"usernames": [f"u{i}" for i in range(6)]})
    page = {"Accept": "Application/JupyterHub-Pagination+JSON"}
    r = await api.get("/users", params={"offset": -2, "limit": -3}, headers=page)
    assert r.status_code == 200
    assert r.json()["_pagination"]["offset"] == 2 and r.json()["_pagination"]["limit"] == 3
    assert [u["name"] for u in r.json()["items"]] == ["u1", "u2", "u3"]
    for value in ("1", "True", "2", "all"):
        r = await api.get("/users/u0", params={"include_stopped_servers": value})
        assert r.status_code == 200, value
    assert (await api.get("/users", params={"offset": "x"})).status_code == 400


async def test_prometheus_metrics_as_jupyterhub_names_them(make_hub):
    """``/hub/metrics`` and ``/hub/api/metrics`` serve JupyterHub's gauges; scraping needs
    ``read:metrics`` unless ``authenticate_prometheus`` is off."""
    hub = make_hub()
    async with client_for(hub, ADMIN_TOKEN) as api:
        await api.post("/users", json={"usernames": ["u1", "u2"]})
        await api.post("/users/u1/activity", json={"last_activity": "2020-01-01T00:00:00Z"})
        user_token = await new_token(api, "u2")
        for url in ("/metrics", "http://127.0.0.1:8081/hub/metrics"):
            r = await api.get(url)
            assert r.status_code == 200, url
            assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
            lines = r.text.splitlines()
            assert "# TYPE jupyterhub_total_users gauge" in lines
            assert "jupyterhub_total_users 3.0" in lines  # admin, u1, u2
            assert "jupyterhub_running_servers 0.0" in lines
            assert 'jupyterhub_active_users{period="30d"} 1.0' in lines  # the admin's token
    async with client_for(hub, user_token) as user:
        r = await user.get("/metrics")
        assert r.status_code == 403 and "read:metrics" in r.json()["message"]
    async with client_for(hub) as anonymous:
        assert (await anonymous.get("/metrics")).status_code == 403
    open_hub = make_hub(authenticate_prometheus=False)
    async with client_for(open_hub) as anonymous:
        assert (await anonymous.get("/metrics")).status_code == 200


async def test_json_null_body_is_no_body(api):
    """JupyterHub reads a body of ``null`` as none where a body is optional."""
    r = await api.post("/users/carl", content=b"null")
    assert r.status_code == 201 and r.json()["name"] == "carl"
    assert (await api.post("/groups/nulls", content=b"null")).status_code == 201
    r = await api.post("/users/carl/tokens", content=b"null")
    assert r.status_code == 201
    r = await api.post("/groups/nulls/users", content=b"null")  # the body is required here
    assert r.status_code == 400
