"""The hub as OAuth 2 / OpenID Connect provider, in-process: the code flow with PKCE and
every refusal, consent for services, ID tokens checked against the JWKS, discovery, and the
deprecated endpoints."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from traitlets.config import Config

from courtyard.app import Hub
from courtyard.db import queries
from courtyard.spawners import credentials
from tests.conftest import ADMIN_TOKEN

from .conftest import client_for, form_fields, login, user_token, xsrf_of

SERVICE_TOKEN = "service-secret-token"


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, digest.rstrip(b"=").decode()


@pytest.fixture
def hub(make_hub: Callable[..., Hub]) -> Hub:
    c = Config()
    c.Courtyard.services = [
        {"name": "dash", "url": "http://127.0.0.1:9999", "api_token": SERVICE_TOKEN},
        {"name": "quiet", "url": "http://127.0.0.1:9998", "api_token": SERVICE_TOKEN + "2",
         "oauth_no_confirm": True},
    ]
    c.Courtyard.bind_url = "http://127.0.0.1:8000/"
    # as in JupyterHub, services are open to users only when a role says so
    c.Courtyard.load_roles = [{"name": "user", "scopes": ["self", "access:services"]}]
    return make_hub(c)


@pytest.fixture
async def browser(hub: Hub) -> AsyncIterator[Callable[[], httpx.AsyncClient]]:
    clients: list[httpx.AsyncClient] = []

    def make() -> httpx.AsyncClient:
        clients.append(client_for(hub))
        return clients[-1]

    yield make
    for c in clients:
        await c.aclose()


def server_client(hub: Hub, user: str) -> tuple[str, str]:
    """The OAuth client a launch of ``user``'s default server registers: (id, secret)."""
    with hub.session() as db:
        row = queries.get_user(db, user) or queries.create_user(db, user)
        db.flush()
        from courtyard.db.models import Server

        server = next((s for s in row.servers if s.name == ""), None)
        if server is None:
            server = Server(name="", state={}, user_options={})
            row.servers.append(server)
            db.flush()
        scopes = credentials.token_scopes([], user, "")
        secret, cid = credentials.issue(db, server, f"/user/{user}/", scopes, [])
        db.commit()
    hub.scope_cache.invalidate()
    return cid, secret


async def authorize(client: httpx.AsyncClient, cid: str, redirect_uri: str,
                    **extra: str) -> httpx.Response:
    params = {"client_id": cid, "redirect_uri": redirect_uri, "response_type": "code",
              "state": "st4te", **extra}
    return await client.get("/hub/api/oauth2/authorize", params=params)


def code_of(response: httpx.Response) -> str:
    assert response.status_code == 302, response.text
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query.get("state") == ["st4te"], query
    assert "code" in query, query
    return query["code"][0]


async def exchange(client: httpx.AsyncClient, **form: str) -> httpx.Response:
    return await client.post("/hub/api/oauth2/token",
                             data={"grant_type": "authorization_code", **form})


async def test_code_flow_with_pkce(hub: Hub, browser: Callable[[], httpx.AsyncClient]) -> None:
    cid, secret = server_client(hub, "alice")
    client = browser()
    r = await authorize(client, cid, "/user/alice/oauth_callback")
    assert r.status_code == 302 and "/hub/login?next=" in r.headers["location"]
    await login(client, "alice")
    verifier, challenge = pkce()
    r = await authorize(client, cid, "/user/alice/oauth_callback", code_challenge=challenge,
                        code_challenge_method="S256")
    assert r.headers["location"].startswith("/user/alice/oauth_callback?")  # no consent: own
    code = code_of(r)
    r = await exchange(client, code=code, client_id=cid, client_secret=secret,
                       redirect_uri="/user/alice/oauth_callback", code_verifier=verifier)
    assert r.status_code == 200, r.text
    reply = r.json()
    assert reply["token_type"] == "Bearer" and reply["expires_in"] == 14 * 86400
    assert "access:servers!server=alice/" in reply["scope"].split()
    assert r.headers["cache-control"] == "no-store"
    me = await client.get("/hub/api/user",
                          headers={"Authorization": f"Bearer {reply['access_token']}"})
    assert me.status_code == 200 and me.json()["name"] == "alice"
    assert "access:servers!server=alice/" in me.json()["scopes"]
    # the token is tied to the client and the browser session
    tokens = (await client.get("/hub/api/users/alice/tokens", headers={
        "Authorization": f"token {user_token(hub, 'alice')}"})).json()["api_tokens"]
    oauth = [t for t in tokens if t["note"].startswith("OAuth")]
    assert len(oauth) == 1 and oauth[0]["session_id"]


