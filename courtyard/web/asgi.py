"""Assemble the hub's ASGI application from each subsystem's route list."""

from __future__ import annotations

from typing import Protocol
from urllib.parse import urlsplit

from sqlalchemy.exc import DataError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send

from ..api import groups, info, metrics, openapi, proxy, roles, servers, services, shares, tokens, users
from ..api.base import Hub as ApiHub, error_response
from ..api.dispatch import ApiDispatcher
from ..compat.handlers import PluginRoute
from ..oauth import routes as oauth
from ..subdomains import HubHostOnly
from . import admin, login, pages, sharing, spawn, user_redirect
from .csp import SecurityHeaders, page_headers, with_page_headers
from .forwarded import ForwardedClient
from .limits import BodyTooLarge, Refusal
from .refresh import RefreshAuth


class Hub(ApiHub, Protocol):
    """What the app needs of the hub: what its API endpoints need, which includes what its
    pages need (:class:`courtyard.web.hub.Hub`), and where the hub listens (a proxy on its
    own address is trusted to forward clients' addresses). Handed the hub here, mypy checks
    it against both; the endpoints and pages then read it from ``app.state.hub``."""

    @property
    def hub_bind(self) -> tuple[str, int]: ...


API_MODULES = [info, users, servers, tokens, groups, services, roles, shares, proxy, oauth, openapi,
               metrics]


def api_routes() -> list[Route]:
    routes: list[Route] = []
    for module in API_MODULES:
        routes.extend(module.routes)
    return routes


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if pages.is_page_path(request.app.state.hub.options.base_url, request.url.path):
        return await pages.http_error_page(request, exc)
    message = {404: "Not Found", 405: "Method Not Allowed"}.get(exc.status_code, exc.detail)
    return error_response(exc.status_code, f"{message}: {request.method} {request.url.path}")


async def _too_large(request: Request, exc: Exception) -> Response:
    """413: the body was cut off at the limit while an endpoint or page read it."""
    assert isinstance(exc, BodyTooLarge)
    if pages.is_page_path(request.app.state.hub.options.base_url, request.url.path):
        return await pages.http_error_page(request, HTTPException(413, exc.message, exc.headers))
    return error_response(413, exc.message, exc.headers)


def body_refusal(app: Starlette, base_url: str) -> Refusal:
    """How the hub answers a body over its limit: JupyterHub's JSON in the API, the error
    page elsewhere, and the connection closed after it."""
    headers = page_headers(base_url)

    async def refuse(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        scope.setdefault("app", app)
        response = await _too_large(Request(scope, receive, send), BodyTooLarge(limit))
        await response(scope, receive, with_page_headers(send, headers))

    return refuse


def build_app(hub: Hub, extra_routes: list[Route] | None = None) -> ApiDispatcher:
    """Starlette serves everything; API endpoints get a shortcut to it (see api/dispatch.py)."""
    base = hub.options.base_url
    # last: what JupyterHub plugins add to its API (batchspawner's port report), run as
    # JupyterHub would (courtyard/compat/handlers.py); paths Courtyard serves stay its own
    api = [*login.api_routes(hub), *api_routes()]
    api.append(PluginRoute(api))
    routes = [
        Mount(f"{base}hub/api", routes=api),
        Route(f"{base}hub/health", info.health, methods=["GET", "HEAD"]),
        Route(f"{base}hub/metrics", metrics.metrics, methods=["GET"]),  # JupyterHub has both
        *login.routes(hub),
        *oauth.page_routes(hub),
        *sharing.routes(base),
        *user_redirect.routes(base),
        *pages.routes(base),
        *spawn.routes(base),
        *admin.routes(base),
        *(extra_routes or []),
    ]
    # HubHostOnly: no hub page (nor its cookies) on a user's origin (subdomain_host)
    # RefreshAuth: a page's user is asked again after auth_refresh_age (refresh_user)
    app = Starlette(routes=routes, middleware=[Middleware(HubHostOnly, origins=hub.origins),
                                               Middleware(SecurityHeaders, base_url=base),
                                               Middleware(RefreshAuth)],
                    exception_handlers={HTTPException: _http_error,
                                        BodyTooLarge: _too_large,
                                        DataError: pages.refused_value_page,
                                        Exception: pages.server_error_page})
    app.state.hub = hub
    opts = hub.options
    own = [hub.hub_bind[0], urlsplit(opts.hub_connect_url).hostname or ""]
    return ApiDispatcher(app, f"{base}hub/api", api, base, opts.api_max_body_size,
                         opts.form_max_body_size, body_refusal(app, base),
                         ForwardedClient(opts.trusted_downstream_ips, own))
