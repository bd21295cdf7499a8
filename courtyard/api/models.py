"""JSON models of users, servers, groups, services and tokens, trimmed to what the caller may see."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NotRequired, TypedDict, cast
from urllib.parse import quote

from ..auth.scopes import ALL, Target
from ..db.models import APIToken, Group, Server, Service, User
from ..db.records import ServerRecord, UserRecord, user_record
from .base import Ctx


class ServerModel(TypedDict):
    """JupyterHub's Server model."""

    name: str
    display_name: str
    full_name: str
    ready: bool
    pending: str | None
    stopped: bool
    url: str
    progress_url: str
    full_url: str | None
    full_progress_url: str | None
    started: str | None
    last_activity: str | None
    user_options: dict[str, Any]
    state: NotRequired[dict[str, Any]]  # with admin:server_state


class UserModel(TypedDict, total=False):
    """JupyterHub's User model: the keys the caller's scopes show (:data:`USER_ACCESS`);
    none when it may not see the user. Times stay datetimes (see :func:`user_model`)."""

    kind: str
    name: str
    admin: bool
    roles: list[str]
    groups: list[str]
    created: datetime
    last_activity: datetime | None
    server: str | None
    pending: str | None
    servers: dict[str, ServerModel]
    auth_state: dict[str, Any] | None
    # GET /user (the caller itself) adds its token's view
    scopes: list[str]
    session_id: str | None
    token_id: str | None


class GroupModel(TypedDict, total=False):
    """JupyterHub's Group model: the keys the caller's scopes show (:data:`GROUP_ACCESS`)."""

    kind: str
    name: str
    users: list[str]
    properties: dict[str, Any]
    roles: list[str]


class ServiceModel(TypedDict, total=False):
    """JupyterHub's Service model: the keys the caller's scopes show (:data:`SERVICE_ACCESS`)."""

    kind: str
    name: str
    admin: bool
    roles: list[str]
    url: str
    prefix: str
    command: list[str]
    pid: int
    info: dict[str, Any]
    display: bool
    # GET /user by a service's token adds its token's view
    scopes: list[str]
    session_id: str | None
    token_id: str | None


class TokenModel(TypedDict):
    """JupyterHub's Token model (``user`` or ``service``: its owner)."""

    id: str
    kind: str
    scopes: list[str]
    roles: list[str]
    note: str | None
    created: str | None
    expires_at: str | None
    last_activity: str | None
    session_id: str | None
    oauth_client: str
    user: NotRequired[str]
    service: NotRequired[str]
    token: NotRequired[str]  # only in the answer that creates it


USER_ACCESS = {
    "read:users": {"kind", "name", "admin", "roles", "groups", "server", "pending", "created",
                   "last_activity"},
    "read:users:name": {"kind", "name", "admin"},
    "read:users:groups": {"kind", "name", "groups"},
    "read:users:activity": {"kind", "name", "last_activity"},
    "read:servers": {"kind", "name", "servers"},
    "read:roles:users": {"kind", "name", "roles", "admin"},
    "admin:auth_state": {"kind", "name", "auth_state"},
}
GROUP_ACCESS = {
    "read:groups": {"kind", "name", "properties", "users"},
    "read:groups:name": {"kind", "name"},
    "read:roles:groups": {"kind", "name", "roles"},
}
SERVICE_ACCESS = {
    "read:services": {"kind", "name", "admin", "url", "prefix", "command", "pid", "info",
                      "display"},
    "read:services:name": {"kind", "name"},
    "read:roles:services": {"kind", "name", "roles", "admin"},
}


def iso(dt: datetime | None) -> str | None:
    """ISO 8601 with the ``Z`` JupyterHub clients expect."""
    return None if dt is None else dt.isoformat() + "Z"


def _allowed(ctx: Ctx, access: dict[str, set[str]], **target: str) -> set[str]:
    """The model keys the caller may see on the resource ``target`` names (``user=...``).

    When none of the scopes involved carries a filter, the answer is the same for every
    target, so a request listing thousands of users works it out once (and builds no
    ``Target`` for the rest).
    """
    memo_key = id(access)
    memo: set[str] | None = ctx.memo.get(memo_key)
    if memo is not None:
        return memo
    parsed = ctx.identity.parsed if ctx.identity is not None else {}
    resource = Target(**target)
    keys: set[str] = set()
    for scope, fields in access.items():
        if ctx.can(scope, resource):
            keys |= fields
    if all(parsed.get(scope) in (None, ALL) for scope in access):
        ctx.memo[memo_key] = keys
    return keys


def server_url(ctx: Ctx, username: str, server_name: str) -> str:
    base = ctx.hub.options.base_url
    path = f"{base}user/{quote(username, safe='@~')}/"
    return path + (f"{quote(server_name, safe='')}/" if server_name else "")


