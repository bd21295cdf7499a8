"""The pages people use: ``/hub/``, home, tokens, "server not running", errors, the logo.

Pages read the database to render; every change they offer (start, stop, rename, delete,
tokens) is made by the page's script through the REST API with the session cookie and the
XSRF token, so the API's permission checks and error messages are the only ones.
The spawn pages are in :mod:`courtyard.web.spawn`, the admin page in :mod:`courtyard.web.admin`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict
from urllib.parse import quote

import orjson
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ..auth import session as sess
from ..auth.identity import Identity, groups_of
from ..auth.scopes import Target, scope_allows
from ..db import queries
from ..db.models import Server, User
from .csp import csp_report
from .render import STATIC_DIR, Page, login_redirect, signed_in

if TYPE_CHECKING:
    from .hub import Hub

log = logging.getLogger("courtyard.web")

ERROR_MESSAGES = {
    400: "The request was not understood.",
    403: "You are not allowed to see this page.",
    404: "There is nothing at this address.",
    405: "This page does not take that kind of request.",
    500: "Something went wrong in the hub. The administrators can find the details in its log.",
    502: "The server behind this address sent a broken answer.",
    503: "The server behind this address is not answering. It may have stopped, or still be "
         "starting.",
}


# -- helpers every page module uses ---------------------------------------------------------
def identity(page: Page) -> Identity:
    """What the signed-in user may do (all of their own scopes, as for API calls)."""
    assert page.user is not None
    return sess.cookie_identity(page.hub, page.db, page.user, page.sid)


def may(page: Page, scopes: tuple[str, ...], user: str, server: str | None = None) -> bool:
    """Whether the signed-in user holds one of ``scopes`` on ``user`` (or their server)."""
    ident = identity(page)
    target = Target(user=user, server=None if server is None else f"{user}/{server}")
    return any(scope_allows(ident.parsed.get(s), target, lambda u: groups_of(page.db, u))
               for s in scopes)


def holds(page: Page, scope: str) -> bool:
    """Whether the signed-in user holds ``scope`` on anything at all."""
    return identity(page).has_any([scope])


def api_path(user: str, server: str = "") -> str:
    """``users/NAME/server`` or ``users/NAME/servers/SERVER`` (below ``/hub/api/``)."""
    name = quote(user, safe="@~")
    return f"users/{name}/servers/{quote(server, safe='')}" if server else f"users/{name}/server"


def spawn_url(page: Page, user: str, server: str = "") -> str:
    path = f"spawn/{quote(user, safe='@~')}"
    return page.url(path + (f"/{quote(server, safe='')}" if server else ""))


def pending_url(page: Page, user: str, server: str = "") -> str:
    path = f"spawn-pending/{quote(user, safe='@~')}"
    return page.url(path + (f"/{quote(server, safe='')}" if server else ""))


def iso(dt: datetime | None) -> str:
    return dt.isoformat(timespec="seconds") + "Z" if dt else ""


class Nav(TypedDict):
    can_admin: bool
    logo_url: str


def nav(page: Page) -> Nav:
    """Template variables of the shared layout: which links the navigation shows."""
    return {"can_admin": page.user is not None and holds(page, "admin-ui"),
            "logo_url": page.url("logo")}


def server_state(page: Page, user: str, server: Server | None, name: str) -> str:
    """``ready``, ``spawn``, ``stop``, ``check`` or ``stopped``."""
    pending = page.hub.lifecycle.pending(user, name)
    if pending:
        return pending
    return "ready" if server is not None and server.url is not None else "stopped"


class ServerView(TypedDict):
    """What the home and spawn pages show of one server."""

    name: str
    display_name: str
    state: str
    url: str
    api_path: str
    spawn_url: str
    pending_url: str
    last_activity: str
    started: str
    failure: str | None


def server_view(page: Page, user: User, server: Server | None, name: str) -> ServerView:
    """What the home and spawn pages show of one server."""
    hub = page.hub
    state = server_state(page, user.name, server, name)
    return {
        "name": name,
        "display_name": (server.display_name if server else "") or name,
        "state": state,
        "url": hub.server_url(user.name, name),
        "api_path": api_path(user.name, name),
        "spawn_url": spawn_url(page, user.name, name),
        "pending_url": pending_url(page, user.name, name),
        "last_activity": iso(server.last_activity if server else None),
        "started": iso(server.started if server else None) if state == "ready" else "",
        "failure": hub.lifecycle.failure(user.name, name) if state == "stopped" else None,
    }


async def named_server_limit(page: Page) -> int:
    limit = page.hub.options.named_server_limit_per_user
    if callable(limit):
        limit = limit(page)
        if inspect.isawaitable(limit):
            limit = await limit
    return int(limit or 0)


# -- /hub/ and /hub/home --------------------------------------------------------------------
async def site_root(request: Request) -> Response:
    """``{base_url}``, where the README sends people: the hub lives under ``hub/``."""
    hub: Hub = request.app.state.hub
    return RedirectResponse(f"{hub.options.base_url}hub/", status_code=302)


def default_url(hub: Hub, user: User) -> str:
    """``default_url``, or what JupyterHub's form of it returns: a callable of the request
    handler, which reads ``handler.current_user`` (name, admin, groups)."""
    value: str | Callable[[Any], str] = hub.options.default_url
    if not callable(value):
        return value
    from ..compat.auth_objects import GroupRef, HubUser, LoginHandler

    current = HubUser(user.name, user.id, bool(user.admin), [GroupRef(g.name) for g in user.groups],
                      hub.options.base_url)
    return value(LoginHandler(None, hub, hub.authenticator, current_user=current)) or ""


async def root(request: Request) -> Response:
    """Signed out: the login page. Signed in: ``default_url``, else the user's running
    server (``redirect_to_server``), else the home page."""
    hub: Hub = request.app.state.hub
    with hub.session() as db:
        page = Page(request, db)
        if page.user is None:
            return page.redirect(page.url("login"), status=302)
        url = default_url(hub, page.user)
        if url:
            return page.redirect(url, status=302)
        if hub.options.redirect_to_server:
            default = next((s for s in page.user.servers if s.name == ""), None)
            if server_state(page, page.user.name, default, "") == "ready":
                return page.redirect(hub.server_routespec(page.user.name, ""), status=302)
        return page.redirect(page.url("home"), status=302)


@signed_in
async def home(page: Page, user: User) -> Response:
    hub = page.hub
    rows = {s.name: s for s in user.servers}
    default = server_view(page, user, rows.get(""), "")
    named = [server_view(page, user, s, s.name) for s in user.servers if s.name]
    limit = await named_server_limit(page)
    return page.render(
        "home.html", **nav(page), active="home", default_server=default,
        named_servers=named, allow_named_servers=hub.options.allow_named_servers,
        named_server_limit=limit,
        can_add_server=not limit or len(named) < limit,
    )


# -- /hub/token -----------------------------------------------------------------------------
@signed_in
async def token_page(page: Page, user: User) -> Response:
    hub = page.hub
    max_seconds = hub.options.token_expires_in_max_seconds
    expiry = [(3600, "1 hour"), (86400, "1 day"), (7 * 86400, "1 week"),
              (30 * 86400, "30 days"), (365 * 86400, "1 year")]
    choices = [(s, label) for s, label in expiry if not max_seconds or s <= max_seconds]
    return page.render("token.html", **nav(page), active="token", expiry_choices=choices,
                       never_expires=not max_seconds)


# -- /hub/user/NAME/...: the proxy has no route there ---------------------------------------
async def user_prefix_redirect(request: Request) -> Response:
    """``/user/...`` reached the hub (the proxy has no route): look at it as ``/hub/user/...``."""
    hub: Hub = request.app.state.hub
    target = f"{hub.options.base_url}hub/user/{request.path_params['path']}"
    if request.url.query:
        target += f"?{request.url.query}"
    return RedirectResponse(quote(target, safe="/?&=%@~:+,;!$'()*"), status_code=302)


def _wants_json(request: Request, rest: str) -> bool:
    accept = request.headers.get("accept", "")
    return "/api/" in f"/{rest}" or ("application/json" in accept and "text/html" not in accept)


async def user_url(request: Request) -> Response:
    """A server's URL reached the hub: it is not running (or its route is missing).

    API requests get 424 JSON (503 with ``use_legacy_stopped_server_status_code``); a
    browser gets a page that offers to start the server, or is sent to the pending page.
    """
    hub: Hub = request.app.state.hub
    owner_name, rest = request.path_params["user"], request.path_params.get("path", "")
    with hub.session() as db:
        page = Page(request, db)
        if page.user is None:
            if _wants_json(request, rest):
                body = orjson.dumps({"status": 403, "message": "Missing or invalid credentials."})
                return Response(body, 403, media_type="application/json")
            return login_redirect(page.base_url, request)
        owner = page.user if owner_name == page.user.name else queries.get_user(db, owner_name)
        servers = {s.name: s for s in owner.servers} if owner else {}
        first, _, after = rest.partition("/")
        server_name = first if hub.options.allow_named_servers and first in servers and first \
            else ""
        if owner is None or not (owner.id == page.user.id or
                                 may(page, ("access:servers",), owner.name, server_name)):
            return page.error(404, f"There is no server of {owner_name} you may use here.")
        server = servers.get(server_name)
        state = server_state(page, owner.name, server, server_name)
        server_url = hub.server_routespec(owner.name, server_name)
        if state == "spawn":
            return page.redirect(pending_url(page, owner.name, server_name), status=302)
        if state == "ready":
            # the route may be a moment behind; try again, but do not loop for ever
            tries = int(request.query_params.get("redirects", "0") or 0)
            if tries < 3:
                rest_path = after if server_name else rest
                return page.redirect(f"{server_url}{quote(rest_path, safe='/')}"
                                     f"?redirects={tries + 1}", status=302)
            return page.error(503, "Your server is running, but the proxy does not reach it. "
                              "Try again in a minute, or ask an administrator.")
        status = 503 if hub.options.use_legacy_stopped_server_status_code else 424
        label = f"{owner.name}'s server {server_name!r}" if server_name \
            else f"{owner.name}'s server"
        if _wants_json(request, rest):
            body = orjson.dumps({"status": status, "message": f"{label} is not running"})
            return Response(body, status, media_type="application/json")
        next_url = f"{server_url}{quote(after if server_name else rest, safe='/')}"
        can_start = owner.id == page.user.id or may(page, ("start:servers", "servers"),
                                                   owner.name, server_name)
        return page.render("not_running.html", status=status, **nav(page), owner=owner.name,
                           server_name=server_name, own=owner.id == page.user.id,
                           can_start=can_start, state=state,
                           spawn_url=spawn_url(page, owner.name, server_name),
                           next_url=next_url,
                           failure=hub.lifecycle.failure(owner.name, server_name))


# -- errors ---------------------------------------------------------------------------------
async def error_page(request: Request) -> Response:
    """``/hub/error/CODE?url=...``: the proxy's error pages."""
    hub: Hub = request.app.state.hub
    try:
        code = int(request.path_params["code"])
    except ValueError:
        code = 404
    if not 400 <= code <= 599:
        code = 500
    url = request.query_params.get("url", "")
    with hub.session() as db:
        page = Page(request, db)
        return render_error(page, code, ERROR_MESSAGES.get(code, "Something went wrong."),
                            url=url)


