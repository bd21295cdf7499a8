"""Rules for names of groups and servers (users' names belong to the Authenticator)."""

from __future__ import annotations

import re

SERVER_NAME = re.compile(r"^[a-z](?:[a-z0-9]|-(?=[a-z0-9])){0,29}$")


def check_group_name(name: object) -> str | None:
    """None when ``name`` is a fine group name, else what is wrong with it."""
    if not isinstance(name, str) or not name:
        return f"group name {name!r} must be a non-empty string"
    if len(name) > 255 or "/" in name or name.strip() != name or not name.isprintable():
        return (f"invalid group name {name!r}: at most 255 printable characters, no '/', no "
                "leading or trailing spaces")
    return None


def check_server_name(name: object, new: bool = True) -> str | None:
    """None when ``name`` is a fine named-server name, else what is wrong with it.

    New names must be slug-like, as in JupyterHub 6: 1-30 lowercase letters, digits and
    single hyphens, starting with a letter and ending with a letter or digit.
    """
    if not isinstance(name, str) or not name:
        return "server name must be a non-empty string"
    if "/" in name:
        return f"invalid server name {name!r}: '/' is not allowed"
    if new and not SERVER_NAME.match(name):
        return (f"invalid server name {name!r}: 1-30 lowercase letters, digits and single "
                "hyphens, starting with a letter and ending with a letter or digit")
    return None
