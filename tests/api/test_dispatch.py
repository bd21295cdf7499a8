"""The API's shortcut past Starlette's route scan (api/dispatch.py): for the same request it
answers exactly as Starlette's routing does, and the app's middleware, given to Starlette or
added to it later, wraps the endpoints it reaches as it wraps everything else."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from courtyard.api.base import Ctx, endpoint
from courtyard.api.dispatch import ApiDispatcher
from courtyard.app import Hub
from tests.conftest import ADMIN_TOKEN


@endpoint(public=True)
async def item(ctx: Ctx) -> Any:
    return {"item": ctx.arg("name"), "path": ctx.request.url.path,
            "root_path": ctx.request.scope["root_path"]}


@endpoint(public=True, status=201)
async def made(ctx: Ctx) -> Any:
    return await ctx.body() or {}


@endpoint(public=True)
async def page(ctx: Ctx) -> Any:
    return HTMLResponse("<p>hi</p>")


@endpoint(public=True)
async def fails(ctx: Ctx) -> Any:
    raise RuntimeError("boom")


async def plain(request: Request) -> Response:
    return PlainTextResponse("plain " + request.url.path)


ROUTES = [
    Route("/items/special", plain, methods=["GET"]),
    Route("/items/{name}", item, methods=["GET"]),
    Route("/items/{name}", made, methods=["POST"]),
    Route("/page", page),
    Route("/fails", fails),
    Route("/{any}/tail", item),
]


class Marker:
    """Adds ``x-marked: <name>`` (outermost first) to every answer."""

    def __init__(self, app: ASGIApp, name: str) -> None:
        self.app, self.name = app, name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message["headers"],
                                      (b"x-marked", self.name.encode())]
            await send(message)

        await self.app(scope, receive, marked)


class Refuse:
    """Answers 418 itself for paths containing ``refused``: the endpoint never runs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "refused" in scope["path"]:
            await JSONResponse({"refused": True}, status_code=418)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def apps(middleware: list[Middleware] | None = None) -> tuple[ApiDispatcher, Starlette]:
    """The dispatcher in front of a Starlette app, and the same Starlette app alone."""
    starlette = Starlette(routes=[Mount("/hub/api", routes=ROUTES)], middleware=middleware)
    starlette.state.hub = object()
    return ApiDispatcher(starlette, "/hub/api", ROUTES, "/"), starlette


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                             base_url="http://test")


REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/hub/api/items/abc", {}),
    ("GET", "/hub/api/items/a%20b", {}),
    ("HEAD", "/hub/api/items/abc", {}),
    ("POST", "/hub/api/items/abc", {"json": {"x": 1}}),
    ("POST", "/hub/api/items/abc", {"content": b"not json"}),
    ("DELETE", "/hub/api/items/abc", {}),  # 405
    ("GET", "/hub/api/items/special", {}),  # an earlier route wins
    ("GET", "/hub/api/zzz/tail", {}),
    ("GET", "/hub/api/page", {}),
    ("GET", "/hub/api/fails", {}),
    ("GET", "/hub/api/nothing", {}),  # 404
    ("GET", "/hub/api/items/abc/", {}),  # a trailing slash: Starlette's redirect
    ("GET", "/hub/apixyz", {}),
    ("GET", "/elsewhere", {}),
]


def comparable(r: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = sorted((k, v) for k, v in r.headers.items() if k not in ("date", "server"))
    return r.status_code, headers, r.content


async def test_it_answers_each_request_as_starlette_does() -> None:
    dispatcher, starlette = apps([Middleware(Marker, name="outer")])
    async with client(dispatcher) as fast, client(starlette) as routed:
        for method, path, kwargs in REQUESTS:
            a = await fast.request(method, path, **kwargs)
            b = await routed.request(method, path, **kwargs)
            assert comparable(a) == comparable(b), (method, path)
            assert a.headers.get("x-marked") == "outer", (method, path)
    assert dispatcher.match("GET", "/items/abc") is not None  # it did take the shortcut


async def test_middleware_added_to_the_app_wraps_the_endpoints() -> None:
    dispatcher, starlette = apps([Middleware(Marker, name="given")])
    starlette.add_middleware(Marker, name="added")  # before the first request, as Starlette allows
    starlette.add_middleware(Refuse)
    async with client(dispatcher) as fast:
        r = await fast.get("/hub/api/items/abc")
        assert r.status_code == 200 and r.json()["item"] == "abc"
        # the innermost middleware marks first: added last, outermost
        assert r.headers.get_list("x-marked") == ["given", "added"]
        r = await fast.get("/hub/api/items/refused")
        assert r.status_code == 418 and r.json() == {"refused": True}
    # after the first request, both ways refuse more middleware, as Starlette alone does
    with pytest.raises(RuntimeError):
        starlette.add_middleware(Marker, name="late")


async def test_the_endpoint_sees_the_mounts_path() -> None:
    dispatcher, starlette = apps()
    async with client(dispatcher) as fast, client(starlette) as routed:
        for http in (fast, routed):
            assert (await http.get("/hub/api/items/x")).json() == {
                "item": "x", "path": "/hub/api/items/x", "root_path": "/hub/api"}


async def test_a_hubs_middleware_reaches_its_api(make_hub: Callable[..., Hub]) -> None:
    hub = make_hub(subdomain_host="http://localhost:8000")
    hub.asgi.app.add_middleware(Marker, name="hub")
    async with client(hub.asgi) as http:
        r = await http.get("http://127.0.0.1:8081/hub/api/users/admin",
                           headers={"Authorization": f"token {ADMIN_TOKEN}"})
        assert r.status_code == 200 and r.headers["x-marked"] == "hub"
        # HubHostOnly holds for the API too: nothing of the hub answers on a user's origin
        r = await http.post("http://alice.localhost:8000/hub/api/users/bob",
                            headers={"Authorization": f"token {ADMIN_TOKEN}"})
        assert r.status_code == 421
        r = await http.get("http://127.0.0.1:8081/hub/api/users/bob",
                           headers={"Authorization": f"token {ADMIN_TOKEN}"})
        assert r.status_code == 404
