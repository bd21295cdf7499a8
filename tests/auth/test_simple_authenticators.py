"""shared-password, dummy and null; and the names authenticators are chosen by."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from courtyard.auth.base import Authenticator
from courtyard.auth.dummy import DummyAuthenticator
from courtyard.config import resolve_class
from courtyard.db.models import User
from courtyard.errors import ConfigError

from .conftest import login

USER_PW = "class-of-2026"
ADMIN_PW = "a-very-long-admin-password-for-staff-only"
SHARED = {"Courtyard.authenticator_class": "shared-password",
          "SharedPasswordAuthenticator.user_password": USER_PW,
          "SharedPasswordAuthenticator.admin_password": ADMIN_PW,
          "Authenticator.admin_users": {"teacher"}}


async def test_shared_password(browser):
    _hub, client = await browser(SHARED)
    assert (await login(client, "student1", "wrong-password")).status_code == 403
    assert (await login(client, "student1", ADMIN_PW)).status_code == 403
    assert (await login(client, "student1", USER_PW)).status_code == 303
    me = await client.get("/hub/api/user", params={"_xsrf": client.cookies["_xsrf"]})
    assert me.json()["admin"] is False
    _hub, teacher = await browser(SHARED)
    assert (await login(teacher, "teacher", USER_PW)).status_code == 403
    assert (await login(teacher, "teacher", ADMIN_PW)).status_code == 303
    me = await teacher.get("/hub/api/user", params={"_xsrf": teacher.cookies["_xsrf"]})
    assert me.json()["admin"] is True


@pytest.mark.parametrize(("options", "message"), [
    ({}, "user_password must be set"),
    ({"SharedPasswordAuthenticator.user_password": "short"}, "at least 8"),
    ({"SharedPasswordAuthenticator.user_password": USER_PW,
      "SharedPasswordAuthenticator.admin_password": "too-short-for-admins"}, "at least 32"),
    ({"SharedPasswordAuthenticator.user_password": ADMIN_PW,
      "SharedPasswordAuthenticator.admin_password": ADMIN_PW}, "must differ"),
])
def test_shared_password_checks_at_start(make_hub, options, message):
    with pytest.raises(ConfigError, match=message):
        make_hub({"Courtyard.authenticator_class": "shared-password", **options})


@pytest.mark.parametrize("options", [
    {"Courtyard.ip": "0.0.0.0"}, {"Courtyard.hub_ip": "0.0.0.0"},
    {"Courtyard.bind_url": "http://10.1.2.3:8000/"}, {"Courtyard.hub_ip": ""},
])
def test_dummy_refuses_to_listen_beyond_loopback(make_hub, options):
    with pytest.raises(ConfigError, match="allow_insecure"):
        make_hub({"Courtyard.authenticator_class": "dummy", **options})
    make_hub({"Courtyard.authenticator_class": "dummy", **options,
              "DummyAuthenticator.allow_insecure": True})


def test_dummy_on_loopback_starts(make_hub):
    make_hub({"Courtyard.authenticator_class": "dummy", "Courtyard.hub_ip": "::1",
              "Courtyard.ip": "localhost"})


async def test_null_offers_no_login(browser):
    _hub, client = await browser({"Courtyard.authenticator_class": "null"})
    page = await client.get("/hub/login")
    assert 'name="password"' not in page.text
    body = {"auth": {"username": "alice", "password": "x"}}
    assert (await client.post("/hub/api/users/alice/tokens", json=body)).status_code == 403


async def test_login_page_is_accessible(browser):
    _hub, client = await browser({"Courtyard.authenticator_class": "dummy"})
    page = (await client.get("/hub/login")).text
    for field in ("username", "password"):
        assert f'<label for="{field}">' in page and f'id="{field}"' in page
    assert 'autocomplete="current-password"' in page and "autofocus" in page
    assert '<main id="content"' in page and 'lang="en"' in page
    assert "<script" not in page and "style=" not in page
    headers = (await client.get("/hub/login")).headers
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    css = await client.get("/hub/static/style.css")
    assert css.status_code == 200 and ":focus-visible" in css.text


@pytest.mark.parametrize(("name", "cls"), [
    ("native", "NativeAuthenticator"), ("nativeauthenticator.NativeAuthenticator",
                                        "NativeAuthenticator"),
    ("pam", "PAMAuthenticator"), ("jupyterhub.auth.PAMAuthenticator", "PAMAuthenticator"),
    ("shared-password", "SharedPasswordAuthenticator"),
    ("jupyterhub.authenticators.shared.SharedPasswordAuthenticator",
     "SharedPasswordAuthenticator"),
    ("ldap", "LDAPAuthenticator"), ("ldapauthenticator.LDAPAuthenticator", "LDAPAuthenticator"),
    ("oidc", "OIDCAuthenticator"), ("generic-oauth", "GenericOAuthenticator"),
    ("oauthenticator.generic.GenericOAuthenticator", "GenericOAuthenticator"),
    ("github", "GitHubOAuthenticator"), ("oauthenticator.github.GitHubOAuthenticator",
                                         "GitHubOAuthenticator"),
    ("gitlab", "GitLabOAuthenticator"), ("google", "GoogleOAuthenticator"),
    ("azuread", "AzureAdOAuthenticator"), ("oauthenticator.azuread.AzureAdOAuthenticator",
                                           "AzureAdOAuthenticator"),
    ("dummy", "DummyAuthenticator"), ("null", "NullAuthenticator"),
])
def test_authenticator_names(name, cls):
    assert resolve_class("authenticator", name, Authenticator).__name__ == cls


class AnyNameAuthenticator(DummyAuthenticator):
    """A custom authenticator whose validate_username lets every name through."""

    def validate_username(self, username: str) -> bool:
        return True


@pytest.mark.parametrize("options", [
    {},
    {"Courtyard.authenticator_class": AnyNameAuthenticator},
], ids=["dummy", "custom-validate"])
async def test_logins_as_path_tricks_are_refused(browser, options):
    """Issue 12: '.', '..' and names that decode to them or to '/' never become users."""
    hub, client = await browser(options)
    for bad in (".", "..", "%2e%2e", "%252E%252E", "a%2Fb", "x%00"):
        response = await login(client, bad, "any-password")
        assert response.status_code == 403, bad
        assert "Invalid username or password." in response.text
    assert (await login(client, "first.last@example.com", "any-password")).status_code == 303
    with hub.session() as db:
        assert list(db.scalars(select(User.name))) == ["first.last@example.com"]


async def test_a_post_auth_hook_cannot_make_a_path_trick(browser):
    def rename(authenticator, handler, model):
        return {**model, "name": "%2e%2e"}

    _hub, client = await browser({"Authenticator.post_auth_hook": rename})
    assert (await login(client, "fine", "any-password")).status_code == 403
