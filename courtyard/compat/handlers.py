"""REST API handlers that JupyterHub plugins add to the hub, served by Courtyard.

A plugin extends JupyterHub's API by appending ``(pattern, HandlerClass[, kwargs])`` to
``jupyterhub.apihandlers.default_handlers`` when it is imported (batchspawner adds
``/api/batchspawner``, where a job reports the port its server listens on). JupyterHub then
serves them with its own tornado application. Courtyard serves JupyterHub's API itself, so
those handlers would be lost; :class:`PluginRoute` runs them, unmodified, in the hub's
process:

- the route is the API's last one: a path Courtyard serves is never a plugin's, and a path
  no plugin claims gets Courtyard's 404. The list is read at each request, so a plugin
  imported late (with the spawner class, say) is served too; JupyterHub's own handlers in
  that list are skipped (Courtyard implements them), and so are patterns outside ``/api/``;
- the caller is found by Courtyard's rules (token header, else the login cookie with its
  XSRF and Content-Type checks; ``auth_refresh_age``), within the API's body limit;
- the handler sees what JupyterHub gives it: ``current_user`` (a user with ``name``,
  ``admin``, ``groups`` and ``spawners``, the JupyterHub spawner objects Courtyard runs
  for that user's active servers; a service with ``name``), ``get_auth_token()``,
  ``expanded_scopes`` and ``parsed_scopes`` in JupyterHub's form, so ``@web.authenticated``
  and ``@needs_scope`` decide as in JupyterHub, ``get_json_body()``, ``db`` (whose
  ``commit()`` writes nothing: state is saved through ``get_state``), JSON errors
  ``{"status", "message"}``;
- a plugin may set attributes of a spawner only where that is safe: a token the server
  holds is the user's, so through ``current_user.spawners`` a handler may set what the
  spawner's engine module lists (``SERVER_SETTABLE``: the port for batchspawner) and no
  configuration (``exec_prefix``, ``batch_cancel_cmd``, ``cmd``... run as root by the hub):
  setting one answers 403.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections.abc import Iterator, Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, cast
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, NoMatchFound, Route
from starlette.types import Receive, Scope, Send

from ..api.base import Ctx, _refresh, endpoint
from ..auth import refresh
from . import engines
from .spawner import JupyterHubSpawner
from .spawner_objects import NullSession

if TYPE_CHECKING:
    from collections.abc import Callable

    from starlette.datastructures import URLPath
    from tornado.httputil import HTTPHeaders, ResponseStartLine
    from tornado.web import Application
    from traitlets.config import Config

    from ..auth.base import Authenticator
    from ..spawners.base import Spawner

log = logging.getLogger("courtyard.compat")


class SiteOptions(Protocol):
    @property
    def base_url(self) -> str: ...


class Servers(Protocol):
    def built_spawners(self, user: str) -> list[tuple[str, Spawner]]: ...


class Hub(Protocol):
    """What plugin handlers need of the hub: the settings JupyterHub's tornado application
    holds (base URL, config, authenticator), and the spawners of a user's servers."""

    @property
    def options(self) -> SiteOptions: ...
    @property
    def config(self) -> Config: ...
    @property
    def authenticator(self) -> Authenticator: ...
    @property
    def lifecycle(self) -> Servers: ...


Handler = tuple[re.Pattern[str], type, dict[str, Any]]


class Caller(TypedDict):
    """What a plugin handler is told about the request, answered by Courtyard."""

    user: SimpleNamespace | None  # JupyterHub's current_user: a user or service, or None
    token: str | None  # the API token in the request's header
    db: HandlerSession
    scopes: tuple[set[str], dict[str, Any]]  # (expanded_scopes, parsed_scopes)


