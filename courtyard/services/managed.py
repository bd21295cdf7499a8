"""Hub-managed services: processes the hub starts from ``services[].command``, and restarts.

Each gets the environment JupyterHub 6 gives a managed service (:func:`service_env`), runs
as its ``user`` or the hub's user, never as root unless ``user`` says so (:func:`run_as`),
in its own process group, and is stopped with the hub.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pwd
import signal
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy.orm import Session, sessionmaker

from ..db import queries

log = logging.getLogger("courtyard.services")


class ServiceOptions(Protocol):
    @property
    def base_url(self) -> str: ...
    @property
    def public_url(self) -> str: ...
    @property
    def subdomain_host(self) -> str: ...
    @property
    def services(self) -> list[dict[str, Any]]: ...


class Hub(Protocol):
    """What managed services need of the hub: its options and API URL for their
    environment, its database for their tokens, and where to record their PIDs."""

    @property
    def options(self) -> ServiceOptions: ...
    @property
    def api_url(self) -> str: ...
    @property
    def session(self) -> sessionmaker[Session]: ...
    @property
    def service_pids(self) -> dict[str, int]: ...

RESTART_DELAYS = (1, 2, 5, 10, 30)


# what JupyterHub's LocalProcessSpawner passes on from the hub's environment (env_keep)
ENV_KEEP = ("CONDA_DEFAULT_ENV", "CONDA_ROOT", "JUPYTERHUB_SINGLEUSER_APP", "LANG", "LC_ALL",
            "LD_LIBRARY_PATH", "PATH", "PYTHONPATH", "VIRTUAL_ENV")


def service_env(hub: Hub, spec: dict[str, Any], token: str) -> dict[str, str]:
    """The environment JupyterHub 6 gives a managed service, variable for variable.

    ``JUPYTERHUB_OAUTH_CALLBACK_URL`` is a path, as in JupyterHub: ``HubOAuth`` and
    FastAPI services join it to the request's own origin.
    """
    name = spec["name"]
    base = hub.options.base_url
    public = hub.options.public_url
    env = {k: os.environ[k] for k in ENV_KEEP if k in os.environ}
    access = ["access:services", f"access:services!service={name}"]
    env.update({
        "JUPYTERHUB_API_TOKEN": token,
        "JPY_API_TOKEN": token,
        "JUPYTERHUB_CLIENT_ID": spec.get("oauth_client_id") or f"service-{name}",
        "JUPYTERHUB_COOKIE_HOST_PREFIX_ENABLED": "0",
        "JUPYTERHUB_HOST": hub.options.subdomain_host,
        "JUPYTERHUB_OAUTH_CALLBACK_URL": "oauth_callback",
        "JUPYTERHUB_OAUTH_SCOPES": json.dumps(access),
        "JUPYTERHUB_OAUTH_ACCESS_SCOPES": json.dumps(access),
        "JUPYTERHUB_OAUTH_CLIENT_ALLOWED_SCOPES": json.dumps(
            list(spec.get("oauth_client_allowed_scopes") or [])),
        "JUPYTERHUB_SERVICE_NAME": name,
        "JUPYTERHUB_USER": spec.get("user") or "",
        "JUPYTERHUB_SERVER_NAME": "",
        "JUPYTERHUB_API_URL": hub.api_url,
        "JUPYTERHUB_BASE_URL": base,
        "JUPYTERHUB_PUBLIC_URL": "",
        "JUPYTERHUB_PUBLIC_HUB_URL": "",
    })
    origin = _origin(public)
    if origin:
        env["JUPYTERHUB_PUBLIC_HUB_URL"] = f"{origin}{base}hub/"
    if spec.get("url"):
        prefix = f"{base}services/{name}/"
        env["JUPYTERHUB_SERVICE_PREFIX"] = prefix
        env["JUPYTERHUB_SERVICE_URL"] = spec["url"]
        env["JUPYTERHUB_OAUTH_CALLBACK_URL"] = f"{prefix}oauth_callback"
        if origin:
            env["JUPYTERHUB_PUBLIC_URL"] = f"{origin}{prefix}"
    account = run_as(spec)
    if account is not None and spec.get("user"):
        env.update({"USER": account.pw_name, "HOME": account.pw_dir,
                    "SHELL": account.pw_shell or "/bin/sh"})
    env.update({k: str(v) for k, v in (spec.get("environment") or {}).items()})
    return env


def _origin(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def run_as(spec: dict[str, Any]) -> pwd.struct_passwd | None:
    """The account a service runs as; None for the hub's own.

    As JupyterHub: ``user`` if given, else the hub's user. A service is the operator's own
    code, trusted as the config is; its README's config (no ``user``) must run unchanged.
    """
    user = spec.get("user")
    if os.geteuid() != 0 or not user:
        return None
    return pwd.getpwnam(user)


class ManagedService:
    """One service process, restarted with back-off when it exits on its own."""

    def __init__(self, hub: Hub, spec: dict[str, Any]) -> None:
        self.hub = hub
        self.spec = spec
        self.name: str = spec["name"]
        self.proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._secret = ""

    def _token(self) -> str:
        """``api_token``, else one token made at the hub's start and kept across restarts."""
        if self.spec.get("api_token"):
            return str(self.spec["api_token"])
        if self._secret:
            return self._secret
        with self.hub.session() as db:
            service = queries.get_service(db, self.name)
            assert service is not None
            _, secret = queries.issue_token(db, service, note="managed service token")
            db.commit()
        self._secret = secret
        return secret

    def _preexec(self) -> Callable[[], None] | None:
        entry = run_as(self.spec)
        if entry is None:
            return None

        def drop() -> None:
            os.initgroups(entry.pw_name, entry.pw_gid)
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)

        return drop

    async def start(self) -> None:
        command = self.spec["command"]
        cmd = [command] if isinstance(command, str) else list(command)
        env = service_env(self.hub, self.spec, self._token())
        self.proc = await asyncio.create_subprocess_exec(
            *cmd, env=env, cwd=self.spec.get("cwd") or None, start_new_session=True,
            preexec_fn=self._preexec(),
        )
        self.hub.service_pids[self.name] = self.proc.pid
        account = run_as(self.spec)
        who = account.pw_name if account else pwd.getpwuid(os.geteuid()).pw_name
        log.info("Started service %s (pid %d) as %s: %s", self.name, self.proc.pid, who,
                 " ".join(cmd))
        self._task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        failures = 0
        while True:
            assert self.proc is not None
            code = await self.proc.wait()
            self.hub.service_pids[self.name] = 0
            if self._stopping:
                return
            delay = RESTART_DELAYS[min(failures, len(RESTART_DELAYS) - 1)]
            log.error("Service %s exited with status %s; restarting in %ds", self.name, code,
                      delay)
            failures += 1
            await asyncio.sleep(delay)
            if self._stopping:
                return
            try:
                await self.start()
            except OSError as e:
                log.error("Service %s could not be restarted: %s", self.name, e)
                continue
            return  # the new start() runs its own watcher

    async def stop(self, grace: float = 5) -> None:
        self._stopping = True
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        except ProcessLookupError:
            pass
        self.hub.service_pids[self.name] = 0


async def start_managed_services(hub: Hub) -> list[ManagedService]:
    """Start every service with a ``command``; a service that cannot start stops the hub's
    start with one line saying why."""
    from ..errors import ConfigError

    services = [ManagedService(hub, spec) for spec in hub.options.services if spec.get("command")]
    for service in services:
        user = service.spec.get("user")
        if user and os.geteuid() != 0 and user != pwd.getpwuid(os.geteuid()).pw_name:
            raise ConfigError(f"service {service.name!r} has user {user!r}: the hub must "
                              "run as root to start a service as another account")
        try:
            await service.start()
        except KeyError:
            raise ConfigError(f"service {service.name!r}: no system account named "
                              f"{user!r}") from None
        except OSError as e:
            raise ConfigError(f"service {service.name!r} could not start: {e}; check "
                              "its command in c.JupyterHub.services") from None
    return services
