"""Authenticators for trying Courtyard out: ``dummy`` (any password) and ``null`` (no login)."""

from __future__ import annotations

from typing import Any

from traitlets import Unicode

from .base import Authenticator, AuthResult


class DummyAuthenticator(Authenticator):
    """Accepts any username; with ``password`` set, only that password. For testing only."""

    password = Unicode("", help="If set, the password every user must give.").tag(config=True)

    def check_allowed(self, username: str, model: dict[str, Any] | None = None) -> bool:
        if not self.allowed_users:
            return True
        return super().check_allowed(username, model)

    async def authenticate(self, handler: Any, data: dict[str, Any]) -> AuthResult:
        if self.password and data.get("password") != self.password:
            return None
        return data.get("username") or None


class NullAuthenticator(Authenticator):
    """Nobody signs in through the hub (API tokens only)."""

    async def authenticate(self, handler: Any, data: dict[str, Any]) -> AuthResult:
        return None
