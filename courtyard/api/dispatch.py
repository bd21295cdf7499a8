"""The REST API's own route table, in front of Starlette's router.

A request below ``{base_url}hub/api`` whose path and method match an endpoint made by
:func:`~courtyard.api.base.endpoint` goes straight to it, found by its path's first segment,
instead of through Starlette's route-by-route scan and its error and exception middleware
(such endpoints catch their own errors and answer JSON). Every other request (pages,
unknown paths, wrong methods, routes the authenticator adds) goes to the Starlette app, and
a route listed earlier still wins, as in Starlette: both ways answer alike
(``tests/api/test_dispatch.py``).

The app's own middleware (``Starlette(middleware=...)``, and ``add_middleware`` before the
first request, as Starlette allows) wraps the shortcut too: it is built around it on the
first request, from ``app.user_middleware``, as Starlette builds its own stack.

What it buys, ``bench/fastpaths.py`` (2026-12-07, 2 cores, load average 1.2-1.9, medians of
interleaved rounds, the middleware inside): ``GET /users/{name}`` 11,877 req/s against
7,905 through Starlette's routing, ``GET /user`` 10,960 against 8,956; called in process,
26 µs a request against 37-42 µs. The middleware costs 4 µs of that (12,438 and 13,389
req/s without it), the price of not skipping it.

Both ways see the same client (``X-Forwarded-For`` from trusted proxies:
:mod:`courtyard.web.forwarded`) and hold the same body limits (:mod:`courtyard.web.limits`),
applied here, before either: ``api_limit`` below the API's prefix, ``form_limit`` elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.requests import Request
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..web.forwarded import ForwardedClient
from ..web.limits import Refusal, json_refusal, within_limit

_ANY = None  # the bucket of routes whose first segment is a parameter (or that are mounts)
_FOUND = "courtyard.endpoint"  # scope key: the matched (route, path params), for the shortcut


def _first_segment(path: str) -> str:
    return path[1:].partition("/")[0]


def _bucket_key(route: BaseRoute) -> str | None:
    if not isinstance(route, Route):
        return _ANY
    first = _first_segment(route.path)
    return _ANY if "{" in first else first


def _is_endpoint(route: BaseRoute) -> bool:
    return isinstance(route, Route) and hasattr(route.endpoint, "scopes")


class ApiDispatcher:
    """ASGI app: API endpoints by first path segment, in their listed order; else ``app``."""

    def __init__(self, app: Starlette, prefix: str, routes: Sequence[BaseRoute], base_url: str,
                 api_limit: int = 4 << 20, form_limit: int = 256 << 10,
                 refuse: Refusal = json_refusal, forwarded: ForwardedClient | None = None
                 ) -> None:
        self.app = app  # the Starlette app; it stays ``request.app`` (its state holds the hub)
        self.prefix = prefix.rstrip("/")
        self.api_limit, self.form_limit, self.refuse = api_limit, form_limit, refuse
        self.forwarded = forwarded or ForwardedClient([])
        self._shortcut: ASGIApp | None = None  # the app's middleware around _answer
        self.buckets: dict[str | None, list[BaseRoute]] = {_ANY: []}
        for route in routes:
            key = _bucket_key(route)
            if key is _ANY:
                for bucket in self.buckets.values():
                    bucket.append(route)
            else:
                self.buckets.setdefault(key, list(self.buckets[_ANY])).append(route)

    @property
    def state(self) -> State:
        """The Starlette app's state (it holds the hub), as on a Starlette app."""
        return self.app.state

    def match(self, method: str, path: str) -> tuple[Route, dict[str, Any]] | None:
        """The API endpoint for ``method`` and ``path`` (below the prefix), or None when
        Starlette should decide."""
        bucket = self.buckets.get(_first_segment(path)) or self.buckets[_ANY]
        for route in bucket:
            if not isinstance(route, Route):
                return None
            found = route.path_regex.match(path)
            if found is None or (route.methods is not None and method not in route.methods):
                continue
            if not _is_endpoint(route):
                return None
            convert = route.param_convertors
            return route, {k: convert[k].convert(v) for k, v in found.groupdict().items()}
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.forwarded.apply(scope)
        path: str = scope["path"]
        if path.startswith(self.prefix) and path[len(self.prefix):len(self.prefix) + 1] == "/":
            found = self.match(scope["method"], path[len(self.prefix):])
            app: ASGIApp
            if found is None:
                app = self.app
            else:
                scope["app"] = self.app  # as Starlette sets it, before its middleware
                scope[_FOUND] = found
                app = self._shortcut or self._wrap()
            await within_limit(app, scope, receive, send, self.api_limit, self.refuse)
        else:
            await within_limit(self.app, scope, receive, send, self.form_limit, self.refuse)

    def _wrap(self) -> ASGIApp:
        """The Starlette app's own middleware around :meth:`_answer`, built once, at the
        first request. Starlette's stack is built then too, so that ``add_middleware`` is
        refused from then on for both ways alike. Each middleware gets an instance of its
        own here: one that keeps state must keep it elsewhere (on the app's state)."""
        if self.app.middleware_stack is None:
            self.app.middleware_stack = self.app.build_middleware_stack()
        app: ASGIApp = self._answer
        for cls, args, kwargs in reversed(self.app.user_middleware):
            app = cls(app, *args, **kwargs)
        self._shortcut = app
        return app

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer with the endpoint :meth:`__call__` matched, as Starlette's Mount would."""
        route, params = scope.pop(_FOUND)
        scope["path_params"] = params
        scope["endpoint"] = route.endpoint
        scope["root_path"] = scope.get("root_path", "") + self.prefix
        response = await route.endpoint(Request(scope, receive, send))
        await response(scope, receive, send)
