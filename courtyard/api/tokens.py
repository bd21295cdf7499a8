"""``/users/{name}/tokens``: list, create, read and revoke a user's API tokens."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, TypedDict

from sqlalchemy import delete, or_, select
from starlette.routing import Route

from ..auth.identity import owner_scopes
from ..auth.scopes import (
    Parsed,
    expand_scopes,
    intersect_scopes,
    missing_scopes,
    parse_scopes,
    subtract_scopes,
    unparse_scopes,
    validate_scopes,
)
from ..db import queries
from ..db.models import APIToken, User, utcnow
from ..errors import BadRequest, Forbidden, NotFound
from . import guard
from .base import Ctx, endpoint
from .models import TokenModel, token_model
from .users import load_user

TOKEN_FIELDS = {"expires_in", "note", "scopes", "roles", "auth"}

log = logging.getLogger("courtyard.api")


class TokenList(TypedDict):
    """What listing a user's tokens answers."""

    api_tokens: list[TokenModel]


def _token_of(ctx: Ctx, user: User) -> APIToken:
    raw = ctx.arg("token_id")
    digits = raw[1:]
    # ids are 32-bit on PostgreSQL: a larger one would be refused, not merely not found
    if not raw.startswith("a") or not (digits.isascii() and digits.isdigit()) \
            or int(digits) > 2**31 - 1:
        raise NotFound(f"No such token: {raw}")
    token = ctx.db.get(APIToken, int(raw[1:]))
    if token is None or token.user_id != user.id:
        raise NotFound(f"No such token: {raw}")
    return token


@endpoint("read:tokens")
async def list_tokens(ctx: Ctx) -> TokenList:
    user = load_user(ctx, ctx.arg("name"), ("read:tokens",))
    now = utcnow()
    rows = ctx.db.scalars(select(APIToken).where(
        APIToken.user_id == user.id,
        or_(APIToken.expires_at.is_(None), APIToken.expires_at > now)))
    models = sorted((token_model(t) for t in rows),
                    key=lambda m: m["last_activity"] or m["created"] or "")
    return {"api_tokens": models}


def requested_scopes(ctx: Ctx, body: dict[str, Any], user: User) -> list[str]:
    """The scopes asked for, each of which the owner must hold (no silent narrowing)."""
    scopes = body.get("scopes")
    roles = body.get("roles")
    if scopes is None and roles is None:
        return _inherit(ctx, user, parse_scopes(owner_scopes(ctx.db, user)))
    wanted: list[str] = []
    if scopes is not None:
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise BadRequest("scopes must be a list of strings")
        problems = validate_scopes(scopes, ctx.hub.options.custom_scopes)
        if problems:
            raise BadRequest("; ".join(problems))
        wanted.extend(scopes)
    if roles is not None:
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise BadRequest("roles must be a list of role names")
        for name in roles:
            role = queries.get_role(ctx.db, name)
            if role is None:
                raise BadRequest(f"No such role: {name}")
            wanted.extend(role.scopes)
    held = parse_scopes(owner_scopes(ctx.db, user))
    if "inherit" in wanted:
        return _inherit(ctx, user, held)
    asked = parse_scopes(expand_scopes(wanted, "user", user.name))
    granted = intersect_scopes(asked, held, ctx.groups_of)
    missing = sorted(set(unparse_scopes(asked)) - set(unparse_scopes(granted)))
    if missing:
        raise BadRequest(f"Not assigning requested scopes {', '.join(missing)}, not held by "
                         f"{user.name}")
    _require_requester_holds(ctx, user, asked)
    return sorted(set(wanted))


