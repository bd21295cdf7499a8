"""/services, /roles, /info, /, /health, /shutdown and /user."""

from __future__ import annotations

from traitlets.config import Config

from tests.conftest import ADMIN_TOKEN, client_for, new_token


async def test_root_health_info(api, hub):
    async with client_for(hub) as anon:
        r = await anon.get("/")
        assert r.status_code == 200 and "version" in r.json()
        assert r.headers["access-control-allow-origin"] == "*"
        assert r.headers["x-jupyterhub-version"] == r.json()["version"]
        assert (await anon.get("/health")).status_code == 200
        assert (await anon.head("/health")).status_code == 200
        assert (await anon.get("/info")).status_code == 403
        r = await anon.get("/no/such/endpoint")
        assert r.status_code == 404 and r.json()["status"] == 404
    info = (await api.get("/info")).json()
    assert info["authenticator"]["class"].endswith("DummyAuthenticator")
    assert info["sys_executable"] and info["python"]
    r = await api.delete("/info")
    assert r.status_code == 405 and r.json()["status"] == 405


async def test_shutdown(api, hub):
    assert (await api.post("/shutdown", json={"proxy": "yes"})).status_code == 400
    assert not hub.shutdown_event.is_set()
    token = await new_token(api, "plain")
    async with client_for(hub, token) as plain:
        assert (await plain.post("/shutdown")).status_code == 403
    r = await api.post("/shutdown", json={"servers": False})
    assert r.status_code == 202 and r.json() == {"message": "Shutting down Hub"}
    assert hub.shutdown_event.is_set() and hub.shutdown_options == {"servers": False}


async def test_user_identity_scopes(api, hub):
    token = await new_token(api, "frank")
    async with client_for(hub, token) as frank:
        me = (await frank.get("/user")).json()
    assert me["name"] == "frank" and me["kind"] == "user"
    assert "read:users!user=frank" in me["scopes"]
    assert "servers!user=frank" in me["scopes"]
    assert all("admin" not in s for s in me["scopes"])
    assert me["session_id"] is None and me["token_id"].startswith("a")
    # a token with no scopes still identifies its owner
    r = await api.post("/users/frank/tokens", json={"scopes": []})
    async with client_for(hub, r.json()["token"]) as bare:
        me = (await bare.get("/user")).json()
        assert me["name"] == "frank" and me["scopes"] == []
        assert me["groups"] == []


def _services_config() -> Config:
    c = Config()
    c.Courtyard.services = [
        {"name": "culler", "api_token": "culler-token-123", "admin": True},
        {"name": "grader", "url": "http://127.0.0.1:10101", "info": {"k": "v"}},
    ]
    c.Courtyard.load_roles = [
        {"name": "grader-role", "scopes": ["read:users"], "services": ["grader"]},
    ]
    return c


async def test_services(make_hub):
    hub = make_hub(_services_config())
    async with client_for(hub, ADMIN_TOKEN) as api:
        r = await api.get("/services")
        assert r.status_code == 200 and set(r.json()) == {"culler", "grader"}
        grader = r.json()["grader"]
        assert grader["kind"] == "service" and grader["prefix"] == "/services/grader/"
        assert grader["roles"] == ["grader-role"] and grader["info"] == {"k": "v"}
        assert (await api.get("/services/nope")).status_code == 404
        r = await api.post("/services/extra", json={"url": "http://127.0.0.1:1", "admin": "x"})
        assert r.status_code == 400
        assert (await api.post("/services/extra", json={"command": ["x"]})).status_code == 400
        r = await api.post("/services/extra", json={"url": "http://127.0.0.1:1",
                                                    "api_token": "extra-token-123"})
        assert r.status_code == 201 and r.json()["name"] == "extra"
        assert (await api.post("/services/extra", json={})).status_code == 409
        async with client_for(hub, "extra-token-123") as svc:
            me = (await svc.get("/user")).json()
            assert me["kind"] == "service" and me["name"] == "extra"
        assert (await api.delete("/services/grader")).status_code == 405
        assert (await api.delete("/services/extra")).status_code == 200
        assert (await api.get("/services/extra")).status_code == 404
    async with client_for(hub, "culler-token-123") as culler:
        me = (await culler.get("/user")).json()
        assert me["kind"] == "service" and me["admin"] is True
        assert (await culler.get("/users")).status_code == 200


async def test_roles_api(make_hub):
    hub = make_hub(_services_config())
    async with client_for(hub, ADMIN_TOKEN) as api:
        names = {r["name"] for r in (await api.get("/roles")).json()}
        assert {"user", "admin", "server", "token", "grader-role"} <= names
        await api.post("/users/gina")
        r = await api.post("/roles", json={"name": "user-listers", "scopes": ["list:users"],
                                           "users": ["gina"], "description": "can list"})
        assert r.status_code == 201 and r.json()["managed_by"] == "api"
        token = await new_token(api, "gina")
        async with client_for(hub, token) as gina:
            assert (await gina.get("/users")).status_code == 200
            assert (await gina.get("/roles")).status_code == 403
            r = await api.patch("/roles/user-listers", json={"users": []})
            assert r.status_code == 200
            assert (await gina.get("/users")).status_code == 403
        assert (await api.post("/roles", json={"name": "user-listers"})).status_code == 409
        for bad in ({"name": "X"}, {"name": "ok-name", "scopes": ["nope"]},
                    {"name": "ok-name", "scopes": ["read:users!planet=x"]},
                    {"name": "ok-name", "users": ["ghost"]}, {"name": "ok-name", "x": 1}):
            assert (await api.post("/roles", json=bad)).status_code == 400, bad
        assert (await api.get("/roles/ok-name")).status_code == 404
        r = await api.patch("/roles/grader-role", json={"scopes": []})
        assert r.status_code == 403 and "config" in r.json()["message"]
        assert (await api.delete("/roles/admin")).status_code == 403
        assert (await api.delete("/roles/user-listers")).status_code == 204
        assert (await api.get("/roles/user-listers")).status_code == 404
