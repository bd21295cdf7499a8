"""Login throttling: exponential back-off per username and per client address.

The first ``free`` failures cost nothing; after that each failure doubles the wait before
the next attempt is even considered (1 s, 2 s, 4 s ... up to ``max_delay``). An attempt
during the wait is refused with 429 and ``Retry-After`` without checking the password, so
guessing is slow and the back end (LDAP, PAM, an IdP) is not hammered. A success clears the
username's record. Client addresses get four times the free failures, since many people
can share one address (a campus NAT).

State is in memory: a restart forgets it, which only gives an attacker a fresh start after
an outage they cannot cause by guessing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_ENTRIES = 100_000


@dataclass
class _Record:
    failures: int = 0
    blocked_until: float = 0.0
    last: float = 0.0


class Throttle:
    """Counts failed logins by key and says how long a key must wait."""

    def __init__(self, free: int = 5, max_delay: float = 300, per_address_factor: int = 4,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.free = free
        self.max_delay = max_delay
        self.per_address_factor = per_address_factor
        self.clock = clock
        self._records: dict[str, _Record] = {}
        # failures are forgotten after this long without another one
        self.forget_after = max(3600.0, 2 * max_delay)

    def _keys(self, username: str, address: str | None) -> list[tuple[str, int]]:
        keys = [(f"user:{username.lower()}", self.free)]
        if address:
            keys.append((f"addr:{address}", self.free * self.per_address_factor))
        return keys

    def retry_after(self, username: str, address: str | None) -> int:
        """Seconds until an attempt for ``username`` from ``address`` is allowed (0: now)."""
        now = self.clock()
        wait = 0.0
        for key, _free in self._keys(username, address):
            record = self._records.get(key)
            if record is not None:
                wait = max(wait, record.blocked_until - now)
        return math.ceil(wait) if wait > 0 else 0

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

    def success(self, username: str, address: str | None) -> None:
        self._records.pop(f"user:{username.lower()}", None)
        if address:
            record = self._records.get(f"addr:{address}")
            if record is not None:
                # a shared address is not cleared by one good login, only relieved
                record.failures = max(0, record.failures - 1)

    def _prune(self, now: float) -> None:
        """Forget records idle for longer than the longest back-off."""
        horizon = now - self.forget_after
        for key in [k for k, r in self._records.items() if r.last < horizon]:
            del self._records[key]
        if len(self._records) >= MAX_ENTRIES:
            self._records.clear()
