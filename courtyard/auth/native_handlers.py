"""Pages and REST endpoints of the native authenticator.

Pages (below ``{base_url}hub/``): ``signup``, ``change-password``, ``authorize`` (admins
approve or reject sign-ups). REST (below ``{base_url}hub/api``, scope ``admin:users``):

- ``GET /signups``: sign-ups waiting for approval
- ``POST /users/{name}/approve``: approve one (creates the user)
- ``DELETE /signups/{name}``: reject one
- ``PUT /users/{name}/password``: set a user's password; without ``password`` in the body a
  random one is made and returned once. Ends the user's sessions.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import TYPE_CHECKING, NotRequired, TypedDict

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..api import guard
from ..api.base import Ctx, endpoint
from ..api.models import iso
from ..auth.scopes import Target
from ..db import queries
from ..db.models import NativeAccount, User, utcnow
from ..errors import BadRequest, NotFound
from ..web.render import Page, login_redirect
from . import session as sess
from .base import maybe_await
from .login import TooManyAttempts, client_address
from .native import account_for, hash_password, set_password, verify_password

if TYPE_CHECKING:
    from ..web.hub import Hub
    from .native import NativeAuthenticator


def _native(hub: Hub) -> NativeAuthenticator:
    from .native import NativeAuthenticator

    auth = hub.authenticator
    for child in [auth, *getattr(auth, "authenticators", [])]:
        if isinstance(child, NativeAuthenticator):
            return child
    raise NotFound("The native authenticator is not in use")


def password_problem(auth: NativeAuthenticator, password: str, confirm: str) -> str | None:
    if len(password) < auth.minimum_password_length:
        return f"The password must have at least {auth.minimum_password_length} characters."
    if password != confirm:
        return "The two passwords differ."
    return None


def approve(db: Session, account: NativeAccount) -> User:
    user = queries.get_user(db, account.username) or queries.create_user(db, account.username)
    account.user = user
    account.authorized = True
    return user


# -- pages ----------------------------------------------------------------------------------
async def signup_page(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    auth = _native(hub)
    with hub.session() as db:
        page = Page(request, db)
        if request.method == "GET":
            return page.render("signup.html")
        username = await page.field("username")
        if not await page.xsrf_ok():
            return page.render("signup.html", 403, error="Your session expired; please try "
                               "again.", username=username)
        name = auth.normalize_username(username)
        problem = password_problem(auth, await page.field("password"),
                                   await page.field("password_confirm"))
        if not auth.validate_username(name) or not await maybe_await(
                auth.check_blocked_users(name)):
            problem = "This username cannot be used."
        elif queries.get_user(db, name) is not None or db.scalar(
                select(NativeAccount).where(NativeAccount.username == name)) is not None:
            problem = "This username is taken."
        if problem:
            return page.render("signup.html", 400, error=problem, username=username)
        account = NativeAccount(username=name, password_hash=await asyncio.to_thread(
            hash_password, await page.field("password")), authorized=False)
        db.add(account)
        if auth.open_signup:
            approve(db, account)
        db.commit()
        auth.log.info("New sign-up: %s (%s)", name,
                      "approved" if auth.open_signup else "waiting for approval")
        return page.render("signup.html", 200, done=True, approved=auth.open_signup)


async def change_password_page(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    auth = _native(hub)
    with hub.session() as db:
        page = Page(request, db)
        if page.user is None:
            return login_redirect(page.base_url, request)
        user = page.user
        if request.method == "GET":
            return page.render("change_password.html",
                               changed=request.query_params.get("changed") == "1")
        if not await page.xsrf_ok():
            return page.render("change_password.html", 403, error="Your session expired; "
                               "please try again.")
        throttle, address = hub.authenticator.throttle, client_address(request)
        wait = throttle.retry_after(user.name, address)
        if wait:
            error = TooManyAttempts(wait)
            return page.render("change_password.html", 429, error.headers, error=error.message)
        account = account_for(db, user.name)
        current = await page.field("current_password")
        ok = await asyncio.to_thread(verify_password, account.password_hash if account else None,
                                     current)
        if not ok or account is None:
            throttle.failure(user.name, address)
            return page.render("change_password.html", 403,
                               error="The current password is not right.")
        new = await page.field("password")
        problem = password_problem(auth, new, await page.field("password_confirm"))
        if problem:
            return page.render("change_password.html", 400, error=problem)
        account.password_hash = await asyncio.to_thread(hash_password, new)
        account.password_changed = utcnow()
        sess.end_sessions(db, user)  # other browsers are signed out; this one signs in anew
        db.commit()
        auth.log.info("User %s changed their password", user.name)
        return page.sign_in(user, page.url("change-password?changed=1"))


async def authorize_page(request: Request) -> Response:
    """Admins see sign-ups waiting for approval, and approve or reject them."""
    hub: Hub = request.app.state.hub
    _native(hub)
    with hub.session() as db:
        page = Page(request, db)
        if page.user is None:
            return login_redirect(page.base_url, request)
        ident = sess.cookie_identity(hub, db, page.user, page.sid)
        if not ident.has_any(["admin:users"]):
            return page.error(403, "Only admins can approve sign-ups.")
        message = ""
        if request.method == "POST":
            if not await page.xsrf_ok():
                return page.error(403, "Your session expired; please try again.")
            name, action = await page.field("username"), await page.field("action")
            account = db.scalar(select(NativeAccount).where(
                NativeAccount.username == name, NativeAccount.user_id.is_(None)))
            if account is not None and action == "approve":
                approve(db, account)
                message = f"Approved {name}."
            elif account is not None and action == "reject":
                db.delete(account)
                message = f"Rejected {name}."
            db.commit()
        pending = list(db.scalars(select(NativeAccount).where(NativeAccount.user_id.is_(None))
                                  .order_by(NativeAccount.created)))
        return page.render("authorize.html", pending=pending, message=message)


# -- REST -----------------------------------------------------------------------------------
def _pending(ctx: Ctx, name: str) -> NativeAccount:
    ctx.require(["admin:users"], Target(user=name))
    account = ctx.db.scalar(select(NativeAccount).where(NativeAccount.username == name,
                                                        NativeAccount.user_id.is_(None)))
    if account is None:
        raise NotFound(f"No sign-up waiting for approval: {name}")
    return account


class Signup(TypedDict):
    """A sign-up waiting for an admin's approval."""

    name: str
    created: str | None


