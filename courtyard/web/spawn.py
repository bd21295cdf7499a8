"""``/hub/spawn[/USER[/SERVER]]`` and ``/hub/spawn-pending/USER[/SERVER]``.

The spawn page shows the spawner's options: its ``options_form`` HTML, or its
``profile_list`` as cards. Posting it (with the XSRF token) turns the fields into
``user_options`` and starts the server; a spawner without options starts at once on GET,
as in JupyterHub (``?opt-NAME=VALUE`` arguments feed the form's fields without showing it).
The browser then waits on the pending page, whose script follows the progress stream.
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..auth import refresh
from ..db.models import Server, User
from ..errors import BadRequest, HTTPError, SpawnError
from ..names import check_server_name
from ..spawners.base import Spawner, UserInfo
from .pages import api_path, may, named_server_limit, nav, pending_url, server_state, spawn_url
from .refresh import spawn_refused
from .render import Page, safe_next, signed_in

if TYPE_CHECKING:
    from .hub import Hub

log = logging.getLogger("courtyard.web")

START_SCOPES = ("start:servers", "servers")
FORM_META_FIELDS = ("_xsrf", "next")
_NONE = "/\x00"


def next_arg(base_url: str, value: str | None) -> str:
    """A ``next`` argument if it is a path on the site at ``base_url``, else ""."""
    url = safe_next(base_url, value, _NONE) if value else _NONE
    return "" if url == _NONE else url


class Target:
    """The server a spawn page is about: its owner (a row, None if unknown) and name."""

    def __init__(self, page: Page) -> None:
        assert page.user is not None
        params = page.request.path_params
        self.user_name: str = params.get("user", page.user.name)
        self.name: str = params.get("server", "")
        from ..db import queries

        self.user: User | None = page.user if self.user_name == page.user.name else \
            queries.get_user(page.db, self.user_name)
        self.server: Server | None = next(
            (s for s in self.user.servers if s.name == self.name), None) if self.user else None

    def info(self, hub: Hub) -> UserInfo:
        assert self.user is not None
        return UserInfo(self.user.name, bool(self.user.admin),
                        [g.name for g in self.user.groups], hub.read_auth_state(self.user))


async def start(page: Page, target: Target, options: dict[str, Any] | None) -> None:
    """Start ``target`` with ``options`` (None: the last ones); the API's rules apply."""
    hub, db = page.hub, page.db
    user, name = target.user, target.name
    assert user is not None
    if name and not hub.options.allow_named_servers:
        raise BadRequest("Named servers are not enabled.")
    if target.server is None and name:
        problem = check_server_name(name)
        if problem:
            raise BadRequest(problem)
        limit = await named_server_limit(page)
        if limit and sum(1 for s in user.servers if s.name) >= limit:
            raise BadRequest(f"You already have the maximum of {limit} named servers; delete "
                             "one before you create another.")
    await refresh.before_spawn(hub, db, user, page.request)  # refresh_pre_spawn
    hub.lifecycle.check_limits()
    server = target.server
    if server is None:
        server = Server(name=name, state={}, user_options={})
        user.servers.append(server)
        target.server = server
    if options is not None:
        server.user_options = options
    db.commit()
    try:
        hub.lifecycle.spawn(target.info(hub), server)
    except (SpawnError, ValueError) as e:
        raise BadRequest(str(e)) from None
    log.info("%s started %s's server %r from the spawn page", page.user.name if page.user
             else "?", user.name, name)


def options_from_form(spawner: Spawner, profiles: list[dict[str, Any]],
                      formdata: dict[str, list[str]]) -> dict[str, Any]:
    """``user_options`` from the posted fields: ``{"profile": slug}`` with profiles."""
    if profiles:
        slug = (formdata.get("profile") or [""])[0]
        if slug not in {p["slug"] for p in profiles}:
            raise BadRequest("Choose one of the offered profiles.")
        return {"profile": slug}
    return spawner.run_options_from_form(formdata)