def server_model(ctx: Ctx, user: User | UserRecord, server: Server | ServerRecord,
                 with_state: bool = False) -> ServerModel:
    """The Server model; ``user`` and ``server`` may be rows or snapshots."""
    pending = ctx.hub.lifecycle.pending(user.name, server.name)
    url = server_url(ctx, user.name, server.name)
    running = server.url is not None
    base = ctx.hub.options.base_url
    suffix = f"servers/{quote(server.name, safe='')}" if server.name else "server"
    progress = f"{base}hub/api/users/{quote(user.name, safe='@~')}/{suffix}/progress"
    public = ctx.hub.public_url.rstrip("/") if ctx.hub.options.public_url else ""
    full_url = public + url if public else None
    if ctx.hub.origins.enabled:  # as JupyterHub: the server's own origin, in url too
        url = full_url = ctx.hub.origins.link(url)
        public = public or ctx.hub.options.subdomain_host
    model: ServerModel = {
        "name": server.name,
        "display_name": server.display_name or server.name,
        "full_name": f"{user.name}/{server.name}",
        "ready": running and pending is None,
        "pending": pending,
        "stopped": not running and pending is None,
        "url": url,
        "progress_url": progress,
        "full_url": full_url,
        "full_progress_url": public + progress if public else None,
        "started": iso(server.started),
        "last_activity": iso(server.last_activity),
        "user_options": server.user_options or {},
    }
    if with_state and ctx.can("admin:server_state",
                              Target(user=user.name, server=f"{user.name}/{server.name}")):
        model["state"] = server.state or {}
    return model


def server_is_active(ctx: Ctx, user: User | UserRecord, server: Server | ServerRecord) -> bool:
    return server.url is not None or ctx.hub.lifecycle.pending(user.name, server.name) is not None


def user_model(ctx: Ctx, user: User | UserRecord, include_stopped_servers: bool = False
               ) -> UserModel:
    """The User model; keys depend on the caller's scopes on this user.

    Times stay datetimes: :func:`~courtyard.api.base.json_response` writes them as
    :func:`iso` would, in C, which matters when a page holds hundreds of users.
    """
    record = user if isinstance(user, UserRecord) else user_record(user)
    keys = _allowed(ctx, USER_ACCESS, user=record.name)
    if not keys:
        return {}
    model: UserModel = {"kind": "user", "name": record.name}
    if "admin" in keys:
        model["admin"] = record.admin
    if "roles" in keys:
        model["roles"] = list(record.roles)
    if "groups" in keys:
        model["groups"] = list(record.groups)
    if "created" in keys:
        model["created"] = record.created
    if "last_activity" in keys:
        model["last_activity"] = record.last_activity
    pending_default = ctx.hub.lifecycle.pending(record.name, "")
    if "server" in keys:
        default = next((s for s in record.servers if s.name == ""), None) \
            if record.servers else None
        ready = default is not None and default.url is not None and pending_default is None
        model["server"] = server_url(ctx, record.name, "") if ready else None
    if "pending" in keys:
        model["pending"] = pending_default
    if "servers" in keys:
        servers = {}
        for server in record.servers:
            if not ctx.can("read:servers", Target(user=record.name,
                                                  server=f"{record.name}/{server.name}")):
                continue
            if include_stopped_servers or server_is_active(ctx, record, server):
                servers[server.name] = server_model(ctx, record, server, with_state=True)
        model["servers"] = servers
    if "auth_state" in keys:
        row = user if isinstance(user, User) else (
            ctx.db.get(User, record.id) if record.has_auth_state else None)
        model["auth_state"] = ctx.hub.read_auth_state(row) if row is not None else None
    return model


def group_model(ctx: Ctx, group: Group) -> GroupModel:
    keys = _allowed(ctx, GROUP_ACCESS, group=group.name)
    if not keys:
        return {}
    model: GroupModel = {"kind": "group", "name": group.name}
    if "users" in keys:
        model["users"] = [u.name for u in group.users]
    if "properties" in keys:
        model["properties"] = group.properties or {}
    if "roles" in keys:
        model["roles"] = [r.name for r in group.roles]
    return model


def service_model(ctx: Ctx, service: Service) -> ServiceModel:
    keys = _allowed(ctx, SERVICE_ACCESS, service=service.name)
    if not keys:
        return {}
    spec = ctx.hub.service_specs.get(service.name, {})
    base = ctx.hub.options.base_url
    full: ServiceModel = {
        "kind": "service",
        "name": service.name,
        "admin": service.admin,
        "roles": [r.name for r in service.roles],
        "url": service.url or "",
        "prefix": f"{base}services/{service.name}/" if service.url else "",
        "command": spec.get("command", []),
        "pid": ctx.hub.service_pids.get(service.name, 0),
        "info": service.info or {},
        "display": service.display,
    }
    # a ServiceModel still: some of its keys (every one is optional)
    return cast(ServiceModel, {k: v for k, v in full.items() if k in keys})


def token_model(token: APIToken) -> TokenModel:
    model: TokenModel = {
        "id": f"a{token.id}",
        "kind": "api_token",
        "scopes": sorted(token.scopes),
        "roles": [],
        "note": token.note,
        "created": iso(token.created),
        "expires_at": iso(token.expires_at),
        "last_activity": iso(token.last_activity),
        "session_id": token.session_id,
        "oauth_client": (token.oauth_client.description or token.oauth_client.identifier)
        if token.oauth_client else "JupyterHub",
    }
    if token.user is not None:
        model["user"] = token.user.name
    elif token.service is not None:
        model["service"] = token.service.name
    return model
