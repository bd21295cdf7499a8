"""Login throttling that slows guessing without locking the real user out.

Failures are counted per (username, client address) pair: after ``free`` failures each
further one doubles the wait before that pair may try again (1 s, 2 s, 4 s ... up to
``max_delay``). So an attacker guessing alice's password from one address is slowed, while
alice herself, signing in from her own address, is not held back by the attacker's
failures. An attempt during the wait is refused with 429 and ``Retry-After`` without
checking the password, so the back end (LDAP, PAM, an IdP) is not hammered either.

Two more counters bound what spreading out buys an attacker:

- per address, ``per_address_factor`` times the free failures (many people may share one
  address, a campus NAT): one address guessing many names is slowed too;
- a global cap, ``global_limit`` failures a minute across all names and addresses: past
  it every new attempt waits until the minute has passed, however many addresses the
  guesses come from. A user who already signed in from the same address since the hub
  started is exempt, so an attacker who keeps the cap tripped cannot lock out everyone.

Attempts of one pair run one at a time (:meth:`Throttle.turn`): otherwise many guesses
sent at once would all be checked before the first failure was counted.

The address is the one :mod:`courtyard.web.forwarded` found: a forged ``X-Forwarded-For``
does not make a new address. State is in memory: a restart forgets it, which only gives an
attacker a fresh start after an outage they cannot cause by guessing.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

MAX_ENTRIES = 100_000
GLOBAL_WINDOW = 60.0  # seconds over which global_limit counts failures


@dataclass
class _Record:
    failures: int = 0
    blocked_until: float = 0.0
    last: float = 0.0


@dataclass(frozen=True)
class Wait:
    """How long an attempt must wait, and whether that is the global cap (everyone waits)."""

    seconds: int
    everyone: bool = False


class Throttle:
    """Counts failed logins and says how long an attempt must wait."""

    def __init__(self, free: int = 5, max_delay: float = 300, per_address_factor: int = 4,
                 global_limit: int = 100, clock: Callable[[], float] = time.monotonic) -> None:
        self.free = free
        self.max_delay = max_delay
        self.per_address_factor = per_address_factor
        self.global_limit = global_limit
        self.clock = clock
        self._records: dict[str, _Record] = {}
        self._recent: deque[float] = deque()  # times of the failures in the global window
        self._known: dict[str, float] = {}  # pairs that signed in -> when, last
        self._turns: dict[str, tuple[asyncio.Lock, int]] = {}
        # failures are forgotten after this long without another one
        self.forget_after = max(3600.0, 2 * max_delay)

    @staticmethod
    def _pair(username: str, address: str | None) -> str:
        return f"pair:{username.lower()}\0{address or ''}"

    def _keys(self, username: str, address: str | None) -> list[tuple[str, int]]:
        keys = [(self._pair(username, address), self.free)]
        if address:
            keys.append((f"addr:{address}", self.free * self.per_address_factor))
        return keys

    def check(self, username: str, address: str | None) -> Wait | None:
        """None if an attempt for ``username`` from ``address`` may go ahead now."""
        now = self.clock()
        wait = 0.0
        for key, _free in self._keys(username, address):
            record = self._records.get(key)
            if record is not None:
                wait = max(wait, record.blocked_until - now)
        if wait > 0:
            return Wait(math.ceil(wait))
        if self.global_limit and self._pair(username, address) not in self._known:
            self._expire(now)
            if len(self._recent) >= self.global_limit:
                return Wait(max(1, math.ceil(self._recent[0] + GLOBAL_WINDOW - now)), True)
        return None

    def retry_after(self, username: str, address: str | None) -> int:
        """Seconds until an attempt for ``username`` from ``address`` is allowed (0: now)."""
        wait = self.check(username, address)
        return wait.seconds if wait else 0

    def failure(self, username: str, address: str | None) -> None:
        now = self.clock()
        if len(self._records) >= MAX_ENTRIES:
            self._prune(now)
        for key, free in self._keys(username, address):
            record = self._records.setdefault(key, _Record())
            if now - record.last > self.forget_after:
                record.failures = 0
            record.failures += 1
            record.last = now
            over = record.failures - free
            if over > 0:
                record.blocked_until = now + min(self.max_delay, 2.0 ** (over - 1))
        if self.global_limit:
            self._expire(now)
            self._recent.append(now)
            while len(self._recent) > self.global_limit:  # only the count matters past it
                self._recent.popleft()

    def success(self, username: str, address: str | None) -> None:
        pair = self._pair(username, address)
        self._records.pop(pair, None)
        if len(self._known) >= MAX_ENTRIES:
            self._known.clear()
        self._known[pair] = self.clock()
        if address:
            record = self._records.get(f"addr:{address}")
            if record is not None:
                # a shared address is not cleared by one good login, only relieved
                record.failures = max(0, record.failures - 1)

    @asynccontextmanager
    async def turn(self, username: str, address: str | None) -> AsyncIterator[None]:
        """Hold the pair's turn: its attempts are checked one after the other."""
        key = self._pair(username, address)
        lock, users = self._turns.get(key) or (asyncio.Lock(), 0)
        self._turns[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._turns[key]
            if users == 1:
                del self._turns[key]
            else:
                self._turns[key] = (lock, users - 1)

    def _expire(self, now: float) -> None:
        recent = self._recent
        while recent and recent[0] <= now - GLOBAL_WINDOW:
            recent.popleft()

    def _prune(self, now: float) -> None:
        """Forget records idle for longer than the longest back-off."""
        horizon = now - self.forget_after
        for key in [k for k, r in self._records.items() if r.last < horizon]:
            del self._records[key]
        if len(self._records) >= MAX_ENTRIES:
            self._records.clear()
