"""``Authenticator.manage_roles``, as in JupyterHub 5: the ``roles`` of the auth model (at
sign-in and from ``refresh_user``) become the user's roles, missing roles are created, and
the roles the authenticator made and no one holds any more are deleted. Real hubs; what a
role grants is checked by using it (its scopes open or close the API).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from courtyard.auth import refresh
from courtyard.auth.dummy import DummyAuthenticator
from courtyard.errors import ConfigError

from .conftest import client_for, login

PASSWORD = "roles-pw-0123"
TOKEN = "manage-roles-admin-token"
ADMIN = {"Authorization": f"token {TOKEN}"}
STAFF = {"name": "course-staff", "description": "Teaching staff", "scopes": ["list:users",
                                                                             "read:users"]}


class RolesFromIdP(DummyAuthenticator):
    """Returns the roles the test set per user (None: no ``roles`` key), at sign-in and from
    ``refresh_user`` (which answers True until the test gives it roles)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.roles: dict[str, Any] = {}
        self.refreshed: dict[str, Any] = {}

    async def authenticate(self, handler: Any, data: dict[str, Any]) -> Any:
        name = await super().authenticate(handler, data)
        if name is None:
            return None
        model: dict[str, Any] = {"name": name}
        if self.roles.get(name) is not None:
            model["roles"] = self.roles[name]
        return model

    async def refresh_user(self, user: Any, handler: Any = None) -> bool | dict[str, Any]:
        if user.name in self.refreshed:
            return {"name": user.name, "roles": self.refreshed[user.name]}
        return True


def options(**extra: Any) -> dict[str, Any]:
    return {"Courtyard.authenticator_class": RolesFromIdP,
            "DummyAuthenticator.password": PASSWORD,
            "Authenticator.manage_roles": True,
            "Authenticator.admin_users": {"admin"},
            "Courtyard.api_tokens": {TOKEN: "admin"}, **extra}


async def sign_in(client: httpx.AsyncClient, name: str) -> int:
    """A fresh sign-in through the form (the previous one's cookies dropped)."""
    client.cookies.clear()
    return (await login(client, name, PASSWORD)).status_code


async def as_user(client: httpx.AsyncClient, path: str) -> httpx.Response:
    """A GET of the API with the browser's cookie (and its XSRF token)."""
    return await client.get(path, params={"_xsrf": client.cookies.get("_xsrf", path="/hub/")})


async def role(client: httpx.AsyncClient, name: str) -> httpx.Response:
    return await client.get(f"/hub/api/roles/{name}", headers=ADMIN)


async def test_sign_in_creates_grants_and_takes_back_roles(browser) -> None:
    hub, client = await browser(options())
    auth: RolesFromIdP = hub.authenticator  # type: ignore[assignment]
    auth.roles["alice"] = [{"name": "user"}, STAFF]
    assert await sign_in(client, "alice") == 303

    made = await role(client, "course-staff")
    assert made.status_code == 200
    assert {k: made.json()[k] for k in ("scopes", "users", "managed_by", "description")} == {
        "scopes": ["list:users", "read:users"], "users": ["alice"],
        "managed_by": "authenticator", "description": "Teaching staff"}
    assert (await as_user(client, "/hub/api/users")).status_code == 200  # the role's scopes

    auth.roles["alice"] = [{"name": "user"}]
    assert await sign_in(client, "alice") == 303
    assert (await as_user(client, "/hub/api/users")).status_code == 403
    # no one holds it any more, and the authenticator made it: gone
    assert (await role(client, "course-staff")).status_code == 404
    user = (await client.get("/hub/api/users/alice", headers=ADMIN)).json()
    assert user["roles"] == ["user"]


async def test_the_list_is_exact_and_roles_others_hold_stay(browser) -> None:
    """As in JupyterHub: a list without ``user`` takes ``user`` away; a role someone else
    still holds is kept when one holder loses it."""
    hub, client = await browser(options())
    auth: RolesFromIdP = hub.authenticator  # type: ignore[assignment]
    auth.roles["alice"] = auth.roles["bob"] = [{"name": "user"}, STAFF]
    async with client_for(hub) as bob:
        assert await sign_in(client, "alice") == 303
        assert await sign_in(bob, "bob") == 303
    auth.roles["alice"] = ["course-staff"]  # a name works too
    assert await sign_in(client, "alice") == 303

    alice = (await client.get("/hub/api/users/alice", headers=ADMIN)).json()
    assert alice["roles"] == ["course-staff"]
    staff = (await role(client, "course-staff")).json()
    assert staff["users"] == ["alice", "bob"]
    assert staff["scopes"] == ["list:users", "read:users"]  # a bare name keeps the definition


async def test_refresh_user_updates_roles(browser, monkeypatch: pytest.MonkeyPatch) -> None:
    hub, client = await browser(options(**{"Authenticator.auth_refresh_age": 60}))
    auth: RolesFromIdP = hub.authenticator  # type: ignore[assignment]
    auth.roles["alice"] = [{"name": "user"}]
    assert await sign_in(client, "alice") == 303
    assert (await as_user(client, "/hub/api/users")).status_code == 403

    auth.refreshed["alice"] = [{"name": "user"}, STAFF]
    now = refresh.clock()
    monkeypatch.setattr(refresh, "clock", lambda: now + 61)
    assert (await as_user(client, "/hub/api/users")).status_code == 200
    assert (await role(client, "course-staff")).json()["users"] == ["alice"]