async def test_token_refusals(hub: Hub, browser: Callable[[], httpx.AsyncClient]) -> None:
    cid, secret = server_client(hub, "alice")
    client = browser()
    await login(client, "alice")
    callback = "/user/alice/oauth_callback"

    async def new_code(**extra: str) -> str:
        return code_of(await authorize(client, cid, callback, **extra))

    verifier, challenge = pkce()
    pk = {"code_challenge": challenge, "code_challenge_method": "S256"}
    good = {"client_id": cid, "client_secret": secret, "redirect_uri": callback}

    async def refused(code: str, error: str, status: int = 400, **form: str) -> None:
        r = await exchange(client, code=code, **{**good, **form})
        assert r.status_code == status, r.text
        assert r.json()["error"] == error, r.text

    await refused(await new_code(**pk), "invalid_grant")  # no verifier
    await refused(await new_code(**pk), "invalid_grant", code_verifier=pkce()[0])
    await refused(await new_code(**pk), "invalid_client", 401, client_secret="wrong",
                  code_verifier=verifier)
    await refused(await new_code(**pk), "invalid_grant", redirect_uri="/user/bob/oauth_callback",
                  code_verifier=verifier)
    await refused(await new_code(), "invalid_grant", code_verifier=verifier)  # no challenge
    await refused("made-up", "invalid_grant", code_verifier=verifier)
    r = await exchange(client, code="x", grant_type="password", **good)
    assert r.json()["error"] == "unsupported_grant_type"
    # a code works once
    code = await new_code(**pk)
    r = await exchange(client, code=code, code_verifier=verifier, **good)
    assert r.status_code == 200, r.text
    await refused(code, "invalid_grant", code_verifier=verifier)
    # a code refused once (wrong verifier) cannot be retried with the right one
    code = await new_code(**pk)
    await refused(code, "invalid_grant", code_verifier="x" * 50)
    await refused(code, "invalid_grant", code_verifier=verifier)
    # HTTP Basic client authentication works too
    code = await new_code(**pk)
    basic = base64.b64encode(f"{cid}:{secret}".encode()).decode()
    r = await client.post("/hub/api/oauth2/token", headers={"Authorization": f"Basic {basic}"},
                          data={"grant_type": "authorization_code", "code": code,
                                "redirect_uri": callback, "code_verifier": verifier})
    assert r.status_code == 200, r.text
    r = await client.post("/hub/api/oauth2/token", headers={
        "Authorization": "Basic " + base64.b64encode(f"{cid}:nope".encode()).decode()},
        data={"grant_type": "authorization_code", "code": await new_code()})
    assert r.status_code == 401 and "www-authenticate" in r.headers


async def test_authorize_refusals(hub: Hub, browser: Callable[[], httpx.AsyncClient]) -> None:
    cid, _ = server_client(hub, "alice")
    client = browser()
    await login(client, "bob")
    # bob has no access to alice's server: refused at the hub, not redirected
    r = await authorize(client, cid, "/user/alice/oauth_callback")
    assert r.status_code == 403 and "share" in r.text
    await client.aclose()
    client = browser()
    await login(client, "alice")
    r = await authorize(client, cid, "http://evil.example/steal")
    assert r.status_code == 400 and "redirect_uri" in r.text
    r = await authorize(client, "jupyterhub-user-nobody", "/x")
    assert r.status_code == 400
    r = await authorize(client, cid, "/user/alice/oauth_callback", response_type="token")
    assert "error=unsupported_response_type" in r.headers["location"]
    r = await authorize(client, cid, "/user/alice/oauth_callback", code_challenge="abc" * 15,
                        code_challenge_method="plain")
    assert "error=invalid_request" in r.headers["location"]
    for nonce in ("n" * 256, "n\x00nce"):  # more than any database's column holds
        r = await authorize(client, cid, "/user/alice/oauth_callback", nonce=nonce)
        assert r.status_code == 302 and "error=invalid_request" in r.headers["location"]
        assert "nonce" in parse_qs(urlsplit(r.headers["location"]).query)["error_description"][0]
    code_of(await authorize(client, cid, "/user/alice/oauth_callback", nonce="n" * 255))


async def test_require_pkce(make_hub: Callable[..., Hub]) -> None:
    hub = make_hub(oauth_require_pkce=True)
    cid, _ = server_client(hub, "alice")
    async with client_for(hub) as client:
        await login(client, "alice")
        r = await authorize(client, cid, "/user/alice/oauth_callback")
        assert "error=invalid_request" in r.headers["location"]
        r = await authorize(client, cid, "/user/alice/oauth_callback",
                            code_challenge=pkce()[1], code_challenge_method="S256")
        code_of(r)


