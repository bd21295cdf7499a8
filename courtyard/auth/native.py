"""``native``: passwords kept in the hub's database, hashed with argon2. The default.

On the first start (no native accounts yet) it creates an admin with a random password and
prints it once on stderr. Optional self sign-up (``enable_signup``) leaves new accounts
waiting for an admin's approval unless ``open_signup``; users change their own password at
``/hub/change-password``, admins reset one through the API. Pages and endpoints are in
:mod:`courtyard.auth.native_handlers`.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
from functools import cache
from typing import TYPE_CHECKING, Any, TextIO

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from traitlets import Bool, Integer, Unicode, default

from ..db import queries
from ..db.models import NativeAccount, User, utcnow
from ..errors import ConfigError
from .base import Authenticator, AuthResult, Handler, LoginRefused

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from .login import AuthenticatorHub, LoginContext

WAITING = "Your account is waiting for an administrator's approval."


@cache
def hasher() -> PasswordHasher:
    # OWASP's argon2id settings (19 MiB, 2 passes): about 0.15 s here, so a login burst
    # does not starve the hub; older hashes are upgraded at the next login
    return PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


@cache
def _decoy_hash() -> str:
    """A hash to check unknown users' passwords against, so they take as long to refuse."""
    return hasher().hash(secrets.token_hex(16))


def hash_password(password: str) -> str:
    return hasher().hash(password)


def verify_password(hashed: str | None, password: str) -> bool:
    """Constant work whether or not there is a hash to check."""
    try:
        return hasher().verify(hashed or _decoy_hash(), password) and hashed is not None
    except (VerificationError, InvalidHashError):
        return False


def account_for(db: Session, name: str) -> NativeAccount | None:
    """The account of user ``name``: by the user it belongs to, else a pending sign-up."""
    row = db.scalar(select(NativeAccount).join(User, NativeAccount.user_id == User.id)
                    .where(User.name == name))
    if row is not None:
        if row.username != name:  # the user was renamed
            stale = db.scalar(select(NativeAccount).where(NativeAccount.username == name))
            if stale is not None and stale is not row:
                db.delete(stale)
                db.flush()
            row.username = name
        return row
    return db.scalar(select(NativeAccount).where(NativeAccount.username == name,
                                                 NativeAccount.user_id.is_(None)))


def set_password(db: Session, user: User, password: str, hashed: str | None = None
                 ) -> NativeAccount:
    """Give ``user`` this password (an approved account), replacing any other."""
    account = account_for(db, user.name)
    if account is None:
        account = db.scalar(select(NativeAccount).where(NativeAccount.username == user.name))
    if account is None:
        account = NativeAccount(username=user.name)
        db.add(account)
    account.user = user
    account.password_hash = hashed or hash_password(password)
    account.authorized = True
    account.password_changed = utcnow()
    return account


def print_initial_password(name: str, password: str, stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    line = "=" * 72
    print(f"\n{line}\n  Courtyard: first start. Created the administrator account\n\n"
          f"      username: {name}\n      password: {password}\n\n"
          "  Sign in and change it at /hub/change-password. It is shown only this once.\n"
          f"{line}\n", file=stream, flush=True)


class NativeAuthenticator(Authenticator):
    """Accounts with passwords kept (argon2-hashed) in the hub's database."""

    async def authenticate(self, handler: LoginContext, data: dict[str, Any]) -> AuthResult:
        name = self.normalize_username(str(data.get("username") or ""))
        password = str(data.get("password") or "")
        account = account_for(handler.db, name) if name else None
        hashed = account.password_hash if account is not None else None
        ok = await asyncio.to_thread(verify_password, hashed, password)
        if not ok or account is None:
            return None
        if not account.authorized:
            raise LoginRefused(WAITING)
        if hasher().check_needs_rehash(account.password_hash):
            account.password_hash = await asyncio.to_thread(hash_password, password)
        return name

    def check_config(self, hub: AuthenticatorHub) -> None:
        super().check_config(hub)
        if self.minimum_password_length < 1:
            raise ConfigError("c.NativeAuthenticator.minimum_password_length must be at least 1")

    def on_serve(self, hub: AuthenticatorHub) -> None:
        """On the first start (no accounts yet), make an admin and print its password once.

        Not at mere start-up: ``courtyard token`` in a script must not swallow the password.
        """
        with hub.session() as db:
            if db.scalar(select(func.count()).select_from(NativeAccount)):
                return
            admins = sorted(self.admin_users | set(hub.options.admin_users))
            name = self.normalize_username(self.initial_admin or (admins[0] if admins
                                                                  else "admin"))
            user = queries.get_user(db, name) or queries.create_user(db, name)
            queries.set_admin(db, user, True)
            password = secrets.token_urlsafe(12)
            set_password(db, user, password)
            db.commit()
        print_initial_password(name, password)

    def get_handlers(self, hub: AuthenticatorHub) -> list[Handler]:
        from . import native_handlers as h

        handlers: list[Handler] = [("authorize", h.authorize_page)]
        if self.allow_password_change:
            handlers.append(("change-password", h.change_password_page))
        if self.enable_signup:
            handlers.append(("signup", h.signup_page))
        return handlers

    def api_routes(self) -> list[BaseRoute]:
        from . import native_handlers as h

        return h.api_routes

    # -- options (nativeauthenticator's names) ----------------------------------------------
    enable_signup = Bool(False, help="Offer /hub/signup, where people create an account that "
                         "an admin approves (nativeauthenticator's default is on; here off).").tag(
        config=True
    )
    open_signup = Bool(False, help="Approve sign-ups at once, without an admin.").tag(
        config=True
    )
    minimum_password_length = Integer(8, help="Shortest password accepted on sign-up and "
                                      "change.").tag(config=True)
    allow_password_change = Bool(True, help="Let users change their own password at "
                                 "/hub/change-password.").tag(config=True)
    initial_admin = Unicode("", help="Name of the admin made on first start (default: the "
                            "first of admin_users, else 'admin').").tag(config=True)

    @default("allow_all")
    def _default_allow_all(self) -> bool:
        # having an approved account is the allow list
        return True
