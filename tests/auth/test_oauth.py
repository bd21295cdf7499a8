"""OpenID Connect and OAuth 2 against a real provider (npm oidc-provider), the full code
flow with PKCE driven through the hub and the provider's own forms."""

from __future__ import annotations

import time

import httpx
import pytest

from courtyard.auth import login as auth_login
from courtyard.db import queries
from tests.conftest import raw_sql

from .conftest import idp_sign_in

KEY = "2d" * 32
ADMIN_TOKEN = "admin-token-0123456789"
PUBLIC = "http://127.0.0.1:8081/"  # the tests talk to the hub directly, not via a proxy


def oidc_options(idp, **extra):
    return {"Courtyard.authenticator_class": "oidc",
            "Courtyard.public_url": PUBLIC,
            "OIDCAuthenticator.oidc_issuer": idp.url,
            "OIDCAuthenticator.client_id": idp.client_id,
            "OIDCAuthenticator.client_secret": idp.client_secret,
            "OIDCAuthenticator.scope": ["openid", "profile", "email", "groups"],
            "OIDCAuthenticator.claim_groups_key": "groups",
            "OIDCAuthenticator.allowed_groups": {"users"},
            "OIDCAuthenticator.admin_groups": {"hubadmins"},
            **extra}


async def me(client):
    response = await client.get("/hub/api/user", params={"_xsrf": client.cookies["_xsrf"]})
    assert response.status_code == 200, response.text
    return response.json()


async def test_oidc_code_flow_signs_in(browser, idp):
    _hub, client = await browser(oidc_options(idp, **{"Authenticator.manage_groups": True}))
    page = await client.get("/hub/login")
    assert "Sign in with OpenID Connect" in page.text and 'name="password"' not in page.text
    start = await client.get("/hub/oauth_login", params={"next": "/hub/home"})
    location = httpx.URL(start.headers["location"])
    assert location.params["code_challenge_method"] == "S256"
    assert location.params["redirect_uri"] == "http://127.0.0.1:8081/hub/oauth_callback"
    state_cookie = start.headers["set-cookie"].lower()
    assert "oauthenticator-state" in state_cookie and "httponly" in state_cookie
    response = await idp_sign_in(client, "rosa", next_url="/user/rosa/lab")
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/user/rosa/lab"
    user = await me(client)
    assert user["name"] == "rosa" and user["admin"] is False
    assert user["groups"] == ["users"]


async def test_admin_group_and_allowed_groups(browser, idp):
    _hub, client = await browser(oidc_options(idp))
    response = await idp_sign_in(client, "admin7")
    assert response.status_code == 303
    assert (await me(client))["admin"] is True
    _hub, guest = await browser(oidc_options(idp))
    response = await idp_sign_in(guest, "guest1")
    assert response.status_code == 403 and "may not use this hub" in response.text
    assert "jupyterhub-hub-login" not in response.headers.get("set-cookie", "")


async def test_state_must_match(browser, idp):
    _hub, client = await browser(oidc_options(idp))
    await client.get("/hub/oauth_login")
    response = await client.get("/hub/oauth_callback", params={"code": "x", "state": "forged"})
    assert response.status_code == 400 and "state" in response.text
    await client.get("/hub/oauth_login")  # non-ASCII: a mismatch too, not an error
    response = await client.get("/hub/oauth_callback", params={"code": "x", "state": "\u00e9"})
    assert response.status_code == 400 and "state" in response.text
    _hub, fresh = await browser(oidc_options(idp))
    response = await fresh.get("/hub/oauth_callback", params={"code": "x", "state": "forged"})
    assert response.status_code == 400
    response = await client.get("/hub/oauth_callback",
                                params={"error": "access_denied", "error_description": "<b>no</b>"})
    assert response.status_code == 403 and "&lt;b&gt;no&lt;/b&gt;" in response.text


