"""The REST API's own route table, in front of Starlette's.

Starlette's middleware stack and its route-by-route scan cost about 80 µs a request,
as much as a cached ``GET /user`` spends in Courtyard itself. API endpoints made by
:func:`~courtyard.api.base.endpoint` need none of it: they catch their own errors and
answer JSON. A request below ``{base_url}hub/api`` whose path and method match such an
endpoint goes straight to it, found by its path's first segment. Every other request
(pages, unknown paths, wrong methods, routes the authenticator adds) goes through the
Starlette app as before, and a route listed earlier still wins, as in Starlette.

Both ways see the same client (``X-Forwarded-For`` from trusted proxies:
:mod:`courtyard.web.forwarded`) and hold the same body limits (:mod:`courtyard.web.limits`),
applied here, before either: ``api_limit`` below the API's prefix, ``form_limit`` elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from ..web.csp import page_headers, with_page_headers
from ..web.forwarded import ForwardedClient
from ..web.limits import Refusal, json_refusal, within_limit

_ANY = None  # the bucket of routes whose first segment is a parameter (or that are mounts)


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

    def __init__(self, app: Any, prefix: str, routes: Sequence[BaseRoute], base_url: str,
                 api_limit: int = 4 << 20, form_limit: int = 256 << 10,
                 refuse: Refusal = json_refusal, forwarded: ForwardedClient | None = None
                 ) -> None:
        self.app = app  # the Starlette app; it stays ``request.app`` (its state holds the hub)
        self.prefix = prefix.rstrip("/")
        self.api_limit, self.form_limit, self.refuse = api_limit, form_limit, refuse
        self.forwarded = forwarded or ForwardedClient([])
        self.page_headers = page_headers(base_url)
        self.buckets: dict[str | None, list[BaseRoute]] = {_ANY: []}
        for route in routes:
            key = _bucket_key(route)
            if key is _ANY:
                for bucket in self.buckets.values():
                    bucket.append(route)
            else:
                self.buckets.setdefault(key, list(self.buckets[_ANY])).append(route)

    @property
    def state(self) -> Any:
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
            app = self.app if found is None else self.endpoint(*found)
            await within_limit(app, scope, receive, send, self.api_limit, self.refuse)
        else:
            await within_limit(self.app, scope, receive, send, self.form_limit, self.refuse)

    def endpoint(self, route: Route, params: dict[str, Any]) -> Any:
        """The ASGI app answering one request with ``route``'s endpoint, past Starlette."""

        async def answer(scope: Scope, receive: Receive, send: Send) -> None:
            scope["app"] = self.app
            scope["path_params"] = params
            scope["endpoint"] = route.endpoint
            scope["root_path"] = scope.get("root_path", "") + self.prefix
            response = await route.endpoint(Request(scope, receive, send))
            if any(key == b"content-type" and value.startswith(b"text/html")
                   for key, value in response.raw_headers):
                send = with_page_headers(send, self.page_headers)
            await response(scope, receive, send)

        return answer
