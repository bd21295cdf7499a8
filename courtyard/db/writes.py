"""The lifecycle's database writes, grouped into few commits, and its set-based updates."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import bindparam, update
from sqlalchemy.orm import Session

from .models import Server

if TYPE_CHECKING:
    from ..app import Hub

T = TypeVar("T")


class Writes:
    """The lifecycle's database writes, committed in groups.

    A write is a function of a session. Every write queued while the event loop is busy
    with other work shares one transaction, run as soon as the loop gets to it: fifty
    spawns at once make a few commits, not a hundred and fifty. Each caller resumes once
    its write is committed. If the group fails, each write is retried alone, so only the
    caller whose write fails hears of it.
    """

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._queue: list[tuple[Callable[[Session], Any], asyncio.Future[Any]]] = []
        self._groups: dict[Callable[..., Any], tuple[list[Any], asyncio.Future[Any]]] = {}
        self.commits = 0  # for tests and benchmarks

    def _enqueue(self, write: Callable[[Session], Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((write, future))
        if len(self._queue) == 1:
            loop.call_soon(self._flush)
        return future

    async def __call__(self, write: Callable[[Session], T]) -> T:
        return await asyncio.shield(self._enqueue(write))

    async def many(self, write_all: Callable[[Session, list[Any]], None], item: Any) -> None:
        """Queue ``item`` for ``write_all(db, items)``: the items queued before the next
        commit are written by one call (set-based statements, not one round per item)."""
        group = self._groups.get(write_all)
        if group is None:
            items: list[Any] = []
            group = self._groups[write_all] = (items, self._enqueue(
                lambda db: write_all(db, items)))
        group[0].append(item)
        await asyncio.shield(group[1])

    def _flush(self) -> None:
        batch, self._queue = self._queue, []
        self._groups.clear()
        try:
            with self.hub.session() as db:
                results = [write(db) for write, _ in batch]
                db.commit()
            self.commits += 1
        except Exception as e:
            if len(batch) == 1:
                if not batch[0][1].done():
                    batch[0][1].set_exception(e)
            else:  # each alone, so that only the one that fails hears of it
                for write, future in batch:
                    self._one(write, future)
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
        self._committed()

    def _one(self, write: Callable[[Session], Any], future: asyncio.Future[Any]) -> None:
        try:
            with self.hub.session() as db:
                result = write(db)
                db.commit()
            self.commits += 1
        except Exception as e:
            if not future.done():
                future.set_exception(e)
        else:
            if not future.done():
                future.set_result(result)

    def _committed(self) -> None:
        """Snapshots of users may hold what a Core statement here just changed."""
        records = getattr(self.hub, "records", None)
        if records is not None:
            records.clear()


def set_server_columns(db: Session, changes: list[tuple[int, dict[str, Any]]]) -> None:
    """``UPDATE servers SET ... WHERE id = ...`` for each ``(id, {column: value})``, without
    loading rows (nothing here concerns anyone's permissions: the scope cache is left be)."""
    table = Server.__table__
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for server_id, values in changes:
        by_columns.setdefault(tuple(sorted(values)), []).append(
            {"server_id_": server_id, **{f"{k}_": v for k, v in values.items()}})
    for columns, rows in by_columns.items():
        db.connection().execute(update(table).where(table.c.id == bindparam("server_id_"))
                                .values({c: bindparam(f"{c}_") for c in columns}), rows)