async def test_tokens_in_encrypted_auth_state_and_refreshed(browser, idp, db_url,
                                                              monkeypatch):
    monkeypatch.setenv("COURTYARD_CRYPT_KEY", KEY)
    hub, client = await browser(oidc_options(idp, **{
        "Authenticator.enable_auth_state": True,
        "Courtyard.api_tokens": {ADMIN_TOKEN: "admin"},
        "Authenticator.admin_users": {"admin"}}))
    assert (await idp_sign_in(client, "sam")).status_code == 303
    user = await client.get("/hub/api/users/sam", headers={"Authorization": f"token {ADMIN_TOKEN}"})
    state = user.json()["auth_state"]
    assert state["access_token"] and state["refresh_token"] and state["id_token"]
    assert state["oauth_user"]["preferred_username"] == "sam"
    assert state["expires_at"] <= time.time() + 120  # the provider's short token life
    raw = raw_sql(
        db_url, "SELECT encrypted_auth_state FROM users WHERE name = 'sam'")
    assert state["access_token"].encode() not in raw
    # the token expires within auth_refresh_age (300 s): a refresh gets a new one
    with hub.session() as db:
        row = queries.get_user(db, "sam")
        assert await auth_login.refresh_user(hub, db, row, force=True) is True
        db.commit()
        fresh = hub.read_auth_state(queries.get_user(db, "sam"))
    assert fresh["access_token"] != state["access_token"]
    assert fresh["refresh_token"]
    async with httpx.AsyncClient() as plain:
        info = await plain.get(f"{idp.url}/me",
                               headers={"Authorization": f"Bearer {fresh['access_token']}"})
        assert info.status_code == 200 and info.json()["sub"] == "sam"
    # a refresh token the provider no longer honours means signing in again
    with hub.session() as db:
        row = queries.get_user(db, "sam")
        hub.write_auth_state(row, {**fresh, "refresh_token": "revoked"})
        db.commit()
        assert await auth_login.refresh_user(hub, db, row, force=True) is False


async def test_plain_oauth2_without_discovery(browser, idp):
    _hub, client = await browser({
        "Courtyard.authenticator_class": "generic-oauth",
        "Courtyard.public_url": PUBLIC,
        "GenericOAuthenticator.client_id": idp.client_id,
        "GenericOAuthenticator.client_secret": idp.client_secret,
        "GenericOAuthenticator.authorize_url": f"{idp.url}/auth",
        "GenericOAuthenticator.token_url": f"{idp.url}/token",
        "GenericOAuthenticator.userdata_url": f"{idp.url}/me",
        "GenericOAuthenticator.scope": ["openid", "profile"],
        "GenericOAuthenticator.username_claim": "preferred_username",
        "GenericOAuthenticator.login_service": "Example SSO",
        "Authenticator.allow_all": True})
    assert "Sign in with Example SSO" in (await client.get("/hub/login")).text
    assert (await idp_sign_in(client, "tom")).status_code == 303
    assert (await me(client))["name"] == "tom"


async def test_auto_login_skips_the_page(browser, idp):
    _hub, client = await browser(oidc_options(idp, **{"Authenticator.auto_login": True}))
    response = await client.get("/hub/login", params={"next": "/hub/home"})
    assert response.status_code == 302
    assert response.headers["location"] == "/hub/oauth_login?next=%2Fhub%2Fhome"


def test_oidc_needs_an_issuer(make_hub):
    from courtyard.errors import ConfigError

    with pytest.raises(ConfigError, match="oidc_issuer"):
        make_hub({"Courtyard.authenticator_class": "oidc", "OIDCAuthenticator.client_id": "x"})


def test_presets_point_at_their_providers():
    from courtyard.auth.oauth import Endpoints
    from courtyard.auth.oauth_presets import (
        AzureAdOAuthenticator,
        GitHubOAuthenticator,
        GitLabOAuthenticator,
        GoogleOAuthenticator,
    )

    github = GitHubOAuthenticator(allowed_organizations={"jupyterhub"})
    assert github.authorize_url == "https://github.com/login/oauth/authorize"
    assert github.token_url == "https://github.com/login/oauth/access_token"
    assert github.userdata_url == "https://api.github.com/user"
    assert github.username_claim == "login" and "read:org" in github.scope
    assert github.allowed_groups == {"jupyterhub"}
    ghe = GitHubOAuthenticator(github_url="https://git.example.org")
    assert ghe.userdata_url == "https://git.example.org/api/v3/user"
    gitlab = GitLabOAuthenticator(gitlab_url="https://gitlab.example.org/")
    assert gitlab.oidc_issuer == "https://gitlab.example.org"
    assert gitlab.claim_groups_key == "groups"
    google = GoogleOAuthenticator(hosted_domain={"example.edu"})
    assert google.oidc_issuer == "https://accounts.google.com"
    assert google.extra_authorize_params == {"hd": "example.edu"}
    model = google.build_model({"email": "ann@example.edu", "email_verified": True, "hd":
                                "example.edu"}, {"access_token": "t"})
    assert model["name"] == "ann"
    azure = AzureAdOAuthenticator(tenant_id="organizations")
    assert azure.oidc_issuer == "https://login.microsoftonline.com/organizations/v2.0"
    ep = Endpoints("a", "t", issuer="https://login.microsoftonline.com/{tenantid}/v2.0")
    assert azure.expected_issuer(ep, {"tid": "abc"}) == \
        "https://login.microsoftonline.com/abc/v2.0"
