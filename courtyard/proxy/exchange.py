"""One request/response exchange on a client connection, from routing to the last byte.

The exchange routes the request, streams its head and body to a pooled upstream
connection (or answers itself: health check, error pages) and relays the response,
re-framing the body when needed (chunked for HTTP/1.1 clients when the target sent no
length). Upstream events arrive through the ``ResponseSink`` methods.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from . import http
from .http import Headers
from .routes import Route
from .upstream import UpstreamConnection, fetch

if TYPE_CHECKING:
    from .server import ClientConnection

log = logging.getLogger("courtyard.proxy")

_NO_BODY_STATUS = frozenset({204, 304})


class Exchange:
    """One request and its response on a client connection."""

    __slots__ = (
        "chunked_request",
        "chunked_to_client",
        "client",
        "close_after",
        "done_request",
        "done_response",
        "has_body",
        "head_request",
        "head_sent",
        "headers",
        "host",
        "interim",
        "keep_alive",
        "local",
        "method",
        "pending",
        "retried",
        "reused",
        "route",
        "sent_at",
        "status",
        "until_close",
        "upgrade",
        "upstream",
        "url",
        "version",
    )

    def __init__(
        self,
        client: ClientConnection,
        method: bytes,
        url: bytes,
        version: str,
        headers: Headers,
        keep_alive: bool,
        upgrade: bool,
    ) -> None:
        self.client = client
        self.method = method
        self.url = url
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.upgrade = upgrade
        self.head_request = method == b"HEAD"
        self.route: Route | None = None
        self.upstream: UpstreamConnection | None = None
        self.pending: list[bytes] = []
        self.chunked_request = False
        self.has_body = False
        self.done_request = False
        self.done_response = False
        self.head_sent = False
        self.interim = False
        self.local = False
        self.reused = False
        self.retried = False
        self.chunked_to_client = False
        self.close_after = False
        self.until_close = False
        self.status = 0
        self.sent_at = 0.0
        self.host: bytes | None = None
        for name, value in headers:
            low = name.lower()
            if low == b"host":
                self.host = value
            elif low == b"transfer-encoding":
                self.chunked_request = self.has_body = True
            elif low == b"content-length":
                self.has_body = value.strip() not in (b"0", b"")

    # -- request side ----------------------------------------------------------------------

    def begin(self) -> None:
        """Route the request and send its head upstream (or answer it locally)."""
        client = self.client
        ctx = client.ctx
        url = self.url
        if url[:1] != b"/" and b"://" in url:
            # Absolute form (RFC 9112 §3.2.2): keep the path and query only.
            rest = url.split(b"://", 1)[1]
            slash = rest.find(b"/")
            url = self.url = rest[slash:] if slash >= 0 else b"/"
        if url == b"/_chp_healthz":
            self.respond(200, http.HEALTH_RESPONSE, b"application/json")
            return
        path = url.split(b"?", 1)[0].decode("latin-1")
        if ctx.options.host_routing:
            host = self.host or b""
            path = "/" + host.decode("latin-1").split(":", 1)[0] + path
        route = ctx.table.match(path)
        if route is None:
            self.fail(404)
            return
        self.route = route
        self.pending.insert(0, self.build_head(route))
        conn = ctx.pool.take(route.target)
        if conn is not None:
            self.reused = True
            self.attach(conn)
        else:
            self.connect()

    def build_head(self, route: Route) -> bytes:
        headers, _ = http.end_to_end(self.headers)
        ctx = self.client.ctx
        if ctx.options.x_forward:
            headers = http.forwarded_headers(
                headers, self.client.client_ip, ctx.scheme, self.host, self.client.trusted
            )
        if self.chunked_request:
            headers = [(n, v) for n, v in headers if n.lower() != b"content-length"]
            headers.append((b"Transfer-Encoding", b"chunked"))
        if self.upgrade:
            headers.append((b"Connection", b"Upgrade"))
            headers.extend((n, v) for n, v in self.headers if n.lower() == b"upgrade")
        target = route.target.path.encode("latin-1") + self.url
        return b"%s %s HTTP/1.1\r\n%s\r\n" % (self.method, target, http.serialize_headers(headers))

    def connect(self) -> None:
        client = self.client
        client.pause("connect")
        assert self.route is not None, "an exchange connects once it is routed"
        task = client.ctx.spawn(client.ctx.pool.connect(self.route.target))
        task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Future[UpstreamConnection]) -> None:
        client = self.client
        client.resume("connect")
        if task.cancelled():
            return
        exc = task.exception()
        if client.closed or client.active is not self:
            if exc is None:
                client.ctx.pool.release(task.result(), client.ctx.now)
            return
        if exc is not None:
            code = 504 if isinstance(exc, TimeoutError) else 503
            log.warning(
                "%d %s %s: cannot connect to %s: %s",
                code, self.method.decode(), self.log_url(), self.route_url(), exc,
            )
            self.fail(code, log_it=False)
        else:
            self.attach(task.result())
        client.flush()

    def attach(self, conn: UpstreamConnection) -> None:
        self.upstream = conn
        conn.attach(self, self.client)
        conn.out = self.pending
        self.pending = []
        self.sent_at = time.time()
        conn.flush()

    def send_upstream(self, data: bytes) -> None:
        if self.local or self.done_response:
            return
        if self.chunked_request:
            pieces = http.encode_chunk(data)
        else:
            pieces = [data]
        target = self.upstream.out if self.upstream is not None else self.pending
        target.extend(pieces)
        if self.route is not None:
            self.client.ctx.mark(self.route)

    def request_complete(self) -> None:
        self.done_request = True
        if self.chunked_request and not self.done_response and not self.local:
            target = self.upstream.out if self.upstream is not None else self.pending
            target.append(http.LAST_CHUNK)
        if self.done_response:
            self.client.finish(self)

    # -- response side (called by UpstreamConnection) -------------------------------------

    def on_response_head(self, status: int, reason: bytes, headers: Headers) -> None:
        client = self.client
        if 100 <= status < 200 and status != 101:
            # Interim response (100 Continue, 103 Early Hints): pass on, keep waiting.
            self.interim = True
            if self.version == "1.1":
                kept, _ = http.end_to_end(headers)
                client.write(b"HTTP/1.1 %d %s\r\n%s\r\n" % (status, reason, http.serialize_headers(kept)))
            return
        self.status = status
        kept, _ = http.end_to_end(headers)
        if status == 101 and self.upgrade:
            kept.append((b"Connection", b"Upgrade"))
            kept.extend((n, v) for n, v in headers if n.lower() == b"upgrade")
        elif self.head_request or status in _NO_BODY_STATUS:
            pass
        elif not any(n.lower() == b"content-length" for n, _ in kept):
            # The target sent chunks or will close the connection at the end; either
            # way the client gets chunks (HTTP/1.1) or the end of the connection (1.0).
            self.until_close = not any(
                n.lower() == b"transfer-encoding" and b"chunked" in v.lower() for n, v in headers
            )
            if self.version == "1.1":
                self.chunked_to_client = True
                kept.append((b"Transfer-Encoding", b"chunked"))
            else:
                self.close_after = True
        if self.upgrade and status != 101:
            self.close_after = True
        if status != 101:
            if self.close_after or not self.keep_alive:
                kept.append((b"Connection", b"close"))
            elif self.version == "1.0":
                kept.append((b"Connection", b"keep-alive"))
        client.write(b"HTTP/1.1 %d %s\r\n%s\r\n" % (status, reason, http.serialize_headers(kept)))
        self.head_sent = True
        if self.head_request and status != 101:
            # httptools cannot be told that a HEAD response has no body, so the
            # response ends here and the connection is not reused.
            self.finish_response(reuse=False)

    def on_response_body(self, data: bytes) -> None:
        if self.done_response:
            return
        client = self.client
        if self.chunked_to_client:
            client.write(b"%x\r\n" % len(data))
            client.write(data)
            client.write(http.CRLF)
        else:
            client.write(data)
        if self.status < 300 and self.route is not None:
            client.ctx.mark(self.route)

    def on_response_complete(self, keep_alive: bool) -> None:
        if self.interim:
            self.interim = False
            return
        if self.done_response or self.status == 101:
            return
        if self.chunked_to_client:
            self.client.write(http.LAST_CHUNK)
        self.finish_response(reuse=keep_alive)

    def finish_response(self, reuse: bool) -> None:
        client = self.client
        self.done_response = True
        if self.status < 300 and self.route is not None:
            client.ctx.mark(self.route)
        conn, self.upstream = self.upstream, None
        if conn is not None:
            conn.flush()
            if reuse and self.done_request and not self.head_request:
                client.ctx.pool.release(conn, client.ctx.now)
            else:
                conn.close()
        if not self.done_request:
            # The target answered before reading the whole request (e.g. 413): the rest
            # of the body is not worth reading, so the client connection ends.
            self.close_after = True
        client.finish(self)

    def on_upstream_upgrade(self, rest: bytes) -> None:
        if self.status != 101:
            self.on_upstream_invalid(ValueError("upgrade without 101"))
            return
        conn, self.upstream = self.upstream, None
        self.done_response = True
        if conn is not None:
            self.client.start_tunnel(self, conn, rest)

    def on_upstream_invalid(self, exc: Exception) -> None:
        conn, self.upstream = self.upstream, None
        if conn is not None:
            conn.abort()
        log.warning("Invalid response from %s for %s: %s", self.route_url(), self.log_url(), exc)
        self.upstream_failed(502)

    def on_upstream_lost(self, exc: Exception | None) -> None:
        self.upstream = None
        if self.head_sent and self.until_close and not self.done_response:
            # A response delimited by the connection closing has simply ended.
            if self.chunked_to_client:
                self.client.write(http.LAST_CHUNK)
            self.done_response = True
            if self.status < 300 and self.route is not None:
                self.client.ctx.mark(self.route)
            if not self.done_request:
                self.close_after = True
            self.client.finish(self)
            return
        if (
            not self.head_sent
            and self.reused
            and not self.retried
            and not self.has_body
            and not self.interim
        ):
            # The pooled connection was closed by the target just as we reused it.
            # Nothing was consumed by anyone, so trying once on a new connection is safe.
            self.retried = True
            self.reused = False
            self.pending = [self.build_head(self.route)]  # type: ignore[arg-type]
            self.connect()
            return
        log.warning("Connection to %s lost during %s: %s", self.route_url(), self.log_url(), exc)
        self.upstream_failed(502)

    def upstream_failed(self, code: int) -> None:
        if self.head_sent:
            # Part of the response is out: the only honest signal left is to cut it.
            self.done_response = True
            self.client.abort()
        else:
            self.fail(code, log_it=False)

    # -- local responses ---------------------------------------------------------------------

    def respond(self, status: int, body: bytes, content_type: bytes, extra: Headers | None = None) -> None:
        """Answer from the proxy itself; any request body is read and discarded."""
        self.local = True
        self.status = status
        if self.upgrade or (self.has_body and not self.done_request):
            # Reading a large unwanted upload to its end is not worth it: close instead.
            self.close_after = True
        keep = self.keep_alive and not self.close_after
        self.client.write(http.simple_response(status, body, content_type, keep, extra))
        self.head_sent = True
        self.done_response = True
        if not keep:
            self.close_after = True
        if self.done_request or self.close_after:
            self.client.finish(self)

    def fail(self, code: int, log_it: bool = True) -> None:
        """Send an error page: from --error-target if set, else the built-in one."""
        conn, self.upstream = self.upstream, None
        if conn is not None:
            conn.abort()
        self.local = True
        if log_it:
            level = logging.WARNING if code < 500 else logging.ERROR
            log.log(level, "%d %s %s", code, self.method.decode(), self.log_url())
        error_target = self.client.ctx.options.error_target
        if error_target:
            self.client.ctx.spawn(self._fetch_error_page(error_target, code))
        else:
            self.respond(code, http.error_page(code), b"text/html; charset=utf-8")

    async def _fetch_error_page(self, error_target: str, code: int) -> None:
        url = f"{error_target.rstrip('/')}/{code}?" + urlencode({"url": self.url.decode("latin-1")})
        try:
            _, headers, body = await fetch(url, timeout=10.0)
        except Exception as exc:
            log.error("Failed to get custom error page %s: %s", url, exc)
            headers, body = [(b"Content-Type", b"text/html; charset=utf-8")], http.error_page(code)
        if self.client.closed:
            return
        ctype = b"text/html"
        extra: Headers = []
        for name, value in headers:
            low = name.lower()
            if low == b"content-type":
                ctype = value
            elif low == b"content-encoding":
                extra.append((b"Content-Encoding", value))
        self.respond(code, body, ctype, extra)
        self.client.flush()

    def log_url(self) -> str:
        return self.url.split(b"?", 1)[0].decode("latin-1")

    def route_url(self) -> str:
        return self.route.target.url if self.route is not None else "?"
