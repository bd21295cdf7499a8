"""Authenticators for trying Courtyard out: ``dummy`` (any password) and ``null`` (no login)."""

from __future__ import annotations

import hmac
import ipaddress
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from traitlets import Bool, Unicode

from ..errors import ConfigError
from .base import Authenticator, AuthResult

if TYPE_CHECKING:
    from .login import AuthenticatorHub, LoginContext


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def listens_on_loopback_only(options: Any) -> bool:
    """Whether both the public proxy and the hub itself bind loopback addresses only."""
    hosts = []
    hosts.append(urlsplit(options.bind_url).hostname or "" if options.bind_url else options.ip)
    hosts.append(urlsplit(options.hub_bind_url).hostname or "" if options.hub_bind_url
                 else options.hub_ip)
    return all(_is_loopback(h) for h in hosts)


class DummyAuthenticator(Authenticator):
    """Accepts any username; with ``password`` set, only that password. For testing only.

    It refuses to start unless the hub listens on loopback only, or ``allow_insecure`` is on.
    """

    password = Unicode("", help="If set, the password every user must give.").tag(config=True)
    allow_insecure = Bool(False, help="Start even when the hub listens beyond loopback, where "
                          "anyone who can reach it can sign in as anyone.").tag(config=True)

    def check_allowed(self, username: str, model: dict[str, Any] | None = None) -> bool:
        if not self.allowed_users:
            return True
        return super().check_allowed(username, model)

    async def authenticate(self, handler: LoginContext, data: dict[str, Any]) -> AuthResult:
        given = data.get("password")
        if self.password and not (isinstance(given, str) and hmac.compare_digest(
                given.encode(), self.password.encode())):
            return None
        return data.get("username") or None

    def check_config(self, hub: AuthenticatorHub) -> None:
        super().check_config(hub)
        if not self.allow_insecure and not listens_on_loopback_only(hub.options):
            raise ConfigError(
                "the dummy authenticator lets anyone sign in as anyone, and the hub listens "
                "beyond this machine (c.JupyterHub.ip / hub_ip / bind_url); pick a real "
                "authenticator (e.g. c.JupyterHub.authenticator_class = 'native') or set "
                "c.DummyAuthenticator.allow_insecure = True"
            )


class NullAuthenticator(Authenticator):
    """Nobody signs in through the hub (API tokens only)."""

    async def authenticate(self, handler: LoginContext, data: dict[str, Any]) -> AuthResult:
        return None

    def login_url(self, base_url: str) -> str:
        return ""
