"""The browser session: cookies and their flags, XSRF, cookie-authenticated API calls,
``next`` redirects, logout, and the token API's ``auth`` body."""

from __future__ import annotations

import pytest

from courtyard.web.render import safe_next

from .conftest import client_for, login, xsrf_cookie, xsrf_of

DUMMY = {"Courtyard.authenticator_class": "dummy", "DummyAuthenticator.password": "letmein"}
ADMIN_TOKEN = "admin-token-0123456789"


def set_cookie_headers(response) -> dict[str, str]:
    return {h.split("=", 1)[0]: h for h in response.headers.get_list("set-cookie")}


async def test_login_sets_signed_httponly_lax_cookies(browser):
    _hub, client = await browser(DUMMY)
    response = await login(client, "alice", "letmein")
    assert response.status_code == 303
    assert response.headers["location"] == "/hub/home"
    cookies = set_cookie_headers(response)
    hub_login = cookies["jupyterhub-hub-login"].lower()
    assert "httponly" in hub_login and "samesite=lax" in hub_login
    assert "path=/hub/" in hub_login and "max-age=1209600" in hub_login
    assert "secure" not in hub_login
    session = cookies["jupyterhub-session-id"].lower()
    assert "path=/;" in session and "httponly" in session
    assert "httponly" not in cookies["_xsrf"].lower()  # scripts echo it
    home = await client.get("/hub/home")
    assert home.status_code == 200 and "Signed in as <strong>alice</strong>" in home.text


async def test_cookies_are_secure_under_https_public_url(browser):
    _hub, client = await browser({**DUMMY, "Courtyard.public_url": "https://hub.example.org/"},
                                 base_url="https://127.0.0.1:8081")
    response = await login(client, "alice", "letmein")
    assert response.status_code == 303
    for header in response.headers.get_list("set-cookie"):
        assert "secure" in header.lower(), header


async def test_tampered_or_foreign_cookie_is_not_a_login(browser):
    _hub, client = await browser(DUMMY)
    await login(client, "alice", "letmein")
    value = client.cookies.get("jupyterhub-hub-login")
    # change one character well inside the signature (the last one may carry padding bits,
    # so changing it can leave the decoded signature the same)
    swapped = "A" if value[-6] != "A" else "B"
    client.cookies.set("jupyterhub-hub-login", value[:-6] + swapped + value[-5:], path="/hub/")
    assert (await client.get("/hub/home")).status_code == 302


async def test_login_form_needs_xsrf(browser):
    hub, client = await browser(DUMMY)
    page = await client.get("/hub/login")
    response = await client.post("/hub/login", data={"username": "alice", "password": "letmein"})
    assert response.status_code == 403
    response = await client.post("/hub/login", data={"username": "alice", "password": "letmein",
                                                     "_xsrf": xsrf_of(page)[:-3] + "abc"})
    assert response.status_code == 403
    assert "jupyterhub-hub-login" not in response.headers.get("set-cookie", "")
    # a fresh browser (no session cookie) cannot post a token copied from another session
    async with client_for(hub) as other:
        response = await other.post("/hub/login", data={
            "username": "alice", "password": "letmein", "_xsrf": xsrf_of(page)})
        assert response.status_code == 403


async def test_cookie_api_calls_need_xsrf_on_every_method(browser):
    hub, client = await browser(DUMMY)
    await login(client, "alice", "letmein")
    token = xsrf_cookie(client)
    assert (await client.get("/hub/api/user")).status_code == 403
    assert (await client.get("/hub/api/user", headers={"X-XSRFToken": "nope"})).status_code == 403
    me = await client.get("/hub/api/user", headers={"X-XSRFToken": token})
    assert me.status_code == 200 and me.json()["name"] == "alice"
    assert (await client.get("/hub/api/user", params={"_xsrf": token})).status_code == 200
    assert (await client.get("/hub/api/user", headers={"X-CSRFToken": token})).status_code == 200
    assert (await client.head("/hub/api/user")).status_code == 200  # HEAD: no XSRF check
    created = await client.post("/hub/api/users/alice/tokens", json={"note": "by cookie"})
    assert created.status_code == 403
    created = await client.post("/hub/api/users/alice/tokens", json={"note": "by cookie"},
                                headers={"X-XSRFToken": token})
    assert created.status_code == 201, created.text
    # a token is its own proof: no XSRF needed, and a form content type is fine
    secret = created.json()["token"]
    async with client_for(hub) as bare:
        me = await bare.get("/hub/api/user", headers={"Authorization": f"token {secret}"})
        assert me.status_code == 200 and me.json()["name"] == "alice"


async def test_non_ascii_xsrf_token_is_refused_not_an_error(browser):
    """compare_digest refuses str with non-ASCII characters: a header of them must read as
    a wrong token (403), not break the comparison (500)."""
    _hub, client = await browser(DUMMY)
    await login(client, "alice", "letmein")
    for header in (b"\xe9", xsrf_cookie(client).encode()[:-1] + b"\xe9"):
        response = await client.get("/hub/api/user", headers={"X-XSRFToken": header})
        assert response.status_code == 403, response.text
    page = await client.post("/hub/login", data={"username": "alice", "password": "letmein",
                                                 "_xsrf": "\u00e9t\u00e9"})
    assert page.status_code == 403


