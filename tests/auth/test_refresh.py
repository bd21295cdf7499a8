"""Refreshing a sign-in (``Authenticator.refresh_user``), as JupyterHub does it: after
``auth_refresh_age`` on any request (pages sign out, tokens stop working while it says no),
and with ``refresh_pre_spawn`` before every spawn, through the API, the spawn page and
``/hub/user-redirect``. Real hubs; spawns start real servers (``tests/spawners/mocksu.py``).

No sleeping: the refresh module's clock is moved forward past ``auth_refresh_age``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import event
from traitlets.config import Config

from courtyard.auth import refresh
from courtyard.auth.dummy import DummyAuthenticator
from tests.conftest import ADMIN_TOKEN
from tests.spawners.conftest import (  # noqa: F401 - fixtures
    _made_names,
    mocksu_cmd,
    open_dir,
    server_row,
    spawn_config,
    spawn_hub,
    uname,
    wait_until,
)

from .conftest import client_for, login

PASSWORD = "refresh-pw-0123"
KEY = "0f" * 32
ADMIN = {"Authorization": f"token {ADMIN_TOKEN}"}


class Verdicts(DummyAuthenticator):
    """An async ``refresh_user`` (as OAuthenticator's) answering what the test set per user
    (True by default), and noting who was asked, and what auth state each spawn got."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.verdicts: dict[str, Any] = {}
        self.asked: list[str] = []
        self.spawned_with: dict[str, Any] = {}

    async def refresh_user(self, user: Any, handler: Any = None) -> bool | dict[str, Any]:
        self.asked.append(user.name)
        return self.verdicts.get(user.name, True)

    async def pre_spawn_start(self, user: Any, spawner: Any) -> None:
        self.spawned_with[user.name] = user.auth_state


class StopNoter(DummyAuthenticator):
    """A child of a MultiAuthenticator that tidies up after each server."""

    stopped: list[str] = []  # the test reads what the hub's instance noted

    async def post_spawn_stop(self, user: Any, spawner: Any) -> None:
        StopNoter.stopped.append(user.name)


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """``later(seconds)``: move the clock the refresh ages are measured on forward."""
    offset = [0.0]
    real = refresh.clock
    monkeypatch.setattr(refresh, "clock", lambda: real() + offset[0])

    def move(seconds: float) -> None:
        offset[0] += seconds

    return move


def options(**extra: Any) -> dict[str, Any]:
    return {"Courtyard.authenticator_class": Verdicts, "DummyAuthenticator.password": PASSWORD,
            "Authenticator.auth_refresh_age": 60, **extra}


async def whoami(client: httpx.AsyncClient) -> int:
    xsrf = client.cookies.get("_xsrf", path="/hub/")
    return (await client.get("/hub/api/user", params={"_xsrf": xsrf})).status_code


# -- auth_refresh_age -------------------------------------------------------------------------
async def test_expired_sign_in_signs_the_browser_out_once_the_age_passed(browser, later):
    hub, client = await browser(options())
    auth: Verdicts = hub.authenticator  # type: ignore[assignment]
    async with client_for(hub) as elsewhere:  # alice in a second browser
        assert (await login(client, "alice", PASSWORD)).status_code == 303
        assert (await login(elsewhere, "alice", PASSWORD)).status_code == 303

        auth.verdicts["alice"] = False
        assert (await client.get("/hub/home")).status_code == 200  # signing in counts as fresh
        assert auth.asked == []

        later(61)
        response = await client.get("/hub/home")
        assert response.status_code == 302
        assert response.headers["location"].startswith("/hub/login?next=")
        assert auth.asked == ["alice"]
        assert 'jupyterhub-hub-login=""' in "; ".join(response.headers.get_list("set-cookie"))
        # signed out everywhere, as by logging out, whatever the authenticator says next
        auth.verdicts["alice"] = True
        assert (await elsewhere.get("/hub/home")).status_code == 302
        assert await whoami(elsewhere) == 403
    # signing in again is a fresh sign-in
    assert (await login(client, "alice", PASSWORD)).status_code == 303
    assert (await client.get("/hub/home")).status_code == 200
    assert auth.asked == ["alice"]


async def test_expired_sign_in_makes_token_requests_unauthenticated(browser, later):
    hub, _client = await browser(options())
    auth: Verdicts = hub.authenticator  # type: ignore[assignment]
    async with client_for(hub) as api:
        created = await api.post("/hub/api/users/alice/tokens",
                                 json={"auth": {"username": "alice", "password": PASSWORD}})
        assert created.status_code == 201, created.text
        api.headers["Authorization"] = f"token {created.json()['token']}"
        auth.verdicts["alice"] = False
        assert (await api.get("/hub/api/user")).status_code == 200
        assert auth.asked == []

        later(61)
        response = await api.get("/hub/api/user")
        assert response.status_code == 403
        assert response.json() == {"status": 403, "message": "The sign-in of alice has "
                                   "expired; sign in again."}
        # the token is not revoked: each request asks again, until the answer is yes
        assert (await api.get("/hub/api/users/alice/tokens")).status_code == 403
        assert auth.asked == ["alice", "alice"]
        auth.verdicts["alice"] = True
        assert (await api.get("/hub/api/user")).json()["name"] == "alice"
        assert (await api.get("/hub/api/user")).status_code == 200  # fresh again: not asked
        assert auth.asked == ["alice", "alice", "alice"]


async def test_a_refresh_may_update_auth_state_and_admin_but_not_the_name(browser, later,
                                                                           monkeypatch):
    monkeypatch.setenv("COURTYARD_CRYPT_KEY", KEY)
    hub, client = await browser(options(**{
        "Authenticator.enable_auth_state": True, "Courtyard.api_tokens": {ADMIN_TOKEN: "admin"},
        "Authenticator.admin_users": {"admin"}}))
    auth: Verdicts = hub.authenticator  # type: ignore[assignment]
    assert (await login(client, "alice", PASSWORD)).status_code == 303
    auth.verdicts["alice"] = {"name": "admin", "admin": True, "auth_state": {"token": "new"}}
    later(61)
    assert (await client.get("/hub/home")).status_code == 200
    assert auth.asked == ["alice"]
    alice = (await client.get("/hub/api/users/alice", headers=ADMIN)).json()
    assert alice["auth_state"] == {"token": "new"} and alice["admin"] is True
    admin = (await client.get("/hub/api/users/admin", headers=ADMIN)).json()
    assert admin["auth_state"] is None  # the name in the answer changed nobody else


async def test_no_refresh_when_not_due_or_never_asked(browser, later):
    """The hot path: a cached GET /user makes no query and asks nobody while no refresh is
    due; with auth_refresh_age 0 (as in JupyterHub) or the base refresh_user, never."""
    hub, _client = await browser(options())
    auth: Verdicts = hub.authenticator  # type: ignore[assignment]
    async with client_for(hub) as api:
        created = await api.post("/hub/api/users/alice/tokens",
                                 json={"auth": {"username": "alice", "password": PASSWORD}})
        api.headers["Authorization"] = f"token {created.json()['token']}"
        for _ in range(2):  # caches the token, records its first use, caches its scopes
            assert (await api.get("/hub/api/user")).status_code == 200
        statements: list[str] = []
        engine = hub.session.kw["bind"]
        listener = lambda *args: statements.append(args[2])  # noqa: E731
        event.listen(engine, "before_cursor_execute", listener)
        try:
            for _ in range(3):
                assert (await api.get("/hub/api/user")).status_code == 200
        finally:
            event.remove(engine, "before_cursor_execute", listener)
        assert statements == [] and auth.asked == []

    hub, client = await browser(options(**{"Authenticator.auth_refresh_age": 0}))
    auth = hub.authenticator  # type: ignore[assignment]
    auth.verdicts["alice"] = False
    assert (await login(client, "alice", PASSWORD)).status_code == 303
    later(10**6)
    assert (await client.get("/hub/home")).status_code == 200 and auth.asked == []

    _hub, client = await browser({"DummyAuthenticator.password": PASSWORD})
    assert (await login(client, "alice", PASSWORD)).status_code == 303
    assert not _hub.authenticator.refreshes
    assert (await client.get("/hub/home")).status_code == 200


# -- refresh_pre_spawn ------------------------------------------------------------------------
@pytest.fixture
def pre_spawn_hub(spawn_hub, monkeypatch):  # noqa: F811 - imported fixtures
    """A hub that starts real servers, refreshing every spawn, with auth state kept."""
    monkeypatch.setenv("COURTYARD_CRYPT_KEY", KEY)
    c = Config()
    c.Courtyard.authenticator_class = Verdicts
    c.Authenticator.refresh_pre_spawn = True
    c.Authenticator.enable_auth_state = True
    return spawn_hub(c)


async def test_pre_spawn_refresh_refuses_or_updates_an_api_spawn(pre_spawn_hub, uname):  # noqa: F811
    hub = pre_spawn_hub
    auth: Verdicts = hub.authenticator  # type: ignore[assignment]
    alice = uname("alice")
    async with client_for(hub) as api:
        assert (await api.post(f"/hub/api/users/{alice}", headers=ADMIN)).status_code == 201
        token = (await api.post(f"/hub/api/users/{alice}/tokens", headers=ADMIN,
                                json={})).json()["token"]
        as_alice = {"Authorization": f"token {token}"}
        assert (await api.get("/hub/api/user", headers=as_alice)).status_code == 200
        auth.asked.clear()  # alice and the admin were each asked once, on their first request

        auth.verdicts[alice] = False
        for headers in (as_alice, ADMIN):  # alice, or an admin for her: both fresh just now
            response = await api.post(f"/hub/api/users/{alice}/server", headers=headers)
            assert response.status_code == 403, response.text
            assert response.json()["message"] == (f"The sign-in of {alice} has expired; sign "
                                                  "in again.")
        assert auth.asked == [alice, alice]
        assert hub.lifecycle.pending(alice, "") is None and alice not in auth.spawned_with
        assert (server_row(hub, alice) or {}).get("url") is None

        # a fresh sign-in is refreshed before a spawn all the same; its new state is kept
        # and is what the server starts with
        auth.verdicts[alice] = {"auth_state": {"access_token": "renewed"}}
        response = await api.post(f"/hub/api/users/{alice}/server", headers=ADMIN)
        assert response.status_code == 201, response.text
        assert auth.asked == [alice, alice, alice]
        assert auth.spawned_with[alice] == {"access_token": "renewed"}
        model = (await api.get(f"/hub/api/users/{alice}", headers=ADMIN)).json()
        assert model["auth_state"] == {"access_token": "renewed"}
        assert (await api.delete(f"/hub/api/users/{alice}/server", headers=ADMIN)
                ).status_code == 204


async def test_pre_spawn_refresh_on_the_spawn_page(pre_spawn_hub, uname):  # noqa: F811
    hub = pre_spawn_hub
    auth: Verdicts = hub.authenticator  # type: ignore[assignment]
    alice = uname("alice")
    async with client_for(hub) as browser_, client_for(hub) as admin:
        assert (await login(browser_, alice, PASSWORD)).status_code == 303
        assert (await login(admin, "admin", PASSWORD)).status_code == 303
        auth.verdicts[alice] = False
        # an admin starting alice's server is refused, and stays signed in
        response = await admin.get(f"/hub/spawn/{alice}")
        assert response.status_code == 403 and "has expired" in response.text
        assert await whoami(admin) == 200
        # alice herself is signed out, and sent to sign in and come back
        response = await browser_.get("/hub/spawn")
        assert response.status_code == 302
        assert response.headers["location"] == "/hub/login?next=/hub/spawn"
        assert await whoami(browser_) == 403
        assert hub.lifecycle.pending(alice, "") is None and alice not in auth.spawned_with

        auth.verdicts[alice] = True
        assert (await login(browser_, alice, PASSWORD)).status_code == 303
        response = await browser_.get("/hub/spawn")
        assert response.status_code == 303, response.text
        assert response.headers["location"].startswith(f"/hub/spawn-pending/{alice}")
        await wait_until(lambda: (server_row(hub, alice) or {}).get("url") is not None,
                         what="the server to start")
        assert alice in auth.spawned_with
        await hub.lifecycle.stop_and_wait(alice, "")


async def test_pre_spawn_refresh_on_user_redirect(pre_spawn_hub, uname):  # noqa: F811
    hub = pre_spawn_hub
    auth: Verdicts = hub.authenticator  # type: ignore[assignment]
    alice = uname("alice")
    async with client_for(hub) as browser_:
        assert (await login(browser_, alice, PASSWORD)).status_code == 303
        auth.verdicts[alice] = False
        response = await browser_.get("/hub/user-redirect/tree")
        assert response.status_code == 302
        assert response.headers["location"] == "/hub/login?next=/hub/user-redirect/tree"
        assert await whoami(browser_) == 403
        assert hub.lifecycle.pending(alice, "") is None and alice not in auth.spawned_with

        auth.verdicts[alice] = {"auth_state": {"access_token": "renewed"}}
        assert (await login(browser_, alice, PASSWORD)).status_code == 303
        response = await browser_.get("/hub/user-redirect/tree")
        assert response.status_code == 302, response.text
        assert response.headers["location"].startswith(f"/user/{alice}/") or \
            response.headers["location"].startswith(f"/hub/spawn-pending/{alice}")
        await wait_until(lambda: alice in auth.spawned_with, what="the spawn")
        assert auth.spawned_with[alice] == {"access_token": "renewed"}
        await hub.lifecycle.stop_and_wait(alice, "")


# -- MultiAuthenticator ---------------------------------------------------------------------
async def test_multi_authenticator_forwards_post_spawn_stop(spawn_hub, uname):  # noqa: F811
    c = Config()
    c.Courtyard.authenticator_class = ["dummy", StopNoter]
    hub = spawn_hub(c)
    alice = uname("alice")
    StopNoter.stopped.clear()
    async with client_for(hub) as api:
        assert (await api.post(f"/hub/api/users/{alice}", headers=ADMIN)).status_code == 201
        assert (await api.post(f"/hub/api/users/{alice}/server", headers=ADMIN)
                ).status_code == 201
        assert StopNoter.stopped == []
        assert (await api.delete(f"/hub/api/users/{alice}/server", headers=ADMIN)
                ).status_code == 204
    await wait_until(lambda: StopNoter.stopped == [alice], what="post_spawn_stop")
