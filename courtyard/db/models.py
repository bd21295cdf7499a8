"""Database rows. Timestamps are naive UTC, as in JupyterHub; the API adds the ``Z``."""

from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    """Naive UTC now, the form every timestamp column holds."""
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[str]: JSON}


def _map(name: str, left: str, right: str) -> Table:
    return Table(
        name,
        Base.metadata,
        Column(f"{left}_id", ForeignKey(f"{left}s.id", ondelete="CASCADE"), primary_key=True),
        Column(f"{right}_id", ForeignKey(f"{right}s.id", ondelete="CASCADE"), primary_key=True),
    )


user_group_map = _map("user_group_map", "user", "group")
user_role_map = _map("user_role_map", "user", "role")
group_role_map = _map("group_role_map", "group", "role")
service_role_map = _map("service_role_map", "service", "role")


class User(Base):
    __tablename__ = "users"
    # ids are never reused (SQLite would hand a deleted newest user's id to the next one):
    # the OAuth provider's ``sub`` is the id, and must never name two people
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_activity: Mapped[datetime | None] = mapped_column(DateTime, index=True)
    cookie_id: Mapped[str] = mapped_column(String(255), unique=True)
    encrypted_auth_state: Mapped[bytes | None] = mapped_column(LargeBinary)

    groups: Mapped[list["Group"]] = relationship(
        secondary=user_group_map, back_populates="users", order_by="Group.name"
    )
    roles: Mapped[list["Role"]] = relationship(
        secondary=user_role_map, back_populates="users", order_by="Role.name"
    )
    servers: Mapped[list["Server"]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True,
        order_by="Server.name",
    )
    tokens: Mapped[list["APIToken"]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )


