"""The ``courtyard-singleuser`` Jupyter Server extension: hub sign-in, activity, Lab links.

:class:`SingleUserApp` is the extension that starts the server (as ``jupyter lab`` is for
Lab). Before the server reads any config it gets the hub's settings from the environment
(:func:`server_config`); they are passed as the server's own config, so they win over the
user's config files, while other extensions (JupyterLab) load as usual.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import random
from datetime import UTC, datetime
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from jupyter_server.serverapp import ServerApp
from traitlets import Bool, Integer, Unicode, default
from traitlets.config import Config

from .. import JUPYTERHUB_API_VERSION, __version__
from .auth import HubAuthorizer, HubIdentityProvider
from .env import HubEnv


def server_config(env: HubEnv) -> Config:
    """The ServerApp settings a hub-spawned server must have, from the hub's environment."""
    c = Config()
    s = c.ServerApp
    s.ip = env.ip
    s.port = env.port
    s.port_retries = 0  # the hub chose the port and checks it; another one would be lost
    s.base_url = env.prefix
    s.identity_provider_class = HubIdentityProvider
    s.authorizer_class = HubAuthorizer
    s.allow_remote_access = True  # requests arrive through the proxy with the public Host
    s.trust_xheaders = True
    s.open_browser = False
    s.quit_button = False
    if env.root_dir:
        s.root_dir = os.path.expanduser(env.root_dir)
    if os.geteuid() == 0:
        # the hub decided to run this server as root (LocalProcessSpawner never does for a
        # user other than root); refusing would only make the spawn fail
        s.allow_root = True
    if env.debug:
        s.log_level = "DEBUG"
    c.FileContentsManager.delete_to_trash = False
    return c


def default_url(env: HubEnv) -> str:
    """``JUPYTERHUB_DEFAULT_URL``, else JupyterLab when it is installed."""
    if env.default_url:
        return env.default_url
    if importlib.util.find_spec("jupyterlab") is not None:
        return "/lab"
    return "/tree" if importlib.util.find_spec("notebook") is not None else "/"


def _bool_env(key: str, default: bool) -> bool:
    value = os.environ.get(key)
    return default if value is None or value == "" else value not in ("0", "false", "False")


class SingleUserApp(ExtensionApp):
    """Jupyter Server, signed in through the hub and reporting activity to it."""

    name = "courtyard-singleuser"
    app_name = "courtyard-singleuser"
    description = "A Jupyter server started by a Courtyard or JupyterHub hub."
    version = __version__
    load_other_extensions = _bool_env("JUPYTERHUB_SINGLEUSER_LOAD_OTHER_EXTENSIONS", True)

    activity_interval = Integer(
        help="Seconds between activity reports to the hub (default "
        "$JUPYTERHUB_ACTIVITY_INTERVAL or 300; 0 turns them off).").tag(config=True)
    check_hub = Bool(True, help="At start-up, check that the hub answers; exit if it never "
                     "does (a server nobody can sign in to is no use).").tag(config=True)
    default_url = Unicode(help="Where / sends the browser (default $JUPYTERHUB_DEFAULT_URL, "
                          "else /lab).").tag(config=True)

    @classmethod
    def get_extension_package(cls) -> str:
        return "courtyard.singleuser"

    @classmethod
    def make_serverapp(cls, **kwargs: Any) -> ServerApp:
        """The ServerApp, created with the hub's settings as its own config."""
        env = HubEnv.from_environ()
        config = server_config(env)
        if isinstance(kwargs.get("config"), Config):
            config.merge(kwargs["config"])
        kwargs["config"] = config
        extensions = dict(kwargs.get("jpserver_extensions") or {})
        if not _bool_env("COURTYARD_SINGLEUSER_NOTEBOOK_SHIM", False):
            # notebook_shim only serves classic-notebook (<7) server extensions and config;
            # linking it imports IPython and costs about a third of the start-up time
            extensions.setdefault("notebook_shim", False)
        kwargs["jpserver_extensions"] = extensions
        return super().make_serverapp(**kwargs)

    @default("activity_interval")
    def _default_interval(self) -> int:
        return self.env.activity_interval

    @default("default_url")
    def _default_default_url(self) -> str:
        return default_url(self.env)

    @property
    def env(self) -> HubEnv:
        provider = getattr(self.serverapp, "identity_provider", None)
        if isinstance(provider, HubIdentityProvider):
            return provider.hub_env
        return HubEnv.from_environ()

    def _server(self) -> ServerApp:
        """The server this extension runs in: jupyter_server links it before any hook here."""
        if self.serverapp is None:
            raise RuntimeError("the extension is not linked to a Jupyter server")
        return self.serverapp

    def _hub_provider(self) -> HubIdentityProvider:
        provider = self._server().identity_provider
        if not isinstance(provider, HubIdentityProvider):
            # a user config replaced the identity provider: serving without the hub's
            # sign-in would let anyone in, so refuse to start
            raise RuntimeError("ServerApp.identity_provider_class must stay "
                               "HubIdentityProvider under a hub")
        return provider

    def initialize_settings(self) -> None:
        app = self._server()
        provider = self._hub_provider()
        settings = app.web_app.settings
        settings["page_config_hook"] = provider.page_config_hook
        headers = settings.setdefault("headers", {})
        headers["X-JupyterHub-Version"] = JUPYTERHUB_API_VERSION
        env = provider.hub_env
        app.jinja_template_vars.setdefault("hub_control_panel_url",
                                           f"{env.host}{env.hub_prefix}home")
        self._tasks: list[asyncio.Task[None]] = []
        self._last_sent: datetime | None = None

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        if self.check_hub:
            self._tasks.append(asyncio.ensure_future(self._check_hub()))
        if self.activity_interval > 0 and self.env.activity_url:
            self._tasks.append(asyncio.ensure_future(self._keep_activity_updated()))
        else:
            self.log.info("Not reporting activity to the hub")

    async def stop_extension(self) -> None:
        for task in getattr(self, "_tasks", []):
            task.cancel()

    async def _check_hub(self) -> None:
        provider = self._hub_provider()
        try:
            version = await provider.hub.hub_version()
        except Exception as e:
            self.log.critical("The hub at %s does not answer (%s); stopping", self.env.api_url, e)
            self._server().stop()
            return
        ours = JUPYTERHUB_API_VERSION.split(".")[:2]
        if version and version.split(".")[:2] != ours:
            self.log.warning("The hub speaks JupyterHub API %s; this server expects %s",
                             version, JUPYTERHUB_API_VERSION)

    async def _keep_activity_updated(self) -> None:
        while True:
            try:
                await self.notify_activity()
            except Exception:
                self.log.exception("Error reporting activity to the hub")
            # jitter keeps many servers started together from reporting together
            await asyncio.sleep(self.activity_interval * random.uniform(0.9, 1.1))

    async def notify_activity(self) -> bool:
        """Report the server's last activity if it moved since the last report."""
        # jupyter_server leaves last_activity unannotated
        last = self._server().web_app.last_activity()  # type: ignore[no-untyped-call]
        if last is None:
            return False
        if last.tzinfo is None:
            last = last.replace(tzinfo=UTC)
        if self._last_sent is not None and last <= self._last_sent:
            return False
        if await self._hub_provider().hub.post_activity(last):
            self._last_sent = last
            return True
        return False


main = SingleUserApp.launch_instance
