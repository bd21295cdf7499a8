"""courtyard.http11 against real sockets: a small asyncio server per test answers the way a
notebook server or a proxy's REST API might, well or badly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from courtyard import http11

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Served:
    """A listening server: its URL, how many connections it accepted, what it was sent."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.connections = 0
        self.requests: list[bytes] = []


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[Served]:
    served: Served | None = None
    writers: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert served is not None
        served.connections += 1
        writers.append(writer)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    served = Served(server.sockets[0].getsockname()[1])
    try:
        yield served
    finally:
        server.close()
        for writer in writers:  # the handlers then end on their reader's EOF
            writer.close()
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader, served: Served) -> bytes:
    """One request's head and body (by Content-Length), recorded."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    request = head + (await reader.readexactly(length) if length else b"")
    served.requests.append(request)
    return request


def keep_alive(served_box: list[Served], body: bytes = b'{"ok": true}',
               close_after: int = 0) -> Handler:
    """Answers every request on the connection; with ``close_after``, closes the connection
    after that many answers without saying so (as a server's idle timeout does)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answered = 0
        while True:
            request = await read_request(reader, served_box[0])
            status = b"201 Created" if request.startswith(b"POST") else b"200 OK"
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
                         + body)
            await writer.drain()
            answered += 1
            if close_after and answered >= close_after:
                return

    return handle


@asynccontextmanager
async def keep_alive_server(**kwargs: object) -> AsyncIterator[Served]:
    box: list[Served] = []
    async with serving(keep_alive(box, **kwargs)) as served:  # type: ignore[arg-type]
        box.append(served)
        yield served


async def test_a_client_reuses_its_connection() -> None:
    async with keep_alive_server() as served:
        client = http11.Client(served.url)
        try:
            for _ in range(3):
                assert await client.request("GET", "/api/routes") == (200, b'{"ok": true}')
            status, _ = await client.request("POST", "/api/routes/x", {"A": "b"}, b"{}")
        finally:
            client.close()
    assert status == 201
    assert served.connections == 1
    first, post = served.requests[0], served.requests[-1]
    assert first.startswith(b"GET /api/routes HTTP/1.1\r\n")
    assert f"Host: {served.url.removeprefix('http://')}".encode() in first
    assert b"Connection: keep-alive" in first
    assert b"A: b\r\n" in post and b"Content-Length: 2\r\n" in post and post.endswith(b"{}")


async def test_requests_in_flight_at_once_use_connections_of_their_own() -> None:
    async with keep_alive_server() as served:
        client = http11.Client(served.url, keep=2)
        try:
            answers = await asyncio.gather(*(client.request("GET", "/") for _ in range(5)))
            assert all(status == 200 for status, _ in answers)
            assert served.connections == 5
            # two were kept: the next requests reuse them
            await asyncio.gather(client.request("GET", "/"), client.request("GET", "/"))
            assert served.connections == 5
        finally:
            client.close()


async def test_a_kept_connection_the_server_closed_is_replaced() -> None:
    async with keep_alive_server(close_after=1) as served:
        client = http11.Client(served.url)
        try:
            for _ in range(3):
                assert (await client.request("DELETE", "/api/routes/x"))[0] == 200
        finally:
            client.close()
    assert served.connections == 3


async def test_chunked_and_unsized_bodies() -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for part in (b"hello", b", ", b"world"):
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
            await asyncio.sleep(0.01)  # the chunks arrive in separate reads
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await reader.read()  # kept open: the client decides

    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await writer.drain()

    async with serving(chunked) as served:
        client = http11.Client(served.url)
        try:
            assert await client.request("GET", "/") == (200, b"hello, world")
            assert len(client._idle) == 1  # a complete chunked answer leaves it reusable
        finally:
            client.close()
    async with serving(until_close) as served:
        client = http11.Client(served.url)
        try:
            assert await client.request("GET", "/") == (200, b"all of it")
            assert client._idle == []
        finally:
            client.close()


