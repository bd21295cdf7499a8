"""The composition root: configuration -> database -> roles -> users -> services -> tokens -> web.

``Hub.initialize`` reads as the start-up order; each ``init_*`` step is small and lives in
:mod:`courtyard.bootstrap` when it touches the database.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request
from traitlets.config import Config

from . import bootstrap
from .auth.base import Authenticator, check_hooks
from .auth.identity import Identity, ScopeCache, authenticate_token
from .config import build_configurable, find_config_file, load_config_file, resolve_class, unknown_options
from .db.lease import Lease, claim_database
from .db.models import Server, User
from .db.records import RecordCache
from .db.session import init_db
from .errors import ConfigError
from .files import secure_data_dir, write_private
from .lifecycle import Lifecycle
from .metrics import Metrics
from .oauth import provider as oauth_provider
from .options import Courtyard
from .subdomains import Origins, resolve_hook, warn_shared_origin

if TYPE_CHECKING:
    from .api.dispatch import ApiDispatcher
    from .proxy.base import Proxy
    from .spawners.base import Spawner

log = logging.getLogger("courtyard")


def _uvicorn_server_class() -> type:
    """uvicorn's Server without its own signal handling (imported with uvicorn, on serve).

    uvicorn's ``Server.serve`` takes SIGTERM and SIGINT for itself (``capture_signals``)
    and closes its listening socket at once; the hub's API would then be gone while servers
    that are stopping still call it. The hub handles both signals (``Hub.serve``) and tells
    uvicorn to exit only once everything else has stopped.
    """
    import uvicorn

    class ApiServer(uvicorn.Server):
        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            """uvicorn's start on the one socket the hub bound, served through
            :class:`~courtyard.listener.Listener` (every waiting connection when it takes
            one, where a uvloop server takes one per loop iteration)."""
            from .listener import Listener

            assert sockets is not None and len(sockets) == 1, "serve() passes its socket"
            await self.lifespan.startup()
            config, state = self.config, self.server_state

            def protocol() -> asyncio.Protocol:
                return config.http_protocol_class(  # type: ignore[call-arg]
                    config=config, server_state=state, app_state=self.lifespan.state)

            listener = Listener(sockets[0], protocol, ssl=config.ssl, backlog=config.backlog)
            self.servers = [await listener.start()]  # type: ignore[list-item]
            self.started = True

    return ApiServer


class Hub:
    """One running hub: its options, database, components and caches."""

    def __init__(self, config: Config | None = None, config_file: Path | None = None) -> None:
        self.config = config if config is not None else Config()
        self.config_file = config_file
        self.options: Courtyard = build_configurable(Courtyard, self.config)
        self.origins = Origins(self.options.subdomain_host,
                               resolve_hook(self.options.subdomain_hook), self.options.base_url)
        self.scope_cache = ScopeCache()
        self.metrics = Metrics()  # what /hub/metrics shows (courtyard/metrics.py)
        self.lifecycle = Lifecycle(self)
        self.hub_bound: tuple[str, int] | None = None  # where serve() listens, once it does
        self.service_specs: dict[str, dict[str, Any]] = {}
        self.service_pids: dict[str, int] = {}
        self.session: sessionmaker[Session]
        self.authenticator: Authenticator
        self.spawner_class: type[Spawner] | None = None
        self.proxy: Proxy | None = None
        self.proxy_starting: asyncio.Event | None = None  # set once serve() has started it
        self.route_lock = asyncio.Lock()
        self.asgi: ApiDispatcher
        self.shutdown_event = asyncio.Event()
        self.shutdown_options: dict[str, bool] = {}
        self.lease: Lease | None = None  # held while serving (courtyard/db/lease.py)
        self.init_db_anew = False  # --init-db: a new database over an empty file is wanted

    # -- start-up ----------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | None, overrides: dict[str, Any] | None = None) -> Hub:
        """Load the config file (``courtyard_config.py`` by default) plus CLI overrides."""
        config_file = find_config_file(path)
        config = load_config_file(config_file)
        for key, value in (overrides or {}).items():
            if value is not None:
                config.Courtyard[key] = value
        return cls(config, config_file)

    def initialize(self, serving: bool = False) -> None:
        """Everything up to serving: the order here is the architecture. A hub that will
        serve claims the database first; commands that only use it (``token``) do not."""
        self.init_logging()
        self.init_components()
        self.warn_unknown_options()
        secure_data_dir(Path(self.options.data_files_path))  # owner-only, as the database
        log.info("Data directory: %s (c.JupyterHub.data_files_path)",
                 os.path.abspath(self.options.data_files_path))
        self.session = init_db(self.options.db_url, self.upgrade_command(),
                               None if self.init_db_anew else self.earlier_run())
        if serving:  # the one hub on this database, or refused naming the one that is
            self.lease = claim_database(self.options.db_url, self.public_url)
        self.records = RecordCache(self.session)
        self.scope_cache.watch(self.session)
        with self.session() as db:  # slow hashes run in threads while the app is built
            token_checks = bootstrap.check_config_tokens(self, db)
        self.cookie_secret = self.load_cookie_secret()
        from .web.asgi import build_app

        self.asgi = build_app(self)
        with self.session() as db:
            bootstrap.init_roles(self, db)
            bootstrap.init_users(self, db)
            bootstrap.init_groups(self, db)
            bootstrap.init_services(self, db)
            bootstrap.init_api_tokens(self, db, token_checks)
            oauth_provider.sync_service_clients(self, db)
            bootstrap.assign_config_roles(self, db)
            self.authenticator.startup(self, db)
            warn_shared_origin(self, db)
            db.commit()

    def init_logging(self) -> None:
        level = logging.DEBUG if self.options.debug else self.options.log_level
        logging.basicConfig(level=level, format="[%(levelname).1s %(asctime)s %(name)s] "
                            "%(message)s", datefmt="%H:%M:%S")
        logging.getLogger("courtyard").setLevel(level)
        # one line per proxy API call or readiness probe is noise, not news
        logging.getLogger("httpx").setLevel(logging.DEBUG if self.options.debug else logging.WARNING)

    def init_components(self) -> None:
        opts = self.options
        if isinstance(opts.authenticator_class, list | tuple):
            from .auth.multi import build_multi

            self.authenticator = build_multi(opts.authenticator_class, self.config)
        else:
            auth_cls = resolve_class("authenticator", opts.authenticator_class, Authenticator)
            self.authenticator = build_configurable(auth_cls, self.config)
        check_hooks(self.authenticator)  # an async validate_username would pass everyone
        from .spawners.base import Spawner

        self.spawner_class = resolve_class("spawner", opts.spawner_class, Spawner)
        build_configurable(self.spawner_class, self.config)  # a bad c.Spawner.* value fails here, not later

    def component_classes(self) -> list[type]:
        classes: list[type] = [Courtyard, *self.authenticator.component_classes()]
        if self.spawner_class is not None:
            classes.append(self.spawner_class)
            # a JupyterHub spawner's own classes read c.Spawner.* etc. (courtyard.compat)
            classes += getattr(self.spawner_class, "config_classes", list)()
        # every proxy class: a jupyterhub_config.py often sets c.ConfigurableHTTPProxy.* even
        # when it is not the proxy in use, and that is not a mistake worth a warning
        from .proxy.rest import BuiltinProxy, ConfigurableHTTPProxy

        classes += [BuiltinProxy, ConfigurableHTTPProxy]
        if self.proxy is not None:
            classes.append(type(self.proxy))
        return classes

    def warn_unknown_options(self) -> list[str]:
        problems = unknown_options(self.config, self.component_classes())
        for problem in problems:
            log.warning("%s", problem)
        return problems

    def earlier_run(self) -> Path | None:
        """A file an earlier hub run left in the data directory, if any: the database is
        then expected to hold data, and an empty database file means it was lost."""
        from .oauth.keys import KEY_FILE

        data = Path(self.options.data_files_path)
        for path in (data / self.options.cookie_secret_file, data / KEY_FILE):
            if path.is_file():
                return path
        return None

    def database_lost(self) -> None:
        """Another hub took the database over (this one stalled past its lease): stop, and
        leave the servers running for it."""
        self.shutdown_options["servers"] = False
        self.shutdown_event.set()

    def upgrade_command(self) -> str:
        cmd = "courtyard upgrade-db"
        if self.config_file is not None:
            cmd += f" -f {self.config_file}"
        return cmd

    def load_cookie_secret(self) -> bytes:
        """The secret signing cookies: from config, else from a 0600 file, made when missing."""
        secret = self.options.cookie_secret
        if secret:
            return bytes.fromhex(secret) if isinstance(secret, str) else bytes(secret)
        path = Path(self.options.data_files_path) / self.options.cookie_secret_file
        if path.exists():
            if path.stat().st_mode & 0o077:
                raise ConfigError(f"cookie secret file {path} is readable by others; "
                                  f"run: chmod 600 {path}")
            try:
                value = bytes.fromhex(path.read_text().strip())
            except ValueError:
                value = b""
            if not value:  # an empty key would sign every cookie with nothing
                raise ConfigError(f"cookie secret file {path} does not hold a hex secret; "
                                  "delete it to have a new one made")
            return value
        value = secrets.token_bytes(32)
        write_private(path, value.hex())
        log.info("Wrote a new cookie secret to %s", path)
        return value

    # -- requests ----------------------------------------------------------------------------
    def identify(self, request: Request, open_db: Callable[[], Session]) -> Identity | None:
        """The caller of an API request: its ``Authorization: token|Bearer`` header, else the
        login cookie (with XSRF and Content-Type checks). A token seen before needs no
        database, so ``open_db`` is called only when one is needed."""
        header = request.headers.get("authorization")
        if not header:
            from .auth.session import identify_cookie

            return identify_cookie(self, request, open_db())
        scheme, _, secret = header.partition(" ")
        secret = secret.strip()
        if scheme.lower() not in ("token", "bearer") or not secret:
            return None
        return authenticate_token(open_db, secret, self.scope_cache,
                                  self.options.activity_resolution)

    def read_auth_state(self, user: User) -> dict[str, Any] | None:
        """Auth state is kept only when the authenticator enables it (encrypted at rest)."""
        from .auth.login import read_auth_state

        return read_auth_state(self, user)

    def write_auth_state(self, user: User, state: dict[str, Any] | None) -> None:
        from .auth.login import write_auth_state

        write_auth_state(self, user, state)

    async def stop_user_servers(self, user: User) -> None:
        """Stop every running server of a user (before deleting them)."""
        for server in user.servers:
            if server.url is not None or self.lifecycle.pending(user.name, server.name):
                await self.stop_server(user, server)

    async def stop_server(self, user: User, server: Server) -> None:
        """Stop one server (or cancel its pending spawn) and wait until it is stopped."""
        await self.lifecycle.stop_and_wait(user.name, server.name)

    def release_deleted_user(self, user: User) -> bool:
        """What ``DELETE /hub/api/users/{name}`` does before the row goes, for a user that
        ``delete_invalid_users`` deletes at start: ``Spawner.delete_forever`` of each server
        (as root the system account leaves ``system_users_group``, or the next user of the
        name would be handed it and its files) and a JupyterHub plugin's ``delete_user``.

        Done before the hub serves, to its end: ``initialize()`` is sync (and may run under
        a caller's loop), so on a loop of its own in a thread. False when it failed (logged):
        the user is kept, and tried again at the next start."""
        from .compat.auth import run_to_end
        from .errors import error_reason
        from .spawners.base import UserInfo

        deleted = getattr(self.authenticator, "user_deleted", None)

        async def release(info: UserInfo, servers: list[str]) -> None:
            await self.lifecycle.delete_forever(info, servers)
            if deleted is not None:  # as the API calls it
                await deleted(user)

        try:  # the row is read here: the thread only runs the hooks
            info = UserInfo(user.name, bool(user.admin), [g.name for g in user.groups],
                            self.read_auth_state(user))
            run_to_end(release(info, ["", *(s.name for s in user.servers)]))
        except Exception as e:
            log.error("User %s is kept, not deleted: releasing what is theirs failed (%s); "
                      "the hub tries again at its next start", user.name, error_reason(e))
            return False
        return True

    # -- proxy routes (the proxy subsystem is wired in by Hub.start_proxy) ---------------------
    def server_routespec(self, username: str, server_name: str) -> str:
        from urllib.parse import quote

        spec = f"{self.options.base_url}user/{quote(username, safe='@~')}/"
        return spec + (f"{quote(server_name, safe='')}/" if server_name else "")

    def server_proxy_spec(self, username: str, server_name: str) -> str:
        """The proxy's routespec of a server: its path, below the user's host with
        subdomains (``alice.hub.example.org/user/alice/``)."""
        spec = self.server_routespec(username, server_name)
        return self.origins.user_domain(username) + spec if self.origins.enabled else spec

    def server_url(self, username: str, server_name: str) -> str:
        """Where a browser opens a server: its path, on the user's own origin with
        subdomains."""
        return self.origins.user_host(username) + self.server_routespec(username, server_name)

    async def ready_proxy(self) -> Proxy | None:
        """The proxy, once serve() has started it and synced its routes (the API answers
        before that: a cold proxy takes a while to start); None without one."""
        if self.proxy_starting is not None:
            await self.proxy_starting.wait()
        return self.proxy

    async def add_server_route(self, username: str, server_name: str, target: str) -> None:
        """Route ``/user/NAME[/SERVER]/`` to a ready server."""
        if (proxy := await self.ready_proxy()) is not None:
            with self.metrics.timed(self.metrics.proxy_add):
                await proxy.add_route(self.server_proxy_spec(username, server_name), target,
                                      {"user": username, "server_name": server_name})

    async def remove_server_route(self, username: str, server_name: str) -> None:
        if (proxy := await self.ready_proxy()) is not None:
            with self.metrics.timed(self.metrics.proxy_delete):
                await proxy.delete_route(self.server_proxy_spec(username, server_name))

    @property
    def public_url(self) -> str:
        opts = self.options
        if opts.public_url:
            return opts.public_url
        if opts.subdomain_host:  # the hub lives on the subdomain host itself
            return f"{opts.subdomain_host}{opts.base_url}"
        return self.public_bind_url

    @property
    def public_bind_url(self) -> str:
        """Where the proxy listens: bind_url, else ip:port with the base URL."""
        opts = self.options
        if opts.bind_url:
            return opts.bind_url
        scheme = "https" if opts.ssl_cert else "http"
        return f"{scheme}://{opts.ip}:{opts.port}{opts.base_url}"

    @property
    def hub_url(self) -> str:
        """Where the proxy, servers and services reach the hub (scheme://host:port, no path):
        hub_connect_url's origin, else where the hub listens (a wildcard as loopback)."""
        if self.options.hub_connect_url:
            from urllib.parse import urlsplit

            parts = urlsplit(self.options.hub_connect_url)
            return f"{parts.scheme}://{parts.netloc}"
        host, port = self.hub_bound or self.hub_bind
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "[::1]"
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    @property
    def api_url(self) -> str:
        """Where servers and services reach the hub's API: under hub_connect_url (its own
        ``/hub`` path kept), else under :attr:`hub_url` and the base URL."""
        opts = self.options
        if opts.hub_connect_url:
            url = opts.hub_connect_url.rstrip("/")
            return f"{url}/api" if url.endswith("/hub") else f"{url}{opts.base_url}hub/api"
        return f"{self.hub_url}{opts.base_url}hub/api"

    @property
    def hub_bind(self) -> tuple[str, int]:
        opts = self.options
        if opts.hub_bind_url:
            from urllib.parse import urlsplit

            parts = urlsplit(opts.hub_bind_url)
            return parts.hostname or "127.0.0.1", parts.port or 8081
        return opts.hub_ip, opts.hub_port

    @staticmethod
    def bind_socket(host: str, port: int) -> socket.socket:
        """Bind the hub's port before anything starts, so its URL is known (port 0 works)."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            sock.close()
            raise ConfigError(f"the hub cannot listen on {host}:{port} ({e.strerror}); set "
                              "c.JupyterHub.hub_port or --hub-port") from None
        sock.listen(2048)
        sock.setblocking(False)
        return sock

    # -- running -----------------------------------------------------------------------------
    def _on_signal(self, sig: int) -> None:
        """SIGTERM/SIGINT: shut down in order (serve() closes the API last)."""
        if not self.shutdown_event.is_set():
            log.info("Received %s", signal.Signals(sig).name)
        self.shutdown_event.set()

    async def serve(self) -> None:
        """Serve the hub until SIGTERM/SIGINT or POST /hub/api/shutdown."""
        import uvicorn

        from .web.protocol import HeadDeadlineProtocol

        self.authenticator.on_serve(self)
        host, port = self.hub_bind
        server = _uvicorn_server_class()(uvicorn.Config(
            self.asgi, host=host, port=port, log_level="warning", access_log=False,
            http=HeadDeadlineProtocol, loop="none", lifespan="off", server_header=False,
            proxy_headers=False,  # X-Forwarded-*: the hub's own rules (web/forwarded.py)
            timeout_graceful_shutdown=5,
        ))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        sock = self.bind_socket(host, port)
        self.hub_bound = (host, sock.getsockname()[1])
        if self.lease is not None:  # renewed while serving; asyncio.run ends it
            self.lease_task = asyncio.create_task(self.lease.keep(self.database_lost))
        from . import routing
        from .services.managed import start_managed_services

        if self.options.proxy_class not in (None, "", "none"):
            self.proxy_starting = asyncio.Event()
        await self.lifecycle.recovery.start()  # find servers a previous run left, before serving
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.005)
        if task.done():
            try:
                task.result()
            except SystemExit:
                pass
            raise ConfigError(f"the hub cannot listen on {host}:{port} (in use?); set "
                              "c.JupyterHub.hub_port or --hub-port")
        log.info("Courtyard hub API at %s", self.api_url)
        # The API answers while the proxy starts; route changes wait for it (ready_proxy)
        sync_task = None
        if self.proxy_starting is not None:
            try:
                await routing.start_proxy(self)
                await routing.sync_routes(self)
            except BaseException:
                server.should_exit = True
                await task
                raise
            finally:
                self.proxy_starting.set()
            sync_task = asyncio.create_task(routing.keep_routes_in_sync(self))
            log.info("Courtyard is at %s", self.public_url)
        try:
            managed = await start_managed_services(self)
            await self.shutdown_event.wait()
            log.info("Shutting down")
            if sync_task is not None:
                sync_task.cancel()
            for service in managed:
                await service.stop()
            await self.lifecycle.shutdown(
                self.shutdown_options.get("servers", self.options.cleanup_servers))
            if self.shutdown_options.get("proxy") and self.proxy is not None:
                await self.proxy.stop()
            await routing.stop_proxy(self)
        finally:  # the API closes last: servers and services that are stopping still reach it
            server.should_exit = True
            await task
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
