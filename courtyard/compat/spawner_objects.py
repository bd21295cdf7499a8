"""What a JupyterHub spawner is handed in place of JupyterHub's: its user, a no-op db, its config."""

from __future__ import annotations

import copy
import weakref
from datetime import datetime
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, urlsplit

from traitlets.config import Config

from ..spawners.base import UserInfo

if TYPE_CHECKING:
    from ..auth.base import Authenticator


class ConfiguredHub(Protocol):
    @property
    def config(self) -> Config: ...


_configs: weakref.WeakKeyDictionary[ConfiguredHub, Config] = weakref.WeakKeyDictionary()


def without_courtyard_options(config: Config) -> Config:
    """``config`` without the options Courtyard adds to ``c.Spawner`` and
    ``c.LocalProcessSpawner`` (``allowed_system_users``, ...): JupyterHub's classes would
    warn about each on every spawn."""
    from jupyterhub import spawner as jh

    config = copy.deepcopy(config)
    for name in ("Spawner", "LocalProcessSpawner"):
        if name in config:
            known = set(getattr(jh, name).class_trait_names(config=True))
            section = config[name]
            for key in [k for k in section if k not in known]:
                del section[key]
    return config


def jupyterhub_config(hub: ConfiguredHub) -> Config:
    """:func:`without_courtyard_options` of the hub's config, made once per hub."""
    config = _configs.get(hub)
    if config is None:
        config = _configs[hub] = without_courtyard_options(hub.config)
    return config


class NullSession:
    """``spawner.db``: JupyterHub's shared session is deprecated and Courtyard's database is
    not JupyterHub's, but spawners (batchspawner) still call ``db.commit()``."""

    def commit(self) -> None:
        """Nothing to write: the spawner's state is saved through ``get_state``."""

    def rollback(self) -> None:
        """Nothing was written."""

    def close(self) -> None:
        """Nothing to close."""


class Group(SimpleNamespace):
    """A group as JupyterHub's ``user.groups`` lists them (``g.name``)."""

    name: str


class JupyterHubUser:
    """``spawner.user`` as JupyterHub's ``jupyterhub.user.User`` offers it to spawners."""

    def __init__(self, info: UserInfo, *, id: int, created: datetime | None,
                 last_activity: datetime | None, settings: dict[str, Any], host: str,
                 authenticator: Authenticator | None) -> None:
        self._info = info
        self.id = id
        self.created = created
        self.last_activity = last_activity
        self.settings = settings
        self.authenticator = authenticator
        self.spawners: dict[str, Any] = {}
        self._host = host  # the user's own origin with subdomains, else ""

    # what follows the Courtyard record, so a rename reaches JupyterHub's object too
    @property
    def name(self) -> str:
        return self._info.name

    @property
    def admin(self) -> bool:
        return self._info.admin

    @property
    def groups(self) -> list[Group]:
        return [Group(name=g) for g in self._info.groups]

    @property
    def auth_state(self) -> dict[str, Any] | None:
        return self._info.auth_state

    async def get_auth_state(self) -> dict[str, Any] | None:
        return self._info.auth_state

    @property
    def escaped_name(self) -> str:
        return quote(self.name, safe="@~")

    @property
    def base_url(self) -> str:
        return f"{self.settings['base_url']}user/{self.escaped_name}/"

    @property
    def prefix(self) -> str:
        return self.base_url

    @property
    def host(self) -> str:
        return self._host

    @property
    def url(self) -> str:
        return f"{self._host}{self.base_url}"

    @property
    def proxy_spec(self) -> str:
        return self.base_url

    @property
    def spawner(self) -> Any:
        return self.spawners.get("")

    def server_url(self, server_name: str = "") -> str:
        return self.url + (f"{quote(server_name, safe='')}/" if server_name else "")

    def public_url(self, server_name: str = "") -> str:
        """The server's full URL: on its own host with subdomains, else on ``public_url``'s
        host; "" when neither is set."""
        url = self.server_url(server_name)
        if "://" in url:
            return url
        public = urlsplit(self.settings.get("public_url") or "")
        return f"{public.scheme}://{public.netloc}{url}" if public.netloc else ""

    def progress_url(self, server_name: str = "") -> str:
        hub = self.settings["hub"].base_url
        if server_name:
            return f"{hub}api/users/{self.escaped_name}/servers/{quote(server_name, safe='')}/progress"
        return f"{hub}api/users/{self.escaped_name}/server/progress"

    def __repr__(self) -> str:
        return f"<JupyterHubUser {self.name}>"
