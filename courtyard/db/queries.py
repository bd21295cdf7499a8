"""Small, reusable reads and writes shared by the API, the CLI and start-up."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import cast

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from ..auth import tokens
from .models import APIToken, Group, Role, Service, User, user_role_map, utcnow
from .records import UserRecord


def get_user(db: Session, name: str) -> User | None:
    return db.scalar(select(User).where(User.name == name))


def get_group(db: Session, name: str) -> Group | None:
    return db.scalar(select(Group).where(Group.name == name))


def get_role(db: Session, name: str) -> Role | None:
    return db.scalar(select(Role).where(Role.name == name))


def get_service(db: Session, name: str) -> Service | None:
    return db.scalar(select(Service).where(Service.name == name))


_default_role_ids: dict[tuple[str, str], int] = {}


def default_role_id(db: Session, name: str) -> int | None:
    """The id of a built-in role (never deleted, so safe to remember per database)."""
    key = (str(db.get_bind().engine.url), name)
    rid = _default_role_ids.get(key)
    if rid is None:
        rid = db.scalar(select(Role.id).where(Role.name == name))
        if rid is not None:
            _default_role_ids[key] = rid
    return rid


def create_user(db: Session, name: str, admin: bool = False) -> User:
    """A new user with the ``user`` role (and ``admin`` when asked), in few statements."""
    user = User(name=name, admin=admin, cookie_id=secrets.token_hex(16), groups=[], servers=[])
    db.add(user)
    db.flush()
    rows = [{"user_id": user.id, "role_id": rid}
            for role in (("admin", "user") if admin else ("user",))
            if (rid := default_role_id(db, role)) is not None]
    if rows:
        db.execute(insert(user_role_map), rows)
    db.expire(user, ["roles"])
    return user


def insert_users(db: Session, names: list[str], admin: bool = False) -> list[UserRecord]:
    """New users with their default roles, in two statements whatever their number.

    The API's create paths use this: no ORM objects, and the snapshots it returns are
    exactly what a fresh read would give. A name that exists raises IntegrityError.
    """
    now = utcnow()
    rows = [{"name": n, "admin": admin, "created": now, "cookie_id": secrets.token_hex(16)}
            for n in names]
    users = cast(Table, User.__table__)  # declarative: always a Table
    ids = list(db.execute(insert(users).returning(
        users.c.id, sort_by_parameter_order=True), rows).scalars())
    roles = tuple(role for role in (("admin", "user") if admin else ("user",))
                  if default_role_id(db, role) is not None)
    db.execute(insert(user_role_map), [{"user_id": uid, "role_id": default_role_id(db, role)}
                                       for uid in ids for role in roles])
    return [UserRecord(uid, name, admin, now, None, roles, (), (), False)
            for uid, name in zip(ids, names, strict=True)]


def set_admin(db: Session, user: User, admin: bool) -> None:
    """Keep the admin flag and the ``admin`` role assignment in step."""
    user.admin = admin
    role = get_role(db, "admin")
    if role is None:
        return
    if admin and role not in user.roles:
        user.roles.append(role)
    elif not admin and role in user.roles:
        user.roles.remove(role)


def issue_token(
    db: Session,
    owner: User | Service,
    *,
    note: str = "",
    scopes: list[str] | None = None,
    expires_at: datetime | None = None,
    secret: str | None = None,
    from_config: bool = False,
) -> tuple[APIToken, str]:
    """Store a new token (hashed) and return it with its secret, which is never stored."""
    secret = secret or tokens.new_token()
    hashed = tokens.slow_hash(secret) if from_config else tokens.fast_hash(secret)
    row = APIToken(
        hashed=hashed, prefix=tokens.prefix(secret), note=note,
        scopes=scopes if scopes is not None else ["inherit"], expires_at=expires_at,
        from_config=from_config,
    )
    if isinstance(owner, User):
        row.user = owner
    else:
        row.service = owner
    db.add(row)
    return row, secret
