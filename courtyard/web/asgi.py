"""Assemble the hub's ASGI application from each subsystem's route list."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.exc import DataError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from ..api import groups, info, openapi, proxy, roles, servers, services, shares, tokens, users
from ..api.base import error_response
from ..api.dispatch import ApiDispatcher
from ..oauth import routes as oauth
from . import admin, login, pages, sharing, spawn, user_redirect
from .csp import SecurityHeaders

if TYPE_CHECKING:
    from ..app import Hub

API_MODULES = [info, users, servers, tokens, groups, services, roles, shares, proxy, oauth, openapi]


def api_routes() -> list[Route]:
    routes: list[Route] = []
    for module in API_MODULES:
        routes.extend(module.routes)
    return routes


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if pages.is_page_path(request.app.state.hub, request.url.path):
        return await pages.http_error_page(request, exc)
    message = {404: "Not Found", 405: "Method Not Allowed"}.get(exc.status_code, exc.detail)
    return error_response(exc.status_code, f"{message}: {request.method} {request.url.path}")


def build_app(hub: Hub, extra_routes: list[Route] | None = None) -> ApiDispatcher:
    """Starlette serves everything; API endpoints get a shortcut to it (see api/dispatch.py)."""
    base = hub.options.base_url
    api = login.api_routes(hub) + api_routes()
    routes = [
        Mount(f"{base}hub/api", routes=api),
        Route(f"{base}hub/health", info.health, methods=["GET", "HEAD"]),
        *login.routes(hub),
        *oauth.page_routes(hub),
        *sharing.routes(hub),
        *user_redirect.routes(hub),
        *pages.routes(hub),
        *spawn.routes(hub),
        *admin.routes(hub),
        *(extra_routes or []),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(SecurityHeaders, base_url=base)],
                    exception_handlers={HTTPException: _http_error,
                                        DataError: pages.refused_value_page,
                                        Exception: pages.server_error_page})
    app.state.hub = hub
    return ApiDispatcher(app, f"{base}hub/api", api, base)