def render_error(page: Page, status: int, message: str, url: str = "",
                 headers: Mapping[str, str] | None = None) -> Response:
    return page.render("error.html", status=status, headers=headers, status_code=status,
                       message=message, url=url, **nav(page))


def is_page_path(base_url: str, path: str) -> bool:
    """Whether an error on ``path`` (on the site at ``base_url``) should be an HTML page, not
    the API's JSON."""
    return (not path.startswith(f"{base_url}hub/api")
            and not path.startswith(f"{base_url}hub/static"))


async def http_error_page(request: Request, exc: HTTPException) -> Response:
    hub: Hub = request.app.state.hub
    with hub.session() as db:
        page = Page(request, db)
        message = ERROR_MESSAGES.get(exc.status_code, str(exc.detail))
        return render_error(page, exc.status_code, message, headers=exc.headers)


async def server_error_page(request: Request, exc: Exception) -> Response:
    hub: Hub = request.app.state.hub
    log.error("Error in %s %s", request.method, request.url.path, exc_info=exc)
    if not is_page_path(hub.options.base_url, request.url.path):
        from ..api.base import error_response

        return error_response(500, "Internal server error; see the hub's log")
    with hub.session() as db:
        return render_error(Page(request, db), 500, ERROR_MESSAGES[500])


