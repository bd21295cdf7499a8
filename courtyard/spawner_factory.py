"""Building a server's spawner: the configured class, the hub's config, what it is told of the hub."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from . import config
from .errors import SpawnError
from .spawners.base import HubInfo, Spawner, UserInfo, only_system_accounts, uses_system_accounts

if TYPE_CHECKING:
    from .compat.spawner import CourtyardHub
    from .lifecycle_hub import Hub


def make_spawner(hub: Hub, user: UserInfo, server: str) -> Spawner:
    """A new spawner of the configured class for ``user``'s server ``server``."""
    cls = hub.spawner_class
    if cls is None:
        raise SpawnError("no spawner is configured (c.JupyterHub.spawner_class)")
    # a JupyterHub spawner's adapter (courtyard.compat) builds JupyterHub's objects from the
    # hub; the annotation has mypy check the hub against what the adapter reads of it
    extra: dict[str, CourtyardHub] = (
        {"courtyard_hub": hub} if hasattr(cls, "courtyard_hub") else {})
    return config.build_configurable(
        cls, hub.config, **extra, user=user, name=server, hub=hub_info(hub),
        server_prefix=hub.server_routespec(user.name, server),
        server_host=hub.origins.user_host(user.name),
        log=logging.getLogger("courtyard.spawner"))


def hub_info(hub: Hub) -> HubInfo:
    """What a spawner is told of the hub: where its API and pages are, its data directory,
    and whether servers run as system accounts."""
    opts = hub.options
    public = urlsplit(opts.public_url) if opts.public_url else None
    # the hub's origin, for links and OAuth from servers (the subdomain host itself)
    host = f"{public.scheme}://{public.netloc}" if public else opts.subdomain_host
    return HubInfo(api_url=hub.api_url, base_url=opts.base_url, host=host,
                   data_dir=opts.data_files_path,
                   system_accounts=uses_system_accounts(hub.authenticator),
                   system_accounts_only=only_system_accounts(hub.authenticator))
