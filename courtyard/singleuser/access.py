"""Whether the scopes the hub reports for a visitor let them use this server.

``GET /hub/api/user`` returns the visitor's scopes with owner-relative filters already
resolved (``access:servers!server=alice/``, ``access:servers!user=alice``). A visitor may
use the server when one scope they hold *covers* one of ``JUPYTERHUB_OAUTH_ACCESS_SCOPES``:
the same scope unfiltered, with the same filter, or ``!user=U`` for a ``!server=U/S`` (a
user's scope covers each of their servers). Group filters cannot be resolved here and cover
nothing; the hub resolves shares to groups into ``!server=`` scopes itself.

This is stricter than JupyterHub's filter intersection, which also lets ``!server=U/other``
through against ``!user=U``, that is access to one of a user's servers opens all of them.
"""

from __future__ import annotations

from collections.abc import Iterable


def _split(scope: str) -> tuple[str, str | None]:
    base, sep, filt = scope.partition("!")
    return base, (filt if sep else None)


def covers(held: str, needed: str) -> bool:
    """Whether holding ``held`` grants ``needed``."""
    held_base, held_filter = _split(held)
    needed_base, needed_filter = _split(needed)
    if held_base != needed_base:
        return False
    if held_filter is None:
        return True
    if needed_filter is None:
        return False
    if held_filter == needed_filter:
        return True
    kind, _, value = held_filter.partition("=")
    needed_kind, _, needed_value = needed_filter.partition("=")
    if kind == "user" and value:
        if needed_kind == "server":
            return needed_value.partition("/")[0] == value
        return needed_kind == "user" and needed_value == value
    return False


def granted(held: Iterable[str], needed: Iterable[str]) -> set[str]:
    """The needed scopes that some held scope covers (empty: no access)."""
    held = list(held)
    return {n for n in needed if any(covers(h, n) for h in held)}
