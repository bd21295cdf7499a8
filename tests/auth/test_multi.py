"""Several sign-in methods at once: a password form and "Sign in with ..." buttons."""

from __future__ import annotations

from .conftest import client_for, idp_sign_in, login
from .test_oauth import PUBLIC

ADMIN_TOKEN = "admin-token-0123456789"
AUTH = {"Authorization": f"token {ADMIN_TOKEN}"}


def multi_options(idp, slapd=None, **extra):
    methods = ["native", "oidc"] + (["ldap"] if slapd else [])
    options = {
        "Courtyard.authenticator_class": methods,
        "Courtyard.public_url": PUBLIC,
        "Courtyard.api_tokens": {ADMIN_TOKEN: "admin"},
        "Authenticator.admin_users": {"admin"},
        "OIDCAuthenticator.oidc_issuer": idp.url,
        "OIDCAuthenticator.client_id": idp.client_id,
        "OIDCAuthenticator.client_secret": idp.client_secret,
        "OIDCAuthenticator.allow_all": True,
        **extra,
    }
    if slapd:
        options.update({
            "LDAPAuthenticator.server_address": "127.0.0.1",
            "LDAPAuthenticator.server_port": slapd.port,
            "LDAPAuthenticator.tls_strategy": "insecure",
            "LDAPAuthenticator.bind_dn_template": f"uid={{username}},ou=people,{slapd.base}"})
    return options


async def test_login_page_offers_every_method(browser, idp):
    _hub, client = await browser(multi_options(idp))
    page = (await client.get("/hub/login", params={"next": "/hub/home"})).text
    assert 'name="password"' in page
    assert 'href="/hub/oidc/oauth_login?next=%2Fhub%2Fhome"' in page
    assert "Sign in with OpenID Connect" in page


async def test_each_method_signs_in_to_one_account_per_name(browser, idp, slapd):
    hub, client = await browser(multi_options(idp, slapd))
    assert (await client.post("/hub/api/users/alice", headers=AUTH)).status_code == 201
    await client.put("/hub/api/users/alice/password", headers=AUTH,
                     json={"password": "native-alice-pw"})
    # the native password, the LDAP password, and the OIDC provider: all the same alice
    for password in ("native-alice-pw", "alicepw"):
        async with client_for(hub) as browser_:
            assert (await login(browser_, "alice", password)).status_code == 303
            me = await browser_.get("/hub/api/user", params={"_xsrf": browser_.cookies["_xsrf"]})
            assert me.json()["name"] == "alice"
    async with client_for(hub) as browser_:
        response = await idp_sign_in(browser_, "alice", start="/hub/oidc/oauth_login")
        assert response.status_code == 303, response.text
        me = await browser_.get("/hub/api/user", params={"_xsrf": browser_.cookies["_xsrf"]})
        assert me.json()["name"] == "alice"
    users = (await client.get("/hub/api/users", headers=AUTH)).json()
    assert sorted(u["name"] for u in users) == ["admin", "alice"]
    # a password no method accepts is refused like any other
    assert (await login(client, "alice", "nope")).status_code == 403
