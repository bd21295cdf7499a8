"""``oauth`` / ``oidc``: sign in with an OAuth 2 or OpenID Connect provider (oauthenticator's
option names), using the authorization-code flow with PKCE.

``/hub/oauth_login`` sends the browser to the provider with a random ``state`` (kept with the
PKCE verifier, the OIDC nonce and ``next`` in a signed ``oauthenticator-state`` cookie);
``/hub/oauth_callback`` checks the state, trades the code for tokens, verifies the ID token
(signature from the provider's JWKS, issuer, audience, nonce, expiry), reads the userinfo,
and signs the user in. Tokens go in ``auth_state`` and are refreshed before they expire
(``refresh_user``). With ``oidc_issuer`` the endpoints come from discovery.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from traitlets import Any as AnyTrait, Bool, Dict, Float, List, Set, Unicode, default

from ..errors import ConfigError
from .base import Authenticator, Handler, LoginRefused, maybe_await
from .tokens import pkce_challenge

if TYPE_CHECKING:
    from ..db.models import User
    from .login import AuthenticatorHub, LoginContext

STATE_MAX_AGE = 600


class OAuthError(Exception):
    """The provider refused or answered something unusable; the message is safe to show."""


@dataclass
class Endpoints:
    authorize: str
    token: str
    userinfo: str = ""
    jwks_uri: str = ""
    issuer: str = ""
    algorithms: list[str] = field(default_factory=lambda: ["RS256"])


def claim(claims: dict[str, Any], key: str | Callable[[dict[str, Any]], object]) -> Any:
    """``claims[key]``, where ``key`` may be a dotted path or a callable."""
    if callable(key):
        return key(claims)
    value: Any = claims
    for part in key.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


class OAuthenticator(Authenticator):
    """Authorization-code flow with PKCE. Subclasses set endpoints and claims."""

    login_service = Unicode("OAuth 2.0", help="Name on the 'Sign in with ...' button.").tag(
        config=True
    )
    client_id = Unicode(help="Client id registered with the provider ($OAUTH_CLIENT_ID).").tag(
        config=True
    )
    client_secret = Unicode(help="Client secret ($OAUTH_CLIENT_SECRET).").tag(config=True)
    oauth_callback_url = Unicode(help="Callback URL registered with the provider "
                                 "($OAUTH_CALLBACK_URL; default: the hub's public URL + "
                                 "hub/oauth_callback).").tag(config=True)
    authorize_url = Unicode(help="Authorization endpoint ($OAUTH2_AUTHORIZE_URL).").tag(
        config=True
    )
    token_url = Unicode(help="Token endpoint ($OAUTH2_TOKEN_URL).").tag(config=True)
    userdata_url = Unicode(help="Userinfo endpoint ($OAUTH2_USERDATA_URL).").tag(config=True)
    oidc_issuer = Unicode("", help="OpenID Connect issuer; endpoints come from its "
                          "/.well-known/openid-configuration.").tag(config=True)
    scope = List(Unicode(), help="Scopes to ask for.").tag(config=True)
    username_claim = AnyTrait("username", help="Claim (or dotted path, or callable(claims)) "
                              "holding the username.").tag(config=True)
    claim_groups_key = AnyTrait("", help="Claim (or dotted path, or callable(claims)) holding "
                                "the user's groups.").tag(config=True)
    allowed_groups = Set(help="Groups (from claim_groups_key) whose members may sign in.").tag(
        config=True
    )
    admin_groups = Set(help="Groups whose members are admins (re-checked at each login).").tag(
        config=True
    )
    basic_auth = Bool(True, help="Send the client credentials by HTTP Basic auth to the token "
                      "endpoint (else in the body).").tag(config=True)
    enable_pkce = Bool(True, help="Use PKCE (S256).").tag(config=True)
    extra_authorize_params = Dict(help="Extra parameters for the authorization request.").tag(
        config=True
    )
    userdata_token_method = Unicode("header", help="'header' (Bearer) or 'url' "
                                    "(?access_token=) for the userinfo request.").tag(config=True)
    validate_server_cert = Bool(True, help="Verify the provider's TLS certificates.").tag(
        config=True
    )
    http_timeout = Float(15, help="Seconds to wait for the provider.").tag(config=True)
    logout_redirect_url = Unicode("", help="Where to send the browser after logout (e.g. the "
                                  "provider's end-session page).").tag(config=True)

    @default("client_id")
    def _client_id(self) -> str:
        return os.environ.get("OAUTH_CLIENT_ID", "")

    @default("client_secret")
    def _client_secret(self) -> str:
        return os.environ.get("OAUTH_CLIENT_SECRET", "")

    @default("oauth_callback_url")
    def _callback(self) -> str:
        return os.environ.get("OAUTH_CALLBACK_URL", "")

    @default("authorize_url")
    def _authorize(self) -> str:
        return os.environ.get("OAUTH2_AUTHORIZE_URL", "")

    @default("token_url")
    def _token(self) -> str:
        return os.environ.get("OAUTH2_TOKEN_URL", "")

    @default("userdata_url")
    def _userdata(self) -> str:
        return os.environ.get("OAUTH2_USERDATA_URL", "")

    _endpoints: Endpoints | None = None

    # -- set-up --------------------------------------------------------------------------
    def check_config(self, hub: AuthenticatorHub) -> None:
        from ..compat.oauth import check_oauthenticator_options

        super().check_config(hub)
        check_oauthenticator_options(self)  # a dropped allow rule is a hole or a lock-out
        name = type(self).__name__
        if not self.client_id:
            raise ConfigError(f"c.{name}.client_id is not set (or $OAUTH_CLIENT_ID)")
        if not self.oidc_issuer and not (self.authorize_url and self.token_url):
            raise ConfigError(f"c.{name} needs oidc_issuer, or authorize_url and token_url")
        if not (self.allow_all or self.allowed_users or self.allowed_groups or self.admin_users
                or self.admin_groups or self.allow_existing_users):
            self.log.warning("%s: no allow_all, allowed_users or allowed_groups: nobody can "
                             "sign in", name)

    def login_url(self, base_url: str) -> str:
        return f"{base_url}hub/{self.url_prefix}oauth_login"

    def callback_url(self) -> str:
        if self.oauth_callback_url:
            return self.oauth_callback_url
        from urllib.parse import urlsplit

        public = urlsplit(self.started_hub.public_url)
        base = self.started_hub.options.base_url
        return f"{public.scheme}://{public.netloc}{base}hub/{self.url_prefix}oauth_callback"

    def get_handlers(self, hub: AuthenticatorHub) -> list[Handler]:
        return [(f"{self.url_prefix}oauth_login", self.login_handler),
                (f"{self.url_prefix}oauth_callback", self.callback_handler)]

    @property
    def state_cookie(self) -> str:
        return "oauthenticator-state" + (f"-{self.url_prefix.strip('/')}" if self.url_prefix
                                         else "")

    def _http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=self.http_timeout, verify=self.validate_server_cert,
                                 headers={"Accept": "application/json"})

    async def endpoints(self) -> Endpoints:
        """The provider's endpoints, from discovery (cached) or from the options."""
        if self._endpoints is not None:
            return self._endpoints
        ep = Endpoints(self.authorize_url, self.token_url, self.userdata_url)
        if self.oidc_issuer:
            url = self.oidc_issuer.rstrip("/") + "/.well-known/openid-configuration"
            async with self._http() as client:
                try:
                    doc = (await client.get(url)).raise_for_status().json()
                except (httpx.HTTPError, ValueError) as e:
                    raise OAuthError(f"discovery at {url} failed: {e}") from None
            ep = Endpoints(
                self.authorize_url or doc["authorization_endpoint"],
                self.token_url or doc["token_endpoint"],
                self.userdata_url or doc.get("userinfo_endpoint", ""),
                doc.get("jwks_uri", ""), doc.get("issuer", self.oidc_issuer),
                [a for a in doc.get("id_token_signing_alg_values_supported", ["RS256"])
                 if a != "none"],
            )
        self._endpoints = ep
        return ep

    # -- the browser flow --------------------------------------------------------------------
    def _serializer(self) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(self.started_hub.cookie_secret, salt="courtyard-oauth-state")

    async def login_handler(self, request: Request) -> Response:
        from ..auth import session as sess
        from ..web.render import SECURITY_HEADERS, safe_next

        hub = self.started_hub
        try:
            ep = await self.endpoints()
        except OAuthError as e:
            return await self._error(request, 502, f"Sign-in with {self.login_service} is not "
                                     f"available: {e}")
        state, verifier, nonce = (secrets.token_urlsafe(24), secrets.token_urlsafe(48),
                                  secrets.token_urlsafe(16))
        params = {"response_type": "code", "client_id": self.client_id,
                  "redirect_uri": self.callback_url(), "state": state,
                  "scope": " ".join(self.scope), **self.extra_authorize_params}
        if self.enable_pkce:
            params.update(code_challenge=pkce_challenge(verifier),
                          code_challenge_method="S256")
        if "openid" in self.scope:
            params["nonce"] = nonce
        sep = "&" if "?" in ep.authorize else "?"
        response = RedirectResponse(ep.authorize + sep + urlencode(params), status_code=302,
                                    headers=SECURITY_HEADERS)
        next_url = safe_next(hub.options.base_url, request.query_params.get("next"))
        value = self._serializer().dumps([state, verifier, nonce, next_url])
        response.set_cookie(self.state_cookie, value, max_age=STATE_MAX_AGE,
                            path=sess.hub_path(hub), httponly=True, samesite="lax",
                            secure=sess.is_secure(hub))
        return response

    async def _error(self, request: Request, status: int, message: str) -> Response:
        from ..web.render import Page

        with self.started_hub.session() as db:
            return Page(request, db).error(status, message)

    async def callback_handler(self, request: Request) -> Response:
        from ..web.render import Page
        from .login import LoginContext, login_user

        hub, params = self.started_hub, request.query_params
        if params.get("error"):
            return await self._error(request, 403, f"{self.login_service} refused the sign-in: "
                                     f"{params.get('error_description') or params['error']}")
        try:
            state, verifier, nonce, next_url = self._serializer().loads(
                request.cookies.get(self.state_cookie, ""), max_age=STATE_MAX_AGE)
        except (BadSignature, ValueError, TypeError):
            state = None
        if not state or not secrets.compare_digest(str(params.get("state", "")).encode(),
                                                   str(state).encode()):
            return await self._error(request, 400, "The sign-in took too long or came from "
                                     "elsewhere (OAuth state mismatch); please sign in again.")
        data = {"code": params.get("code", ""), "code_verifier": verifier, "nonce": nonce,
                "redirect_uri": self.callback_url()}
        with hub.session() as db:
            page = Page(request, db)
            try:
                model = await self.get_authenticated_user(LoginContext(hub, request, db), data)
            except OAuthError as e:
                self.log.warning("OAuth sign-in with %s failed: %s", self.login_service, e)
                return page.error(403, f"Sign-in with {self.login_service} failed: {e}")
            except LoginRefused as e:
                return page.error(e.status, e.message)
            except Exception:  # a hook raised: an error never signs anyone in
                from .login import AuthenticatorFailed

                self.log.exception("OAuth sign-in with %s failed: the authenticator raised",
                                   self.login_service)
                db.rollback()
                return page.error(500, AuthenticatorFailed().message)
            if model is None:
                return page.error(403, f"Your {self.login_service} account may not use this "
                                  "hub; ask its administrators.")
            user = login_user(hub, db, model)
            db.commit()
            self.log.info("User %s signed in with %s", user.name, self.login_service)
            response = page.sign_in(user, next_url)
            response.delete_cookie(self.state_cookie, path=f"{hub.options.base_url}hub/")
            return response

    # -- talking to the provider -------------------------------------------------------------
    async def token_request(self, data: dict[str, str]) -> dict[str, Any]:
        ep = await self.endpoints()
        # without basic_auth, the client's id and secret go in the form instead
        auth = httpx.BasicAuth(self.client_id, self.client_secret) if self.basic_auth \
            else httpx.USE_CLIENT_DEFAULT
        if not self.basic_auth:
            data = {**data, "client_id": self.client_id, "client_secret": self.client_secret}
        async with self._http() as client:
            try:
                response = await client.post(ep.token, data=data, auth=auth)
                token: dict[str, Any] = response.json()
            except (httpx.HTTPError, ValueError) as e:
                raise OAuthError(f"the token endpoint failed: {e}") from None
        if response.status_code != 200 or "access_token" not in token:
            raise OAuthError(f"the token endpoint answered {response.status_code}: "
                             f"{token.get('error_description') or token.get('error') or token}")
        if token.get("expires_in"):
            token["expires_at"] = int(time.time()) + int(token["expires_in"])
        return token

    async def verify_id_token(self, id_token: str, nonce: str | None) -> dict[str, Any]:
        from joserfc import jwt
        from joserfc.errors import JoseError
        from joserfc.jwk import KeySet

        ep = await self.endpoints()
        async with self._http() as client:
            try:
                keys = KeySet.import_key_set((await client.get(ep.jwks_uri)).json())
                claims = jwt.decode(id_token, keys, algorithms=ep.algorithms).claims
                options: dict[str, Any] = {
                    "iss": {"essential": True, "value": self.expected_issuer(ep, claims)},
                    "aud": {"essential": True, "value": self.client_id},
                    "exp": {"essential": True}}
                if nonce:
                    options["nonce"] = {"essential": True, "value": nonce}
                jwt.JWTClaimsRegistry(leeway=60, **options).validate(claims)
            except (httpx.HTTPError, ValueError, JoseError) as e:
                raise OAuthError(f"the ID token is not valid: {e}") from None
        return claims

    def expected_issuer(self, ep: Endpoints, claims: dict[str, Any]) -> str:
        return ep.issuer

    async def user_claims(self, token: dict[str, Any], nonce: str | None = None,
                          refreshing: bool = False) -> dict[str, Any]:
        """What the provider says about the user: ID token claims, then userinfo."""
        ep = await self.endpoints()
        claims: dict[str, Any] = {}
        if token.get("id_token") and ep.jwks_uri:
            claims.update(await self.verify_id_token(token["id_token"], nonce))
        elif "openid" in self.scope and self.oidc_issuer and not refreshing:
            raise OAuthError("the provider sent no ID token")
        if ep.userinfo:
            headers, params = {}, {}
            if self.userdata_token_method == "url":
                params["access_token"] = token["access_token"]
            else:
                headers["Authorization"] = f"Bearer {token['access_token']}"
            async with self._http() as client:
                try:
                    response = await client.get(ep.userinfo, headers=headers, params=params)
                    info = response.raise_for_status().json()
                except (httpx.HTTPError, ValueError) as e:
                    raise OAuthError(f"the userinfo endpoint failed: {e}") from None
            if claims.get("sub") and info.get("sub") and info["sub"] != claims["sub"]:
                raise OAuthError("userinfo is about another user than the ID token")
            claims.update(info)
        return claims

    def username_from_claims(self, claims: dict[str, Any]) -> object:
        """The user name in what the provider said (oauthenticator's
        ``user_info_to_username``; a subclass's override runs here)."""
        return claim(claims, self.username_claim)

    def build_model(self, claims: dict[str, Any], token: dict[str, Any],
                    previous: dict[str, Any] | None = None) -> dict[str, Any]:
        name = self.username_from_claims(claims)
        if not name or not isinstance(name, str):
            raise OAuthError(f"no {self.username_claim!r} in what the provider said about you")
        groups = claim(claims, self.claim_groups_key) if self.claim_groups_key else []
        groups = [str(g) for g in groups] if isinstance(groups, list) else []
        state = {
            "access_token": token["access_token"],
            "refresh_token": token.get("refresh_token") or (previous or {}).get("refresh_token"),
            "id_token": token.get("id_token") or (previous or {}).get("id_token"),
            "expires_at": token.get("expires_at"),
            "scope": str(token.get("scope", "")).split(),
            "token_response": {k: v for k, v in token.items() if "token" not in k},
            "oauth_user": claims,
            "oauth_provider": self.provider_id,
        }
        model: dict[str, Any] = {"name": name, "auth_state": state, "oauth_groups": groups}
        if self.manage_groups:
            model["groups"] = groups
        if self.admin_groups:
            model["admin"] = bool(self.admin_groups & set(groups))
        return model

    @property
    def provider_id(self) -> str:
        return self.oidc_issuer or self.token_url

    # -- the contract ------------------------------------------------------------------------
    async def authenticate(self, handler: LoginContext, data: dict[str, Any]) -> dict[str, Any] | None:
        if not data.get("code"):
            return None  # the password form and the token API have no code to give
        token = await self.token_request({
            "grant_type": "authorization_code", "code": data["code"],
            "redirect_uri": data["redirect_uri"],
            **({"code_verifier": data["code_verifier"]} if self.enable_pkce else {})})
        claims = await self.user_claims(token, data.get("nonce"))
        return self.build_model(claims, token)

    def check_allowed(self, username: str, model: dict[str, Any] | None = None) -> bool:
        if super().check_allowed(username, model):
            return True
        return bool(self.allowed_groups & set((model or {}).get("oauth_groups", [])))

    def is_admin(self, handler: LoginContext | None, model: dict[str, Any]) -> bool | None:
        return True if model["name"] in self.admin_users else model.get("admin")

    async def refresh_user(self, user: User, handler: LoginContext | None = None
                           ) -> bool | dict[str, Any]:
        """Refresh the access token when it expires within ``auth_refresh_age`` seconds."""
        if not self.enable_auth_state or self.hub is None:
            return True
        state = self.hub.read_auth_state(user)
        if not state or state.get("oauth_provider") != self.provider_id:
            return True  # signed in some other way
        expires_at = state.get("expires_at")
        if not expires_at or expires_at - time.time() > self.auth_refresh_age:
            return True
        if not state.get("refresh_token"):
            return bool(expires_at > time.time())
        try:
            token = await self.token_request({"grant_type": "refresh_token",
                                              "refresh_token": state["refresh_token"]})
            claims = await self.user_claims(token, refreshing=True)
        except OAuthError as e:
            self.log.warning("Refreshing %s's %s login failed: %s", user.name,
                             self.login_service, e)
            return False
        claims = {**state.get("oauth_user", {}), **claims}
        model = self.build_model(claims, token, previous=state)
        if model["name"] != user.name:
            return False
        model["admin"] = await maybe_await(self.is_admin(handler, model))
        return model if await maybe_await(self.check_allowed(user.name, model)) else False


class GenericOAuthenticator(OAuthenticator):
    """Any OAuth 2 provider, or any OpenID Connect provider with ``oidc_issuer``."""


class OIDCAuthenticator(GenericOAuthenticator):
    """OpenID Connect with discovery: set ``oidc_issuer``, ``client_id``, ``client_secret``."""

    login_service = Unicode("OpenID Connect", help="Name on the 'Sign in with ...' button.").tag(
        config=True
    )

    @default("scope")
    def _scope(self) -> list[str]:
        return ["openid", "profile", "email"]

    @default("username_claim")
    def _username_claim(self) -> str:
        return "preferred_username"

    def check_config(self, hub: AuthenticatorHub) -> None:
        if not self.oidc_issuer:
            raise ConfigError(f"c.{type(self).__name__}.oidc_issuer is not set (the URL whose "
                              "/.well-known/openid-configuration describes the provider)")
        super().check_config(hub)
