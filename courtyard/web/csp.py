"""Security headers on every page, and ``/hub/security/csp-report`` for what browsers refuse.

The pages carry no inline script, no inline event handler and no inline style, so the
Content-Security-Policy can be strict: scripts, styles, images and connections from this
site only, no plugins, no framing. :class:`SecurityHeaders` sets it on every HTML
response, whichever part of the hub made it (pages, error handlers, authenticators), and
names ``/hub/security/csp-report`` as where a browser reports a violation.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("courtyard.web")

POLICY = ("default-src 'self'", "script-src 'self'", "style-src 'self'",
          "img-src 'self' data:", "connect-src 'self'", "font-src 'self'", "object-src 'none'",
          "base-uri 'self'", "frame-ancestors 'none'")
REPORT_PATH = "hub/security/csp-report"


def content_security_policy(base_url: str) -> str:
    return "; ".join([*POLICY, f"report-uri {base_url}{REPORT_PATH}"])


def page_headers(base_url: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(base_url),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "X-Frame-Options": "DENY",
    }


class SecurityHeaders:
    """ASGI middleware: the strict policy on every ``text/html`` response.

    It replaces a policy set further in, so one policy (with its report URI) holds for
    every page; other responses (JSON, static files, event streams) pass untouched.
    """

    def __init__(self, app: ASGIApp, base_url: str = "/") -> None:
        self.app = app
        self.headers = page_headers(base_url)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, with_page_headers(send, self.headers))


def with_page_headers(send: Send, page: dict[str, str]) -> Send:
    """``send``, setting ``page`` headers on a response that turns out to be HTML."""

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start" and _is_html(message.get("headers", ())):
            headers = MutableHeaders(scope=message)
            for key, value in page.items():
                headers[key] = value
            headers.setdefault("Cache-Control", "no-store")
        await send(message)

    return send_with_headers


def _is_html(raw: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether raw response headers say ``text/html`` (read as they are: most responses
    through here are the API's JSON, which need no header object built)."""
    for key, value in raw:
        if key.lower() == b"content-type":
            return value.startswith(b"text/html")
    return False


async def csp_report(request: Request) -> Response:
    """Log a browser's report of a policy violation (its body is JSON, of either format)."""
    body = await request.body()
    log.warning("Content-Security-Policy violation reported from %s: %s",
                request.headers.get("referer", "?"), body[:2000].decode("utf-8", "replace"))
    return Response(status_code=204)
