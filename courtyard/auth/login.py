"""What happens around a successful or failed authentication, for every way of signing in.

:func:`attempt` runs an authenticator under the login throttle; :func:`login_user` turns the
model it returns into a hub user (created on first login, admin flag, managed groups,
encrypted auth state). Pages, the token API and OAuth callbacks all go through these two.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request

from ..db import queries
from ..db.models import Group, Role, RoleMember, Service, User, utcnow
from ..errors import BadRequest, Conflict, HTTPError
from ..metrics import Metrics
from ..names import check_group_name
from .base import Authenticator, LoginRefused
from .crypto import Crypt, DecryptError
from .identity import Identity
from .refresh import mark_fresh, refresh_user as refresh_user  # refresh_user: its old home
from .session import Hub as SessionHub, SessionOptions, cookie_identity


class LoginOptions(SessionOptions, Protocol):
    @property
    def custom_scopes(self) -> dict[str, Any]: ...


class Hub(SessionHub, Protocol):
    """What signing in needs of the hub: its authenticator (with the throttle and, with auth
    state, its key), the login histogram, the custom scopes a managed role may hold, and
    what the sign-in's session needs (:class:`courtyard.auth.session.Hub`)."""

    @property
    def options(self) -> LoginOptions: ...
    @property
    def authenticator(self) -> Authenticator: ...
    @property
    def metrics(self) -> Metrics: ...


class AuthenticatorOptions(LoginOptions, Protocol):
    @property
    def allow_named_servers(self) -> bool: ...
    @property
    def admin_users(self) -> set[str]: ...  # the deprecated c.JupyterHub.admin_users


class AuthenticatorHub(Hub, Protocol):
    """What an authenticator is handed of the hub (:attr:`Authenticator.hub
    <courtyard.auth.base.Authenticator.hub>`, set by ``startup``, where mypy checks the hub
    against it): what signing in needs (an authenticator's own pages sign users in), the
    database, users' auth state, and what JupyterHub's plugins read
    (:mod:`courtyard.compat.auth_objects`)."""

    @property
    def options(self) -> AuthenticatorOptions: ...
    @property
    def session(self) -> sessionmaker[Session]: ...

    def read_auth_state(self, user: User) -> dict[str, Any] | None: ...


log = logging.getLogger("courtyard.auth")

LOGIN_FAILED = "Invalid username or password."


