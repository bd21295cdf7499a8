"""Login throttling that attackers can neither bypass nor turn against users: per (user,
address) pair, per address, a hub-wide cap, guesses sent at once, and addresses that a
forged X-Forwarded-For cannot change (through the real proxy, into the real log)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest

from courtyard.auth.dummy import DummyAuthenticator
from courtyard.auth.throttle import Throttle
from courtyard.errors import ConfigError
from tests.test_limits import HubProcess

from .conftest import client_for, login

DUMMY = {"Courtyard.authenticator_class": "dummy", "DummyAuthenticator.password": "letmein"}


def test_pair_address_and_global_counters():
    now = [0.0]
    throttle = Throttle(free=2, per_address_factor=2, global_limit=6, clock=lambda: now[0])
    for _ in range(3):
        throttle.failure("alice", "10.0.0.1")
    assert throttle.retry_after("alice", "10.0.0.1") == 1
    assert throttle.check("alice", "10.0.0.2") is None  # alice elsewhere: free to try
    throttle.failure("bob", "10.0.0.1")
    assert throttle.check("carol", "10.0.0.1") is None  # 4 from the address: 2 x 2 free
    throttle.failure("bob", "10.0.0.1")
    assert throttle.retry_after("carol", "10.0.0.1") == 1
    throttle.failure("erin", "10.0.1.1")
    wait = throttle.check("dave", "10.0.2.1")  # 6 failures this minute: everyone waits
    assert wait is not None and wait.everyone and wait.seconds == 60
    now[0] += 61
    assert throttle.check("dave", "10.0.2.1") is None


async def test_the_real_user_is_not_locked_out_from_elsewhere(browser):
    hub, _client = await browser({**DUMMY, "Authenticator.login_attempts_free": 2})
    async with client_for(hub) as attacker:
        attacker.headers["X-Forwarded-For"] = "203.0.113.66"  # as our proxy would send it
        for _ in range(3):
            assert (await login(attacker, "alice", "guess")).status_code == 403
        assert (await login(attacker, "alice", "letmein")).status_code == 429
    async with client_for(hub) as alice:
        alice.headers["X-Forwarded-For"] = "198.51.100.7"
        assert (await login(alice, "alice", "letmein")).status_code == 303


async def test_the_global_cap_slows_everyone_but_known_users(browser):
    hub, _client = await browser({**DUMMY, "Authenticator.login_attempts_free": 100,
                                  "Authenticator.login_global_limit": 5})

    async def from_(address: str, name: str, password: str) -> httpx.Response:
        async with client_for(hub) as client:
            client.headers["X-Forwarded-For"] = address
            return await login(client, name, password)

    assert (await from_("198.51.100.7", "alice", "letmein")).status_code == 303
    for n in range(5):  # spread over names and addresses
        assert (await from_(f"203.0.113.{n}", f"user{n}", "guess")).status_code == 403
    refused = await from_("192.0.2.1", "bob", "letmein")
    assert refused.status_code == 429
    assert "Too many failed sign-ins on this hub just now" in refused.text
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    # alice signed in from her address before: the cap does not hold her back
    assert (await from_("198.51.100.7", "alice", "letmein")).status_code == 303


class SlowDummy(DummyAuthenticator):
    """Checks take a while (as PAM's and LDAP's do), and are counted."""

    checks = 0

    async def authenticate(self, handler: Any, data: dict[str, Any]) -> Any:
        type(self).checks += 1
        await asyncio.sleep(0.2)
        return None


async def test_guesses_sent_at_once_are_counted_one_by_one(browser):
    SlowDummy.checks = 0
    _hub, client = await browser({"Courtyard.authenticator_class": SlowDummy,
                                 "Authenticator.login_attempts_free": 2})
    page = await client.get("/hub/login")
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
    form = {"_xsrf": xsrf, "username": "alice", "password": "guess"}
    statuses = await asyncio.gather(*(client.post("/hub/login", data=form) for _ in range(8)))
    assert sorted(r.status_code for r in statuses) == [403] * 3 + [429] * 5
    assert SlowDummy.checks == 3


def test_forged_forwarded_for_through_the_proxy_changes_nothing(tmp_path, db_url):
    """Through the real proxy and into the real log: a new forged X-Forwarded-For per
    request neither makes a fresh address for the throttle nor reaches the log."""
    hub = HubProcess(tmp_path, db_url, "c.Authenticator.login_attempts_free = 1\n")
    try:
        with httpx.Client(base_url=hub.public) as client:
            statuses = []
            for n in range(8):  # many names from one address: the address is throttled
                page = client.get("/hub/login")
                xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
                response = client.post("/hub/login", headers={
                    "X-Forwarded-For": f"203.0.113.{n}"},
                    data={"_xsrf": xsrf, "username": f"user{n}", "password": "guess"})
                statuses.append(response.status_code)
        # 1 free x 4 per address, then a 5th checked failure starts the back-off
        assert statuses[:6] == [403] * 5 + [429], statuses
    finally:
        log = hub.stop()
    assert "203.0.113." not in log
    assert re.search(r"Failed login for 'user0' from 127\.0\.0\.1", log), log


async def test_trusted_downstream_ips_are_skipped_in_forwarded_for(browser, caplog):
    """Behind a load balancer the operator lists, the client is the address it forwarded;
    an unlisted hop is the client itself (so its forged entries further left are not)."""
    hub, _client = await browser({**DUMMY, "Courtyard.trusted_downstream_ips": ["10.9.0.0/16"]})
    chain = "192.0.2.99, 203.0.113.5, 10.9.8.7"  # forged, the real client, the balancer
    async with client_for(hub) as client:
        client.headers["X-Forwarded-For"] = chain
        assert (await login(client, "alice", "guess")).status_code == 403
    assert "Failed login for 'alice' from 203.0.113.5" in caplog.text
    hub2, _client = await browser(DUMMY)
    async with client_for(hub2) as client:
        client.headers["X-Forwarded-For"] = chain
        assert (await login(client, "bob", "guess")).status_code == 403
    assert "Failed login for 'bob' from 10.9.8.7" in caplog.text
    # the built-in proxy is told too, so it keeps the balancer's headers
    from courtyard.proxy.rest import BuiltinProxy

    args = BuiltinProxy(trusted_downstream_ips=hub.options.trusted_downstream_ips).proxy_args()
    assert args[args.index("--trusted-downstream-ips") + 1] == "10.9.0.0/16"


def test_a_bad_trusted_downstream_ip_is_a_config_error(make_hub):
    with pytest.raises(ConfigError, match="trusted_downstream_ips: 'not-an-ip'"):
        make_hub({"Courtyard.trusted_downstream_ips": ["not-an-ip"]})
