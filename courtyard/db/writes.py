"""The lifecycle's database writes, grouped into few commits, and its set-based updates."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast

from sqlalchemy import Table, bindparam, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from .models import Server

T = TypeVar("T")
log = logging.getLogger("courtyard.lifecycle")


class Database(Protocol):
    """What the writes need of the hub: its sessions (made once the database is open, so
    read when a write runs), and its user snapshots when it keeps them (``records``)."""

    @property
    def session(self) -> sessionmaker[Session]: ...

#: what an unavailable database raises (PostgreSQL down or restarting, a full disk, a
#: locked or read-only SQLite file): retried until the write goes through
OUTAGES = (OperationalError, InterfaceError)
RETRY_MAX = 5.0  # seconds between attempts, at most
#: once the hub is shutting down, how long an outage is waited out before the waiting writes
#: fail (what they would have recorded, the next hub finds at its start and cleans up)
CLOSING_PATIENCE = 10.0


Pending = tuple[Callable[[Session], Any], "asyncio.Future[Any]"]


def outage(e: BaseException) -> bool:
    """Whether ``e`` means the database could not take the write right now."""
    return isinstance(e, OUTAGES)


def reason(e: BaseException) -> str:
    """The driver's own message, on one line (SQLAlchemy's adds the statement)."""
    return " ".join(str(getattr(e, "orig", None) or e).split())[:300] or type(e).__name__


class Writes:
    """The lifecycle's database writes, committed in groups.

    A write is a function of a session. Every write queued while the event loop is busy
    with other work shares one transaction, run as soon as the loop gets to it: fifty
    spawns at once make a few commits, not a hundred and fifty. Each caller resumes once
    its write is committed. If the group fails, each write is retried alone, so only the
    caller whose write fails hears of it.

    When the database is unavailable (:func:`outage`) the writes are kept and tried again,
    backing off from 0.1 s to :data:`RETRY_MAX`, until they are committed: a server's
    launch, readiness or stop is never half-recorded and its caller never told it failed
    for a passing outage. Each outage is logged with its cause when it begins and ends.
    """

    def __init__(self, hub: Database) -> None:
        self.hub = hub
        self._queue: list[Pending] = []
        self._groups: dict[Callable[..., Any], tuple[list[Any], asyncio.Future[Any]]] = {}
        self.commits = 0  # for tests and benchmarks
        self.failing_since: float | None = None  # when the current outage began (loop time)
        self.failed_attempts = 0  # attempts that met an outage (for benchmarks)
        self._held: list[Pending] | None = None  # waiting out an outage, in order
        self._timer: asyncio.TimerHandle | None = None
        #: set when the hub shuts down: an outage is then waited out only CLOSING_PATIENCE
        self.closing = False

    def _enqueue(self, write: Callable[[Session], Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((write, future))
        if len(self._queue) == 1:
            loop.call_soon(self._flush)
        return future

    async def __call__(self, write: Callable[[Session], T]) -> T:
        return await asyncio.shield(self._enqueue(write))

    async def many(self, write_all: Callable[[Session, list[T]], None], item: T) -> None:
        """Queue ``item`` for ``write_all(db, items)``: the items queued before the next
        commit are written by one call (set-based statements, not one round per item)."""
        group = self._groups.get(write_all)
        if group is None:
            items: list[T] = []
            group = self._groups[write_all] = (items, self._enqueue(
                lambda db: write_all(db, items)))
        group[0].append(item)
        await asyncio.shield(group[1])

    def _flush(self) -> None:
        batch, self._queue = self._queue, []
        self._groups.clear()
        if self._held is not None:  # an outage: behind the writes already waiting, in order
            self._held.extend(batch)
            return
        self._run(batch, 0)

    def _run(self, batch: list[Pending], attempt: int) -> None:
        try:
            with self.hub.session() as db:
                results = [write(db) for write, _ in batch]
                db.commit()
            self.commits += 1
        except Exception as e:
            if outage(e):
                self._hold(batch, attempt, e)
            elif len(batch) == 1:
                self._failed(batch[0][1], e)
            else:  # each alone, so that only the one that fails hears of it
                for write, future in batch:
                    self._one(write, future, attempt)
        else:
            self._recovered()
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
        self._committed()

    def _one(self, write: Callable[[Session], Any], future: asyncio.Future[Any],
             attempt: int) -> None:
        if self._held is not None:  # an earlier one met an outage: keep the order
            self._held.append((write, future))
            return
        try:
            with self.hub.session() as db:
                result = write(db)
                db.commit()
            self.commits += 1
        except Exception as e:
            if outage(e):
                self._hold([(write, future)], attempt, e)
            else:
                self._failed(future, e)
        else:
            self._recovered()
            if not future.done():
                future.set_result(result)

    def _failed(self, future: asyncio.Future[Any], e: Exception) -> None:
        log.error("A database write of the server lifecycle failed: %s", reason(e))
        if not future.done():
            future.set_exception(e)

    def _hold(self, batch: list[Pending], attempt: int, cause: BaseException) -> None:
        """Keep ``batch`` (and every write queued after it) for another try after a
        back-off; their callers keep waiting."""
        loop = asyncio.get_running_loop()
        self.failed_attempts += 1
        if self._held is None:
            self._held = []
        self._held.extend(batch)
        if self._timer is not None:
            return
        delay = min(RETRY_MAX, 0.1 * 2 ** attempt)
        if self.closing and self.failing_since is not None and \
                loop.time() - self.failing_since >= CLOSING_PATIENCE:
            held, self._held = self._held, None
            log.error("The hub is shutting down and the database still cannot take writes: "
                      "%d lifecycle write(s) dropped (%s); the next hub start finds the "
                      "servers concerned and cleans them up", len(held), reason(cause))
            for _, future in held:
                if not future.done():
                    future.set_exception(cause)
            return
        if self.failing_since is None:
            self.failing_since = loop.time()
            log.error("The database cannot take the server lifecycle's writes (%d waiting): "
                      "%s; retrying until it can", len(self._held), reason(cause))
        elif attempt % 12 == 0:
            log.error("The database still cannot take the server lifecycle's writes after "
                      "%.0f s (%d waiting): %s", loop.time() - self.failing_since,
                      len(self._held), reason(cause))
        self._timer = loop.call_later(delay, self._again, attempt + 1)

    def _again(self, attempt: int) -> None:
        self._timer = None
        batch, self._held = self._held or [], None
        if batch:
            self._run(batch, attempt)

    def _recovered(self) -> None:
        if self.failing_since is not None:
            took = asyncio.get_running_loop().time() - self.failing_since
            self.failing_since = None
            log.warning("The database takes writes again after %.1f s: the server "
                        "lifecycle's waiting writes are committed", took)

    def _committed(self) -> None:
        """Snapshots of users may hold what a Core statement here just changed."""
        records = getattr(self.hub, "records", None)
        if records is not None:
            records.clear()


def set_server_columns(db: Session, changes: list[tuple[int, dict[str, Any]]]) -> None:
    """``UPDATE servers SET ... WHERE id = ...`` for each ``(id, {column: value})``, without
    loading rows (nothing here concerns anyone's permissions: the scope cache is left be)."""
    table = cast(Table, Server.__table__)  # declarative: always a Table
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for server_id, values in changes:
        by_columns.setdefault(tuple(sorted(values)), []).append(
            {"server_id_": server_id, **{f"{k}_": v for k, v in values.items()}})
    for columns, rows in by_columns.items():
        db.connection().execute(update(table).where(table.c.id == bindparam("server_id_"))
                                .values({c: bindparam(f"{c}_") for c in columns}), rows)
