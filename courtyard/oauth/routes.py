"""HTTP endpoints of the hub's OAuth 2 / OpenID Connect provider.

Below ``{base_url}hub/api`` (:data:`routes`): ``oauth2/authorize`` (browser, signed-in
cookie; GET shows the consent page when one is due, POST is its form), ``oauth2/token``
(code exchange), ``oauth2/jwks``, ``oauth2/userinfo``, and the deprecated
``authorizations/token`` endpoints. :func:`page_routes` adds the discovery documents.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import unquote, urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ..api.base import VERSION_HEADER, Ctx, Reply, endpoint, json_response
from ..auth.identity import authenticate_token, groups_of
from ..auth.scopes import SCOPES, split_scope
from ..auth.session import cookie_identity
from ..db.models import User
from ..errors import Forbidden, NotFound
from ..web.render import Page, login_redirect
from . import oidc, provider
from .keys import signer

if TYPE_CHECKING:
    from ..web.hub import Hub

log = logging.getLogger("courtyard.oauth")

AUTHORIZE_FIELDS = ("client_id", "redirect_uri", "response_type", "state", "scope",
                    "code_challenge", "code_challenge_method", "nonce")


def _with_query(url: str, params: dict[str, str]) -> str:
    return f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"


# -- /oauth2/authorize -----------------------------------------------------------------------
async def authorize(request: Request) -> Response:
    """Sign a user in to a server or service: consent if due, then redirect with a code."""
    hub: Hub = request.app.state.hub
    with hub.session() as db:
        page = Page(request, db)
        if request.method == "POST":
            form = await page.form()
            params = {k: str(form.get(k) or "") for k in (*AUTHORIZE_FIELDS, "action")}
        else:
            params = {k: request.query_params.get(k, "") for k in AUTHORIZE_FIELDS}
        if page.user is None:
            if request.method == "POST":
                return page.error(403, "Sign in again, then retry.")
            return login_redirect(page.base_url, request)
        try:
            client = provider.load_client(hub, db, params["client_id"])
            redirect_uri = provider.check_redirect_uri(hub, client, params["redirect_uri"])
        except provider.OAuthError as e:  # no trustworthy place to send the browser back to
            return page.error(400, f"OAuth error ({e.error}): {e.description}")
        back = {"state": params["state"]} if params["state"] else {}
        try:
            return await _authorize(page, client, redirect_uri, params, back)
        except provider.OAuthError as e:
            return RedirectResponse(_with_query(redirect_uri, {
                "error": e.error, "error_description": e.description, **back}), 302)


async def _authorize(page: Page, client: provider.Client, redirect_uri: str, params: dict[str, str],
                     back: dict[str, str]) -> Response:
    hub, db, user = page.hub, page.db, page.user
    assert user is not None
    if params["response_type"] != "code":
        raise provider.OAuthError("unsupported_response_type", "response_type must be code")
    if hub.options.oauth_require_pkce and not params["code_challenge"]:
        raise provider.OAuthError("invalid_request", "this hub requires PKCE (code_challenge, S256)")
    ident = cookie_identity(hub, db, user, page.sid)

    def user_groups(name: str) -> list[str]:
        return groups_of(db, name)

    if not provider.may_access(ident.parsed, client, user_groups):
        log.warning("User %s may not use %s (needs %s)", user.name, client.id,
                    client.access_scope)
        owner = client.server_owner
        hint = f"; ask {owner} to share it with you" if owner else ""
        return page.error(403, f"You ({user.name}) do not have access to {client.name}{hint}.")
    scopes = provider.grant_scopes(params["scope"].split(), ident.parsed, client, user.name,
                            user_groups)
    if page.request.method == "POST":
        if not await page.xsrf_ok():
            return page.error(403, "Your session expired or the form was sent from another "
                              "site; go back and try again.")
        if params.get("action") != "allow":
            raise provider.OAuthError("access_denied", f"{user.name} did not allow the sign-in")
    elif provider.needs_consent(db, user, client, scopes):
        return _consent_page(page, client, params, scopes)
    code = provider.issue_code(db, client, user, redirect_uri, scopes, page.sid,
                        params["code_challenge"] or None, params["code_challenge_method"] or None,
                        params["nonce"] or None)
    db.commit()
    log.info("Issued an OAuth code for %s to %s", user.name, client.id)
    return RedirectResponse(_with_query(redirect_uri, {"code": code, **back}), 302)


def _consent_page(page: Page, client: provider.Client, params: dict[str, str], scopes: list[str]
                  ) -> Response:
    described = []
    for scope in scopes:
        base = split_scope(scope)[0]
        definition = SCOPES.get(base)
        text = definition.description if definition else {
            "openid": "Know who you are (your user name and groups).",
            "profile": "Know your name.", "groups": "Know your groups.",
            "email": "Know your e-mail address."}.get(base, "")
        described.append({"scope": scope, "description": text})
    owner = client.server_owner
    return page.render("oauth_consent.html", client=client, owner=owner, scopes=described,
                       fields={k: v for k, v in params.items() if k in AUTHORIZE_FIELDS and v})


# -- /oauth2/token -------------------------------------------------------------------------
def _token_error(e: provider.OAuthError, basic: bool) -> Response:
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache", **VERSION_HEADER}
    if e.status == 401 and basic:
        headers["WWW-Authenticate"] = 'Basic realm="courtyard"'
    return JSONResponse({"error": e.error, "error_description": e.description}, e.status,
                        headers=headers)


def _client_credentials(request: Request, form: Mapping[str, Any]) -> tuple[str, str, bool]:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic" and value:
        try:
            raw = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise provider.OAuthError("invalid_client", "malformed Basic credentials", 401) from None
        cid, _, secret = raw.partition(":")
        return unquote(cid), unquote(secret), True
    return str(form.get("client_id") or ""), str(form.get("client_secret") or ""), False


async def token(request: Request) -> Response:
    """Exchange an authorization code for an access token (and an ID token for ``openid``)."""
    hub: Hub = request.app.state.hub
    form = await request.form(max_files=0, max_fields=20)
    basic = False
    with hub.session() as db:
        try:
            client_id, secret, basic = _client_credentials(request, form)
            if form.get("grant_type") != "authorization_code":
                raise provider.OAuthError("unsupported_grant_type",
                                   "only grant_type=authorization_code is supported")
            client = provider.authenticate_client(hub, db, client_id, secret)
            code = provider.redeem_code(db, client, str(form.get("code") or ""),
                                 str(form.get("redirect_uri") or "") or None,
                                 str(form.get("code_verifier") or "") or None)
            access, _row, user = provider.issue_access_token(hub, db, client, code)
            reply: dict[str, Any] = {"access_token": access, "token_type": "Bearer",
                                     "expires_in": provider.token_lifetime(hub),
                                     "scope": " ".join(code.scopes)}
            if "openid" in code.scopes:
                reply["id_token"] = oidc.id_token(hub, user, client.id, code.nonce)
            db.commit()
        except provider.OAuthError as e:
            db.commit()  # a code that was presented stays used up
            log.warning("OAuth token request refused: %s (%s)", e.error, e.description)
            return _token_error(e, basic)
    log.info("Issued an OAuth token for %s to %s", user.name, client.id)
    return JSONResponse(reply, headers={"Cache-Control": "no-store", "Pragma": "no-cache",
                                        **VERSION_HEADER})


# -- OpenID Connect ----------------------------------------------------------------------------
async def jwks(request: Request) -> Response:
    """The public key ID tokens are signed with."""
    return json_response(signer(request.app.state.hub.options.data_files_path).jwks(),
                         headers={"Cache-Control": "max-age=300",
                                  "Access-Control-Allow-Origin": "*"})


@endpoint()
async def userinfo(ctx: Ctx) -> oidc.UserClaims:
    """The signed-in user's OpenID Connect claims."""
    ident = ctx.identity
    assert ident is not None
    if ident.kind != "user":
        raise Forbidden("userinfo is for user tokens")
    user = ctx.db.get(User, ident.id)
    if user is None:
        raise NotFound("No such user")
    return oidc.user_claims(user)


