"""The environment the hub gives every single-user server (JupyterHub's ``get_env``).

The names and meanings are the wire contract ``jupyterhub-singleuser`` reads; see
``docs/spawners.md``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from .base import Spawner


class _KeepUnknown(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def format_template(template: str, username: str, servername: str = "") -> str:
    """``{username}``, ``{servername}`` and ``%U`` expanded; other braces left alone."""
    text = template.replace("%U", username)
    try:
        return text.format_map(_KeepUnknown(username=username, servername=servername))
    except (ValueError, IndexError):  # stray braces: leave the text as written
        return text


def access_scopes(username: str, server: str) -> list[str]:
    """Scopes a visitor needs to use this server (JUPYTERHUB_OAUTH_ACCESS_SCOPES)."""
    return [f"access:servers!server={username}/{server}", f"access:servers!user={username}"]


def server_env(spawner: Spawner) -> dict[str, str]:
    """The hub's variables for one launch; ``get_env`` adds env_keep and environment."""
    user, server, hub = spawner.user.name, spawner.name, spawner.hub
    prefix = spawner.server_prefix
    public = spawner.server_host or hub.host  # the server's origin, as browsers see it
    access = json.dumps(access_scopes(user, server))
    env = {
        "JUPYTERHUB_API_TOKEN": spawner.api_token,
        "JPY_API_TOKEN": spawner.api_token,
        "JUPYTERHUB_CLIENT_ID": spawner.oauth_client_id,
        "JUPYTERHUB_HOST": hub.host,
        # a full URL on the server's own origin with subdomains (the hub is elsewhere)
        "JUPYTERHUB_OAUTH_CALLBACK_URL": f"{spawner.server_host}{prefix}oauth_callback",
        "JUPYTERHUB_OAUTH_ACCESS_SCOPES": access,
        "JUPYTERHUB_OAUTH_SCOPES": access,
        "JUPYTERHUB_OAUTH_CLIENT_ALLOWED_SCOPES": json.dumps(
            list(spawner.oauth_client_allowed_scopes)),
        "JUPYTERHUB_USER": user,
        "JUPYTERHUB_SERVER_NAME": server,
        "JUPYTERHUB_API_URL": hub.api_url,
        "JUPYTERHUB_ACTIVITY_URL": f"{hub.api_url}/users/{quote(user, safe='@~')}/activity",
        "JUPYTERHUB_BASE_URL": hub.base_url,
        "JUPYTERHUB_SERVICE_PREFIX": prefix,
        "JUPYTERHUB_SERVICE_URL": f"http://{spawner.ip or '127.0.0.1'}:{spawner.port}{prefix}",
        "JUPYTERHUB_PUBLIC_URL": f"{public}{prefix}" if public else "",
        "JUPYTERHUB_PUBLIC_HUB_URL": f"{hub.host}{hub.base_url}hub/" if hub.host else "",
        "JUPYTERHUB_COOKIE_HOST_PREFIX_ENABLED": "0",
    }
    optional: dict[str, Any] = {
        "JUPYTERHUB_ROOT_DIR": spawner.format_string(spawner.notebook_dir),
        "JUPYTERHUB_DEFAULT_URL": spawner.format_string(spawner.default_url),
        "JUPYTERHUB_DEBUG": "1" if spawner.debug else "",
        "JUPYTERHUB_DISABLE_USER_CONFIG": "1" if spawner.disable_user_config else "",
        "MEM_LIMIT": spawner.mem_limit,
        "MEM_GUARANTEE": spawner.mem_guarantee,
        "CPU_LIMIT": spawner.cpu_limit,
        "CPU_GUARANTEE": spawner.cpu_guarantee,
    }
    env.update({k: str(v) for k, v in optional.items() if v not in (None, "")})
    return env
