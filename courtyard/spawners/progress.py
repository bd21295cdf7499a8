"""Spawn progress: the events of one spawn, kept for late listeners, and their SSE form.

Event shape (JupyterHub's): ``{"progress": 0-100, "message": str, "html_message"?: str}``;
the last event has ``"ready": true`` and ``"url"``, or ``"failed": true``.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import AsyncIterator
from typing import Any

import orjson

Event = dict[str, Any]
KEEPALIVE_SECONDS = 8.0


class ProgressLog:
    """Every event of one spawn, in order; :meth:`follow` replays them and waits for more."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.done = False
        self._changed = asyncio.Event()

    def emit(self, event: Event) -> None:
        if self.done:
            return
        self.events.append(event)
        if event.get("ready") or event.get("failed"):
            self.done = True
        self._changed.set()
        self._changed = asyncio.Event()

    async def follow(self) -> AsyncIterator[Event]:
        seen = 0
        while True:
            while seen < len(self.events):
                yield self.events[seen]
                seen += 1
            if self.done:
                return
            await self._changed.wait()


def ready_event(url: str) -> Event:
    link = html.escape(url)
    return {"progress": 100, "ready": True, "message": f"Server ready at {url}",
            "html_message": f'Server ready at <a href="{link}">{link}</a>', "url": url}


def failed_event(message: str) -> Event:
    return {"progress": 100, "failed": True, "message": message}


def queue_event(position: int, length: int) -> Event:
    """Where a spawn waits in the spawn queue (Courtyard's addition to the stream)."""
    return {"progress": 0, "message": f"Waiting for a free spawn slot: number {position} of "
            f"{length} in the queue", "queue_position": position, "queue_length": length}


async def event_stream(events: AsyncIterator[Event],
                       keepalive: float = KEEPALIVE_SECONDS) -> AsyncIterator[bytes]:
    """``data: {json}`` per event, and a comment line whenever ``keepalive`` passes quietly."""
    iterator = aiter(events)
    pending = asyncio.ensure_future(anext(iterator))
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=keepalive)
            if not done:
                yield b": keepalive\n\n"
                continue
            try:
                event = pending.result()
            except StopAsyncIteration:
                return
            yield b"data: " + orjson.dumps(event) + b"\n\n"
            pending = asyncio.ensure_future(anext(iterator))
    finally:
        pending.cancel()
