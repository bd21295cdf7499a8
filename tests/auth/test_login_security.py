"""Throttling, unknown users that look like wrong passwords, auth state encrypted at rest,
and the first start of a new install."""

from __future__ import annotations

import re

import pytest
from argon2 import PasswordHasher

from courtyard.auth.crypto import Crypt, keys_from_env
from courtyard.auth.throttle import Throttle
from courtyard.errors import ConfigError
from tests.conftest import raw_sql

from .conftest import client_for, login

DUMMY = {"Courtyard.authenticator_class": "dummy", "DummyAuthenticator.password": "letmein"}
ADMIN_TOKEN = "admin-token-0123456789"
KEY = "0f" * 32


# -- throttling -----------------------------------------------------------------------------
def test_backoff_doubles_and_a_success_clears_it():
    now = [1000.0]
    throttle = Throttle(free=2, max_delay=10, clock=lambda: now[0])
    for _ in range(2):
        throttle.failure("alice", "10.0.0.1")
    assert throttle.retry_after("alice", "10.0.0.1") == 0
    waits = []
    for _ in range(5):
        throttle.failure("alice", "10.0.0.1")
        waits.append(throttle.retry_after("alice", "10.0.0.1"))
    assert waits == [1, 2, 4, 8, 10]
    assert throttle.retry_after("alice", "10.0.0.2") == 0  # alice elsewhere is not held back
    now[0] += 10
    assert throttle.retry_after("alice", "10.0.0.1") == 0
    throttle.success("alice", "10.0.0.1")
    throttle.failure("alice", "10.0.0.1")
    assert throttle.retry_after("alice", "10.0.0.1") == 0


def test_many_names_from_one_address_are_throttled():
    throttle = Throttle(free=2, per_address_factor=3, clock=lambda: 0.0)
    for n in range(6):
        throttle.failure(f"user{n}", "10.0.0.9")
    assert throttle.retry_after("someone-new", "10.0.0.9") == 0
    throttle.failure("user6", "10.0.0.9")
    assert throttle.retry_after("someone-new", "10.0.0.9") >= 1
    assert throttle.retry_after("someone-new", "10.0.0.10") == 0


async def test_repeated_failures_get_429_with_retry_after(browser):
    hub, client = await browser({**DUMMY, "Authenticator.login_attempts_free": 2})
    for _ in range(3):
        response = await login(client, "alice", "wrong")
        assert response.status_code == 403
    response = await login(client, "alice", "letmein")  # right, but must wait first
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert "Too many failed login attempts" in response.text
    assert "jupyterhub-hub-login" not in response.headers.get("set-cookie", "")
    # the token API's auth body is throttled the same way
    body = {"auth": {"username": "alice", "password": "letmein"}}
    response = await client.post("/hub/api/users/alice/tokens", json=body)
    assert response.status_code == 429 and response.headers["Retry-After"]
    # alice's failures hold back neither another user from the same address (its own cap
    # is login_attempts_free x per_address_factor failures) nor alice from another address
    assert (await login(client, "bob", "letmein", next_url=None)).status_code == 303
    async with client_for(hub) as elsewhere:
        elsewhere.headers["X-Forwarded-For"] = "198.51.100.23"  # as the proxy would send it
        assert (await login(elsewhere, "alice", "letmein", next_url=None)).status_code == 303


async def test_throttle_per_forwarded_client_address(browser):
    hub, _client = await browser({**DUMMY, "Authenticator.login_attempts_free": 1})
    async with client_for(hub) as client:
        client.headers["X-Forwarded-For"] = "203.0.113.7"
        for n in range(5):
            assert (await login(client, f"user{n}", "wrong")).status_code == 403
        assert (await login(client, "fresh", "letmein")).status_code == 429
    async with client_for(hub) as other:
        other.headers["X-Forwarded-For"] = "203.0.113.8"
        assert (await login(other, "fresh", "letmein")).status_code == 303


# -- unknown user == wrong password ------------------------------------------------------------
async def test_unknown_user_and_wrong_password_look_the_same(browser, monkeypatch):
    _hub, client = await browser({"Courtyard.authenticator_class": "native",
                                 "Courtyard.api_tokens": {ADMIN_TOKEN: "admin"},
                                 "Authenticator.admin_users": {"admin"},
                                 "Authenticator.login_attempts_free": 100})
    auth = {"Authorization": f"token {ADMIN_TOKEN}"}
    assert (await client.post("/hub/api/users/carla", headers=auth)).status_code == 201
    reset = await client.put("/hub/api/users/carla/password", headers=auth,
                             json={"password": "Carla-secret-1"})
    assert reset.status_code == 200, reset.text
    wrong = await login(client, "carla", "not-it-at-all")
    unknown = await login(client, "nobody", "not-it-at-all")
    assert wrong.status_code == unknown.status_code == 403
    assert wrong.text == unknown.text.replace('value="nobody"', 'value="carla"')
    api_wrong = await client.post("/hub/api/users/carla/tokens",
                                  json={"auth": {"username": "carla", "password": "x"}})
    api_unknown = await client.post("/hub/api/users/nobody/tokens",
                                    json={"auth": {"username": "nobody", "password": "x"}})
    assert (api_wrong.status_code, api_wrong.text) == (api_unknown.status_code, api_unknown.text)

    # the same hashing work either way: one argon2 check, with the same parameters, against
    # a decoy hash for a user who does not exist (bench/timings.py times it)
    checked: list[str] = []
    verify = PasswordHasher.verify

    def counting(self: PasswordHasher, hashed: str, password: str) -> bool:
        checked.append(hashed.rsplit("$", 2)[0])  # $argon2id$v=19$m=...,t=...,p=...
        return verify(self, hashed, password)

    monkeypatch.setattr(PasswordHasher, "verify", counting)
    for name in ("carla", "nobody"):
        r = await client.post("/hub/api/users/x/tokens",
                              json={"auth": {"username": name, "password": "wrong-pw"}})
        assert r.status_code == 403
    assert len(checked) == 2 and checked[0] == checked[1], checked


