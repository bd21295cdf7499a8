"""Sharing (JupyterHub 5): grant access to one server to users, groups, or holders of a code."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any, NotRequired, TypedDict, TypeVar
from urllib.parse import urlencode

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session
from starlette.routing import Route

from ..auth import tokens
from ..auth.identity import share_scopes
from ..auth.scopes import Target
from ..db import queries
from ..db.models import Group, Server, Share, ShareCode, User, utcnow
from ..errors import BadRequest, NotFound
from . import guard
from .base import Ctx, Handler, Page, endpoint
from .models import iso, server_url

SHARE_CODE_MIN, SHARE_CODE_MAX, SHARE_CODE_DEFAULT = 60, 365 * 86400, 86400


class Named(TypedDict):
    name: str


class SharedServer(TypedDict):
    """The server a share or share code lends access to."""

    name: str
    url: str
    full_url: str | None
    ready: bool
    user: Named


class ShareModel(TypedDict):
    """JupyterHub's Share model."""

    server: SharedServer
    scopes: list[str]
    user: Named | None
    group: Named | None
    kind: str
    created_at: str | None


class ShareCodeModel(TypedDict):
    """JupyterHub's ShareCode model; the code itself only when it is created."""

    server: SharedServer
    scopes: list[str]
    id: str
    created_at: str | None
    expires_at: str | None
    last_exchanged_at: str | None
    exchange_count: int
    code: NotRequired[str]
    accept_url: NotRequired[str]
    full_accept_url: NotRequired[str | None]


def _owner_server(ctx: Ctx, scopes: tuple[str, ...]) -> tuple[User, Server]:
    owner_name = ctx.arg("owner")
    server_name = ctx.request.path_params.get("server", "")
    ctx.require(scopes, Target(user=owner_name, server=f"{owner_name}/{server_name}"))
    owner = queries.get_user(ctx.db, owner_name)
    server = None if owner is None else next(
        (s for s in owner.servers if s.name == server_name), None)
    if owner is None or server is None:
        raise NotFound(f"No such server: {owner_name}/{server_name}")
    return owner, server


def _owner_below(ctx: Ctx, owner: User) -> None:
    """Sharing a server lends its owner's access: never for an owner above the caller."""
    guard.require_user_below(ctx, owner, "change the sharing of a server of", self_ok=True)


def _require_held(ctx: Ctx, scopes: list[str]) -> None:
    guard.require_grant(ctx, scopes, None, "share access you do not have")


def _server_info(ctx: Ctx, owner: User, server: Server) -> SharedServer:
    url = server_url(ctx, owner.name, server.name)
    public = ctx.hub.options.public_url.rstrip("/")
    full_url = public + url if public else None
    if ctx.hub.origins.enabled:
        url = full_url = ctx.hub.origins.link(url)
    return {"name": server.name, "url": url, "full_url": full_url,
            "ready": server.url is not None and ctx.hub.lifecycle.pending(owner.name,
                                                                          server.name) is None,
            "user": {"name": owner.name}}


def share_model(ctx: Ctx, share: Share) -> ShareModel:
    return {
        "server": _server_info(ctx, share.server.user, share.server),
        "scopes": share_scopes(share),
        "user": {"name": share.user.name} if share.user else None,
        "group": {"name": share.group.name} if share.group else None,
        "kind": "user" if share.user else "group",
        "created_at": iso(share.created),
    }


def code_model(ctx: Ctx, code: ShareCode) -> ShareCodeModel:
    return {
        "server": _server_info(ctx, code.server.user, code.server),
        "scopes": share_scopes(code),
        "id": f"sc_{code.id}",
        "created_at": iso(code.created),
        "expires_at": iso(code.expires_at),
        "last_exchanged_at": iso(code.last_used),
        "exchange_count": 0,
    }


def _default_scopes(owner: User, server: Server) -> list[str]:
    return [f"access:servers!server={owner.name}/{server.name}"]


def _check_scopes(raw: object, owner: User, server: Server) -> list[str]:
    """Share scopes may only grant access to this one server: ``access:servers``, filtered
    to it (as JupyterHub, the filter is added when missing; any other filter, such as
    ``!user=`` reaching the owner's other servers, is refused)."""
    if raw is None:
        return _default_scopes(owner, server)
    if not isinstance(raw, list) or not raw or not all(isinstance(s, str) for s in raw):
        raise BadRequest("scopes must be a non-empty list of strings")
    allowed = {"access:servers", *_default_scopes(owner, server)}
    bad = [s for s in raw if s not in allowed]
    if bad:
        raise BadRequest(f"Shares may only grant access:servers!server={owner.name}/"
                         f"{server.name}, not {', '.join(bad)}")
    return _default_scopes(owner, server)