async def test_service_consent(hub: Hub, browser: Callable[[], httpx.AsyncClient]) -> None:
    client = browser()
    await login(client, "alice")
    callback = "/services/dash/oauth_callback"
    r = await authorize(client, "service-dash", callback, scope="read:users:activity")
    assert r.status_code == 200, r.text
    assert "Authorize access" in r.text and "Service dash" in r.text
    fields = form_fields(r)
    assert fields["client_id"] == "service-dash" and fields["state"] == "st4te"
    # a form without the XSRF token is refused
    r2 = await client.post("/hub/api/oauth2/authorize",
                           data={**{k: v for k, v in fields.items() if k != "_xsrf"},
                                 "action": "allow"})
    assert r2.status_code == 403
    # cancel sends the client an error
    r2 = await client.post("/hub/api/oauth2/authorize", data={**fields, "action": "deny"})
    assert "error=access_denied" in r2.headers["location"]
    r2 = await client.post("/hub/api/oauth2/authorize", data={**fields, "action": "allow"})
    code = code_of(r2)
    r3 = await exchange(client, code=code, client_id="service-dash",
                        client_secret=SERVICE_TOKEN, redirect_uri=callback)
    assert r3.status_code == 200, r3.text
    granted = r3.json()["scope"].split()
    assert "access:services!service=dash" in granted
    assert "read:users:activity!user=alice" not in granted  # not in the client's allowed scopes
    # JupyterHub's identify scopes: every token may read its owner's name and groups
    assert {"read:users:name!user=alice", "read:users:groups!user=alice"} <= set(granted)
    # once granted, the same scopes need no second consent
    r = await authorize(client, "service-dash", callback)
    code_of(r)
    # a service with oauth_no_confirm never asks
    r = await authorize(client, "service-quiet", "/services/quiet/oauth_callback")
    code_of(r)


async def test_id_token_against_jwks(hub: Hub, browser: Callable[[], httpx.AsyncClient]
                                     ) -> None:
    with hub.session() as db:
        from courtyard.db.models import Group

        user = queries.create_user(db, "carol")
        user.groups.append(Group(name="physics", properties={}))
        db.commit()
        carol_id = str(user.id)
    client = browser()
    await login(client, "carol")
    callback = "/services/quiet/oauth_callback"
    r = await authorize(client, "service-quiet", callback, scope="openid profile",
                        nonce="n-0S6_WzA2Mj")
    code = code_of(r)
    r = await exchange(client, code=code, client_id="service-quiet",
                       client_secret=SERVICE_TOKEN + "2", redirect_uri=callback)
    assert r.status_code == 200, r.text
    reply = r.json()
    assert "openid" in reply["scope"].split()
    discovery = (await client.get("/hub/.well-known/openid-configuration")).json()
    assert discovery == (await client.get("/.well-known/openid-configuration")).json()
    assert discovery["issuer"] == "http://127.0.0.1:8000/hub"
    assert discovery["code_challenge_methods_supported"] == ["S256"]
    jwks_path = urlsplit(discovery["jwks_uri"]).path
    keys = KeySet.import_key_set((await client.get(jwks_path)).json())
    token = jwt.decode(reply["id_token"], keys, algorithms=["RS256"])
    claims: dict[str, Any] = token.claims
    jwt.JWTClaimsRegistry(iss={"essential": True, "value": discovery["issuer"]},
                          aud={"essential": True, "value": "service-quiet"},
                          exp={"essential": True}).validate(claims)
    assert claims["sub"] == carol_id and claims["name"] == "carol"
    assert claims["groups"] == ["physics"] and claims["nonce"] == "n-0S6_WzA2Mj"
    assert token.header["kid"] == keys.keys[0].kid
    # the same claims from userinfo, with the access token
    info = await client.get(urlsplit(discovery["userinfo_endpoint"]).path,
                            headers={"Authorization": f"Bearer {reply['access_token']}"})
    assert info.json()["sub"] == carol_id and info.json()["groups"] == ["physics"]
    # the key is kept in a 0600 file and reused by the next hub on this data dir
    from courtyard.oauth.keys import KEY_FILE

    path = hub.options.data_files_path + "/" + KEY_FILE
    import os

    assert os.stat(path).st_mode & 0o777 == 0o600


