"""Real notebook servers behind the hub and the built-in proxy: sign-in through the hub's
OAuth flow, token auth, activity reports, sharing and revocation, /hub/user-redirect, and
JupyterHub's own ``jupyterhub-singleuser`` working unchanged."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import httpx
import pytest
from traitlets.config import Config

from .conftest import SingleUserEnv, Stack, follow, form_fields, login

Wait = Callable[..., Awaitable[Any]]

# real servers start in seconds, but a busy 2-core CI machine can take much longer
pytestmark = pytest.mark.timeout(400)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30,
                     what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


def page_config(response: httpx.Response) -> dict[str, Any]:
    match = re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>',
                      response.text, re.S)
    assert match, response.text[:500]
    return json.loads(match.group(1))


async def open_lab(client: httpx.AsyncClient, owner: str) -> httpx.Response:
    return await follow(client, f"/user/{owner}/lab")


async def test_sign_in_token_auth_and_activity(make_stack: Callable[..., Awaitable[Stack]],
                                               uname: Callable[[str], str]) -> None:
    stack = await make_stack(activity_resolution=1)
    alice, bob = uname("alice"), uname("bob")
    server = await stack.start(alice)
    assert server["url"] == f"/user/{alice}/"
    # a browser: sign in at the hub, then the server signs the browser in through OAuth
    browser = stack.browser()
    await login(browser, alice)
    r = await open_lab(browser, alice)
    assert r.status_code == 200, r.text[:500]
    assert str(r.url).endswith(f"/user/{alice}/lab")
    config = page_config(r)
    assert config["hubPrefix"] == "/hub/" and config["hubUser"] == alice
    assert config["hubServerName"] == "" and config["shareUrl"] == "/hub/user-redirect"
    assert config["token"]  # Lab's own API calls carry the OAuth token
    cookie = browser.cookies.get(f"jupyterhub-user-{alice}", path=f"/user/{alice}/")
    assert cookie and "|" in cookie  # signed, not the bare token
    # the cookie works for the REST API too (GET needs no XSRF token)
    r = await browser.get(f"/user/{alice}/api/contents")
    assert r.status_code == 200, r.text

    # API tokens in the Authorization header
    anon = stack.browser()
    alice_token, bob_token = await stack.token(alice), await stack.token(bob)
    url = f"/user/{alice}/api/contents"
    assert (await anon.get(url)).status_code == 403
    assert (await anon.get(url, headers={"Authorization": f"token {alice_token}"})
            ).status_code == 200
    assert (await anon.get(url, headers={"Authorization": f"Bearer {alice_token}"})
            ).status_code == 200
    assert (await anon.get(url, headers={"Authorization": f"token {bob_token}"})
            ).status_code == 403
    assert (await anon.get(url, headers={"Authorization": "token not-a-token"})
            ).status_code == 403
    assert (await anon.get(url, params={"token": alice_token})).status_code == 403  # off
    r = await anon.post(f"/user/{alice}/api/contents", json={"type": "notebook"},
                        headers={"Authorization": f"token {alice_token}"})
    assert r.status_code == 201, r.text  # token auth needs no XSRF token
    # a browser page without a cookie is sent to sign in at the hub
    r = await anon.get(f"/user/{alice}/lab")
    assert r.status_code == 302 and r.headers["location"].startswith(f"/user/{alice}/login")
    r = await anon.get(r.headers["location"])
    assert r.headers["location"].startswith("/hub/api/oauth2/authorize?")
    assert "code_challenge_method=S256" in r.headers["location"]

    # activity reaches the hub (JUPYTERHUB_ACTIVITY_INTERVAL=1 in this stack)
    async def last_activity() -> datetime:
        model = (await stack.api.get(f"/users/{alice}")).json()
        return datetime.fromisoformat(model["servers"][""]["last_activity"].rstrip("Z"))

    before = await last_activity()
    await asyncio.sleep(1.1)
    assert (await anon.get(url, headers={"Authorization": f"token {alice_token}"})
            ).status_code == 200

    async def moved() -> bool:
        return await last_activity() > before

    await eventually(moved, 20, "the server's activity to reach the hub")


async def test_share_access_and_revoke(make_stack: Callable[..., Awaitable[Stack]],
                                       uname: Callable[[str], str]) -> None:
    stack = await make_stack()
    alice, bob = uname("alice"), uname("bob")
    await stack.start(alice)
    await stack.api.post(f"/users/{bob}")
    bob_token = await stack.token(bob)
    url = f"/user/{alice}/api/contents"
    anon = stack.browser()
    auth = {"Authorization": f"token {bob_token}"}
    assert (await anon.get(url, headers=auth)).status_code == 403

    # bob's browser is refused by the hub
    browser = stack.browser()
    await login(browser, bob)
    r = await open_lab(browser, alice)
    assert r.status_code == 403 and "share" in r.text

    # alice shares through a share code; bob accepts it on the hub's page
    r = await stack.api.post(f"/share-codes/{alice}/", json={})
    assert r.status_code == 201, r.text
    accept = r.json()["accept_url"]
    page = await browser.get(accept)
    assert page.status_code == 200 and alice in page.text
    r = await browser.post("/hub/accept-share", data=form_fields(page))
    assert r.status_code == 303 and r.headers["location"] == f"/user/{alice}/"
    # a shared server is not the visitor's own: the hub asks for consent once
    r = await open_lab(browser, alice)
    assert r.status_code == 200 and "Authorize access" in r.text, r.text[:300]
    r = await follow(browser, "/hub/api/oauth2/authorize", method="POST",
                     data={**form_fields(r), "action": "allow"})
    assert r.status_code == 200 and str(r.url).endswith(f"/user/{alice}/lab"), r.text[:300]
    assert page_config(r)["hubUser"] == bob

    async def status() -> int:
        return (await anon.get(url, headers=auth)).status_code

    assert await status() == 200  # bob's API token too: the share is his
    # revoking ends access within the server's cache time (1 s in these tests)
    r = await stack.api.delete(f"/shares/{alice}/")
    assert r.status_code == 204, r.text

    async def refused() -> bool:
        return await status() == 403

    await eventually(refused, 15, "the revoked share to be refused")
    r = await browser.get(f"/user/{alice}/api/contents")
    assert r.status_code == 403


async def test_user_redirect_starts_the_server(make_stack: Callable[..., Awaitable[Stack]],
                                               uname: Callable[[str], str]) -> None:
    stack = await make_stack()
    alice = uname("alice")
    await stack.api.post(f"/users/{alice}")
    browser = stack.browser()
    r = await browser.get("/hub/user-redirect/lab/tree/x.ipynb?reset")
    assert r.status_code == 302 and r.headers["location"].startswith("/hub/login?next=")
    await login(browser, alice, next_url="/hub/user-redirect/lab/tree/x.ipynb?reset")
    r = await browser.get("/hub/user-redirect/lab/tree/x.ipynb?reset")
    assert r.status_code == 302, r.text[:300]
    target = f"/user/{alice}/lab/tree/x.ipynb?reset"
    if r.headers["location"].startswith("/hub/spawn-pending/"):  # slower than 10 s
        assert "next=" in r.headers["location"]
        await stack.wait_ready(alice)
        r = await browser.get("/hub/user-redirect/lab/tree/x.ipynb?reset")
    assert r.headers["location"] == target
    server = (await stack.api.get(f"/users/{alice}")).json()["servers"][""]
    assert server["ready"]
    r = await follow(browser, "/hub/user-redirect/lab")
    assert r.status_code == 200 and str(r.url).endswith(f"/user/{alice}/lab")


async def test_jupyterhub_singleuser_works_unchanged(
        make_stack: Callable[..., Awaitable[Stack]], uname: Callable[[str], str],
        su_env: SingleUserEnv) -> None:
    c = Config()
    c.Spawner.cmd = su_env.jupyterhub_cmd
    c.Spawner.http_timeout = 120
    stack = await make_stack(c, activity_resolution=1)
    alice, bob = uname("alice"), uname("bob")
    server = await stack.start(alice, wait=150)
    assert server["ready"]
    alice_token, bob_token = await stack.token(alice), await stack.token(bob)
    anon = stack.browser()
    url = f"/user/{alice}/api/contents"
    r = await anon.get(url, headers={"Authorization": f"token {alice_token}"})
    assert r.status_code == 200, r.text
    assert (await anon.get(url, headers={"Authorization": f"token {bob_token}"})
            ).status_code == 403
    assert (await anon.get(url)).status_code == 403
    # the official OAuth client signs a browser in through the hub
    browser = stack.browser()
    await login(browser, alice)
    r = await open_lab(browser, alice)
    assert r.status_code == 200 and str(r.url).endswith(f"/user/{alice}/lab"), r.text[:500]
    assert page_config(r)["hubUser"] == alice
    # and reports activity with its own token
    model = (await stack.api.get(f"/users/{alice}")).json()
    assert model["servers"][""]["last_activity"]
