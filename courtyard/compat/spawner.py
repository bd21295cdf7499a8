"""JupyterHub's Spawner contract on Courtyard's lifecycle.

A subclass of ``jupyterhub.spawner.Spawner`` (a spawn-form ``LocalProcessSpawner``,
``wrapspawner.ProfilesSpawner``, a site's own) is given the objects JupyterHub gives it
(``user``, ``hub``, ``server``, ``orm_spawner``, ``db``, ``authenticator``, ``api_token``,
``oauth_client_id``, ...; the user and ``db`` from :mod:`courtyard.compat.spawner_objects`)
and is driven in JupyterHub's order: ``clear_state``, the auth state hook, group overrides,
``apply_user_options``, ``pre_spawn_hook``, ``start``; then ``poll``, ``stop`` and
``post_stop_hook``. Courtyard's lifecycle only sees
:class:`JupyterHubSpawner`, a Courtyard :class:`~courtyard.spawners.base.Spawner` that holds
the JupyterHub object; Courtyard's own contract stays as it is.

JupyterHub's ``LocalProcessSpawner`` (and anything a wrapper starts with it) switches to the
system user of the hub user's name. As root that account is held to Courtyard's account
policy (:mod:`courtyard.spawners.accounts`) before the start, and the started process's ids
are checked after it: no server runs as root or a system account this way either.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import AsyncIterator, Awaitable
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import urlsplit

from traitlets import Any as AnyTrait, observe

from .. import pidfd
from ..errors import SpawnError
from ..spawners.base import ProgressEvent, Spawner, UserInfo
from ..spawners.credentials import client_id
from . import engines
from .spawner_objects import JupyterHubUser, NullSession, jupyterhub_config, without_courtyard_options

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker
    from traitlets.config import Config

    from ..auth.base import Authenticator
    from ..db.writes import Writes
    from ..spawners.local import LocalProcessSpawner


class SiteOptions(Protocol):
    @property
    def base_url(self) -> str: ...
    @property
    def subdomain_host(self) -> str: ...
    @property
    def public_url(self) -> str: ...


class ServerWrites(Protocol):
    @property
    def write(self) -> Writes: ...


class CourtyardHub(Protocol):
    """What the adapter needs of the hub (:attr:`JupyterHubSpawner.courtyard_hub`): where
    the site is, the database (the user's row), the config and authenticator JupyterHub's
    spawner is handed, and the lifecycle's writes (a launch's token, a batch job's state)."""

    @property
    def options(self) -> SiteOptions: ...
    @property
    def session(self) -> sessionmaker[Session]: ...
    @property
    def config(self) -> Config: ...
    @property
    def authenticator(self) -> Authenticator: ...
    @property
    def lifecycle(self) -> ServerWrites: ...


def is_jupyterhub_spawner(cls: object) -> bool:
    """Whether ``cls`` is a subclass of ``jupyterhub.spawner.Spawner`` (without importing
    jupyterhub: a config that does not use it never loads it)."""
    return isinstance(cls, type) and any(
        k.__module__ == "jupyterhub.spawner" and k.__name__ == "Spawner" for k in cls.__mro__)


def adapter_for(cls: type) -> type[JupyterHubSpawner]:
    """A Courtyard spawner class running ``cls``, named like it (for logs and ``/info``)."""
    return type(cls.__name__, (JupyterHubSpawner,), {
        "jupyterhub_class": cls, "__module__": cls.__module__,
        "__doc__": f"{cls.__module__}.{cls.__qualname__} on Courtyard's lifecycle."})


T = TypeVar("T")


async def _maybe_await(value: T | Awaitable[T]) -> T:
    return await value if inspect.isawaitable(value) else value


class JupyterHubSpawner(Spawner):
    """Runs a ``jupyterhub.spawner.Spawner`` subclass (:attr:`jupyterhub_class`) on the
    lifecycle; :func:`adapter_for` makes one such class per configured JupyterHub class."""

    jupyterhub_class: type = type(None)
    # a CourtyardHub: mypy checks the hub against it where courtyard.spawner_factory sets it
    courtyard_hub = AnyTrait(None, allow_none=True, help="The Courtyard hub (set by the "
                             "lifecycle): the database, the options and the authenticator.")

    @classmethod
    def config_classes(cls) -> list[type]:
        """The JupyterHub classes whose ``c.Class.*`` options this spawner reads (a wrapper's
        default child, JupyterHub's LocalProcessSpawner, included), and Courtyard's
        LocalProcessSpawner, whose account options apply to JupyterHub's."""
        from jupyterhub.spawner import LocalProcessSpawner

        from ..spawners.local import LocalProcessSpawner as CourtyardLocal

        return [cls.jupyterhub_class, LocalProcessSpawner, CourtyardLocal]

    @classmethod
    def startup_warnings(cls) -> list[str]:
        return []

    @classmethod
    def section_names(cls) -> list[str]:
        """Not ``c.<JupyterHub class>``: that section is the JupyterHub object's to read."""
        names = super().section_names()
        return names if cls is JupyterHubSpawner else [n for n in names if n != cls.__name__]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # JupyterHub's hooks are JupyterHub's spawner's to run, on JupyterHub's object
        self.pre_spawn_hook = self.post_stop_hook = None
        self.options_form = ""
        self._jh: Any = None
        self._begun = False  # _begin() ran for this launch
        self._started = asyncio.Event()
        if self.courtyard_hub is not None:
            self._jh = self._build()
        else:  # the hub checking the config at start: a bad c.Spawner.* value fails there
            # (with a stand-in user: options such as DockerSpawner's image render names)
            stand_in = JupyterHubUser(UserInfo(name="config-check"), id=0, created=None,
                                      last_activity=None, settings={"base_url": "/"},
                                      host="", authenticator=None)
            def check() -> None:
                self.jupyterhub_class(config=without_courtyard_options(self.config),
                                      log=self.log, user=stand_in)

            try:
                asyncio.get_running_loop()
            except RuntimeError:  # KubeSpawner makes its API client, bound to a loop, here
                async def in_a_loop() -> None:
                    check()

                with ThreadPoolExecutor(1) as pool:  # the hub's own thread keeps no loop
                    pool.submit(asyncio.run, in_a_loop()).result()
            else:
                check()

    @property
    def jupyterhub_spawner(self) -> Any:
        """The JupyterHub spawner object this adapter runs."""
        if self._jh is None:
            raise SpawnError("this spawner was built without a hub")
        return self._jh

    # -- building JupyterHub's objects ---------------------------------------------------------
    def _build(self) -> Any:
        from jupyterhub import orm

        hub: CourtyardHub = self.courtyard_hub
        opts = hub.options
        from ..db import queries

        with hub.session() as db:
            row = queries.get_user(db, self.user.name)
            server = next((s for s in row.servers if s.name == self.name), None) if row else None
            user_id = row.id if row else 0
            created, active = (row.created, row.last_activity) if row else (None, None)
            display_name = (server.display_name if server else None) or ""
            user_options = dict(server.user_options or {}) if server else {}
            started = server.started if server else None
            last_activity = server.last_activity if server else None
            url = server.url if server else None
        api = urlsplit(self.hub.api_url)
        hub_base = f"{opts.base_url}hub/"
        hub_view = SimpleNamespace(
            api_url=self.hub.api_url, base_url=hub_base, public_host=self.hub.host,
            host=self.hub.host, ip=api.hostname or "127.0.0.1", port=api.port or 80,
            proto=api.scheme, url=f"{api.scheme}://{api.netloc}{hub_base}",
            connect_url=f"{api.scheme}://{api.netloc}{hub_base}", is_up=lambda: True)
        settings = {"base_url": opts.base_url, "hub": hub_view, "config": hub.config,
                    "authenticator": hub.authenticator, "subdomain_host": opts.subdomain_host,
                    "public_url": opts.public_url, "internal_ssl": False,
                    "trusted_alt_names": [], "admin_access": False}
        user = JupyterHubUser(self.user, id=user_id, created=created, last_activity=active,
                              settings=settings, host=self.server_host,
                              authenticator=hub.authenticator)
        orm_server = orm.Server(base_url=self.server_prefix, proto="http", ip="", port=0,
                                cookie_name="")
        if url:
            parts = urlsplit(url)
            orm_server.proto, orm_server.ip = parts.scheme, parts.hostname or ""
            orm_server.port = parts.port or (443 if parts.scheme == "https" else 80)
        orm_spawner = orm.Spawner(name=self.name, display_name=display_name,
                                  user_options=user_options, state={}, started=started,
                                  last_activity=last_activity)
        orm_spawner.server = orm_server
        kwargs: dict[str, Any] = {
            "user": user, "orm_spawner": orm_spawner, "hub": hub_view,
            "authenticator": hub.authenticator, "config": jupyterhub_config(hub),
            "db": NullSession(),
            "proxy_spec": self.server_prefix,
            "oauth_client_id": self.oauth_client_id or client_id(self.user.name, self.name),
            "user_options": user_options, "log": self.log}
        if opts.public_url:
            kwargs["public_url"] = user.public_url(self.name)
            public = urlsplit(opts.public_url)
            kwargs["public_hub_url"] = f"{public.scheme}://{public.netloc}{hub_base}"
        jh = self.jupyterhub_class(**kwargs)
        user.spawners[self.name] = jh
        found = engines.hook(jh, "attach")  # the engine glue's wrappers on this object
        if found is not None:
            found[0](found[1])
        # what the lifecycle reads from this adapter follows JupyterHub's object
        for trait in ("start_timeout", "http_timeout", "poll_interval",
                      "consecutive_failure_limit"):
            if jh.has_trait(trait):
                setattr(self, trait, getattr(jh, trait))
        self.server_token_scopes = self._scopes(jh, "server_token_scopes")
        self.oauth_client_allowed_scopes = self._scopes(jh, "oauth_client_allowed_scopes")
        return jh

    @staticmethod
    def _scopes(jh: Any, trait: str) -> list[str]:
        """A list of scopes as it is; a callable's only at launch (:meth:`resolved_scopes`)."""
        value = getattr(jh, trait, None) or []
        return [] if callable(value) else [str(s) for s in value]

    async def resolved_scopes(self, name: str) -> list[str]:
        """JupyterHub's ``server_token_scopes`` / ``oauth_client_allowed_scopes``: a
        callable is called with JupyterHub's spawner (and awaited), as JupyterHub does."""
        jh = self.jupyterhub_spawner
        value = getattr(jh, name, None) or []
        if callable(value):
            value = await _maybe_await(value(jh))
        if not isinstance(value, list | tuple | set) or not all(
                isinstance(scope, str) for scope in value):
            raise ValueError(f"c.Spawner.{name}: the callable must return a list of scopes")
        return list(value)

    def hook_subjects(self) -> tuple[Any, Any]:
        """``(user, spawner)`` for the authenticator's ``pre_spawn_start`` and
        ``post_spawn_stop``: JupyterHub's objects, as JupyterHub passes them."""
        jh = self.jupyterhub_spawner
        self._sync_credentials(jh)
        return jh.user, jh

    @observe("api_token")
    def _new_launch(self, change: dict[str, Any]) -> None:
        """The lifecycle hands out a launch's token just before ``pre_spawn_start``."""
        if change["new"] and self._jh is not None:
            self._begin()

    def _begin(self) -> Any:
        """Once per launch, before the authenticator's ``pre_spawn_start``, as JupyterHub's
        ``User.spawn``: this launch's ``user_options``, then ``clear_state()`` (a new server
        restores nothing: a wrapper makes its child afresh, for the profile now chosen)."""
        jh = self.jupyterhub_spawner
        if not self._begun:
            self._begun = True
            self._user_options_to_jh(self.user_options)
            jh.clear_state()
        self._sync_credentials(jh)
        return jh

    def _sync_credentials(self, jh: Any) -> None:
        jh.api_token = self.api_token
        if self.oauth_client_id:
            jh.oauth_client_id = self.oauth_client_id

    # -- the contract --------------------------------------------------------------------------
    async def start(self) -> str:
        jh = self._begin()
        await jh.run_auth_state_hook(await jh.user.get_auth_state())
        if hasattr(jh, "apply_group_overrides"):  # JupyterHub 5.3+
            await jh.apply_group_overrides()
        if hasattr(jh, "_run_apply_user_options"):  # JupyterHub 5.3+
            await jh._run_apply_user_options(jh.user_options)
        await _maybe_await(jh.run_pre_spawn_hook())
        await self._check_accounts(jh)
        found = engines.hook(jh, "check_start")
        if found is not None:
            await found[0](self, found[1])
        from tornado.web import HTTPError as TornadoHTTPError

        jh._spawn_pending = True
        try:
            pending = jh.start()  # a wrapper makes its child here
            self._started.set()
            result = await _maybe_await(pending)
        except TornadoHTTPError as e:  # a refusal (DockerSpawner: an image not allowed)
            if not 400 <= e.status_code < 500:
                raise
            message = (e.log_message % e.args if e.args else e.log_message) if e.log_message else ""
            error = SpawnError(message or e.reason or f"HTTP {e.status_code}")
            error.status = e.status_code  # the status JupyterHub answers it with
            raise error from None
        finally:
            jh._spawn_pending = False
        if jh.api_token and jh.api_token != self.api_token:
            await self._reuse_token(jh.api_token)
        url = self._url(result)
        parts = urlsplit(url)
        server = jh.server
        if server is not None:
            server.proto, server.ip = parts.scheme, parts.hostname or ""
            server.port = parts.port or (443 if parts.scheme == "https" else 80)
        await self._check_processes(jh)
        return url

    async def _reuse_token(self, secret: str) -> None:
        """The spawner went on with a server that holds an earlier launch's token (DockerSpawner
        restarting a kept container reads it back from the container's environment): as
        JupyterHub, that token becomes this launch's, so the server can still call the hub
        and sign its users in. It gets exactly this launch's scopes and OAuth client; a
        secret that is some other token's is refused."""
        from sqlalchemy import select

        from ..auth import tokens
        from ..db import queries
        from ..db.models import APIToken, OAuthClient

        user, name, cid = self.user.name, self.name, self.oauth_client_id or client_id(
            self.user.name, self.name)

        def rekey(db: Session) -> None:
            row = queries.get_user(db, user)
            server = next((s for s in row.servers if s.name == name), None) if row else None
            if server is None:
                raise SpawnError("the server was deleted")
            hashed = tokens.fast_hash(secret)
            taken = db.scalar(select(APIToken).where(APIToken.hashed == hashed))
            if taken is not None and taken.server_id != server.id:
                raise SpawnError("refused: the server holds a token that is not its own")
            for token in db.scalars(select(APIToken).where(
                    APIToken.server_id == server.id, APIToken.note.startswith("Server at "))):
                token.hashed, token.prefix = hashed, tokens.prefix(secret)
            client = db.scalar(select(OAuthClient).where(OAuthClient.identifier == cid))
            if client is not None:
                client.hashed_secret = hashed

        hub: CourtyardHub = self.courtyard_hub
        await hub.lifecycle.write(rekey)
        self.api_token = secret

    def _url(self, result: object) -> str:
        if isinstance(result, str) and result:
            return result
        if isinstance(result, tuple | list) and len(result) == 2:
            ip, port = result
            ip = ip or "127.0.0.1"
            return f"http://[{ip}]:{int(port)}" if ":" in ip else f"http://{ip}:{int(port)}"
        raise SpawnError(f"{type(self._jh).__name__}.start() returned {result!r}, not a URL or "
                         "(ip, port)")

    async def stop(self, now: bool = False) -> None:
        jh = self.jupyterhub_spawner
        try:
            await _maybe_await(jh.stop(now=now))
        finally:
            await _maybe_await(jh.run_post_stop_hook())

    async def poll(self) -> int | None:
        status: int | None = await _maybe_await(self.jupyterhub_spawner.poll())
        if status is None and self._zombie():
            return 0  # JupyterHub's signal 0 counts an exited, unreaped non-child as alive
        return status

    def _zombie(self) -> bool:
        """Whether a JupyterHub LocalProcessSpawner's process has exited but is not reaped
        yet (a server a previous hub started: its new parent reaps it when it gets to)."""
        from ..spawners.local import process_status

        local = self._local(self.jupyterhub_spawner)
        pid = getattr(local[-1], "pid", 0) if local else 0
        status = process_status(pid) if pid else None
        return status is not None and status[0] == "Z"

    async def wait_exit(self) -> None:
        """The process of a JupyterHub LocalProcessSpawner (or of one a wrapper such as
        ProfilesSpawner runs) is watched with a pidfd, as Courtyard's own spawner's; any
        other spawner is polled every ``poll_interval``."""
        local = self._local(self.jupyterhub_spawner)
        pid = getattr(local[-1], "pid", 0) if local else 0
        if not pid or not await pidfd.wait_exit(pid):
            await super().wait_exit()

    def get_state(self) -> dict[str, Any]:
        return dict(self.jupyterhub_spawner.get_state() or {})

    def load_state(self, state: dict[str, Any]) -> None:
        self.jupyterhub_spawner.orm_spawner.state = dict(state)
        self.jupyterhub_spawner.load_state(dict(state))

    def clear_state(self) -> None:
        self.jupyterhub_spawner.clear_state()

    async def progress(self) -> AsyncIterator[ProgressEvent]:
        """JupyterHub's ``progress()``, once ``start()`` has been called (a wrapper's child,
        whose progress it forwards, exists only then)."""
        await self._started.wait()
        found = engines.hook(self.jupyterhub_spawner, "progress")
        events = found[0](found[1]) if found else self.jupyterhub_spawner.progress()
        async for event in events:
            yield event

    async def read_log(self, tail: int | None = None) -> str | None:
        """The engine's own record of the server (job output, container or pod log)."""
        found = engines.hook(self.jupyterhub_spawner, "read_log")
        return await found[0](found[1], tail) if found else None

    async def delete_forever(self) -> None:
        await _maybe_await(self.jupyterhub_spawner.delete_forever())

    async def check_adopted(self) -> None:
        await self._check_processes(self.jupyterhub_spawner)
        found = engines.hook(self.jupyterhub_spawner, "check_adopted")
        if found is not None:
            await found[0](self, found[1])

    def get_env(self) -> dict[str, str]:
        """JupyterHub's own ``get_env()``: the environment is exactly JupyterHub's."""
        jh = self.jupyterhub_spawner
        self._sync_credentials(jh)
        return dict(jh.get_env())

    async def get_options_form(self) -> str:
        return await self.jupyterhub_spawner.get_options_form() or ""

    def run_options_from_form(self, formdata: dict[str, list[str]]) -> dict[str, Any]:
        options: dict[str, Any] = self.jupyterhub_spawner.run_options_from_form(formdata)
        return options

    def profiles(self) -> list[dict[str, Any]]:
        return []  # KubeSpawner-style cards are Courtyard's; a JupyterHub spawner has its form

    def _user_options_to_jh(self, options: dict[str, Any]) -> None:
        if self._jh is not None:
            self._jh.user_options = dict(options)
            self._jh.orm_spawner.user_options = dict(options)

    @observe("user_options")
    def _apply_profile(self, change: dict[str, Any]) -> None:
        """``user_options`` go to JupyterHub's object (no Courtyard profiles here)."""
        self._user_options_to_jh(change["new"] or {})

    # -- the account policy for JupyterHub's LocalProcessSpawner -------------------------------
    def _local(self, jh: Any) -> list[Any]:
        """JupyterHub LocalProcessSpawners among ``jh`` and the children it wraps."""
        from jupyterhub.spawner import LocalProcessSpawner

        found, seen = [], set()
        while jh is not None and id(jh) not in seen:
            seen.add(id(jh))
            if isinstance(jh, LocalProcessSpawner):
                found.append(jh)
            jh = getattr(jh, "child_spawner", None)
        return found

    def _courtyard_local(self) -> LocalProcessSpawner:
        """Courtyard's LocalProcessSpawner with this hub's ``c.LocalProcessSpawner`` options:
        its policy (allowed_system_users, ...) and account creation apply here too."""
        from ..config import build_configurable
        from ..spawners.local import LocalProcessSpawner

        hub: CourtyardHub = self.courtyard_hub
        return build_configurable(LocalProcessSpawner, hub.config,
                                  user=self.user, name=self.name, hub=self.hub, log=self.log)

    async def _check_accounts(self, jh: Any) -> None:
        """As root: the account each JupyterHub LocalProcessSpawner will switch to (the hub
        user's name) must exist (Courtyard creates it as for its own spawner) and be allowed."""
        if os.geteuid() != 0:
            return
        if getattr(jh, "child_spawner", "absent") is None and hasattr(jh, "construct_child"):
            jh.construct_child()  # a wrapper's child, which its start() would make
        from jupyterhub.spawner import SimpleLocalProcessSpawner

        for spawner in self._local(jh):
            if isinstance(spawner, SimpleLocalProcessSpawner):
                raise SpawnError("refused: JupyterHub's SimpleLocalProcessSpawner runs every "
                                 "server as the hub's own user, here root: no server ever runs "
                                 "as root")
            local = self._courtyard_local()
            pw = await local._system_user(spawner.user.name)
            problem = local.account_policy().refusal(pw)
            if problem is not None:
                self.log.warning("Refused to start the server of %s as system user %s "
                                 "(uid %d): %s", self.log_name, pw.pw_name, pw.pw_uid, problem)
                raise SpawnError(f"refused: {problem}")

    async def _check_processes(self, jh: Any) -> None:
        """As root: every process a JupyterHub LocalProcessSpawner runs must run as an allowed
        account (``popen_kwargs`` could have dropped the switch); else it is stopped."""
        if os.geteuid() != 0:
            return
        from ..spawners import accounts

        for spawner in self._local(jh):
            pid = getattr(spawner, "pid", 0)
            ids = accounts.process_ids(pid) if pid else None
            if ids is None:
                continue
            found = self._courtyard_local().account_policy().process_refusal(*ids)
            if found is not None:
                account, uid, problem = found
                self.log.warning("Server %s (pid %d) runs as system user %s (uid %d): %s",
                                 self.log_name, pid, account, uid, problem)
                raise SpawnError(f"refused: it runs as {account} (uid {uid}): {problem}")