Models = TypeVar("Models", ShareModel, ShareCodeModel)


def _page(ctx: Ctx, items: list[Models]) -> list[Models] | Page[list[Models]]:
    offset, limit = ctx.page_args(True)
    return ctx.paginate(items[offset:offset + limit], offset, limit, len(items), True)


def _grantee(ctx: Ctx, body: dict[str, Any]) -> tuple[User | None, Group | None]:
    if ("user" in body) == ("group" in body):
        raise BadRequest("Specify exactly one of user or group")
    if "user" in body:
        name = body["user"]
        if not isinstance(name, str) or not ctx.can("read:users:name", Target(user=name)):
            raise BadRequest(f"No such user: {name}")
        user = queries.get_user(ctx.db, name)
        if user is None:
            raise BadRequest(f"No such user: {name}")
        return user, None
    name = body["group"]
    if not isinstance(name, str) or not ctx.can("read:groups:name", Target(group=name)):
        raise BadRequest(f"No such group: {name}")
    group = queries.get_group(ctx.db, name)
    if group is None:
        raise BadRequest(f"No such group: {name}")
    return None, group


def _find_share(ctx: Ctx, server: Server, user: User | None, group: Group | None) -> Share | None:
    """The share of ``server`` with ``user``, or else with ``group`` (:func:`_grantee`
    gives one of them)."""
    if user is not None:
        grantee = Share.user_id == user.id
    elif group is not None:
        grantee = Share.group_id == group.id
    else:
        return None
    return ctx.db.scalar(select(Share).where(Share.server_id == server.id, grantee))


@endpoint("read:shares")
async def list_owner_shares(ctx: Ctx) -> list[ShareModel] | Page[list[ShareModel]]:
    owner_name = ctx.arg("owner")
    ctx.require(["read:shares"], Target(user=owner_name))
    owner = queries.get_user(ctx.db, owner_name)
    if owner is None:
        raise NotFound(f"No such user: {owner_name}")
    shares = ctx.db.scalars(select(Share).where(Share.owner_id == owner.id).order_by(Share.id))
    return _page(ctx, [share_model(ctx, s) for s in shares])


@endpoint("read:shares")
async def list_server_shares(ctx: Ctx) -> list[ShareModel] | Page[list[ShareModel]]:
    _owner, server = _owner_server(ctx, ("read:shares",))
    shares = ctx.db.scalars(select(Share).where(Share.server_id == server.id).order_by(Share.id))
    return _page(ctx, [share_model(ctx, s) for s in shares])


@endpoint("shares")
async def grant_share(ctx: Ctx) -> ShareModel:
    owner, server = _owner_server(ctx, ("shares",))
    _owner_below(ctx, owner)
    body = await ctx.body(required=True) or {}
    unknown = set(body) - {"user", "group", "scopes"}
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
    user, group = _grantee(ctx, body)
    if user is not None and user.id == owner.id:
        raise BadRequest("Cannot share a server with its owner")
    scopes = _check_scopes(body.get("scopes"), owner, server)
    _require_held(ctx, scopes)
    share = _find_share(ctx, server, user, group)
    if share is None:
        share = Share(owner_id=owner.id, server=server, user=user, group=group, scopes=scopes)
        ctx.db.add(share)
    else:
        share.scopes = sorted(set(share_scopes(share)) | set(scopes))
    ctx.db.flush()
    return share_model(ctx, share)


@endpoint("shares")
async def revoke_share(ctx: Ctx) -> ShareModel | dict[str, object]:
    owner, server = _owner_server(ctx, ("shares",))
    _owner_below(ctx, owner)
    body = await ctx.body(required=True) or {}
    user, group = _grantee(ctx, body)
    share = _find_share(ctx, server, user, group)
    if share is None:
        return {}
    if body.get("scopes") is None:
        ctx.db.delete(share)
        return {}
    remove = set(_check_scopes(body["scopes"], owner, server))
    share.scopes = sorted(set(share_scopes(share)) - remove)
    if not share.scopes:
        ctx.db.delete(share)
        return {}
    return share_model(ctx, share)


@endpoint("shares", status=204)
async def revoke_all(ctx: Ctx) -> None:
    owner, server = _owner_server(ctx, ("shares",))
    _owner_below(ctx, owner)
    for share in ctx.db.scalars(select(Share).where(Share.server_id == server.id)):
        ctx.db.delete(share)
    for code in ctx.db.scalars(select(ShareCode).where(ShareCode.server_id == server.id)):
        ctx.db.delete(code)


