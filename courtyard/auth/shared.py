"""``shared-password``: one password for everyone, another for admins (JupyterHub 5.3's
SharedPasswordAuthenticator). For workshops and classes where accounts are throw-away.

Users in ``admin_users`` must sign in with ``admin_password`` (and become admins); everyone
else with ``user_password`` (and never become admins). The passwords are checked at start:
``user_password`` at least 8 characters, ``admin_password`` at least 32, and different.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

from traitlets import Unicode, default

from ..errors import ConfigError
from .base import Authenticator, AuthResult

if TYPE_CHECKING:
    from .login import AuthenticatorHub, LoginContext

USER_MIN = 8
ADMIN_MIN = 32


def _same(given: object, expected: str) -> bool:
    return bool(expected) and isinstance(given, str) and hmac.compare_digest(
        given.encode(), expected.encode())


class SharedPasswordAuthenticator(Authenticator):
    """Everyone shares ``user_password``; admins share ``admin_password``."""

    user_password = Unicode("", help=f"The password of every non-admin user; at least "
                            f"{USER_MIN} characters.").tag(config=True)
    admin_password = Unicode("", help=f"The password of the users in admin_users, who become "
                             f"admins; at least {ADMIN_MIN} characters. Without it, nobody "
                             "signs in as admin.").tag(config=True)
    global_password = Unicode("", help="Old name of user_password.").tag(config=True)

    @default("allow_all")
    def _default_allow_all(self) -> bool:
        return not self.allowed_users

    def check_config(self, hub: AuthenticatorHub) -> None:
        super().check_config(hub)
        name = type(self).__name__
        if self.global_password and not self.user_password:
            self.user_password = self.global_password
        if len(self.user_password) < USER_MIN:
            raise ConfigError(f"c.{name}.user_password must be set, with at least {USER_MIN} "
                              "characters (e.g. openssl rand -hex 8)")
        if self.admin_password and len(self.admin_password) < ADMIN_MIN:
            raise ConfigError(f"c.{name}.admin_password must have at least {ADMIN_MIN} "
                              "characters (e.g. openssl rand -hex 16)")
        if self.admin_password and self.admin_password == self.user_password:
            raise ConfigError(f"c.{name}.user_password and admin_password must differ")

    async def authenticate(self, handler: LoginContext, data: dict[str, Any]) -> AuthResult:
        name = self.normalize_username(str(data.get("username") or ""))
        password = data.get("password")
        if name in self.admin_users:
            if _same(password, self.admin_password):
                return {"name": name, "admin": True}
            return None
        if _same(password, self.user_password):
            return {"name": name, "admin": False}
        return None
