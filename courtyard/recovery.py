"""Recovery after a hub restart: every server a previous hub left is checked, behind the API.

Held by :class:`~courtyard.lifecycle.Lifecycle` as ``lifecycle.recovery``, working on the
lifecycle's table of servers and its tasks: at start every recorded server is pending
``"check"`` at once; the checks run in the background, at most ``recovery_concurrency`` at a
time, each building its spawner only then; live servers keep (or get back) their route, dead
ones are cleaned up as any stopped server, and so are live ones that
``Spawner.check_adopted`` refuses (e.g. running as root, started by an earlier version).

A launch is recorded before its process exists: its credentials (the server's API token)
are committed before ``Spawner.start()`` runs, and its state (pid, process group, start
time) as soon as ``start()`` returns. A hub killed at any instant of a spawn therefore
leaves a row with credentials but no URL; the next hub finds such rows, stops any process
of this machine that holds the launch's token in its environment (the pid may not have
reached the database), and revokes the credentials, so no server and no token outlives an
interrupted launch, and starting the user again gives one process.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from .db.models import APIToken, Group, Server, User, user_group_map
from .errors import SpawnError, error_reason
from .spawners.base import Spawner, UserInfo

if TYPE_CHECKING:
    from .lifecycle import Lifecycle, Slot

log = logging.getLogger("courtyard.lifecycle")


class Recovery:
    """The hub-start half of the lifecycle; see the module docstring."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle
        self.hub = lifecycle.hub

    async def start(self) -> None:
        """Find the servers a previous hub left running and check them in the background.

        Every recorded server is pending ``"check"`` when this returns (the API answers
        meanwhile and the proxy keeps its route); at most ``recovery_concurrency`` checks run
        at once; live servers become ready again, dead ones are cleaned up as each check ends.
        :attr:`Lifecycle.recovered` is set when all are done. ``init_spawners_timeout``
        (default 0) is how long this waits for them before the hub serves anyway.
        """
        lifecycle = self.lifecycle
        cls = self.hub.spawner_class
        for warning in cls.startup_warnings() if cls else []:
            log.warning("%s", warning)
        lifecycle.recovered.clear()
        from .lifecycle import Slot

        found = self._recorded_servers()
        interrupted = [server_id for _u, _n, server_id, url, _s in found if url is None]
        if interrupted:  # their processes, found by token: the pid may not be recorded
            await asyncio.to_thread(self._stop_interrupted, interrupted)
        slots = []
        for user, name, server_id, url, state in found:
            if (user.name, name) in lifecycle._slots:
                continue
            slot = Slot(user.name, name, server_id, None, pending="check",
                        build=self._builder(user, name, state))
            lifecycle._slots[slot.key] = slot
            slots.append((slot, url))
        if not slots:
            lifecycle.recovered.set()
            return
        log.info("Checking %d server(s) recorded as running, in the background", len(slots))
        limit = asyncio.Semaphore(max(1, lifecycle.options.recovery_concurrency))
        routes = asyncio.ensure_future(self._proxy_targets())
        for slot, url in slots:
            slot.task = lifecycle._background(self._recover(slot, url, limit, routes))
        lifecycle._background(self._all_recovered([s for s, _ in slots]))
        timeout = lifecycle.options.init_spawners_timeout
        if timeout:  # JupyterHub's -1: wait for every check, however long
            await asyncio.wait({s.task for s, _ in slots if s.task},
                               timeout=timeout if timeout > 0 else None)

    def _recorded_servers(self) -> list[tuple[UserInfo, str, int, str | None, dict[str, Any]]]:
        """(owner, name, id, url, state) of every server with a URL, a state or a launch's
        credentials (an interrupted launch): three queries (columns only, no ORM objects),
        however many there are."""
        with self.hub.session() as db:
            launched = set(db.scalars(select(APIToken.server_id).where(
                APIToken.server_id.is_not(None), APIToken.note.startswith("Server at "))))
            rows = db.execute(select(User.id, User.name, User.admin, Server.name,
                                     Server.id.label("server_id"), Server.url, Server.state)
                              .join(User, Server.user_id == User.id)).all()
            rows = [r for r in rows if r.url or r.state or r.server_id in launched]
            groups: dict[int, list[str]] = {}
            if rows:
                for user_id, group in db.execute(
                        select(user_group_map.c.user_id, Group.name)
                        .join(Group, Group.id == user_group_map.c.group_id)
                        .where(user_group_map.c.user_id.in_(select(Server.user_id)))
                        .order_by(Group.name)):
                    groups.setdefault(user_id, []).append(group)
        owners: dict[int, UserInfo] = {}
        found = []
        for r in rows:
            owner = owners.get(r[0])
            if owner is None:
                owner = owners[r[0]] = UserInfo(r[1], bool(r[2]), groups.get(r[0], []))
            found.append((owner, r[3], r[4], r[5], dict(r[6] or {})))
        return found

    def _stop_interrupted(self, server_ids: list[int]) -> None:
        """Kill the processes of this machine that hold the API token of one of these
        launches (interrupted before their server was ready); their records and
        credentials are cleaned up by their checks."""
        with self.hub.session() as db:
            hashes = set(db.scalars(select(APIToken.hashed).where(
                APIToken.server_id.in_(server_ids), APIToken.note.startswith("Server at "))))
        for pid, pgid in processes_holding(hashes):
            log.warning("Killing process %d left by a launch the last hub did not finish", pid)
            try:
                if pgid == pid:  # it leads its own group (a session of its own): all of it
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            except PermissionError as e:
                log.error("Cannot kill process %d of an unfinished launch: %s", pid, e)

    def _builder(self, user: UserInfo, name: str, state: dict[str, Any]
                 ) -> Callable[[], Spawner]:
        def build() -> Spawner:
            spawner = self.lifecycle.make_spawner(user, name)
            spawner.load_state(state)
            return spawner

        return build

    async def _proxy_targets(self) -> dict[str, str] | None:
        """``{routespec: target}`` of the proxy's table, to restore only missing routes (a
        proxy that outlived the hub has them all); None when it cannot be read."""
        proxy = await self.hub.ready_proxy()
        if proxy is None:
            return None
        try:
            routes = await proxy.get_all_routes()
        except Exception as e:
            log.warning("Could not read the proxy's routes: %s; restoring every route", e)
            return None
        return {spec: str(info.get("target", "")).rstrip("/") for spec, info in routes.items()}

    async def _all_recovered(self, slots: list[Slot]) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            await asyncio.wait({s.task for s in slots if s.task})
        finally:
            self.lifecycle.recovered.set()
        table = self.lifecycle._slots
        alive = sum(1 for s in slots if table.get(s.key) is s and s.pending is None)
        log.info("Checked %d server(s) in %.1f s: %d still running, %d cleaned up",
                 len(slots), loop.time() - began, alive, len(slots) - alive)

    async def _recover(self, slot: Slot, url: str | None, limit: asyncio.Semaphore,
                       routes: asyncio.Future[dict[str, str] | None]) -> None:
        lifecycle = self.lifecycle
        try:
            async with limit:
                await self._check(slot, url, await asyncio.shield(routes))
        except asyncio.CancelledError:
            if lifecycle._closing and not lifecycle._stop_on_close:
                return  # left running for the next hub
            await lifecycle._abort(slot, "Check cancelled", route=True)
            lifecycle._failures.pop(slot.key, None)
            return
        except Exception as e:
            if slot.build is not None:  # its spawner could not even be made
                log.exception("Cannot check server %s/%s", slot.user, slot.server)
                if lifecycle._slots.get(slot.key) is slot:
                    del lifecycle._slots[slot.key]
                return
            log.warning("Server %s is not usable: %s; cleaning it up", slot.spawner.log_name,
                        error_reason(e))
            await lifecycle._abort(slot, f"Server gone: {error_reason(e)}", route=True)
            lifecycle._failures.pop(slot.key, None)
            return
        slot.url, slot.pending = url, None
        log.debug("Server %s is still running at %s", slot.spawner.log_name, url)
        slot.watcher = lifecycle._background(lifecycle._watch(slot))

    async def _check(self, slot: Slot, url: str | None,
                     routes: dict[str, str] | None) -> None:
        """Raise unless the recorded server still runs and answers; then restore its route
        (unless the proxy still has it)."""
        spawner = slot.spawner
        if url is None:
            raise SpawnError("its spawn was interrupted by a hub restart")
        status = await self.lifecycle.poll(spawner)
        if status is not None:
            raise SpawnError(f"it exited (status {status}) while the hub was down")
        await spawner.check_adopted()  # e.g. started as root by an earlier version
        await self.lifecycle.readiness.wait_http(spawner, url, spawner.http_timeout)
        spec = self.hub.server_proxy_spec(slot.user, slot.server)
        if routes is not None and routes.get(spec) == url.rstrip("/"):
            return
        try:
            await self.hub.add_server_route(slot.user, slot.server, url)
        except Exception as e:  # the proxy's own check of routes will add it later
            log.warning("Could not restore the route of %s: %s", spawner.log_name, e)


TOKEN_VARS = (b"JUPYTERHUB_API_TOKEN=", b"JPY_API_TOKEN=")


def processes_holding(hashes: Collection[str]) -> list[tuple[int, int]]:
    """``(pid, process group)`` of every process of this machine whose environment holds
    one of these tokens (given as their stored ``sha256:`` hashes): one pass over /proc.
    Processes that cannot be read (another user's, when the hub is not root) are skipped."""
    if not hashes:
        return []
    found = []
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            environ = Path(entry.path, "environ").read_bytes()
        except OSError:
            continue
        for var in environ.split(b"\0"):
            if var.startswith(TOKEN_VARS):
                token = var.split(b"=", 1)[1]
                if "sha256:" + hashlib.sha256(token).hexdigest() in hashes:
                    pid = int(entry.name)
                    found.append((pid, _process_group(pid)))
                    break
    return found


def _process_group(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[2])
