"""The server lifecycle, in one place: spawn, readiness, routes, stop, watching, recovery.

::

    start  ─► [spawn queue] ─► pending "spawn" ─► Spawner.start() ─► GET {url}{prefix}api
           ─► add route ─► ready (Server.url, started)
              any failure on the way: stop(now), revoke credentials ─► "failed" event
    stop   ─► pending "stop" ─► remove route while Spawner.stop() runs ─► revoke, clear state
              ─► stopped
    watch  ─► Spawner.wait_exit() (at once) or poll() every poll_interval; exited ─► remove
              route, revoke, clear ─► stopped
    hub start ─► every recorded server: pending "check" at once, then in the background (at
                 most recovery_concurrency at a time): load_state, poll, check_adopted,
                 HTTP check ─► keep it (its route stays), or clean up; :attr:`Lifecycle.recovered`
                 is set when done
    delete ─► a deleted user's servers stopped ─► Spawner.delete_forever() of each (the
              default server's last: the user's own resources, e.g. a system account)

Recovery at hub start lives in :mod:`courtyard.recovery` (held as ``Lifecycle.recovery``),
the wait for a started server's HTTP answer in :mod:`courtyard.readiness`, building a
server's spawner in :mod:`courtyard.spawner_factory`, the grouped database writes in
:mod:`courtyard.db.writes`; what the lifecycle needs of the hub is the
``Hub`` Protocol of :mod:`courtyard.lifecycle_hub`. A launch is on record before its
process exists (its credentials are committed before ``Spawner.start()``; its pid as soon as
that returns), so a hub killed at any instant leaves nothing the next one cannot find. A
database outage holds the lifecycle's writes (retried with back-off, logged with its cause)
rather than failing them: a stop or spawn ends once it is recorded, and the API answers 202
meanwhile.

The API and the models only read :meth:`Lifecycle.pending`; the lifecycle changes it. Work
runs in background tasks that open short database sessions of their own, never held
across an ``await``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING, Any

from . import spawner_factory
from .db.models import Server, utcnow
from .db.writes import Writes, set_server_columns
from .errors import HTTPError, SpawnError, SpawnTimeout, error_reason
from .readiness import Readiness
from .recovery import Recovery
from .spawners import credentials
from .spawners.base import Spawner, UserInfo
from .spawners.progress import Event, ProgressLog, failed_event, queue_event, ready_event
from .spawners.queue import SpawnQueue

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .lifecycle_hub import Hub, LifecycleOptions

log = logging.getLogger("courtyard.lifecycle")
Key = tuple[str, str]  # (user name, server name)


@dataclass(eq=False)
class Slot:
    """A server the hub is dealing with: pending spawn, check or stop, or running."""

    user: str
    server: str
    server_id: int
    _spawner: Spawner | None
    pending: str | None
    progress: ProgressLog = field(default_factory=ProgressLog)
    task: asyncio.Task[None] | None = None  # the spawn, check or stop under way
    watcher: asyncio.Task[None] | None = None
    url: str | None = None  # where the server answers, once ready
    build: Callable[[], Spawner] | None = None  # makes the spawner when first needed

    @property
    def key(self) -> Key:
        return (self.user, self.server)

    @property
    def spawner(self) -> Spawner:
        """The server's spawner; a recovered server's is only built when its check runs
        (building a thousand at start-up would delay serving by as many milliseconds)."""
        if self._spawner is None:
            assert self.build is not None
            self._spawner, self.build = self.build(), None
        return self._spawner


def release_servers(db: Session, released: list[tuple[int, str, str, dict[str, Any]]]
                    ) -> None:
    """Stopped servers, ``(id, user, server, state)``: URL cleared, state kept, credentials
    revoked; a few statements for any number of them."""
    set_server_columns(db, [(sid, {"url": None, "state": state})
                            for sid, _u, _s, state in released])
    credentials.revoke_many(db, [(sid, user, server) for sid, user, server, _ in released])


class Lifecycle:
    """Every server in transition or running, and the tasks that move them along."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.options: LifecycleOptions = hub.options
        self._slots: dict[Key, Slot] = {}
        self._failures: dict[Key, Event] = {}  # the last spawn's failed event, until the next
        self._failure_status: dict[Key, int] = {}  # and the status the API answers with it
        self._tasks: set[asyncio.Task[Any]] = set()
        self.queue = SpawnQueue(lambda: self.options.concurrent_spawn_limit)
        self.consecutive_failures = 0
        #: set when consecutive_failure_limit shut the hub down
        self.gave_up = False
        self._closing = False
        self._stop_on_close = True
        #: readiness checks of started servers (their HTTP answer), one HTTP client for all
        self.readiness = Readiness()
        self.write = Writes(hub)
        #: set once every server a previous hub left has been checked (or at once, if none)
        self.recovered = asyncio.Event()
        #: checks, at hub start, the servers a previous hub left (``recovery.start()``)
        self.recovery = Recovery(self)

    # -- what the API and models read ----------------------------------------------------------
    def pending(self, user: str, server: str) -> str | None:
        slot = self._slots.get((user, server))
        return slot.pending if slot else None

    @property
    def all_pending(self) -> dict[Key, str]:
        """Every pending state by (user, server) (the users API and route sync read it)."""
        return {k: s.pending for k, s in self._slots.items() if s.pending}

    def built_spawners(self, user: str) -> list[tuple[str, Spawner]]:
        """``(server name, spawner)`` of ``user``'s servers the hub deals with, for those
        whose spawner is built (a recovered server's is built only when its check runs)."""
        return [(server, slot._spawner) for (owner, server), slot in list(self._slots.items())
                if owner == user and slot._spawner is not None]

    def count(self, state: str) -> int:
        return sum(1 for s in self._slots.values() if s.pending == state)

    def rename_user(self, old: str, new: str) -> None:
        for key in [k for k in self._slots if k[0] == old]:
            slot = self._slots.pop(key)
            slot.user = new
            slot.spawner.user.name = new
            self._slots[slot.key] = slot
        for key in [k for k in self._failures if k[0] == old]:
            self._failures[(new, key[1])] = self._failures.pop(key)

    def forget(self, user: str, server: str) -> None:
        """A stopped server was renamed or removed: drop what is remembered about it."""
        self._failures.pop((user, server), None)

    async def delete_forever(self, user: UserInfo, servers: list[str]) -> None:
        """``Spawner.delete_forever`` of stopped servers about to be deleted (JupyterHub's
        hook). For a deleted user pass all their servers and ``""``: the default server's
        spawner is where what belongs to the user (e.g. its system account) is released,
        whether or not it ever ran. An error is raised (the deletion should not go on)."""
        if self.hub.spawner_class is None:
            return
        for name in sorted(set(servers), key=lambda n: n == ""):  # the default one last
            self.forget(user.name, name)
            # JupyterHub awaits it only if it is a coroutine
            await _maybe_await(self.make_spawner(user, name).delete_forever())

    async def user_renamed(self, user: UserInfo, old: str) -> None:
        """``Spawner.user_renamed`` once, on the default server's spawner under the new
        name: what was tied to the old name is released. An error is raised."""
        if self.hub.spawner_class is not None:
            await self.make_spawner(user, "").user_renamed(old)

    def progress_events(self, user: str, server: str, ready: bool) -> AsyncIterator[Event] | None:
        """The progress stream of a server; None when it is neither starting nor just done."""
        slot = self._slots.get((user, server))
        if slot is not None and slot.pending == "spawn":
            return slot.progress.follow()
        if ready and (slot is None or slot.pending is None):
            return _one(ready_event(self.hub.server_url(user, server)))
        failed = self._failures.get((user, server))
        return _one(failed) if failed is not None else None

    async def read_log(self, user: UserInfo, server: str, tail: int | None) -> str | None:
        slot = self._slots.get((user.name, server))
        spawner = slot.spawner if slot else self.make_spawner(user, server)
        return await spawner.read_log(tail)

    # -- starting ------------------------------------------------------------------------------
    def check_limits(self) -> None:
        """Refuse with 429 when the hub is full (call before creating anything)."""
        opts = self.options
        low, high = opts.spawn_throttle_retry_range
        retry = {"Retry-After": str(random.randint(min(low, high), max(low, high)))}
        if opts.active_server_limit and len(self._slots) >= opts.active_server_limit:
            self.hub.metrics.spawn.observe(0, "failure", "too-many-users")
            raise HTTPError("Active user limit exceeded. Try again in a few minutes.", 429,
                            retry)
        limit = opts.concurrent_spawn_limit
        if not opts.spawn_queue and limit and self.count("spawn") >= limit:
            self.hub.metrics.spawn.observe(0, "failure", "throttled")
            raise HTTPError("Too many users trying to log in right now. Try again in "
                            f"{retry['Retry-After']} seconds.", 429, retry)

    def spawn(self, user: UserInfo, server: Server) -> Slot:
        """Start ``server`` in the background; the row must be committed already."""
        key = (user.name, server.name)
        if key in self._slots:
            raise SpawnError(f"server {user.name}/{server.name} is already being dealt with")
        spawner = self.make_spawner(user, server.name)
        spawner.load_state(dict(server.state or {}))
        spawner.user_options = dict(server.user_options or {})
        slot = Slot(user.name, server.name, server.id, spawner, pending="spawn")
        self._slots[key] = slot
        self._failures.pop(key, None)
        slot.progress.emit({"progress": 0, "message": "Server requested"})
        slot.task = self._background(self._spawn(slot))
        return slot

    async def wait(self, slot: Slot, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the slot's current task; True when it ended."""
        if slot.task is None or slot.task.done():
            return True
        done, _ = await asyncio.wait({slot.task}, timeout=timeout)
        return bool(done)

    def failure(self, user: str, server: str) -> str | None:
        event = self._failures.get((user, server))
        return event["message"] if event else None

    def failure_status(self, user: str, server: str) -> int:
        """The HTTP status of the last failed spawn (:attr:`SpawnError.status`)."""
        return self._failure_status.get((user, server), 500)

    async def _spawn(self, slot: Slot) -> None:
        spawner, granted, stage = slot.spawner, False, "start"
        forward: asyncio.Task[None] | None = None
        metrics, begun = self.hub.metrics, perf_counter()
        try:
            with metrics.timed(metrics.stage, "queue"):
                await self.queue.acquire(lambda pos, n: slot.progress.emit(queue_event(pos, n)))
            granted = True
            with metrics.timed(metrics.stage, "prepare"):
                await self._prepare(slot)
            forward = asyncio.create_task(self._forward_progress(slot))
            with metrics.timed(metrics.stage, "start"):
                url = await self._start(slot)
            stage = "check"
            with metrics.timed(metrics.stage, "check"):
                await self.readiness.wait_http(spawner, url, spawner.http_timeout)
            stage = "route"
            with metrics.timed(metrics.stage, "route"):
                await self.hub.add_server_route(slot.user, slot.server, url)
            await self._mark_ready(slot, url)
            metrics.spawn.observe(perf_counter() - begun, "success", "")
        except asyncio.CancelledError:
            metrics.spawn.observe(perf_counter() - begun, "failure", "")
            await self._abort(slot, "Spawn cancelled", route=stage == "route")
        except Exception as e:
            metrics.spawn.observe(perf_counter() - begun, "failure", "")
            if not isinstance(e, SpawnError):
                log.exception("Error spawning %s", spawner.log_name)
            await self._abort(slot, f"Spawn failed: {error_reason(e)}", route=stage == "route",
                              status=e.status if isinstance(e, SpawnError) else 500)
            self._count_failure(spawner)
        finally:
            if forward is not None:
                forward.cancel()
            if granted:
                self.queue.release()

    async def _prepare(self, slot: Slot) -> None:
        """Credentials for this launch, then the authenticator's and the admin's hooks."""
        spawner = slot.spawner
        # lists, or callables of the spawner as JupyterHub allows: called once, at each launch
        for name in ("server_token_scopes", "oauth_client_allowed_scopes"):
            setattr(spawner, name, await spawner.resolved_scopes(name))
        scopes = credentials.token_scopes(list(spawner.server_token_scopes), slot.user,
                                          slot.server)
        launch = credentials.Launch(slot.server_id, spawner.server_prefix, scopes,
                                    list(spawner.oauth_client_allowed_scopes),
                                    host=spawner.server_host)
        await self.write.many(credentials.issue_many, launch)
        if launch.missing:
            raise SpawnError("the server was deleted")
        secret, client_id = launch.secret, launch.client_id
        spawner.api_token, spawner.oauth_client_id = secret, client_id
        await _maybe_await(self.hub.authenticator.pre_spawn_start(*_hook_subjects(spawner)))
        if spawner.pre_spawn_hook is not None:
            await _maybe_await(spawner.pre_spawn_hook(spawner))

    async def _start(self, slot: Slot) -> str:
        spawner = slot.spawner
        await spawner.prepare()  # one-time work (an environment build): not under start_timeout
        try:
            url: str | tuple[str, int] = await asyncio.wait_for(spawner.start(), spawner.start_timeout)
        except TimeoutError:
            raise SpawnTimeout(f"the server did not start within {spawner.start_timeout:g} "
                               "seconds") from None
        if isinstance(url, tuple):  # JupyterHub's old (ip, port)
            url = f"http://{url[0] or '127.0.0.1'}:{url[1]}"
        state = spawner.get_state()
        await self.write.many(set_server_columns, (slot.server_id, {"state": state}))
        return str(url).rstrip("/")

    async def _forward_progress(self, slot: Slot) -> None:
        try:
            async for event in slot.spawner.progress():
                event = {k: v for k, v in event.items() if k not in ("ready", "failed")}
                slot.progress.emit(event)
        except Exception:
            log.exception("Error in the progress events of %s", slot.spawner.log_name)

    async def _mark_ready(self, slot: Slot, url: str) -> None:
        now = utcnow()
        state = slot.spawner.get_state()
        await self.write.many(set_server_columns, (slot.server_id, {
            "url": url, "started": now, "last_activity": now, "state": state}))
        slot.url, slot.pending = url, None
        self.consecutive_failures = 0
        log.info("Server %s is ready at %s", slot.spawner.log_name, url)
        slot.progress.emit(ready_event(self.hub.server_url(slot.user, slot.server)))
        slot.watcher = self._background(self._watch(slot))

    async def _abort(self, slot: Slot, message: str, route: bool, status: int = 500) -> None:
        """A spawn (or check) that did not make it: stop what started, clean up, report."""
        log.warning("%s: %s", slot.spawner.log_name, message)
        slot.pending = "stop"
        if route:
            await self._remove_route(slot)
        try:
            await slot.spawner.stop(now=True)
        except Exception:
            log.exception("Error stopping %s after a failed spawn", slot.spawner.log_name)
        try:
            await self._release(slot)
        finally:  # reported as failed even if its clean-up could not be recorded
            event = failed_event(message)
            self._failures[slot.key] = event
            self._failure_status[slot.key] = status
            slot.progress.emit(event)

    def _count_failure(self, spawner: Spawner) -> None:
        self.consecutive_failures += 1
        limit = spawner.consecutive_failure_limit
        if limit and self.consecutive_failures >= limit and not self._closing:
            log.critical("%d spawns failed in a row (c.Spawner.consecutive_failure_limit = %d); "
                         "shutting the hub down", self.consecutive_failures, limit)
            self.gave_up = True  # `courtyard serve` then exits with status 1, as JupyterHub
            self.hub.shutdown_event.set()

    # -- stopping ------------------------------------------------------------------------------
    def stop(self, user: str, server: str) -> asyncio.Task[None] | None:
        """Begin stopping (or cancel a pending spawn); the task to await, None if not active."""
        slot = self._slots.get((user, server))
        if slot is None:
            return None
        if slot.pending == "stop":
            return slot.task
        if slot.pending in ("spawn", "check") and slot.task is not None:
            log.info("Cancelling the pending %s of %s", slot.pending, slot.spawner.log_name)
            slot.task.cancel()
            return slot.task
        slot.pending = "stop"
        slot.task = self._background(self._stop(slot))
        return slot.task

    async def stop_and_wait(self, user: str, server: str) -> None:
        task = self.stop(user, server)
        if task is not None:
            await asyncio.wait({task})

    def remove_after(self, task: asyncio.Task[None], server_id: int, user: UserInfo) -> None:
        """Delete a server's record once ``task`` (its stop) is done, if it stayed stopped
        (``delete_forever`` first, as for a server removed at once)."""

        def stopped(db: Session) -> Server | None:
            server = db.get(Server, server_id)
            if server is None or server.url is not None or \
                    (server.user.name, server.name) in self._slots:
                return None
            return server

        async def remove() -> None:
            await asyncio.wait({task})
            with self.hub.session() as db:
                server = stopped(db)
                if server is None:
                    return
                user.name, name = server.user.name, server.name  # renamed meanwhile?
            try:
                await self.delete_forever(user, [name])
            except Exception:
                log.exception("Error in delete_forever of %s/%s; its record stays",
                              user.name, name)
                return
            with self.hub.session() as db:
                server = stopped(db)
                if server is not None:
                    db.delete(server)
                    db.commit()

        self._background(remove())

    async def _stop(self, slot: Slot) -> None:
        if slot.watcher is not None:
            slot.watcher.cancel()
        begun, status = perf_counter(), "success"
        # the route goes while the server stops, not before: with many stops at once each
        # route change waits for every proxy worker's acknowledgement (0.7 s apiece measured
        # with 20 Slurm stops on 2 busy cores), which the engine's stop need not wait behind
        route = asyncio.ensure_future(self._remove_route(slot))
        try:
            await slot.spawner.stop()
        except Exception:
            status = "failure"
            log.exception("Error stopping %s", slot.spawner.log_name)
        finally:
            await route
        try:
            await self._release(slot)
        except BaseException:
            status = "failure"
            raise
        finally:
            self.hub.metrics.stop.observe(perf_counter() - begun, status)
        log.info("Stopped server %s", slot.spawner.log_name)

    async def _remove_route(self, slot: Slot) -> None:
        try:
            await self.hub.remove_server_route(slot.user, slot.server)
        except Exception as e:
            log.warning("Could not remove the route of %s: %s", slot.spawner.log_name, e)

    async def _release(self, slot: Slot) -> None:
        """The server is gone: clear its record and credentials, run the stop hooks."""
        spawner = slot.spawner
        spawner.clear_state()
        try:  # an outage is waited out (db.writes); anything else fails the stop, logged
            await self.write.many(release_servers, (slot.server_id, slot.user, slot.server,
                                                    spawner.get_state()))
        except Exception as e:
            log.error("Could not record that %s stopped: %s", spawner.log_name,
                      error_reason(e))
            raise
        finally:  # never left "pending stop": the process is gone either way
            if self._slots.get(slot.key) is slot:
                del self._slots[slot.key]
            if slot.watcher is not None and slot.watcher is not asyncio.current_task():
                slot.watcher.cancel()
        hooks: list[Callable[[], Any]] = []
        if spawner.post_stop_hook is not None:
            hooks.append(lambda: spawner.post_stop_hook(spawner))
        post_stop = getattr(self.hub.authenticator, "post_spawn_stop", None)
        if post_stop is not None:
            hooks.append(lambda: post_stop(*_hook_subjects(spawner)))
        for hook in hooks:
            try:
                await _maybe_await(hook())
            except Exception:
                log.exception("Error in a post-stop hook of %s", spawner.log_name)

    # -- watching ------------------------------------------------------------------------------
    async def _watch(self, slot: Slot) -> None:
        """Watch a running server until it exits: at once when its spawner can tell
        (``Spawner.wait_exit``, e.g. a pidfd), else by ``poll()`` every ``poll_interval``
        (with jitter), which also runs in the first case as a safety net."""
        spawner = slot.spawner
        exited = asyncio.ensure_future(spawner.wait_exit())
        try:
            while True:
                interval = spawner.poll_interval * random.uniform(0.9, 1.1)
                if exited.done():
                    await asyncio.sleep(interval)
                elif not (await asyncio.wait({exited}, timeout=interval))[0]:
                    pass  # the poll_interval went by
                elif (error := exited.exception()) is not None:
                    log.warning("Cannot watch %s for its exit (%s); polling it instead",
                                spawner.log_name, error_reason(error))
                if slot.pending is not None:
                    continue
                try:
                    status = await self.poll(spawner)
                except Exception:
                    log.exception("Error polling %s", spawner.log_name)
                    continue
                if status is not None:
                    await self._reap(slot, status)
                    return
        finally:
            exited.cancel()

    async def check_alive(self, user: str, server: str) -> bool:
        """Poll a running server now (before refusing to start it); a dead one is reaped."""
        slot = self._slots.get((user, server))
        if slot is None or slot.pending is not None:
            return slot is not None
        status = await self.poll(slot.spawner)
        if status is None:
            return True
        await self._reap(slot, status)
        return False

    async def poll(self, spawner: Spawner) -> int | None:
        """``spawner.poll()``, timed as JupyterHub's ``server_poll_duration_seconds``."""
        begun = perf_counter()
        status = await spawner.poll()
        self.hub.metrics.poll.observe(perf_counter() - begun,
                                      "running" if status is None else "stopped")
        return status

    async def _reap(self, slot: Slot, status: int) -> None:
        """A running server exited on its own: mark it stopped."""
        spawner = slot.spawner
        log.warning("Server %s exited with status %s; marking it stopped", spawner.log_name,
                    status)
        slot.pending, slot.task = "stop", asyncio.current_task()
        await self._remove_route(slot)
        try:
            await spawner.stop(now=True)  # whatever it left in its process group
        except Exception:
            log.exception("Error cleaning up after %s", spawner.log_name)
        await self._release(slot)

    # -- hub start and shutdown ----------------------------------------------------------------
    async def shutdown(self, stop_servers: bool) -> None:
        """Cancel pending spawns; stop running servers too when ``stop_servers``."""
        self._closing, self._stop_on_close = True, stop_servers
        self.write.closing = True  # a database outage is not waited out forever now
        waits = []
        for slot in list(self._slots.values()):
            if slot.pending in ("spawn", "check") and slot.task is not None:
                slot.task.cancel()
                waits.append(slot.task)
            elif slot.pending == "stop" and slot.task is not None:
                waits.append(slot.task)
            elif stop_servers:
                task = self.stop(slot.user, slot.server)
                if task is not None:
                    waits.append(task)
            elif slot.watcher is not None:
                slot.watcher.cancel()
        if waits:
            log.info("Waiting for %d server(s) to stop", len(waits))
            await asyncio.wait(waits)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        await self.readiness.close()

    # -- building spawners ---------------------------------------------------------------------
    def make_spawner(self, user: UserInfo, server: str) -> Spawner:
        """A new spawner for ``user``'s server (:mod:`courtyard.spawner_factory`)."""
        return spawner_factory.make_spawner(self.hub, user, server)

    def _background(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


async def _one(event: Event) -> AsyncIterator[Event]:
    yield event


def _hook_subjects(spawner: Spawner) -> tuple[Any, Any]:
    """``(user, spawner)`` for the authenticator's spawn hooks: a JupyterHub spawner's
    adapter gives JupyterHub's objects, as JupyterHub passes them."""
    subjects = getattr(spawner, "hook_subjects", None)
    return subjects() if subjects is not None else (spawner.user, spawner)


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value
