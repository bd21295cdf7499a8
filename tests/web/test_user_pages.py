"""A new user in a real browser: sign up, sign in, start servers, watch them start, tokens.

Each test drives headless Chromium against the session's hub (``conftest.web_hub``) and
saves screenshots of the pages it passes through (to ``docs/screenshots/`` only with
``COURTYARD_SCREENSHOTS=1``, else to a temp directory). The ``page``
fixture fails a test whose pages report a Content-Security-Policy violation or a script
error.
"""

from __future__ import annotations

import re

import httpx

from .conftest import WebHub, expect, screenshot, sign_up


def test_login_page_keyboard_and_csp(page, web_hub: WebHub) -> None:
    response = page.goto(f"{web_hub.url}/hub/login")
    assert response.status == 200
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "'unsafe-inline'" not in csp
    # no inline scripts or handlers anywhere in the markup
    html = page.content()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert not re.search(r"\son[a-z]+=", html)
    # keyboard: the username field has focus, visibly; the skip link comes before it
    expect(page.get_by_label("Username")).to_be_focused()  # autofocus
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")
    assert page.evaluate("document.activeElement.className") == "skip-link"
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_role("main")).to_be_visible()
    screenshot(page, "login")
    # a wrong password shows the error, linked to the form
    page.get_by_label("Username").fill("nobody")
    page.get_by_label("Password").fill("wrong-password")
    page.get_by_label("Password").press("Enter")
    expect(page.get_by_role("alert")).to_contain_text("Invalid username or password")


def test_sign_up_and_home(page, web_hub: WebHub) -> None:
    name = web_hub.name("new")
    page.goto(f"{web_hub.url}/hub/login")
    page.get_by_role("link", name="Sign up").click()
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password", exact=True).fill("correct-horse-9")
    page.get_by_label("Password again").fill("correct-horse-9")
    screenshot(page, "signup")
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("status")).to_contain_text("Your account is ready")
    page.get_by_role("link", name="Sign in").click()
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password").fill("correct-horse-9")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{web_hub.url}/hub/home")
    expect(page.get_by_role("heading", name="Your servers")).to_be_visible()
    card = page.locator(".server-card")
    expect(card.locator(".badge")).to_have_text("Stopped")
    expect(card.get_by_role("link", name="Start default server")).to_be_visible()
    expect(page.get_by_role("heading", name="Named servers")).to_be_visible()
    expect(page.get_by_role("link", name="Admin")).to_have_count(0)
    page.keyboard.press("Tab")  # the first Tab on a page reaches the skip link
    assert page.evaluate("document.activeElement.className") == "skip-link"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "content"
    screenshot(page, "home")
    # /hub/ sends a signed-in user with no running server home
    page.goto(f"{web_hub.url}/hub/")
    page.wait_for_url(f"{web_hub.url}/hub/home")


def test_spawn_with_profile_and_watch_progress(page, web_hub: WebHub) -> None:
    name = web_hub.name("spawn")
    sign_up(page, web_hub, name)
    page.get_by_role("link", name="Start default server").click()
    page.wait_for_url(f"{web_hub.url}/hub/spawn/{name}")
    expect(page.get_by_role("heading", name="Start your server")).to_be_visible()
    expect(page.get_by_label("Standard")).to_be_checked()  # the default profile
    page.get_by_label("Held at start").check()
    screenshot(page, "spawn")
    page.get_by_role("button", name="Start").click()
    page.wait_for_url(re.compile(rf".*/hub/spawn-pending/{name}$"))
    log = page.get_by_role("log")
    expect(log).to_contain_text("Server requested")
    expect(log).to_contain_text("waiting for it to answer")
    progress = page.locator("progress")
    expect(progress).to_have_attribute("value", "50")
    expect(page.get_by_role("button", name="Cancel")).to_be_visible()
    screenshot(page, "spawn-pending")
    assert web_hub.server(name)["user_options"] == {"profile": "held"}
    web_hub.release(name)  # the server may listen now: the page follows it there
    page.wait_for_url(f"{web_hub.url}/user/{name}/")
    page.goto(f"{web_hub.url}/hub/home")
    card = page.locator(".server-card")
    expect(card.locator(".badge")).to_have_text("Running")
    expect(card.get_by_role("link", name="Open default server")).to_have_attribute(
        "href", f"/user/{name}/")
    screenshot(page, "home-running")
    # /hub/ goes straight to the running server (redirect_to_server)
    page.goto(f"{web_hub.url}/hub/")
    page.wait_for_url(f"{web_hub.url}/user/{name}/")
    page.goto(f"{web_hub.url}/hub/home")
    page.get_by_role("button", name="Stop default server").click()
    expect(page.locator(".server-card .badge")).to_have_text("Stopped", timeout=20_000)
    web_hub.wait_server(name, ready=False)