async def discovery(request: Request) -> Response:
    return json_response(oidc.discovery(request.app.state.hub),
                         headers={"Access-Control-Allow-Origin": "*"})


# -- deprecated JupyterHub endpoints -------------------------------------------------------------
@endpoint()
async def identify_token(ctx: Ctx) -> Reply:
    """Deprecated (JupyterHub 2.0): the owner of a token; use GET /user with that token."""
    from ..api.info import current_identity

    hub = ctx.hub
    ident = authenticate_token(ctx.open_db, ctx.arg("token"), hub.scope_cache,
                               hub.options.activity_resolution)
    if ident is None:
        raise NotFound("No such token")
    log.warning("GET /authorizations/token/... is deprecated; use GET /hub/api/user")
    ctx.identity = ident
    return await current_identity.__wrapped__(ctx)


@endpoint(public=True)
async def create_token_removed(ctx: Ctx) -> NoReturn:
    """Removed in JupyterHub 2.0; always 404."""
    raise NotFound("POST /authorizations/token was removed; create tokens with "
                   "POST /hub/api/users/{name}/tokens")


routes = [
    Route("/oauth2/authorize", authorize, methods=["GET", "POST"]),
    Route("/oauth2/token", token, methods=["POST"]),
    Route("/oauth2/jwks", jwks, methods=["GET"]),
    Route("/oauth2/userinfo", userinfo, methods=["GET", "POST"]),
    Route("/authorizations/token/{token}", identify_token, methods=["GET"]),
    Route("/authorizations/token", create_token_removed, methods=["POST"]),
]


def page_routes(hub: Hub) -> list[BaseRoute]:
    """The discovery document, below the hub (the issuer) and at the site's root."""
    base = hub.options.base_url
    return [Route(f"{base}hub/.well-known/openid-configuration", discovery, methods=["GET"]),
            Route(f"{base}.well-known/openid-configuration", discovery, methods=["GET"])]
