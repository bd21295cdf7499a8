"""The Authenticator contract: who may sign in, under which name, and who is an admin.

Subclasses implement :meth:`Authenticator.authenticate`; everything else has a sensible
default. Options follow JupyterHub's names so ``c.Authenticator.*`` carries over.

The hub calls ``check_config(hub)`` and ``startup(hub, db)`` once, ``on_serve(hub)`` when it
starts serving, and per login ``get_authenticated_user``, which runs ``authenticate`` ->
``normalize_username`` -> ``validate_username`` -> ``check_blocked_users`` ->
``check_allowed`` -> ``is_admin`` -> ``post_auth_hook``. ``refresh_user`` runs on a user's
request once their ``auth_refresh_age`` has passed, and before each spawn with
``refresh_pre_spawn`` (:mod:`courtyard.auth.refresh`); ``pre_spawn_start`` runs before a spawn
and ``post_spawn_stop`` after a stop.
As in JupyterHub each of these hooks may be sync or async, and the hub awaits every one
(:func:`maybe_await`); ``normalize_username`` and ``validate_username`` are sync, as there,
and an async one is refused at start (:func:`check_hooks`). A hook that raises refuses the
sign-in (:func:`courtyard.auth.login.attempt`): an error never lets anyone in. What follows a
successful login (cookies, groups, encrypted auth state) is in :mod:`courtyard.auth.login`.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from traitlets import Any as AnyTrait, Bool, Dict, Integer, Set, Unicode, default
from traitlets.config import LoggingConfigurable

from ..names import check_user_name

if TYPE_CHECKING:
    from sqlalchemy.orm import Session
    from starlette.routing import BaseRoute

    from ..db.models import User
    from .crypto import Crypt
    from .login import AuthenticatorHub, LoginContext

AuthResult = str | dict[str, Any] | None
# (path below {base_url}hub/, endpoint): extra pages an authenticator serves, e.g. oauth_callback
Handler = tuple[str, Callable[..., Any]]


async def maybe_await(value: Any) -> Any:
    """A hook's result: JupyterHub lets hooks be sync or async, and a coroutine left
    unawaited would count as true (an async ``check_allowed`` refusing everyone let all in)."""
    return await value if inspect.isawaitable(value) else value


SYNC_HOOKS = ("normalize_username", "validate_username")


def check_hooks(authenticator: Authenticator) -> None:
    """Refuse, at start, an async hook the hub calls synchronously (as JupyterHub does): its
    coroutine would pass for a name, or for "valid"."""
    from ..errors import ConfigError

    for child in [authenticator, *getattr(authenticator, "authenticators", [])]:
        for name in SYNC_HOOKS:
            if inspect.iscoroutinefunction(getattr(child, name, None)):
                raise ConfigError(f"{type(child).__name__}.{name} is async; it must be a "
                                  "plain (sync) method, as in JupyterHub")


def check_existing_users(auth: Authenticator, db: Session,
                         release: Callable[[User], bool] | None = None) -> None:
    """``delete_invalid_users``: the users stored by earlier runs who fail
    :meth:`Authenticator.invalid_reason` now are deleted (True) or logged (False). Blocked
    users are left alone (as in JupyterHub), and so is a user with a server the hub may still
    be running (its process would be orphaned): they are named in the log instead.

    ``release(user)`` (the hub's :meth:`~courtyard.app.Hub.release_deleted_user`) first does
    what API deletion does before the row goes (e.g. the system account leaves the group, or
    the next user of the name would get it); when it answers False the user is kept."""
    from sqlalchemy import select
    from sqlalchemy.orm import selectinload

    from ..db.models import User

    deleted = 0
    for user in db.scalars(select(User).options(selectinload(User.servers)).order_by(User.id)):
        if user.name in auth.blocked_users:
            continue
        reason = auth.invalid_reason(user)
        if reason is None:
            continue
        if not auth.delete_invalid_users:
            auth.log.warning("User %s in the database: %s; set "
                             "c.Authenticator.delete_invalid_users = True to delete such "
                             "users at start", user.name, reason)
        elif any(s.url is not None or s.state for s in user.servers):
            auth.log.warning("User %s in the database: %s; not deleted, as a server of "
                             "theirs may be running: stop it, then restart the hub",
                             user.name, reason)
        else:
            auth.log.warning("Deleting user %s from the database: %s "
                             "(c.Authenticator.delete_invalid_users)", user.name, reason)
            if release is not None and not release(user):
                continue  # logged by release; tried again at the next start
            db.delete(user)
            deleted += 1
    if deleted:
        db.flush()


class LoginRefused(Exception):
    """Raised by ``authenticate`` after the password checked out, with a message safe to show
    (e.g. "waiting for approval"). Never raise it before the credentials are verified, unless
    ``failed``: then it counts as a failed attempt, as a wrong password does (a sign-in from
    the request, whose refusal JupyterHub shows with its own status and message)."""

    def __init__(self, message: str, status: int = 403, failed: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.failed = failed


class Authenticator(LoggingConfigurable):
    """Base class. ``authenticate`` may be sync or async."""

    #: Shown as "Sign in with {login_service}"; empty for username/password forms.
    login_service: str = ""
    #: Set by MultiAuthenticator so several authenticators' handlers don't collide.
    url_prefix: str = ""
    #: Whether startup checks the stored users (``delete_invalid_users``); off for the
    #: children of a MultiAuthenticator, which checks them against all its children.
    checks_users: bool = True

    async def authenticate(self, handler: LoginContext, data: dict[str, Any]) -> AuthResult:
        """Check credentials from the login form; return a name, a dict with ``name``
        (and optionally ``admin``, ``groups``, ``auth_state``), or None.

        ``data`` is always a dict: the form's fields, the token API's ``auth`` body or an
        OAuth callback's. JupyterHub's ``authenticate(handler, None)`` (a sign-in from the
        request itself) belongs to its plugins, run by :mod:`courtyard.compat.auth`."""
        raise NotImplementedError

    def normalize_username(self, username: str) -> str:
        """Lower-case and map the name, so one person gets one account."""
        username = username.lower()
        return str(self.username_map.get(username, username))

    def validate_username(self, username: str) -> bool:
        """Whether a (normalized) name is acceptable at all: at most 255 printable characters
        (what every database holds), no leading or trailing spaces, and no path tricks
        (``.``, ``..``, ``/``, also percent-encoded: :func:`courtyard.names.check_user_name`)."""
        if not username or username.strip() != username or len(username) > 255:
            return False
        if check_user_name(username) is not None:
            return False
        if self.username_pattern:
            return re.fullmatch(self.username_pattern, username) is not None
        return True

    def check_blocked_users(self, username: str, model: dict[str, Any] | None = None) -> bool:
        """False when the user is blocked."""
        return username not in self.blocked_users

    def check_allowed(self, username: str, model: dict[str, Any] | None = None) -> bool:
        """Whether this user may sign in; admins and existing users may be let in too."""
        if self.allow_all or username in self.allowed_users or username in self.admin_users:
            return True
        return self.allow_existing_users and self.user_exists(username)

    def is_admin(self, handler: LoginContext | None, model: dict[str, Any]) -> bool | None:
        """Admin status from the authenticator; None leaves it as stored."""
        return True if model["name"] in self.admin_users else model.get("admin")

    async def refresh_user(self, user: User, handler: LoginContext | None = None
                           ) -> bool | dict[str, Any]:
        """Whether ``user``'s sign-in still holds, asked at most every ``auth_refresh_age``
        seconds on their requests (and before each spawn with ``refresh_pre_spawn``).

        True: still valid; False or None: expired, the user must sign in again; a dict: the
        updated model (``auth_state``, ``admin``, ``groups``; the name cannot change). This
        base one always answers True, so the hub never calls it (:attr:`refreshes`).
        """
        return True

    @property
    def refreshes(self) -> bool:
        """Whether ``refresh_user`` can say anything but True (a subclass overrides it)."""
        return type(self).refresh_user is not Authenticator.refresh_user

    async def pre_spawn_start(self, user: Any, spawner: Any) -> None:
        """Hook run before a user's server starts."""

    async def post_spawn_stop(self, user: Any, spawner: Any) -> None:
        """Hook run after a user's server stopped."""

    def check_config(self, hub: AuthenticatorHub) -> None:
        """Raise ConfigError for unusable options; no side effects (check-config runs it)."""
        from .crypto import keys_from_env

        if self.enable_auth_state:
            keys_from_env()

    def startup(self, hub: AuthenticatorHub, db: Session) -> None:
        """Check the options and prepare (e.g. first accounts); runs once as the hub starts."""
        from .crypto import Crypt
        from .throttle import Throttle

        self.check_config(hub)
        self.hub = hub
        self.throttle = Throttle(self.login_attempts_free, self.login_backoff_max,
                                 global_limit=self.login_global_limit)
        # user id -> when refresh_user last confirmed the user (or they signed in), and the
        # lock that makes concurrent requests of one user share a refresh
        self.last_refresh: dict[int, float] = {}
        self.refresh_locks: weakref.WeakValueDictionary[int, asyncio.Lock] = (
            weakref.WeakValueDictionary())
        if self.enable_auth_state:
            self.crypt = Crypt.from_env()
        if self.checks_users:
            check_existing_users(self, db, getattr(hub, "release_deleted_user", None))
            self.users_checked()

    def invalid_reason(self, user: User) -> str | None:
        """Why ``user`` (a row stored by an earlier run) no longer passes this authenticator's
        checks (JupyterHub's ``add_user`` at start), or None; asked once per user at start."""
        return None if self.validate_username(user.name) else "not a valid username"

    def users_checked(self) -> None:
        """Hook: every stored user has been through :meth:`invalid_reason` (at start)."""

    def on_serve(self, hub: AuthenticatorHub) -> None:
        """The hub is about to serve (not just run a command): e.g. make the first account."""

    def login_url(self, base_url: str) -> str:
        """Where "Sign in" goes: the form, or this authenticator's own login handler."""
        return f"{base_url}hub/login"

    def get_handlers(self, hub: AuthenticatorHub) -> list[Handler]:
        """Extra pages below ``{base_url}hub/`` (served for GET and POST)."""
        return []

    def api_routes(self) -> list[BaseRoute]:
        """Extra REST endpoints below ``{base_url}hub/api``."""
        return []

    def component_classes(self) -> list[type]:
        """The classes whose ``c.Class.*`` options this authenticator reads."""
        return [type(self)]

    # -- what the hub runs around the contract ----------------------------------------------
    #: set by startup, with ``throttle`` and (with auth state) ``crypt``
    hub: AuthenticatorHub | None = None
    throttle: Any = None
    crypt: Crypt | None = None

    @property
    def started_hub(self) -> AuthenticatorHub:
        """:attr:`hub`, for what runs only once ``startup`` has set it (sign-in pages, hooks)."""
        assert self.hub is not None, f"{type(self).__name__} used before startup"
        return self.hub

    def user_exists(self, username: str) -> bool:
        from ..db import queries

        if self.hub is None:
            return False
        with self.hub.session() as db:
            return queries.get_user(db, username) is not None

    async def get_authenticated_user(self, handler: LoginContext,
                                     data: dict[str, Any] | None) -> dict[str, Any] | None:
        """Run authenticate and the allow/block checks; the model, or None when refused.

        ``data`` is None for a sign-in from the request (the login page's GET), which the
        hub asks only of an authenticator that ``signs_in_from_request`` (a JupyterHub
        plugin's, :class:`courtyard.compat.auth.JupyterHubAuthenticator`): none here."""
        if data is None:
            return None
        result = await maybe_await(self.authenticate(handler, data))
        if result is None:
            return None
        model: dict[str, Any] = {"name": result} if isinstance(result, str) else dict(result)
        if not isinstance(model.get("name"), str):
            return None
        name = self.normalize_username(model["name"])
        model["name"] = name
        if not self.validate_username(name):
            return None
        if not await maybe_await(self.check_blocked_users(name, model)):
            return None
        if not await maybe_await(self.check_allowed(name, model)):
            return None
        model["admin"] = await maybe_await(self.is_admin(handler, model))
        if self.post_auth_hook:
            model = await maybe_await(self.post_auth_hook(self, handler, model))
        # again, whatever a subclass's validate_username or the hook made of the name
        if model and check_user_name(str(model.get("name") or "")) is not None:
            self.log.warning("Login refused: %r is not a safe user name", model.get("name"))
            return None
        return model

    # -- options (JupyterHub's names) --------------------------------------------------------
    admin_users = Set(help="Names of users who are admins.").tag(config=True)
    allowed_users = Set(help="Names of users allowed to sign in (with allow_all off).").tag(
        config=True
    )
    blocked_users = Set(help="Names of users never allowed to sign in.").tag(config=True)
    allow_all = Bool(False, help="Let every user who authenticates sign in.").tag(config=True)
    allow_existing_users = Bool(help="Let users already in the database sign in (default: on "
                                "when allowed_users is set).").tag(config=True)
    username_pattern = Unicode("", help="Regular expression every username must match.").tag(
        config=True
    )
    username_map = Dict(help="Map of names as typed to the account name.").tag(config=True)
    manage_groups = Bool(False, help="Group membership comes from the authenticator: the "
                         "groups it returns replace the user's groups at each login.").tag(
        config=True
    )
    manage_roles = Bool(False, help="Roles come from the authenticator (JupyterHub 5): the "
                        "'roles' its model returns (at sign-in and from refresh_user) replace "
                        "the user's roles, creating missing ones; load_roles may then define "
                        "roles but not assign them to users or groups.").tag(config=True)
    enable_auth_state = Bool(False, help="Keep encrypted auth state per user (needs "
                             "COURTYARD_CRYPT_KEY or JUPYTERHUB_CRYPT_KEY).").tag(config=True)
    auth_refresh_age = Integer(300, help="Seconds a user's sign-in is trusted before the hub "
                               "asks refresh_user again, on their next request (token or "
                               "cookie, API or page): False signs them out, a dict updates "
                               "their auth state. 0: never refresh (as in JupyterHub).").tag(
        config=True
    )
    refresh_pre_spawn = Bool(False, help="Call refresh_user before every spawn, however "
                             "recent the last refresh: if it fails the spawn is refused (403 "
                             "in the API) until the user signs in again.").tag(config=True)
    post_auth_hook = AnyTrait(None, allow_none=True, help="callable(authenticator, handler, "
                              "model) -> model, run after authentication.").tag(config=True)
    auto_login = Bool(False, help="Skip the login page and go straight to the login handler."
                      ).tag(config=True)
    delete_invalid_users = Bool(False, help="At start, delete the users in the database "
                                "who no longer pass the authenticator's checks (a name "
                                "username_pattern now refuses; with PAM, a Unix account that "
                                "is gone), as JupyterHub does; off: each is only logged. A "
                                "user with a server that may still run is never deleted.").tag(
        config=True
    )
    login_attempts_free = Integer(5, help="Failed logins per username and client address "
                                  "pair (and 4x that per address, whatever the names) before "
                                  "back-off starts; failures from one address never hold back "
                                  "the same user at another.").tag(config=True)
    login_backoff_max = Integer(300, help="Longest back-off, in seconds, after repeated failed "
                                "logins; the back-off doubles per failure up to this.").tag(
        config=True
    )
    login_global_limit = Integer(100, help="Failed logins per minute, across all users and "
                                 "addresses, past which every new attempt waits (429) until "
                                 "the minute has passed; a user who signed in from the same "
                                 "address before is exempt. 0: no global cap.").tag(
        config=True
    )

    @default("allow_existing_users")
    def _default_allow_existing(self) -> bool:
        return bool(self.allowed_users)