def test_cancel_a_spawn(page, web_hub: WebHub) -> None:
    name = web_hub.name("cancel")
    sign_up(page, web_hub, name)
    page.goto(f"{web_hub.url}/hub/spawn")
    page.get_by_label("Held at start").check()
    page.get_by_role("button", name="Start").click()
    expect(page.get_by_role("log")).to_contain_text("waiting for it to answer")
    page.get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("alert")).to_contain_text("cancelled")
    expect(page.get_by_role("link", name="Start again")).to_be_visible()
    web_hub.wait_server(name, ready=False)
    page.goto(f"{web_hub.url}/hub/home")
    expect(page.locator(".server-card .badge")).to_have_text("Stopped")


def test_failed_spawn_shows_the_server_log(page, web_hub: WebHub) -> None:
    name = web_hub.name("broken")
    sign_up(page, web_hub, name)
    page.goto(f"{web_hub.url}/hub/spawn")
    page.get_by_label("Broken").check()
    page.get_by_role("button", name="Start").click()
    expect(page.get_by_role("alert")).to_contain_text("Spawn failed")
    log = page.locator("#server-log")
    expect(log).to_contain_text("crashing on purpose")
    expect(page.get_by_role("heading", name="did not start")).to_be_visible()
    screenshot(page, "spawn-failed")
    # the home page remembers the failure and links to it
    page.goto(f"{web_hub.url}/hub/home")
    expect(page.locator(".server-card")).to_contain_text("The last start failed")


def test_queue_position_while_another_spawn_holds_the_slot(page, browser, web_hub: WebHub
                                                            ) -> None:
    first, second = web_hub.name("first"), web_hub.name("second")
    sign_up(page, web_hub, first)
    page.goto(f"{web_hub.url}/hub/spawn")
    page.get_by_label("Held at start").check()
    page.get_by_role("button", name="Start").click()
    expect(page.get_by_role("log")).to_contain_text("waiting for it to answer")
    other = browser.new_context(viewport={"width": 1280, "height": 860})
    try:
        page2 = other.new_page()
        sign_up(page2, web_hub, second)
        page2.goto(f"{web_hub.url}/hub/spawn")
        page2.get_by_role("button", name="Start").click()  # the default profile
        queue = page2.locator("#queue")
        expect(queue).to_contain_text("number 1 of 1")
        screenshot(page2, "spawn-queued")
        web_hub.release(first)
        page.wait_for_url(f"{web_hub.url}/user/{first}/")
        page2.wait_for_url(f"{web_hub.url}/user/{second}/")
    finally:
        other.close()
        for name in (first, second):
            web_hub.stop_server(name)


def test_named_servers_create_rename_delete(page, web_hub: WebHub) -> None:
    name = web_hub.name("named")
    sign_up(page, web_hub, name)
    page.get_by_label("New server name").fill("analysis")
    page.get_by_role("button", name="Add new server").click()
    page.wait_for_url(f"{web_hub.url}/hub/spawn/{name}/analysis")
    expect(page.get_by_role("heading", name="Start your server")).to_contain_text("analysis")
    page.get_by_role("button", name="Start").click()
    page.wait_for_url(f"{web_hub.url}/user/{name}/analysis/")
    page.goto(f"{web_hub.url}/hub/home")
    row = page.locator("tr[data-server='analysis']")
    expect(row.locator(".badge")).to_have_text("Running")
    screenshot(page, "home-named")
    row.get_by_role("button", name="Stop analysis").click()
    expect(page.locator("tr[data-server='analysis'] .badge")).to_have_text("Stopped")
    # rename: a bad name shows the API's message, a good one is taken
    page.get_by_role("button", name="Rename analysis").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("New name").fill("Bad Name")
    dialog.get_by_role("button", name="Rename").click()
    expect(dialog.get_by_role("alert")).to_contain_text("invalid server name")
    dialog.get_by_label("New name").fill("results")
    dialog.get_by_role("button", name="Rename").click()
    expect(page.locator("tr[data-server='results']")).to_be_visible()
    page.get_by_role("button", name="Delete results").click()  # the confirm is accepted
    expect(page.locator("tr[data-server='results']")).to_have_count(0)
    assert web_hub.server(name, "results") is None


