"""Large bodies stream through without growing the proxy; WebSockets; TLS; no fd leaks."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from conftest import ProxyProcess, fd_count, wait_for

SIZE = 200 * 1024 * 1024
RSS_BUDGET_KIB = 50 * 1024


def _chunks(total: int, size: int = 1 << 20) -> Iterator[bytes]:
    block = b"y" * size
    while total > 0:
        piece = block if total >= size else block[:total]
        total -= len(piece)
        yield piece


def test_200mb_upload_and_download_stream(proxy: ProxyProcess) -> None:
    before = proxy.rss_kib()
    peak = before
    with httpx.Client(base_url=proxy.url, timeout=60) as client:
        upload = client.post("/upload", content=_chunks(SIZE))
        peak = max(peak, proxy.rss_kib())
        assert upload.json()["size"] == SIZE
        digest = hashlib.sha256()
        for piece in _chunks(SIZE):
            digest.update(piece)
        assert upload.json()["sha256"] == digest.hexdigest()

        received = 0
        with client.stream("GET", f"/download/{SIZE}") as response:
            for piece in response.iter_bytes():
                received += len(piece)
                if received % (16 << 20) < len(piece):
                    peak = max(peak, proxy.rss_kib())
        assert received == SIZE
    print(f"proxy RSS {before} KiB before, peak {peak} KiB")
    assert peak - before < RSS_BUDGET_KIB, f"RSS grew {peak - before} KiB"


def test_client_disconnect_mid_stream_leaks_nothing(proxy: ProxyProcess) -> None:
    worker = proxy.pids()[-1]
    # warm up the upstream pool so its connection is counted in the baseline
    httpx.get(proxy.url + "/echo/warm")
    base_fds, base_rss = fd_count(worker), proxy.rss_kib()
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", proxy.port)) as s:
            s.sendall(b"GET /download/500000000 HTTP/1.1\r\nHost: x\r\n\r\n")
            s.recv(1 << 16)  # the download has started; now hang up
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", proxy.port)) as s:
            s.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
            s.sendall(b"z" * 1_000_000)

    # connections unwind asynchronously; wait until fds are back near the baseline
    wait_for(lambda: fd_count(worker) <= base_fds + 2, 10, "fds to be released")
    assert proxy.rss_kib() - base_rss < 30 * 1024
    assert httpx.get(proxy.url + "/echo/still-alive").status_code == 200


async def test_websocket_echo_through_proxy(api_proxy: ProxyProcess, backend: str) -> None:
    api_proxy.add_route("/ws", backend)
    async with websockets.connect(api_proxy.url.replace("http", "ws") + "/ws", max_size=None) as ws:
        for i in range(50):
            await ws.send(f"hello {i}")
            assert await ws.recv() == f"hello {i}"
        big = bytes(range(256)) * 4096  # a 1 MiB frame
        await ws.send(big)
        assert await ws.recv() == big


async def test_websocket_activity_and_many_frames(proxy: ProxyProcess, backend: str) -> None:
    proxy.add_route("/ws", backend)
    api = proxy.api_client()
    before = api.get("/api/routes/ws").json()["last_activity"]
    async with websockets.connect(proxy.url.replace("http", "ws") + "/ws") as ws:
        for i in range(1000):
            await ws.send(b"%d" % i)
        for i in range(1000):
            assert await ws.recv() == b"%d" % i
        # activity during the open socket reaches the API within about a second
        await asyncio.sleep(0)
        wait_for(lambda: api.get("/api/routes/ws").json()["last_activity"] > before, 5,
                 "websocket activity")


async def test_websocket_to_missing_route_fails_cleanly(
    proxy_factory: Callable[..., ProxyProcess],
) -> None:
    p = proxy_factory()
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(p.url.replace("http", "ws") + "/nothing"):
            pass
    assert info.value.response.status_code == 404


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]
        ), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    return cert_path, key_path


async def test_tls_public_port(
    proxy_factory: Callable[..., ProxyProcess], backend: str, tmp_path: Path
) -> None:
    cert, key = _self_signed(tmp_path)
    p = proxy_factory("--default-target", backend, "--ssl-cert", str(cert), "--ssl-key", str(key))
    ctx = ssl.create_default_context(cafile=str(cert))
    with httpx.Client(verify=ctx) as client:
        body = client.get(p.url + "/echo/tls").json()
    headers = dict(body["headers"])
    assert headers["x-forwarded-proto"] == "https"
    async with websockets.connect(f"wss://127.0.0.1:{p.port}/ws", ssl=ctx) as ws:
        await ws.send("secure")
        assert await ws.recv() == "secure"
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{p.port}/echo/plain", timeout=3)
