"""Fail closed: authenticator hooks may be sync or async (as in JupyterHub), and the hub
awaits every one; a hook that refuses, or raises, lets nobody in.

Each test signs in through a real hub's pages and API as an attacker would: an async hook
left unawaited is a coroutine, which counts as true.
"""

from __future__ import annotations

from typing import Any

import pytest

from courtyard.auth import refresh
from courtyard.auth.dummy import DummyAuthenticator
from courtyard.auth.native import NativeAuthenticator
from courtyard.auth.oauth import OIDCAuthenticator
from courtyard.errors import ConfigError

from .conftest import client_for, idp_sign_in, login, xsrf_of
from .test_oauth import oidc_options

PASSWORD = "letmein-0123"


class RefuseAll(DummyAuthenticator):
    async def check_allowed(self, username: str, model: dict[str, Any] | None = None) -> bool:
        return False


class BlockMallory(DummyAuthenticator):
    async def check_blocked_users(self, username: str,
                                  model: dict[str, Any] | None = None) -> bool:
        return username != "mallory"


class NeverAdmin(DummyAuthenticator):
    """Everyone in admin_users, but the (async) hook says no: the hook decides."""

    async def is_admin(self, handler: Any, model: dict[str, Any]) -> bool | None:
        return False


class AllowRaises(DummyAuthenticator):
    async def check_allowed(self, username: str, model: dict[str, Any] | None = None) -> bool:
        raise RuntimeError("the allow-list service is down")


class AdminRaises(DummyAuthenticator):
    def is_admin(self, handler: Any, model: dict[str, Any]) -> bool | None:
        raise RuntimeError("the directory is down")


class NativeBlockMallory(NativeAuthenticator):
    async def check_blocked_users(self, username: str,
                                  model: dict[str, Any] | None = None) -> bool:
        return username != "mallory"


class RefuseAllOIDC(OIDCAuthenticator):
    async def check_allowed(self, username: str, model: dict[str, Any] | None = None) -> bool:
        return False


class SyncRefresh(DummyAuthenticator):
    """refresh_user is sync in many JupyterHub authenticators; False: sign in again."""

    def refresh_user(self, user: Any, handler: Any = None) -> bool:  # type: ignore[override]
        return user.name != "mallory"


class AsyncValidate(DummyAuthenticator):
    async def validate_username(self, username: str) -> bool:  # type: ignore[override]
        return False


def options(cls: type, **extra: Any) -> dict[str, Any]:
    return {"Courtyard.authenticator_class": cls, "DummyAuthenticator.password": PASSWORD,
            **extra}


async def whoami(client: Any) -> Any:
    response = await client.get("/hub/api/user", params={"_xsrf": client.cookies.get("_xsrf")})
    return response.json() if response.status_code == 200 else response.status_code


async def token_by_password(client: Any, name: str) -> int:
    """The token API's other way in: a password in the body (JupyterHub's "auth" field)."""
    body = {"auth": {"username": name, "password": PASSWORD}}
    return (await client.post(f"/hub/api/users/{name}/tokens", json=body)).status_code


async def test_async_check_allowed_refusing_everyone_refuses_mallory(browser):
    hub, client = await browser(options(RefuseAll))
    response = await login(client, "mallory", PASSWORD)
    assert response.status_code == 403
    assert await whoami(client) == 403
    assert await token_by_password(client_for(hub), "mallory") == 403


async def test_async_check_blocked_users_blocks(browser):
    hub, client = await browser(options(BlockMallory))
    assert (await login(client, "mallory", PASSWORD)).status_code == 403
    assert await whoami(client) == 403
    assert await token_by_password(client_for(hub), "mallory") == 403
    _hub, alice = await browser(options(BlockMallory))
    assert (await login(alice, "alice", PASSWORD)).status_code == 303


async def test_async_is_admin_false_makes_no_admin(browser):
    _hub, client = await browser(options(NeverAdmin))
    assert (await login(client, "mallory", PASSWORD)).status_code == 303
    assert (await whoami(client))["admin"] is False


@pytest.mark.parametrize("cls", [AllowRaises, AdminRaises])
async def test_a_hook_that_raises_refuses(browser, cls):
    hub, client = await browser(options(cls, **{"Authenticator.admin_users": {"mallory"}}))
    response = await login(client, "mallory", PASSWORD)
    assert response.status_code == 500
    assert "Sign-in failed because of an error" in response.text
    assert await whoami(client) == 403
    async with client_for(hub) as api:
        response = await api.post("/hub/api/users/mallory/tokens",
                                  json={"auth": {"username": "mallory", "password": PASSWORD}})
    assert response.status_code == 500
    assert response.json()["status"] == 500 and "token" not in response.json()


async def test_async_check_blocked_users_at_sign_up(browser):
    _hub, client = await browser({"Courtyard.authenticator_class": NativeBlockMallory,
                                  "NativeAuthenticator.enable_signup": True,
                                  "NativeAuthenticator.open_signup": True})
    page = await client.get("/hub/signup")
    form = {"_xsrf": xsrf_of(page), "username": "mallory", "password": "Sup3r-s3cret-pw!",
            "password_confirm": "Sup3r-s3cret-pw!"}
    response = await client.post("/hub/signup", data=form)
    assert response.status_code == 400 and "cannot be used" in response.text


@pytest.mark.parametrize("cls", [SyncRefresh, [SyncRefresh, "dummy"]], ids=["alone", "multi"])
async def test_sync_refresh_user_refusing_signs_out(browser, cls, monkeypatch):
    _hub, client = await browser(options(cls, **{"Authenticator.auth_refresh_age": 60}))
    assert (await login(client, "mallory", PASSWORD)).status_code == 303
    later = refresh.clock() + 61  # auth_refresh_age has passed since the sign-in
    monkeypatch.setattr(refresh, "clock", lambda: later)
    response = await client.get("/hub/home")
    assert response.status_code == 302 and "/hub/login" in response.headers["location"]
    assert await whoami(client) == 403


def test_async_validate_username_is_refused_at_start(make_hub):
    with pytest.raises(ConfigError, match=r"AsyncValidate.validate_username is async"):
        make_hub(options(AsyncValidate))


async def test_oauth_callback_awaits_async_check_allowed(browser, idp):
    _hub, client = await browser({**oidc_options(idp),
                                  "Courtyard.authenticator_class": RefuseAllOIDC})
    response = await idp_sign_in(client, "rosa")  # in "users", allowed but for the hook
    assert response.status_code == 403 and "may not use this hub" in response.text
    assert await whoami(client) == 403
