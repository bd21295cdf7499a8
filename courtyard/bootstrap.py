"""Start-up steps that bring the database in line with the configuration."""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from .auth import tokens
from .auth.identity import ScopeCache
from .auth.roles import DEFAULT_ROLES, check_role
from .db import queries
from .db.models import APIToken, Group, Role, Service, User
from .errors import BadRequest, ConfigError
from .names import check_group_name


class ConfigOptions(Protocol):
    """The hub's options that say what the database must hold at start."""

    @property
    def load_roles(self) -> list[dict[str, Any]]: ...
    @property
    def load_groups(self) -> dict[str, Any]: ...
    @property
    def custom_scopes(self) -> dict[str, Any]: ...
    @property
    def services(self) -> list[dict[str, Any]]: ...
    @property
    def api_tokens(self) -> dict[str, str]: ...
    @property
    def service_tokens(self) -> dict[str, str]: ...
    @property
    def admin_users(self) -> set[str]: ...


class Names(Protocol):
    """The authenticator's say on user names, admins and allowed users."""

    admin_users: set[str]
    allowed_users: set[str]
    manage_roles: bool

    def normalize_username(self, username: str) -> str: ...
    def validate_username(self, username: str) -> bool: ...


class Hub(Protocol):
    """What start-up reconciliation needs of the hub."""

    @property
    def options(self) -> ConfigOptions: ...
    @property
    def authenticator(self) -> Names: ...
    @property
    def service_specs(self) -> dict[str, dict[str, Any]]: ...
    @property
    def scope_cache(self) -> ScopeCache: ...

log = logging.getLogger("courtyard")

SERVICE_KEYS = {
    "name", "url", "command", "api_token", "admin", "oauth_client_id", "oauth_redirect_uri",
    "oauth_no_confirm", "oauth_client_allowed_scopes", "oauth_roles", "info", "display",
    "environment", "user", "cwd", "roles", "timeout",
}


def user_name(hub: Hub, raw: object, where: str) -> str:
    """Normalize and validate a username from config, or fail naming where it came from."""
    if not isinstance(raw, str):
        raise ConfigError(f"{where}: username {raw!r} must be a string")
    name = hub.authenticator.normalize_username(raw)
    if not hub.authenticator.validate_username(name):
        raise ConfigError(f"{where}: {raw!r} is not a valid username")
    return name


def ensure_user(hub: Hub, db: Session, raw: object, where: str) -> User:
    name = user_name(hub, raw, where)
    return queries.get_user(db, name) or queries.create_user(db, name)


def init_roles(hub: Hub, db: Session) -> None:
    """Create the default roles; create, update or drop roles from ``load_roles``."""
    custom = tuple(hub.options.custom_scopes)
    config_names = set()
    for i, spec in enumerate(hub.options.load_roles):
        try:
            check_role(spec, custom)
        except BadRequest as e:
            raise ConfigError(f"c.JupyterHub.load_roles[{i}]: {e.message}") from None
        if spec["name"] == "admin" and "scopes" in spec:
            raise ConfigError("c.JupyterHub.load_roles: the scopes of the admin role cannot "
                              "be changed; define a new role instead")
        config_names.add(spec["name"])
        if hub.authenticator.manage_roles and (spec.get("users") or spec.get("groups")):
            raise ConfigError(f"c.JupyterHub.load_roles[{i}] ({spec['name']}) assigns users or "
                              "groups, but with c.Authenticator.manage_roles the authenticator "
                              "assigns roles; keep only name, description, scopes, services")
    for name, spec in DEFAULT_ROLES.items():
        role = queries.get_role(db, name) or Role(name=name)
        db.add(role)
        if name not in config_names:
            role.scopes, role.description, role.managed_by = (
                list(spec["scopes"]), spec["description"], "default")
    for spec in hub.options.load_roles:
        role = queries.get_role(db, spec["name"]) or Role(name=spec["name"])
        db.add(role)
        if spec["name"] in DEFAULT_ROLES:
            # a built-in role named only to add members keeps its scopes, even on a new
            # database, and stays read-only in the roles API
            default = DEFAULT_ROLES[spec["name"]]
            role.scopes = list(spec.get("scopes", role.scopes or default["scopes"]))
            role.description = spec.get("description", role.description or default["description"])
            role.managed_by = "default"
            continue
        role.scopes = list(spec.get("scopes", []))
        role.description = spec.get("description", "")
        role.managed_by = "config"
    for role in db.scalars(select(Role).where(Role.managed_by == "config")):
        if role.name not in config_names:
            log.info("Removing role %s, no longer in load_roles", role.name)
            db.delete(role)
    db.flush()


