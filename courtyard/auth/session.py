"""Browser sessions: the signed login cookie, the session id, and XSRF tokens.

``jupyterhub-hub-login`` (path ``{base_url}hub/``, HttpOnly, SameSite=Lax, Secure under
https) holds the user's ``cookie_id`` and a session id, signed with the hub's cookie secret
and dated, so it expires after ``cookie_max_age_days``. Logging out rotates ``cookie_id``,
which ends every session of that user on the server side, not just in this browser.

XSRF tokens are an HMAC of ``session id:cookie_id`` (the session id alone before login), so
a token is good only for the session it was issued to. They are handed out in the ``_xsrf``
cookie and in forms, and must come back as the ``_xsrf`` argument or an ``X-XSRFToken``
(or ``X-CSRFToken``) header on every cookie-authenticated request but HEAD and OPTIONS.

Pages sign a browser in by cookie only on a top-level navigation (``Sec-Fetch-Mode:
navigate``, not into a frame; or a client that sends no ``Sec-Fetch-*`` headers), unless
the request carries the session's XSRF token: a script on the hub's origin (a page a
user's server serves, when servers share it) that fetches ``/hub/home`` gets the login
page, not the XSRF token. Such requests are given no cookies either. A request with two
login cookies is not signed in: one was set for a parent domain by another site (cookie
tossing) and could sign the visitor in as someone else.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import logging
import re
import secrets
from datetime import timedelta
from typing import Protocol

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from ..db.models import User, utcnow
from .identity import Identity, ScopeCache, owner_scopes
from .scopes import parse_scopes, unparse_scopes


class SessionOptions(Protocol):
    @property
    def base_url(self) -> str: ...
    @property
    def cookie_max_age_days(self) -> float: ...
    @property
    def activity_resolution(self) -> int: ...


class Hub(Protocol):
    """What sign-in sessions need of the hub: its cookie secret and public URL (is it
    https), its base URL and cookie lifetime, and the cache of who may do what."""

    @property
    def options(self) -> SessionOptions: ...
    @property
    def public_url(self) -> str: ...
    @property
    def cookie_secret(self) -> bytes: ...
    @property
    def scope_cache(self) -> ScopeCache: ...

log = logging.getLogger("courtyard.auth")

LOGIN_COOKIE = "jupyterhub-hub-login"
SESSION_COOKIE = "jupyterhub-session-id"
XSRF_COOKIE = "_xsrf"
XSRF_HEADERS = ("x-xsrftoken", "x-csrftoken")
XSRF_FREE_METHODS = ("HEAD", "OPTIONS")
_SESSION_RE = re.compile(r"[0-9a-f]{32}")


def hub_path(hub: Hub) -> str:
    return f"{hub.options.base_url}hub/"


def is_secure(hub: Hub) -> bool:
    return hub.public_url.startswith("https:")


def new_session_id() -> str:
    return secrets.token_hex(16)


def new_cookie_id() -> str:
    return secrets.token_hex(16)


def session_id(request: Request) -> str | None:
    """The browser's session id, if it sent a well-formed one."""
    value = request.cookies.get(SESSION_COOKIE, "")
    return value if _SESSION_RE.fullmatch(value) else None


def _serializer(hub: Hub) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(hub.cookie_secret, salt="courtyard-hub-login")


def _max_age(hub: Hub) -> int:
    return int(hub.options.cookie_max_age_days * 86400)


def set_session_cookie(response: Response, hub: Hub, sid: str) -> None:
    response.set_cookie(SESSION_COOKIE, sid, path="/", httponly=True, samesite="lax",
                        secure=is_secure(hub))


def set_login_cookie(response: Response, hub: Hub, user: User, sid: str) -> None:
    """Sign ``user`` in on this browser, in session ``sid``."""
    value = _serializer(hub).dumps([user.cookie_id, sid])
    response.set_cookie(LOGIN_COOKIE, value, max_age=_max_age(hub), path=hub_path(hub),
                        httponly=True, samesite="lax", secure=is_secure(hub))
    set_session_cookie(response, hub, sid)
    set_xsrf_cookie(response, hub, xsrf_token(hub, sid, user.cookie_id))


def clear_login_cookies(response: Response, hub: Hub) -> None:
    secure = is_secure(hub)
    for name, path in ((LOGIN_COOKIE, hub_path(hub)), (SESSION_COOKIE, "/"),
                       (XSRF_COOKIE, hub_path(hub))):
        response.delete_cookie(name, path=path, secure=secure, httponly=name != XSRF_COOKIE,
                               samesite="lax")


def _tossed(request: Request, name: str) -> bool:
    """Whether the browser sent cookie ``name`` more than once (one set for a parent domain
    or a shorter path by someone else)."""
    header = request.headers.get("cookie", "")
    return sum(1 for part in header.split(";") if part.strip().startswith(f"{name}=")) > 1


def read_login_cookie(hub: Hub, request: Request) -> tuple[str, str] | None:
    """(cookie_id, session id) from a valid, unexpired login cookie."""
    raw = request.cookies.get(LOGIN_COOKIE)
    if not raw:
        return None
    if _tossed(request, LOGIN_COOKIE):
        log.warning("Not signing in %s %s: it carries two %s cookies (one tossed from "
                    "another site?)", request.method, request.url.path, LOGIN_COOKIE)
        return None
    try:
        value = _serializer(hub).loads(raw, max_age=_max_age(hub))
    except BadSignature:
        return None
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, str) and v for v in value)):
        return None
    return value[0], value[1]


