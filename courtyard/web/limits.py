"""Request body limits, held before any handler runs and while the body is read.

An endpoint reads its body before it knows who is asking (the token API accepts a
password in the body), so without a limit one anonymous request could make the hub hold
any amount of memory. :class:`BodyLimit` runs in front of every request, on the API's
shortcut and through Starlette alike: a ``Content-Length`` over the limit is answered 413
before a byte of the body is read, and any other body (chunked, or longer than it said)
is counted as it arrives and cut off at the limit. The 413 closes the connection, so the
rest of an unwanted upload is not read either.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from starlette.types import Message, Receive, Scope, Send

from ..errors import HTTPError

App = Callable[[Scope, Receive, Send], Awaitable[None]]
Refusal = Callable[[Scope, Receive, Send, int], Awaitable[None]]


class BodyTooLarge(HTTPError):
    """The request body is longer than the hub accepts on that path."""

    status = 413

    def __init__(self, limit: int) -> None:
        super().__init__(f"Request body too large: at most {limit} bytes are accepted here",
                         headers={"Connection": "close"})
        self.limit = limit


async def json_refusal(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    """A 413 with JupyterHub's ``{"status", "message"}`` body, closing the connection."""
    error = BodyTooLarge(limit)
    body = orjson.dumps({"status": error.status, "message": error.message})
    await send({"type": "http.response.start", "status": error.status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


async def within_limit(app: App, scope: Scope, receive: Receive, send: Send, limit: int,
                       refuse: Refusal) -> None:
    """Run ``app`` on one request whose body may be at most ``limit`` bytes.

    A declared length is checked at once: the server then delivers exactly that many bytes,
    so the body needs no counting (the hot path stays as it was). A body without one
    (chunked) is counted by :class:`_Counted` as the app reads it.
    """
    for name, value in scope["headers"]:
        if name == b"content-length":
            if not value.isdigit():  # the server refuses these; counted if one got through
                continue
            if int(value) > limit:
                await refuse(scope, receive, send, limit)
                return
            break
    else:
        await _Counted(limit, refuse).run(app, scope, receive, send)
        return
    await app(scope, receive, send)


class _Counted:
    """A body of unknown length, counted as it arrives.

    Past the limit the app's read raises :class:`BodyTooLarge`; whatever the app answers
    then is replaced by the 413 of ``refuse`` (unless it answered 413 itself).
    """

    def __init__(self, limit: int, refuse: Refusal) -> None:
        self.limit = limit
        self.refuse = refuse
        self.received = 0
        self.exceeded = False
        self.started = False  # a response start has gone out
        self.replaced = False  # the app's response is dropped for the 413

    async def run(self, app: App, scope: Scope, receive: Receive, send: Send) -> None:
        async def counted_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
                if self.received > self.limit:
                    self.exceeded = True
                    raise BodyTooLarge(self.limit)
            return message

        async def guarded_send(message: Message) -> None:
            if self.replaced:
                return
            if message["type"] == "http.response.start":
                self.started = True
                if self.exceeded and message["status"] != 413:
                    self.replaced = True
                    await self.refuse(scope, receive, send, self.limit)
                    return
            await send(message)

        try:
            await app(scope, counted_receive, guarded_send)
        except Exception:
            if not self.exceeded:
                raise
            if not self.started:  # the app let the error out instead of answering
                self.started = True
                await self.refuse(scope, receive, send, self.limit)
