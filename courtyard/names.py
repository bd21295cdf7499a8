"""Rules for names of groups and servers, and the floor every user name must clear.

Users' names belong to the Authenticator (``validate_username``, ``username_pattern``), but
whatever it allows, :func:`check_user_name` refuses names that are path tricks: a user
name becomes a URL segment, a file name and a system account name.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

SERVER_NAME = re.compile(r"^[a-z](?:[a-z0-9]|-(?=[a-z0-9])){0,29}$")


def check_user_name(name: str) -> str | None:
    """None when ``name`` is safe in paths, else what is wrong with it.

    Refused: ``.`` and ``..``, ``/``, and control characters (NUL included), also once
    percent-decoded, however many times (``%2e%2e``, ``%252f``): a name goes through
    URLs, and a layer that decodes it again must not find a path in it.
    """
    text = name
    for _ in range(8):  # 8 rounds undo any encoding a real client or proxy applies
        if text in (".", ".."):
            return "'.' and '..' are not names"
        if "/" in text:
            return "'/' is not allowed"
        if not text.isprintable():
            return "control characters are not allowed"
        decoded = unquote(text)
        if decoded == text:
            return None
        text = decoded
    return "too many layers of percent-encoding"


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
