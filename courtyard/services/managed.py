"""Hub-managed services: processes the hub starts from ``services[].command``, and restarts.

Each gets the environment JupyterHub gives a managed service (its token, the API URL, its
OAuth client id and URL prefix), runs in its own process group, and is stopped with the hub.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pwd
import signal
from typing import TYPE_CHECKING, Any

from ..db import queries as q

if TYPE_CHECKING:
    from ..app import Hub

log = logging.getLogger("courtyard.services")

RESTART_DELAYS = (1, 2, 5, 10, 30)


def service_env(hub: Hub, spec: dict[str, Any], token: str) -> dict[str, str]:
    name = spec["name"]
    base = hub.options.base_url
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "PYTHONPATH", "LANG", "LC_ALL",
                                                       "HOME", "VIRTUAL_ENV", "TZ")}
    env.update({
        "JUPYTERHUB_SERVICE_NAME": name,
        "JUPYTERHUB_API_TOKEN": token,
        "JPY_API_TOKEN": token,
        "JUPYTERHUB_API_URL": hub.api_url,
        "JUPYTERHUB_BASE_URL": base,
        "JUPYTERHUB_CLIENT_ID": spec.get("oauth_client_id") or f"service-{name}",
        "JUPYTERHUB_OAUTH_ACCESS_SCOPES": json.dumps([f"access:services!service={name}"]),
        "JUPYTERHUB_PUBLIC_URL": hub.options.public_url,
        "JUPYTERHUB_PUBLIC_HUB_URL": (hub.options.public_url.rstrip("/") + f"{base}hub/")
        if hub.options.public_url else "",
    })
    if spec.get("url"):
        prefix = f"{base}services/{name}/"
        env["JUPYTERHUB_SERVICE_URL"] = spec["url"]
        env["JUPYTERHUB_SERVICE_PREFIX"] = prefix
        env["JUPYTERHUB_OAUTH_CALLBACK_URL"] = spec.get("oauth_redirect_uri") or \
            f"{prefix}oauth_callback"
    env.update({k: str(v) for k, v in spec.get("environment", {}).items()})
    return env


class ManagedService:
    """One service process, restarted with back-off when it exits on its own."""

    def __init__(self, hub: Hub, spec: dict[str, Any]) -> None:
        self.hub = hub
        self.spec = spec
        self.name: str = spec["name"]
        self.proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def _token(self) -> str:
        if self.spec.get("api_token"):
            return str(self.spec["api_token"])
        with self.hub.session() as db:
            service = q.get_service(db, self.name)
            assert service is not None
            _, secret = q.issue_token(db, service, note="managed service token")
            db.commit()
        return secret

    def _preexec(self) -> Any:
        user = self.spec.get("user")
        if not user or os.geteuid() != 0:
            return None
        entry = pwd.getpwnam(user)

        def drop() -> None:
            os.initgroups(entry.pw_name, entry.pw_gid)
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)

        return drop

    async def start(self) -> None:
        cmd = list(self.spec["command"])
        env = service_env(self.hub, self.spec, self._token())
        self.proc = await asyncio.create_subprocess_exec(
            *cmd, env=env, cwd=self.spec.get("cwd") or None, start_new_session=True,
            preexec_fn=self._preexec(),
        )
        self.hub.service_pids[self.name] = self.proc.pid
        log.info("Started service %s (pid %d): %s", self.name, self.proc.pid, " ".join(cmd))
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
    services = [ManagedService(hub, spec) for spec in hub.options.services if spec.get("command")]
    for service in services:
        try:
            await service.start()
        except OSError as e:
            from ..errors import ConfigError

            raise ConfigError(f"service {service.name!r} could not start: {e}; check its "
                              "command in c.JupyterHub.services") from None
    return services
