"""Per-user origins (``subdomain_host``) and what the hub closes on a shared origin, without
a browser: in-process hubs, real requests (the Chromium tests are in
``tests/singleuser/test_subdomains.py``)."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from courtyard.app import Hub
from courtyard.db import queries
from courtyard.db.models import OAuthClient, Server
from courtyard.errors import ConfigError
from courtyard.routing import desired_routes
from courtyard.spawners import credentials
from courtyard.spawners.base import UserInfo
from courtyard.subdomains import dns_label
from tests.conftest import ADMIN_TOKEN

HUB = "http://localhost:8000"
XSRF_RE = re.compile(r'name="_xsrf" value="([^"]+)"')


async def sign_in(client: httpx.AsyncClient, name: str) -> httpx.Response:
    page = await client.get("/hub/login")
    r = await client.post("/hub/login", data={"_xsrf": XSRF_RE.search(page.text).group(1),
                                              "username": name, "password": ""})
    assert r.status_code == 303, r.text
    return r


@pytest.fixture
async def browser_for() -> AsyncIterator[Callable[..., httpx.AsyncClient]]:
    """``browser_for(hub, base)``: a cookie-keeping client of the hub's app at ``base``."""
    made: list[httpx.AsyncClient] = []

    def make(hub: Hub, base: str = HUB) -> httpx.AsyncClient:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=hub.asgi), base_url=base)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


def running(hub: Hub, user: str, server: str = "") -> None:
    """Record ``user``'s server as running (its URL set), as a finished spawn leaves it."""
    with hub.session() as db:
        row = queries.get_user(db, user) or queries.create_user(db, user)
        row.servers.append(Server(name=server, state={}, user_options={},
                                  url="http://127.0.0.1:9"))
        db.commit()


@pytest.mark.parametrize("name, label", [
    # JupyterHub's subdomain_hook "idna" gives these (its own test table)
    ("safe", "safe"), ("x", "x"), ("Alice", "alice"), ("üni", "xn--ni-wka"),
    ("é", "xn--9ca"), ("É", "u-x--a755f65"), ("has--doubledash", "u-hasdoubl--cb052ae"),
    ("uhasdoubl--cb052ae", "u-uhasdoub--3c0d1c9"), ("xn--ni-wka", "u-xnniwka--ceb4edd"),
    ("-pre", "u-pre--0e46e7b"), ("a" * 64, "u-aaaaaaaa--ffe054f"), ("a.b", "u-ab--2e7336d"),
    ("123", "u-123--a665a45"),
])
def test_user_host_names_follow_jupyterhubs_default_hook(name: str, label: str) -> None:
    assert dns_label(name) == label


@pytest.mark.parametrize("value", ["localhost:8000", "http://hub.example.org/hub/",
                                   "http://127.0.0.1:8000", "ftp://hub.example.org"])
def test_a_bad_subdomain_host_is_a_one_line_error(make_hub: Callable[..., Hub], value: str
                                                  ) -> None:
    with pytest.raises(ConfigError, match="subdomain_host") as e:
        make_hub(subdomain_host=value)
    assert "\n" not in str(e.value)


def test_a_custom_subdomain_hook_names_the_hosts(make_hub: Callable[..., Hub]) -> None:
    hub = make_hub(subdomain_host="https://hub.example.org:8443",
                   subdomain_hook=lambda name, domain, kind: f"{name}-home.{domain}")
    assert hub.server_url("alice", "gpu") == "https://alice-home.hub.example.org:8443/user/alice/gpu/"
    with pytest.raises(ConfigError, match="subdomain_hook"):
        make_hub(subdomain_hook="legacy-ish")