def plugin_handlers() -> list[Handler]:
    """The API handlers plugins have added to ``jupyterhub.apihandlers.default_handlers``
    (JupyterHub's own are left out), in their order; none while jupyterhub is not loaded."""
    module = sys.modules.get("jupyterhub.apihandlers")
    if module is None:
        return []
    found: list[Handler] = []
    for entry in getattr(module, "default_handlers", []):
        if not isinstance(entry, tuple | list) or len(entry) < 2:
            continue  # a tornado URLSpec: not how plugins add handlers
        pattern, cls = entry[0], entry[1]
        kwargs = entry[2] if len(entry) > 2 else {}
        origin = getattr(cls, "__module__", "") or ""
        if origin == "jupyterhub" or origin.startswith("jupyterhub."):
            continue
        if not isinstance(pattern, str) or not pattern.startswith("/api/"):
            continue
        found.append((_compiled(pattern), cls, dict(kwargs or {})))
    return found


_patterns: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    compiled = _patterns.get(pattern)
    if compiled is None:  # tornado anchors a pattern at both ends
        compiled = _patterns[pattern] = re.compile(pattern if pattern.endswith("$")
                                                   else pattern + "$")
    return compiled


def find_handler(path: str) -> tuple[Handler, re.Match[str]] | None:
    """The first plugin handler whose pattern matches ``path`` (``/api/...``)."""
    for handler in plugin_handlers():
        found = handler[0].match(path)
        if found is not None:
            return handler, found
    return None


class PluginRoute(BaseRoute):
    """The API's last route (below ``{base_url}hub/api``): paths a plugin handler claims,
    except Courtyard's own (``routes``), whatever the method, as JupyterHub's handlers come
    before any plugin's in tornado's list."""

    def __init__(self, routes: Sequence[BaseRoute] = ()) -> None:
        self.own = [r.path_regex for r in routes if isinstance(r, Route)]

    def _path(self, scope: Scope) -> str:
        from starlette._utils import get_route_path

        return "/api" + get_route_path(scope)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http":
            return Match.NONE, {}
        path = self._path(scope)
        if any(own.match(path[4:]) for own in self.own):
            return Match.NONE, {}
        if find_handler(path) is not None:
            return Match.FULL, {"endpoint": serve_plugin}
        return Match.NONE, {}

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        raise NoMatchFound(name, path_params)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["courtyard.plugin_path"] = self._path(scope)
        response = await serve_plugin(Request(scope, receive, send))
        await response(scope, receive, send)


# -- what a JupyterHub API handler sees --------------------------------------------------------
class HandlerSession(NullSession):
    """``handler.db``: nothing to write (``commit()`` is a no-op, nothing is ever dirty).
    It is falsy so that JupyterHub's ``has_scope`` does not query it: group filters are
    expanded to their members before the handler runs (:func:`parsed_scopes`)."""

    dirty: tuple[()] = ()

    def __bool__(self) -> bool:
        return False


