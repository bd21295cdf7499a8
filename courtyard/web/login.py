"""Sign-in pages: ``/hub/login`` and ``/hub/logout`` (``/hub/`` and home: :mod:`.pages`).

:func:`routes` is the route list the app mounts: these pages, ``/hub/static``, and the pages
and API endpoints the authenticator brings (OAuth callbacks, sign-up, password changes).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, TypedDict

from sqlalchemy import delete
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ..auth import login as auth_login, session as sess
from ..auth.base import LoginRefused
from ..db.models import APIToken
from .render import STATIC_DIR, Page

if TYPE_CHECKING:
    from .hub import Hub

log = logging.getLogger("courtyard.web")


class LoginButton(TypedDict):
    name: str
    url: str


class LoginMethods(TypedDict):
    """What the login page offers."""

    password_form: bool
    buttons: list[LoginButton]
    signup_url: str | None


def login_methods(page: Page, next_url: str) -> LoginMethods:
    """What the login page offers: a password form, and a button per external service."""
    from urllib.parse import urlencode

    auth = page.hub.authenticator
    children = getattr(auth, "authenticators", None) or [auth]
    buttons: list[LoginButton] = []
    for child in children:
        if child.login_service:
            url = child.login_url(page.base_url) + "?" + urlencode({"next": next_url})
            buttons.append({"name": child.login_service, "url": url})
    return {
        "password_form": any(not c.login_service and c.login_url(page.base_url)
                             for c in children),
        "buttons": buttons,
        "signup_url": next((page.url("signup") for c in children
                            if getattr(c, "enable_signup", False)), None),
    }


def _render_login(page: Page, next_url: str, status: int = 200, error: str = "",
                  username: str = "", headers: dict[str, str] | None = None) -> Response:
    methods = login_methods(page, next_url)
    return page.render("login.html", status=status, headers=headers, next=next_url,
                       error=error, username=username,
                       **jupyterhub_login_names(page, next_url, error, username), **methods)


def jupyterhub_login_names(page: Page, next_url: str, error: str, username: str
                           ) -> dict[str, Any]:
    """JupyterHub's login-page variables, for sites' ``login.html``: ``login_error``,
    ``login_service``, ``authenticator``, ``authenticator_login_url`` and, from an
    authenticator that has it, ``custom_html`` (itself a template, as in JupyterHub)."""
    from urllib.parse import urlencode

    auth = page.hub.authenticator
    url = auth.login_url(page.base_url) if hasattr(auth, "login_url") else ""
    names: dict[str, Any] = {
        "login_error": error, "authenticator": auth,
        "login_service": getattr(auth, "login_service", "") or "",
        "authenticator_login_url": f"{url or page.url('login')}?{urlencode({'next': next_url})}",
    }
    inner = getattr(auth, "inner", auth)  # a JupyterHub authenticator run by courtyard.compat
    try:
        getter = getattr(inner, "get_custom_html", None)
        custom = getter(page.hub.options.base_url + "hub/") if callable(getter) \
            else getattr(inner, "custom_html", "")
        if custom:
            import jinja2

            names["custom_html"] = jinja2.Template(custom).render(
                next=next_url, username=username, login_error=error,
                login_url=page.url("login"), authenticator=auth, xsrf=page.xsrf,
                authenticator_login_url=names["authenticator_login_url"])
    except Exception as e:  # the login page always renders: with the built-in form then
        log.error("The authenticator's custom_html failed: %s: %s", type(e).__name__, e)
    return names


async def login(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    with hub.session() as db:
        page = Page(request, db)
        if request.method == "GET":
            return await _login_get(page)
        return await _login_post(page)


async def _login_get(page: Page) -> Response:
    next_url = page.next_url()
    if page.user is not None:
        return page.redirect(next_url, status=302)
    auth = page.hub.authenticator
    if getattr(auth, "signs_in_from_request", False):  # a JupyterHub plugin's auto_login
        return await _login_from_request(page, next_url)
    if auth.auto_login:
        methods = login_methods(page, next_url)
        if not methods["password_form"] and len(methods["buttons"]) == 1:
            return page.redirect(methods["buttons"][0]["url"], status=302)
    return _render_login(page, next_url)


async def _login_from_request(page: Page, next_url: str) -> Response:
    """JupyterHub's ``auto_login`` with no login handler of the authenticator's own: what
    signs the user in is in the request itself (a one-time token in the query, a header), so
    ``authenticate`` runs on this GET with ``data`` None, under the same throttle and rules.
    Only a top-level navigation signs in: a script's fetch or a frame cannot sign a visitor in
    to another account (login CSRF), nor spend their one-time token."""
    if not sess.is_navigation(page.request):
        return page.error(403, "Open this sign-in link in the browser itself.")
    ctx = auth_login.LoginContext(page.hub, page.request, page.db)
    try:
        model = await auth_login.attempt(ctx, None)
    except auth_login.TooManyAttempts as e:
        return page.error(429, e.message, e.headers)
    except LoginRefused as e:
        return page.error(e.status, e.message)
    except auth_login.AuthenticatorFailed as e:
        return page.error(500, e.message)
    if model is None:
        return page.error(403, auth_login.LOGIN_FAILED)
    user = auth_login.login_user(page.hub, page.db, model)
    page.db.commit()
    log.info("User %s signed in from %s", user.name, ctx.client_ip)
    return page.sign_in(user, next_url)


async def _login_post(page: Page) -> Response:
    next_url = page.next_url(await page.field("next") or page.request.query_params.get("next"))
    username = await page.field("username")
    if not await page.xsrf_ok():
        return _render_login(page, next_url, 403, "Your session expired or the form was sent "
                             "from another site; please try again.", username)
    data = {"username": username, "password": await page.field("password")}
    if await page.field("otp"):
        data["otp"] = await page.field("otp")
    ctx = auth_login.LoginContext(page.hub, page.request, page.db)
    try:
        model = await auth_login.attempt(ctx, data)
    except auth_login.TooManyAttempts as e:
        return _render_login(page, next_url, 429, e.message, username, e.headers)
    except LoginRefused as e:
        return _render_login(page, next_url, 403, e.message, username)
    except auth_login.AuthenticatorFailed as e:
        return _render_login(page, next_url, 500, e.message, username)
    if model is None:
        return _render_login(page, next_url, 403, auth_login.LOGIN_FAILED, username)
    user = auth_login.login_user(page.hub, page.db, model)
    page.db.commit()
    log.info("User %s signed in from %s", user.name, ctx.client_ip)
    return page.sign_in(user, next_url)


async def logout(request: Request) -> Response:
    """Sign out: end every session of the user on the server, clear the cookies.

    A GET from another site (a link or image) only shows a button, so a third party
    cannot sign anyone out or stop their servers (``shutdown_on_logout``).
    """
    hub: Hub = request.app.state.hub
    with hub.session() as db:
        page = Page(request, db)
        cross_site = request.headers.get("sec-fetch-site") == "cross-site"
        if page.user is not None and request.method == "GET" and cross_site:
            return page.render("logout.html")
        if request.method == "POST" and page.user is not None and not await page.xsrf_ok():
            return page.error(403, "Your session expired; sign out again.")
        user = page.user
        if user is not None:
            if hub.options.shutdown_on_logout and hasattr(hub, "stop_user_servers"):
                await hub.stop_user_servers(user)
            # tokens handed out in this session (OAuth logins to servers) end with it
            db.execute(delete(APIToken).where(APIToken.session_id == page.sid,
                                              APIToken.user_id == user.id))
            sess.end_sessions(db, user)
            db.commit()
            log.info("User %s signed out", user.name)
        target = getattr(hub.authenticator, "logout_redirect_url", "") or page.url("login")
        return page.sign_out(RedirectResponse(target, status_code=302))


def routes(hub: Hub) -> list[BaseRoute]:
    """The pages below ``{base_url}hub/``, static files, and the authenticator's handlers."""
    prefix = f"{hub.options.base_url}hub/"
    both = ["GET", "POST"]
    result: list[BaseRoute] = [
        Route(f"{prefix}login", login, methods=both),
        Route(f"{prefix}logout", logout, methods=both),
        Mount(f"{prefix}static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    for path, endpoint in hub.authenticator.get_handlers(hub):
        result.append(Route(prefix + path.lstrip("/"), endpoint, methods=both))
    return result


def api_routes(hub: Hub) -> list[BaseRoute]:
    """The authenticator's REST endpoints, mounted below ``{base_url}hub/api``."""
    return list(hub.authenticator.api_routes())
