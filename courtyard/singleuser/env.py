"""What the hub tells a single-user server through its environment (the JupyterHub contract).

Pure: :meth:`HubEnv.from_environ` reads a mapping and never imports Jupyter, so it is cheap
and testable on its own. Variable names and meanings are JupyterHub's (see
``docs/singleuser.md``); since JupyterHub 2 the hub passes no command-line arguments.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

DEFAULT_ACTIVITY_INTERVAL = 300
DEFAULT_CACHE_MAX_AGE = 60


class HubEnvError(Exception):
    """The environment lacks something a hub always sets; the server must not start."""


def _flag(environ: Mapping[str, str], key: str, default: bool) -> bool:
    value = environ.get(key)
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() not in ("0", "false", "no", "off")


def _int(environ: Mapping[str, str], key: str, default: int) -> int:
    raw = environ.get(key, "").strip()
    if not raw:
        return default
    try:
        return int(float(raw))
    except ValueError:
        raise HubEnvError(f"${key} must be a number of seconds, not {raw!r}") from None


def _scopes(environ: Mapping[str, str], user: str, server: str) -> tuple[str, ...]:
    for key in ("JUPYTERHUB_OAUTH_ACCESS_SCOPES", "JUPYTERHUB_OAUTH_SCOPES"):
        raw = environ.get(key, "").strip()
        if raw:
            try:
                value = json.loads(raw)
            except ValueError:
                raise HubEnvError(f"${key} must be a JSON list of scopes") from None
            if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
                raise HubEnvError(f"${key} must be a JSON list of scopes")
            return tuple(value)
    return (f"access:servers!server={user}/{server}", f"access:servers!user={user}")


@dataclass(frozen=True)
class HubEnv:
    """One launch's settings, as the hub gave them."""

    api_url: str  # http://127.0.0.1:8081/hub/api
    api_token: str
    client_id: str
    user: str
    server_name: str
    prefix: str  # /user/alice/ (JUPYTERHUB_SERVICE_PREFIX; the server's base_url)
    ip: str
    port: int
    scheme: str
    callback_url: str
    access_scopes: tuple[str, ...]
    activity_url: str = ""
    activity_interval: int = DEFAULT_ACTIVITY_INTERVAL
    base_url: str = "/"  # the hub's site-wide base URL
    host: str = ""  # scheme://host of the public site, for absolute links (subdomains)
    public_url: str = ""
    default_url: str = ""
    root_dir: str = ""
    debug: bool = False
    disable_user_config: bool = False
    allow_token_in_url: bool = False
    allow_websocket_cookie_auth: bool = True
    cache_max_age: int = DEFAULT_CACHE_MAX_AGE
    cookie_options: dict[str, object] = field(default_factory=dict)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> HubEnv:
        environ = os.environ if environ is None else environ
        service_url = environ.get("JUPYTERHUB_SERVICE_URL", "")
        if not service_url:
            raise HubEnvError("$JUPYTERHUB_SERVICE_URL is not set: this command is started by "
                              "the hub (c.Spawner.cmd), which sets it")
        parts = urlsplit(service_url)
        scheme = parts.scheme or "http"
        port = parts.port or (443 if scheme == "https" else 80)
        user = environ.get("JUPYTERHUB_USER", "")
        server = environ.get("JUPYTERHUB_SERVER_NAME", "")
        api_url = environ.get("JUPYTERHUB_API_URL", "http://127.0.0.1:8081/hub/api").rstrip("/")
        prefix = environ.get("JUPYTERHUB_SERVICE_PREFIX") or parts.path or "/"
        if not prefix.endswith("/"):
            prefix += "/"
        try:
            cookie_options = json.loads(environ.get("JUPYTERHUB_COOKIE_OPTIONS") or "{}")
        except ValueError:
            raise HubEnvError("$JUPYTERHUB_COOKIE_OPTIONS must be a JSON object") from None
        return cls(
            api_url=api_url,
            api_token=environ.get("JUPYTERHUB_API_TOKEN") or environ.get("JPY_API_TOKEN", ""),
            client_id=environ.get("JUPYTERHUB_CLIENT_ID", ""),
            user=user,
            server_name=server,
            prefix=prefix,
            ip=parts.hostname or "127.0.0.1",
            port=port,
            scheme=scheme,
            callback_url=environ.get("JUPYTERHUB_OAUTH_CALLBACK_URL") or f"{prefix}oauth_callback",
            access_scopes=_scopes(environ, user, server),
            activity_url=environ.get("JUPYTERHUB_ACTIVITY_URL", ""),
            activity_interval=_int(environ, "JUPYTERHUB_ACTIVITY_INTERVAL",
                                   DEFAULT_ACTIVITY_INTERVAL),
            base_url=environ.get("JUPYTERHUB_BASE_URL") or "/",
            host=environ.get("JUPYTERHUB_HOST", ""),
            public_url=environ.get("JUPYTERHUB_PUBLIC_URL", ""),
            default_url=environ.get("JUPYTERHUB_DEFAULT_URL", ""),
            root_dir=environ.get("JUPYTERHUB_ROOT_DIR", ""),
            debug=_flag(environ, "JUPYTERHUB_DEBUG", False),
            disable_user_config=_flag(environ, "JUPYTERHUB_DISABLE_USER_CONFIG", False),
            allow_token_in_url=_flag(environ, "JUPYTERHUB_ALLOW_TOKEN_IN_URL", False),
            allow_websocket_cookie_auth=_flag(environ, "JUPYTERHUB_ALLOW_WEBSOCKET_COOKIE_AUTH",
                                              True),
            cache_max_age=min(300, _int(environ, "COURTYARD_SINGLEUSER_CACHE_MAX_AGE",
                                        DEFAULT_CACHE_MAX_AGE)),
            cookie_options=cookie_options if isinstance(cookie_options, dict) else {},
        )

    @property
    def hub_prefix(self) -> str:
        """``/hub/`` below the site's base URL."""
        return f"{self.base_url.rstrip('/')}/hub/"

    @property
    def authorize_url(self) -> str:
        """Where browsers go to sign in: the hub's authorize endpoint, as the browser sees it."""
        return f"{self.host}{self.hub_prefix}api/oauth2/authorize"

    @property
    def token_url(self) -> str:
        """Where this server exchanges codes: on the hub's API URL, not through the proxy."""
        return f"{self.api_url}/oauth2/token"

    @property
    def secure(self) -> bool:
        """Whether browsers reach this server over https (then cookies are Secure)."""
        public = self.public_url or self.host
        return public.startswith("https:") or self.scheme == "https"