def init_users(hub: Hub, db: Session) -> None:
    """Create admins and allowed users named in the config; admins get the admin role."""
    admins = set(hub.authenticator.admin_users) | set(hub.options.admin_users)
    for raw in sorted(admins):
        user = ensure_user(hub, db, raw, "c.Authenticator.admin_users")
        queries.set_admin(db, user, True)
    for raw in sorted(hub.authenticator.allowed_users):
        ensure_user(hub, db, raw, "c.Authenticator.allowed_users")
    db.flush()


def init_groups(hub: Hub, db: Session) -> None:
    for name, spec in hub.options.load_groups.items():
        problem = check_group_name(name)
        if problem:
            raise ConfigError(f"c.JupyterHub.load_groups: {problem}")
        if isinstance(spec, list):
            spec = {"users": spec}
        if not isinstance(spec, dict):
            raise ConfigError(f"c.JupyterHub.load_groups[{name!r}] must be a list of users or "
                              "a dict with users and properties")
        group = queries.get_group(db, name) or Group(name=name, properties={})
        db.add(group)
        for raw in spec.get("users", []):
            user = ensure_user(hub, db, raw, f"c.JupyterHub.load_groups[{name!r}]")
            if user not in group.users:
                group.users.append(user)
        if "properties" in spec:
            group.properties = dict(spec["properties"])
    db.flush()


def init_services(hub: Hub, db: Session) -> None:
    """Register services from config; their tokens are hashed like config tokens."""
    seen = set()
    for i, spec in enumerate(hub.options.services):
        where = f"c.JupyterHub.services[{i}]"
        unknown = set(spec) - SERVICE_KEYS
        if unknown:
            log.warning("%s: key(s) %s not supported by Courtyard; ignored", where,
                        ", ".join(sorted(unknown)))
        name = spec.get("name")
        if not isinstance(name, str) or not name or "/" in name or len(name) > 255:
            raise ConfigError(f"{where} needs a 'name' of at most 255 characters, without '/'")
        if name in seen:
            raise ConfigError(f"{where}: service {name!r} is defined twice")
        seen.add(name)
        client_id = spec.get("oauth_client_id")
        if client_id and not (isinstance(client_id, str) and client_id.startswith("service-")):
            raise ConfigError(f"{where}: oauth_client_id {client_id!r} must start with "
                              "'service-', as in JupyterHub")
        allowed = service_allowed_scopes(hub, db, spec, where)
        service = queries.get_service(db, name) or Service(name=name)
        db.add(service)
        service.admin = bool(spec.get("admin", False))
        service.url = spec.get("url") or None
        service.info = dict(spec.get("info", {}))
        service.display = bool(spec.get("display", True))
        service.oauth_client_id = spec.get("oauth_client_id") or (
            f"service-{name}" if service.url else None)
        service.oauth_redirect_uri = spec.get("oauth_redirect_uri")
        service.oauth_no_confirm = bool(spec.get("oauth_no_confirm", False))
        service.oauth_client_allowed_scopes = allowed
        service.from_config = True
        admin_role = queries.get_role(db, "admin")  # built in: always there
        if admin_role is not None and service.admin != (admin_role in service.roles):
            if service.admin:
                service.roles.append(admin_role)
            else:
                service.roles.remove(admin_role)
        hub.service_specs[name] = dict(spec)
    for service in db.scalars(select(Service).where(Service.from_config.is_(True))):
        if service.name not in seen:
            log.info("Removing service %s, no longer in config", service.name)
            db.delete(service)
    db.flush()


def service_allowed_scopes(hub: Hub, db: Session, spec: dict[str, Any], where: str
                           ) -> list[str]:
    """A service's ``oauth_client_allowed_scopes`` (custom scopes and ``inherit`` included),
    or the scopes of its deprecated ``oauth_roles``: what its visitors' tokens may carry."""
    from .auth.scopes import validate_scopes

    scopes = spec.get("oauth_client_allowed_scopes") or []
    roles = spec.get("oauth_roles") or []
    if not isinstance(scopes, list | tuple) or not all(isinstance(s, str) for s in scopes):
        raise ConfigError(f"{where}: oauth_client_allowed_scopes must be a list of scopes")
    if not isinstance(roles, list | tuple) or not all(isinstance(r, str) for r in roles):
        raise ConfigError(f"{where}: oauth_roles must be a list of role names")
    if roles and scopes:
        log.warning("%s: oauth_roles is deprecated and ignored in favour of "
                    "oauth_client_allowed_scopes", where)
    elif roles:
        log.warning("%s: oauth_roles is deprecated; use oauth_client_allowed_scopes", where)
        scopes = []
        for role_name in roles:
            role = queries.get_role(db, role_name)
            if role is None:
                raise ConfigError(f"{where}: oauth_roles names no role {role_name!r}")
            scopes.extend(role.scopes)
    problems = validate_scopes([s for s in scopes if s != "inherit"], hub.options.custom_scopes)
    if problems:
        raise ConfigError(f"{where}: oauth_client_allowed_scopes: {'; '.join(problems)}")
    return sorted(set(scopes))


