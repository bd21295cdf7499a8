"""``/users``: list, create, read, edit and delete users, and report their activity."""

from __future__ import annotations

import functools
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, false, func, or_, select
from sqlalchemy.exc import IntegrityError
from starlette.routing import Route

from ..auth.scopes import ALL, Target, scope_allows
from ..db import queries
from ..db.models import Group, Role, Server, User, user_group_map, utcnow
from ..db.records import UserRecord, users_query
from ..errors import BadRequest, Conflict, Forbidden, NotFound
from ..names import check_user_name
from . import guard
from .base import USER_MODEL, Ctx, ErrorBody, Page, check_model, endpoint
from .models import UserModel, user_model
from .servers import user_info

USER_READ_SCOPES = ("read:users", "read:users:name", "read:servers", "read:users:groups",
                    "read:users:activity", "read:roles:users")
SORT_KEYS = {"id": User.id, "name": User.name, "last_activity": User.last_activity}


def normalized_name(ctx: Ctx, raw: object) -> str:
    if not isinstance(raw, str):
        raise BadRequest(f"username must be a string, not {type(raw).__name__}")
    name = ctx.hub.authenticator.normalize_username(raw)
    problem = check_user_name(name)  # even if a custom validate_username would allow it
    if problem is not None:
        raise BadRequest(f"Invalid username: {raw!r}: {problem}")
    if not ctx.hub.authenticator.validate_username(name):
        raise BadRequest(f"Invalid username: {raw!r}")
    return name


def load_user(ctx: Ctx, name: str, scopes: tuple[str, ...] = USER_READ_SCOPES) -> User:
    """The user named in the URL, if the caller's scopes reach them; 404 otherwise."""
    ctx.require(scopes, Target(user=name))
    user = queries.get_user(ctx.db, name)
    if user is None:
        raise NotFound(f"No such user: {name}")
    return user


def _list_filter(ctx: Ctx) -> ColumnElement[bool] | None:
    filters = ctx.filters("list:users")
    if filters is ALL or filters is None:
        return None
    names, groups = [], []
    for f in filters:
        kind, _, value = f.partition("=")
        if kind == "user":
            names.append(value)
        elif kind == "group":
            groups.append(value)
    in_groups = select(user_group_map.c.user_id).join(
        Group, Group.id == user_group_map.c.group_id).where(Group.name.in_(groups))
    return or_(User.name.in_(names) if names else false(),
               User.id.in_(in_groups) if groups else false())


def _state_filter(ctx: Ctx, state: str) -> ColumnElement[bool]:
    running = exists().where(and_(Server.user_id == User.id, Server.url.is_not(None)))
    pending_users = sorted({u for (u, _s) in ctx.hub.lifecycle.all_pending})
    active = or_(running, User.name.in_(pending_users)) if pending_users else running
    if state == "active":
        return active
    if state == "ready":
        return and_(running, User.name.not_in(pending_users)) if pending_users else running
    if state == "inactive":
        return ~active
    raise BadRequest(f"state must be active, ready or inactive, not {state!r}")


def _order(sort: str) -> list[Any]:
    column = SORT_KEYS[sort.lstrip("-")]
    order = column.desc() if sort.startswith("-") else column.asc()
    if column is User.last_activity:  # never active counts as least recent, on any database
        order = order.nulls_last() if sort.startswith("-") else order.nulls_first()
    return [order, User.id]


@functools.cache
def _page_query(sort: str) -> Select[int, str]:
    """Unfiltered pages, built once per sort order: building costs more than running them."""
    return users_query(None, _order(sort))