class TooManyAttempts(HTTPError):
    """429: this user and address (or, with ``everyone``, the whole hub) must wait."""

    status = 429

    def __init__(self, retry_after: int, everyone: bool = False) -> None:
        what = ("Too many failed sign-ins on this hub just now" if everyone
                else "Too many failed login attempts")
        super().__init__(f"{what}; try again in {retry_after} seconds.",
                         headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after


class AuthenticatorFailed(HTTPError):
    """The authenticator or one of its hooks raised: the sign-in is refused (fail closed)."""

    status = 500

    def __init__(self) -> None:
        super().__init__("Sign-in failed because of an error in the hub's authenticator; "
                         "please try again later, or tell the hub's administrators.")


@dataclass
class LoginContext:
    """What an authenticator gets as ``handler``: the hub, the request and a DB session."""

    hub: Hub
    request: Request
    db: Session

    @property
    def client_ip(self) -> str | None:
        return client_address(self.request)


def client_address(request: Request) -> str | None:
    """The client's address: the peer's, or the one our proxies forwarded (the dispatcher
    put it in ``request.client``: :mod:`courtyard.web.forwarded`)."""
    return request.client.host if request.client else None


async def attempt(ctx: LoginContext, data: dict[str, Any] | None,
                  authenticator: Authenticator | None = None) -> dict[str, Any] | None:
    """Authenticate ``data`` (username, password, ...) under the throttle.

    Returns the model, or None for a refusal that must read as "invalid username or
    password". Raises TooManyAttempts (429), LoginRefused (a message to show) or
    AuthenticatorFailed (500: a hook raised, and an error never signs anyone in).
    Attempts for one username from one address run one at a time, so guesses sent at
    once are counted like guesses sent one after the other.
    """
    username = str((data or {}).get("username") or "")  # None: a sign-in from the request
    begun, model = perf_counter(), None
    try:
        async with ctx.hub.authenticator.throttle.turn(username, ctx.client_ip):
            model = await _attempt(ctx, data, username, authenticator)
        return model
    finally:  # JupyterHub's login_duration_seconds
        ctx.hub.metrics.login.observe(perf_counter() - begun,
                                      "success" if model else "failure")


async def _attempt(ctx: LoginContext, data: dict[str, Any] | None, username: str,
                   authenticator: Authenticator | None) -> dict[str, Any] | None:
    auth = authenticator or ctx.hub.authenticator
    throttle = ctx.hub.authenticator.throttle
    address = ctx.client_ip
    wait = throttle.check(username, address)
    if wait:
        log.warning("Login for %r from %s throttled for %d s%s", username, address,
                    wait.seconds, " (the hub-wide cap)" if wait.everyone else "")
        raise TooManyAttempts(wait.seconds, wait.everyone)
    try:
        model = await auth.get_authenticated_user(ctx, data)
    except LoginRefused as e:
        if e.failed:
            throttle.failure(username, address)
        else:
            throttle.success(username, address)
        raise
    except Exception:
        log.exception("Sign-in for %r from %s refused: the authenticator failed", username,
                      address)
        raise AuthenticatorFailed() from None
    if model is None:
        throttle.failure(username, address)
        log.warning("Failed login for %r from %s", username, address)
        return None
    throttle.success(username, address)
    return model


def login_user(hub: Hub, db: Session, model: dict[str, Any]) -> User:
    """The hub user for an authenticated model, created or updated to match it."""
    auth = hub.authenticator
    user = queries.get_user(db, model["name"])
    if user is None:
        user = queries.create_user(db, model["name"])
        log.info("New user %s signed in", user.name)
    admin = model.get("admin")
    if admin is not None and bool(admin) != user.admin:
        queries.set_admin(db, user, bool(admin))
    if auth.manage_groups and isinstance(model.get("groups"), list | tuple | set):
        sync_groups(db, user, model["groups"])
    if auth.manage_roles and model.get("roles") is not None:
        sync_roles(hub, db, user, model["roles"])
    if "auth_state" in model and auth.enable_auth_state:
        write_auth_state(hub, user, model["auth_state"])
    user.last_activity = utcnow()
    db.flush()
    mark_fresh(auth, user.id)  # as good as a refresh: none due for auth_refresh_age
    return user


def sync_groups(db: Session, user: User, names: Any) -> bool:
    """Make the user's groups exactly ``names``, creating missing groups; True if changed."""
    wanted = set()
    for name in names:
        if check_group_name(name) is None:
            wanted.add(name)
        else:
            log.warning("Ignoring group %r for %s: not a valid group name", name, user.name)
    if wanted == {g.name for g in user.groups}:
        return False
    groups = []
    for name in sorted(wanted):
        group = queries.get_group(db, name)
        if group is None:
            group = Group(name=name, properties={})
            db.add(group)
        groups.append(group)
    user.groups = groups
    return True


def sync_roles(hub: Hub, db: Session, user: User, specs: object) -> bool:
    """``manage_roles``: the user holds exactly the roles the authenticator returned, as in
    JupyterHub 5 (``user`` included: a list without it takes the ``self`` scope away).

    Each entry is a role (a dict as in ``load_roles``, or a name). A missing role is created,
    marked ``managed_by: authenticator``; the definition (description, scopes) and members
    (users, groups, services) of such a role follow the entry. A built-in, config or API role
    is only granted: its definition stays its owner's. The ``admin`` role follows the
    ``admin`` flag: an entry can grant it, and only ``admin``/``admin_users`` take it away.
    A role the authenticator made that no one holds any more is deleted. A malformed entry
    refuses the sign-in (409, as in JupyterHub); nothing is changed then.
    """
    from .roles import ROLE_KEYS, check_role

    if not isinstance(specs, list | tuple | set):
        raise Conflict(f"the authenticator returned roles {specs!r} for {user.name}; "
                       "expected a list of roles")
    wanted: dict[str, dict[str, Any]] = {}
    for raw in specs:
        spec = {"name": raw} if isinstance(raw, str) else raw
        if not isinstance(spec, dict):
            raise Conflict(f"the authenticator returned role {raw!r} for {user.name}; a role "
                           "is a dict with a name, or a name")
        # JupyterHub's role rows carry "id", "managed_by_auth" and None for unset fields
        spec = {k: v for k, v in spec.items() if k in ROLE_KEYS and v is not None}
        try:
            check_role(spec, tuple(hub.options.custom_scopes))
        except BadRequest as e:
            raise Conflict(f"the authenticator returned an invalid role for {user.name}: "
                           f"{e.message}") from None
        wanted[spec["name"]] = spec
    changed = False
    held = {role.name: role for role in user.roles}
    for name, spec in wanted.items():
        role = queries.get_role(db, name)
        if role is None:
            log.info("Creating role %s for %s (manage_roles)", name, user.name)
            role = Role(name=name, description="", scopes=[], managed_by="authenticator")
            db.add(role)
            changed = True
        if role.managed_by == "authenticator":
            changed = _follow_spec(db, role, spec) or changed
        elif set(spec) - {"name"}:
            log.warning("Role %s is defined by %s: the authenticator only grants it (its "
                        "definition and members in the auth model are ignored)", name,
                        role.managed_by)
        if name == "admin":
            if not user.admin:
                queries.set_admin(db, user, True)
                changed = True
        elif role not in user.roles:  # also when the entry's "users" left them out
            user.roles.append(role)
            changed = True
    for name, role in held.items():
        if name in wanted or name == "admin":
            continue
        log.info("Removing role %s from %s (manage_roles)", name, user.name)
        user.roles.remove(role)
        changed = True
        db.flush()
        if role.managed_by == "authenticator" and not (role.users or role.groups
                                                       or role.services):
            log.info("Deleting role %s: the authenticator gives it to no one any more", name)
            db.delete(role)
    if changed:
        db.flush()
    return changed


def _follow_spec(db: Session, role: Role, spec: dict[str, Any]) -> bool:
    """Bring an authenticator's role in line with its entry; True if anything changed."""
    changed = False
    for key in ("description", "scopes"):
        if key in spec and getattr(role, key) != spec[key]:
            setattr(role, key, list(spec[key]) if key == "scopes" else spec[key])
            changed = True
    changed |= _follow_members(db, role, spec, "users", User)
    changed |= _follow_members(db, role, spec, "groups", Group)
    changed |= _follow_members(db, role, spec, "services", Service)
    return changed


def _follow_members(db: Session, role: Role, spec: dict[str, Any], key: str,
                    model: type[RoleMember]) -> bool:
    """Give ``role`` the ``key`` members its entry names (those that exist); True if that
    changed them."""
    if key not in spec:
        return False
    names = list(dict.fromkeys(spec[key]))
    found = {m.name: m for m in db.scalars(select(model).where(model.name.in_(names)))}
    missing = [n for n in names if n not in found]
    if missing:
        log.warning("Could not assign the role %s to %s: %s not found", role.name, key,
                    ", ".join(missing))
    members = [found[n] for n in names if n in found]
    if set(members) == set(getattr(role, key)):
        return False
    setattr(role, key, members)
    return True


# -- auth state -----------------------------------------------------------------------------
def _crypt(hub: Hub) -> Crypt:
    crypt = getattr(hub.authenticator, "crypt", None)
    if crypt is None:
        crypt = hub.authenticator.crypt = Crypt.from_env()
    return crypt


def read_auth_state(hub: Hub, user: User) -> dict[str, Any] | None:
    if not hub.authenticator.enable_auth_state or user.encrypted_auth_state is None:
        return None
    try:
        state: dict[str, Any] = _crypt(hub).decrypt(user.encrypted_auth_state)  # as written
    except DecryptError as e:
        log.error("Auth state of %s: %s", user.name, e)
        return None
    return state


def write_auth_state(hub: Hub, user: User, state: dict[str, Any] | None) -> None:
    if not hub.authenticator.enable_auth_state:
        raise BadRequest("auth_state is not enabled (c.Authenticator.enable_auth_state)")
    user.encrypted_auth_state = None if state is None else _crypt(hub).encrypt(state)


# -- the token API's "auth" body (POST /users/{name}/tokens without a token) ---------------
async def identify_body(hub: Hub, request: Request, db: Session) -> Identity | None:
    """Authenticate ``{"auth": {"username", "password"}}`` in a JSON body, as JupyterHub does."""
    try:
        import orjson

        body = orjson.loads(await request.body() or b"{}")
    except ValueError:
        return None
    data = body.get("auth") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        return None
    ctx = LoginContext(hub, request, db)
    try:
        model = await attempt(ctx, data)
    except LoginRefused:
        return None
    if model is None:
        return None
    user = login_user(hub, db, model)
    db.commit()
    return cookie_identity(hub, db, user, None)
