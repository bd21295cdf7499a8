"""Built-in roles, and the checks that keep roles from config and the API well-formed."""

from __future__ import annotations

import re
from typing import Any, Final

from ..errors import BadRequest
from .scopes import validate_scopes

ADMIN_SCOPES: Final = (
    "admin-ui", "admin:users", "admin:servers", "admin:services", "tokens", "admin:groups",
    "list:services", "read:services", "read:hub", "proxy", "shutdown", "access:services",
    "access:servers", "read:roles", "read:metrics", "shares", "admin:roles",
)

DEFAULT_ROLES: Final[dict[str, dict[str, Any]]] = {
    "user": {"description": "Standard user privileges", "scopes": ["self"]},
    "admin": {"description": "Elevated privileges (can do anything)", "scopes": list(ADMIN_SCOPES)},
    "server": {
        "description": "Post activity only",
        "scopes": ["users:activity!user", "access:servers!server"],
    },
    "token": {"description": "Token with same permissions as its owner", "scopes": ["inherit"]},
}

ROLE_NAME = re.compile(r"^[a-z][a-z0-9\-_~.]{1,253}[a-z0-9]$")
ROLE_KEYS: Final = {"name", "description", "scopes", "users", "groups", "services"}


def check_role(spec: Any, custom_scopes: tuple[str, ...] = ()) -> dict[str, Any]:
    """Validate a role definition (from config or the API); raise BadRequest naming the problem."""
    if not isinstance(spec, dict):
        raise BadRequest(f"a role must be a JSON object, not {type(spec).__name__}")
    unknown = set(spec) - ROLE_KEYS
    if unknown:
        raise BadRequest(f"unknown role field(s): {', '.join(sorted(unknown))}")
    name = spec.get("name")
    if not isinstance(name, str) or not ROLE_NAME.match(name):
        raise BadRequest(
            f"invalid role name {name!r}: 3-255 characters, lowercase letters, digits and "
            "-_~. starting with a letter and ending with a letter or digit"
        )
    if not isinstance(spec.get("description", ""), str):
        raise BadRequest("role description must be a string")
    role_scopes = spec.get("scopes", [])
    if not isinstance(role_scopes, list):
        raise BadRequest("role scopes must be a list of strings")
    problems = validate_scopes(role_scopes, custom_scopes)
    if problems:
        raise BadRequest(f"role {name}: " + "; ".join(problems))
    for key in ("users", "groups", "services"):
        members = spec.get(key, [])
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise BadRequest(f"role {name}: {key} must be a list of names")
    return spec
