"""The data path: a raw ``asyncio.Protocol`` per client connection, parsed with httptools.

Each request becomes an :class:`Exchange` that streams the request to a pooled upstream
connection and the response back, chunk by chunk, never holding a whole body. Flow
control is by transport pausing: when one side's write buffer is full, reading from the
other side stops until it drains. A ``101 Switching Protocols`` turns the pair into a raw
byte pipe (WebSockets).

Writes are collected per event and flushed once at its end, so a small response costs
one send system call instead of three.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import deque
from collections.abc import Coroutine
from typing import Any, TypeVar

import httptools

from ..listener import Listener, listening_socket
from . import http
from .exchange import Exchange
from .http import Headers
from .options import ProxyOptions
from .routes import Route, RouteTable
from .upstream import UpstreamConnection, UpstreamPool

log = logging.getLogger("courtyard.proxy")
T = TypeVar("T")

class ProxyContext:
    """State shared by every connection of one worker: table, pool, clock, activity."""

    def __init__(self, options: ProxyOptions, table: RouteTable) -> None:
        self.options = options
        self.table = table
        self.pool = UpstreamPool(options)
        self.scheme = options.public_scheme
        self.now = time.time()
        # prefix -> wall-clock time of the last activity, drained by the reporter.
        self.activity: dict[str, float] = {}
        self.connections: set[ClientConnection] = set()
        # Background tasks (connects, error-page fetches), referenced until they finish.
        self.tasks: set[asyncio.Task[Any]] = set()
        self.debug = log.isEnabledFor(logging.DEBUG)
        self.trusted_networks = [ipaddress.ip_network(n, strict=False)
                                 for n in options.trusted_downstream_ips]

    def is_trusted(self, address: str) -> bool:
        """Whether a peer's own X-Forwarded-* headers are believed (and appended to)."""
        if not self.trusted_networks:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted_networks)

    def mark(self, route: Route) -> None:
        """Record activity on ``route``; at most every 0.1 s, so it is cheap per chunk."""
        now = time.time()
        if now - route.marked_at > 0.1:
            route.marked_at = route.last_activity = now
            self.activity[route.prefix] = now

    def tick(self) -> None:
        """Advance the clock and enforce timeouts; runs once a second."""
        self.now = now = time.time()
        for conn in list(self.connections):
            conn.check_timeouts(now)
        self.pool.sweep(now)

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``coro`` in the background, keeping a reference so it is not collected."""
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def take_activity(self) -> dict[str, float]:
        activity, self.activity = self.activity, {}
        return activity


class ClientConnection(asyncio.Protocol):
    """A connection from a browser or API client to the public port."""

    def __init__(self, ctx: ProxyContext) -> None:
        self.ctx = ctx
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client_ip = ""
        self.parsing: Exchange | None = None
        self.active: Exchange | None = None
        self.queue: deque[Exchange] = deque()
        self.paused: set[str] = set()
        self.write_paused = False
        self.closed = False
        self.tunnel: UpstreamConnection | None = None
        self._tunnel_route: Route | None = None
        self.upgrading: list[bytes] | None = None
        self.last_io = ctx.now
        self.out: list[bytes] = []
        self._url = b""
        self._headers: Headers = []
        self._header_size = 0
        self.trusted = False  # the peer is a proxy whose X-Forwarded-* headers we keep
        # When the request head now being read began (first, the connection): the head
        # must be complete within header_timeout of it, however slowly it trickles in.
        self.head_started: float | None = time.time()

    # -- asyncio callbacks --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop: not a subclass
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if isinstance(peer, tuple) else "127.0.0.1"
        self.trusted = self.ctx.is_trusted(self.client_ip)
        self.ctx.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.last_io = time.time()
        if self.tunnel is not None:
            self.tunnel.transport.write(data)  # type: ignore[union-attr]
            if self._tunnel_route is not None:
                self.ctx.mark(self._tunnel_route)
            return
        if self.upgrading is not None:
            self.upgrading.append(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0]
            if self.active is not None and self.active.upgrade:
                self.upgrading = [data[offset:]] if offset < len(data) else []
                self.pause("upgrade")
            else:
                self.error_and_close(400)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _RequestRejected):
                self.error_and_close(exc.__context__.status)
            else:
                log.exception("Error handling a request from %s", self.client_ip)
                self.abort()
        except httptools.HttpParserError:
            self.error_and_close(400)
        except Exception:
            # A bug must cost one connection, never the worker.
            log.exception("Error handling a request from %s", self.client_ip)
            self.abort()
        self.flush()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.ctx.connections.discard(self)
        if self.tunnel is not None:
            self.tunnel.close()
            self.tunnel = None
        for ex in (self.active, *self.queue):
            if ex is not None and ex.upstream is not None:
                ex.upstream.abort()
                ex.upstream = None
        self.active = self.parsing = None
        self.queue.clear()

    def pause_writing(self) -> None:
        self.write_paused = True
        conn = self.tunnel or (self.active.upstream if self.active else None)
        if conn is not None and conn.transport is not None:
            conn.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        conn = self.tunnel or (self.active.upstream if self.active else None)
        if conn is not None and conn.transport is not None:
            conn.transport.resume_reading()

    # -- httptools callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._header_size = 0
        if self.head_started is None:
            self.head_started = time.time()

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._grow(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.parsing is not None:
            return  # a trailer field of a chunked request: dropped
        self._headers.append((name, value))
        if len(self._headers) > self.ctx.options.max_headers:
            raise _RequestRejected(431)
        self._grow(len(name) + len(value) + 4)

    def _grow(self, size: int) -> None:
        self._header_size += size
        if self._header_size > self.ctx.options.max_header_size:
            raise _RequestRejected(431)

    def on_headers_complete(self) -> None:
        self.head_started = None
        parser = self.parser
        ex = Exchange(
            self,
            parser.get_method(),
            self._url,
            parser.get_http_version(),
            self._headers,
            parser.should_keep_alive(),
            parser.should_upgrade(),
        )
        if ex.method == b"CONNECT":
            raise _RequestRejected(405)
        self.parsing = ex
        if self.active is None:
            self.active = ex
            ex.begin()
        else:
            self.queue.append(ex)
            self.pause("pipeline")

    def on_body(self, body: bytes) -> None:
        if self.parsing is not None:
            self.parsing.send_upstream(body)

    def on_message_complete(self) -> None:
        ex, self.parsing = self.parsing, None
        if ex is not None:
            ex.request_complete()
        if self.active is not None and self.active.upstream is not None:
            self.active.upstream.flush()

    # -- used by exchanges -----------------------------------------------------------------

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def flush(self) -> None:
        if self.out and not self.closed and self.transport is not None:
            out = self.out
            self.out = []
            if len(out) == 1:
                self.transport.write(out[0])
            else:
                self.transport.writelines(out)
        active = self.active
        if active is not None and active.upstream is not None:
            active.upstream.flush()

    def pause(self, reason: str) -> None:
        if not self.paused and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self.paused.add(reason)

    def resume(self, reason: str) -> None:
        if reason in self.paused:
            self.paused.discard(reason)
            if not self.paused and self.transport is not None and not self.closed:
                self.transport.resume_reading()

    def finish(self, ex: Exchange) -> None:
        """The exchange is over on both sides: close, or start the next pipelined one."""
        if ex is not self.active:
            return
        self.active = None
        self.last_io = time.time()
        if self.head_started is not None:  # a pipelined head waited for us, not the client
            self.head_started = max(self.head_started, self.last_io)
        # The upstream may have been released while its write buffer was still full.
        self.resume("upstream")
        if self.ctx.debug:
            log.debug("%d %s %s -> %s", ex.status, ex.method.decode(), ex.log_url(), ex.route_url())
        if ex.close_after or not ex.keep_alive:
            self.close()
            return
        if self.queue:
            nxt = self.queue.popleft()
            self.active = nxt
            if not self.queue:
                self.resume("pipeline")
            nxt.begin()

    def start_tunnel(self, ex: Exchange, conn: UpstreamConnection, rest: bytes) -> None:
        """Switch to a raw byte pipe after the target accepted an upgrade."""
        self.active = None
        self.tunnel = conn
        self._tunnel_route = ex.route
        conn.tunnel = True
        conn.sink = None
        if rest:
            self.write(rest)
        buffered = self.upgrading or []
        self.upgrading = None
        for chunk in buffered:
            conn.transport.write(chunk)  # type: ignore[union-attr]
        self.resume("upgrade")

    def tunnel_from_upstream(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)
            self.last_io = time.time()
            if self._tunnel_route is not None:
                self.ctx.mark(self._tunnel_route)

    def error_and_close(self, status: int) -> None:
        """Answer a request we cannot parse, unless a response is already under way."""
        if self.closed:
            return
        if self.active is None or not self.active.head_sent:
            body = http.error_page(status)
            self.write(http.simple_response(status, body))
        self.close()

    def check_timeouts(self, now: float) -> None:
        opts = self.ctx.options
        if self.tunnel is not None or self.closed:
            return
        ex = self.active
        if ex is None:
            started = self.head_started
            if started is not None and opts.header_timeout and \
                    now - started > opts.header_timeout and self.upgrading is None:
                if self.ctx.debug:
                    log.debug("408 from %s: no complete request head in %.0f s",
                              self.client_ip, opts.header_timeout)
                self.error_and_close(408)
            elif now - self.last_io > opts.keep_alive_timeout:
                self.close()
            return
        if (
            opts.proxy_timeout
            and ex.upstream is not None
            and not ex.head_sent
            and now - ex.sent_at > opts.proxy_timeout
        ):
            log.warning("504 %s %s: no response from %s", ex.method.decode(), ex.log_url(), ex.route_url())
            ex.fail(504, log_it=False)
            self.flush()
        elif opts.timeout and now - self.last_io > opts.timeout:
            self.abort()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.flush()
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()


class _RequestRejected(Exception):
    """Raised inside a parser callback to answer with ``status`` and close."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


async def serve(ctx: ProxyContext, reuse_port: bool = False) -> Listener:
    """Start the public listener on ``ctx.options.ip/port`` and the once-a-second tick.

    Served through :class:`~courtyard.listener.Listener`, which takes every waiting
    connection when it takes one (a uvloop server takes one per loop iteration)."""
    loop = asyncio.get_running_loop()
    opts = ctx.options
    sock = listening_socket(opts.ip, opts.port, reuse_port=reuse_port)
    server = await Listener(sock, lambda: ClientConnection(ctx),
                            ssl=opts.server_ssl_context()).start()

    def tick() -> None:
        try:
            ctx.tick()
        finally:
            loop.call_later(1.0, tick)

    loop.call_later(1.0, tick)
    return server
