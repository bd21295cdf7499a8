"""Shared machinery of the HTML pages: templates, the signed-in user, XSRF, redirects.

A page endpoint opens a :class:`Page` for its request, which knows the user (from the
login cookie), the browser session, and the XSRF token every form must carry; ``render``
fills ``page.html``-based templates and sets the session and ``_xsrf`` cookies.
"""

from __future__ import annotations

import functools
import logging
import weakref
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict
from urllib.parse import quote, urlsplit

from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from .. import __version__
from ..auth import session as sess
from ..db.models import User

if TYPE_CHECKING:
    import jinja2

    from .hub import Hub

log = logging.getLogger("courtyard.web")

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

_environments: weakref.WeakKeyDictionary[Hub, jinja2.Environment] = weakref.WeakKeyDictionary()


def environment(hub: Hub) -> jinja2.Environment:
    """The hub's Jinja environment: ``template_paths`` first, then the built-in templates."""
    env = _environments.get(hub)
    if env is None:
        import jinja2  # on the first page, not before the hub answers its API

        paths = [*hub.options.template_paths, *hub.options.extra_template_paths]
        loaders: list[jinja2.BaseLoader] = [jinja2.FileSystemLoader(p) for p in paths]
        # as JupyterHub: "templates/page.html" is always the built-in one, so a site's
        # page.html can extend it
        loaders.append(jinja2.PrefixLoader({"templates": jinja2.FileSystemLoader(TEMPLATES_DIR)}))
        loaders.append(jinja2.FileSystemLoader(TEMPLATES_DIR))
        env = _make_env(jinja2.ChoiceLoader(loaders))
        _environments[hub] = env
    return env


def _make_env(loader: jinja2.BaseLoader) -> jinja2.Environment:
    import jinja2

    return jinja2.Environment(loader=loader, autoescape=jinja2.select_autoescape(default=True),
                              trim_blocks=True, lstrip_blocks=True)


_builtin: list[jinja2.Environment] = []


def builtin_environment() -> jinja2.Environment:
    """The built-in templates alone: what the login and error pages fall back to when a
    site's template is broken."""
    if not _builtin:
        import jinja2

        _builtin.append(_make_env(jinja2.ChoiceLoader([
            jinja2.PrefixLoader({"templates": jinja2.FileSystemLoader(TEMPLATES_DIR)}),
            jinja2.FileSystemLoader(TEMPLATES_DIR)])))
    return _builtin[0]


# the page-specific announcements of JupyterHub's template_vars
ANNOUNCEMENTS = {"login.html": "announcement_login", "home.html": "announcement_home",
                 "spawn.html": "announcement_spawn", "logout.html": "announcement_logout"}

# pages that must always render: a broken site template falls back to the built-in one
ALWAYS_RENDER = ("login.html", "error.html")


def safe_next(base_url: str, value: str | None, default: str | None = None) -> str:
    """``value`` if it is a path on the site at ``base_url``, else the home page: no open
    redirects."""
    fallback = default or f"{base_url}hub/home"
    if not value or not value.isprintable() or "\\" in value:
        return fallback
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not value.startswith("/") or value.startswith("//"):
        return fallback
    return value if parts.path.startswith(base_url) else fallback