async def test_servers_live_on_their_own_origin(make_hub: Callable[..., Hub],
                                                browser_for: Callable[..., httpx.AsyncClient]
                                                ) -> None:
    hub = make_hub(subdomain_host=HUB, allow_named_servers=True,
                   services=[{"name": "docs", "url": "http://127.0.0.1:9"}])
    running(hub, "alice")
    running(hub, "alice", "gpu")
    # the proxy routes on host name; the hub keeps the default route and its services
    with hub.session() as db:
        routes, _keep = desired_routes(hub, db)
    assert set(routes) == {"/", "alice.localhost/user/alice/", "alice.localhost/user/alice/gpu/",
                           "localhost/services/docs/"}
    # the API gives the servers' URLs on their origin, as JupyterHub does with subdomains
    api = browser_for(hub, "http://127.0.0.1:8081")
    model = (await api.get("/hub/api/users/alice",
                           headers={"Authorization": f"token {ADMIN_TOKEN}"})).json()
    assert model["servers"]["gpu"]["url"] == "http://alice.localhost:8000/user/alice/gpu/"
    assert model["servers"][""]["full_url"] == "http://alice.localhost:8000/user/alice/"

    browser = browser_for(hub)
    login = await sign_in(browser, "alice")
    cookies = login.headers.get_list("set-cookie")
    assert cookies and not any("domain=" in c.lower() for c in cookies)  # host-only
    # /hub/ and the home page's buttons lead to the server's origin
    r = await browser.get("/hub/")
    assert r.headers["location"] == "http://alice.localhost:8000/user/alice/"
    home = await browser.get("/hub/home")
    assert 'href="http://alice.localhost:8000/user/alice/gpu/"' in home.text
    # /user/alice/... on the hub's host, and /hub/user/alice/..., go to alice's origin
    r = await browser.get("/user/alice/lab/tree/x.ipynb")
    assert r.headers["location"] == "/hub/user/alice/lab/tree/x.ipynb"
    r = await browser.get("/hub/user/alice/lab/tree/x.ipynb")
    assert r.status_code == 302
    assert r.headers["location"] == \
        "http://alice.localhost:8000/user/alice/lab/tree/x.ipynb?redirects=1"
    # so do user-redirect and a login's next
    r = await browser.get("/hub/user-redirect/lab")
    assert r.headers["location"] == "http://alice.localhost:8000/user/alice/lab"
    bob = browser_for(hub)
    page = await bob.get("/hub/login")
    r = await bob.post("/hub/login", data={"_xsrf": XSRF_RE.search(page.text).group(1),
                                           "username": "bob", "password": "",
                                           "next": "/user/alice/lab"})
    assert r.headers["location"] == "http://alice.localhost:8000/user/alice/lab"


async def test_the_hub_answers_only_on_its_own_host(make_hub: Callable[..., Hub],
                                                    browser_for: Callable[..., httpx.AsyncClient]
                                                    ) -> None:
    hub = make_hub(subdomain_host=HUB)
    on_alice = browser_for(hub, "http://alice.localhost:8000")
    r = await on_alice.get("/hub/login?next=%2Fhub%2Fhome")
    assert r.status_code == 302
    assert r.headers["location"] == f"{HUB}/hub/login?next=%2Fhub%2Fhome"
    assert "set-cookie" not in r.headers
    # a stopped server's URL reaches the hub (the proxy's default route): on to the hub
    r = await on_alice.get("/user/alice/tree?x=1")
    assert r.headers["location"] == f"{HUB}/hub/user/alice/tree?x=1"
    r = await on_alice.post("/hub/login", data={"username": "alice", "password": ""})
    assert r.status_code == 421
    assert r.json() == {"status": 421, "message": "The hub does not answer on "
                        "alice.localhost:8000; use http://localhost:8000/"}
    assert (await browser_for(hub).get("/hub/login")).status_code == 200


async def test_servers_are_told_their_origin_and_sign_in_by_oauth_there(
        make_hub: Callable[..., Hub]) -> None:
    hub = make_hub(subdomain_host=HUB)
    spawner = hub.lifecycle.make_spawner(UserInfo("alice"), "")
    env = spawner.get_env()
    assert env["JUPYTERHUB_HOST"] == HUB  # the hub: where OAuth and links go
    assert env["JUPYTERHUB_PUBLIC_HUB_URL"] == f"{HUB}/hub/"
    assert env["JUPYTERHUB_PUBLIC_URL"] == "http://alice.localhost:8000/user/alice/"
    assert env["JUPYTERHUB_OAUTH_CALLBACK_URL"] == \
        "http://alice.localhost:8000/user/alice/oauth_callback"
    running(hub, "alice")
    with hub.session() as db:
        server = queries.get_user(db, "alice").servers[0]
        credentials.issue_many(db, [credentials.Launch(
            server.id, spawner.server_prefix, [], [], host=spawner.server_host)])
        db.commit()
        client = db.scalar(select(OAuthClient).where(
            OAuthClient.identifier == "jupyterhub-user-alice"))
        assert client.redirect_uri == env["JUPYTERHUB_OAUTH_CALLBACK_URL"]