@endpoint("list:users")
async def list_users(ctx: Ctx) -> list[UserModel] | Page[list[UserModel]]:
    params = ctx.request.query_params
    envelope = ctx.wants_envelope()
    offset, limit = ctx.page_args(envelope)
    conditions = []
    if (cond := _list_filter(ctx)) is not None:
        conditions.append(cond)
    if state := params.get("state"):
        conditions.append(_state_filter(ctx, state))
    if name_filter := params.get("name_filter"):
        conditions.append(func.lower(User.name).contains(name_filter.lower(), autoescape=True))
    sort = params.get("sort", "id")
    if sort.lstrip("-") not in SORT_KEYS:
        raise BadRequest(f"sort must be one of {', '.join(SORT_KEYS)} (with - for descending)")
    include_stopped = ctx.query_bool("include_stopped_servers")
    query = _page_query(sort) if not conditions else users_query(conditions, _order(sort))
    users = ctx.hub.records.page(ctx.db, query, offset, limit)
    items = [m for u in users if (m := user_model(ctx, u, include_stopped))]
    if not envelope:
        total = offset + len(users) + (1 if len(users) == limit else 0)
    elif conditions:
        total = ctx.db.scalar(select(func.count(User.id)).where(*conditions)) or 0
    else:
        total = ctx.hub.records.count_users(ctx.db)
    return ctx.paginate(items, offset, limit, total or 0, envelope)


def _check_admin_grant(ctx: Ctx, admin: object) -> bool:
    if not isinstance(admin, bool):
        raise BadRequest("admin must be true or false")
    if admin and not guard.superuser(ctx):
        raise Forbidden("Only admins can grant admin")
    return admin


@endpoint("admin:users", status=201)
async def create_users(ctx: Ctx) -> list[UserModel]:
    body = await ctx.body(required=True) or {}
    check_model(body, USER_MODEL, {"usernames", "admin"}, "user")
    raw_names = body.get("usernames")
    if not isinstance(raw_names, list) or not raw_names:
        raise BadRequest("usernames must be a non-empty list of names")
    admin = _check_admin_grant(ctx, body.get("admin", False))
    names = list(dict.fromkeys(normalized_name(ctx, n) for n in raw_names))
    for name in names:  # a filtered admin creates only users its filter reaches
        ctx.require(["admin:users"], Target(user=name))
        guard.require_name_grantable(ctx, name, [], f"create {name}")
    existing = set(ctx.db.scalars(select(User.name).where(User.name.in_(names))))
    new = [n for n in names if n not in existing]
    if not new:
        raise Conflict(f"All {len(names)} users already exist")
    records = queries.insert_users(ctx.db, new, admin)
    await added_users(ctx, records)
    return [user_model(ctx, u) for u in records]


@endpoint(*USER_READ_SCOPES)
async def get_user(ctx: Ctx) -> UserModel:
    name = ctx.arg("name")
    ctx.require(USER_READ_SCOPES, Target(user=name))
    record = ctx.hub.records.user(ctx.session, name)
    if record is None:
        raise NotFound(f"No such user: {name}")
    return user_model(ctx, record, ctx.query_bool("include_stopped_servers"))


@endpoint("admin:users", status=201)
async def create_user(ctx: Ctx) -> UserModel:
    name = normalized_name(ctx, ctx.arg("name"))
    ctx.require(["admin:users"], Target(user=name))
    guard.require_name_grantable(ctx, name, [], f"create {name}")
    body = await ctx.body() or {}
    check_model(body, USER_MODEL, {"admin"}, "user")
    admin = _check_admin_grant(ctx, body.get("admin", False))
    try:  # the unique name decides; a lookup first would cost a query on every create
        [user] = queries.insert_users(ctx.db, [name], admin)
    except IntegrityError:
        raise Conflict(f"User {name} already exists") from None
    await added_users(ctx, [user])
    return user_model(ctx, user)


async def added_users(ctx: Ctx, records: list[UserRecord]) -> None:
    """A JupyterHub authenticator's ``add_user`` for users the API made, as JupyterHub
    calls it; if it raises, the request fails and the users are not made (rolled back)."""
    hook = getattr(ctx.hub.authenticator, "user_added", None)
    if hook is None:
        return
    for record in records:
        try:
            await hook(record)
        except Exception as e:
            raise BadRequest(f"Failed to create user {record.name}: {e}") from None


