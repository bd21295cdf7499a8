"""``/hub/user-redirect/PATH``: the same PATH on the signed-in user's own server.

Links that must work for whoever opens them (JupyterLab's "share" links, course material)
point here. The server is the default one, or ``default_server_name`` when named servers
are on; a stopped server is started first. The request waits for the spawn up to
``slow_spawn_timeout`` seconds and then redirects, so a quick start costs no extra round
trip; a slower one goes on to the spawn-pending page, which shows progress and then sends
the browser on to PATH.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..auth import refresh
from ..auth.identity import groups_of
from ..auth.scopes import Target, scope_allows
from ..auth.session import cookie_identity
from ..db.models import Server, User
from ..errors import HTTPError
from ..spawners.base import UserInfo
from .pages import pending_url
from .refresh import spawn_refused
from .render import Page, signed_in

if TYPE_CHECKING:
    from .hub import Hub

log = logging.getLogger("courtyard.web")

START_SCOPES = ("servers", "start:servers")


def target_url(hub: Hub, user: str, server: str, path: str, query: str) -> str:
    url = hub.server_routespec(user, server) + quote(path.lstrip("/"), safe="/@~:+,;=!$&'()*")
    return f"{url}?{query}" if query else url


@signed_in
async def user_redirect(page: Page, user: User) -> Response:
    hub, db, request = page.hub, page.db, page.request
    opts = hub.options
    name = opts.default_server_name if opts.allow_named_servers else ""
    url = target_url(hub, user.name, name, request.path_params["path"], request.url.query)
    server = next((s for s in user.servers if s.name == name), None)
    pending = hub.lifecycle.pending(user.name, name)
    if server is not None and server.url is not None and pending is None:
        return page.redirect(url, status=302)
    if pending is None:
        try:
            await refresh.before_spawn(hub, db, user, request)  # refresh_pre_spawn
            _start(page, user, server, name)
        except refresh.AuthExpired as e:
            return spawn_refused(page, user, e)
        except HTTPError as e:
            return page.error(e.status, e.message, e.headers)
    elif pending != "spawn":
        return _pending_page(page, user.name, name, url)
    db.commit()  # no transaction held while waiting for the spawn
    event = await _wait_for_spawn(hub, user.name, name, opts.slow_spawn_timeout)
    if event is None:
        return _pending_page(page, user.name, name, url)
    if event.get("failed"):
        return page.error(500, f"Your server could not start. {event.get('message', '')}")
    return page.redirect(url, status=302)


def _start(page: Page, user: User, server: Server | None, name: str) -> None:
    hub, db = page.hub, page.db
    ident = cookie_identity(hub, db, user, page.sid)
    target = Target(user=user.name, server=f"{user.name}/{name}")
    if not any(scope_allows(ident.parsed.get(s), target, lambda u: groups_of(db, u))
               for s in START_SCOPES):
        raise HTTPError(f"{user.name} may not start their server", 403)
    hub.lifecycle.check_limits()
    if server is None:
        server = Server(name=name, state={}, user_options={})
        user.servers.append(server)
    db.commit()
    log.info("Starting %s's server %r for /hub/user-redirect", user.name, name)
    hub.lifecycle.spawn(UserInfo(user.name, bool(user.admin), [g.name for g in user.groups],
                                 hub.read_auth_state(user)), server)


async def _wait_for_spawn(hub: Hub, user: str, server: str, timeout: float
                          ) -> dict[str, Any] | None:
    """The spawn's last event (ready or failed), or None if it is still going."""
    events = hub.lifecycle.progress_events(user, server, ready=False)
    if events is None:
        return {"ready": True}

    async def last() -> dict[str, Any]:
        event: dict[str, Any] = {}
        async for event in events:
            if event.get("ready") or event.get("failed"):
                break
        return event

    try:
        return await asyncio.wait_for(last(), timeout)
    except TimeoutError:
        return None


def _pending_page(page: Page, user: str, server: str, url: str) -> Response:
    """The spawn-pending page, which goes on to ``url`` once the server is ready."""
    return page.redirect(f"{pending_url(page, user, server)}?{urlencode({'next': url})}",
                         status=302)


def routes(base_url: str) -> list[BaseRoute]:
    return [Route(f"{base_url}hub/user-redirect/{{path:path}}", user_redirect,
                  methods=["GET"])]