@signed_in
async def spawn_page(page: Page, user: User) -> Response:
    hub, request = page.hub, page.request
    target = Target(page)
    if target.user is None or not may(page, START_SCOPES, target.user_name, target.name):
        return page.error(404, f"There is no server of {target.user_name} you may start.")
    if target.name and not hub.options.allow_named_servers:
        return page.error(400, "Named servers are not enabled on this hub.")
    next_url = next_arg(page.base_url, request.query_params.get("next"))
    state = server_state(page, target.user_name, target.server, target.name)
    if state in ("spawn", "check"):
        return page.redirect(_pending(page, target, next_url), status=302)
    if state == "ready":
        server_url = hub.server_routespec(target.user_name, target.name)
        return page.redirect(next_url or server_url, status=302)
    if state == "stop":
        return page.error(400, "This server is stopping; try again in a moment.")

    spawner = hub.lifecycle.make_spawner(target.info(hub), target.name)
    profiles = spawner.profiles()
    form_html = "" if profiles else await spawner.get_options_form()
    formdata: dict[str, list[str]] | None = None
    if request.method == "POST":
        if not await page.xsrf_ok():
            return page.error(403, "Your session expired or the form came from another "
                              "site; open the page again.")
        form = await page.form()
        formdata = {k: [str(v) for v in form.getlist(k)] for k in form
                    if k not in FORM_META_FIELDS}
        next_url = next_arg(page.base_url, await page.field("next")) or next_url
    else:
        opts = {k[4:]: request.query_params.getlist(k) for k in request.query_params
                if k.startswith("opt-")}
        if opts:
            formdata = opts
    if formdata is None and (profiles or form_html):
        return _render_form(page, target, profiles, form_html, next_url)
    try:
        options = options_from_form(spawner, profiles, formdata) if formdata is not None \
            else None
        if inspect.isawaitable(options):  # a JupyterHub spawner's may be async
            options = await options
        await start(page, target, options)
    except refresh.AuthExpired as e:
        return spawn_refused(page, target.user, e)
    except HTTPError as e:
        if profiles or form_html:
            return _render_form(page, target, profiles, form_html, next_url, e.message,
                                e.status)
        return page.error(e.status, e.message, e.headers)
    return page.redirect(_pending(page, target, next_url), status=303)


def _pending(page: Page, target: Target, next_url: str) -> str:
    url = pending_url(page, target.user_name, target.name)
    return f"{url}?{urlencode({'next': next_url})}" if next_url else url


def _render_form(page: Page, target: Target, profiles: list[dict[str, Any]], form_html: str,
                 next_url: str, error: str = "", status: int = 200) -> Response:
    chosen = next((p["slug"] for p in profiles if p.get("default")),
                  profiles[0]["slug"] if profiles else "")
    last = (target.server.user_options or {}).get("profile") if target.server else None
    if last in {p["slug"] for p in profiles}:
        chosen = last
    return page.render(
        "spawn.html", status=status, **nav(page), owner=target.user_name,
        own=target.user_name == (page.user.name if page.user else ""),
        server_name=target.name, profiles=profiles, chosen=chosen, options_form=form_html,
        action=spawn_url(page, target.user_name, target.name), next=next_url, error=error)


@signed_in
async def pending_page(page: Page, user: User) -> Response:
    """Progress of a starting server; the script redirects to it once it is ready."""
    hub, request = page.hub, page.request
    target = Target(page)
    if target.user is None or not may(page, ("read:servers",), target.user_name,
                                      target.name):
        return page.error(404, f"There is no server of {target.user_name} you may see.")
    state = server_state(page, target.user_name, target.server, target.name)
    server_url = hub.server_routespec(target.user_name, target.name)
    next_url = next_arg(page.base_url, request.query_params.get("next"))
    if state == "ready":
        return page.redirect(next_url or server_url, status=302)
    base = f"{page.base_url}hub/api/{api_path(target.user_name, target.name)}"
    failure = hub.lifecycle.failure(target.user_name, target.name)
    return page.render(
        "spawn_pending.html", **nav(page), owner=target.user_name,
        own=target.user_name == user.name, server_name=target.name,
        state="failed" if state == "stopped" and failure else state, failure=failure,
        progress_url=f"{base}/progress", logs_url=f"{base}/logs", server_api=base,
        server_url=hub.origins.link(next_url or server_url), home_url=page.url("home"),
        spawn_url=spawn_url(page, target.user_name, target.name),
        can_cancel=may(page, ("delete:servers",), target.user_name, target.name),
    )


def routes(base_url: str) -> list[BaseRoute]:
    prefix = f"{base_url}hub/"
    both = ["GET", "POST"]
    return [
        Route(f"{prefix}spawn", spawn_page, methods=both),
        Route(f"{prefix}spawn/{{user}}", spawn_page, methods=both),
        Route(f"{prefix}spawn/{{user}}/{{server}}", spawn_page, methods=both),
        Route(f"{prefix}spawn-pending/{{user}}", pending_page, methods=["GET"]),
        Route(f"{prefix}spawn-pending/{{user}}/{{server}}", pending_page, methods=["GET"]),
    ]

