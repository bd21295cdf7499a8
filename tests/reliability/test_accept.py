"""New connections are accepted at once while the hub is busy (issue 14, item 4).

With libuv 1.45+ a uvloop server accepts one connection per loop iteration, and on a busy
hub an iteration serves every ready connection first: new connections queued in the kernel
for seconds to a minute while old ones were served. Courtyard's :class:`Listener` (the hub
port and the built-in proxy's public port) accepts everything waiting at each wake-up.

Nothing here is timed. What is counted is loop iterations: how many the loop goes through
before every queued connection is accepted (unit test: a loop slowed down on purpose), and
how many requests a busy real hub serves to its old clients before answering every new one
(the real fault: a loaded ``courtyard serve``).
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest
import uvloop

from courtyard.listener import Listener, listening_socket
from tests.hubprocess import TOKEN

NEW = 60


class Counting(asyncio.Protocol):
    made = 0

    def connection_made(self, transport: Any) -> None:
        Counting.made += 1


def iterations_to_accept(serve: Any) -> int:
    """Loop iterations (each made slow by a callback that blocks 5 ms) until ``NEW``
    connections opened at once have all reached ``connection_made``."""
    async def run() -> int:
        Counting.made = 0
        sock = listening_socket("127.0.0.1", 0)
        port = sock.getsockname()[1]
        server = await serve(sock)
        iterations = 0
        loop = asyncio.get_running_loop()

        def busy() -> None:  # one per iteration: a loop with work on every pass
            nonlocal iterations
            iterations += 1
            time.sleep(0.005)
            loop.call_soon(busy)

        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(NEW)]
        loop.call_soon(busy)
        while Counting.made < NEW and iterations < 10 * NEW:
            await asyncio.sleep(0)
        server.close()
        for client in clients:
            client.close()
        return iterations

    return uvloop.run(run())


def test_a_busy_uvloop_server_accepts_one_connection_per_iteration() -> None:
    """The fault itself, on the loop the hub and the proxy run on: what Listener fixes."""
    async def create_server(sock: socket.socket) -> Any:
        return await asyncio.get_running_loop().create_server(Counting, sock=sock)

    assert iterations_to_accept(create_server) >= NEW


def test_listener_accepts_every_waiting_connection_at_once() -> None:
    async def listener(sock: socket.socket) -> Listener:
        return await Listener(sock, Counting).start()

    assert iterations_to_accept(listener) <= 5


# -- the real hub ---------------------------------------------------------------------------

LOAD = 300


async def request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str,
                  close: bool = False) -> int:
    connection = "Connection: close\r\n" if close else ""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: token {TOKEN}\r\n"
                 f"{connection}\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    await reader.readexactly(length)
    return int(head.split(b" ", 2)[1])


async def served_while_new_connections_wait(port: int) -> tuple[float, list[int]]:
    """Keep ``LOAD`` keep-alive clients busy on the hub port, then open ``NEW`` connections
    at once; return how many requests the old clients got per client until every new
    connection was answered (about the loop iterations it took), and the new statuses."""
    served = 0
    stop = asyncio.Event()

    async def old_client(ready: asyncio.Event) -> None:
        nonlocal served
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await request(reader, writer, "/hub/api/users/admin") == 200
        ready.set()
        while not stop.is_set():
            await request(reader, writer, "/hub/api/users/admin")
            served += 1
        writer.close()

    async def new_client() -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        status = await request(reader, writer, "/hub/api/", close=True)
        writer.close()
        return status

    readies = [asyncio.Event() for _ in range(LOAD)]
    load = [asyncio.create_task(old_client(ready)) for ready in readies]
    for ready in readies:
        await asyncio.wait_for(ready.wait(), 120)
    before = served
    statuses = await asyncio.wait_for(asyncio.gather(*(new_client() for _ in range(NEW))), 300)
    during = served - before
    stop.set()
    await asyncio.wait_for(asyncio.gather(*load), 60)
    return during / LOAD, statuses


def test_a_busy_hub_answers_new_connections_within_a_few_iterations(run_hub: Any) -> None:
    hub = run_hub("")
    per_client, statuses = asyncio.run(served_while_new_connections_wait(hub.hub_port))
    assert statuses == [200] * NEW
    # one accept per iteration: each old client is served about once per new connection
    # (NEW); accepting everything waiting: a few iterations
    assert per_client < NEW / 4, f"{per_client:.1f} requests per old client meanwhile"


@pytest.fixture(autouse=True)
def _enough_descriptors() -> None:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft >= 4 * (LOAD + NEW), "raise ulimit -n for this test"