async def test_roles_of_config_and_api_keep_their_definition(browser) -> None:
    """The authenticator grants a role from ``load_roles`` but cannot rewrite its scopes: a
    claim from an identity provider never widens what the operator defined."""
    graders = {"name": "graders", "description": "Graders", "scopes": ["read:users"]}
    hub, client = await browser(options(**{"Courtyard.load_roles": [graders]}))
    auth: RolesFromIdP = hub.authenticator  # type: ignore[assignment]
    auth.roles["alice"] = [{"name": "user"}, {"name": "graders", "scopes": ["admin:users"]}]
    assert await sign_in(client, "alice") == 303

    model = (await role(client, "graders")).json()
    assert (model["scopes"], model["users"], model["managed_by"]) == (
        ["read:users"], ["alice"], "config")
    assert (await as_user(client, "/hub/api/users")).status_code == 403  # no list:users


async def test_admin_role_follows_the_admin_flag(browser) -> None:
    hub, client = await browser(options())
    auth: RolesFromIdP = hub.authenticator  # type: ignore[assignment]
    auth.roles["carol"] = [{"name": "user"}, {"name": "admin"}]
    assert await sign_in(client, "carol") == 303
    carol = (await client.get("/hub/api/users/carol", headers=ADMIN)).json()
    assert (carol["admin"], carol["roles"]) == (True, ["admin", "user"])
    # admin_users' admin keeps the admin role whatever the list says
    auth.roles["admin"] = [{"name": "user"}]
    async with client_for(hub) as admin:
        assert await sign_in(admin, "admin") == 303
    admin_model = (await client.get("/hub/api/users/admin", headers=ADMIN)).json()
    assert (admin_model["admin"], admin_model["roles"]) == (True, ["admin", "user"])


async def test_authenticator_roles_are_read_only_in_the_api(browser) -> None:
    hub, client = await browser(options())
    hub.authenticator.roles["alice"] = [{"name": "user"}, STAFF]  # type: ignore[attr-defined]
    assert await sign_in(client, "alice") == 303
    response = await client.patch("/hub/api/roles/course-staff", headers=ADMIN,
                                  json={"scopes": ["admin:users"]})
    assert response.status_code == 403
    assert response.json() == {"status": 403, "message": "Role course-staff is defined by the "
                               "authenticator (manage_roles) and is read-only here"}


async def test_a_malformed_role_refuses_the_sign_in(browser) -> None:
    hub, client = await browser(options())
    hub.authenticator.roles["alice"] = [{"name": "x"}]  # type: ignore[attr-defined]
    response = await client.post("/hub/api/users/alice/tokens",
                                 json={"auth": {"username": "alice", "password": PASSWORD}})
    assert response.status_code == 409
    assert response.json()["message"].startswith(
        "the authenticator returned an invalid role for alice: invalid role name 'x'")
    assert (await client.get("/hub/api/users/alice", headers=ADMIN)).status_code == 404


async def test_off_the_roles_are_ignored(browser) -> None:
    hub, client = await browser(options(**{"Authenticator.manage_roles": False}))
    hub.authenticator.roles["alice"] = [{"name": "user"}, STAFF]  # type: ignore[attr-defined]
    assert await sign_in(client, "alice") == 303
    assert (await role(client, "course-staff")).status_code == 404
    assert (await as_user(client, "/hub/api/users")).status_code == 403


def test_load_roles_cannot_assign_users_then(make_hub: Callable[..., Any]) -> None:
    """As JupyterHub: with manage_roles, load_roles defines roles, the authenticator assigns
    them; a config that does both is refused at start, in one line."""
    with pytest.raises(ConfigError) as refused:
        make_hub(options(**{"Courtyard.load_roles": [{**STAFF, "users": ["alice"]}]}))
    assert str(refused.value) == (
        "c.JupyterHub.load_roles[0] (course-staff) assigns users or groups, but with "
        "c.Authenticator.manage_roles the authenticator assigns roles; keep only name, "
        "description, scopes, services")
    make_hub(options(**{"Courtyard.load_roles": [STAFF]}))  # defining it is fine


async def test_a_jupyterhub_authenticator_manages_roles(browser) -> None:
    """A JupyterHub 5 authenticator (``jupyterhub.auth.Authenticator``) returning ``roles``
    with ``manage_roles``, as in JupyterHub's own tests, runs unchanged."""
    from jupyterhub.auth import Authenticator as JupyterHubAuthenticator

    class Roles(JupyterHubAuthenticator):
        def authenticate(self, handler: Any, data: dict[str, Any]) -> dict[str, Any]:
            return {"name": data["username"], "roles": [{"name": "user"}, STAFF]}

    _hub, client = await browser(options(**{"Courtyard.authenticator_class": Roles,
                                            "Authenticator.allow_all": True}))
    assert await sign_in(client, "alice") == 303
    made = (await role(client, "course-staff")).json()
    assert (made["users"], made["managed_by"]) == (["alice"], "authenticator")
    assert (await as_user(client, "/hub/api/users")).status_code == 200