async def test_cookie_post_with_form_content_type_is_unauthenticated(browser):
    _hub, client = await browser(DUMMY)
    await login(client, "alice", "letmein")
    headers = {"X-XSRFToken": xsrf_cookie(client)}
    for ctype in ("application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                  "text/plain"):
        response = await client.post("/hub/api/users/alice/tokens", content=b"{}",
                                     headers={**headers, "Content-Type": ctype})
        assert response.status_code == 403, ctype
        assert response.json()["message"] == "Missing or invalid credentials."
    response = await client.post("/hub/api/users/alice/tokens", content=b"{}",
                                 headers={**headers, "Content-Type": "application/json"})
    assert response.status_code == 201


@pytest.mark.parametrize("target", [
    "//evil.example/", "https://evil.example/", "http:evil.example", "/\\evil.example",
    "\\\\evil.example", "javascript:alert(1)", "/\t/evil.example", "evil.example", "",
    "/%0d%0aSet-Cookie:x=y\r\n",
])
def test_next_must_be_a_path_on_this_hub(target, make_hub):
    hub = make_hub(DUMMY)
    assert safe_next(hub.options.base_url, target) == "/hub/home"


def test_next_keeps_local_paths_under_base_url(make_hub):
    hub = make_hub({**DUMMY, "Courtyard.base_url": "/jh/"})
    assert safe_next(hub.options.base_url, "/jh/user/alice/lab?x=1") == "/jh/user/alice/lab?x=1"
    assert safe_next(hub.options.base_url, "/other/") == "/jh/hub/home"


async def test_login_redirects_to_next_and_refuses_open_redirects(browser):
    _hub, client = await browser(DUMMY)
    response = await login(client, "alice", "letmein", next_url="/user/alice/lab?a=1")
    assert response.headers["location"] == "/user/alice/lab?a=1"
    _hub, client = await browser(DUMMY)
    response = await login(client, "bob", "letmein", next_url="//evil.example/x")
    assert response.headers["location"] == "/hub/home"
    # already signed in: the login page forwards to next, still only locally
    response = await client.get("/hub/login", params={"next": "https://evil.example/"})
    assert response.status_code == 302 and response.headers["location"] == "/hub/home"


async def test_pages_need_login(browser):
    _hub, client = await browser(DUMMY)
    response = await client.get("/hub/home")
    assert response.status_code == 302
    assert response.headers["location"] == "/hub/login?next=/hub/home"
    assert (await client.get("/hub/")).headers["location"] == "/hub/login"
    await login(client, "alice", "letmein")
    assert (await client.get("/hub/")).headers["location"] == "/hub/home"


async def test_logout_ends_the_session_on_the_server(browser):
    hub, client = await browser(DUMMY)
    await login(client, "alice", "letmein")
    stolen = dict(client.cookies.items())
    xsrf = xsrf_cookie(client)
    assert (await client.get("/hub/api/user", headers={"X-XSRFToken": xsrf})).status_code == 200
    response = await client.get("/hub/logout")
    assert response.status_code == 302 and response.headers["location"] == "/hub/login"
    cleared = set_cookie_headers(response)
    assert 'jupyterhub-hub-login=""' in cleared["jupyterhub-hub-login"]
    # replaying the old cookie (e.g. stolen before logout) no longer works
    async with client_for(hub) as thief:
        for name, value in stolen.items():
            thief.cookies.set(name, value, path="/hub/" if name != "jupyterhub-session-id"
                              else "/")
        assert (await thief.get("/hub/api/user",
                                headers={"X-XSRFToken": xsrf})).status_code == 403
        assert (await thief.get("/hub/home")).status_code == 302


async def test_cross_site_logout_link_only_asks(browser):
    _hub, client = await browser(DUMMY)
    await login(client, "alice", "letmein")
    response = await client.get("/hub/logout", headers={"Sec-Fetch-Site": "cross-site"})
    assert response.status_code == 200 and "Sign out?" in response.text
    assert (await client.get("/hub/home")).status_code == 200
    response = await client.post("/hub/logout", data={"_xsrf": xsrf_of(response)})
    assert response.status_code == 302
    assert (await client.get("/hub/home")).status_code == 302


async def test_shutdown_on_logout_stops_servers(browser):
    hub, client = await browser({**DUMMY, "Courtyard.shutdown_on_logout": True})
    stopped = []

    async def record(user):
        stopped.append(user.name)

    hub.stop_user_servers = record
    await login(client, "alice", "letmein")
    page = await client.get("/hub/home")
    await client.post("/hub/logout", data={"_xsrf": xsrf_of(page)})
    assert stopped == ["alice"]


async def test_token_api_accepts_credentials_in_body(browser):
    _hub, client = await browser({**DUMMY, "Courtyard.api_tokens": {ADMIN_TOKEN: "admin"},
                                  "Authenticator.admin_users": {"admin"}})
    body = {"auth": {"username": "alice", "password": "letmein"}, "note": "script"}
    response = await client.post("/hub/api/users/alice/tokens", json=body)
    assert response.status_code == 201, response.text
    secret = response.json()["token"]
    me = await client.get("/hub/api/user", headers={"Authorization": f"token {secret}"})
    assert me.json()["name"] == "alice"
    bad = {"auth": {"username": "alice", "password": "wrong"}}
    response = await client.post("/hub/api/users/alice/tokens", json=bad)
    assert response.status_code == 403
    # alice's password does not make tokens for bob
    response = await client.post("/hub/api/users/bob/tokens", json=body)
    assert response.status_code == 404  # bob is not alice's to see (he does not exist either)
