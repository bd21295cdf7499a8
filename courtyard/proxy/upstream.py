"""Connections to targets: a keep-alive pool and the protocol that parses responses.

An :class:`UpstreamConnection` belongs to one exchange at a time. It parses the target's
response with httptools and hands each event to its exchange (see ``server.Exchange``);
after a reusable response it goes back to the pool, keyed by (host, port, TLS).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

import httptools

from .http import Headers
from .options import ProxyOptions
from .routes import Target

if TYPE_CHECKING:
    from .server import ClientConnection

log = logging.getLogger("courtyard.proxy")

PoolKey = tuple[str, int, bool]


class ResponseSink(Protocol):
    """What an upstream connection reports to; implemented by ``server.Exchange``."""

    def on_response_head(self, status: int, reason: bytes, headers: Headers) -> None: ...
    def on_response_body(self, data: bytes) -> None: ...
    def on_response_complete(self, keep_alive: bool) -> None: ...
    def on_upstream_upgrade(self, rest: bytes) -> None: ...
    def on_upstream_invalid(self, exc: Exception) -> None: ...
    def on_upstream_lost(self, exc: Exception | None) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    """One connection to a target, reused across exchanges while the target allows."""

    def __init__(self, pool: UpstreamPool, key: PoolKey) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.sink: ResponseSink | None = None
        self.client: ClientConnection | None = None
        # Set once a 101 turned this connection into a raw byte pipe to ``client``.
        self.tunnel = False
        self.closed = False
        self.idle_since = 0.0
        self.out: list[bytes] = []
        self._reason = b""
        self._headers: Headers = []
        self._in_body = False

    # -- asyncio callbacks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop: not a subclass

    def data_received(self, data: bytes) -> None:
        client = self.client
        if self.tunnel and client is not None:
            client.tunnel_from_upstream(data)
            return
        sink = self.sink
        if sink is None:
            # A pooled connection has no business sending anything: drop it.
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            sink.on_upstream_upgrade(data[exc.args[0]:])
        except httptools.HttpParserCallbackError:
            log.exception("Error handling a response from %s:%s", *self.key[:2])
            sink.on_upstream_invalid(RuntimeError("internal error"))
        except httptools.HttpParserError as exc:
            sink.on_upstream_invalid(exc)
        except Exception:
            log.exception("Error relaying a response from %s:%s", *self.key[:2])
            self.abort()
            if client is not None:
                client.abort()
        if client is not None:
            client.flush()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        sink, client = self.sink, self.client
        self.sink = self.client = None
        if self.tunnel and client is not None:
            client.close()
        elif sink is not None:
            sink.on_upstream_lost(exc)
            if client is not None:
                client.flush()

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.pause("upstream")

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.resume("upstream")

    # -- httptools callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._headers = []
        self._reason = b""
        self._in_body = False

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        # Trailer fields arrive here too, after the head; they are dropped (RFC 9110
        # §6.5.1 lets a proxy discard trailers it does not forward).
        if not self._in_body:
            self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_body = True
        if self.sink is not None:
            status = self.parser.get_status_code()
            self.sink.on_response_head(status, self._reason, self._headers)

    def on_body(self, body: bytes) -> None:
        if self.sink is not None:
            self.sink.on_response_body(body)

    def on_message_complete(self) -> None:
        if self.sink is not None:
            self.sink.on_response_complete(self.parser.should_keep_alive())

    # -- used by the exchange ------------------------------------------------------------

    def attach(self, sink: ResponseSink, client: ClientConnection) -> None:
        self.sink = sink
        self.client = client
        if client.write_paused and self.transport is not None:
            self.transport.pause_reading()

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def flush(self) -> None:
        if self.out and self.transport is not None and not self.closed:
            out = self.out
            self.out = []
            if len(out) == 1:
                self.transport.write(out[0])
            else:
                self.transport.writelines(out)

    def detach(self) -> None:
        self.sink = None
        self.client = None

    def close(self) -> None:
        self.detach()
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        self.detach()
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.abort()


class UpstreamPool:
    """Idle keep-alive connections per target, most recently used first."""

    def __init__(self, options: ProxyOptions) -> None:
        self.options = options
        self._idle: dict[PoolKey, list[UpstreamConnection]] = {}
        self._client_ssl: ssl.SSLContext | None = None

    def take(self, target: Target) -> UpstreamConnection | None:
        conns = self._idle.get((target.host, target.port, target.secure))
        while conns:
            conn = conns.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                conn.transport.resume_reading()
                return conn
        return None

    async def connect(self, target: Target) -> UpstreamConnection:
        """Open a new connection; raises OSError or TimeoutError like ``create_connection``."""
        loop = asyncio.get_running_loop()
        key = (target.host, target.port, target.secure)
        sslctx: ssl.SSLContext | None = None
        if target.secure:
            if self._client_ssl is None:
                self._client_ssl = self.options.client_ssl_context()
            sslctx = self._client_ssl
        async with asyncio.timeout(self.options.connect_timeout or None):
            _, conn = await loop.create_connection(
                lambda: UpstreamConnection(self, key),
                target.host,
                target.port,
                ssl=sslctx,
                server_hostname=target.host if sslctx else None,
            )
        return conn

    def release(self, conn: UpstreamConnection, now: float) -> None:
        conn.detach()
        if conn.closed or conn.transport is None or conn.transport.is_closing():
            return
        conn.idle_since = now
        self._idle.setdefault(conn.key, []).append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        conns = self._idle.get(conn.key)
        if conns and conn in conns:
            conns.remove(conn)

    def sweep(self, now: float) -> None:
        """Close connections idle longer than the upstream idle timeout."""
        limit = now - self.options.upstream_idle_timeout
        for key, conns in list(self._idle.items()):
            stale = [c for c in conns if c.idle_since < limit]
            for conn in stale:
                conns.remove(conn)
                conn.close()
            if not conns:
                del self._idle[key]

    def close_all(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()


class _Page:
    """Collects a whole response for :func:`fetch`."""

    def __init__(self) -> None:
        self.headers: Headers = []
        self.body: list[bytes] = []
        self.done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done = True


async def fetch(url: str, timeout: float, limit: int = 1 << 20) -> tuple[int, Headers, bytes]:
    """GET ``url`` on a fresh connection; return (status, headers, body).

    Used only for --error-target pages, so it favours simplicity over reuse. Raises
    OSError, TimeoutError or ValueError when the page cannot be had.
    """
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    host = parts.hostname or "localhost"
    port = parts.port or (443 if secure else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    page = _Page()
    parser = httptools.HttpResponseParser(page)
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(
            host, port, ssl=ssl.create_default_context() if secure else None
        )
        try:
            request = f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n"
            writer.write(request.encode("latin-1"))
            size = 0
            while not page.done:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise ValueError("error page too large")
                parser.feed_data(chunk)
        finally:
            writer.close()
    if not page.done and not page.headers:
        raise ValueError("no response")
    return parser.get_status_code(), page.headers, b"".join(page.body)