class Server(Base):
    """A user's server, default (``name == ""``) or named; stopped when ``url`` is None."""

    __tablename__ = "servers"
    __table_args__ = (UniqueConstraint("user_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    display_name: Mapped[str | None] = mapped_column(String(255))
    url: Mapped[str | None] = mapped_column(String(1023))
    state: Mapped[dict[str, Any]] = mapped_column(default=dict)
    user_options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started: Mapped[datetime | None] = mapped_column(DateTime)
    last_activity: Mapped[datetime | None] = mapped_column(DateTime)

    user: Mapped["User"] = relationship(back_populates="servers")


class Group(Base):
    __tablename__ = "groups"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    properties: Mapped[dict[str, Any]] = mapped_column(default=dict)

    users: Mapped[list["User"]] = relationship(
        secondary=user_group_map, back_populates="groups", order_by="User.name"
    )
    roles: Mapped[list["Role"]] = relationship(
        secondary=group_role_map, back_populates="groups", order_by="Role.name"
    )


class Role(Base):
    """A named set of scopes. ``managed_by`` is ``default``, ``config``, ``api`` or
    ``authenticator`` (``manage_roles``)."""

    __tablename__ = "roles"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    scopes: Mapped[list[str]] = mapped_column(default=list)
    managed_by: Mapped[str] = mapped_column(String(16), default="api")

    users: Mapped[list["User"]] = relationship(
        secondary=user_role_map, back_populates="roles", order_by="User.name"
    )
    groups: Mapped[list["Group"]] = relationship(
        secondary=group_role_map, back_populates="roles", order_by="Group.name"
    )
    services: Mapped[list["Service"]] = relationship(
        secondary=service_role_map, back_populates="roles", order_by="Service.name"
    )


class Service(Base):
    __tablename__ = "services"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    url: Mapped[str | None] = mapped_column(String(1023))
    info: Mapped[dict[str, Any]] = mapped_column(default=dict)
    display: Mapped[bool] = mapped_column(Boolean, default=True)
    oauth_client_id: Mapped[str | None] = mapped_column(String(255))
    oauth_redirect_uri: Mapped[str | None] = mapped_column(String(1023))
    oauth_no_confirm: Mapped[bool] = mapped_column(Boolean, default=False)
    oauth_client_allowed_scopes: Mapped[list[str]] = mapped_column(default=list)
    from_config: Mapped[bool] = mapped_column(Boolean, default=True)

    roles: Mapped[list["Role"]] = relationship(
        secondary=service_role_map, back_populates="services", order_by="Role.name"
    )
    tokens: Mapped[list["APIToken"]] = relationship(
        back_populates="service", cascade="all, delete-orphan", passive_deletes=True
    )


# a row a role is granted to (Role.users, Role.groups, Role.services)
RoleMember = TypeVar("RoleMember", "User", "Group", Service)


class APIToken(Base):
    """An API token, stored only as a hash; ``prefix`` narrows the lookup."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    hashed: Mapped[str] = mapped_column(String(255), unique=True)
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    service_id: Mapped[int | None] = mapped_column(
        ForeignKey("services.id", ondelete="CASCADE"), index=True
    )
    oauth_client_id: Mapped[str | None] = mapped_column(
        ForeignKey("oauth_clients.identifier", ondelete="CASCADE"), index=True
    )
    server_id: Mapped[int | None] = mapped_column(ForeignKey("servers.id", ondelete="SET NULL"))
    note: Mapped[str] = mapped_column(Text, default="")
    scopes: Mapped[list[str]] = mapped_column(default=list)
    session_id: Mapped[str | None] = mapped_column(String(255))
    from_config: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime, index=True)
    last_activity: Mapped[datetime | None] = mapped_column(DateTime)

    user: Mapped["User | None"] = relationship(back_populates="tokens")
    service: Mapped["Service | None"] = relationship(back_populates="tokens")
    oauth_client: Mapped["OAuthClient | None"] = relationship()


class OAuthClient(Base):
    __tablename__ = "oauth_clients"

    id: Mapped[int] = mapped_column(primary_key=True)
    identifier: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    hashed_secret: Mapped[str | None] = mapped_column(String(255))
    redirect_uri: Mapped[str] = mapped_column(String(1023), default="")
    allowed_scopes: Mapped[list[str]] = mapped_column(default=list)
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class OAuthCode(Base):
    __tablename__ = "oauth_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[str] = mapped_column(
        ForeignKey("oauth_clients.identifier", ondelete="CASCADE"), index=True
    )
    hashed_code: Mapped[str] = mapped_column(String(255), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    redirect_uri: Mapped[str] = mapped_column(String(1023), default="")
    scopes: Mapped[list[str]] = mapped_column(default=list)
    session_id: Mapped[str | None] = mapped_column(String(255))
    code_challenge: Mapped[str | None] = mapped_column(String(255))
    code_challenge_method: Mapped[str | None] = mapped_column(String(16))
    nonce: Mapped[str | None] = mapped_column(String(255))  # OpenID Connect, for the ID token
    expires_at: Mapped[datetime] = mapped_column(DateTime)


class Share(Base):
    """Access to one server granted to a user or a group."""

    __tablename__ = "shares"

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    group_id: Mapped[int | None] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"))
    scopes: Mapped[list[str]] = mapped_column(default=list)
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    server: Mapped["Server"] = relationship()
    user: Mapped["User | None"] = relationship(foreign_keys=[user_id])
    group: Mapped["Group | None"] = relationship()


class ShareCode(Base):
    __tablename__ = "share_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"))
    hashed_code: Mapped[str] = mapped_column(String(255), unique=True)
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    scopes: Mapped[list[str]] = mapped_column(default=list)
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_used: Mapped[datetime | None] = mapped_column(DateTime)

    server: Mapped["Server"] = relationship()


class NativeAccount(Base):
    """A password of the native authenticator (argon2 hash). A sign-up waiting for approval
    has no ``user_id`` yet; an approved account belongs to a user and goes when they do."""

    __tablename__ = "native_accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(255), unique=True)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), unique=True
    )
    password_hash: Mapped[str] = mapped_column(String(255))
    authorized: Mapped[bool] = mapped_column(Boolean, default=False)
    email: Mapped[str | None] = mapped_column(String(255))
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    password_changed: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    user: Mapped["User | None"] = relationship()


class HubLease(Base):
    """A serving hub's claim on this database (``courtyard/db/lease.py``): who it is, where it
    answers, and until when it has promised to renew. One row per hub: today one hub holds
    the database alone (``mode`` ``exclusive``); several hubs sharing it would each keep
    their own row."""

    __tablename__ = "hub_leases"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    mode: Mapped[str] = mapped_column(String(16), default="exclusive")
    host: Mapped[str] = mapped_column(String(255))
    # pids compare only within one kernel boot and pid namespace: "boot id/namespace"
    machine: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column()
    pid_start: Mapped[str] = mapped_column(String(32), default="")  # against pid reuse
    url: Mapped[str] = mapped_column(String(1023), default="")
    started: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    renewed: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires: Mapped[datetime] = mapped_column(DateTime)
