"""Per-user origins (``subdomain_host``): host names, browser URLs, and the hub's own host.

Browsers isolate origins, not paths. Without ``subdomain_host`` every server lives on the
hub's origin, so a page a user serves from their server runs with the rights of whoever
opens it, in the hub too. With ``c.JupyterHub.subdomain_host = "https://hub.example.org"``
(scheme, host, optional port; as in JupyterHub):

- each user's servers live on ``https://<label>.hub.example.org/user/<name>/...``, where
  ``<label>`` is JupyterHub's default ``subdomain_hook`` ("idna") naming;
- the proxy routes on host name (routespecs ``<label>.hub.example.org/user/<name>/``);
- the hub (pages, API, login, OAuth) lives on ``hub.example.org`` itself, with host-only
  cookies; a request that reaches the hub on a user's host is sent to the hub's host
  (:class:`HubHostOnly`), so no hub page and no hub cookie ever exists on a user's origin;
- servers sign visitors in by OAuth across the two origins and keep their own cookie on
  their own host.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
import string
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlsplit

from starlette.responses import JSONResponse, RedirectResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger("courtyard")

SubdomainHook = Callable[[str, str, str], str]  # (name, domain, kind) -> host name
_LABEL = re.compile(r"[a-z0-9-]{1,63}", re.IGNORECASE)
_STRICT = frozenset(string.ascii_lowercase + string.digits)


# -- naming (JupyterHub's default subdomain_hook, "idna") ------------------------------------
def _dns_safe(label: str) -> bool:
    return (bool(_LABEL.fullmatch(label)) and not label.isnumeric()
            and not label.startswith("-") and not label.endswith("-"))


def _trim_and_hash(name: str) -> str:
    """``u-<up to 8 safe characters>--<7 hex of sha256>``: unique, and never a name itself
    (no name that is used as it stands contains ``--``)."""
    stub = "".join(c for c in name.lower() if c in _STRICT)[:8] or "x"
    return f"u-{stub}--{hashlib.sha256(name.encode()).hexdigest()[:7]}"


def dns_label(name: str) -> str:
    """One DNS label for a user name: the name itself when it is a safe label, its IDNA form
    (``xn--...``) for other letters, else a trimmed, hashed form; always lower case."""
    if "--" in name:  # would collide with the IDNA and hashed forms
        return _trim_and_hash(name)
    if _dns_safe(name):
        return name.lower()
    try:
        import idna

        encoded = idna.encode(name).decode("ascii")
    except (ImportError, UnicodeError, ValueError):
        encoded = ""
    if encoded and encoded != name and _dns_safe(encoded):
        return encoded.lower()
    return _trim_and_hash(name)


def subdomain_hook_idna(name: str, domain: str, kind: str) -> str:
    """JupyterHub's default hook: ``alice.domain`` for users, ``NAME--KIND.domain`` else."""
    suffix = "" if kind == "user" else f"--{kind}"
    return f"{dns_label(name)}{suffix}.{domain}"


def resolve_hook(value: Any) -> SubdomainHook:
    if callable(value):
        hook: SubdomainHook = value  # the config's callable, called as JupyterHub calls it
        return hook
    if value in ("idna", "", None):
        return subdomain_hook_idna
    raise ConfigError(f"c.JupyterHub.subdomain_hook = {value!r}: use 'idna' or a callable "
                      "(name, domain, kind) -> host name")


def check_subdomain_host(value: str) -> str:
    """``scheme://host[:port]`` without a path, normalised; "" stays "" (subdomains off)."""
    if not value:
        return ""
    parts = urlsplit(value)
    problem = ""
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problem = "must be a URL like https://hub.example.org (scheme and host)"
    elif parts.path not in ("", "/") or parts.query or parts.fragment:
        problem = "must have no path (the base URL is c.JupyterHub.base_url)"
    else:
        try:
            ipaddress.ip_address(parts.hostname)
            problem = "must be a host name, not an IP address (an IP has no subdomains)"
        except ValueError:
            pass
    if problem:
        raise ConfigError(f"c.JupyterHub.subdomain_host = {value!r} {problem}")
    return f"{parts.scheme}://{parts.netloc.lower()}"


