"""The data path: routing, forwarded headers, error pages, malformed input, timeouts."""

from __future__ import annotations

import socket
from collections.abc import Callable

import httpx
import pytest
from conftest import ProxyProcess, free_port


def raw_request(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, return everything the proxy sends back until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_longest_prefix_wins(api_proxy: ProxyProcess, backend: str, backend2: str) -> None:
    api_proxy.add_route("/user/alice", backend2)
    api_proxy.add_route("/user/alice/deep", backend)
    get = lambda path: httpx.get(api_proxy.url + path).json()["server"]  # noqa: E731
    assert get("/user/alice/") == "two"
    assert get("/user/alice/lab/tree") == "two"
    assert get("/user/alice/deep/x") == "one"
    assert get("/user/alicex/") == "one"  # whole segments only: falls back to /
    assert get("/user/al%69ce/x") == "two"  # matched on the decoded path
    assert get("/") == "one"


def test_path_query_and_host_forwarded(api_proxy: ProxyProcess, backend2: str) -> None:
    api_proxy.add_route("/user/bob", backend2 + "/prefix")
    response = httpx.get(
        api_proxy.url + "/user/bob/api?x=1&y=%20",
        headers={"X-Forwarded-For": "10.0.0.1", "Host": "hub.example.com:8443"},
    )
    body = response.json()
    assert body["path"] == "/prefix/user/bob/api?x=1&y=%20"
    headers = dict(body["headers"])
    assert headers["host"] == "hub.example.com:8443"
    # CHP appends to anyone's value; ours replaces a client's own (it is no proxy of ours)
    forged = "10.0.0.1," if api_proxy.kind == "chp" else ""
    assert headers["x-forwarded-for"] == f"{forged}127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-port"] == "8443"
    assert headers["x-forwarded-host"] == "hub.example.com:8443"


def test_hop_by_hop_headers_removed(proxy: ProxyProcess) -> None:
    response = httpx.get(
        proxy.url + "/x",
        headers={"Connection": "keep-alive, X-Secret", "X-Secret": "1", "Keep-Alive": "5",
                 "Proxy-Authorization": "basic x", "TE": "trailers", "X-Kept": "yes"},
    )
    names = {k for k, _ in response.json()["headers"]}
    assert "x-kept" in names
    assert not names & {"x-secret", "keep-alive", "proxy-authorization", "te"}


def test_no_route_is_404(proxy_factory: Callable[..., ProxyProcess]) -> None:
    p = proxy_factory()  # no default target
    response = httpx.get(p.url + "/nowhere")
    assert response.status_code == 404
    assert "text/html" in response.headers["content-type"]
    assert "404" in response.text


def test_unreachable_target_is_503(api_proxy: ProxyProcess) -> None:
    api_proxy.add_route("/dead", f"http://127.0.0.1:{free_port()}")
    assert httpx.get(api_proxy.url + "/dead/x").status_code == 503


@pytest.mark.parametrize("kind", ["courtyard", pytest.param("chp", marks=pytest.mark.chp)])
def test_error_target(
    kind: str, proxy_factory: Callable[..., ProxyProcess], backend2: str
) -> None:
    p = proxy_factory("--error-target", backend2 + "/hub/error", kind=kind)
    response = httpx.get(p.url + "/missing/page?q=1")
    assert response.status_code == 404
    assert response.json()["path"] == "/hub/error/404?url=%2Fmissing%2Fpage%3Fq%3D1"
    p.add_route("/dead", f"http://127.0.0.1:{free_port()}")
    response = httpx.get(p.url + "/dead")
    assert response.status_code == 503
    assert response.json()["path"] == "/hub/error/503?url=%2Fdead"


def test_keep_alive_and_chunked_both_ways(proxy: ProxyProcess) -> None:
    with httpx.Client(base_url=proxy.url) as client:
        for i in range(20):
            body = (b"abc" * 1000 * i for _ in range(3))  # generator -> chunked upload
            response = client.post("/upload", content=body)
            assert response.json()["size"] == 9000 * i
        response = client.get("/download/3000000")
        assert response.headers["transfer-encoding"] == "chunked"
        assert len(response.content) == 3000000
    assert client  # one connection was reused throughout (httpx pools it)


def test_status_codes_and_head(proxy: ProxyProcess) -> None:
    with httpx.Client(base_url=proxy.url) as client:
        assert client.get("/status/204").status_code == 204
        assert client.get("/status/304").status_code == 304
        response = client.get("/status/418")
        assert (response.status_code, response.text) == (418, "status body")
        head = client.head("/echo/x")
        assert head.status_code == 200 and head.content == b""
        assert client.get("/echo/after-head").json()["path"] == "/echo/after-head"