class SpawnerView:
    """A JupyterHub spawner as a plugin handler reaches it: every attribute readable, and
    settable only when the spawner's engine lists it in ``SERVER_SETTABLE``."""

    def __init__(self, spawner: Any) -> None:
        object.__setattr__(self, "_spawner", spawner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._spawner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        from tornado import web

        found = engines.engine_of(self._spawner)
        settable: frozenset[str] = getattr(found[0], "SERVER_SETTABLE", frozenset()) \
            if found else frozenset()
        if name not in settable:
            log.warning("Refused a plugin API handler's write of %s.%s",
                        type(self._spawner).__name__, name)
            raise web.HTTPError(403, f"the spawner's {name!r} cannot be set through the API")
        setattr(found[1] if found else self._spawner, name, value)


def active_spawners(hub: Hub, username: str) -> Iterator[tuple[str, Any]]:
    """``(server name, JupyterHub spawner)`` of ``username``'s servers the hub deals with."""
    for server, adapter in hub.lifecycle.built_spawners(username):  # none built here: one
        if isinstance(adapter, JupyterHubSpawner) and adapter._jh:  # not built runs nothing
            yield server, adapter._jh


def current_user(ctx: Ctx) -> SimpleNamespace | None:
    """JupyterHub's ``handler.current_user`` for the caller (None when there is none)."""
    ident = ctx.identity
    if ident is None:
        return None
    if ident.kind != "user":
        return SimpleNamespace(name=ident.name, kind="service", spawners={}, admin=False)
    spawners = {name: SpawnerView(jh) for name, jh in active_spawners(ctx.hub, ident.name)}
    record = ctx.current_user
    return SimpleNamespace(
        name=ident.name, kind="user", admin=bool(record and record.admin),
        groups=[SimpleNamespace(name=g) for g in ctx.groups_of(ident.name)],
        spawners=spawners, spawner=spawners.get(""))


def parsed_scopes(ctx: Ctx) -> tuple[set[str], dict[str, Any]]:
    """``(expanded_scopes, parsed_scopes)`` as JupyterHub's handlers hold them, with every
    ``!group=`` filter also given as its members' ``!user=`` filters."""
    from jupyterhub.scopes import parse_scopes

    if ctx.identity is None:
        return set(), {}
    expanded = set(ctx.identity.expanded)
    parsed = parse_scopes(expanded)
    for filters in parsed.values():
        if isinstance(filters, dict) and filters.get("group"):
            members = _members(ctx, filters["group"])
            filters.setdefault("user", set()).update(members)
    return expanded, parsed


def _members(ctx: Ctx, groups: set[str]) -> set[str]:
    from ..db.models import Group

    names: set[str] = set()
    for group in ctx.db.query(Group).filter(Group.name.in_(sorted(groups))):
        names.update(u.name for u in group.users)
    return names


class _Connection:
    """The tornado HTTP connection a handler writes its response to: kept in memory."""

    def __init__(self) -> None:
        self.status = 200
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []

    def _done(self) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    def write_headers(self, start_line: ResponseStartLine, headers: HTTPHeaders,
                      chunk: bytes | None = None) -> asyncio.Future[None]:
        self.status = start_line.code
        self.headers = list(headers.get_all())
        if chunk:
            self.body.append(chunk)
        return self._done()

    def write(self, chunk: bytes) -> asyncio.Future[None]:
        self.body.append(chunk)
        return self._done()

    def finish(self) -> None:
        """The response is complete."""

    def set_close_callback(self, callback: Callable[[], None] | None) -> None:
        """The client connection is Courtyard's: nothing to watch here."""


def handler_class(cls: type) -> type:
    """``cls`` with what JupyterHub's ``BaseHandler`` gets from JupyterHub's application
    answered from Courtyard (the handler's own methods are the plugin's, unchanged)."""
    cached = _classes.get(cls)
    if cached is not None:
        return cached

    class Bridged(cls):  # type: ignore[misc]  # a base known at run time: the plugin's class
        _courtyard: Caller

        # JupyterHub's BaseHandler.prepare (through any prepare of the plugin's) calls these
        async def get_current_user(self) -> SimpleNamespace | None:
            state = self._courtyard
            self._jupyterhub_user = state["user"]
            self._token_authenticated = state["token"] is not None
            return state["user"]

        def _resolve_roles_and_scopes(self) -> None:
            self.expanded_scopes, self.parsed_scopes = self._courtyard["scopes"]

        @property
        def current_user(self) -> SimpleNamespace | None:
            return self._courtyard["user"]

        def get_auth_token(self) -> str | None:
            return self._courtyard["token"]

        def check_xsrf_cookie(self) -> None:
            """Checked by Courtyard before the handler runs."""

        def write_error(self, status_code: int, **kwargs: Any) -> None:
            """JupyterHub's JSON error, whose message is never null (an ``HTTPError``
            without one, as ``@web.authenticated`` raises, gets the status's phrase)."""
            from http import HTTPStatus

            from tornado.web import HTTPError

            error = (kwargs.get("exc_info") or (None, None))[1]
            if isinstance(error, HTTPError) and not error.log_message and not error.reason:
                try:
                    error.reason = HTTPStatus(status_code).phrase
                except ValueError:
                    error.reason = "Error"
            super().write_error(status_code, **kwargs)

        @property
        def db(self) -> HandlerSession:
            return self._courtyard["db"]

        @property
        def log(self) -> logging.Logger:
            return log

        def finish(self, *args: Any, **kwargs: Any) -> asyncio.Future[None]:
            from tornado.web import RequestHandler

            return RequestHandler.finish(self, *args, **kwargs)

    Bridged.__name__ = Bridged.__qualname__ = cls.__name__
    Bridged.__module__ = cls.__module__
    _classes[cls] = Bridged
    return Bridged


_classes: dict[type, type] = {}


def tornado_application(hub: Hub) -> Application:
    """One tornado application per hub, holding the settings JupyterHub's handlers read."""
    app = _applications.get(id(hub))
    if app is None or app[0] is not hub:
        from tornado import web

        base = hub.options.base_url
        settings: dict[str, Any] = {  # tornado's settings: any value
            "base_url": base, "login_url": f"{base}hub/login", "log_function": lambda h: None,
            "hub": SimpleNamespace(base_url=f"{base}hub/"), "config": hub.config,
            "authenticator": hub.authenticator, "xsrf_cookies": False,
            "headers": {"Content-Security-Policy": "frame-ancestors 'none'; default-src 'none'"},
        }
        app = (hub, web.Application([], **settings))
        _applications[id(hub)] = app
    return app[1]


_applications: dict[int, tuple[Hub, Application]] = {}


@endpoint(public=True)
async def serve_plugin(ctx: Ctx) -> Response:
    """Run the plugin handler for this request, as JupyterHub would."""
    from tornado import httputil

    request = ctx.request
    path = request.scope.get("courtyard.plugin_path") or ""
    found = find_handler(path)
    if found is None:  # the plugin list changed since the route matched
        from ..errors import NotFound

        raise NotFound(f"Not Found: {request.method} {request.url.path}")
    (_, cls, kwargs), match = found
    hub = ctx.hub
    ctx.identity = hub.identify(request, ctx.open_db)
    if ctx.identity is not None and ctx.identity.kind == "user" and refresh.due(
            hub.authenticator, ctx.identity.id):
        await _refresh(ctx, ctx.identity)
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    token = secret.strip() if ctx.identity is not None and scheme.lower() in (
        "token", "bearer") else None
    body = await request.body()
    headers = httputil.HTTPHeaders()
    for key, value in request.headers.items():
        headers.add(key, value)
    uri = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    connection = _Connection()
    tornado_request = httputil.HTTPServerRequest(
        method=request.method, uri=uri, version="HTTP/1.1", headers=headers, body=body,
        host=request.headers.get("host", ""),
        # duck-typed: what a handler calls of tornado's HTTPConnection (no tornado import
        # until a plugin is served)
        connection=cast("httputil.HTTPConnection", connection))
    tornado_request.remote_ip = request.client.host if request.client else ""
    handler = handler_class(cls)(tornado_application(hub), tornado_request, **kwargs)
    handler._courtyard = {"user": current_user(ctx), "token": token, "db": HandlerSession(),
                          "scopes": parsed_scopes(ctx)}
    # also for a plugin whose prepare() does not call JupyterHub's
    handler._jupyterhub_user = handler._courtyard["user"]
    handler.expanded_scopes, handler.parsed_scopes = handler._courtyard["scopes"]
    groups = match.groupdict()
    args = [] if groups else [unquote(g) if g is not None else None for g in match.groups()]
    named = {k: unquote(v) for k, v in groups.items() if v is not None}
    await handler._execute([], *args, **named)
    response = Response(b"".join(connection.body), status_code=connection.status)
    response.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                            for k, v in connection.headers]
    return response
