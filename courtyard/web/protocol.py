"""The hub port's HTTP protocol: uvicorn's httptools protocol with a request-head deadline.

The hub's own port is on loopback, where every local account can reach it, and uvicorn puts
no limit on how long a request head may take: a connection that sends nothing, or trickles
one header line every few seconds, stays open for good, and a few thousand of them use up
the hub's file descriptors (then it can accept no one and open no database file). As the
built-in proxy does on the public port, a request head must now be complete within
:attr:`HeadDeadlineProtocol.header_timeout` of the connection, or of the end of the previous
response on a kept-alive connection, however slowly it arrives; else the connection is
closed. Bodies are not timed here: the body limits (``web/limits.py``) bound their size.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("courtyard")


class HeadDeadlineProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` that closes a connection whose request head is late."""

    # seconds; the built-in proxy's --header-timeout default, for the same reason
    header_timeout: float = 20.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        self._head_deadline = self.loop.call_later(self.header_timeout, self._head_late)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_late(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            log.debug("Closed a connection to the hub from %s: no complete request head in "
                      "%.0f s", self.client, self.header_timeout)
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def on_headers_complete(self) -> None:
        self._disarm_head_deadline()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:
            self._arm_head_deadline()  # the next request's head, on a kept-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)