# -- a shared origin: what can be closed -------------------------------------------------------
@pytest.mark.parametrize("headers, signed_in", [
    ({}, True),  # no Sec-Fetch-* (curl, old browsers): as JupyterHub
    ({"Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}, True),
    ({"Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"}, False),  # fetch()
    ({"Sec-Fetch-Mode": "same-origin", "Sec-Fetch-Dest": "empty"}, False),
    ({"Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "empty"}, False),  # readable same-origin
    ({"Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "iframe"}, False),
])
async def test_pages_sign_in_only_top_level_navigations(
        make_hub: Callable[..., Hub], browser_for: Callable[..., httpx.AsyncClient],
        headers: dict[str, str], signed_in: bool) -> None:
    """A script on the hub's origin that fetches /hub/home gets the login page, not the
    XSRF token (JupyterHub 4.1's answer to CVE-2024-28233), and no cookie."""
    hub = make_hub()
    browser = browser_for(hub, "http://127.0.0.1:8000")
    await sign_in(browser, "alice")
    r = await browser.get("/hub/home", headers=headers)
    if signed_in:
        assert r.status_code == 200 and 'data-user="alice"' in r.text
        return
    assert r.status_code == 302
    assert r.headers["location"].startswith("/hub/login?next=")
    login = await browser.get(r.headers["location"], headers=headers)
    assert login.status_code == 200 and 'data-user="alice"' not in login.text
    assert "set-cookie" not in login.headers and "set-cookie" not in r.headers
    # the same request with the session's XSRF token (the hub's own scripts) is signed in
    page = await browser.get("/hub/token")
    xsrf = re.search(r'data-xsrf="([^"]+)"', page.text).group(1)
    r = await browser.get("/hub/home", headers={**headers, "X-XSRFToken": xsrf})
    assert r.status_code == 200 and 'data-user="alice"' in r.text


async def test_a_tossed_login_cookie_signs_nobody_in(
        make_hub: Callable[..., Hub], browser_for: Callable[..., httpx.AsyncClient]) -> None:
    """Another site on a parent domain sets its own login cookie (mallory's) next to the
    visitor's: the hub must not pick one, which could sign the visitor in as mallory."""
    hub = make_hub()
    alice, mallory = browser_for(hub, "http://127.0.0.1:8000"), browser_for(hub, "http://127.0.0.1:8000")
    await sign_in(alice, "alice")
    await sign_in(mallory, "mallory")
    tossed = mallory.cookies["jupyterhub-hub-login"]
    mine = alice.cookies["jupyterhub-hub-login"]
    raw = httpx.AsyncClient(transport=httpx.ASGITransport(app=hub.asgi),
                            base_url="http://127.0.0.1:8000")
    async with raw:
        for cookie in (f"jupyterhub-hub-login={mine}; jupyterhub-hub-login={tossed}",
                       f"jupyterhub-hub-login={tossed}; jupyterhub-hub-login={mine}"):
            r = await raw.get("/hub/home", headers={"Cookie": cookie})
            assert r.status_code == 302 and r.headers["location"].startswith("/hub/login")
        r = await raw.get("/hub/home", headers={"Cookie": f"jupyterhub-hub-login={mine}"})
        assert r.status_code == 200 and 'data-user="alice"' in r.text


@pytest.mark.parametrize("options, warned", [
    ({}, True),  # the dummy authenticator lets anyone in
    ({"subdomain_host": HUB}, False),
    ({"Authenticator.allowed_users": {"admin"}}, False),  # one person: no one to attack
    ({"Authenticator.allowed_users": {"admin", "bob"}}, True),
    ({"authenticator_class": "native", "NativeAuthenticator.enable_signup": True}, True),
])
def test_a_shared_origin_is_warned_about_when_several_people_may_sign_in(
        make_hub: Callable[..., Hub], caplog: pytest.LogCaptureFixture,
        options: dict[str, Any], warned: bool) -> None:
    from traitlets.config import Config

    c = Config()
    for key, value in options.items():
        section, _, name = key.rpartition(".")
        c[section or "Courtyard"][name] = value
    with caplog.at_level(logging.WARNING, logger="courtyard"):
        make_hub(c)
    lines = [r.getMessage() for r in caplog.records if "subdomain_host" in r.getMessage()]
    assert len(lines) == (1 if warned else 0), lines
    if warned:
        assert lines[0].startswith("c.JupyterHub.subdomain_host is not set")


async def test_a_script_cannot_post_the_hubs_forms(
        make_hub: Callable[..., Hub], browser_for: Callable[..., httpx.AsyncClient]) -> None:
    """A script on the hub's origin reads the sign-in form's token with fetch: posting it
    from a script (not a form submission) signs nobody in (login CSRF)."""
    hub = make_hub()
    browser = browser_for(hub, "http://127.0.0.1:8000")
    fetch = {"Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"}
    await browser.get("/hub/login")  # the visitor's session
    page = await browser.get("/hub/login", headers=fetch)  # the script reads its token
    form = {"_xsrf": XSRF_RE.search(page.text).group(1), "username": "mallory", "password": ""}
    r = await browser.post("/hub/login", data=form, headers=fetch)
    assert r.status_code == 403 and "set-cookie" not in r.headers
    r = await browser.post("/hub/login", data=form, headers={"Sec-Fetch-Mode": "navigate"})
    assert r.status_code == 303
