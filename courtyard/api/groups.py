"""``/groups``: list, create, read and delete groups; members and properties."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import selectinload
from starlette.routing import Route

from ..auth.scopes import ALL, Target
from ..db import queries
from ..db.models import Group, User
from ..errors import BadRequest, Conflict, Forbidden, NotFound
from ..names import check_group_name
from . import guard
from .base import GROUP_MODEL, Ctx, Page, check_model, endpoint
from .models import GroupModel, group_model
from .users import normalized_name

GROUP_READ_SCOPES = ("read:groups", "read:groups:name", "read:roles:groups")


def load_group(ctx: Ctx, scopes: tuple[str, ...] = GROUP_READ_SCOPES) -> Group:
    name = ctx.arg("name")
    ctx.require(scopes, Target(group=name))
    group = queries.get_group(ctx.db, name)
    if group is None:
        raise NotFound(f"No such group: {name}")
    return group


def users_named(ctx: Ctx, raw: object) -> list[User]:
    """Users for a list of names from a body; 400 naming any that do not exist."""
    if not isinstance(raw, list):
        raise BadRequest("users must be a list of usernames")
    names = list(dict.fromkeys(normalized_name(ctx, n) for n in raw))
    found = {u.name: u for u in ctx.db.scalars(select(User).where(User.name.in_(names)))}
    missing = [n for n in names if n not in found]
    if missing:
        raise BadRequest(f"No such user(s): {', '.join(missing)}")
    return [found[n] for n in names]


def _require_may_join(ctx: Ctx, group: Group | str, users: list[User]) -> None:
    """Joining ``group`` must not give anyone rights the caller lacks, nor bring a user who
    holds more than the caller into the caller's reach."""
    name = group if isinstance(group, str) else group.name
    grants = guard.config_scopes_for_group(ctx, name)  # given at the hub's next start
    if isinstance(group, Group):
        grants += guard.group_scopes(ctx, group)
    guard.require_grant(ctx, grants, None, f"add members to group {name}")
    for user in users:
        guard.require_user_below(ctx, user, f"add to group {name}")
        guard.require_grant(ctx, grants, user, f"add {user.name} to group {name}")


def _check_body(body: dict[str, Any], allowed: set[str]) -> None:
    """JupyterHub takes a whole group model (``name``, ``users``, ``roles``) in each body and
    ignores what the endpoint does not use: the seeds post ``{"name", "users"}``."""
    check_model(body, GROUP_MODEL, allowed, "group")


@endpoint("list:groups")
async def list_groups(ctx: Ctx) -> list[GroupModel] | Page[list[GroupModel]]:
    envelope = ctx.wants_envelope()
    offset, limit = ctx.page_args(envelope)
    conditions = []
    filters = ctx.filters("list:groups")
    if filters is not ALL and filters is not None:
        if any(not f.startswith("group=") for f in filters):
            raise Forbidden("list:groups only accepts group filters")
        conditions.append(Group.name.in_([f[6:] for f in filters]))
    query = select(Group).where(*conditions).order_by(Group.id).offset(offset).limit(limit)
    groups = ctx.db.scalars(query.options(selectinload(Group.users),
                                          selectinload(Group.roles))).all()
    total = ctx.db.scalar(select(func.count(Group.id)).where(*conditions)) or 0
    return ctx.paginate([group_model(ctx, g) for g in groups], offset, limit, total, envelope)


@endpoint("admin:groups", status=201)
async def create_groups(ctx: Ctx) -> list[GroupModel]:
    body = await ctx.body(required=True) or {}
    _check_body(body, {"groups", "users"})
    names = body.get("groups")
    if not isinstance(names, list) or not names:
        raise BadRequest("groups must be a non-empty list of names")
    for name in names:
        if problem := check_group_name(name):
            raise BadRequest(problem)
        ctx.require(["admin:groups"], Target(group=name))
    users = users_named(ctx, body.get("users", []))
    for name in names:
        _require_may_join(ctx, name, users)
    taken = list(ctx.db.scalars(select(Group.name).where(Group.name.in_(names))))
    if taken:
        raise Conflict(f"Group(s) already exist: {', '.join(taken)}")
    groups = [Group(name=n, properties={}, users=list(users)) for n in dict.fromkeys(names)]
    ctx.db.add_all(groups)
    ctx.db.flush()
    return [group_model(ctx, g) for g in groups]


@endpoint(*GROUP_READ_SCOPES)
async def get_group(ctx: Ctx) -> GroupModel:
    return group_model(ctx, load_group(ctx))


@endpoint("admin:groups", status=201)
async def create_group(ctx: Ctx) -> GroupModel:
    name = ctx.arg("name")
    if problem := check_group_name(name):
        raise BadRequest(problem)
    ctx.require(["admin:groups"], Target(group=name))
    body = await ctx.body() or {}
    _check_body(body, {"users"})
    users = users_named(ctx, body.get("users", []))
    _require_may_join(ctx, name, users)
    if queries.get_group(ctx.db, name) is not None:
        raise Conflict(f"Group {name} already exists")
    group = Group(name=name, properties={}, users=users)
    ctx.db.add(group)
    ctx.db.flush()
    return group_model(ctx, group)


@endpoint("delete:groups", status=204)
async def delete_group(ctx: Ctx) -> None:
    group = load_group(ctx, ("delete:groups",))
    guard.require_group_below(ctx, group, "delete")
    ctx.db.delete(group)


async def _members_body(ctx: Ctx) -> list[User]:
    body = await ctx.body(required=True) or {}
    _check_body(body, {"users"})
    if "users" not in body:
        raise BadRequest("Must specify users")
    return users_named(ctx, body["users"])


@endpoint("groups")
async def add_members(ctx: Ctx) -> GroupModel:
    group = load_group(ctx, ("groups",))
    users = [u for u in await _members_body(ctx) if u not in group.users]
    _require_may_join(ctx, group, users)
    group.users.extend(users)
    ctx.db.flush()
    return group_model(ctx, group)


@endpoint("groups")
async def remove_members(ctx: Ctx) -> GroupModel:
    group = load_group(ctx, ("groups",))
    users = [u for u in await _members_body(ctx) if u in group.users]
    guard.require_group_below(ctx, group, "remove members from")
    guard.require_users_below(ctx, users, f"remove from group {group.name}")
    for user in users:
        group.users.remove(user)
    ctx.db.flush()
    return group_model(ctx, group)


@endpoint("groups")
async def set_properties(ctx: Ctx) -> GroupModel:
    group = load_group(ctx, ("groups",))
    properties = await ctx.body(required=True) or {}
    # spawner hooks may read a group's properties when its members start their servers
    guard.require_group_below(ctx, group, "change")
    guard.require_users_below(ctx, group.users, f"change group {group.name}, which has")
    group.properties = properties
    ctx.db.flush()
    return group_model(ctx, group)


routes = [
    Route("/groups", list_groups, methods=["GET"]),
    Route("/groups", create_groups, methods=["POST"]),
    Route("/groups/{name}", get_group, methods=["GET"]),
    Route("/groups/{name}", create_group, methods=["POST"]),
    Route("/groups/{name}", delete_group, methods=["DELETE"]),
    Route("/groups/{name}/users", add_members, methods=["POST"]),
    Route("/groups/{name}/users", remove_members, methods=["DELETE"]),
    Route("/groups/{name}/properties", set_properties, methods=["PUT"]),
]
