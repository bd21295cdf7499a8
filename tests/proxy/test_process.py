"""The process tree: workers replaced after a crash, single-process mode, ports, API TLS."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
from conftest import ProxyProcess, free_port, port_open, wait_for
from test_routing import server_of
from test_streaming import _self_signed


def test_dead_worker_is_replaced(
    proxy_factory: Callable[..., ProxyProcess], backend: str, backend2: str
) -> None:
    p = proxy_factory("--default-target", backend, workers=2)
    _master, *workers = p.pids()
    p.add_route("/before", backend2)
    os.kill(workers[0], signal.SIGKILL)

    def replaced() -> bool:
        now = p.pids()
        return len(now) == 3 and workers[0] not in now

    wait_for(replaced, 10, "a new worker")
    # the new worker got the table, and takes part in new updates
    p.add_route("/after", backend2)
    for _ in range(10):
        assert server_of(p.port, "/before/x") == "two"
        assert server_of(p.port, "/after/x") == "two"


def test_single_process_mode(proxy_factory: Callable[..., ProxyProcess], backend: str) -> None:
    p = proxy_factory("--default-target", backend, workers=0)
    assert len(p.pids()) == 1
    p.add_route("/solo", backend)
    api = p.api_client()
    before = api.get("/api/routes/solo").json()["last_activity"]
    assert server_of(p.port, "/solo/x") == "one"
    wait_for(lambda: api.get("/api/routes/solo").json()["last_activity"] > before, 5, "activity")


def test_terminating_master_stops_workers(
    proxy_factory: Callable[..., ProxyProcess], backend: str
) -> None:
    p = proxy_factory("--default-target", backend, workers=2)
    pids = p.pids()
    p.proc.terminate()
    assert p.proc.wait(10) == 0

    def all_gone() -> bool:
        alive = []
        for pid in pids[1:]:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                        alive.append(pid)
            except FileNotFoundError:
                pass
        return not alive

    wait_for(all_gone, 10, "workers to exit")
    assert not port_open(p.port)


def test_public_port_in_use_is_an_error(
    proxy_factory: Callable[..., ProxyProcess], backend: str, tmp_path: Path
) -> None:
    p = proxy_factory("--default-target", backend, workers=1)
    second = subprocess.run(
        [sys.executable, "-m", "courtyard.proxy", "--port", str(p.port),
         "--api-port", str(free_port()), "--workers", "1"],
        capture_output=True, text=True, timeout=30,
    )
    assert second.returncode != 0
    assert "Address already in use" in second.stderr


def test_api_over_tls(
    proxy_factory: Callable[..., ProxyProcess], backend: str, tmp_path: Path
) -> None:
    cert, key = _self_signed(tmp_path)
    port, api_port = free_port(), free_port()
    env = dict(os.environ, CONFIGPROXY_AUTH_TOKEN="tls-token")
    proc = subprocess.Popen(
        [sys.executable, "-m", "courtyard.proxy", "--port", str(port), "--api-port",
         str(api_port), "--workers", "1", "--api-ssl-cert", str(cert), "--api-ssl-key", str(key)],
        env=env,
    )
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(verify=ctx, headers={"Authorization": "token tls-token"}) as client:

            def answers() -> bool:
                try:
                    return client.get(f"https://127.0.0.1:{api_port}/api/routes").status_code == 200
                except httpx.HTTPError:
                    return False

            wait_for(answers, 20, "the API over TLS")
            created = client.post(f"https://127.0.0.1:{api_port}/api/routes/t",
                                  json={"target": backend})
            assert created.status_code == 201
    finally:
        proc.terminate()
        proc.wait(10)
