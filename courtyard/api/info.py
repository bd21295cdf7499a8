"""``/``, ``/info``, ``/health``, ``/shutdown`` and ``/user``: the hub and the caller."""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import NotRequired, TypedDict

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import JUPYTERHUB_API_VERSION, __version__
from ..auth.scopes import parse_scopes, unparse_scopes
from ..db.models import Service
from ..db.records import UserRecord
from ..errors import BadRequest
from .base import VERSION_HEADER, Ctx, endpoint
from .models import ServiceModel, UserModel, service_model, user_model

Component = TypedDict("Component", {"class": str, "version": str})


class HubInfo(TypedDict):
    """What ``GET /info`` answers."""

    version: str
    courtyard_version: str
    python: str
    sys_executable: str
    authenticator: Component
    spawner: NotRequired[Component]


@endpoint(public=True)
async def root(ctx: Ctx) -> Response:
    from .base import json_response

    return json_response({"version": JUPYTERHUB_API_VERSION, "courtyard_version": __version__},
                         headers={"Access-Control-Allow-Origin": "*"})


async def health(_request: Request) -> Response:
    return Response(b"", 200, headers=VERSION_HEADER)


def _component(obj: object) -> Component:
    cls = obj if isinstance(obj, type) else type(obj)
    return {"class": f"{cls.__module__}.{cls.__name__}", "version": __version__}


@endpoint("read:hub")
async def info(ctx: Ctx) -> HubInfo:
    hub = ctx.hub
    data: HubInfo = {
        "version": JUPYTERHUB_API_VERSION,
        "courtyard_version": __version__,
        "python": sys.version,
        "sys_executable": sys.executable,
        "authenticator": _component(hub.authenticator),
    }
    if hub.spawner_class is not None:
        data["spawner"] = _component(hub.spawner_class)
    return data


@endpoint("shutdown", status=202)
async def shutdown(ctx: Ctx) -> dict[str, str]:
    body = await ctx.body() or {}
    for key in ("proxy", "servers"):
        if key in body and not isinstance(body[key], bool):
            raise BadRequest(f"{key} must be true or false")
        if key in body:
            ctx.hub.shutdown_options[key] = body[key]
    ctx.hub.shutdown_event.set()
    return {"message": "Shutting down Hub"}


@endpoint()
async def current_identity(ctx: Ctx) -> UserModel | ServiceModel:
    """The caller's own model plus the scopes this request holds (``GET /user``)."""
    ident = ctx.identity
    assert ident is not None
    if ident.identify_parsed is None:
        # the caller may always see its own name and groups, whatever its token's scopes
        identify = (
            {f"{s}!user={ident.name}" for s in ("read:users:name", "read:users:groups")}
            if ident.kind == "user" else {f"read:services:name!service={ident.name}"}
        )
        ident.identify_parsed = parse_scopes(set(unparse_scopes(ident.parsed)) | identify)
    if ident.kind == "user":
        owner: UserRecord | Service | None = ctx.hub.records.user(ctx.session, ident.name)
    else:
        owner = ctx.db.get(Service, ident.id)
    if owner is None:
        raise BadRequest("the token's owner no longer exists")
    ctx.identity = replace(ident, parsed=ident.identify_parsed)
    ctx.memo.clear()
    model = service_model(ctx, owner) if isinstance(owner, Service) else user_model(ctx, owner)
    ctx.identity = ident
    ctx.memo.clear()
    model["scopes"] = sorted(ident.expanded)
    model["session_id"] = ident.session_id
    model["token_id"] = f"a{ident.token_id}" if ident.token_id else None
    return model


routes = [
    Route("/", root, methods=["GET"]),
    Route("/info", info, methods=["GET"]),
    Route("/health", health, methods=["GET", "HEAD"]),
    Route("/shutdown", shutdown, methods=["POST"]),
    Route("/user", current_identity, methods=["GET"]),
]
