"""Pages ask the authenticator again whether a signed-in user's sign-in holds.

:class:`RefreshAuth` runs before every page (and the OAuth consent page, which hands a
user's identity to a server): once the signed-in user's ``auth_refresh_age`` has passed it
calls ``refresh_user`` (:mod:`courtyard.auth.refresh`). When that says the sign-in has
expired, the user is signed out everywhere, as by logging out (their ``cookie_id``
changes), the browser's login cookies are cleared, and the page then sees nobody signed in
(most pages send the browser to the login form, which brings it back afterwards). The API
asks in its endpoint wrapper instead (:mod:`courtyard.api.base`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..auth import refresh, session as sess
from .pages import render_error
from .render import Page, login_redirect

if TYPE_CHECKING:
    from ..db.models import User
    from .hub import Hub


class RefreshAuth:
    """ASGI middleware: ``refresh_user`` for the user a page request is signed in as."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            hub: Hub = scope["app"].state.hub
            if _applies(hub, scope):
                answer = await self.check(hub, Request(scope, receive))
                if isinstance(answer, Response):
                    await answer(scope, receive, send)
                    return
                if answer:
                    send = _clearing_cookies(send, hub)
        await self.app(scope, receive, send)

    async def check(self, hub: Hub, request: Request) -> Response | bool:
        """True when the user was signed out (the cookies must go), an error page when
        ``refresh_user`` raised, else False."""
        with hub.session() as db:
            found = sess.page_user(hub, request, db)
            if found is None or not refresh.due(hub.authenticator, found[0].id):
                return False
            user = found[0]
            try:
                ok = await refresh.refresh_user(hub, db, user, refresh.context(hub, request, db),
                                                scope=request.scope)
            except refresh.RefreshFailed as e:
                db.rollback()
                return render_error(Page(request, db), e.status, e.message)
            if not ok:
                sess.end_sessions(db, user)
            db.commit()
            return not ok


def _applies(hub: Hub, scope: Scope) -> bool:
    """A page (or the OAuth consent page) with a login cookie, and an authenticator whose
    ``refresh_user`` does something; the API's endpoints ask for themselves."""
    auth = hub.authenticator
    if not auth.refreshes or auth.auth_refresh_age <= 0:
        return False
    base, path = hub.options.base_url, scope["path"]
    if path.startswith(f"{base}hub/api") and path != f"{base}hub/api/oauth2/authorize":
        return False
    if path.startswith(f"{base}hub/static"):
        return False
    return any(k == b"cookie" and sess.LOGIN_COOKIE.encode() in v for k, v in scope["headers"])


def _clearing_cookies(send: Send, hub: Hub) -> Send:
    """``send``, clearing the login cookies before whatever cookies the page sets (a sign-in
    on this very request must win)."""
    cleared = Response()
    sess.clear_login_cookies(cleared, hub)
    headers = [(k, v) for k, v in cleared.raw_headers if k == b"set-cookie"]

    async def send_clearing(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*headers, *message.get("headers", [])]}
        await send(message)

    return send_clearing


def spawn_refused(page: Page, owner: User, error: refresh.AuthExpired) -> Response:
    """``refresh_pre_spawn`` found the owner's sign-in expired. One's own server: sign in
    again, and come back to this page after. Someone else's (an admin's spawn): 403."""
    if page.user is not None and page.user.id == owner.id:
        sess.end_sessions(page.db, page.user)
        page.db.commit()
        return page.sign_out(login_redirect(page.base_url, page.request))
    return page.error(403, error.message)
