"""A service's config keys as JupyterHub reads them, kept at start-up; the same checks on
services added through the API, without a way around delegated admins' limits."""

from __future__ import annotations

from typing import Any

import pytest
from traitlets.config import Config

from courtyard.errors import ConfigError
from courtyard.oauth import provider
from tests.conftest import ADMIN_TOKEN, client_for, new_token


def services(*specs: dict[str, Any], **options: Any) -> Config:
    c = Config()
    c.Courtyard.services = list(specs)
    for key, value in options.items():
        c.Courtyard[key] = value
    return c


def test_allowed_scopes_custom_and_inherit_are_kept(make_hub: Any) -> None:
    hub = make_hub(services(
        {"name": "dash", "url": "http://127.0.0.1:9", "timeout": 10,
         "oauth_client_allowed_scopes": ["custom:dash:view", "read:users:activity!user"]},
        {"name": "lab", "url": "http://127.0.0.1:9", "oauth_client_allowed_scopes": ["inherit"]},
        {"name": "old", "url": "http://127.0.0.1:9", "oauth_roles": ["user"]},
        custom_scopes={"custom:dash:view": {"description": "view dashboards"}}))
    with hub.session() as db:
        dash = provider.load_client(hub, db, "service-dash")
        assert sorted(dash.row.allowed_scopes) == [
            "access:services!service=dash", "custom:dash:view", "read:users:activity!user"]
        assert "inherit" in provider.load_client(hub, db, "service-lab").row.allowed_scopes
        assert "self" in provider.load_client(hub, db, "service-old").row.allowed_scopes


@pytest.mark.parametrize(("spec", "problem"), [
    ({"oauth_client_allowed_scopes": ["custom:nope"]}, "unknown scope 'custom:nope'"),
    ({"oauth_client_allowed_scopes": "read:users"}, "must be a list of scopes"),
    ({"oauth_roles": ["no-such-role"]}, "names no role 'no-such-role'"),
    ({"oauth_client_id": "dash-client"}, "must start with 'service-'"),
])
def test_bad_service_keys_fail_start_up_in_one_line(make_hub: Any, spec: dict[str, Any],
                                                    problem: str) -> None:
    with pytest.raises(ConfigError) as e:
        make_hub(services({"name": "dash", "url": "http://127.0.0.1:9", **spec}))
    assert problem in str(e.value) and "c.JupyterHub.services[0]" in str(e.value)
    assert "\n" not in str(e.value)


async def test_api_checks_allowed_scopes_against_the_caller(make_hub: Any) -> None:
    hub = make_hub(services(load_roles=[{"name": "svc-admin", "scopes": ["admin:services"],
                                         "users": ["deputy"]}]))
    async with client_for(hub, ADMIN_TOKEN) as api:
        r = await api.post("/services/bad", json={"url": "http://127.0.0.1:9",
                                                  "oauth_client_allowed_scopes": ["nope"]})
        assert r.status_code == 400 and "unknown scope 'nope'" in r.json()["message"]
        token = await new_token(api, "deputy")
    async with client_for(hub, token) as deputy:
        r = await deputy.post("/services/wide", json={
            "url": "http://127.0.0.1:9", "oauth_client_allowed_scopes": ["inherit"]})
        assert r.status_code == 403, r.text
        r = await deputy.post("/services/reader", json={
            "url": "http://127.0.0.1:9", "oauth_client_allowed_scopes": ["admin:users"]})
        assert r.status_code == 403, r.text
        r = await deputy.post("/services/plain", json={"url": "http://127.0.0.1:9"})
        assert r.status_code == 201, r.text


def test_oauth_grants_carry_identify_scopes_and_inherit(make_hub: Any) -> None:
    hub = make_hub(services(
        {"name": "lab", "url": "http://127.0.0.1:9", "oauth_client_allowed_scopes": ["inherit"]},
        {"name": "plain", "url": "http://127.0.0.1:9"}))
    identify = ["read:users:groups!user=alice", "read:users:name!user=alice"]
    with hub.session() as db:
        lab = provider.load_client(hub, db, "service-lab")
        plain = provider.load_client(hub, db, "service-plain")
        # a client allowed to inherit gets the visitor's own rights, as JupyterHub's does
        assert provider.grant_scopes([], {}, lab, "alice", lambda _u: []) == sorted(
            ["access:services!service=lab", "inherit", *identify])
        # a client allowed nothing still identifies its visitor, and asks for no more
        assert provider.grant_scopes(["read:users"], {}, plain, "alice", lambda _u: []) == \
            sorted(["access:services!service=plain", *identify])