def test_pipelined_requests_answered_in_order(proxy: ProxyProcess) -> None:
    requests = b"".join(
        b"GET /echo/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(5)
    ) + b"GET /echo/last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    reply = raw_request(proxy.port, requests)
    order = [int(part.split(b'"', 1)[0]) for part in reply.split(b'"path":"/echo/')[1:-1]]
    assert order == [0, 1, 2, 3, 4]
    assert reply.count(b"HTTP/1.1 200") == 6


def test_absolute_form_request_target(proxy: ProxyProcess, backend2: str) -> None:
    proxy.add_route("/abs", backend2)
    reply = raw_request(proxy.port, b"GET http://hub.test/abs/x?y=1 HTTP/1.1\r\nHost: hub.test\r\n"
                        b"Connection: close\r\n\r\n")
    assert b'"path":"/abs/x?y=1"' in reply and b'"server":"two"' in reply


def test_malformed_request_is_400(proxy: ProxyProcess) -> None:
    assert raw_request(proxy.port, b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert raw_request(proxy.port, b"GET / HTTP/1.1\r\nBad Header\r\n\r\n").startswith(
        b"HTTP/1.1 400"
    )


def test_oversized_headers_is_431(proxy: ProxyProcess) -> None:
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n"
    assert raw_request(proxy.port, big).startswith(b"HTTP/1.1 431")
    # the proxy survives and still serves
    assert httpx.get(proxy.url + "/echo/ok").status_code == 200


def test_bad_upstream_response_is_502(proxy: ProxyProcess) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    proxy.add_route("/broken", f"http://127.0.0.1:{listener.getsockname()[1]}")
    with socket.create_connection(("127.0.0.1", proxy.port)) as client:
        client.sendall(b"GET /broken/ HTTP/1.1\r\nHost: x\r\n\r\n")
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert client.recv(65536).startswith(b"HTTP/1.1 502")
        conn.close()
    listener.close()


def test_proxy_timeout_is_504_and_slow_route_blocks_nobody(
    proxy_factory: Callable[..., ProxyProcess], backend: str
) -> None:
    p = proxy_factory("--default-target", backend, "--proxy-timeout", "1500")
    with httpx.Client(base_url=p.url, timeout=10) as slow_client:
        import threading

        result: dict[str, int] = {}
        thread = threading.Thread(
            target=lambda: result.update(code=slow_client.get("/slow/3").status_code)
        )
        thread.start()
        # while the slow request waits, other requests flow
        for _ in range(20):
            assert httpx.get(p.url + "/echo/fast").status_code == 200
        thread.join()
    assert result["code"] == 504


def server_of(port: int, path: str) -> str:
    """The backend that answered a GET on a fresh connection (any worker may take it)."""
    reply = raw_request(port, b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                        % path.encode())
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    return reply.split(b'"server":"', 1)[1].split(b'"', 1)[0].decode()


def test_routes_visible_on_every_worker(
    proxy_factory: Callable[..., ProxyProcess], backend: str, backend2: str
) -> None:
    p = proxy_factory("--default-target", backend, workers=2)
    assert len(p.pids()) == 3
    for i in range(10):
        p.add_route(f"/user/u{i}", backend2)
        assert {server_of(p.port, f"/user/u{i}/x") for _ in range(8)} == {"two"}
        p.delete_route(f"/user/u{i}")
        assert {server_of(p.port, f"/user/u{i}/x") for _ in range(8)} == {"one"}


class _OneShotTarget:
    """A raw socket target for exact control over what the proxy receives."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def accept(self) -> socket.socket:
        self.listener.settimeout(5)
        conn, _ = self.listener.accept()
        conn.settimeout(5)
        return conn

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("version", [b"1.1", b"1.0"])
def test_response_delimited_by_close(proxy: ProxyProcess, version: bytes) -> None:
    target = _OneShotTarget()
    proxy.add_route("/eof", target.url)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as client:
        client.sendall(b"GET /eof/ HTTP/" + version + b"\r\nHost: x\r\n\r\n")
        conn = target.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, ")
        conn.sendall(b"part two")
        conn.close()
        reply = b""
        while chunk := client.recv(65536):
            reply += chunk
            if version == b"1.1" and reply.endswith(b"0\r\n\r\n"):
                break
    target.close()
    head, body = reply.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200")
    if version == b"1.1":
        assert b"transfer-encoding: chunked" in head.lower()
        assert body.endswith(b"0\r\n\r\n")
        assert b"part one, " in body and b"part two" in body
    else:
        assert body == b"part one, part two"


def test_expect_100_continue(proxy: ProxyProcess) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as client:
        client.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                       b"Expect: 100-continue\r\n\r\n")
        interim = client.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n")
        client.sendall(b"hello")
        reply = b""
        while b'"sha256"' not in reply:
            reply += client.recv(65536)
    assert reply.startswith(b"HTTP/1.1 200") or b"HTTP/1.1 200" in reply
    assert b'"size":5' in reply
