"""``/hub/accept-share?code=...``: turn a share code into a share for the signed-in user.

GET shows what is shared (owner, server, scopes, expiry) with an *Accept* button; the POST
(with the XSRF token) makes the share and redirects to the shared server. The code itself
is only ever looked up by its hash.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..api.shares import accept_share_code
from ..auth import tokens
from ..db.models import ShareCode, utcnow
from ..errors import HTTPError
from .render import Page, login_redirect

if TYPE_CHECKING:
    from .hub import Hub

log = logging.getLogger("courtyard.web")


def _find_code(page: Page, secret: str) -> ShareCode | None:
    if not secret:
        return None
    code = page.db.scalar(select(ShareCode).where(ShareCode.hashed_code ==
                                                  tokens.fast_hash(secret)))
    if code is None or (code.expires_at is not None and code.expires_at <= utcnow()):
        return None
    return code


async def accept_share(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    with hub.session() as db:
        page = Page(request, db)
        if page.user is None:
            if request.method == "POST":
                return page.error(403, "Sign in, then open the invitation link again.")
            return login_redirect(page.base_url, request)
        if request.method == "GET":
            secret = request.query_params.get("code", "")
        else:
            secret = await page.field("code")
        code = _find_code(page, secret)
        if code is None:
            return page.error(404, "This invitation does not exist or has expired.")
        owner, server = code.server.user, code.server
        if owner.id == page.user.id:
            return page.error(400, "This is an invitation to your own server.")
        if request.method == "GET":
            return page.render("accept_share.html", owner=owner.name, server_name=server.name,
                               scopes=sorted(code.scopes), code=secret,
                               expires_at=code.expires_at.strftime("%Y-%m-%d %H:%M")
                               if code.expires_at else None,
                               ready=server.url is not None)
        if not await page.xsrf_ok():
            return page.error(403, "Your session expired or the form was sent from another "
                              "site; open the invitation link again.")
        try:
            accept_share_code(db, page.user, secret)
        except HTTPError as e:
            return page.error(e.status, e.message)
        db.commit()
        log.info("%s accepted a share of %s's server %r", page.user.name, owner.name,
                 server.name)
        return page.redirect(hub.server_routespec(owner.name, server.name), status=303)


def routes(base_url: str) -> list[BaseRoute]:
    return [Route(f"{base_url}hub/accept-share", accept_share,
                  methods=["GET", "POST"])]
