"""configurable-http-proxy's REST API, served by the master process on loopback.

It is low-traffic (the hub adds and removes routes, and reads the table every few
minutes), so it is a small hand-rolled HTTP/1.1 handler. What it answers, including
status codes, bodies and the order of checks, follows CHP so that JupyterHub and other
CHP clients cannot tell the difference:

    GET    /api/routes[?inactive_since=ISO]  200 {path: {"target", ...data, "last_activity"}}
    GET    /api/routes/<path>                200 route | 404
    POST   /api/routes/<path>  {"target"...} 201 | 400 (bad JSON, target not a string)
    DELETE /api/routes/<path>                204 | 404
    anything else under /api/routes          405;  elsewhere 404;  wrong token 403
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import formatdate, parsedate_to_datetime
from urllib.parse import parse_qs, unquote, urlsplit

import httptools
import orjson

from .http import Headers, reason_phrase
from .routes import Route, RouteTable, clean_path

log = logging.getLogger("courtyard.proxy")

_API_PATH = re.compile(r"^/api/routes(/.*)?$")
_TOKEN = re.compile(rb"token\s+(\S+)")
_MAX_BODY = 10 * 1024 * 1024

# Called after the table changed, with the prefix and the new target (None = removed);
# returns once every worker applied the change.
Publish = Callable[[str, str | None], Awaitable[None]]


def iso8601(timestamp: float) -> str:
    """``2026-01-31T12:00:00.123Z``: JavaScript's ``Date.toISOString()``, which CHP emits."""
    dt = datetime.fromtimestamp(timestamp, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_timestamp(text: str) -> float | None:
    """Parse ISO 8601 (or an RFC 2822 date, which CHP also accepts); None if invalid."""
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        try:
            dt = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


class Response:
    __slots__ = ("body", "content_type", "status")

    def __init__(self, status: int, body: bytes = b"", content_type: str = "") -> None:
        self.status = status
        self.body = body
        self.content_type = content_type

    @classmethod
    def json(cls, payload: object) -> Response:
        return cls(200, orjson.dumps(payload), "application/json")

    @classmethod
    def text(cls, status: int, message: str) -> Response:
        return cls(status, message.encode())


class RouteApi:
    """The API's logic on top of the master's authoritative table."""

    def __init__(
        self,
        table: RouteTable,
        auth_token: str,
        host_routing: bool = False,
        publish: Publish | None = None,
    ) -> None:
        self.table = table
        self.auth_token = auth_token.encode()
        self.host_routing = host_routing
        self.publish = publish

    def add(self, path: str, data: dict[str, object]) -> Route:
        """Add or replace a route (also used for --default-target at startup)."""
        prefix = clean_path(path)
        if self.host_routing and prefix != "/":
            data["host"] = prefix.split("/")[1]
        route = self.table.add(prefix, str(data["target"]), data)
        route.last_activity = time.time()
        return route

    def merge_activity(self, activity: dict[str, float]) -> None:
        """Fold activity reported by a worker into the table; later times win."""
        for prefix, stamp in activity.items():
            route = self.table.get(prefix)
            if route is not None and stamp > route.last_activity:
                route.last_activity = stamp

    @staticmethod
    def render(route: Route) -> dict[str, object]:
        return {**route.data, "last_activity": iso8601(route.last_activity)}

    def authorized(self, headers: Headers) -> bool:
        if not self.auth_token:
            return True
        for name, value in headers:
            if name.lower() == b"authorization":
                match = _TOKEN.search(value)
                # constant time: how much of a guess matched must not show in the timing
                return match is not None and hmac.compare_digest(match.group(1),
                                                                 self.auth_token)
        return False

    async def handle(self, method: str, url: str, headers: Headers, body: bytes) -> Response:
        parts = urlsplit(url)
        match = _API_PATH.match(parts.path)
        if match is None:
            return Response.text(404, "Not Found")
        path = unquote(match.group(1)) if match.group(1) is not None else None
        if method not in ("GET", "POST", "DELETE"):
            return Response.text(405, "Method not supported")
        data: object = None
        if method == "POST":
            # CHP parses the body before it checks the token; keep the same order.
            try:
                data = orjson.loads(body) or {}
            except orjson.JSONDecodeError as exc:
                return Response.text(400, f"Body not valid JSON: {exc}")
        if not self.authorized(headers):
            return Response(403)
        if method == "GET":
            return self.get(path, parts.query)
        if method == "POST":
            return await self.post(path or "/", data)
        return await self.delete(path or "/")

    def get(self, path: str | None, query: str) -> Response:
        if path and path != "/":
            route = self.table.get(path)
            return Response(404) if route is None else Response.json(self.render(route))
        params = parse_qs(query)
        raw = (params.get("inactiveSince") or params.get("inactive_since") or [""])[0]
        since: float | None = None
        if raw:
            since = parse_timestamp(raw)
            if since is None:
                return Response.text(400, f"Invalid datestamp '{raw}' must be ISO8601.")
        routes = {
            r.prefix: self.render(r)
            for r in self.table
            if since is None or r.last_activity < since
        }
        return Response.json(routes)

    async def post(self, path: str, data: object) -> Response:
        if not isinstance(data, dict) or not isinstance(data.get("target"), str):
            log.warning("Bad POST data: %s", orjson.dumps(data).decode())
            return Response.text(400, "Must specify 'target' as string")
        try:
            route = self.add(path, data)
        except ValueError as exc:
            # CHP would accept it and fail every request later; refusing is kinder.
            return Response.text(400, str(exc))
        log.info("Route added %s -> %s", route.prefix, route.target.url)
        if self.publish is not None:
            await self.publish(route.prefix, route.target.url)
        return Response(201)

    async def delete(self, path: str) -> Response:
        route = self.table.remove(path)
        if route is None:
            return Response(404)
        log.info("Removing route %s", route.prefix)
        if self.publish is not None:
            await self.publish(route.prefix, None)
        return Response(204)


class ApiConnection(asyncio.Protocol):
    """One API client connection; requests are answered one at a time, in order."""

    def __init__(self, api: RouteApi) -> None:
        self.api = api
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.queue: asyncio.Queue[tuple[str, str, Headers, bytes, bool] | None] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self._url = b""
        self._headers: Headers = []
        self._body: list[bytes] = []
        self._size = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop: not a subclass
        self.task = asyncio.ensure_future(self._serve())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.task is not None:
            self.task.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._send(Response.text(400, "Bad Request"), keep_alive=False)

    def on_message_begin(self) -> None:
        self._url, self._headers, self._body, self._size = b"", [], [], 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size <= _MAX_BODY:
            self._body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode()
        keep = self.parser.should_keep_alive()
        if self._size > _MAX_BODY:
            self._send(Response.text(413, "Body too large"), keep_alive=False)
            return
        body = b"".join(self._body)
        self.queue.put_nowait((method, self._url.decode("latin-1"), self._headers, body, keep))

    async def _serve(self) -> None:
        while True:
            item = await self.queue.get()
            if item is None:
                return
            method, url, headers, body, keep = item
            try:
                response = await self.api.handle(method, url, headers, body)
            except Exception:
                log.exception("Error in handler for %s %s", method, url.split("?", 1)[0])
                response = Response.text(500, "Internal Server Error")
            level = logging.INFO if response.status < 400 else logging.WARNING
            log.log(level, "%d %s %s", response.status, method, url.split("?", 1)[0])
            self._send(response, keep)

    def _send(self, response: Response, keep_alive: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        head = [
            f"HTTP/1.1 {response.status} {reason_phrase(response.status).decode()}",
            f"Date: {formatdate(usegmt=True)}",
        ]
        if response.content_type:
            head.append(f"Content-Type: {response.content_type}")
        if response.status not in (204, 304):
            head.append(f"Content-Length: {len(response.body)}")
        head.append("Connection: keep-alive" if keep_alive else "Connection: close")
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body)
        if not keep_alive:
            self.transport.close()


async def serve_api(
    api: RouteApi, host: str, port: int, sslctx: ssl.SSLContext | None = None
) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: ApiConnection(api), host=host, port=port, ssl=sslctx)


def close_quietly(server: asyncio.Server) -> None:
    with contextlib.suppress(Exception):
        server.close()