def _new_groups(ctx: Ctx, user: User, raw: object) -> list[Group]:
    """The groups a PATCH asks for; the caller must manage each group it changes, and may
    add the user only to groups whose rights it holds itself."""
    if not isinstance(raw, list) or not all(isinstance(g, str) for g in raw):
        raise BadRequest("groups must be a list of group names")
    current = {g.name: g for g in user.groups}
    found = {g.name: g for g in ctx.db.scalars(select(Group).where(Group.name.in_(raw)))}
    unseen = {n for n in raw if n not in current and (
        n not in found or not ctx.can("read:groups:name", Target(group=n)))}
    if unseen:  # a group the caller may not see is as missing as one that does not exist
        raise BadRequest(f"No such group(s): {', '.join(sorted(unseen))}")
    changed = [g for n, g in found.items() if n not in current]
    removed = [g for n, g in current.items() if n not in found]
    for group in changed + removed:
        if not ctx.can("groups", Target(group=group.name)):
            raise Forbidden(f"Changing membership of group {group.name} requires groups on it")
    for group in changed:
        guard.require_grant(ctx, guard.group_scopes(ctx, group), user,
                            f"add {user.name} to group {group.name}")
    for group in removed:
        guard.require_group_below(ctx, group, f"remove {user.name} from")
    return list(found.values())


def _new_roles(ctx: Ctx, user: User, raw: object) -> list[Role]:
    """The roles a PATCH asks for; granting one needs every right it gives."""
    if not isinstance(raw, list) or not all(isinstance(r, str) for r in raw):
        raise BadRequest("roles must be a list of role names")
    if not (ctx.identity and ctx.identity.has_any(["admin:roles"])):
        raise Forbidden("Changing a user's roles requires admin:roles")
    lookups = {name: queries.get_role(ctx.db, name) for name in raw}
    found = [role for role in lookups.values() if role is not None]
    if len(found) < len(lookups):
        raise BadRequest("No such role: " + ", ".join(
            name for name, role in lookups.items() if role is None))
    for role in found:
        if role not in user.roles:
            guard.require_role_below(ctx, role, f"give {user.name}")
            guard.require_grant(ctx, role.scopes, user, f"give {user.name} role {role.name}")
    return found


def _check_rename(ctx: Ctx, user: User, new: str, groups: list[str]) -> None:
    """A rename stays inside the caller's admin:users filter and never lands on a name the
    configuration gives more rights (``admin_users``, ``load_roles``, ``load_groups``)."""
    if not scope_allows(ctx.filters("admin:users"), Target(user=new), lambda _u: groups):
        raise Forbidden(f"Cannot rename {user.name} to {new}: your admin:users does not "
                        f"reach {new}")
    guard.require_name_grantable(ctx, new, groups, f"rename {user.name} to {new}")
    if queries.get_user(ctx.db, new) is not None:
        raise BadRequest(f"User {new} already exists, username must be unique")


@endpoint("admin:users")
async def edit_user(ctx: Ctx) -> UserModel:
    user = load_user(ctx, ctx.arg("name"), ("admin:users",))
    body = await ctx.body(required=True) or {}
    unknown = set(body) - {"name", "admin", "groups", "roles", "auth_state"}
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
    guard.require_user_below(ctx, user, "edit")
    # every check before any change: the lifecycle's rename is not rolled back with the db
    admin = _check_admin_grant(ctx, body["admin"]) if "admin" in body else None
    groups = _new_groups(ctx, user, body["groups"]) if "groups" in body else None
    roles = _new_roles(ctx, user, body["roles"]) if "roles" in body else None
    if "auth_state" in body and not isinstance(body["auth_state"], dict | None):
        raise BadRequest("auth_state must be a JSON object or null")
    new = normalized_name(ctx, body["name"]) if "name" in body else user.name
    if new != user.name:
        _check_rename(ctx, user, new, [g.name for g in (user.groups if groups is None
                                                         else groups)])
        # first, so that a failure changes nothing: e.g. the old name's system account is
        # released (a later user of that name must not get it)
        await ctx.hub.lifecycle.user_renamed(replace(user_info(ctx, user), name=new), user.name)
        ctx.hub.lifecycle.rename_user(user.name, new)
        user.name = new
    if admin is not None:
        queries.set_admin(ctx.db, user, admin)
    if groups is not None:
        user.groups = groups
    if roles is not None:
        user.roles = roles
        user.admin = any(r.name == "admin" for r in user.roles)
    if "auth_state" in body:
        ctx.hub.write_auth_state(user, body["auth_state"])
    ctx.db.flush()
    return user_model(ctx, user)


