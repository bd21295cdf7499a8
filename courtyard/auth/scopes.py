"""The scope table, and how scopes expand, combine and apply to resources.

The table is data: ``docs/scopes.md`` is generated from it (``python -m courtyard.auth.scopes``)
and a test fails when the two drift apart.

A scope may carry a filter, ``read:users!user=alice``. Parsed scopes map each scope name to
the set of filters it holds (``{"user=alice", "group=staff"}``) or to ``ALL``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Literal


@dataclass(frozen=True)
class ScopeDef:
    description: str
    subscopes: tuple[str, ...] = ()
    doc_only: bool = False  # placeholders such as "self" and "inherit", never stored expanded


SCOPES: Final[dict[str, ScopeDef]] = {
    "(no_scope)": ScopeDef("Identify the owner of the requesting entity.", doc_only=True),
    "self": ScopeDef(
        "Your own resources: the user's own scopes, filtered to themselves.",
        ("read:users", "read:users:name", "read:users:groups", "read:users:activity",
         "users:activity", "servers", "tokens", "access:servers", "users:shares",
         "read:users:shares", "read:shares"),
        doc_only=True,
    ),
    "inherit": ScopeDef("Everything the token's owner can do.", doc_only=True),
    "admin-ui": ScopeDef("Access the admin page (actions need their own scopes)."),
    "admin:users": ScopeDef(
        "Read, write, create and delete users and their authentication state, not their "
        "servers or tokens.",
        ("admin:auth_state", "users", "read:roles:users", "delete:users"),
    ),
    "admin:auth_state": ScopeDef("Read a user's authentication state."),
    "users": ScopeDef(
        "Read and write permissions to user models (excluding servers, tokens and "
        "authentication state).",
        ("read:users", "list:users", "users:activity"),
    ),
    "delete:users": ScopeDef("Delete users."),
    "list:users": ScopeDef("List users, including at least their names.", ("read:users:name",)),
    "read:users": ScopeDef(
        "Read user models (excluding servers, tokens and authentication state).",
        ("read:users:name", "read:users:groups", "read:users:activity"),
    ),
    "read:users:name": ScopeDef("Read names of users."),
    "read:users:groups": ScopeDef("Read users' group membership."),
    "read:users:activity": ScopeDef("Read time of last user activity."),
    "read:roles": ScopeDef(
        "Read role assignments.",
        ("read:roles:users", "read:roles:services", "read:roles:groups"),
    ),
    "read:roles:users": ScopeDef("Read user role assignments."),
    "read:roles:services": ScopeDef("Read service role assignments."),
    "read:roles:groups": ScopeDef("Read group role assignments."),
    "admin:roles": ScopeDef(
        "Create, change and delete roles through the roles API (Courtyard only).",
        ("read:roles",),
    ),
    "users:activity": ScopeDef("Update time of last user activity.", ("read:users:activity",)),
    "admin:servers": ScopeDef(
        "Read, start, stop, create and delete user servers and their state.",
        ("admin:server_state", "servers"),
    ),
    "admin:server_state": ScopeDef("Read and write users' server state."),
    "servers": ScopeDef(
        "Start and stop user servers.",
        ("read:servers", "delete:servers", "start:servers"),
    ),
    "start:servers": ScopeDef("Start, create and edit user servers."),
    "read:servers": ScopeDef(
        "Read users' names and their server models (excluding the server state).",
        ("read:users:name",),
    ),
    "delete:servers": ScopeDef("Stop and delete users' servers."),
    "tokens": ScopeDef("Read, write, create and delete user tokens.", ("read:tokens",)),
    "read:tokens": ScopeDef("Read user tokens."),
    "admin:groups": ScopeDef(
        "Read and write group information, create and delete groups.",
        ("groups", "read:roles:groups", "delete:groups"),
    ),
    "groups": ScopeDef(
        "Read and write group information, including adding and removing users.",
        ("read:groups", "list:groups"),
    ),
    "list:groups": ScopeDef("List groups, including at least their names.",
                            ("read:groups:name",)),
    "read:groups": ScopeDef("Read group models.", ("read:groups:name",)),
    "read:groups:name": ScopeDef("Read group names."),
    "delete:groups": ScopeDef("Delete groups."),
    "admin:services": ScopeDef(
        "Create, read, update and delete services, not including services defined in the "
        "configuration.",
        ("list:services", "read:services", "read:roles:services"),
    ),
    "list:services": ScopeDef("List services, including at least their names.",
                              ("read:services:name",)),
    "read:services": ScopeDef("Read service models.", ("read:services:name",)),
    "read:services:name": ScopeDef("Read service names."),
    "read:hub": ScopeDef("Read detailed information about the hub."),
    "access:servers": ScopeDef("Access user servers via API or browser."),
    "access:services": ScopeDef("Access services via API or browser."),
    "users:shares": ScopeDef("Read and revoke a user's access to shared servers.",
                             ("read:users:shares",)),
    "read:users:shares": ScopeDef("Read servers shared with a user."),
    "groups:shares": ScopeDef("Read and revoke a group's access to shared servers.",
                              ("read:groups:shares",)),
    "read:groups:shares": ScopeDef("Read servers shared with a group."),
    "read:shares": ScopeDef("Read information about shared access to servers."),
    "shares": ScopeDef(
        "Manage access to shared servers.",
        ("access:servers", "read:shares", "users:shares", "groups:shares"),
    ),
    "proxy": ScopeDef("Read information about the proxy's routing table, sync the Hub with "
                      "the proxy and notify the Hub about a new proxy."),
    "shutdown": ScopeDef("Shutdown the hub."),
    "read:metrics": ScopeDef("Read prometheus metrics."),
}

FILTER_KINDS: Final = ("user", "server", "group", "service")


class _All(enum.Enum):
    """Marker: a scope held without filter, on every resource (an enum member, so that
    ``filters is ALL`` tells the type checker which of :data:`Filters` it is)."""

    ALL = "ALL"

    def __repr__(self) -> str:
        return "ALL"

    __str__ = __repr__


ALL: Final = _All.ALL
Filters = frozenset[str] | Literal[_All.ALL]
Parsed = dict[str, Filters]


def split_scope(scope: str) -> tuple[str, str | None]:
    """``"read:users!user=alice"`` -> ``("read:users", "user=alice")``."""
    base, sep, filt = scope.partition("!")
    return base, (filt if sep else None)


def is_custom_scope(name: str) -> bool:
    return name.startswith("custom:")


def validate_scopes(scopes: Iterable[str], custom: Iterable[str] = ()) -> list[str]:
    """Return the messages for every malformed or unknown scope (empty when all are fine)."""
    known = set(SCOPES) | set(custom)
    problems = []
    for scope in scopes:
        if not isinstance(scope, str):
            problems.append(f"scope {scope!r} is not a string")
            continue
        base, filt = split_scope(scope)
        if base not in known:
            problems.append(f"unknown scope {base!r}")
        elif filt is not None:
            kind, eq, _ = filt.partition("=")
            if kind not in FILTER_KINDS:
                problems.append(f"scope {scope!r} has an unknown filter {kind!r} "
                                f"(use one of {', '.join(FILTER_KINDS)})")
            elif not eq and kind == "group":
                problems.append(f"scope {scope!r}: the group filter needs a value (!group=NAME)")
    return problems


def expand_scopes(
    scopes: Iterable[str],
    owner_kind: str | None = None,
    owner_name: str | None = None,
    server: str | None = None,
) -> frozenset[str]:
    """Expand scopes to include their subscopes, resolving owner-relative filters.

    ``self`` becomes the user's own scopes; bare ``!user``/``!service``/``!server`` become
    the owner's name (or the given ``server``, ``user/name``). ``inherit`` is not
    expanded here (it means "everything the owner holds", see :func:`token_scopes`).
    """
    out: set[str] = set()
    stack = list(scopes)
    while stack:
        scope = stack.pop()
        base, filt = split_scope(scope)
        if filt is not None and "=" not in filt:
            if filt == "user" and owner_kind == "user":
                filt = f"user={owner_name}"
            elif filt == "service" and owner_kind == "service":
                filt = f"service={owner_name}"
            elif filt == "server" and server is not None:
                filt = f"server={server}"
            else:
                continue  # owner-relative filter with no owner to resolve it: grants nothing
        if base == "self":
            if owner_kind == "user":
                stack.extend(f"{s}!user={owner_name}" for s in SCOPES["self"].subscopes)
            elif owner_kind == "service":
                stack.append(f"read:services!service={owner_name}")
            continue
        full = base if filt is None else f"{base}!{filt}"
        if full in out:
            continue
        out.add(full)
        definition = SCOPES.get(base)
        if definition:
            suffix = "" if filt is None else f"!{filt}"
            stack.extend(sub + suffix for sub in definition.subscopes)
    out.discard("inherit")
    return frozenset(out)


def parse_scopes(expanded: Iterable[str]) -> Parsed:
    """Group expanded scopes by name: ``{"read:users": ALL | {"user=alice", ...}}``."""
    everything: set[str] = set()
    filters: dict[str, set[str]] = {}
    for scope in expanded:
        base, filt = split_scope(scope)
        if filt is None:
            everything.add(base)
        else:
            filters.setdefault(base, set()).add(filt)
    parsed: Parsed = {base: frozenset(found) for base, found in filters.items()}
    parsed.update(dict.fromkeys(everything, ALL))
    return parsed


def unparse_scopes(parsed: Parsed) -> list[str]:
    """The sorted list of scope strings a parsed mapping stands for."""
    out = []
    for base, filters in parsed.items():
        if filters is ALL:
            out.append(base)
        else:
            out.extend(f"{base}!{f}" for f in filters)
    return sorted(out)


GroupsOf = Callable[[str], Iterable[str]]


def _covers(filters: Filters, filt: str, groups_of: GroupsOf) -> bool:
    """Whether ``filters`` grant everything ``filt`` names."""
    if filters is ALL or filt in filters:
        return True
    kind, _, value = filt.partition("=")
    users: list[str] = []
    if kind == "server":
        users.append(value.partition("/")[0])
    elif kind == "user":
        users.append(value)
    for user in users:
        if f"user={user}" in filters:
            return True
        if any(f.startswith("group=") for f in filters):
            if any(f"group={g}" in filters for g in groups_of(user)):
                return True
    return False


def intersect_scopes(a: Parsed, b: Parsed, groups_of: GroupsOf = lambda _u: ()) -> Parsed:
    """What both ``a`` and ``b`` grant; the narrower filter wins where they differ."""
    out: dict[str, Filters] = {}
    for base in a.keys() & b.keys():
        fa, fb = a[base], b[base]
        if fa is ALL:
            out[base] = fb
        elif fb is ALL:
            out[base] = fa
        else:
            kept = {f for f in fa if _covers(fb, f, groups_of)}
            kept |= {f for f in fb if _covers(fa, f, groups_of)}
            if kept:
                out[base] = frozenset(kept)
    return out


def subtract_scopes(a: Parsed, b: Parsed) -> Parsed:
    """What ``a`` grants beyond the exact entries of ``b`` (no filter reasoning: for taking
    a known baseline, such as a user's own ``self`` scopes, out of what they hold)."""
    out: dict[str, Filters] = {}
    for base, filters in a.items():
        other = b.get(base)
        if other is None or (filters is ALL and other is not ALL):
            out[base] = filters
        elif other is not ALL and filters is not ALL:  # the second is true here anyway
            left = frozenset(filters) - other
            if left:
                out[base] = left
    return out


def missing_scopes(held: Parsed, wanted: Parsed, groups_of: GroupsOf = lambda _u: ()) -> list[str]:
    """The scopes of ``wanted`` that ``held`` does not grant, sorted (empty: all held).

    A held ``!user=``/``!group=`` filter grants the users (and servers) it reaches; an
    unfiltered scope is granted only by an unfiltered one.
    """
    out = []
    for base, filters in wanted.items():
        have = held.get(base)
        if have is ALL:
            continue
        if have is None or filters is ALL:
            out.extend(unparse_scopes({base: filters}))
            continue
        out.extend(f"{base}!{f}" for f in filters
                   if not _covers(have, f, groups_of))
    return sorted(out)


@dataclass(frozen=True)
class Target:
    """The resource a request acts on, for matching filters."""

    user: str | None = None
    server: str | None = None  # "user/name"; the default server is "user/"
    group: str | None = None
    service: str | None = None


def scope_allows(filters: Filters | None, target: Target, groups_of: GroupsOf) -> bool:
    """Whether scope ``filters`` (from a parsed mapping) reach ``target``."""
    if filters is None:
        return False
    if filters is ALL:
        return True
    for filt in filters:
        kind, _, value = filt.partition("=")
        if kind == "user" and target.user == value:
            return True
        if kind == "server":
            if target.server is not None:
                if target.server == value:
                    return True
            elif target.user is not None and value.startswith(f"{target.user}/"):
                # access to one of a user's servers lets the caller see that user
                return True
        if kind == "service" and target.service == value:
            return True
        if kind == "group":
            if target.group == value:
                return True
            if target.user is not None and value in set(groups_of(target.user)):
                return True
    return False


def scopes_markdown_table() -> str:
    """The scope reference, rendered for ``docs/scopes.md``."""
    lines = [
        "# Scopes",
        "",
        "Generated from `courtyard/auth/scopes.py` by `python -m courtyard.auth.scopes`; "
        "do not edit by hand.",
        "",
        "A scope may be narrowed with a filter: `!user=NAME`, `!server=USER/SERVER`, "
        "`!group=NAME`, `!service=NAME`; bare `!user`, `!server`, `!service` mean the "
        "owner of the token or role.",
        "",
        "| scope | grants | includes |",
        "|---|---|---|",
    ]
    for name, d in SCOPES.items():
        subs = ", ".join(f"`{s}`" for s in d.subscopes)
        lines.append(f"| `{name}` | {d.description} | {subs} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(scopes_markdown_table(), end="")
