"""Clients that disconnect mid-stream leak nothing: a scaled-down bench/proxy_soak.py.

300 downloads dropped part-way through a 50 MiB response, 300 uploads dropped part-way
through the body (sized and chunked, FIN and RST), and 20,000 keep-alive requests, through
a proxy with two workers. Afterwards every process's open file descriptors return to what
they were before any traffic (idle target connections close after 4 s), no worker was
replaced, and RSS grew by no more than a generous bound after a warm-up round.
"""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
from conftest import ROOT, ProxyProcess, free_port, port_open, wait_for

_spec = importlib.util.spec_from_file_location("proxy_soak", ROOT / "bench/proxy_soak.py")
assert _spec and _spec.loader
soak = importlib.util.module_from_spec(_spec)
sys.modules["proxy_soak"] = soak  # dataclasses look their module up there
_spec.loader.exec_module(soak)

RSS_BOUND_KIB = 24 * 1024  # a real per-connection leak over 600 aborts grows far more
FD_TOLERANCE = 1


@pytest.fixture(scope="module")
def raw_backend() -> Iterator[str]:
    """The soak's backend: /big streams 50 MiB, /upload reads the body, else 13 bytes."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench/proxy_soak.py"),
                             "--backend", str(port)])
    try:
        wait_for(lambda: port_open(port), 20, "soak backend")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


async def _traffic(port: int, aborts: int, requests: int) -> tuple[int, int, int]:
    return await asyncio.gather(  # type: ignore[return-value]
        soak.aborted_downloads(port, aborts, concurrency=16),
        soak.aborted_uploads(port, aborts, concurrency=16),
        soak.keepalive_requests(port, requests, connections=16),
    )


@pytest.mark.timeout(60)
def test_aborted_transfers_leak_no_fds_or_memory(
    proxy_factory: Callable[..., ProxyProcess], raw_backend: str
) -> None:
    p = proxy_factory("--default-target", raw_backend, workers=2)
    before = soak.sample(p.proc.pid)
    assert len(before) == 3, before

    asyncio.run(_traffic(p.port, 50, 2000))  # warm-up: allocator pools, buffers, imports
    warm = soak.sample(p.proc.pid)

    downloads, uploads, ok = asyncio.run(_traffic(p.port, 300, 20_000))
    assert ok == 20_000
    # the aborting clients really got to abort (a few may see an error first)
    assert downloads >= 250 and uploads >= 250, (downloads, uploads)

    def settled() -> bool:
        now = soak.sample(p.proc.pid)
        return now.keys() == before.keys() and all(
            now[pid][0] <= fds for pid, (fds, _) in before.items()
        )

    try:
        wait_for(settled, 20, "file descriptors back to the baseline")
    except TimeoutError:
        pass  # the assertions below say what stayed open
    after = soak.sample(p.proc.pid)
    assert after.keys() == before.keys(), "a worker was replaced: " + p.log()[-3000:]
    for pid, (fds, _) in before.items():
        assert abs(after[pid][0] - fds) <= FD_TOLERANCE, (pid, before, after)
        growth = after[pid][1] - warm[pid][1]
        assert growth <= RSS_BOUND_KIB, f"pid {pid} grew {growth} KiB: {warm} -> {after}"
    assert "Traceback" not in p.log(), p.log()[-3000:]
