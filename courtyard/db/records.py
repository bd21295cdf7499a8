"""Read-through snapshots of users for the API's hot paths.

Reading a user through the ORM costs four queries; most API traffic reads the same users
over and over (services polling, dashboards, ``GET /users/{name}``). Snapshots are immutable
and dropped whole whenever any session flushes a write, so a read never sees stale data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from .models import Server, User


@dataclass(frozen=True, slots=True)
class ServerRecord:
    id: int
    name: str
    display_name: str | None
    url: str | None
    state: dict[str, Any]
    user_options: dict[str, Any]
    created: datetime | None
    started: datetime | None
    last_activity: datetime | None


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: int
    name: str
    admin: bool
    created: datetime
    last_activity: datetime | None
    roles: tuple[str, ...]
    groups: tuple[str, ...]
    servers: tuple[ServerRecord, ...]
    has_auth_state: bool


def server_record(server: Server) -> ServerRecord:
    return ServerRecord(server.id, server.name, server.display_name, server.url,
                        dict(server.state or {}), dict(server.user_options or {}), server.created,
                        server.started, server.last_activity)


def user_record(user: User) -> UserRecord:
    return UserRecord(
        user.id, user.name, user.admin, user.created, user.last_activity,
        tuple(r.name for r in user.roles), tuple(g.name for g in user.groups),
        tuple(server_record(s) for s in user.servers), user.encrypted_auth_state is not None,
    )


EAGER = (selectinload(User.roles), selectinload(User.groups), selectinload(User.servers))


class RecordCache:
    """User snapshots by name, cleared by every flush of every session of ``factory``."""

    def __init__(self, factory: sessionmaker[Session], size: int = 50_000) -> None:
        self._users: dict[str, UserRecord | None] = {}
        self._size = size
        event.listen(factory, "after_flush", self._flushed)
        event.listen(factory, "do_orm_execute", self._executed)

    def _flushed(self, _session: Session, _context: Any) -> None:
        self._users.clear()

    def _executed(self, state: Any) -> None:
        if not state.is_select:
            self._users.clear()

    def clear(self) -> None:
        self._users.clear()

    def user(self, db: Session, name: str) -> UserRecord | None:
        try:
            return self._users[name]
        except KeyError:
            pass
        row = db.scalar(select(User).where(User.name == name).options(*EAGER))
        record = user_record(row) if row is not None else None
        if len(self._users) >= self._size:
            self._users.clear()
        self._users[name] = record
        return record