def test_not_running_page_offers_a_start(page, web_hub: WebHub) -> None:
    name = web_hub.name("later")
    sign_up(page, web_hub, name)
    response = page.goto(f"{web_hub.url}/user/{name}/tree/notebook.ipynb")
    assert response.status == 424
    page.wait_for_url(f"{web_hub.url}/hub/user/{name}/tree/notebook.ipynb")
    expect(page.get_by_role("heading", name="is not running")).to_be_visible()
    screenshot(page, "not-running")
    page.get_by_role("link", name="Start my server").click()
    page.get_by_role("button", name="Start").click()
    # once it is ready the browser lands where it was going
    page.wait_for_url(f"{web_hub.url}/user/{name}/tree/notebook.ipynb")
    web_hub.stop_server(name)
    # API-like requests to a stopped server get 424 JSON, not a page
    r = httpx.get(f"{web_hub.url}/hub/user/{name}/api/contents", trust_env=False,
                  headers={"Accept": "application/json"}, cookies=_cookies(page))
    assert r.status_code == 424 and r.json()["status"] == 424


def _cookies(page) -> dict[str, str]:
    return {c["name"]: c["value"] for c in page.context.cookies()}


def test_error_pages(page, web_hub: WebHub) -> None:
    name = web_hub.name("lost")
    sign_up(page, web_hub, name)
    response = page.goto(f"{web_hub.url}/hub/no-such-page")
    assert response.status == 404
    expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
    screenshot(page, "error-404")
    response = page.goto(f"{web_hub.url}/hub/error/503?url=/user/someone/lab")
    assert response.status == 503
    expect(page.get_by_role("alert")).to_contain_text("not answering")
    # someone else's server is not there for this user
    response = page.goto(f"{web_hub.url}/hub/user/{web_hub.admin}/lab")
    assert response.status == 404


def test_tokens_create_and_revoke(page, web_hub: WebHub) -> None:
    name = web_hub.name("tokens")
    sign_up(page, web_hub, name)
    page.get_by_role("link", name="Tokens").click()
    page.wait_for_url(f"{web_hub.url}/hub/token")
    expect(page.locator("#tokens")).to_contain_text("You have no API tokens")
    page.get_by_label("Note").fill("notebook sync")
    page.get_by_label("Expires in").select_option(label="1 day")
    # the API validates the scopes; its message is shown
    page.get_by_label("Permissions (scopes)").fill("read:users")
    page.get_by_role("button", name="Request new token").click()
    expect(page.locator("#token-error")).to_contain_text("Not assigning requested scopes")
    page.get_by_label("Permissions (scopes)").fill("no-such-scope")
    page.get_by_role("button", name="Request new token").click()
    expect(page.locator("#token-error")).to_contain_text("no-such-scope")
    page.get_by_label("Permissions (scopes)").fill(f"read:users!user={name} "
                                                  f"access:servers!server={name}/")
    page.get_by_role("button", name="Request new token").click()
    value = page.get_by_label("New token", exact=True)
    expect(value).to_have_value(re.compile(r"^[0-9a-f]{32}$"))
    secret = value.input_value()
    row = page.locator("#tokens tbody tr", has_text="notebook sync")
    expect(row).to_contain_text(f"read:users!user={name}")
    screenshot(page, "token")
    # the token works, with exactly those scopes
    r = httpx.get(f"{web_hub.hub_api}/hub/api/user", trust_env=False,
                  headers={"Authorization": f"token {secret}"})
    assert r.status_code == 200 and r.json()["name"] == name
    assert f"read:users!user={name}" in r.json()["scopes"]
    assert "read:tokens!user=" + name not in r.json()["scopes"]
    # shown once: a reload does not show it again
    page.reload()
    expect(page.locator("#new-token")).to_be_hidden()
    page.get_by_role("button", name="Revoke the token “notebook sync”").click()
    expect(page.locator("#tokens")).to_contain_text("You have no API tokens")
    r = httpx.get(f"{web_hub.hub_api}/hub/api/user", trust_env=False,
                  headers={"Authorization": f"token {secret}"})
    assert r.status_code == 403


def test_phone_layout(phone, web_hub: WebHub) -> None:
    name = web_hub.name("phone")
    sign_up(phone, web_hub, name)
    overflow = phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the home page is {overflow}px wider than the phone"
    screenshot(phone, "home-phone")
    phone.goto(f"{web_hub.url}/hub/token")
    overflow = phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