# -- share codes -------------------------------------------------------------------------------

@endpoint("read:shares")
async def list_codes(ctx: Ctx) -> list[ShareCodeModel] | Page[list[ShareCodeModel]]:
    owner_name = ctx.arg("owner")
    if "server" in ctx.request.path_params:
        _owner, server = _owner_server(ctx, ("read:shares",))
        cond = ShareCode.server_id == server.id
    else:
        ctx.require(["read:shares"], Target(user=owner_name))
        owner = queries.get_user(ctx.db, owner_name)
        if owner is None:
            raise NotFound(f"No such user: {owner_name}")
        cond = ShareCode.owner_id == owner.id
    now = utcnow()
    codes = ctx.db.scalars(select(ShareCode).where(
        cond, or_(ShareCode.expires_at.is_(None), ShareCode.expires_at > now)).order_by(
        ShareCode.id))
    return _page(ctx, [code_model(ctx, c) for c in codes])


@endpoint("shares", status=201)
async def create_code(ctx: Ctx) -> ShareCodeModel:
    owner, server = _owner_server(ctx, ("shares",))
    _owner_below(ctx, owner)
    body = await ctx.body() or {}
    unknown = set(body) - {"scopes", "expires_in"}
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
    expires_in = body.get("expires_in", SHARE_CODE_DEFAULT)
    if isinstance(expires_in, bool) or not isinstance(expires_in, int) or not (
            SHARE_CODE_MIN <= expires_in <= SHARE_CODE_MAX):
        raise BadRequest(f"expires_in must be between {SHARE_CODE_MIN} and {SHARE_CODE_MAX} "
                         "seconds")
    scopes = _check_scopes(body.get("scopes"), owner, server)
    _require_held(ctx, scopes)
    secret = "sc_" + secrets.token_urlsafe(24)
    code = ShareCode(owner_id=owner.id, server=server, hashed_code=tokens.fast_hash(secret),
                     prefix=tokens.prefix(secret), scopes=scopes,
                     expires_at=utcnow() + timedelta(seconds=expires_in))
    ctx.db.add(code)
    ctx.db.flush()
    model = code_model(ctx, code)
    accept = f"{ctx.hub.options.base_url}hub/accept-share?{urlencode({'code': secret})}"
    public = ctx.hub.options.public_url.rstrip("/")
    model.update({"code": secret, "accept_url": accept,
                  "full_accept_url": public + accept if public else None})
    return model


@endpoint("shares", status=204)
async def delete_codes(ctx: Ctx) -> None:
    owner_name = ctx.arg("owner")
    server_name = ctx.request.path_params.get("server")
    ctx.require(["shares"], Target(user=owner_name, server=None if server_name is None else
                                   f"{owner_name}/{server_name}"))
    owner = queries.get_user(ctx.db, owner_name)
    if owner is None:
        raise NotFound(f"No such user: {owner_name}")
    _owner_below(ctx, owner)
    conds = [ShareCode.owner_id == owner.id]
    if server_name is not None:
        _owner, server = _owner_server(ctx, ("shares",))
        conds.append(ShareCode.server_id == server.id)
    params = ctx.request.query_params
    if "id" in params:
        raw = params["id"]
        if not raw.startswith("sc_") or not raw[3:].isdigit():
            raise NotFound(f"No such share code: {raw}")
        conds.append(ShareCode.id == int(raw[3:]))
    elif "code" in params:
        conds.append(ShareCode.hashed_code == tokens.fast_hash(params["code"]))
    for code in ctx.db.scalars(select(ShareCode).where(*conds)):
        ctx.db.delete(code)


def accept_share_code(ctx_db: Session, user: User, secret: str) -> Share:
    """Turn a share code into a share for ``user`` (the /hub/accept-share page calls this)."""
    code = ctx_db.scalar(select(ShareCode).where(ShareCode.hashed_code ==
                                                 tokens.fast_hash(secret)))
    if code is None or (code.expires_at is not None and code.expires_at <= utcnow()):
        raise NotFound("Share code not found or expired")
    if code.owner_id == user.id:
        raise BadRequest("You cannot accept a share of your own server")
    share = ctx_db.scalar(select(Share).where(Share.server_id == code.server_id,
                                              Share.user_id == user.id))
    if share is None:
        share = Share(owner_id=code.owner_id, server_id=code.server_id, user_id=user.id,
                      scopes=list(code.scopes))
        ctx_db.add(share)
    else:
        share.scopes = sorted(set(share_scopes(share)) | set(code.scopes))
    code.last_used = utcnow()
    ctx_db.flush()
    return share