@endpoint("delete:users", status=204)
async def delete_user(ctx: Ctx) -> None:
    user = load_user(ctx, ctx.arg("name"), ("delete:users",))
    guard.require_user_below(ctx, user, "delete")
    ident = ctx.identity
    if ident and ident.kind == "user" and ident.id == user.id:
        raise BadRequest("Cannot delete yourself")
    for server in user.servers:
        if ctx.hub.lifecycle.pending(user.name, server.name) == "stop":
            raise BadRequest(f"{user.name}'s server {server.name!r} is in the process of "
                             "stopping; try again later")
    await ctx.hub.stop_user_servers(user)
    # before the row goes (as JupyterHub): should the deletion then fail, the user is
    # refused a server until an admin hands the account back, never the other way round
    await ctx.hub.lifecycle.delete_forever(user_info(ctx, user),
                                           ["", *(s.name for s in user.servers)])
    deleted = getattr(ctx.hub.authenticator, "user_deleted", None)
    if deleted is not None:  # a JupyterHub authenticator's delete_user, as JupyterHub calls it
        await deleted(user)
    ctx.db.delete(user)


def parse_time(value: object, field: str) -> datetime:
    if not isinstance(value, str):
        raise BadRequest(f"{field} must be an ISO 8601 timestamp string")
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{field}: {value!r} is not an ISO 8601 timestamp") from None
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    if dt - utcnow() > timedelta(minutes=59):
        raise BadRequest(f"{field}: {value} is in the future")
    return dt


@endpoint("users:activity")
async def user_activity(ctx: Ctx) -> None:
    name = ctx.arg("name")
    ctx.require(["users:activity"], Target(user=name))
    user = queries.get_user(ctx.db, name)
    if user is None:
        raise NotFound(f"No such user: {name}")
    body = await ctx.body(required=True) or {}
    servers = body.get("servers", {})
    if "last_activity" not in body and not servers:
        raise BadRequest("Missing last_activity or servers")
    if not isinstance(servers, dict):
        raise BadRequest("servers must be an object of {server name: {last_activity}}")
    updates = []
    for server_name, info in servers.items():
        server = next((s for s in user.servers if s.name == server_name), None)
        if server is None:
            raise BadRequest(f"No such server {server_name!r} for user {name}")
        if not isinstance(info, dict) or "last_activity" not in info:
            raise BadRequest(f"servers[{server_name!r}] needs last_activity")
        updates.append((server, parse_time(info["last_activity"],
                                           f"servers[{server_name!r}].last_activity")))
    latest = parse_time(body["last_activity"], "last_activity") if "last_activity" in body \
        else max(t for _s, t in updates)
    for server, when in updates:
        if server.last_activity is None or when > server.last_activity:
            server.last_activity = when
    if user.last_activity is None or latest > user.last_activity:
        user.last_activity = latest
    return None


@endpoint("servers", "admin:servers", status=403)
async def admin_access(ctx: Ctx) -> ErrorBody:
    return {"status": 403, "message": "admin_access is deprecated and not supported"}


routes = [
    Route("/users", list_users, methods=["GET"]),
    Route("/users", create_users, methods=["POST"]),
    Route("/users/{name}", get_user, methods=["GET"]),
    Route("/users/{name}", create_user, methods=["POST"]),
    Route("/users/{name}", edit_user, methods=["PATCH"]),
    Route("/users/{name}", delete_user, methods=["DELETE"]),
    Route("/users/{name}/activity", user_activity, methods=["POST"]),
    Route("/users/{name}/admin-access", admin_access, methods=["POST"]),
]
