"""The native authenticator: sign-up with approval, password change, admin reset."""

from __future__ import annotations

from tests.conftest import raw_sql

from .conftest import client_for, login, xsrf_of

ADMIN_TOKEN = "admin-token-0123456789"
AUTH = {"Authorization": f"token {ADMIN_TOKEN}"}
NATIVE = {"Courtyard.authenticator_class": "native",
          "Courtyard.api_tokens": {ADMIN_TOKEN: "admin"},
          "Authenticator.admin_users": {"admin"}}
SIGNUP = {**NATIVE, "NativeAuthenticator.enable_signup": True}


async def signup(client, username: str, password: str, confirm: str | None = None):
    page = await client.get("/hub/signup")
    assert page.status_code == 200, page.text
    return await client.post("/hub/signup", data={
        "_xsrf": xsrf_of(page), "username": username, "password": password,
        "password_confirm": password if confirm is None else confirm})


async def make_user(client, name: str, password: str) -> None:
    assert (await client.post(f"/hub/api/users/{name}", headers=AUTH)).status_code == 201
    response = await client.put(f"/hub/api/users/{name}/password", headers=AUTH,
                                json={"password": password})
    assert response.status_code == 200, response.text


async def test_signup_is_off_by_default(browser):
    _hub, client = await browser(NATIVE)
    assert (await client.get("/hub/signup")).status_code == 404
    assert "Sign up" not in (await client.get("/hub/login")).text


async def test_signup_waits_for_approval(browser, db_url):
    _hub, client = await browser(SIGNUP)
    assert 'href="/hub/signup"' in (await client.get("/hub/login")).text
    response = await signup(client, "Dana", "dana-password-1")
    assert response.status_code == 200 and "waiting for an administrator" in response.text
    raw = raw_sql(
        db_url, "SELECT password_hash FROM native_accounts WHERE username = 'dana'")
    assert raw.startswith("$argon2id$") and "dana-password-1" not in raw
    # pending: the right password gets a clear message, a wrong one the usual refusal
    response = await login(client, "dana", "dana-password-1")
    assert response.status_code == 403 and "waiting for an administrator" in response.text
    response = await login(client, "dana", "wrong-password")
    assert response.status_code == 403 and "Invalid username or password." in response.text
    listed = await client.get("/hub/api/signups", headers=AUTH)
    assert [s["name"] for s in listed.json()] == ["dana"]
    assert (await client.get("/hub/api/users/dana", headers=AUTH)).status_code == 404
    approved = await client.post("/hub/api/users/dana/approve", headers=AUTH)
    assert approved.status_code == 200, approved.text
    assert (await client.get("/hub/api/signups", headers=AUTH)).json() == []
    assert (await login(client, "dana", "dana-password-1")).status_code == 303


async def test_signup_checks(browser):
    hub, client = await browser(SIGNUP)
    assert (await signup(client, "eve", "short")).status_code == 400
    assert (await signup(client, "eve", "long-enough-1", "long-enough-2")).status_code == 400
    assert (await signup(client, "a/b", "long-enough-1")).status_code == 400
    taken = await signup(client, "admin", "long-enough-1")  # an existing user
    assert taken.status_code == 400 and "taken" in taken.text
    assert (await signup(client, "eve", "long-enough-1")).status_code == 200
    assert (await signup(client, "eve", "long-enough-1")).status_code == 400
    # no form without the session's XSRF token
    async with client_for(hub) as other:
        response = await other.post("/hub/signup", data={
            "username": "mallory", "password": "long-enough-1",
            "password_confirm": "long-enough-1"})
        assert response.status_code == 403


async def test_signup_refuses_path_tricks(browser):
    """Issue 12: names that are paths, also once percent-decoded, are refused (400)."""
    _hub, client = await browser(SIGNUP)
    for bad in (".", "..", "%2e%2e", "%2E.", "a%2fb", "x%00"):
        response = await signup(client, bad, "long-enough-1")
        assert response.status_code == 400 and "cannot be used" in response.text, bad
    assert (await client.get("/hub/api/signups", headers=AUTH)).json() == []
    assert (await signup(client, "first.last@example.com", "long-enough-1")).status_code == 200


