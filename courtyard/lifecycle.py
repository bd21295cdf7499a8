"""Where servers' transitions are tracked: which are pending ``spawn`` or ``stop``.

The spawner subsystem drives these transitions; the API and the models only read them.
"""

from __future__ import annotations


class Lifecycle:
    """In-memory state of servers in transition, keyed by (user name, server name)."""

    def __init__(self) -> None:
        self._pending: dict[tuple[str, str], str] = {}

    def pending(self, user: str, server: str) -> str | None:
        return self._pending.get((user, server))

    def set_pending(self, user: str, server: str, state: str | None) -> None:
        if state is None:
            self._pending.pop((user, server), None)
        else:
            self._pending[(user, server)] = state

    def count(self, state: str) -> int:
        return sum(1 for s in self._pending.values() if s == state)

    def rename_user(self, old: str, new: str) -> None:
        for (user, server), state in list(self._pending.items()):
            if user == old:
                del self._pending[(user, server)]
                self._pending[(new, server)] = state
