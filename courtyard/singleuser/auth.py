"""Sign-in to a single-user server through the hub: Jupyter Server's IdentityProvider and
Authorizer, and the OAuth login, callback and logout handlers.

A request is authenticated by, in order: ``?token=`` (only for WebSocket requests, or when
``JUPYTERHUB_ALLOW_TOKEN_IN_URL`` is set), the ``Authorization: token|Bearer`` header, or the
cookie named after the OAuth client id (path = the server's prefix, signed with a secret made
per process). The token is resolved with ``GET {hub}/api/user`` (cached), and the visitor
must hold one of ``JUPYTERHUB_OAUTH_ACCESS_SCOPES`` (see :mod:`.access`).

A browser without a cookie is sent to ``{prefix}login``, which starts the OAuth code flow
with PKCE (S256) against the hub and comes back to ``{prefix}oauth_callback``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from jupyter_server.auth.authorizer import Authorizer
from jupyter_server.auth.decorator import allow_unauthenticated
from jupyter_server.auth.identity import IdentityProvider, User
from jupyter_server.base.handlers import JupyterHandler
from tornado.web import HTTPError, RequestHandler, create_signed_value, decode_signed_value
from traitlets import Bool, Instance, Integer, default

from .access import granted
from .env import HubEnv
from .hub import HubClient, Model

STATE_TTL = 600  # seconds a sign-in may take between leaving for the hub and coming back


@dataclass
class _Pending:
    next_url: str
    verifier: str
    expires: float


class HubUser(User):
    """A Jupyter Server user that remembers the hub's model (name, scopes, groups...)."""

    def __init__(self, model: Model, token: str) -> None:
        info = model.get("user_info") or {}
        name = model["name"]
        super().__init__(
            username=name,
            name=str(info.get("name") or name),
            display_name=str(info.get("display_name") or info.get("name") or name),
            initials=info.get("initials"),
            avatar_url=info.get("avatar_url"),
            color=info.get("color"),
        )
        self.hub_model = model
        self.hub_token = token

    @property
    def scopes(self) -> list[str]:
        return list(self.hub_model.get("scopes") or [])