async def test_reject_and_admin_page(browser):
    _hub, client = await browser(SIGNUP)
    await signup(client, "frank", "frank-password")
    await signup(client, "gina", "gina-password")
    assert (await client.delete("/hub/api/signups/frank", headers=AUTH)).status_code == 204
    assert (await client.delete("/hub/api/signups/frank", headers=AUTH)).status_code == 404
    # an admin approves gina on the page
    admin_pw = (await client.put("/hub/api/users/admin/password", headers=AUTH)).json()["password"]
    async with client_for(_hub) as admin:
        await login(admin, "admin", admin_pw)
        page = await admin.get("/hub/authorize")
        assert page.status_code == 200 and "gina" in page.text and "frank" not in page.text
        done = await admin.post("/hub/authorize", data={
            "_xsrf": xsrf_of(page), "username": "gina", "action": "approve"})
        assert "Approved gina" in done.text
    assert (await login(client, "gina", "gina-password")).status_code == 303
    # a non-admin may not approve
    page = await client.get("/hub/authorize")
    assert page.status_code == 403


async def test_open_signup_needs_no_approval(browser):
    _hub, client = await browser({**SIGNUP, "NativeAuthenticator.open_signup": True})
    response = await signup(client, "hana", "hana-password")
    assert "Your account is ready" in response.text
    assert (await login(client, "hana", "hana-password")).status_code == 303


async def test_change_password(browser):
    hub, client = await browser(NATIVE)
    await make_user(client, "ivan", "ivan-password-1")
    assert (await login(client, "ivan", "ivan-password-1")).status_code == 303
    async with client_for(hub) as laptop:  # a second session of the same user
        await login(laptop, "ivan", "ivan-password-1")
        assert (await laptop.get("/hub/home")).status_code == 200
        page = await client.get("/hub/change-password")
        form = {"_xsrf": xsrf_of(page), "current_password": "nope",
                "password": "ivan-password-2", "password_confirm": "ivan-password-2"}
        assert (await client.post("/hub/change-password", data=form)).status_code == 403
        form["current_password"] = "ivan-password-1"
        assert (await client.post("/hub/change-password",
                                  data={**form, "password_confirm": "x"})).status_code == 400
        changed = await client.post("/hub/change-password", data=form, follow_redirects=True)
        assert changed.status_code == 200 and "Your password was changed" in changed.text
        # this browser stays signed in; the other session ended
        assert (await client.get("/hub/home")).status_code == 200
        assert (await laptop.get("/hub/home")).status_code == 302
    async with client_for(hub) as fresh:
        assert (await login(fresh, "ivan", "ivan-password-1")).status_code == 403
        assert (await login(fresh, "ivan", "ivan-password-2")).status_code == 303


async def test_admin_resets_a_password(browser):
    hub, client = await browser(NATIVE)
    await make_user(client, "judy", "judy-password-1")
    await login(client, "judy", "judy-password-1")
    reset = await client.put("/hub/api/users/judy/password", headers=AUTH)
    assert reset.status_code == 200
    new = reset.json()["password"]
    assert (await client.get("/hub/home")).status_code == 302  # sessions ended
    async with client_for(hub) as fresh:
        assert (await login(fresh, "judy", "judy-password-1")).status_code == 403
        assert (await login(fresh, "judy", new)).status_code == 303
    too_short = await client.put("/hub/api/users/judy/password", headers=AUTH,
                                 json={"password": "abc"})
    assert too_short.status_code == 400
    assert (await client.put("/hub/api/users/nobody/password", headers=AUTH)).status_code == 404
    # judy cannot reset the admin's password with her own cookie
    async with client_for(hub) as judy:
        await login(judy, "judy", new)
        response = await judy.put("/hub/api/users/admin/password", json={},
                                  headers={"X-XSRFToken": judy.cookies["_xsrf"]})
        assert response.status_code == 403


async def test_deleted_user_cannot_sign_in_again(browser):
    _hub, client = await browser(NATIVE)
    await make_user(client, "karl", "karl-password-1")
    assert (await client.delete("/hub/api/users/karl", headers=AUTH)).status_code == 204
    assert (await login(client, "karl", "karl-password-1")).status_code == 403