def user_from_cookie(hub: Hub, request: Request, db: Session) -> tuple[User, str] | None:
    """The signed-in user and their session id; None when not signed in (or logged out)."""
    found = read_login_cookie(hub, request)
    if found is None:
        return None
    cookie_id, sid = found
    user = db.scalar(select(User).where(User.cookie_id == cookie_id))
    return (user, sid) if user is not None else None


FRAMED_DESTINATIONS = frozenset({"iframe", "frame", "embed", "object", "fencedframe"})


def is_navigation(request: Request) -> bool:
    """A top-level navigation (or a client that sends no ``Sec-Fetch-*`` headers, as
    JupyterHub treats them), not a script's fetch and not a frame."""
    mode = request.headers.get("sec-fetch-mode", "navigate").lower()
    dest = request.headers.get("sec-fetch-dest", "").lower()
    return mode == "navigate" and dest not in FRAMED_DESTINATIONS


def page_user(hub: Hub, request: Request, db: Session) -> tuple[User, str] | None:
    """The user a page request is signed in as: as :func:`user_from_cookie`, but a request
    that is not a navigation must carry the session's XSRF token (header or ``?_xsrf=``)."""
    found = user_from_cookie(hub, request, db)
    if found is None or is_navigation(request):
        return found
    user, sid = found
    if check_xsrf(hub, request, sid, user.cookie_id):
        return found
    log.warning("Not signing in %s %s: Sec-Fetch-Mode %s, Sec-Fetch-Dest %s without the "
                "XSRF token (a script, or a frame)", request.method, request.url.path,
                request.headers.get("sec-fetch-mode"), request.headers.get("sec-fetch-dest"))
    return None


def end_sessions(db: Session, user: User) -> None:
    """Invalidate every login cookie of ``user`` (logout, password change)."""
    user.cookie_id = new_cookie_id()


# -- XSRF -----------------------------------------------------------------------------------
def xsrf_token(hub: Hub, sid: str, cookie_id: str = "") -> str:
    mac = hmac.new(hub.cookie_secret, f"xsrf|{sid}|{cookie_id}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()[:24]).decode()


def set_xsrf_cookie(response: Response, hub: Hub, token: str) -> None:
    # readable by scripts on purpose: they echo it in the X-XSRFToken header
    response.set_cookie(XSRF_COOKIE, token, path=hub_path(hub), samesite="lax",
                        secure=is_secure(hub))


def xsrf_from_request(request: Request, form_value: str | None = None) -> str:
    for header in XSRF_HEADERS:
        if request.headers.get(header):
            return request.headers[header]
    return form_value or request.query_params.get("_xsrf", "")


def check_xsrf(hub: Hub, request: Request, sid: str | None, cookie_id: str = "",
               form_value: str | None = None) -> bool:
    """Whether the request carries the XSRF token of its session."""
    if not sid:
        return False
    given = xsrf_from_request(request, form_value)
    # as bytes: compare_digest refuses str with non-ASCII (a 500 instead of a refusal)
    return bool(given) and hmac.compare_digest(given.encode(),
                                               xsrf_token(hub, sid, cookie_id).encode())


# -- cookie authentication of API requests --------------------------------------------------
def _json_or_no_body(request: Request) -> bool:
    ctype = request.headers.get("content-type")
    if not ctype:
        return True
    return ctype.split(";")[0].strip().lower() == "application/json"


def identify_cookie(hub: Hub, request: Request, db: Session) -> Identity | None:
    """The API caller from the login cookie, if XSRF and Content-Type checks pass.

    Cookie authentication of a POST with a non-JSON body is refused (an HTML form could
    send it cross-site), and so is any request but HEAD/OPTIONS without the XSRF token.
    """
    found = user_from_cookie(hub, request, db)
    if found is None:
        return None
    user, sid = found
    if request.method not in ("GET", "HEAD", "OPTIONS") and not _json_or_no_body(request):
        log.warning("Not accepting cookie auth for %s %s with Content-Type %s", request.method,
                    request.url.path, request.headers.get("content-type"))
        return None
    if request.method not in XSRF_FREE_METHODS and not check_xsrf(hub, request, sid,
                                                                  user.cookie_id):
        log.warning("Not accepting cookie auth for %s %s: missing or wrong XSRF token",
                    request.method, request.url.path)
        return None
    now = utcnow()
    resolution = timedelta(seconds=hub.options.activity_resolution)
    if user.last_activity is None or now - user.last_activity >= resolution:
        user.last_activity = now
        db.commit()
    return cookie_identity(hub, db, user, sid)


def cookie_identity(hub: Hub, db: Session, user: User, sid: str | None) -> Identity:
    """A signed-in user holds all of their own scopes."""
    key = ("cookie", user.id, None)
    ident = hub.scope_cache.identities.get(key)
    if ident is None:
        parsed = parse_scopes(owner_scopes(db, user))
        ident = Identity(kind="user", id=user.id, name=user.name, parsed=parsed,
                         expanded=frozenset(unparse_scopes(parsed)), admin=bool(user.admin))
        hub.scope_cache.identities[key] = ident
    return dataclasses.replace(ident, session_id=sid)