class HubIdentityProvider(IdentityProvider):
    """Authenticates visitors with tokens the hub issued (OAuth cookie or API token)."""

    cache_max_age = Integer(
        help="Seconds a token's identity is remembered before asking the hub again (at most "
        "300; default $COURTYARD_SINGLEUSER_CACHE_MAX_AGE or 60). Revoked tokens and shares "
        "stop working within this time.").tag(config=True)
    allow_token_in_url = Bool(help="Accept ?token= on any request, not only WebSockets "
                              "($JUPYTERHUB_ALLOW_TOKEN_IN_URL).").tag(config=True)
    allow_websocket_cookie_auth = Bool(help="Accept the cookie on WebSocket requests "
                                       "($JUPYTERHUB_ALLOW_WEBSOCKET_COOKIE_AUTH).").tag(config=True)
    hub_env = Instance(HubEnv)
    hub = Instance(HubClient)

    # no token of our own: Jupyter Server must neither make one nor print it
    need_token = Bool(False)
    token_generated = False

    @default("hub_env")
    def _default_env(self) -> HubEnv:
        return HubEnv.from_environ()

    @default("cache_max_age")
    def _default_cache(self) -> int:
        return self.hub_env.cache_max_age

    @default("allow_token_in_url")
    def _default_allow_url(self) -> bool:
        return self.hub_env.allow_token_in_url

    @default("allow_websocket_cookie_auth")
    def _default_ws_cookie(self) -> bool:
        return self.hub_env.allow_websocket_cookie_auth

    @default("hub")
    def _default_hub(self) -> HubClient:
        return HubClient(self.hub_env, min(300, max(0, self.cache_max_age)))

    @default("token")
    def _default_token(self) -> str:
        return ""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._cookie_secret = secrets.token_bytes(32)
        self._pending: dict[str, _Pending] = {}

    # -- the contract ------------------------------------------------------------------------
    async def get_user(self, handler: RequestHandler) -> HubUser | None:
        cached = getattr(handler, "_courtyard_user", False)
        if cached is None or isinstance(cached, HubUser):  # resolved already for this request
            return cached
        user = await self._resolve(handler)
        handler._courtyard_user = user  # type: ignore[attr-defined]
        return user

    async def _resolve(self, handler: RequestHandler) -> HubUser | None:
        found = self._token_from_request(handler)
        if found is None:
            return None
        token, source = found
        model = await self.hub.identify(token)
        if model is None:
            if source == "cookie":
                self.clear_login_cookie(handler)
            return None
        if not granted(model.get("scopes") or [], self.hub_env.access_scopes):
            kind = model.get("kind", "user")
            message = f"{kind} {model.get('name')} is not allowed to use this server."
            self.log.warning("Refusing %s (%s): no access scope", model.get("name"), source)
            handler._courtyard_refused = message  # type: ignore[attr-defined]
            self.hub.forget(token)  # a share granted meanwhile counts on the next request
            return None
        if source != "cookie":
            handler._token_authenticated = True  # type: ignore[attr-defined]
        return HubUser(model, token)

    def _token_from_request(self, handler: RequestHandler) -> tuple[str, str] | None:
        websocket = _is_websocket(handler)
        url_token = handler.get_query_argument("token", "")
        if url_token and (websocket or self.allow_token_in_url):
            return url_token, "url"
        header = handler.request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() in ("token", "bearer") and value.strip():
            return value.strip(), "header"
        if websocket and not self.allow_websocket_cookie_auth:
            return None
        token = self.get_login_cookie(handler)
        return (token, "cookie") if token else None

    def get_handlers(self) -> list[tuple[str, Any, dict[str, Any]]]:  # type: ignore[override]
        args = {"provider": self}
        return [("/login", OAuthLoginHandler, args), ("/logout", HubLogoutHandler, args),
                ("/oauth_callback", OAuthCallbackHandler, args)]

    def validate_security(self, app: Any, ssl_options: dict[str, Any] | None = None) -> None:
        """The hub authenticates everyone; the base class's warnings do not apply."""

    @property
    def login_available(self) -> bool:
        return True

    def page_config_hook(self, handler: RequestHandler, page_config: dict[str, Any]
                         ) -> dict[str, Any]:
        """What JupyterLab needs for File > Hub Control Panel, Log Out and sharing."""
        env = self.hub_env
        user = handler.current_user
        page_config.update(
            hubUser=user.username if isinstance(user, User) else "",
            hubServerUser=env.user,
            hubPrefix=env.hub_prefix,
            hubHost=env.host,
            hubServerName=env.server_name,
            shareUrl=f"{env.hub_prefix}user-redirect",
            token=user.hub_token if isinstance(user, HubUser) else "",
        )
        return page_config

    # -- the cookie ------------------------------------------------------------------------
    @property
    def hub_cookie_name(self) -> str:
        """The sign-in cookie's name: the server's OAuth client id (unique per server)."""
        return self.hub_env.client_id or "courtyard-singleuser"

    def get_cookie_name(self, handler: RequestHandler) -> str:
        """What jupyter_server reads the cookie's name from (its ``cookie_name`` option
        is not used: the name is the hub's)."""
        return self.hub_cookie_name

    def get_login_cookie(self, handler: RequestHandler) -> str | None:
        raw = handler.get_cookie(self.hub_cookie_name)
        if not raw:
            return None
        value = decode_signed_value(self._cookie_secret, self.hub_cookie_name, raw,
                                    max_age_days=31)
        return value.decode() if value else None

    def set_login_cookie_token(self, handler: RequestHandler, token: str, max_age: int) -> None:
        value = create_signed_value(self._cookie_secret, self.hub_cookie_name, token)
        options: dict[str, Any] = {"path": self.hub_env.prefix, "httponly": True,
                                   "samesite": "Lax", "secure": self.hub_env.secure}
        options.update({k: v for k, v in self.hub_env.cookie_options.items()
                        if k in ("domain", "samesite", "secure")})
        handler.set_cookie(self.hub_cookie_name, value.decode(), max_age=max_age, **options)

    def clear_login_cookie(self, handler: RequestHandler) -> None:
        handler.clear_cookie(self.hub_cookie_name, path=self.hub_env.prefix)

    # -- the OAuth flow --------------------------------------------------------------------
    def begin_login(self, handler: RequestHandler, next_url: str) -> str:
        """Remember a sign-in under a fresh state; returns the hub URL to send the browser to."""
        now = time.monotonic()
        self._pending = {k: p for k, p in self._pending.items() if p.expires > now}
        state = secrets.token_urlsafe(24)
        verifier = secrets.token_urlsafe(48)
        self._pending[state] = _Pending(next_url, verifier, now + STATE_TTL)
        # binds the flow to this browser: a code for someone else's session is refused
        handler.set_cookie(self._state_cookie(state), _digest(state), path=self.hub_env.prefix,
                           max_age=STATE_TTL, httponly=True, samesite="Lax",
                           secure=self.hub_env.secure)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        params = {
            "client_id": self.hub_env.client_id, "redirect_uri": self.hub_env.callback_url,
            "response_type": "code", "state": state,
            "code_challenge": challenge.rstrip(b"=").decode(), "code_challenge_method": "S256",
        }
        return f"{self.hub_env.authorize_url}?{urlencode(params)}"

    def finish_login(self, handler: RequestHandler, state: str) -> _Pending:
        """The sign-in ``state`` names, if this browser started it; raises 400 otherwise."""
        cookie = self._state_cookie(state)
        sent = handler.get_cookie(cookie)
        handler.clear_cookie(cookie, path=self.hub_env.prefix)
        pending = self._pending.pop(state, None)
        if not sent or not hmac.compare_digest(sent.encode(), _digest(state).encode()) \
                or pending is None:
            raise HTTPError(400, "This sign-in was not started in this browser, or it took "
                            "too long; open the server's address again.")
        if pending.expires <= time.monotonic():
            raise HTTPError(400, "This sign-in took too long; open the server's address again.")
        return pending

    def _state_cookie(self, state: str) -> str:
        return f"{self.hub_cookie_name}-oauth-state-{_digest(state)[:8]}"

    def safe_next(self, url: str) -> str:
        """``url`` when it is a path on this server, else the server's default page."""
        prefix = self.hub_env.prefix
        parts = urlsplit(url)
        if (not url or parts.scheme or parts.netloc or url.startswith("//") or "\\" in url
                or not parts.path.startswith(prefix)):
            return prefix
        return url