# -- the hub's view ---------------------------------------------------------------------------
class Origins:
    """Where browsers reach the hub and each user's servers."""

    def __init__(self, subdomain_host: str, hook: SubdomainHook, base_url: str) -> None:
        self.host = subdomain_host  # scheme://domain[:port], or "" when off
        parts = urlsplit(subdomain_host)
        self.scheme = parts.scheme
        self.domain = (parts.hostname or "").lower()
        self.port = f":{parts.port}" if parts.port else ""
        self.hook = hook
        self.base_url = base_url

    @property
    def enabled(self) -> bool:
        return bool(self.host)

    def user_domain(self, username: str) -> str:
        """``alice.hub.example.org`` (no scheme, no port)."""
        return str(self.hook(username, self.domain, "user")).lower()

    def user_host(self, username: str) -> str:
        """``https://alice.hub.example.org[:port]``; "" without subdomains."""
        if not self.enabled:
            return ""
        return f"{self.scheme}://{self.user_domain(username)}{self.port}"

    def link(self, url: str) -> str:
        """A browser URL: a path to a server (``{base}user/NAME/...``) on its own origin."""
        prefix = f"{self.base_url}user/"
        if not self.enabled or not url.startswith(prefix):
            return url
        name = url[len(prefix):].partition("/")[0].partition("?")[0]
        return self.user_host(unquote(name)) + url if name else url

    def is_user_host(self, host: str) -> bool:
        """Whether a request's Host header names a user's origin (below the hub's domain)."""
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        name = name.lower().rstrip(".")
        return self.enabled and name.endswith("." + self.domain)


class HubHostOnly:
    """ASGI middleware: the hub answers only on its own host.

    A request that reaches the hub on a user's host (the proxy's default route catches a
    stopped server's URL, or any other path there) is sent to the same place on the hub's
    host: ``/user/...`` to ``/hub/user/...`` (as JupyterHub), anything else unchanged. Other
    methods than GET and HEAD get 421. So the login form, hub pages, OAuth consent and the
    hub's cookies never exist on an origin a user's server controls.
    """

    def __init__(self, app: ASGIApp, origins: Origins) -> None:
        self.app = app
        self.origins = origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.origins.enabled:
            host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
            if self.origins.is_user_host(host):
                response = self.refuse(scope, host)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refuse(self, scope: Scope, host: str) -> JSONResponse | RedirectResponse:
        base = self.origins.base_url
        if scope["method"] not in ("GET", "HEAD"):
            return JSONResponse({"status": 421, "message": f"The hub does not answer on {host}; "
                                 f"use {self.origins.host}{base}"}, status_code=421)
        path = scope.get("raw_path") or scope["path"].encode()
        path = path.decode("latin-1") if isinstance(path, bytes) else path
        if path.startswith(f"{base}user/"):
            path = f"{base}hub/{path[len(base):]}"
        query = scope.get("query_string", b"").decode("latin-1")
        target = f"{self.origins.host}{path}" + (f"?{query}" if query else "")
        return RedirectResponse(target, status_code=302)


# -- start-up warning -------------------------------------------------------------------------
class AdminOptions(Protocol):
    @property
    def admin_users(self) -> set[str]: ...


class Hub(Protocol):
    """What the warning needs of the hub: its origins, its admins and its authenticator
    (looked at for who it lets in: one, several at once, or any JupyterHub one)."""

    @property
    def options(self) -> AdminOptions: ...
    @property
    def origins(self) -> Origins: ...
    @property
    def authenticator(self) -> object: ...


def several_people(hub: Hub, db: Session) -> bool:
    """Whether more than one person may use the hub: two users in the database, two named
    in the config, sign-up, or an authenticator that lets in anyone who authenticates."""
    from sqlalchemy import func, select

    from .auth.dummy import DummyAuthenticator
    from .db.models import User

    if (db.scalar(select(func.count()).select_from(User)) or 0) >= 2:
        return True
    auth = hub.authenticator
    named: set[str] = set(hub.options.admin_users)
    for child in getattr(auth, "authenticators", None) or [auth]:
        named |= set(getattr(child, "allowed_users", ())) | set(getattr(child, "admin_users", ()))
        if getattr(child, "enable_signup", False) or getattr(child, "allowed_groups", None):
            return True
        if isinstance(child, DummyAuthenticator) and not child.allowed_users:
            return True
        if getattr(child, "allow_all", False) and not hasattr(child, "enable_signup"):
            return True  # native's allow_all only means "approved accounts"
    return len(named) >= 2


def warn_shared_origin(hub: Hub, db: Session) -> bool:
    """Log one line when several people share the hub's origin; True when it warned."""
    if hub.origins.enabled or not several_people(hub, db):
        return False
    log.warning("c.JupyterHub.subdomain_host is not set: every server shares the hub's "
                "origin, so a user's server can act as anyone who opens a page from it, "
                "admins included; set subdomain_host to give each user their own origin "
                "(see docs/security.md)")
    return True
