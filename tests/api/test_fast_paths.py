"""The API's fast paths: the shortcut past Starlette (api/dispatch.py) answers as Starlette
would, and user snapshots (served by GET /users/{name}, GET /user and pages of GET /users)
stay true through writes that drop only some of them, or all."""

from __future__ import annotations

import re

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route

from courtyard.api.base import endpoint
from courtyard.api.dispatch import ApiDispatcher
from courtyard.web.csp import SecurityHeaders
from tests.conftest import ADMIN_TOKEN, new_token

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$")


@endpoint(public=True)
async def fast_item(ctx):
    return {"item": ctx.arg("name")}


@endpoint(public=True)
async def fast_page(ctx):
    return HTMLResponse("<p>hi</p>")


async def slow_item(request: Request) -> Response:
    return PlainTextResponse("slow " + request.url.path.rsplit("/", 1)[-1])


def _app(routes: list[Route]) -> tuple[ApiDispatcher, Starlette]:
    # the hub's middleware that sets the pages' headers: the shortcut runs it too
    starlette = Starlette(routes=[Mount("/hub/api", routes=routes)],
                          middleware=[Middleware(SecurityHeaders)])
    starlette.state.hub = object()
    return ApiDispatcher(starlette, "/hub/api", routes, "/"), starlette


def test_match_keeps_starlettes_order_and_methods():
    routes = [
        Route("/items/special", slow_item, methods=["GET"]),
        Route("/items/{name}", fast_item, methods=["GET"]),
        Route("/other/{name}", slow_item, methods=["POST"]),
        Route("/other/{name}", fast_item, methods=["GET"]),
        Route("/{anything}/tail", fast_item, methods=["GET"]),
    ]
    dispatcher, _ = _app(routes)
    route, params = dispatcher.match("GET", "/items/abc")
    assert route.endpoint is fast_item and params == {"name": "abc"}
    # a route listed first is Starlette's to answer, even though a fast one also matches
    assert dispatcher.match("GET", "/items/special") is None
    # a method listed for another route only: Starlette decides (405 or the other route)
    assert dispatcher.match("DELETE", "/items/abc") is None
    assert dispatcher.match("POST", "/other/x") is None
    assert dispatcher.match("GET", "/other/x")[1] == {"name": "x"}
    assert dispatcher.match("HEAD", "/other/x") is not None  # GET routes answer HEAD
    # a first segment that is a parameter is tried for every path
    assert dispatcher.match("GET", "/zzz/tail")[1] == {"anything": "zzz"}
    assert dispatcher.match("GET", "/items/tail")[1] == {"name": "tail"}  # listed first
    assert dispatcher.match("GET", "/nowhere") is None


async def test_dispatcher_and_starlette_answer_alike():
    routes = [Route("/items/special", slow_item), Route("/items/{name}", fast_item),
              Route("/page", fast_page)]
    dispatcher, starlette = _app(routes)
    for app in (dispatcher, starlette):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://test/hub/api") as client:
            r = await client.get("/items/abc")
            assert r.status_code == 200 and r.json() == {"item": "abc"}
            assert r.headers["x-jupyterhub-version"]
            assert (await client.get("/items/special")).text == "slow special"
            assert (await client.post("/items/abc")).status_code == 405
            assert (await client.get("/nothing/here")).status_code == 404
    # an HTML answer through the shortcut still gets the pages' security headers
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=dispatcher),
                                 base_url="http://test/hub/api") as client:
        r = await client.get("/page")
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert r.headers["cache-control"] == "no-store"


async def test_unknown_api_paths_keep_jupyterhubs_errors(api):
    r = await api.get("/no-such-thing")
    assert r.status_code == 404 and r.json()["status"] == 404
    r = await api.put("/users")
    assert r.status_code == 405 and r.json()["status"] == 405


async def test_times_are_iso_with_z(api):
    await new_token(api, "alice")
    for model in [(await api.get("/users/alice")).json(), (await api.get("/user")).json(),
                  *(await api.get("/users")).json()]:
        assert ISO_Z.match(model["created"]), model
        assert model["last_activity"] is None or ISO_Z.match(model["last_activity"]), model


async def test_token_use_updates_only_its_users_snapshot(api, client, hub):
    token = await new_token(api, "alice")
    await api.post("/users/bob")
    alice = (await api.get("/users/alice")).json()
    assert alice["last_activity"] is None
    assert (await api.get("/users/bob")).status_code == 200
    async with client(hub, token) as as_alice:
        me = (await as_alice.get("/user")).json()
    # the token's first use wrote alice's activity: her snapshot was dropped and read again,
    # bob's was left alone
    assert ISO_Z.match(me["last_activity"])
    assert (await api.get("/users/alice")).json() == {
        k: v for k, v in me.items() if k not in ("scopes", "session_id", "token_id")} | {"auth_state": None}
    assert "bob" in hub.records._users


async def test_renaming_a_user_drops_every_snapshot(api, hub):
    await api.post("/users/alice")
    await api.post("/users/bob")
    assert (await api.get("/users/alice")).status_code == 200
    assert (await api.get("/users/bob")).status_code == 200
    r = await api.patch("/users/alice", json={"name": "carol"})
    assert r.status_code == 200, r.text
    assert (await api.get("/users/alice")).status_code == 404
    assert (await api.get("/users/carol")).json()["name"] == "carol"
    assert (await api.get("/users/bob")).status_code == 200


async def test_pages_from_snapshots_follow_every_write(api):
    for name in ("alice", "bob", "carol"):
        await api.post(f"/users/{name}")

    async def listed() -> dict[str, dict]:
        return {u["name"]: u for u in (await api.get("/users", params={"limit": 2})).json()
                + (await api.get("/users", params={"offset": 2, "limit": 2})).json()}

    assert set(await listed()) == {"admin", "alice", "bob", "carol"}  # now in memory
    await api.patch("/users/bob", json={"admin": True})  # one user's own column
    await api.post("/groups/team", json={"users": ["carol"]})  # a group: every snapshot
    await api.delete("/users/alice")
    users = await listed()
    assert set(users) == {"admin", "bob", "carol"}
    assert users["bob"]["admin"] is True and users["carol"]["groups"] == ["team"]
    r = await api.get("/users", params={"sort": "-name", "limit": 1})
    assert [u["name"] for u in r.json()] == ["carol"]


async def test_api_below_a_base_url(make_hub):
    hub = make_hub(base_url="/jh/")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=hub.asgi),
                                 base_url="http://127.0.0.1:8081",
                                 headers={"Authorization": f"token {ADMIN_TOKEN}"}) as client:
        for name in ("alice", "bob"):
            assert (await client.post(f"/jh/hub/api/users/{name}")).status_code == 201
        r = await client.get("/jh/hub/api/users", params={"limit": 1},
                             headers={"Accept": "application/jupyterhub-pagination+json"})
        assert r.status_code == 200 and [u["name"] for u in r.json()["items"]] == ["admin"]
        assert r.json()["_pagination"]["next"]["url"].startswith(
            "http://127.0.0.1:8081/jh/hub/api/users?")
        r = await client.get("/jh/hub/api/users/bob")
        assert r.status_code == 200 and r.json()["name"] == "bob"
        assert (await client.get("/hub/api/users/bob")).status_code == 404
