"""Several sign-in methods at once: ``c.JupyterHub.authenticator_class = ['native', 'oidc']``.

The login page shows one password form for all password-based methods (tried in the order
given) and a "Sign in with ..." button for each external one. Each method keeps its own
options (``c.NativeAuthenticator.*``, ``c.OIDCAuthenticator.*``; ``c.Authenticator.*``
applies to all) and its own allow lists. A username is one account whichever method signed
it in, so only combine methods whose usernames name the same people.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from traitlets.config import Config

from ..config import build_configurable, resolve_class
from ..errors import ConfigError
from .base import Authenticator, AuthResult, Handler, LoginRefused, maybe_await

if TYPE_CHECKING:
    from sqlalchemy.orm import Session
    from starlette.routing import BaseRoute

    from ..db.models import User
    from .login import AuthenticatorHub, LoginContext


def build_multi(names: list[object] | tuple[object, ...], config: Config) -> MultiAuthenticator:
    """A MultiAuthenticator of the authenticators named (short names, paths or classes)."""
    if not names:
        raise ConfigError("c.JupyterHub.authenticator_class is an empty list")
    children: list[Authenticator] = []
    seen: set[str] = set()
    for value in names:
        cls = resolve_class("authenticator", value, Authenticator)
        child = build_configurable(cls, config)
        key = re.sub(r"[^a-z0-9-]", "", value.lower()) if isinstance(value, str) and \
            "." not in value else cls.__name__.lower().replace("authenticator", "")
        key = key or "auth"
        while key in seen:
            key += "x"
        seen.add(key)
        if child.login_service:
            child.url_prefix = f"{key}/"
        children.append(child)
    return MultiAuthenticator(children, config=config)


class MultiAuthenticator(Authenticator):
    """Offers each of ``authenticators``; the first to accept a login wins."""

    def __init__(self, authenticators: list[Authenticator], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.authenticators = authenticators

    @property
    def password_methods(self) -> list[Authenticator]:
        return [a for a in self.authenticators if not a.login_service]

    async def get_authenticated_user(self, handler: LoginContext,
                                     data: dict[str, Any] | None) -> dict[str, Any] | None:
        refused: LoginRefused | None = None
        for child in self.password_methods:
            try:
                model = await child.get_authenticated_user(handler, data)
            except LoginRefused as e:
                refused = refused or e
                continue
            if model is not None:
                return model
        if refused is not None:
            raise refused
        return None

    async def authenticate(self, handler: LoginContext, data: dict[str, Any]) -> AuthResult:
        model = await self.get_authenticated_user(handler, data)
        return model

    def normalize_username(self, username: str) -> str:
        return self.authenticators[0].normalize_username(username)

    def validate_username(self, username: str) -> bool:
        return self.authenticators[0].validate_username(username)

    async def refresh_user(self, user: User, handler: LoginContext | None = None
                           ) -> bool | dict[str, Any]:
        for child in self.authenticators:
            result: bool | dict[str, Any] = await maybe_await(child.refresh_user(user, handler))
            if result is not True:
                return result
        return True

    @property
    def refreshes(self) -> bool:
        return any(child.refreshes for child in self.authenticators)

    async def pre_spawn_start(self, user: Any, spawner: Any) -> None:
        for child in self.authenticators:
            await maybe_await(child.pre_spawn_start(user, spawner))

    async def post_spawn_stop(self, user: Any, spawner: Any) -> None:
        """Each child's, as for ``pre_spawn_start``: a hook that tidies up after a server
        (e.g. revokes what ``pre_spawn_start`` handed it) must not be skipped, not even
        when another child's raised."""
        for child in self.authenticators:
            try:
                await maybe_await(child.post_spawn_stop(user, spawner))
            except Exception:
                self.log.exception("Error in %s.post_spawn_stop for %s",
                                   type(child).__name__, getattr(user, "name", user))

    def check_config(self, hub: AuthenticatorHub) -> None:
        for child in self.authenticators:
            child.check_config(hub)

    def invalid_reason(self, user: User) -> str | None:
        """A stored user is valid while any child still takes them (or blocks them: a
        blocked user is never deleted). Every child is asked: a JupyterHub plugin learns of
        each stored user that way (its ``add_user``)."""
        reasons = [None if user.name in child.blocked_users else child.invalid_reason(user)
                   for child in self.authenticators]
        return None if None in reasons else reasons[0]

    def users_checked(self) -> None:
        for child in self.authenticators:
            child.users_checked()

    def startup(self, hub: AuthenticatorHub, db: Session) -> None:
        for child in self.authenticators:
            child.checks_users = False  # checked once, below, against every child
            child.startup(hub, db)
        # what the hub does with a model (store auth state, sync groups) follows the children
        self.enable_auth_state = any(c.enable_auth_state for c in self.authenticators)
        self.manage_groups = any(c.manage_groups for c in self.authenticators)
        self.manage_roles = any(c.manage_roles for c in self.authenticators)
        super().startup(hub, db)
        if self.enable_auth_state:
            for child in self.authenticators:
                child.crypt = self.crypt

    def on_serve(self, hub: AuthenticatorHub) -> None:
        for child in self.authenticators:
            child.on_serve(hub)

    def get_handlers(self, hub: AuthenticatorHub) -> list[Handler]:
        return [h for child in self.authenticators for h in child.get_handlers(hub)]

    def api_routes(self) -> list[BaseRoute]:
        return [r for child in self.authenticators for r in child.api_routes()]

    def component_classes(self) -> list[type]:
        return [type(self), *(c for child in self.authenticators
                              for c in child.component_classes())]

    @property
    def logout_redirect_url(self) -> str:
        return ""