# -- auth state ---------------------------------------------------------------------------------
def add_secret_state(authenticator, handler, model):
    model["auth_state"] = {"access_token": "TOP-SECRET-VALUE-42"}
    return model


async def test_auth_state_is_encrypted_at_rest(browser, db_url, monkeypatch):
    monkeypatch.setenv("COURTYARD_CRYPT_KEY", KEY)
    options = {**DUMMY, "Authenticator.enable_auth_state": True,
               "Authenticator.post_auth_hook": add_secret_state,
               "Courtyard.api_tokens": {ADMIN_TOKEN: "admin"},
               "Authenticator.admin_users": {"admin"}}
    _hub, client = await browser(options)
    assert (await login(client, "alice", "letmein")).status_code == 303
    raw = raw_sql(
        db_url, "SELECT encrypted_auth_state FROM users WHERE name = 'alice'")
    assert raw and b"TOP-SECRET-VALUE-42" not in raw and b"access_token" not in raw
    user = await client.get("/hub/api/users/alice",
                            headers={"Authorization": f"token {ADMIN_TOKEN}"})
    assert user.json()["auth_state"] == {"access_token": "TOP-SECRET-VALUE-42"}
    # written through the API too, and still encrypted
    await client.patch("/hub/api/users/alice", headers={"Authorization": f"token {ADMIN_TOKEN}"},
                       json={"auth_state": {"note": "PATCHED-SECRET"}})
    raw = raw_sql(
        db_url, "SELECT encrypted_auth_state FROM users WHERE name = 'alice'")
    assert b"PATCHED-SECRET" not in raw
    assert Crypt.from_env().decrypt(raw) == {"note": "PATCHED-SECRET"}


def test_auth_state_without_key_refuses_to_start(make_hub, monkeypatch):
    monkeypatch.delenv("COURTYARD_CRYPT_KEY", raising=False)
    monkeypatch.delenv("JUPYTERHUB_CRYPT_KEY", raising=False)
    with pytest.raises(ConfigError, match="COURTYARD_CRYPT_KEY"):
        make_hub({**DUMMY, "Authenticator.enable_auth_state": True})


def test_crypt_keys_hex_base64_and_rotation():
    import base64

    old, new = bytes(range(32)), bytes(range(1, 33))
    blob = Crypt([old]).encrypt({"a": 1})
    env = {"JUPYTERHUB_CRYPT_KEY": f"{base64.urlsafe_b64encode(new).decode()};{old.hex()}"}
    assert keys_from_env(env) == [new, old]
    rotated = Crypt.from_env(env)
    assert rotated.decrypt(blob) == {"a": 1}
    assert Crypt([new]).decrypt(rotated.rotate(blob)) == {"a": 1}
    with pytest.raises(ConfigError, match="32-byte"):
        keys_from_env({"COURTYARD_CRYPT_KEY": "abcd"})


# -- first start --------------------------------------------------------------------------------
async def test_first_start_prints_the_admin_password_once(make_hub, capfd):
    hub = make_hub({"Courtyard.authenticator_class": "native"})
    assert "password:" not in capfd.readouterr().err  # initialize alone (e.g. courtyard token)
    hub.authenticator.on_serve(hub)
    err = capfd.readouterr().err
    match = re.search(r"username: (\S+)\n\s+password: (\S+)", err)
    assert match, err
    name, password = match.groups()
    assert name == "admin" and len(password) >= 12
    async with client_for(hub) as client:
        response = await login(client, name, password)
        assert response.status_code == 303
        me = await client.get("/hub/api/user", params={"_xsrf": client.cookies["_xsrf"]})
        assert me.json()["admin"] is True
    again = make_hub({"Courtyard.authenticator_class": "native"})  # second start, same db
    again.authenticator.on_serve(again)
    assert "password:" not in capfd.readouterr().err


def test_native_is_the_default(make_hub):
    from courtyard.auth.native import NativeAuthenticator
    from courtyard.options import Courtyard

    assert Courtyard().authenticator_class == "native"
    hub = make_hub({"Courtyard.authenticator_class": "native"})
    assert isinstance(hub.authenticator, NativeAuthenticator)
