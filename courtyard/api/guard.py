"""Who may act on whom: a delegated admin stays below the rights it was given.

A scope's filter says which users, groups and servers a caller reaches; it does not say
whether the target holds more than the caller. Without this module, ``admin:users!group=g2``
could reset the password of an admin who is in ``g2``, delete them, or put anyone in a group
that carries the ``admin`` role. The API's write endpoints call these checks after the
filter checks (404 when the filter does not reach the target) and answer 403 when:

- the target (a user, group, role, service, or a user's tokens and servers) holds rights the
  caller lacks: every user's own ``self`` scopes do not count, so a delegated admin still
  manages the ordinary users in its filter, but never one with more (an admin, a member of
  a group with the admin role, a holder of any scope or share the caller lacks);
- a change would grant, through a group, role, share, token, rename or ``admin: true``,
  anything the caller does not hold itself.

A full admin (a user or service with ``admin`` whose request holds every scope of the
``admin`` role, unfiltered) passes every check: it could give itself anything anyway.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select

from ..auth.identity import owner_scopes
from ..auth.roles import ADMIN_SCOPES
from ..auth.scopes import GroupsOf, Parsed, expand_scopes, missing_scopes, parse_scopes, subtract_scopes
from ..db import queries
from ..db.models import Group, Role, Service, Share, User
from ..errors import Forbidden
from .base import Ctx

ADMIN_PARSED = parse_scopes(expand_scopes(ADMIN_SCOPES))
SHOWN = 4  # scopes named in a refusal; the rest are counted


def superuser(ctx: Ctx) -> bool:
    """Whether the caller is a full admin: flagged admin, and this request holds it all."""
    ident = ctx.identity
    if ident is None or not ident.admin:
        return False
    if "superuser" not in ctx.memo:
        ctx.memo["superuser"] = not missing_scopes(ident.parsed, ADMIN_PARSED)
    return bool(ctx.memo["superuser"])


def _lacking(ctx: Ctx, wanted: Parsed, groups_of: GroupsOf | None = None) -> list[str]:
    if superuser(ctx):
        return []
    held = ctx.identity.parsed if ctx.identity else {}
    return missing_scopes(held, wanted, groups_of or ctx.groups_of)


def _refuse(what: str, lacking: list[str]) -> Forbidden:
    shown = ", ".join(lacking[:SHOWN])
    more = f" and {len(lacking) - SHOWN} more" if len(lacking) > SHOWN else ""
    return Forbidden(f"{what}: that needs rights you do not hold ({shown}{more})")


def baseline(name: str) -> Parsed:
    """What every user holds over themselves (the ``user`` role's ``self``)."""
    return parse_scopes(expand_scopes(["self"], "user", name))


def user_rights(ctx: Ctx, user: User) -> Parsed:
    """What ``user`` holds beyond its own ``self`` scopes (roles, groups' roles, shares)."""
    return subtract_scopes(parse_scopes(owner_scopes(ctx.db, user)), baseline(user.name))


def is_self(ctx: Ctx, user: User) -> bool:
    ident = ctx.identity
    return ident is not None and ident.kind == "user" and ident.id == user.id


def require_user_below(ctx: Ctx, user: User, action: str, self_ok: bool = False) -> None:
    """403 unless the caller holds every right ``user`` holds (``action`` names the refusal).

    ``self_ok`` for what gains nothing when done to oneself (starting one's own server):
    otherwise a narrowed token of a user acting on that user is checked like anyone else,
    so it cannot, say, reset its owner's password to get all of the owner's rights.
    """
    if superuser(ctx) or (self_ok and is_self(ctx, user)):
        return
    lacking = ["admin"] if user.admin else _lacking(ctx, user_rights(ctx, user))
    if lacking:
        raise _refuse(f"Cannot {action} {user.name}, who holds more rights than you", lacking)


def require_users_below(ctx: Ctx, users: Iterable[User], action: str) -> None:
    for user in users:
        require_user_below(ctx, user, action)


def require_grant(ctx: Ctx, raw: Iterable[str], to: User | Service | None, what: str) -> None:
    """403 unless the caller holds what ``raw`` scopes give ``to`` (None: the scopes that
    are not relative to an owner), beyond a user's own ``self`` scopes."""
    raw = list(raw)
    if not raw or superuser(ctx):
        return
    if isinstance(to, User):
        wanted = subtract_scopes(parse_scopes(expand_scopes(raw, "user", to.name)), baseline(to.name))
    elif isinstance(to, Service):
        wanted = parse_scopes(expand_scopes(raw, "service", to.name))
    else:
        wanted = parse_scopes(expand_scopes(raw))
    lacking = _lacking(ctx, wanted)
    if lacking:
        raise _refuse(f"Cannot {what}", lacking)


def group_scopes(ctx: Ctx, group: Group) -> list[str]:
    """Every scope a member gets from ``group``: its roles' and the shares made to it."""
    raw = [s for role in group.roles for s in role.scopes]
    if group.id is not None:
        for share in ctx.db.scalars(select(Share).where(Share.group_id == group.id)):
            raw.extend(share.scopes)
    return raw


def _relative(raw: Iterable[str]) -> bool:
    """Whether some scope means something per owner (``self``, bare ``!user``...)."""
    return any(s == "self" or ("!" in s and "=" not in s) for s in raw)


def require_group_below(ctx: Ctx, group: Group, action: str) -> None:
    """403 unless the caller holds what ``group`` gives its members."""
    if superuser(ctx):
        return
    raw = group_scopes(ctx, group)
    what = f"{action} group {group.name}, which grants more rights than you hold"
    require_grant(ctx, raw, None, what)
    if _relative(raw):
        for member in group.users:
            require_grant(ctx, raw, member, what)


def role_members(role: Role) -> list[User | Service]:
    """The users and services a role reaches, directly or through its groups."""
    members: list[User | Service] = [*role.users, *role.services]
    for group in role.groups:
        members.extend(group.users)
    return members


def require_role_below(ctx: Ctx, role: Role, action: str) -> None:
    """403 unless the caller holds what ``role`` grants (the ``admin`` role: full admins)."""
    if superuser(ctx):
        return
    what = f"{action} role {role.name}, which grants more rights than you hold"
    if role.name == "admin":
        raise _refuse(f"Cannot {what}", ["admin"])
    require_grant(ctx, role.scopes, None, what)
    if _relative(role.scopes):
        for member in role_members(role):
            require_grant(ctx, role.scopes, member, what)


def require_service_below(ctx: Ctx, service: Service, action: str) -> None:
    if superuser(ctx):
        return
    lacking = ["admin"] if service.admin else _lacking(
        ctx, parse_scopes(owner_scopes(ctx.db, service)))
    if lacking:
        raise _refuse(f"Cannot {action} service {service.name}, which holds more rights "
                      "than you", lacking)


# -- names the configuration blesses ------------------------------------------------------------

def _names(ctx: Ctx, raw: Iterable[object]) -> set[str]:
    norm = ctx.hub.authenticator.normalize_username
    return {norm(n) for n in raw if isinstance(n, str)}


def _load_groups_naming(ctx: Ctx, name: str) -> list[str]:
    found = []
    for group, spec in ctx.hub.options.load_groups.items():
        users = spec if isinstance(spec, list) else (spec or {}).get("users", [])
        if name in _names(ctx, users):
            found.append(group)
    return found


def config_scopes_for_group(ctx: Ctx, group: str) -> list[str]:
    """Scopes ``load_roles`` gives a group of this name when the hub next starts."""
    return [s for spec in ctx.hub.options.load_roles if group in spec.get("groups", [])
            for s in spec.get("scopes", [])]


def require_name_grantable(ctx: Ctx, name: str, groups: list[str], what: str) -> None:
    """403 when the config gives the user called ``name`` rights the caller lacks.

    ``admin_users`` makes whoever bears the name an admin at their next sign-in or hub
    start, and ``load_roles``/``load_groups`` add roles and groups by name: creating or
    renaming a user into such a name grants those rights. ``groups`` are the groups the
    user will be in (none for a new user).
    """
    if superuser(ctx):
        return
    auth = ctx.hub.authenticator
    admins = _names(ctx, [*getattr(auth, "admin_users", ()), *ctx.hub.options.admin_users])
    raw: list[str] = []
    for spec in ctx.hub.options.load_roles:
        if name in _names(ctx, spec.get("users", [])):
            if spec["name"] == "admin":
                admins.add(name)
            role = queries.get_role(ctx.db, spec["name"])
            raw.extend(role.scopes if role is not None else spec.get("scopes", []))
    if name in admins:
        raise _refuse(f"Cannot {what}: {name} is an admin in the configuration", ["admin"])
    for group_name in _load_groups_naming(ctx, name):
        group = queries.get_group(ctx.db, group_name)
        if group is not None:
            raw.extend(group_scopes(ctx, group))
        raw.extend(config_scopes_for_group(ctx, group_name))
    if raw:
        wanted = subtract_scopes(parse_scopes(expand_scopes(raw, "user", name)), baseline(name))
        lacking = _lacking(ctx, wanted, lambda _u: groups)
        if lacking:
            raise _refuse(f"Cannot {what}: the configuration gives {name} more rights "
                          "than you hold", lacking)
