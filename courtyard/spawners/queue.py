"""The spawn queue: at most ``concurrent_spawn_limit`` spawns run at once, the rest wait.

Waiting is first come, first served, and each waiter hears its position whenever it
changes (JupyterHub answers 429 instead; ``c.JupyterHub.spawn_queue = False`` restores
that, and then the queue never holds anyone).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

OnPosition = Callable[[int, int], None]  # (position from 1, queue length)


@dataclass(eq=False)
class _Ticket:
    on_position: OnPosition
    granted: asyncio.Future[None] = field(default_factory=asyncio.Future)
    told: int = 0


class SpawnQueue:
    """Slots for running spawns, handed out in arrival order."""

    def __init__(self, limit: Callable[[], int]) -> None:
        self._limit = limit
        self.active = 0
        self._waiting: deque[_Ticket] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def has_room(self) -> bool:
        limit = self._limit()
        return limit <= 0 or self.active < limit

    async def acquire(self, on_position: OnPosition) -> None:
        """Return holding a slot; call :meth:`release` exactly once afterwards."""
        if not self._waiting and self.has_room():
            self.active += 1
            return
        ticket = _Ticket(on_position)
        self._waiting.append(ticket)
        self._announce()
        try:
            await ticket.granted
        except asyncio.CancelledError:
            if ticket.granted.done() and not ticket.granted.cancelled():
                self.release()  # granted just as we were cancelled: pass it on
            elif ticket in self._waiting:
                self._waiting.remove(ticket)
                self._announce()
            raise

    def release(self) -> None:
        self.active -= 1
        while self._waiting and self.has_room():
            ticket = self._waiting.popleft()
            if ticket.granted.cancelled():  # its spawn was cancelled and has not noticed yet
                continue
            self.active += 1
            ticket.granted.set_result(None)
        self._announce()

    def _announce(self) -> None:
        for position, ticket in enumerate(self._waiting, 1):
            if ticket.told != position:
                ticket.told = position
                ticket.on_position(position, len(self._waiting))
