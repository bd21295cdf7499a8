"""Free loopback ports for test servers, one module so every test shares one record."""

from __future__ import annotations

import socket

_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port free right now and never handed out before in this test run: the kernel
    may give a just-closed port again, and a hub given the same port for its proxy's public
    side and its API cannot start."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free right now."""
    return [free_port() for _ in range(count)]
