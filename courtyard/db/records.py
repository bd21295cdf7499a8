"""Read-through snapshots of users for the API's hot paths.

Reading a user through the ORM costs four queries; most API traffic reads the same users
over and over (services polling, dashboards, ``GET /users/{name}``). Snapshots are immutable
and dropped whole whenever any session flushes a write, so a read never sees stale data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, event, select
from sqlalchemy.orm import Session, sessionmaker

from .models import Group, Role, Server, User, user_group_map, user_role_map


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


_USER_COLUMNS = (User.id, User.name, User.admin, User.created, User.last_activity,
                 User.encrypted_auth_state.is_not(None))
# Built once: constructing statements costs more than running them on the hot paths.
_USER_BY_NAME = select(*_USER_COLUMNS).where(User.name == bindparam("name"))
_IDS = bindparam("ids", expanding=True)
_ROLES = (select(user_role_map.c.user_id, Role.name)
          .join(Role, Role.id == user_role_map.c.role_id)
          .where(user_role_map.c.user_id.in_(_IDS)).order_by(Role.name))
_GROUPS = (select(user_group_map.c.user_id, Group.name)
           .join(Group, Group.id == user_group_map.c.group_id)
           .where(user_group_map.c.user_id.in_(_IDS)).order_by(Group.name))
_SERVERS = (select(Server.user_id, Server.id, Server.name, Server.display_name, Server.url,
                   Server.state, Server.user_options, Server.created, Server.started,
                   Server.last_activity)
            .where(Server.user_id.in_(_IDS)).order_by(Server.name))


def _records(db: Session, rows: list[Any]) -> list[UserRecord]:
    if not rows:
        return []
    conn = db.connection()
    user_ids = [r[0] for r in rows]
    roles: dict[int, list[str]] = {i: [] for i in user_ids}
    groups: dict[int, list[str]] = {i: [] for i in user_ids}
    servers: dict[int, list[ServerRecord]] = {i: [] for i in user_ids}
    for uid, name in conn.execute(_ROLES, {"ids": user_ids}):
        roles[uid].append(name)
    for uid, name in conn.execute(_GROUPS, {"ids": user_ids}):
        groups[uid].append(name)
    for row in conn.execute(_SERVERS, {"ids": user_ids}):
        servers[row[0]].append(ServerRecord(row[1], row[2], row[3], row[4], dict(row[5] or {}),
                                            dict(row[6] or {}), row[7], row[8], row[9]))
    return [UserRecord(uid, name, admin, created, last, tuple(roles[uid]), tuple(groups[uid]),
                       tuple(servers[uid]), bool(has_state))
            for uid, name, admin, created, last, has_state in rows]


_ONE_USER = (
    select(*_USER_COLUMNS, Role.name, Group.name, Server.id, Server.name, Server.display_name,
           Server.url, Server.state, Server.user_options, Server.created, Server.started,
           Server.last_activity)
    .select_from(User)
    .outerjoin(user_role_map, user_role_map.c.user_id == User.id)
    .outerjoin(Role, Role.id == user_role_map.c.role_id)
    .outerjoin(user_group_map, user_group_map.c.user_id == User.id)
    .outerjoin(Group, Group.id == user_group_map.c.group_id)
    .outerjoin(Server, Server.user_id == User.id)
    .where(User.name == bindparam("name"))
)


def load_record(db: Session, name: str) -> UserRecord | None:
    """One user's snapshot in a single query (roles x groups x servers rows, deduplicated)."""
    rows = list(db.connection().execute(_ONE_USER, {"name": name}))
    if not rows:
        return None
    roles: dict[str, None] = {}
    groups: dict[str, None] = {}
    servers: dict[int, ServerRecord] = {}
    for row in rows:
        if row[6] is not None:
            roles[row[6]] = None
        if row[7] is not None:
            groups[row[7]] = None
        if row[8] is not None and row[8] not in servers:
            servers[row[8]] = ServerRecord(row[8], row[9], row[10], row[11], dict(row[12] or {}),
                                           dict(row[13] or {}), row[14], row[15], row[16])
    uid, uname, admin, created, last, has_state = rows[0][:6]
    return UserRecord(uid, uname, admin, created, last, tuple(sorted(roles)),
                      tuple(sorted(groups)),
                      tuple(sorted(servers.values(), key=lambda sv: sv.name)), bool(has_state))


def load_records(db: Session, where: Any = None, order_by: Any = None, offset: int = 0,
                 limit: int | None = None) -> list[UserRecord]:
    """User snapshots straight from SQL: one query for the users, one each for their roles,
    groups and servers. Much cheaper than hydrating ORM objects on the hot read paths."""
    query = select(*_USER_COLUMNS)
    if where is not None:
        query = query.where(*where) if isinstance(where, list | tuple) else query.where(where)
    if order_by is not None:
        query = query.order_by(*order_by) if isinstance(order_by, list | tuple) else \
            query.order_by(order_by)
    if offset:
        query = query.offset(offset)
    if limit is not None:
        query = query.limit(limit)
    return _records(db, list(db.connection().execute(query)))


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
        record = load_record(db, name)
        if len(self._users) >= self._size:
            self._users.clear()
        self._users[name] = record
        return record
