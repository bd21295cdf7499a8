"""A small HTTP/1.1 client for the hub's own hot paths: readiness checks and proxy API calls.

Starting a server costs the hub a handful of HTTP requests of its own: readiness probes of
the new server (several while it starts) and one call to the proxy's API, and as many again
to stop it. With hundreds of spawns at once on a small machine, the CPU those requests take
is CPU the servers themselves need. This module does them over plain asyncio sockets with
httptools' parser. It speaks plain ``http://`` only; callers use ``httpx`` for ``https://``.

What it buys, ``bench/fastpaths.py`` (2026-12-07, 2 cores, load average 1.9, medians of
three interleaved rounds, CPU of the calling process):

- a readiness probe (``GET`` on a fresh connection, 50 at once): 161 µs against httpx's
  882 µs, 5,976 probes/s against 1,130;
- a route added and deleted through ``RestProxy`` (two calls on kept connections, 10 at
  once): 141 µs against httpx's 1,861 µs, 3,318 pairs/s against 463.

Tested on its own against real sockets in ``tests/test_http11.py``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

MAX_RESPONSE = 64 * 1024 * 1024


class HTTPError(OSError):
    """The request could not be made or the answer was not HTTP (like ``httpx.HTTPError``)."""


class ConnectError(HTTPError):
    """Nothing accepted the connection (refused, unreachable, timed out connecting)."""


@dataclass(frozen=True)
class Origin:
    """Where requests go: ``http://host:port`` split up, with the Host header to send."""

    host: str
    port: int
    host_header: bytes
    ip_literal: bool

    @classmethod
    def of(cls, url: str) -> Origin | None:
        """The origin of an ``http://`` URL; None for any other scheme."""
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            return None
        host = parts.hostname
        try:
            ipaddress.ip_address(host)
            literal = True
        except ValueError:
            literal = False
        port = parts.port or 80
        shown = f"[{host}]" if ":" in host else host
        return cls(host, port, f"{shown}:{port}".encode("idna"), literal)


def _request_bytes(origin: Origin, method: str, target: str, headers: dict[str, str],
                   body: bytes | None, keep_alive: bool) -> bytes:
    lines = [f"{method} {target} HTTP/1.1".encode(), b"Host: " + origin.host_header,
             b"Connection: " + (b"keep-alive" if keep_alive else b"close")]
    lines += [f"{k}: {v}".encode("latin-1") for k, v in headers.items()]
    if body is not None or method in ("POST", "PUT", "PATCH"):
        lines.append(b"Content-Length: %d" % len(body or b""))
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


async def _connect(origin: Origin) -> socket.socket:
    """A connected non-blocking socket (no stream objects: cheaper for one-shot probes)."""
    loop = asyncio.get_running_loop()
    if origin.ip_literal:
        family = socket.AF_INET6 if ":" in origin.host else socket.AF_INET
        addresses: list[tuple[socket.AddressFamily, tuple[object, ...]]] = [
            (family, (origin.host, origin.port))]
    else:
        infos = await loop.getaddrinfo(origin.host, origin.port, type=socket.SOCK_STREAM)
        addresses = [(info[0], info[4]) for info in infos]
    problem: OSError = ConnectError(f"cannot resolve {origin.host}")
    for family, address in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
        except OSError as e:
            sock.close()
            problem = e
            continue
        except BaseException:
            sock.close()
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise ConnectError(f"cannot connect to {origin.host}:{origin.port}: {problem}")


class _Response:
    """Collects one response from httptools' callbacks."""

    def __init__(self) -> None:
        self.body: list[bytes] = []
        self.size = 0
        self.done = False
        self.keep_alive = False
        self.headers_done = False
        self.framed = False  # a length or chunks mark the body's end; else the EOF does
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, _value: bytes) -> None:
        if name.lower() in (b"content-length", b"transfer-encoding"):
            self.framed = True

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > MAX_RESPONSE:
            raise HTTPError("response too large")  # httptools keeps only the callback's name
        self.body.append(data)

    def on_message_complete(self) -> None:
        self.done = True
        # asked here: once the message is complete the parser resets, and answers False
        self.keep_alive = self.parser.should_keep_alive()

    @property
    def status(self) -> int:
        return int(self.parser.get_status_code())


async def _exchange(sock: socket.socket, request: bytes) -> tuple[_Response, bool]:
    """Send ``request`` and read the response; (response, whether the connection may be
    reused)."""
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, request)
    response = _Response()
    while not response.done:
        data = await loop.sock_recv(sock, 65536)
        if not data:
            if response.headers_done and not response.framed:
                break  # the EOF ends a body without a length (httptools cannot be told)
            raise HTTPError("the connection closed before the response was complete")
        try:
            response.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            break
        except httptools.HttpParserError as e:
            if response.size > MAX_RESPONSE:
                raise HTTPError(f"response over {MAX_RESPONSE} bytes") from None
            raise HTTPError(f"bad HTTP response: {e}") from None
    if not response.parser.get_status_code():
        raise HTTPError("no HTTP response")
    return response, response.done and response.keep_alive


async def get_status(url: str, timeout: float) -> int:
    """``GET url`` on a fresh connection (closed afterwards); the response's status code.

    Raises :class:`HTTPError` (:class:`ConnectError` when nothing listens) or TimeoutError.
    """
    origin = Origin.of(url)
    if origin is None:
        raise ValueError(f"not an http:// URL: {url}")
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    request = _request_bytes(origin, "GET", target, {"Accept": "application/json",
                                                     "User-Agent": "courtyard"}, None, False)
    async with asyncio.timeout(timeout):
        sock = await _connect(origin)
        try:
            response, _ = await _exchange(sock, request)
        except ConnectionError as e:
            raise HTTPError(str(e) or type(e).__name__) from None
        finally:
            sock.close()
    return response.status


class Client:
    """Keep-alive connections to one ``http://`` origin, for many small requests."""

    def __init__(self, base_url: str, keep: int = 16) -> None:
        origin = Origin.of(base_url)
        if origin is None:
            raise ValueError(f"not an http:// URL: {base_url}")
        self.origin = origin
        self._idle: list[socket.socket] = []
        self._keep = keep

    async def request(self, method: str, target: str, headers: dict[str, str] | None = None,
                      body: bytes | None = None, timeout: float = 20.0) -> tuple[int, bytes]:
        """(status, body) of one request. A kept connection the server closed meanwhile is
        replaced once, transparently; other failures raise :class:`HTTPError`."""
        request = _request_bytes(self.origin, method, target, headers or {}, body, True)
        async with asyncio.timeout(timeout):
            while True:
                reused = bool(self._idle)
                sock = self._idle.pop() if reused else await _connect(self.origin)
                try:
                    response, reusable = await _exchange(sock, request)
                except (ConnectionError, HTTPError) as e:
                    sock.close()
                    if reused:
                        continue  # it went stale while idle: try again on another
                    raise e if isinstance(e, HTTPError) else HTTPError(str(e)) from None
                except BaseException:
                    sock.close()
                    raise
                if reusable and len(self._idle) < self._keep:
                    self._idle.append(sock)
                else:
                    sock.close()
                return response.status, b"".join(response.body)

    def close(self) -> None:
        for sock in self._idle:
            sock.close()
        self._idle.clear()
