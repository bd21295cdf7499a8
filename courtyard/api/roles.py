"""``/roles``: a REST API for roles (beyond JupyterHub, its issue #3858), scope ``admin:roles``.

Roles from the config file and the built-in roles are read-only here.
"""

from __future__ import annotations

from typing import Any, TypedDict

from sqlalchemy import select
from sqlalchemy.orm import selectinload
from starlette.routing import Route

from ..auth.roles import check_role
from ..db import queries
from ..db.models import Group, Role, RoleMember, Service, User
from ..errors import BadRequest, Conflict, Forbidden, NotFound
from . import guard
from .base import Ctx, endpoint


class RoleModel(TypedDict):
    """JupyterHub's Role model."""

    kind: str
    name: str
    description: str
    scopes: list[str]
    users: list[str]
    groups: list[str]
    services: list[str]
    managed_by: str


def role_model(role: Role) -> RoleModel:
    return {
        "kind": "role",
        "name": role.name,
        "description": role.description,
        "scopes": list(role.scopes),
        "users": [u.name for u in role.users],
        "groups": [g.name for g in role.groups],
        "services": [s.name for s in role.services],
        "managed_by": role.managed_by,
    }


def load_role(ctx: Ctx) -> Role:
    role = queries.get_role(ctx.db, ctx.arg("name"))
    if role is None:
        raise NotFound(f"No such role: {ctx.arg('name')}")
    return role


def _members(ctx: Ctx, model: type[RoleMember], names: list[str]) -> list[RoleMember]:
    found = {m.name: m for m in ctx.db.scalars(select(model).where(model.name.in_(names)))}
    missing = [n for n in names if n not in found]
    if missing:
        raise BadRequest(f"No such {model.__tablename__}: {', '.join(missing)}")
    return [found[n] for n in names]


def _apply(ctx: Ctx, role: Role, spec: dict[str, Any]) -> None:
    """Change ``role`` as ``spec`` says; the caller must hold every right the role then
    grants, and may add or remove only members that hold no more than itself."""
    if "description" in spec:
        role.description = spec["description"]
    if "scopes" in spec:
        role.scopes = list(spec["scopes"])
    action = f"change the members of role {role.name}:"
    if "users" in spec:
        users = _members(ctx, User, spec["users"])
        guard.require_users_below(ctx, set(users) ^ set(role.users), action)
        role.users = users
    if "groups" in spec:
        groups = _members(ctx, Group, spec["groups"])
        for group in set(groups) ^ set(role.groups):
            guard.require_group_below(ctx, group, action)
        role.groups = groups
    if "services" in spec:
        services = _members(ctx, Service, spec["services"])
        for service in set(services) ^ set(role.services):
            guard.require_service_below(ctx, service, action)
        role.services = services
    guard.require_role_below(ctx, role, "grant")


@endpoint("read:roles", "admin:roles")
async def list_roles(ctx: Ctx) -> list[RoleModel]:
    rows = ctx.db.scalars(select(Role).order_by(Role.name).options(
        selectinload(Role.users), selectinload(Role.groups), selectinload(Role.services)))
    return [role_model(r) for r in rows]


@endpoint("read:roles", "admin:roles")
async def get_role(ctx: Ctx) -> RoleModel:
    return role_model(load_role(ctx))


@endpoint("admin:roles", status=201)
async def create_role(ctx: Ctx) -> RoleModel:
    body = await ctx.body(required=True) or {}
    body.setdefault("name", ctx.request.path_params.get("name"))
    if ctx.request.path_params.get("name") not in (None, body["name"]):
        raise BadRequest("the role name in the URL and in the body differ")
    check_role(body, tuple(ctx.hub.options.custom_scopes))
    if queries.get_role(ctx.db, body["name"]) is not None:
        raise Conflict(f"Role {body['name']} already exists")
    role = Role(name=body["name"], description="", scopes=[], managed_by="api")
    ctx.db.add(role)
    _apply(ctx, role, body)
    ctx.db.flush()
    return role_model(role)


def _writable(role: Role) -> None:
    if role.managed_by != "api":
        origin = {"config": "the config file", "authenticator": "the authenticator "
                  "(manage_roles)"}.get(role.managed_by, "Courtyard (built in)")
        raise Forbidden(f"Role {role.name} is defined by {origin} and is read-only here")


@endpoint("admin:roles")
async def edit_role(ctx: Ctx) -> RoleModel:
    role = load_role(ctx)
    _writable(role)
    guard.require_role_below(ctx, role, "change")
    body = await ctx.body(required=True) or {}
    if "name" in body and body["name"] != role.name:
        raise BadRequest("roles cannot be renamed; create a new one")
    check_role({**body, "name": role.name}, tuple(ctx.hub.options.custom_scopes))
    _apply(ctx, role, body)
    ctx.db.flush()
    return role_model(role)


@endpoint("admin:roles", status=204)
async def delete_role(ctx: Ctx) -> None:
    role = load_role(ctx)
    _writable(role)
    guard.require_role_below(ctx, role, "delete")
    ctx.db.delete(role)


routes = [
    Route("/roles", list_roles, methods=["GET"]),
    Route("/roles", create_role, methods=["POST"]),
    Route("/roles/{name}", get_role, methods=["GET"]),
    Route("/roles/{name}", create_role, methods=["POST"]),
    Route("/roles/{name}", edit_role, methods=["PATCH"]),
    Route("/roles/{name}", delete_role, methods=["DELETE"]),
]
