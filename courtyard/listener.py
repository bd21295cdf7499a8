"""A listening socket that takes every waiting connection when it takes one.

Since libuv 1.45 (libuv PR #3696), a uvloop server accepts ONE connection per event-loop
iteration. On a busy loop an iteration takes as long as it takes to serve every ready
connection, so new connections wait in the kernel's accept queue while the old ones are
served. Measured on the hub port (bench/connect.py, 500 keep-alive clients, 2 cores): one
``accept4`` per ``epoll_wait``, about 5 accepts a second, up to 320 connections queued and
wrk timing out 252 first requests; the built-in proxy's public port has the same loop.

:class:`Listener` keeps uvloop's own server, whose accept is the cheapest, and each time it
accepts a connection also accepts whatever else waits (up to ``backlog``) and hands those
sockets to the loop with ``connect_accepted_socket``. An idle hub pays one ``accept()``
that finds nothing per new connection; a busy one drains its queue in one iteration. A
timer or a second watcher on the socket would cost every iteration, or is not possible
on libuv. The hub port (``app.py``) and the built-in proxy's public port
(``proxy/server.py``) use it; like an ``asyncio.Server`` it has ``sockets``, ``close()``
and ``wait_closed()``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl as ssl_module
from collections.abc import Callable

log = logging.getLogger("courtyard")

# errors that say "not now" rather than "never": the next accept will try again
RESOURCE_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class Listener:
    """Serve ``protocol_factory`` on ``sock`` (bound and listening) on the running loop."""

    def __init__(self, sock: socket.socket, protocol_factory: Callable[[], asyncio.BaseProtocol],
                 *, ssl: ssl_module.SSLContext | None = None, backlog: int = 2048) -> None:
        self.sockets = [sock]
        self._sock = sock
        self._factory = protocol_factory
        self._ssl = ssl
        self._backlog = backlog
        self._server: asyncio.Server | None = None
        self._pending: set[asyncio.Task[object]] = set()
        sock.setblocking(False)

    async def start(self) -> Listener:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, sock=self._sock, ssl=self._ssl,
                                                backlog=self._backlog)
        return self

    def is_serving(self) -> bool:
        return self._server is not None and self._server.is_serving()

    def _protocol(self) -> asyncio.BaseProtocol:
        """The loop accepted one connection: take the others waiting too, then serve it."""
        self._accept_waiting()
        return self._factory()

    def _accept_waiting(self) -> None:
        for _ in range(self._backlog):
            try:
                conn, _address = self._sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as e:
                if e.errno in RESOURCE_ERRORS:  # the loop's own accept logs and retries
                    return
                raise
            self._adopt(conn)

    def _adopt(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        if conn.family in (socket.AF_INET, socket.AF_INET6):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        loop = asyncio.get_running_loop()
        task = loop.create_task(loop.connect_accepted_socket(self._factory, conn, ssl=self._ssl))
        self._pending.add(task)
        task.add_done_callback(self._adopted)

    def _adopted(self, task: asyncio.Task[object]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # e.g. a TLS handshake that failed or timed out: that connection only
            log.debug("Dropped a new connection: %s", task.exception())

    def close(self) -> None:
        """Stop accepting and close the listening socket; connections already made go on."""
        if self._server is not None:
            self._server.close()
        for task in self._pending:
            task.cancel()

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()


def listening_socket(host: str, port: int, *, reuse_port: bool = False,
                     backlog: int = 2048) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening (``port`` 0: any free port)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock
