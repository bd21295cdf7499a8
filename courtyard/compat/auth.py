"""JupyterHub's Authenticator contract, run by Courtyard: a subclass of
``jupyterhub.auth.Authenticator`` in the config (a class or a dotted name) runs unmodified.

:func:`adapt_authenticator` turns such a class into a Courtyard authenticator
(:class:`JupyterHubAuthenticator`) that owns one instance of it, built from the same config,
and calls it the way JupyterHub does: ``authenticate(handler, data)`` with a tornado-like
``handler`` (:class:`LoginHandler`), then ``normalize_username``, ``validate_username``,
``check_blocked_users``, ``check_allowed``, ``is_admin`` and ``run_post_auth_hook``, each
awaited whether sync or async; ``add_user`` / ``delete_user`` as users come and go (and for
every stored user at start, as JupyterHub does); ``pre_spawn_start`` / ``post_spawn_stop``
and ``refresh_user`` with a JupyterHub-like user (:class:`HubUser`).

Courtyard's rules stay on top: a name must also pass :func:`courtyard.names.check_user_name`,
a hook that raises refuses the sign-in, auth state is encrypted as for Courtyard's own
authenticators, and the login throttle applies.

What cannot run is refused at start with one line, never half-run: tornado login handlers
(``get_handlers`` beyond JupyterHub's own form), subclasses of ``LocalAuthenticator`` (system
accounts are Courtyard's PAM authenticator's, under its account policy). oauthenticator's own
classes map onto Courtyard's OAuth login with the same options; an oauthenticator option
Courtyard does not implement is refused (:func:`check_oauthenticator_options`). A subclass of
them maps the same way, with its overrides of the hooks that login calls run on top
(:func:`oauth_subclass`); overriding anything else is refused, naming the method.

With ``auto_login`` and no login page of its own, a plugin signs users in from the ``GET`` of
the hub's login page (``authenticate(handler, None)``), as JupyterHub does.

``jupyterhub`` is imported only when a config names such a class.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, cast
from urllib.parse import quote

from ..auth.base import Authenticator, LoginRefused, maybe_await
from ..errors import ConfigError

if TYPE_CHECKING:
    from jupyterhub.auth import Authenticator as JupyterHubBase
    from tornado.web import HTTPError as TornadoHTTPError

    from ..app import Hub
    from ..auth.login import LoginContext
    from ..auth.oauth import OAuthenticator

    # what OAuthSubclassHooks is mixed into (before it in the MRO): Courtyard's OAuth login
    _OAuthLogin = OAuthenticator
else:
    _OAuthLogin = object

log = logging.getLogger("courtyard.compat")

# options Courtyard reads from ``hub.authenticator``: they follow the JupyterHub instance's
COPIED_TRAITS = ("admin_users", "allowed_users", "blocked_users", "allow_all",
                 "allow_existing_users", "enable_auth_state", "manage_groups", "manage_roles",
                 "auth_refresh_age", "refresh_pre_spawn", "auto_login", "delete_invalid_users",
                 "username_pattern", "username_map")

# JupyterHub's own classes that Courtyard implements itself (their system accounts, their
# shared password, no login at all): the class form maps like the name
MAPPED_CLASSES = ("jupyterhub.auth.PAMAuthenticator", "jupyterhub.auth.LocalAuthenticator",
                  "jupyterhub.auth.NullAuthenticator",
                  "jupyterhub.authenticators.shared.SharedPasswordAuthenticator")


def jupyterhub_base() -> type[JupyterHubBase] | None:
    """``jupyterhub.auth.Authenticator`` if a config has imported it, else None (the package
    is optional, so it is never imported here)."""
    module = sys.modules.get("jupyterhub.auth")
    return getattr(module, "Authenticator", None)


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def adapt_authenticator(cls: type) -> type[Authenticator] | None:
    """The Courtyard class to use for a JupyterHub or oauthenticator class; None if ``cls``
    is neither. Raises ConfigError for a class that cannot run here."""
    base = jupyterhub_base()
    if base is None or not isinstance(cls, type) or not issubclass(cls, base):
        return None
    from ..config import CLASS_ALIASES, resolve_class

    path = class_path(cls)
    oauth = next((k for k in cls.__mro__ if k.__module__.startswith("oauthenticator")), None)
    if oauth is not None:
        if CLASS_ALIASES["authenticator"].get(class_path(oauth)) is None:
            raise ConfigError(
                f"authenticator_class = {path}: {class_path(oauth)} cannot run on Courtyard "
                "(its login pages are tornado handlers); use one of oauthenticator's "
                "GenericOAuthenticator, GitHubOAuthenticator, GitLabOAuthenticator, "
                "GoogleOAuthenticator, AzureAdOAuthenticator (or a subclass), which map onto "
                "Courtyard's OAuth login with the same options")
        mapped = resolve_class("authenticator", class_path(oauth), Authenticator)
        return mapped if cls is oauth else oauth_subclass(cls, oauth, mapped)
    if path in MAPPED_CLASSES:
        return resolve_class("authenticator", path, Authenticator)
    if any(class_path(k) in MAPPED_CLASSES[:2] for k in cls.__mro__):
        raise ConfigError(f"authenticator_class = {path}: subclasses of JupyterHub's "
                          "LocalAuthenticator manage system accounts, which on Courtyard only "
                          "its 'pam' authenticator does (under its account policy); use 'pam'")
    # a name no config section uses: c.{cls.__name__}.* is the JupyterHub instance's alone
    adapter = type(f"JupyterHub({cls.__name__})", (JupyterHubAuthenticator,),
                   {"wrapped_class": cls, "__module__": __name__})
    return cast(type[Authenticator], adapter)  # a JupyterHubAuthenticator subclass, made here


# -- what a JupyterHub plugin is handed ---------------------------------------------------------
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
            from ..auth.login import read_auth_state

            auth_state = read_auth_state(hub, user)
    return HubUser(user.name, user_id, bool(user.admin), groups, base_url, auth_state,
                   settings={"base_url": base_url})


def _user_id(hub: Hub, name: str) -> int | None:
    from ..db import queries

    with hub.session() as db:
        row = queries.get_user(db, name)
        return row.id if row is not None else None


class Request:
    """What JupyterHub plugins read of ``handler.request`` (tornado's HTTPServerRequest)."""

    def __init__(self, request: Any, body_arguments: dict[str, list[bytes]]) -> None:
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

    def __init__(self, ctx: LoginContext | None, hub: Any, authenticator: Any,
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


# -- the adapter -------------------------------------------------------------------------------
def _tornado_http_error() -> type[TornadoHTTPError]:
    from tornado.web import HTTPError

    return HTTPError


def run_to_end(value: Any) -> Any:
    """A sync call site's result of a hook that may be async (``startup`` is sync, and
    JupyterHub awaits ``add_user`` for stored users before it serves too)."""
    import inspect

    if not inspect.isawaitable(value):
        return value
    result: list[Any] = []
    error: list[BaseException] = []

    async def wait() -> None:
        result.append(await value)

    def run() -> None:
        try:
            asyncio.run(wait())
        except BaseException as e:
            error.append(e)

    thread = threading.Thread(target=run, name="courtyard-compat-hook")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def _not_option_warnings(record: logging.LogRecord) -> bool:
    """Unknown options are reported once, naming the file's section, by
    :func:`courtyard.config.unknown_options`; traitlets would also log each one here (the
    hub's own options in c.Authenticator included)."""
    return not str(record.msg).startswith("Config option `")


def plugin_instance(cls: type, config: Any) -> Any:
    """One instance of a plugin class from the hub's config, logging under ``courtyard.auth``
    without traitlets' "not recognized" lines (``unknown_options`` reports those once)."""
    plugin_log = logging.getLogger(f"courtyard.auth.{cls.__name__}")
    if _not_option_warnings not in plugin_log.filters:
        plugin_log.addFilter(_not_option_warnings)
    return cls(config=config, log=plugin_log)


class JupyterHubAuthenticator(Authenticator):
    """Runs one instance of ``wrapped_class`` (a ``jupyterhub.auth.Authenticator`` subclass)
    under Courtyard's login, refresh and spawn lifecycle."""

    wrapped_class: ClassVar[type]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inner = plugin_instance(self.wrapped_class, self.config)
        self.jupyterhub_base = jupyterhub_base()
        for name in COPIED_TRAITS:
            if self.inner.has_trait(name):
                setattr(self, name, getattr(self.inner, name))
        self.login_service = getattr(self.inner, "login_service", "") or ""

    # -- what Courtyard asks of an authenticator, answered by the JupyterHub instance -------
    def component_classes(self) -> list[type]:
        return [type(self), type(self.inner)]

    def check_config(self, hub: Any) -> None:
        super().check_config(hub)
        from jupyterhub.handlers.login import LoginHandler as JupyterHubLoginHandler

        name = type(self.inner).__name__
        for path, handler in self.inner.get_handlers(hub) or []:
            if handler is not JupyterHubLoginHandler:
                raise ConfigError(
                    f"{name}.get_handlers() serves {path} with a tornado handler "
                    f"({getattr(handler, '__name__', handler)}), which Courtyard cannot run; "
                    "only authenticators using JupyterHub's login form run unmodified")
        for hook in ("normalize_username", "validate_username"):
            if asyncio.iscoroutinefunction(getattr(self.inner, hook)):
                raise ConfigError(f"{name}.{hook} is async; it must be a plain (sync) method, "
                                  "as in JupyterHub")

    def invalid_reason(self, user: Any) -> str | None:
        """JupyterHub calls ``add_user`` for every stored user (but blocked ones) as it starts
        (``allow_existing_users`` works through it); one that raises is invalid, deleted
        with ``delete_invalid_users`` (:func:`courtyard.auth.base.check_existing_users`)."""
        reason = super().invalid_reason(user)
        if reason is None:
            try:
                run_to_end(self.inner.add_user(hub_user(self.hub, user)))
            except Exception as e:
                reason = f"{type(self.inner).__name__}.add_user raised {e!r}"
        return reason

    def users_checked(self) -> None:
        for name in COPIED_TRAITS[:3]:  # add_user may have grown the sets
            setattr(self, name, set(getattr(self.inner, name)))

    def startup(self, hub: Any, db: Any) -> None:
        if hasattr(self.inner, "check_allow_config"):  # first, as in JupyterHub
            self.inner.check_allow_config()
        super().startup(hub, db)  # invalid_reason, so add_user, for every stored user

    def login_url(self, base_url: str) -> str:
        return f"{base_url}hub/login"

    @property
    def signs_in_from_request(self) -> bool:
        """JupyterHub's ``auto_login`` with the plugin's ``login_url`` left at the hub's login
        page: JupyterHub then calls ``authenticate(handler, None)`` on the GET of that page
        (the credentials are in the request)."""
        hub_prefix = f"{self.hub.options.base_url}hub/" if self.hub is not None else "/hub/"
        return bool(self.inner.auto_login) and \
            self.inner.login_url(hub_prefix) == f"{hub_prefix}login"

    @property
    def logout_redirect_url(self) -> str:
        """Where a plugin's own ``logout_url`` points, if not at the hub's logout page: the
        hub signs the user out, then sends them there."""
        hub_prefix = f"{self.hub.options.base_url}hub/" if self.hub is not None else "/hub/"
        url = self.inner.logout_url(hub_prefix)
        return "" if url.rstrip("/") == f"{hub_prefix}logout" else url

    def normalize_username(self, username: str) -> str:
        name: str = self.inner.normalize_username(username)
        return name

    def validate_username(self, username: str) -> bool:
        """Both the plugin's rule and Courtyard's (no path tricks, at most 255 characters)."""
        return bool(self.inner.validate_username(username)) and super().validate_username(
            username)

    def is_admin(self, handler: Any, model: dict[str, Any]) -> bool | None:
        admin: bool | None = self.inner.is_admin(handler, model)
        return admin

    @property
    def refreshes(self) -> bool:
        base = self.jupyterhub_base
        return base is None or type(self.inner).refresh_user is not base.refresh_user

    # -- signing in ---------------------------------------------------------------------------
    async def get_authenticated_user(self, handler: Any,
                                     data: dict[str, Any] | None) -> dict[str, Any] | None:
        """JupyterHub's sign-in steps, then Courtyard's name rules and ``add_user`` for a new
        user. A tornado ``HTTPError`` from ``authenticate`` is a failed sign-in (throttled as
        one); from the allow checks, after the credentials held, a refusal with its message."""
        inner = self.inner
        jh = LoginHandler(handler, self.hub, inner, data)
        http_error = _tornado_http_error()
        try:
            result = await maybe_await(inner.authenticate(jh, data))
        except http_error as e:
            inner.log.warning("Sign-in refused by %s: %s", type(inner).__name__, e)
            if data is None and 400 <= e.status_code < 500:  # from the request: as JupyterHub
                raise LoginRefused(e.log_message or e.reason or "You may not sign in here.",
                                   e.status_code, failed=True) from None
            return None
        if result is None:
            return None
        model: dict[str, Any] = {"name": result} if isinstance(result, str) else dict(result)
        if not isinstance(model.get("name"), str):
            return None
        model.setdefault("auth_state", None)
        model.setdefault("admin", None)
        try:
            allowed = await self._allow(jh, model)
        except http_error as e:
            if e.status_code >= 500:
                raise
            raise LoginRefused(e.log_message or e.reason or "You may not sign in here.") from None
        if allowed is None:
            return None
        model = allowed
        if not self.validate_username(str(model.get("name") or "")):
            log.warning("Login refused: %r is not a valid user name", model.get("name"))
            return None
        if model.get("auth_state") is None:  # none given: keep what is stored
            model.pop("auth_state", None)
        await self._add_new_user(handler, model["name"])
        return model

    async def _allow(self, jh: LoginHandler, model: dict[str, Any]) -> dict[str, Any] | None:
        inner = self.inner
        name = model["name"] = inner.normalize_username(model["name"])
        if not self.validate_username(name):
            inner.log.warning("Disallowing invalid username %r.", name)
            return None
        if not await maybe_await(inner.check_blocked_users(name, model)):
            inner.log.warning("User %r blocked.", name)
            return None
        if not (inner.allow_all or await maybe_await(inner.check_allowed(name, model))):
            inner.log.warning("User %r not allowed.", name)
            return None
        if model["admin"] is None:
            model["admin"] = await maybe_await(inner.is_admin(jh, model))
        hooked: dict[str, Any] | None = await maybe_await(inner.run_post_auth_hook(jh, model))
        return hooked

    async def _add_new_user(self, ctx: Any, name: str) -> None:
        """Create a first-time user now (in the sign-in's transaction) and call ``add_user``
        on it, as JupyterHub does; if it raises, the sign-in fails and no user remains."""
        from ..db import queries

        db = getattr(ctx, "db", None)
        if db is None or self.hub is None or queries.get_user(db, name) is not None:
            return
        user = queries.create_user(db, name)
        db.flush()
        await self.user_added(user)

    # -- users coming and going (called by the users API too) --------------------------------
    async def user_added(self, user: Any) -> None:
        await maybe_await(self.inner.add_user(hub_user(self.hub, user)))

    async def user_deleted(self, user: Any) -> None:
        await maybe_await(self.inner.delete_user(hub_user(self.hub, user)))

    # -- refresh and spawn hooks ----------------------------------------------------------------
    async def refresh_user(self, user: Any, handler: Any = None) -> bool | dict[str, Any]:
        jh_user = hub_user(self.hub, user)
        ctx = handler if hasattr(handler, "request") else None
        jh = LoginHandler(ctx, self.hub, self.inner, current_user=jh_user)
        result: bool | dict[str, Any] = await maybe_await(self.inner.refresh_user(jh_user, jh))
        return result

    async def pre_spawn_start(self, user: Any, spawner: Any) -> None:
        await maybe_await(self.inner.pre_spawn_start(hub_user(self.hub, user), spawner))

    async def post_spawn_stop(self, user: Any, spawner: Any) -> None:
        await maybe_await(self.inner.post_spawn_stop(hub_user(self.hub, user), spawner))


# -- subclasses of oauthenticator's classes: their hooks on top of the mapped login ------------
# the hooks Courtyard's OAuth login calls, and when; any other method of oauthenticator's that
# a subclass overrides would be silently skipped, so it is refused at start
OAUTH_HOOKS = frozenset({"authenticate", "check_allowed", "check_blocked_users",
                         "user_info_to_username", "update_auth_model", "pre_spawn_start",
                         "post_spawn_stop", "normalize_username", "logout_url"})
# what oauthenticator's own ``authenticate`` (reached by a subclass's ``super()``) would fetch
# from the provider: the token and claims Courtyard's login already fetched and verified
_SIGN_IN: contextvars.ContextVar[tuple[dict[str, Any], dict[str, Any]]] = \
    contextvars.ContextVar("courtyard_oauth_sign_in")
OAUTH_TORNADO = frozenset({"get_handlers", "login_handler", "callback_handler",
                           "logout_handler", "login_url", "get_callback_url"})


def oauth_subclass(cls: type[JupyterHubBase], oauth: type,
                   mapped: type[Authenticator]) -> type[Authenticator]:
    """The Courtyard class for ``cls``, a subclass of oauthenticator's ``oauth``: Courtyard's
    ``mapped`` login (same options, read from ``c.{cls.__name__}`` too), running the
    subclass's own hooks (:data:`OAUTH_HOOKS`) on one instance of it. ConfigError, naming
    the method, for an override Courtyard cannot call."""
    own = cls.__mro__[:cls.__mro__.index(oauth)]
    overridden = sorted({name for k in own for name, value in vars(k).items()
                         if not name.startswith("_") and hasattr(oauth, name)
                         and callable(getattr(oauth, name)) and callable(value)})
    for name in overridden:
        if name in OAUTH_TORNADO:
            raise ConfigError(f"authenticator_class = {class_path(cls)}: it overrides {name}, "
                              "which serves or routes tornado pages; Courtyard's OAuth login "
                              "serves its own, so this cannot run here")
        if name not in OAUTH_HOOKS:
            raise ConfigError(
                f"authenticator_class = {class_path(cls)}: it overrides {name}, which "
                "Courtyard's OAuth login never calls (it does the OAuth flow itself); only "
                f"{', '.join(sorted(OAUTH_HOOKS))} can be overridden")
    if asyncio.iscoroutinefunction(cls.user_info_to_username):
        raise ConfigError(f"{cls.__name__}.user_info_to_username is async; it must be a plain "
                          "(sync) method, as oauthenticator calls it")
    # options the subclass sets in its body (``login_service = "Campus SSO"``, a trait with
    # another default) hold for Courtyard's login too
    values = {name: value for k in reversed(own) for name, value in vars(k).items()
              if not name.startswith("_") and not callable(value) and hasattr(mapped, name)
              and mapped.class_traits().get(name) is not None}
    hooked = type(cls.__name__, (OAuthSubclassHooks, mapped),
                  {**values, "wrapped_class": cls, "hooks": frozenset(overridden),
                   "__module__": __name__})
    return cast(type[Authenticator], hooked)  # a subclass of ``mapped``, made here


class OAuthSubclassHooks(_OAuthLogin):
    """Mixed in before a Courtyard OAuth class: the overrides of an oauthenticator subclass,
    called with oauthenticator's auth model (``auth_state[user_auth_state_key]`` holds what
    the provider said), awaited when async. A hook that raises refuses the sign-in."""

    wrapped_class: ClassVar[type]
    hooks: ClassVar[frozenset[str]]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inner = plugin_instance(self.wrapped_class, self.config)
        if "authenticate" in self.hooks:
            self._feed_inner()

    def _feed_inner(self) -> None:
        """Point the calls oauthenticator's ``authenticate`` makes to the provider at what
        this sign-in (its context) already has, so ``super().authenticate`` in the subclass
        runs oauthenticator's own steps without a second exchange of the one-time code."""

        async def get_token_info(handler: Any, params: Any) -> dict[str, Any]:
            return _SIGN_IN.get()[0]

        async def token_to_user(token_info: Any) -> dict[str, Any]:
            return _SIGN_IN.get()[1]

        self.inner.build_access_tokens_request_params = lambda handler, data=None: {}
        self.inner.get_token_info = get_token_info
        self.inner.token_to_user = token_to_user

    def component_classes(self) -> list[type]:
        return [*super().component_classes(), type(self.inner)]

    def startup(self, hub: Any, db: Any) -> None:
        """A ``logout_url`` override pointing away from the hub's logout page (a provider's
        end-session page) is where the browser goes once the hub has signed it out."""
        super().startup(hub, db)
        if "logout_url" in self.hooks:
            hub_prefix = f"{hub.options.base_url}hub/"
            url = self.inner.logout_url(hub_prefix)
            if url and url.rstrip("/") != f"{hub_prefix}logout":
                self.logout_redirect_url = url

    def _theirs(self, name: str, model: dict[str, Any] | None) -> dict[str, Any] | None:
        """The model as oauthenticator's hooks read it (``admin`` always present)."""
        if model is None:
            return None
        admin = model.get("admin")
        return {**model, "admin": bool(admin) or name in self.admin_users}

    def username_from_claims(self, claims: dict[str, Any]) -> Any:
        if "user_info_to_username" in self.hooks:
            return self.inner.user_info_to_username(claims)
        return super().username_from_claims(claims)

    async def _call(self, value: Any) -> Any:
        """A hook's result, awaited; its tornado ``HTTPError`` 4xx (oauthenticator's way to
        refuse with a message) refuses the sign-in with that status and message."""
        try:
            return await maybe_await(value)
        except _tornado_http_error() as e:
            if e.status_code >= 500:
                raise
            raise LoginRefused(e.log_message or e.reason or "You may not sign in here.",
                               e.status_code) from None

    async def authenticate(self, handler: Any, data: dict[str, Any]) -> dict[str, Any] | None:
        model = await super().authenticate(handler, data)
        if model is None:
            return None
        if "authenticate" in self.hooks:
            return await self._their_authenticate(handler, data, model)
        if "update_auth_model" not in self.hooks:
            return model
        updated: dict[str, Any] | None = await self._call(
            self.inner.update_auth_model(self._theirs(model["name"], model)))
        return updated

    async def _their_authenticate(self, handler: Any, data: dict[str, Any],
                                  model: dict[str, Any]) -> dict[str, Any] | None:
        """The subclass's ``authenticate`` on the verified sign-in; what it returns is
        merged over Courtyard's model (its ``auth_state`` keys over Courtyard's)."""
        state = model["auth_state"]
        token = {**state.get("token_response", {}), "access_token": state["access_token"],
                 "scope": " ".join(state.get("scope") or [])}
        token.update({k: state[k] for k in ("refresh_token", "id_token") if state.get(k)})
        _SIGN_IN.set((token, state.get("oauth_user", {})))
        jh = LoginHandler(handler if hasattr(handler, "request") else None, self.hub,
                          self.inner, data)
        theirs = await self._call(self.inner.authenticate(jh, data))
        if theirs is None:
            return None
        theirs = {"name": theirs} if isinstance(theirs, str) else dict(theirs)
        merged = {**model, **{k: v for k, v in theirs.items()
                              if k != "auth_state" and not (k == "admin" and v is None)}}
        merged["auth_state"] = {**state, **(theirs.get("auth_state") or {})}
        return merged

    def normalize_username(self, username: str) -> str:
        if "normalize_username" in self.hooks:
            name: str = self.inner.normalize_username(username)
            return name
        return super().normalize_username(username)

    # async where the built-in is sync, as JupyterHub lets these hooks be: the hub awaits
    # either (maybe_await), which a sync base method's type cannot say
    async def check_blocked_users(  # type: ignore[override]
            self, username: str, model: dict[str, Any] | None = None) -> bool:
        if "check_blocked_users" in self.hooks:
            return bool(await self._call(self.inner.check_blocked_users(
                username, self._theirs(username, model))))
        return bool(await maybe_await(super().check_blocked_users(username, model)))

    async def check_allowed(  # type: ignore[override]
            self, username: str, model: dict[str, Any] | None = None) -> bool:
        if "check_allowed" in self.hooks:
            return bool(await self._call(self.inner.check_allowed(
                username, self._theirs(username, model))))
        return bool(await maybe_await(super().check_allowed(username, model)))

    async def pre_spawn_start(self, user: Any, spawner: Any) -> None:
        await maybe_await(super().pre_spawn_start(user, spawner))
        if "pre_spawn_start" in self.hooks:
            jh_user = hub_user(self.hub, user)
            await maybe_await(self.inner.pre_spawn_start(jh_user, spawner))

    async def post_spawn_stop(self, user: Any, spawner: Any) -> None:
        await maybe_await(super().post_spawn_stop(user, spawner))
        if "post_spawn_stop" in self.hooks:
            jh_user = hub_user(self.hub, user)
            await maybe_await(self.inner.post_spawn_stop(jh_user, spawner))


# -- oauthenticator's classes on Courtyard's OAuth login -----------------------------------------
# oauthenticator options with another name here (the hint says which), or harmless to drop
OAUTH_RENAMED = {"tls_verify": "validate_server_cert", "username_key": "username_claim",
                 "whitelist": "allowed_users"}
OAUTH_HARMLESS = {"any_allow_config"}  # only silences a start-up warning in JupyterHub


# oauthenticator 17's GenericOAuthenticator options that Courtyard's lacks, for when the
# package is not installed (a config naming the classes by string)
OAUTH_KNOWN = {"allowed_scopes", "auth_refresh_strict", "auth_state_groups_key",
               "auto_login_oauth2_authorize", "custom_403_message", "extra_params",
               "http_request_kwargs", "modify_auth_state_hook", "otp_prompt",
               "reconcile_auth_state_hook", "refresh_pre_stop", "refresh_user_hook", "request_otp",
               "reset_managed_roles_on_startup", "tls_verify", "token_params",
               "userdata_from_id_token", "userdata_params", "username_key", "whitelist"}
OAUTH_MODULES = {"GenericOAuthenticator": "generic", "GitHubOAuthenticator": "github",
                 "GitLabOAuthenticator": "gitlab", "GoogleOAuthenticator": "google",
                 "AzureAdOAuthenticator": "azuread"}


def oauthenticator_options(courtyard_cls: type) -> set[str]:
    """oauthenticator's options for the class of the same name as ``courtyard_cls`` (from
    the installed package, else :data:`OAUTH_KNOWN`)."""
    import importlib

    module = OAUTH_MODULES.get(courtyard_cls.__name__, "generic")
    try:
        theirs = getattr(importlib.import_module(f"oauthenticator.{module}"),
                         courtyard_cls.__name__, None)
    except ImportError:
        theirs = None
    return set(theirs.class_trait_names(config=True)) if theirs is not None else set(OAUTH_KNOWN)


def check_oauthenticator_options(authenticator: Any) -> None:
    """Refuse, with one line, an oauthenticator option set in the config that Courtyard's
    OAuth login would otherwise drop: an allow rule silently ignored is a hole or a lock-out.
    oauthenticator is imported only when the config sets an option Courtyard lacks."""
    cls = type(authenticator)
    ours = set(cls.class_trait_names(config=True))
    sections = [k.__name__ for k in cls.__mro__ if k.__name__ in authenticator.config]
    extra = [(s, key) for s in sections for key in sorted(authenticator.config[s])
             if key not in ours and key not in OAUTH_HARMLESS]
    if not extra:
        return
    theirs = oauthenticator_options(cls)
    for section, key in extra:
        if key not in theirs:
            continue  # not oauthenticator's: the unknown-option warning names it
        hint = (f"use c.{section}.{OAUTH_RENAMED[key]}" if key in OAUTH_RENAMED
                else "remove it, or choose an authenticator that implements it")
        raise ConfigError(f"c.{section}.{key} (an oauthenticator option) is not supported by "
                          f"Courtyard's {cls.__name__}; {hint}")