def config_tokens(hub: Hub) -> list[tuple[str, str, str]]:
    """``(secret, kind, owner name)`` of ``api_tokens``, ``service_tokens`` and
    ``services[].api_token``."""
    wanted: list[tuple[str, str, str]] = []
    for secret, name in hub.options.api_tokens.items():
        wanted.append((secret, "user", user_name(hub, name, "c.JupyterHub.api_tokens")))
    for secret, name in hub.options.service_tokens.items():
        wanted.append((secret, "service", name))
    for spec in hub.options.services:
        if spec.get("api_token"):
            wanted.append((spec["api_token"], "service", spec["name"]))
    for secret, kind, name in wanted:
        if not isinstance(secret, str) or len(secret) < 8:
            raise ConfigError(f"config token for {kind} {name!r} is too short; use at least 8 "
                              "characters (e.g. openssl rand -hex 32)")
    return wanted


ConfigTokenCheck = tuple[str, str, str, "Future[int | None]"]  # secret, kind, owner, match


def _matching_row(secret: str, candidates: list[tuple[int, str]]) -> int | None:
    """The id of the row whose hash ``secret`` matches (a slow hash: run in a thread)."""
    return next((row_id for row_id, hashed in candidates if tokens.matches(secret, hashed)),
                None)


def check_config_tokens(hub: Hub, db: Session) -> list[ConfigTokenCheck]:
    """Start matching each config token against the stored slow hashes, in threads.

    PBKDF2 takes ~50 ms a token and hashlib lets other threads run meanwhile, so the
    other start-up steps overlap it. Each future gives the id of the matching row, or None.
    """
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="token-check")
    checks: list[ConfigTokenCheck] = []
    for secret, kind, name in config_tokens(hub):
        candidates = [(row.id, row.hashed) for row in db.scalars(select(APIToken).where(
            APIToken.prefix == tokens.prefix(secret), APIToken.from_config.is_(True)))]
        checks.append((secret, kind, name, pool.submit(_matching_row, secret, candidates)))
    pool.shutdown(wait=False)
    return checks


def init_api_tokens(hub: Hub, db: Session, checks: list[ConfigTokenCheck]) -> None:
    """Config tokens in the database, each once; those no longer in the config revoked.

    A token verified here is remembered by its fast hash, so its first request does
    not pay for the slow hash again.
    """
    kept: set[int] = set()
    for secret, kind, name, match in checks:
        owner = queries.get_user(db, name) or queries.create_user(db, name) if kind == "user" else \
            queries.get_service(db, name)
        if owner is None:
            raise ConfigError(f"c.JupyterHub.service_tokens: no service named {name!r}; add it "
                              "to c.JupyterHub.services")
        row_id = match.result()
        row = db.get(APIToken, row_id) if row_id is not None else None
        if row is None or not (row.user is owner or row.service is owner):
            if row is not None:
                db.delete(row)
                db.flush()
            row, _ = queries.issue_token(db, owner, note="from config", secret=secret,
                                   from_config=True)
            db.flush()
        kept.add(row.id)
        hub.scope_cache.remember_token(secret, row)
    for row in db.scalars(select(APIToken).where(APIToken.from_config.is_(True))):
        if row.id not in kept:
            db.delete(row)
    db.flush()


def assign_config_roles(hub: Hub, db: Session) -> None:
    """Members of config roles are exactly those the config names."""
    for spec in hub.options.load_roles:
        role = queries.get_role(db, spec["name"])
        assert role is not None
        where = f"c.JupyterHub.load_roles ({spec['name']})"
        if "users" in spec:
            users = [ensure_user(hub, db, raw, where) for raw in spec["users"]]
            if role.name not in DEFAULT_ROLES:
                role.users = users
            else:
                for user in users:
                    if user not in role.users:
                        role.users.append(user)
        if "groups" in spec:
            groups = []
            for name in spec["groups"]:
                group = queries.get_group(db, name) or Group(name=name, properties={})
                db.add(group)
                groups.append(group)
            role.groups = groups
        if "services" in spec:
            services = []
            for name in spec["services"]:
                service = queries.get_service(db, name)
                if service is None:
                    raise ConfigError(f"{where}: no service named {name!r}")
                services.append(service)
            role.services = services
    db.flush()
