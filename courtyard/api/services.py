"""``/services``: list and read services; add and remove services at run time."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload
from starlette.routing import Route

from ..auth.scopes import Target, validate_scopes
from ..db import queries
from ..db.models import Service
from ..errors import BadRequest, Conflict, Forbidden, NotFound
from . import guard
from .base import Ctx, endpoint
from .models import ServiceModel, service_model

SERVICE_READ_SCOPES = ("read:services", "read:services:name", "read:roles:services")
RUNTIME_KEYS = {"admin", "url", "oauth_client_allowed_scopes", "api_token", "info", "display",
                "oauth_no_confirm", "command", "cwd", "environment", "user", "oauth_client_id",
                "oauth_redirect_uri"}


def load_service(ctx: Ctx, scopes: tuple[str, ...] = SERVICE_READ_SCOPES) -> Service:
    name = ctx.arg("name")
    ctx.require(scopes, Target(service=name))
    service = queries.get_service(ctx.db, name)
    if service is None:
        raise NotFound(f"No such service: {name}")
    return service


@endpoint("list:services")
async def list_services(ctx: Ctx) -> dict[str, ServiceModel]:
    """A JSON object keyed by name, not a list, and not paginated, as in JupyterHub."""
    rows = ctx.db.scalars(select(Service).order_by(Service.name).options(
        selectinload(Service.roles)))
    return {s.name: m for s in rows if (m := service_model(ctx, s))}


@endpoint(*SERVICE_READ_SCOPES)
async def get_service(ctx: Ctx) -> ServiceModel:
    return service_model(ctx, load_service(ctx))


def _check_types(body: dict[str, Any]) -> None:
    kinds = {"admin": bool, "display": bool, "oauth_no_confirm": bool, "url": str,
             "api_token": str, "info": dict, "oauth_client_id": str, "oauth_redirect_uri": str,
             "oauth_client_allowed_scopes": list}
    for key, kind in kinds.items():
        if key in body and body[key] is not None and not isinstance(body[key], kind):
            raise BadRequest(f"{key} must be of type {kind.__name__}")


@endpoint("admin:services", status=201)
async def create_service(ctx: Ctx) -> ServiceModel:
    name = ctx.arg("name")
    ctx.require(["admin:services"], Target(service=name))
    if not name or "/" in name:
        raise BadRequest(f"invalid service name {name!r}")
    body = await ctx.body() or {}
    body.pop("name", None)  # JupyterHub takes a whole service model; the URL names it
    unknown = set(body) - RUNTIME_KEYS
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
    if body.get("command"):
        raise BadRequest("Hub-managed services (with a command) can only be defined in the "
                         "config file")
    _check_types(body)
    if body.get("admin") and not guard.superuser(ctx):
        raise Forbidden("Only admins can grant admin")  # with a token of the caller's choice
    allowed = body.get("oauth_client_allowed_scopes") or []
    problems = validate_scopes([s for s in allowed if s != "inherit"], ctx.hub.options.custom_scopes)
    if problems:
        raise BadRequest("oauth_client_allowed_scopes: " + "; ".join(problems))
    if "inherit" in allowed and not guard.superuser(ctx):
        raise Forbidden("Only admins can let a service's tokens inherit their visitors' rights")
    # its visitors' tokens would reach the service's owner: no more than the caller holds
    guard.require_grant(ctx, allowed, None, "let a service's OAuth tokens carry these scopes")
    if body.get("oauth_no_confirm") and not guard.superuser(ctx):
        # else its URL gets the scopes of whoever opens it, admins included, unasked
        raise Forbidden("Only admins can let a service skip the OAuth confirmation")
    if queries.get_service(ctx.db, name) is not None:
        raise Conflict(f"Service {name} already exists")
    client_id = body.get("oauth_client_id") or (f"service-{name}" if body.get("url") else None)
    if client_id and not client_id.startswith("service-"):
        raise BadRequest("oauth_client_id must start with 'service-'")
    service = Service(
        name=name, admin=bool(body.get("admin", False)), url=body.get("url") or None,
        info=body.get("info") or {}, display=bool(body.get("display", True)),
        oauth_client_id=client_id, oauth_redirect_uri=body.get("oauth_redirect_uri"),
        oauth_no_confirm=bool(body.get("oauth_no_confirm", False)),
        oauth_client_allowed_scopes=body.get("oauth_client_allowed_scopes") or [],
        from_config=False,
    )
    ctx.db.add(service)
    admin = queries.get_role(ctx.db, "admin") if service.admin else None  # a default role: always there
    if admin is not None:
        service.roles.append(admin)
    if body.get("api_token"):
        if len(body["api_token"]) < 8:
            raise BadRequest("api_token must be at least 8 characters")
        queries.issue_token(ctx.db, service, note="service token", secret=body["api_token"],
                      from_config=True)
    ctx.db.flush()
    return service_model(ctx, service)


@endpoint("admin:services")
async def delete_service(ctx: Ctx) -> None:
    service = load_service(ctx, ("admin:services",))
    guard.require_service_below(ctx, service, "delete")
    if service.from_config:
        from ..errors import HTTPError

        raise HTTPError("Service from the config file cannot be deleted through the API; "
                        "remove it from the config", status=405)
    ctx.db.delete(service)
    return None


routes = [
    Route("/services", list_services, methods=["GET"]),
    Route("/services/{name}", get_service, methods=["GET"]),
    Route("/services/{name}", create_service, methods=["POST"]),
    Route("/services/{name}", delete_service, methods=["DELETE"]),
]
