"""The Authenticator contract: who may sign in, under which name, and who is an admin.

Subclasses implement :meth:`Authenticator.authenticate`; everything else has a sensible
default. Options follow JupyterHub's names so ``c.Authenticator.*`` carries over.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from traitlets import Any as AnyTrait, Bool, Dict, Set, Unicode
from traitlets.config import LoggingConfigurable

AuthResult = str | dict[str, Any] | None


class Authenticator(LoggingConfigurable):
    """Base class. ``authenticate`` may be sync or async."""

    async def authenticate(self, handler: Any, data: dict[str, Any]) -> AuthResult:
        """Check credentials from the login form; return a name, a dict with ``name``, or None."""
        raise NotImplementedError

    def normalize_username(self, username: str) -> str:
        """Lower-case and map the name, so one person gets one account."""
        username = username.lower()
        return self.username_map.get(username, username)

    def validate_username(self, username: str) -> bool:
        """Whether a (normalized) name is acceptable at all."""
        if not username or "/" in username or username.strip() != username:
            return False
        if self.username_pattern:
            return re.fullmatch(self.username_pattern, username) is not None
        return True

    def check_blocked_users(self, username: str) -> bool:
        return username not in self.blocked_users

    def check_allowed(self, username: str, model: dict[str, Any] | None = None) -> bool:
        """Whether this user may sign in; admins and existing users may be let in too."""
        if self.allow_all:
            return True
        return username in self.allowed_users or username in self.admin_users

    def is_admin(self, handler: Any, model: dict[str, Any]) -> bool | None:
        """Admin status from the authenticator; None leaves it as stored."""
        return True if model["name"] in self.admin_users else None

    async def refresh_user(self, user: Any, handler: Any = None) -> bool | dict[str, Any]:
        return True

    async def pre_spawn_start(self, user: Any, spawner: Any) -> None:
        """Hook run before a user's server starts."""

    async def get_authenticated_user(self, handler: Any, data: dict[str, Any]) -> dict | None:
        """Run authenticate and the allow/block checks; the model, or None when refused."""
        result = self.authenticate(handler, data)
        if inspect.isawaitable(result):
            result = await result
        if result is None:
            return None
        model = {"name": result} if isinstance(result, str) else dict(result)
        name = self.normalize_username(model["name"])
        if not self.validate_username(name) or not self.check_blocked_users(name):
            return None
        model["name"] = name
        if not self.check_allowed(name, model):
            return None
        admin = self.is_admin(handler, model)
        if admin is not None:
            model.setdefault("admin", admin)
        if self.post_auth_hook:
            hooked = self.post_auth_hook(self, handler, model)
            model = await hooked if inspect.isawaitable(hooked) else hooked
        return model

    # -- options (JupyterHub's names) --------------------------------------------------------
    admin_users = Set(help="Names of users who are admins.").tag(config=True)
    allowed_users = Set(help="Names of users allowed to sign in (with allow_all off).").tag(
        config=True
    )
    blocked_users = Set(help="Names of users never allowed to sign in.").tag(config=True)
    allow_all = Bool(False, help="Let every user who authenticates sign in.").tag(config=True)
    allow_existing_users = Bool(False, help="Let users already in the database sign in.").tag(
        config=True
    )
    username_pattern = Unicode("", help="Regular expression every username must match.").tag(
        config=True
    )
    username_map = Dict(help="Map of names as typed to the account name.").tag(config=True)
    manage_groups = Bool(False, help="Group membership comes from the authenticator.").tag(
        config=True
    )
    manage_roles = Bool(False, help="Role assignments come from the authenticator.").tag(
        config=True
    )
    enable_auth_state = Bool(False, help="Keep encrypted auth state per user (needs "
                             "COURTYARD_CRYPT_KEY or JUPYTERHUB_CRYPT_KEY).").tag(config=True)
    post_auth_hook = AnyTrait(None, allow_none=True, help="callable(authenticator, handler, "
                              "model) -> model, run after authentication.").tag(config=True)
    auto_login = Bool(False, help="Skip the login page and go straight to the login handler."
                      ).tag(config=True)
    delete_invalid_users = Bool(False, help="Delete users whose names are no longer valid at "
                                "start-up instead of refusing to start.").tag(config=True)
