"""JupyterHub's Authenticator contract, run by Courtyard: a subclass of
``jupyterhub.auth.Authenticator`` in the config (a class or a dotted name) runs unmodified.

:func:`adapt_authenticator` turns such a class into a Courtyard authenticator
(:class:`JupyterHubAuthenticator`) that owns one instance of it, built from the same config,
and calls it the way JupyterHub does: ``authenticate(handler, data)`` with a tornado-like
``handler`` (:class:`~courtyard.compat.auth_objects.LoginHandler`), then
``normalize_username``, ``validate_username``, ``check_blocked_users``, ``check_allowed``,
``is_admin`` and ``run_post_auth_hook``, each awaited whether sync or async; ``add_user`` /
``delete_user`` as users come and go (and for every stored user at start, as JupyterHub
does); ``pre_spawn_start`` / ``post_spawn_stop`` and ``refresh_user`` with a JupyterHub-like
user (:class:`~courtyard.compat.auth_objects.HubUser`).

Courtyard's rules stay on top: a name must also pass :func:`courtyard.names.check_user_name`,
a hook that raises refuses the sign-in, auth state is encrypted as for Courtyard's own
authenticators, and the login throttle applies.

What cannot run is refused at start with one line, never half-run: tornado login handlers
(``get_handlers`` beyond JupyterHub's own form), subclasses of ``LocalAuthenticator`` (system
accounts are Courtyard's PAM authenticator's, under its account policy). oauthenticator's own
classes map onto Courtyard's OAuth login with the same options; an oauthenticator option
Courtyard does not implement is refused
(:func:`~courtyard.compat.oauth.check_oauthenticator_options`). A subclass of them maps the
same way, with its overrides of the hooks that login calls run on top
(:func:`~courtyard.compat.oauth.oauth_subclass`); overriding anything else is refused, naming
the method.

With ``auto_login`` and no login page of its own, a plugin signs users in from the ``GET`` of
the hub's login page (``authenticate(handler, None)``), as JupyterHub does.

``jupyterhub`` is imported only when a config names such a class.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from typing import TYPE_CHECKING, Any, ClassVar, cast

from ..auth.base import Authenticator, LoginRefused, maybe_await
from ..errors import ConfigError
from .auth_objects import LoginHandler, hub_user

if TYPE_CHECKING:
    from jupyterhub.auth import Authenticator as JupyterHubBase
    from sqlalchemy.orm import Session
    from tornado.web import HTTPError as TornadoHTTPError
    from traitlets.config import Config

    from ..auth.login import AuthenticatorHub, LoginContext
    from ..db.models import User
    from ..db.records import UserRecord

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
        from .oauth import oauth_subclass  # here: compat.oauth imports this module

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


# -- the adapter -------------------------------------------------------------------------------
def tornado_http_error() -> type[TornadoHTTPError]:
    """tornado's ``HTTPError``, which plugins raise (tornado is imported only with them)."""
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


def plugin_instance(cls: type, config: Config) -> Any:
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

    def check_config(self, hub: AuthenticatorHub) -> None:
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

    def invalid_reason(self, user: User) -> str | None:
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

    def startup(self, hub: AuthenticatorHub, db: Session) -> None:
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

    def is_admin(self, handler: LoginContext | None, model: dict[str, Any]) -> bool | None:
        admin: bool | None = self.inner.is_admin(handler, model)
        return admin

    @property
    def refreshes(self) -> bool:
        base = self.jupyterhub_base
        return base is None or type(self.inner).refresh_user is not base.refresh_user

    # -- signing in ---------------------------------------------------------------------------
    async def get_authenticated_user(self, handler: LoginContext,
                                     data: dict[str, Any] | None) -> dict[str, Any] | None:
        """JupyterHub's sign-in steps, then Courtyard's name rules and ``add_user`` for a new
        user. A tornado ``HTTPError`` from ``authenticate`` is a failed sign-in (throttled as
        one); from the allow checks, after the credentials held, a refusal with its message."""
        inner = self.inner
        jh = LoginHandler(handler, self.started_hub, inner, data)
        http_error = tornado_http_error()
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

    async def _add_new_user(self, ctx: LoginContext, name: str) -> None:
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
    async def user_added(self, user: User | UserRecord) -> None:
        await maybe_await(self.inner.add_user(hub_user(self.hub, user)))

    async def user_deleted(self, user: User) -> None:
        await maybe_await(self.inner.delete_user(hub_user(self.hub, user)))

    # -- refresh and spawn hooks ----------------------------------------------------------------
    async def refresh_user(self, user: User, handler: LoginContext | None = None
                           ) -> bool | dict[str, Any]:
        jh_user = hub_user(self.hub, user)
        ctx = handler if hasattr(handler, "request") else None
        jh = LoginHandler(ctx, self.started_hub, self.inner, current_user=jh_user)
        result: bool | dict[str, Any] = await maybe_await(self.inner.refresh_user(jh_user, jh))
        return result

    async def pre_spawn_start(self, user: Any, spawner: Any) -> None:
        await maybe_await(self.inner.pre_spawn_start(hub_user(self.hub, user), spawner))

    async def post_spawn_stop(self, user: Any, spawner: Any) -> None:
        await maybe_await(self.inner.post_spawn_stop(hub_user(self.hub, user), spawner))
