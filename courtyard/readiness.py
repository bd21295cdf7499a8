"""Waiting for a started server to answer over HTTP, without probing a busy machine to death."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from . import http11
from .errors import SpawnError, SpawnTimeout
from .spawners.base import Spawner

if TYPE_CHECKING:
    import httpx

#: seconds between ``poll()`` calls while a starting server's HTTP answer is awaited ...
POLL_WHILE_CHECKING = 1.0
#: ... while few start: all checks together call ``poll()`` at most this often a second (a
#: cluster spawner's ``poll()`` asks its engine: DockerSpawner inspects the container,
#: which costs the engine the CPU the starting servers need)
POLLS_PER_SECOND = 4.0
#: the longest a server that answers waits for its next probe, while few are starting ...
LATEST = 0.25
#: ... that is, while at most this many are checked at once; beyond, probes are spread out
#: so that all checks together probe at most ``CHECKED_AT_ONCE / LATEST`` times a second
CHECKED_AT_ONCE = 40


def next_delay(delay: float, waited: float, checking: int) -> float:
    """Seconds until the next probe of one server: growing by half from 10 ms, up to 100 ms
    or a twentieth of the time ``waited`` so far, and never more than :data:`LATEST` while
    at most :data:`CHECKED_AT_ONCE` servers are ``checking`` (more spread it in proportion)."""
    latest = LATEST * max(1.0, checking / CHECKED_AT_ONCE)
    return min(delay * 1.5, max(0.1, min(waited / 20, latest)))


def poll_interval(checking: int) -> float:
    """Seconds between ``poll()`` calls of one server while ``checking`` servers are
    checked: :data:`POLL_WHILE_CHECKING`, longer as more start, so that all of them
    together poll at most :data:`POLLS_PER_SECOND` times a second."""
    return max(POLL_WHILE_CHECKING, checking / POLLS_PER_SECOND)


class Readiness:
    """The lifecycle's readiness checks, sharing one HTTP client for https servers."""

    def __init__(self) -> None:
        self._http: httpx.AsyncClient | None = None
        self.checking = 0  # servers whose answer is awaited now

    async def wait_http(self, spawner: Spawner, url: str, timeout: float) -> None:
        """Until ``GET {url}{prefix}api`` answers below 500; fails if the server exits first.

        Probes back off from 10 ms (:func:`next_delay`): a server is seen at most a quarter
        of a second after it answers, and hundreds of servers starting at once on a busy
        machine are not probed hundreds of times a second each.
        Whether the server exited is asked at most once a second, and less often when many
        start (:func:`poll_interval`): ``poll()`` of a cluster spawner is a query to the
        engine (a ``squeue``, a container inspect), and one per probe for every server
        starting would take the cores the servers need.
        """
        check = f"{url}{spawner.server_prefix}api"
        plain = http11.Origin.of(check) is not None
        errors: tuple[type[BaseException], ...] = (http11.HTTPError, TimeoutError)
        if not plain:  # https: through httpx, imported only when a server needs it
            import httpx

            errors += (httpx.HTTPError,)
        self.checking += 1
        try:
            await self._wait_http(spawner, check, plain, errors, timeout)
        finally:
            self.checking -= 1

    async def _wait_http(self, spawner: Spawner, check: str, plain: bool,
                         errors: tuple[type[BaseException], ...], timeout: float) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        deadline, delay, last = began + timeout, 0.01, "no answer"
        polled = float("-inf")
        while True:
            if loop.time() - polled >= poll_interval(self.checking):
                polled = loop.time()
                status = await spawner.poll()
                if status is not None:
                    raise SpawnError(f"the server exited with status {status} before it "
                                     f"answered{await _last_words(spawner)}")
            wait = max(0.5, min(5.0, deadline - loop.time()))
            try:
                if plain:
                    code = await http11.get_status(check, wait)
                else:
                    code = (await self.http_client().get(check, timeout=wait)).status_code
                if code < 500:
                    return
                last = f"HTTP {code}"
            except errors as e:
                last = type(e).__name__
            now = loop.time()
            if now >= deadline:
                raise SpawnTimeout(f"the server did not answer at {check} within "
                                   f"{timeout:g} seconds ({last})")
            await asyncio.sleep(min(delay, max(0.0, deadline - now)))
            delay = next_delay(delay, now - began, self.checking)

    def http_client(self) -> httpx.AsyncClient:
        """One client for every readiness check (building one per check is costly)."""
        if self._http is None or self._http.is_closed:
            import httpx

            self._http = httpx.AsyncClient(
                trust_env=False, follow_redirects=False,
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=0))
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None


async def _last_words(spawner: Spawner) -> str:
    try:
        text = await spawner.read_log(tail=1)
    except Exception:
        return ""
    return f"; its last output: {text.strip()[:300]}" if text and text.strip() else ""