# -- what was shared with a user or group ------------------------------------------------------

def _shared_with(ctx: Ctx, kind: str) -> tuple[User | Group, ColumnElement[bool]]:
    name = ctx.arg("name")
    scope_read = f"read:{kind}s:shares"
    target = Target(user=name) if kind == "user" else Target(group=name)
    ctx.require([scope_read, f"{kind}s:shares"], target)
    row = queries.get_user(ctx.db, name) if kind == "user" else queries.get_group(ctx.db, name)
    if row is None:
        raise NotFound(f"No such {kind}: {name}")
    cond = Share.user_id == row.id if kind == "user" else Share.group_id == row.id
    return row, cond


def _shared_list(kind: str) -> Handler:
    @endpoint(f"read:{kind}s:shares")
    async def shared(ctx: Ctx) -> list[ShareModel] | Page[list[ShareModel]]:
        _row, cond = _shared_with(ctx, kind)
        shares = ctx.db.scalars(select(Share).where(cond).order_by(Share.id))
        return _page(ctx, [share_model(ctx, s) for s in shares])

    shared.__name__ = f"list_{kind}_shared"
    return shared


def _shared_one(kind: str, delete: bool) -> Handler:
    async def one(ctx: Ctx) -> ShareModel | None:
        row, cond = _shared_with(ctx, kind)
        owner = queries.get_user(ctx.db, ctx.arg("owner"))
        server_name = ctx.request.path_params.get("server", "")
        share = None if owner is None else ctx.db.scalar(
            select(Share).join(Server, Server.id == Share.server_id).where(
                cond, Server.user_id == owner.id, Server.name == server_name))
        if share is None:
            raise NotFound("No such share")
        if delete:
            if isinstance(row, User):
                guard.require_user_below(ctx, row, "revoke shares of", self_ok=True)
            else:
                guard.require_group_below(ctx, row, "revoke shares of")
            ctx.db.delete(share)
            return None
        return share_model(ctx, share)

    one.__name__ = f"{'revoke' if delete else 'get'}_{kind}_shared"
    scope = f"{kind}s:shares" if delete else f"read:{kind}s:shares"
    return endpoint(scope, status=204 if delete else 200)(one)


routes = [
    Route("/shares/{owner}", list_owner_shares, methods=["GET"]),
    Route("/shares/{owner}/", list_server_shares, methods=["GET"]),
    Route("/shares/{owner}/", grant_share, methods=["POST"]),
    Route("/shares/{owner}/", revoke_share, methods=["PATCH"]),
    Route("/shares/{owner}/", revoke_all, methods=["DELETE"]),
    Route("/shares/{owner}/{server}", list_server_shares, methods=["GET"]),
    Route("/shares/{owner}/{server}", grant_share, methods=["POST"]),
    Route("/shares/{owner}/{server}", revoke_share, methods=["PATCH"]),
    Route("/shares/{owner}/{server}", revoke_all, methods=["DELETE"]),
    Route("/share-codes/{owner}", list_codes, methods=["GET"]),
    Route("/share-codes/{owner}", delete_codes, methods=["DELETE"]),
    Route("/share-codes/{owner}/", list_codes, methods=["GET"]),
    Route("/share-codes/{owner}/", create_code, methods=["POST"]),
    Route("/share-codes/{owner}/", delete_codes, methods=["DELETE"]),
    Route("/share-codes/{owner}/{server}", list_codes, methods=["GET"]),
    Route("/share-codes/{owner}/{server}", create_code, methods=["POST"]),
    Route("/share-codes/{owner}/{server}", delete_codes, methods=["DELETE"]),
]
for _kind, _prefix in (("user", "/users/{name}/shared"), ("group", "/groups/{name}/shared")):
    routes += [
        Route(_prefix, _shared_list(_kind), methods=["GET"]),
        Route(_prefix + "/{owner}/", _shared_one(_kind, False), methods=["GET"]),
        Route(_prefix + "/{owner}/", _shared_one(_kind, True), methods=["DELETE"]),
        Route(_prefix + "/{owner}/{server}", _shared_one(_kind, False), methods=["GET"]),
        Route(_prefix + "/{owner}/{server}", _shared_one(_kind, True), methods=["DELETE"]),
    ]