def login_redirect(base_url: str, request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    url = f"{base_url}hub/login?next={quote(target, safe='/')}"
    return RedirectResponse(url, status_code=302, headers=SECURITY_HEADERS)


def signed_in(handler: Callable[[Page, User], Awaitable[Response]],
              ) -> Callable[[Request], Awaitable[Response]]:
    """A page for signed-in users: ``handler(page, user)`` runs in the page's database
    session; a signed-out visitor is sent to the login page and back."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        hub: Hub = request.app.state.hub
        with hub.session() as db:
            page = Page(request, db)
            if page.user is None:
                return login_redirect(page.base_url, request)
            return await handler(page, page.user)

    return endpoint


class ServiceLink(TypedDict):
    """A service the signed-in user may open, as JupyterHub's templates read it."""

    name: str
    href: str
    info: dict[str, Any]


class Page:
    """One HTML request: the hub, the DB session, the user if signed in, the session id."""

    def __init__(self, request: Request, db: Session) -> None:
        self.request = request
        self.db = db
        self.hub: Hub = request.app.state.hub
        found = sess.page_user(self.hub, request, db)
        self.user: User | None = found[0] if found else None
        sid = found[1] if found else sess.session_id(request)
        self.new_session = sid is None
        self.sid: str = sid or sess.new_session_id()
        self._form: FormData | None = None

    @property
    def base_url(self) -> str:
        return self.hub.options.base_url

    @property
    def current_user(self) -> User | None:
        """The signed-in user, as JupyterHub's handlers name it (callables of the handler,
        e.g. ``named_server_limit_per_user``, read it)."""
        return self.user

    def url(self, path: str) -> str:
        """An absolute path below ``{base_url}hub/``."""
        return f"{self.base_url}hub/{path}"

    @property
    def xsrf(self) -> str:
        return sess.xsrf_token(self.hub, self.sid, self.user.cookie_id if self.user else "")

    async def form(self) -> FormData:
        if self._form is None:
            self._form = await self.request.form(max_files=0, max_fields=50)
        return self._form

    async def field(self, name: str) -> str:
        value = (await self.form()).get(name)
        return value if isinstance(value, str) else ""

    async def xsrf_ok(self) -> bool:
        """Whether a form post carries this session's XSRF token, sent by the browser's
        own form submission (a script could read a sign-in form's token with fetch)."""
        if self.new_session or not sess.is_navigation(self.request):
            return False
        cookie_id = self.user.cookie_id if self.user else ""
        return sess.check_xsrf(self.hub, self.request, self.sid, cookie_id,
                               await self.field("_xsrf"))

    def next_url(self, value: str | None = None) -> str:
        return safe_next(self.base_url, value if value is not None
                         else self.request.query_params.get("next"))

    def context(self, template: str = "", **ns: Any) -> dict[str, Any]:
        """What every template sees: the hub's names, JupyterHub's names for them, and
        ``template_vars`` (with the page's own announcement, if it has one)."""
        values = self._context(**ns)
        page_announcement = values.get(ANNOUNCEMENTS.get(template, ""))
        if isinstance(page_announcement, str):  # JupyterHub's announcement_login, ...
            values["announcement"] = page_announcement
        return values

    def _context(self, **ns: Any) -> dict[str, Any]:
        hub = self.hub
        auth = hub.authenticator
        return {
            "base_url": self.base_url,
            "hub_prefix": self.url(""),
            "static_url": lambda path: self.url(f"static/{path}"),
            "user": self.user,
            "xsrf": self.xsrf,
            "login_url": self.url("login"),
            "logout_url": self.url("logout"),
            "version": __version__,
            "can_change_password": bool(getattr(auth, "allow_password_change", False)),
            # JupyterHub's names for the same things, for sites' templates
            "prefix": self.base_url,
            "xsrf_token": self.xsrf,
            "static_url_prefix": self.url("static/"),
            "services": self.services(),
            "parsed_scopes": {},
            "admin_access": False,
            **self.template_vars(),
            **ns,
        }

    def template_vars(self) -> dict[str, Any]:
        """``template_vars``, called with the signed-in user if it is a callable."""
        value = self.hub.options.template_vars
        if callable(value):
            try:
                value = value(self.user)
            except Exception as e:  # the page still renders, without them
                log.error("c.JupyterHub.template_vars failed: %s: %s", type(e).__name__, e)
                return {}
        if not isinstance(value, dict):
            log.error("c.JupyterHub.template_vars must be a dict or return one; got %r", value)
            return {}
        return value

    def services(self) -> list[ServiceLink]:
        """The services with a URL the signed-in user may open (JupyterHub's ``services``)."""
        if self.user is None:
            return []
        from sqlalchemy import select

        from ..db.models import Service

        rows = self.db.scalars(select(Service).where(Service.url.is_not(None),
                                                     Service.display.is_(True)))
        return [{"name": s.name, "href": f"{self.base_url}services/{s.name}/",
                 "info": s.info} for s in rows]

    def _finish(self, response: Response) -> Response:
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        if not sess.is_navigation(self.request):
            return response  # a script's request: no session or XSRF cookie for it
        if self.new_session:
            sess.set_session_cookie(response, self.hub, self.sid)
            self.new_session = False
        sess.set_xsrf_cookie(response, self.hub, self.xsrf)
        return response

    def render(self, template: str, status: int = 200, headers: Mapping[str, str] | None = None,
               **ns: Any) -> Response:
        import jinja2

        try:
            found = environment(self.hub).get_template(template)
            html = found.render(self.context(template, **ns))
        except Exception as e:  # a site's template may fail in any way: only its page does
            where = f" (line {e.lineno} of {e.filename or e.name})" \
                if isinstance(e, jinja2.TemplateSyntaxError) else ""
            log.error("Template %s failed: %s: %s%s", template, type(e).__name__, e, where)
            if template not in ALWAYS_RENDER:
                template, status, headers = "error.html", 500, None
                ns = {"status_code": 500, "message": "This page's template is broken; the "
                      "hub's log says why."}
            html = builtin_environment().get_template(template).render(
                self.context(template, **ns))
        return self._finish(HTMLResponse(html, status_code=status, headers=headers))

    def redirect(self, url: str, status: int = 303) -> Response:
        """Redirect; a path to a server goes to the server's own origin (subdomains)."""
        return self._finish(RedirectResponse(self.hub.origins.link(url), status_code=status))

    def sign_in(self, user: User, url: str) -> Response:
        """Redirect to ``url`` signed in as ``user``, in a new session (no fixation)."""
        self.user, self.sid, self.new_session = user, sess.new_session_id(), False
        response = RedirectResponse(self.hub.origins.link(url), status_code=303,
                                    headers=SECURITY_HEADERS)
        sess.set_login_cookie(response, self.hub, user, self.sid)
        return response

    def sign_out(self, response: Response) -> Response:
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        sess.clear_login_cookies(response, self.hub)
        return response

    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        return self.render("error.html", status=status, headers=headers, status_code=status,
                           message=message)
