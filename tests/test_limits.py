"""Limits an anonymous client cannot push past: request bodies in the hub (both ways a
request reaches its handler), the proxy's request heads (slowloris, too many fields), and
whose X-Forwarded-* headers the proxy passes on."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import ADMIN_TOKEN, free_port
from tests.proxy.conftest import _run_backend, start_proxy

MiB = 1024 * 1024


# -- a real hub process -------------------------------------------------------------------------
class HubProcess:
    """``courtyard serve`` with its built-in proxy, on free ports."""

    def __init__(self, cwd: Path, db_url: str, extra: str = "") -> None:
        self.cwd, self.hub_port, self.port = cwd, free_port(), free_port()
        self.log = cwd / "hub.log"
        (cwd / "courtyard_config.py").write_text(
            f"c.JupyterHub.db_url = {db_url!r}\n"
            f"c.JupyterHub.api_tokens = {{'{ADMIN_TOKEN}': 'admin'}}\n"
            "c.Authenticator.admin_users = {'admin'}\n"
            "c.JupyterHub.authenticator_class = 'dummy'\n"
            "c.DummyAuthenticator.password = 'letmein'\n"
            "c.JupyterHub.cleanup_proxy = True\n"
            f"c.BuiltinProxy.api_url = 'http://127.0.0.1:{free_port()}'\n"
            "c.BuiltinProxy.workers = 1\n" + extra)
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "courtyard", "serve", "--hub-port", str(self.hub_port),
                 "--port", str(self.port)], cwd=cwd, stdout=subprocess.DEVNULL, stderr=out)
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, self.log.read_text()
            try:
                if httpx.get(f"{self.public}/hub/api/").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)

    @property
    def public(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def peak_rss_kib(self) -> int:
        """The hub's peak resident memory so far (VmHWM): it keeps a brief spike too."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        raise AssertionError("no VmHWM")

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        return self.log.read_text()


@pytest.fixture
def hub_process(tmp_path: Path, db_url: str) -> Iterator[HubProcess]:
    hub = HubProcess(tmp_path, db_url)
    try:
        yield hub
    finally:
        if hub.proc.poll() is None:
            hub.stop()
        pid_file = tmp_path / "courtyard-proxy.pid"
        if pid_file.exists():  # cleanup_proxy stops it; this only covers a failed start
            try:
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass


def read_response(sock: socket.socket) -> bytes:
    """Everything until the peer closes (a reset after the response counts as closing)."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def json_body(response: bytes) -> dict:
    return orjson.loads(response.partition(b"\r\n\r\n")[2])


HEAD = (b"POST /hub/api/users/x/tokens HTTP/1.1\r\nHost: hub\r\n"
        b"Content-Type: application/json\r\n")


# -- bodies ------------------------------------------------------------------------------------
def test_200_mb_without_a_token_is_refused_and_memory_stays_flat(hub_process: HubProcess):
    """The issue's attack: a 200 MB body to the token API, which reads bodies before it
    knows the caller. Declared: refused before a byte is read. Chunked: cut at the limit."""
    before = hub_process.peak_rss_kib()
    with socket.create_connection(("127.0.0.1", hub_process.hub_port), timeout=30) as s:
        s.sendall(HEAD + b"Content-Length: %d\r\n\r\n" % (200 * MiB))
        response = read_response(s)  # the body is never sent: the answer must not need it
    assert response.startswith(b"HTTP/1.1 413 "), response[:300]
    assert json_body(response)["status"] == 413
    assert "at most 4194304 bytes" in json_body(response)["message"]

    with socket.create_connection(("127.0.0.1", hub_process.hub_port), timeout=30) as s:
        s.sendall(HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
        answer: list[bytes] = []
        reader = threading.Thread(target=lambda: answer.append(read_response(s)))
        reader.start()
        chunk = b"%x\r\n%s\r\n" % (MiB, b"{" * MiB)
        try:
            for _ in range(200):
                s.sendall(chunk)
            s.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused midway, as it should be
        reader.join(30)
    assert answer and answer[0].startswith(b"HTTP/1.1 413 "), answer[:1]
    assert json_body(answer[0])["status"] == 413
    grown_mib = (hub_process.peak_rss_kib() - before) / 1024
    assert grown_mib < 40, f"the hub's peak memory grew by {grown_mib:.0f} MiB"
    # and the hub still answers
    assert httpx.get(f"http://127.0.0.1:{hub_process.hub_port}/hub/api/").status_code == 200


def test_big_login_form_is_refused_with_the_error_page(hub_process: HubProcess):
    with socket.create_connection(("127.0.0.1", hub_process.port), timeout=30) as s:
        s.sendall(b"POST /hub/login HTTP/1.1\r\nHost: hub\r\nContent-Type: "
                  b"application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n" % (50 * MiB))
        response = read_response(s)  # through the proxy, which streams and never buffers
    assert response.startswith(b"HTTP/1.1 413 "), response[:300]
    assert b"text/html" in response.partition(b"\r\n\r\n")[0].lower()


async def test_a_body_at_the_limit_works_and_one_byte_more_is_413(make_hub):
    hub = make_hub(api_max_body_size=64 * 1024)
    auth = {"Authorization": f"token {ADMIN_TOKEN}"}
    names, body = [], b""
    while True:  # the largest POST /users body that fits
        candidate = orjson.dumps({"usernames": [*names, f"user{len(names):05d}"]})
        if len(candidate) > 64 * 1024:
            break
        names.append(f"user{len(names):05d}")
        body = candidate
    body += b" " * (64 * 1024 - len(body))  # exactly the limit
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=hub.asgi),
                                 base_url="http://127.0.0.1:8081", headers=auth) as client:
        r = await client.post("/hub/api/users", content=body)
        assert r.status_code == 201, r.text
        assert len(r.json()) == len(names)
        r = await client.post("/hub/api/users", content=body + b" ")
        assert r.status_code == 413
        assert r.json() == {"status": 413, "message": "Request body too large: at most "
                                                      "65536 bytes are accepted here"}


async def test_chunked_bodies_are_counted_on_both_paths(make_hub):
    """The API's shortcut (an endpoint) and Starlette (pages) both cut a body with no
    declared length at the limit."""
    hub = make_hub(api_max_body_size=64 * 1024, form_max_body_size=16 * 1024)

    def stream(total: int):
        async def chunks():
            for _ in range(total // 4096):
                yield b" " * 4096
        return chunks()

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=hub.asgi),
                                 base_url="http://127.0.0.1:8081") as client:
        r = await client.post("/hub/api/users/x/tokens", content=stream(128 * 1024))
        assert r.status_code == 413
        assert r.json()["status"] == 413 and "65536" in r.json()["message"]
        r = await client.post("/hub/login", content=stream(32 * 1024),
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 413
        assert r.headers["content-type"].startswith("text/html")
        # under the limits, chunked bodies still reach the handlers
        r = await client.post("/hub/api/users/x/tokens", content=stream(8 * 1024))
        assert r.status_code == 403  # no credentials: the body was read, and held none
        page = await client.get("/hub/login")
        assert page.status_code == 200


def test_body_size_options_are_checked(make_hub):
    from courtyard.errors import ConfigError

    with pytest.raises(ConfigError, match="api_max_body_size"):
        make_hub(api_max_body_size=10)


# -- the proxy's request heads -------------------------------------------------------------------
@pytest.fixture(scope="module")
def backend() -> Iterator[str]:
    """A real target server (tests/proxy/backend.py) for this module's proxies."""
    yield from _run_backend("limits")