def _require_requester_holds(ctx: Ctx, user: User, asked: Parsed) -> None:
    """A token never holds more than its requester (stricter than JupyterHub, which checks
    only the owner): a narrowed token cannot mint a wider one for its own owner, and
    ``tokens`` on another user gives that user's own ``self`` scopes, nothing more."""
    if guard.superuser(ctx):
        return
    if not guard.is_self(ctx, user):
        asked = subtract_scopes(asked, guard.baseline(user.name))
    held = ctx.identity.parsed if ctx.identity else {}
    lacking = missing_scopes(held, asked, ctx.groups_of)
    if lacking:
        shown = ", ".join(lacking[:guard.SHOWN])
        raise Forbidden(f"Cannot create a token with scopes you do not hold: {shown}")


def _inherit(ctx: Ctx, user: User, held: Parsed) -> list[str]:
    """``inherit``, or for a token made by someone else, the owner's scopes of today.

    A token someone else holds must not grow when its owner is later given more rights:
    it is made with the scopes the owner holds now (full admins still get ``inherit``).
    """
    _require_requester_holds(ctx, user, held)
    if guard.is_self(ctx, user) or guard.superuser(ctx):
        return ["inherit"]
    return unparse_scopes(held)


@endpoint("tokens", status=201, body_auth=True)
async def create_token(ctx: Ctx) -> TokenModel:
    user = load_user(ctx, ctx.arg("name"), ("tokens",))
    guard.require_user_below(ctx, user, "create a token for", self_ok=True)
    body = await ctx.body() or {}
    unknown = set(body) - TOKEN_FIELDS
    if unknown:  # JupyterHub reads the fields it knows and ignores the rest
        log.warning("Token request for %s: ignored unknown field(s) %s", user.name,
                    ", ".join(sorted(unknown)))
    note = body.get("note") or "Requested via api"
    if not isinstance(note, str):
        raise BadRequest("note must be a string")
    ident = ctx.identity
    if ident is not None and not (ident.kind == "user" and ident.id == user.id):
        note += f" by {ident.kind} {ident.name}"
    expires_in = body.get("expires_in")
    max_seconds = ctx.hub.options.token_expires_in_max_seconds
    if expires_in is not None:
        if isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in <= 0:
            raise BadRequest("expires_in must be a positive number of seconds or null")
        if max_seconds and expires_in > max_seconds:
            raise BadRequest(f"expires_in must not exceed {max_seconds} seconds")
    elif max_seconds:
        expires_in = max_seconds
    scopes = requested_scopes(ctx, body, user)
    expires_at = utcnow() + timedelta(seconds=expires_in) if expires_in else None
    token, secret = queries.issue_token(ctx.db, user, note=note, scopes=scopes, expires_at=expires_at)
    ctx.db.flush()
    model = token_model(token)
    model["token"] = secret
    return model


@endpoint("read:tokens")
async def get_token(ctx: Ctx) -> TokenModel:
    user = load_user(ctx, ctx.arg("name"), ("read:tokens",))
    token = _token_of(ctx, user)
    if token.expires_at is not None and token.expires_at <= utcnow():
        raise NotFound(f"No such token: {ctx.arg('token_id')}")
    return token_model(token)


@endpoint("tokens", status=204)
async def delete_token(ctx: Ctx) -> None:
    user = load_user(ctx, ctx.arg("name"), ("tokens",))
    token = _token_of(ctx, user)
    guard.require_user_below(ctx, user, "revoke a token of", self_ok=True)
    if token.from_config:
        raise Forbidden("This token comes from the config file; remove it there")
    if token.oauth_client_id:
        # revoking an OAuth token revokes everything that client was given for this user
        ctx.db.execute(delete(APIToken).where(APIToken.user_id == user.id,
                                              APIToken.oauth_client_id == token.oauth_client_id))
    else:
        ctx.db.delete(token)


routes = [
    Route("/users/{name}/tokens", list_tokens, methods=["GET"]),
    Route("/users/{name}/tokens", create_token, methods=["POST"]),
    Route("/users/{name}/tokens/{token_id}", get_token, methods=["GET"]),
    Route("/users/{name}/tokens/{token_id}", delete_token, methods=["DELETE"]),
]