async def id_token_sub(hub: Hub, name: str) -> str:
    """Sign ``name`` in with a fresh browser and get an ID token through the code flow; its
    ``sub``, checked against the userinfo endpoint's."""
    async with client_for(hub) as client:
        await login(client, name)
        callback = "/services/quiet/oauth_callback"
        code = code_of(await authorize(client, "service-quiet", callback, scope="openid"))
        r = await exchange(client, code=code, client_id="service-quiet",
                           client_secret=SERVICE_TOKEN + "2", redirect_uri=callback)
        assert r.status_code == 200, r.text
        keys = KeySet.import_key_set((await client.get("/hub/api/oauth2/jwks")).json())
        sub = jwt.decode(r.json()["id_token"], keys, algorithms=["RS256"]).claims["sub"]
        info = await client.get("/hub/api/oauth2/userinfo",
                                headers={"Authorization": f"Bearer {r.json()['access_token']}"})
        assert info.json()["sub"] == sub
        return sub


async def test_id_token_sub_survives_renames_and_is_never_reused(hub: Hub) -> None:
    """A service keying accounts by ``sub`` must never take one person for another: not
    after a rename, nor when a name (or the newest user's id) is given out again."""
    async with client_for(hub) as api:
        api.headers["Authorization"] = f"token {ADMIN_TOKEN}"
        dave = await id_token_sub(hub, "dave")
        r = await api.patch("/hub/api/users/dave", json={"name": "david"})
        assert r.status_code == 200, r.text
        assert await id_token_sub(hub, "david") == dave  # renamed: the same person
        # david is the newest user: deleted, his id must not pass to whoever comes next
        assert (await api.delete("/hub/api/users/david")).status_code == 204
        assert await id_token_sub(hub, "david") != dave  # the same name, someone else
        assert (await api.delete("/hub/api/users/david")).status_code == 204
        seen = {dave}
        for name in ("erin", "frank", "grace"):  # delete the newest, make another: all new
            sub = await id_token_sub(hub, name)
            assert sub not in seen
            seen.add(sub)
            assert (await api.delete(f"/hub/api/users/{name}")).status_code == 204


async def test_public_client_needs_pkce(hub: Hub, browser: Callable[[], httpx.AsyncClient]
                                        ) -> None:
    from courtyard.db.models import OAuthClient

    with hub.session() as db:
        db.add(OAuthClient(identifier="app-public", description="CLI", redirect_uri="/cb",
                           allowed_scopes=["access:services!service=dash"]))
        db.commit()
    client = browser()
    await login(client, "alice")
    # refused: the access scope names a service, and this client is not that service's
    r = await authorize(client, "app-public", "/cb")
    assert r.status_code == 400


async def test_deprecated_endpoints(hub: Hub, browser: Callable[[], httpx.AsyncClient]
                                    ) -> None:
    client = browser()
    alice = user_token(hub, "alice")
    admin = {"Authorization": "token admin-secret-token"}
    r = await client.get(f"/hub/api/authorizations/token/{alice}", headers=admin)
    assert r.status_code == 200 and r.json()["name"] == "alice" and r.json()["kind"] == "user"
    r = await client.get("/hub/api/authorizations/token/not-a-token", headers=admin)
    assert r.status_code == 404
    r = await client.post("/hub/api/authorizations/token", json={})
    assert r.status_code == 404 and "/users/" in r.json()["message"]


async def test_service_client_secret_is_a_service_token(
        hub: Hub, browser: Callable[[], httpx.AsyncClient]) -> None:
    client = browser()
    await login(client, "alice")
    r = await authorize(client, "service-quiet", "/services/quiet/oauth_callback")
    r = await exchange(client, code=code_of(r), client_id="service-quiet",
                       client_secret=SERVICE_TOKEN)  # the other service's token
    assert r.status_code == 401


def test_xsrf_helper_sees_consent_field(hub: Hub) -> None:
    html = '<input type="hidden" name="_xsrf" value="a&amp;b">'
    assert xsrf_of(httpx.Response(200, text=html)) == "a&b"


async def test_oauth_token_expires_in_sets_the_access_tokens_lifetime(
        hub: Hub, browser: Callable[[], httpx.AsyncClient]) -> None:
    hub.options.oauth_token_expires_in = 600
    cid, secret = server_client(hub, "alice")
    client = browser()
    await login(client, "alice")
    code = code_of(await authorize(client, cid, "/user/alice/oauth_callback"))
    r = await exchange(client, code=code, client_id=cid, client_secret=secret,
                       redirect_uri="/user/alice/oauth_callback")
    assert r.status_code == 200, r.text
    assert r.json()["expires_in"] == 600
    tokens = (await client.get("/hub/api/users/alice/tokens", headers={
        "Authorization": f"token {user_token(hub, 'alice')}"})).json()["api_tokens"]
    (oauth,) = [t for t in tokens if t["note"].startswith("OAuth")]
    created = datetime.fromisoformat(oauth["created"].rstrip("Z"))
    expires = datetime.fromisoformat(oauth["expires_at"].rstrip("Z"))
    assert (expires - created).total_seconds() == pytest.approx(600, abs=5)