def test_slowloris_is_cut_off_by_the_header_timeout(tmp_path: Path, backend: str):
    """One header line every half second keeps a connection busy, never idle: the head
    must still be complete within --header-timeout of the connection's start."""
    proxy = start_proxy("courtyard", tmp_path, "--default-target", backend,
                        "--header-timeout", "1500")
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as s:
            s.sendall(b"GET /echo/ HTTP/1.1\r\nHost: x\r\n")
            closed = b""
            for n in range(40):  # 20 s of trickling, far past the timeout
                try:
                    s.sendall(b"X-Trickle-%d: 1\r\n" % n)
                except (BrokenPipeError, ConnectionResetError):
                    break
                s.settimeout(0.5)
                try:
                    closed = s.recv(65536)
                except TimeoutError:
                    continue
                break
        assert closed.startswith(b"HTTP/1.1 408 "), (n, closed[:200])
        assert n < 39
    finally:
        proxy.stop()


def test_a_kept_alive_connection_gets_a_new_header_timeout_per_request(
        tmp_path: Path, backend: str):
    proxy = start_proxy("courtyard", tmp_path, "--default-target", backend,
                        "--header-timeout", "1500")
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
            for _ in range(3):  # well-behaved requests, one after another, for over 1.5 s
                s.sendall(b"GET /echo/ HTTP/1.1\r\nHost: x\r\n\r\n")
                head = s.recv(65536)
                assert head.startswith(b"HTTP/1.1 200 "), head[:200]
                while b'"server"' not in head:
                    head += s.recv(65536)
                s.settimeout(0.6)
                with pytest.raises(TimeoutError):
                    s.recv(1)  # nothing more, and still open
                s.settimeout(10)
    finally:
        proxy.stop()


def test_too_many_header_fields_is_431(tmp_path: Path, backend: str):
    proxy = start_proxy("courtyard", tmp_path, "--default-target", backend)
    try:
        fields = b"".join(b"X-F%d: 1\r\n" % n for n in range(101))
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
            s.sendall(b"GET /echo/ HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
            assert read_response(s).startswith(b"HTTP/1.1 431 ")
        ok = b"".join(b"X-F%d: 1\r\n" % n for n in range(90))
        r = httpx.get(proxy.url + "/echo/", headers=[tuple(h.split(b": ")) for h in
                                                      ok.strip().split(b"\r\n")])
        assert r.status_code == 200
    finally:
        proxy.stop()


def test_forwarded_headers_are_kept_only_from_trusted_proxies(tmp_path: Path, backend: str):
    forged = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https",
              "X-Forwarded-Host": "evil.example", "Forwarded": "for=203.0.113.9",
              "X-Real-IP": "203.0.113.9"}
    edge = start_proxy("courtyard", tmp_path, "--default-target", backend)
    behind = start_proxy("courtyard", tmp_path, "--default-target", backend,
                         "--trusted-downstream-ips", "127.0.0.0/8,10.1.2.3")
    try:
        seen = dict(httpx.get(edge.url + "/echo/", headers=forged).json()["headers"])
        assert seen["x-forwarded-for"] == "127.0.0.1"
        assert seen["x-forwarded-proto"] == "http"
        assert seen["x-forwarded-host"] == f"127.0.0.1:{edge.port}"
        assert "forwarded" not in seen and "x-real-ip" not in seen
        seen = dict(httpx.get(behind.url + "/echo/", headers=forged).json()["headers"])
        assert seen["x-forwarded-for"] == "203.0.113.9,127.0.0.1"
        assert seen["x-forwarded-proto"] == "https,http"
    finally:
        edge.stop()
        behind.stop()