def _digest(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def _is_websocket(handler: RequestHandler) -> bool:
    headers = handler.request.headers
    return (headers.get("Sec-Fetch-Mode", "").lower() == "websocket"
            or headers.get("Upgrade", "").lower() == "websocket")


class HubAuthorizer(Authorizer):
    """Everyone the identity provider lets in may do everything; checked again here so that
    a handler relying only on ``@authorized`` is still protected."""

    def is_authorized(self, handler: JupyterHandler, user: User, action: str,
                      resource: str) -> bool:
        provider = self.identity_provider
        if not isinstance(user, HubUser) or not isinstance(provider, HubIdentityProvider):
            return False
        return bool(granted(user.scopes, provider.hub_env.access_scopes))


class _HubHandler(JupyterHandler):
    def initialize(self, provider: HubIdentityProvider) -> None:
        self.provider = provider


class OAuthLoginHandler(_HubHandler):
    """``{prefix}login``: where Jupyter Server sends browsers that are not signed in."""

    @allow_unauthenticated
    def get(self) -> None:
        refused = getattr(self, "_courtyard_refused", None)
        if refused:
            raise HTTPError(403, refused)
        next_url = self.provider.safe_next(self.get_argument("next", ""))
        if self.current_user is not None:
            self.redirect(next_url)
            return
        self.redirect(self.provider.begin_login(self, next_url))


class OAuthCallbackHandler(_HubHandler):
    """``{prefix}oauth_callback``: the hub sends the browser back here with a code."""

    @allow_unauthenticated
    async def get(self) -> None:
        error = self.get_argument("error", "")
        if error:
            reason = self.get_argument("error_description", "") or error
            raise HTTPError(403, f"The hub did not sign you in: {reason}")
        code = self.get_argument("code", "")
        state = self.get_argument("state", "")
        if not code or not state:
            raise HTTPError(400, "code and state are required")
        pending = self.provider.finish_login(self, state)
        reply = await self.provider.hub.exchange_code(code, pending.verifier)
        token = reply["access_token"]
        model = await self.provider.hub.identify(token)
        if model is None:
            raise HTTPError(403, "The hub issued a token it does not recognise")
        if not granted(model.get("scopes") or [], self.provider.hub_env.access_scopes):
            raise HTTPError(403, f"{model.get('kind', 'user')} {model.get('name')} is not "
                            "allowed to use this server.")
        max_age = int(reply.get("expires_in") or 14 * 86400)
        self.provider.set_login_cookie_token(self, token, max_age)
        self.log.info("Signed in %s through the hub", model.get("name"))
        self.redirect(pending.next_url)


class HubLogoutHandler(_HubHandler):
    """``{prefix}logout``: forget this server's cookie, then sign out of the hub."""

    @allow_unauthenticated
    def get(self) -> None:
        self.provider.clear_login_cookie(self)
        env = self.provider.hub_env
        self.redirect(f"{env.host}{env.hub_prefix}logout")