async def refused_value_page(request: Request, exc: Exception) -> Response:
    """A value the database cannot hold (PostgreSQL: longer than its column, out of its
    range, or with a NUL character) came from the request: its fault, not the hub's."""
    assert isinstance(exc, DataError)
    hub: Hub = request.app.state.hub
    log.info("Value refused on %s %s: %s", request.method, request.url.path, exc.orig)
    if not is_page_path(hub.options.base_url, request.url.path):
        from ..api.base import error_response

        return error_response(400, "a value in the request is not one the database can hold "
                                   "(too long, too large, or with a NUL character)")
    with hub.session() as db:
        return render_error(Page(request, db), 400, ERROR_MESSAGES[400])


# -- /hub/logo ------------------------------------------------------------------------------
async def logo(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    path = Path(hub.options.logo_file) if hub.options.logo_file else STATIC_DIR / "logo.svg"
    return FileResponse(path, headers={"Cache-Control": "max-age=3600"})


def routes(base_url: str) -> list[BaseRoute]:
    prefix = f"{base_url}hub/"
    return [
        Route(base_url, site_root, methods=["GET"]),
        Route(prefix, root, methods=["GET"]),
        Route(f"{prefix}home", home, methods=["GET"]),
        Route(f"{prefix}token", token_page, methods=["GET"]),
        Route(f"{prefix}logo", logo, methods=["GET"]),
        Route(f"{prefix}error/{{code}}", error_page, methods=["GET"]),
        Route(f"{prefix}security/csp-report", csp_report, methods=["POST"]),
        Route(f"{prefix}user/{{user}}", user_url, methods=["GET"]),
        Route(f"{prefix}user/{{user}}/{{path:path}}", user_url, methods=["GET"]),
        Route(f"{base_url}user/{{path:path}}", user_prefix_redirect, methods=["GET"]),
    ]