class Approved(TypedDict):
    name: str
    approved: bool


class PasswordReset(TypedDict):
    """The new password only when the hub made it up."""

    name: str
    password: NotRequired[str]


@endpoint("admin:users")
async def list_signups(ctx: Ctx) -> list[Signup]:
    _native(ctx.hub)
    rows = ctx.db.scalars(select(NativeAccount).where(NativeAccount.user_id.is_(None))
                          .order_by(NativeAccount.created))
    return [{"name": r.username, "created": iso(r.created)} for r in rows
            if ctx.can("admin:users", Target(user=r.username))]


@endpoint("admin:users")
async def approve_signup(ctx: Ctx) -> Approved:
    _native(ctx.hub)
    account = _pending(ctx, ctx.arg("name"))
    guard.require_name_grantable(ctx, account.username, [], f"approve {account.username}")
    user = approve(ctx.db, account)
    ctx.db.flush()
    return {"name": user.name, "approved": True}


@endpoint("admin:users", status=204)
async def reject_signup(ctx: Ctx) -> None:
    _native(ctx.hub)
    ctx.db.delete(_pending(ctx, ctx.arg("name")))


@endpoint("admin:users")
async def reset_password(ctx: Ctx) -> PasswordReset:
    auth = _native(ctx.hub)
    name = ctx.arg("name")
    ctx.require(["admin:users"], Target(user=name))
    user = queries.get_user(ctx.db, name)
    if user is None:
        raise NotFound(f"No such user: {name}")
    guard.require_user_below(ctx, user, "reset the password of")  # else: log in as them
    body = await ctx.body() or {}
    password = body.get("password")
    generated = password is None
    if generated:
        password = secrets.token_urlsafe(12)
    if not isinstance(password, str) or len(password) < auth.minimum_password_length:
        raise BadRequest(f"password must be a string of at least "
                         f"{auth.minimum_password_length} characters")
    set_password(ctx.db, user, password, await asyncio.to_thread(hash_password, password))
    sess.end_sessions(ctx.db, user)
    auth.log.info("Password of %s reset by %s", name, ctx.identity.name if ctx.identity else "?")
    return {"name": name, "password": password} if generated else {"name": name}


api_routes: list[BaseRoute] = [
    Route("/signups", list_signups, methods=["GET"]),
    Route("/signups/{name}", reject_signup, methods=["DELETE"]),
    Route("/users/{name}/approve", approve_signup, methods=["POST"]),
    Route("/users/{name}/password", reset_password, methods=["PUT"]),
]
