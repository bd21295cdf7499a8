"""Assemble the hub's ASGI application from each subsystem's route list."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from ..api import groups, info, openapi, roles, services, shares, tokens, users
from ..api.base import error_response

if TYPE_CHECKING:
    from ..app import Hub

API_MODULES = [info, users, tokens, groups, services, roles, shares, openapi]


def api_routes() -> list[Route]:
    routes: list[Route] = []
    for module in API_MODULES:
        routes.extend(module.routes)
    return routes


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: "Not Found", 405: "Method Not Allowed"}.get(exc.status_code, exc.detail)
    return error_response(exc.status_code, f"{message}: {request.method} {request.url.path}")


def build_app(hub: Hub, extra_routes: list[Route] | None = None) -> Starlette:
    base = hub.options.base_url
    routes = [
        Mount(f"{base}hub/api", routes=api_routes()),
        Route(f"{base}hub/health", info.health, methods=["GET", "HEAD"]),
        *(extra_routes or []),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    app.state.hub = hub
    return app
