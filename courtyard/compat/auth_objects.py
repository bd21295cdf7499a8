"""What a JupyterHub authenticator's hooks are handed: a user, and a tornado-like handler."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker
    from starlette.requests import Request as StarletteRequest

    from ..auth.login import LoginContext
    from ..db.models import User


class SiteOptions(Protocol):
    @property
    def base_url(self) -> str: ...


class HandlerOptions(SiteOptions, Protocol):
    @property
    def allow_named_servers(self) -> bool: ...


class HandlerHub(Protocol):
    """What the handler needs of the hub: the site's base URL, and whether users may have
    named servers (JupyterHub's ``handler.settings``)."""

    @property
    def options(self) -> HandlerOptions: ...


class Hub(Protocol):
    """What a plugin's user needs of the hub: the site's base URL, the database (the user's
    id) and the user's auth state."""

    @property
    def options(self) -> SiteOptions: ...
    @property
    def session(self) -> sessionmaker[Session]: ...

    def read_auth_state(self, user: User) -> dict[str, Any] | None: ...


@dataclass
class GroupRef:
    """A group as JupyterHub's ``user.groups`` holds them (``group.name``)."""

    name: str


@dataclass
class HubUser:
    """The parts of JupyterHub's ``User`` wrapper that authenticator hooks use."""

    name: str
    id: int | None = None
    admin: bool = False
    groups: list[GroupRef] = field(default_factory=list)
    base_url: str = "/"
    auth_state: dict[str, Any] | None = None
    spawners: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def escaped_name(self) -> str:
        return quote(self.name, safe="@~")

    @property
    def url(self) -> str:
        return f"{self.base_url}user/{self.escaped_name}/"

    async def get_auth_state(self) -> dict[str, Any] | None:
        return self.auth_state

    async def save_auth_state(self, state: dict[str, Any] | None) -> None:
        self.auth_state = state


def hub_user(hub: Hub | None, user: Any, auth_state: dict[str, Any] | None = None) -> HubUser:
    """A JupyterHub-like user from a database row (or a spawner's ``UserInfo``), for the
    hooks of a JupyterHub authenticator or of an oauthenticator subclass."""
    base_url = hub.options.base_url if hub is not None else "/"
    user_id = getattr(user, "id", None)
    if user_id is None and hub is not None:
        user_id = _user_id(hub, user.name)
    groups = [GroupRef(g if isinstance(g, str) else g.name) for g in (user.groups or [])]
    if auth_state is None:
        auth_state = getattr(user, "auth_state", None)
        if auth_state is None and hub is not None and hasattr(user, "encrypted_auth_state"):
            auth_state = hub.read_auth_state(user)
    return HubUser(user.name, user_id, bool(user.admin), groups, base_url, auth_state,
                   settings={"base_url": base_url})


def _user_id(hub: Hub, name: str) -> int | None:
    from ..db import queries

    with hub.session() as db:
        row = queries.get_user(db, name)
        return row.id if row is not None else None


class Request:
    """What JupyterHub plugins read of ``handler.request`` (tornado's HTTPServerRequest)."""

    def __init__(self, request: StarletteRequest, body_arguments: dict[str, list[bytes]]) -> None:
        url = request.url
        self.headers = request.headers  # case-insensitive, with .get(), as tornado's
        self.method = request.method
        self.path = url.path
        self.query = url.query
        self.uri = url.path + (f"?{url.query}" if url.query else "")
        self.host = request.headers.get("host", url.netloc)
        self.host_name = url.hostname or ""
        self.protocol = url.scheme
        self.remote_ip = request.client.host if request.client else ""
        self.cookies = request.cookies
        self.query_arguments = {k: [v.encode() for v in request.query_params.getlist(k)]
                                for k in request.query_params}
        self.body_arguments = body_arguments
        self.arguments = {k: list(v) for k, v in self.query_arguments.items()}
        for k, v in body_arguments.items():
            self.arguments.setdefault(k, []).extend(v)

    def full_url(self) -> str:
        return f"{self.protocol}://{self.host}{self.uri}"


_MISSING = object()


class LoginHandler:
    """The ``handler`` a JupyterHub authenticator's hooks get: what its plugins use of
    JupyterHub's tornado ``BaseHandler``. No cookie secret or database writes are exposed."""

    def __init__(self, ctx: LoginContext | None, hub: HandlerHub, authenticator: Any,
                 data: dict[str, Any] | None = None, current_user: HubUser | None = None
                 ) -> None:
        base_url = hub.options.base_url
        self.hub = HubRef(base_url)
        self.base_url = base_url
        self.authenticator = authenticator
        self.log = authenticator.log
        self.current_user = current_user
        self.redirected: str | None = None
        self.request = (Request(ctx.request, {k: [str(v).encode()] for k, v in (data or {}).items()
                                              if v is not None}) if ctx is not None else None)
        self.settings: dict[str, Any] = {
            "base_url": base_url, "hub_prefix": f"{base_url}hub/",
            "login_url": f"{base_url}hub/login", "logout_url": f"{base_url}hub/logout",
            "authenticator": authenticator, "log": self.log,
            "allow_named_servers": hub.options.allow_named_servers,
        }

    def get_argument(self, name: str, default: Any = _MISSING, strip: bool = True) -> Any:
        values = self.get_arguments(name, strip)
        if values:
            return values[-1]
        if default is _MISSING:
            from tornado.web import MissingArgumentError

            raise MissingArgumentError(name)
        return default

    def get_arguments(self, name: str, strip: bool = True) -> list[str]:
        if self.request is None:
            return []
        values = [v.decode() for v in self.request.arguments.get(name, [])]
        return [v.strip() for v in values] if strip else values

    get_body_argument = get_argument
    get_query_argument = get_argument

    def redirect(self, url: str, permanent: bool = False, status: int | None = None) -> None:
        """Remembered, not followed: a sign-in hook answers with a model, not a page."""
        self.log.warning("%s asked to redirect to %s during sign-in; Courtyard ignores it",
                         type(self.authenticator).__name__, url)
        self.redirected = url


@dataclass
class HubRef:
    """``handler.hub``: where the hub is (JupyterHub's ``orm.Hub``)."""

    site_base: str

    @property
    def base_url(self) -> str:
        return f"{self.site_base}hub/"

    @property
    def url(self) -> str:
        return self.base_url

    @property
    def api_url(self) -> str:
        return f"{self.base_url}api"