async def test_get_status_probes_on_a_connection_it_closes() -> None:
    closed = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        assert request.startswith(b"GET /user/a/api?x=1 HTTP/1.1\r\n")
        assert b"Connection: close" in request
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        if await reader.read() == b"":
            closed.set()

    async with serving(handle) as served:
        assert await http11.get_status(f"{served.url}/user/a/api?x=1", 5) == 503
        await asyncio.wait_for(closed.wait(), 5)


async def test_nothing_listening_is_a_connect_error(unused_tcp_port: int) -> None:
    url = f"http://127.0.0.1:{unused_tcp_port}/api"
    with pytest.raises(http11.ConnectError):
        await http11.get_status(url, 5)
    client = http11.Client(url)
    with pytest.raises(http11.ConnectError):
        await client.request("GET", "/")


@pytest.mark.parametrize("answer", [
    b"SSH-2.0-OpenSSH_9.2\r\n",  # not HTTP
    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",  # closed before the end
    b"",  # closed with no answer
])
async def test_a_bad_or_cut_answer_is_an_http_error(answer: bytes) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()

    async with serving(handle) as served:
        with pytest.raises(http11.HTTPError):
            await http11.get_status(served.url, 5)
        client = http11.Client(served.url)
        with pytest.raises(http11.HTTPError):
            await client.request("GET", "/")
        assert client._idle == []


async def test_an_answer_over_the_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http11, "MAX_RESPONSE", 1000)
    body = b"x" * 5000
    box: list[Served] = []
    async with serving(keep_alive(box, body=body)) as served:
        box.append(served)
        client = http11.Client(served.url)
        with pytest.raises(http11.HTTPError, match="over 1000 bytes"):
            await client.request("GET", "/")
        assert client._idle == []


async def test_a_silent_server_times_out() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async with serving(silent) as served:
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(TimeoutError):
            await http11.get_status(served.url, 0.2)
        client = http11.Client(served.url)
        with pytest.raises(TimeoutError):
            await client.request("GET", "/", timeout=0.2)
        assert client._idle == []
        assert loop.time() - began < 5  # bounded, not hung (not a timing figure)


def test_origins() -> None:
    assert http11.Origin.of("https://127.0.0.1:8001") is None
    assert http11.Origin.of("http:///nohost") is None
    v6 = http11.Origin.of("http://[::1]:8001/api")
    assert v6 is not None and v6.ip_literal and v6.host_header == b"[::1]:8001"
    named = http11.Origin.of("http://localhost/api")
    assert named is not None and not named.ip_literal and named.port == 80
    with pytest.raises(ValueError):
        http11.Client("https://example.org")


async def test_the_proxy_client_keeps_one_connection_to_an_http_api() -> None:
    from courtyard.proxy.rest import RestProxy

    routes = (b'{"/user/alice": {"target": "http://127.0.0.1:9", "jupyterhub": true},'
              b' "/": {"target": "http://127.0.0.1:8081"}}')
    box: list[Served] = []
    async with serving(keep_alive(box, body=routes)) as served:
        box.append(served)
        proxy = RestProxy(api_url=served.url, auth_token="secret")
        try:
            assert list(await proxy.get_all_routes()) == ["/user/alice/"]
            await proxy.add_route("/user/bob/", "http://127.0.0.1:10", {"user": "bob"})
            assert await proxy.api_state() == "ours"
        finally:
            await proxy.aclose()
    assert served.connections == 1
    assert b"Authorization: token secret" in served.requests[0]
    assert served.requests[1].startswith(b"POST /api/routes/user/bob HTTP/1.1")


async def test_an_unreachable_https_api_fails_as_an_http_one(unused_tcp_port: int) -> None:
    from courtyard.errors import ProxyError
    from courtyard.proxy.rest import RestProxy

    for scheme in ("http", "https"):  # http11, then httpx: the same retries and error
        proxy = RestProxy(api_url=f"{scheme}://127.0.0.1:{unused_tcp_port}",
                          auth_token="secret", api_retry_timeout=0.2)
        try:
            with pytest.raises(ProxyError, match="ConnectError"):
                await proxy.add_route("/user/bob/", "http://127.0.0.1:10", {})
            assert await proxy.api_state() == "down"
        finally:
            await proxy.aclose()
