"""JupyterHub's own example configs that import ``jupyterhub`` (``examples/`` of the
jupyterhub 6.1.1 sdist), loaded as real ``jupyterhub_config.py`` files, and what a user sees
with them: sign in, start, reach, stop. The files are JupyterHub's, verbatim (BSD-3-Clause);
where an example needs a back end that cannot run here, the test says what it adapts."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import secrets
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from courtyard.errors import ConfigError
from tests.auth.conftest import idp_sign_in, login
from tests.compat import test_jupyterhub_auth as jh_auth
from tests.compat.test_jupyterhub_spawners import XSRF_RE, load, sign_in
from tests.conftest import free_port
from tests.spawners.conftest import server_row, serving, wait_until

# the hubs from config files, the real back ends and the auth key, as the auth tests have them
BASE, api, ldap_config, whoami = jh_auth.BASE, jh_auth.api, jh_auth.ldap_config, jh_auth.whoami
crypt_key, hub_from_file, open_client = jh_auth.crypt_key, jh_auth.hub_from_file, jh_auth.open_client
served, slapd, idp = jh_auth.served, jh_auth.slapd, jh_auth.idp

# -- examples/spawn-form: a LocalProcessSpawner subclass with a form ---------------------------
SPAWN_FORM = '''\
"""
Example JupyterHub config allowing users to specify environment variables and notebook-server args
"""

import shlex

from jupyterhub.spawner import LocalProcessSpawner


class DemoFormSpawner(LocalProcessSpawner):
    def _options_form_default(self):
        default_env = "YOURNAME=%s\\n" % self.user.name
        return """
        <label for="args">Extra notebook CLI arguments</label>
        <input name="args" placeholder="e.g. --debug"></input>
        <label for="env">Environment variables (one per line)</label>
        <textarea name="env">{env}</textarea>
        """.format(
            env=default_env
        )

    def options_from_form(self, formdata):
        options = {}
        options['env'] = env = {}

        env_lines = formdata.get('env', [''])
        for line in env_lines[0].splitlines():
            if line:
                key, value = line.split('=', 1)
                env[key.strip()] = value.strip()

        arg_s = formdata.get('args', [''])[0].strip()
        if arg_s:
            options['argv'] = shlex.split(arg_s)
        return options

    def get_args(self):
        """Return arguments to pass to the notebook server"""
        argv = super().get_args()
        if self.user_options.get('argv'):
            argv.extend(self.user_options['argv'])
        return argv

    def get_env(self):
        env = super().get_env()
        if self.user_options.get('env'):
            env.update(self.user_options['env'])
        return env


c.JupyterHub.spawner_class = DemoFormSpawner
'''


async def test_spawn_form_example(spawn_hub, uname, tmp_path):
    """Adapted: the example keeps JupyterHub's default PAM sign-in; the test hub signs in
    with its dummy authenticator, and the server command is the test's mocksu."""
    hub = spawn_hub(load(tmp_path, SPAWN_FORM))
    name = uname("sf")
    async with serving(hub) as admin, httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{hub.options.port}", trust_env=False,
            timeout=30) as browser:
        await hub.ready_proxy()
        await sign_in(browser, name)
        form = await browser.get("/hub/spawn")
        assert form.status_code == 200, form.text
        assert f'<textarea name="env">YOURNAME={name}\n</textarea>' in form.text
        posted = await browser.post("/hub/spawn", data={
            "_xsrf": XSRF_RE.search(form.text).group(1), "args": "--debug --port-retries=0",
            "env": f"YOURNAME={name}\nCOLOUR = blue\n"})
        assert posted.status_code in (302, 303), posted.text

        async def ready() -> bool:
            model = (await admin.get(f"/users/{name}")).json()
            return bool(model["servers"].get("", {}).get("ready"))

        await wait_until(ready, what=f"{name}'s server")
        env = (await browser.get(f"/user/{name}/env")).json()  # through the proxy
        assert (env["YOURNAME"], env["COLOUR"]) == (name, "blue")
        pid = server_row(hub, name)["state"]["pid"]
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert argv[-3:] == [b"--debug", b"--port-retries=0", b""]
        assert (await admin.delete(f"/users/{name}/server")).status_code == 204
        gone = await browser.get(f"/user/{name}/api")
        assert gone.status_code != 200


# -- examples/external-oauth: an external OAuth client registered as a service ------------------
EXTERNAL_OAUTH = """\
import os

# get the oauth client's API token.
# this could come from anywhere
api_token = os.getenv("JUPYTERHUB_API_TOKEN")
if not api_token:
    raise ValueError(
        "Make sure to `export JUPYTERHUB_API_TOKEN=$(openssl rand -hex 32)`"
    )

c = get_config()  # noqa
# tell JupyterHub to register the service as an external oauth client
c.JupyterHub.services = [
    {
        'name': 'external-oauth',
        'oauth_client_id': "service-oauth-client-test",
        'api_token': api_token,
        'oauth_redirect_uri': 'http://127.0.0.1:5555/oauth_callback',
    }
]

# Grant all JupyterHub users ability to access services
c.JupyterHub.load_roles = [
    {
        'name': 'user',
        'description': 'Allow all users to access all services',
        'scopes': ['access:services', 'self'],
    }
]

# Boilerplate to make sure the example runs - this is not relevant
# to external oauth services.

# Allow authentication with any username and any password
from jupyterhub.auth import DummyAuthenticator

c.JupyterHub.authenticator_class = DummyAuthenticator

# Optionally set a global password that all users must use
# c.DummyAuthenticator.password = "your_password"

# only listen on localhost for testing.
c.JupyterHub.bind_url = 'http://127.0.0.1:8000'
"""


async def test_external_oauth_example(hub_from_file, open_client, monkeypatch):
    """The example's service (``whoami-oauth-basic.py``) is played by the test: the same
    authorization-code flow with PKCE, the same token request with the api_token as the
    client secret, then ``/hub/api/user`` with the token it got."""
    api_token = secrets.token_hex(32)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", api_token)
    hub = hub_from_file(EXTERNAL_OAUTH)
    browser = open_client(hub)
    assert (await login(browser, "Wendy", "any")).status_code == 303
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(
        hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    redirect_uri = "http://127.0.0.1:5555/oauth_callback"
    state = secrets.token_urlsafe(8)
    response = await browser.get("/hub/api/oauth2/authorize", params={
        "client_id": "service-oauth-client-test", "redirect_uri": redirect_uri,
        "response_type": "code", "state": state, "code_challenge": challenge,
        "code_challenge_method": "S256"})
    # an external service asks the user first, as on JupyterHub (not in oauth_no_confirm_list)
    assert response.status_code == 200 and "asks to sign you in as" in response.text
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"',
                             response.text))
    response = await browser.post("/hub/api/oauth2/authorize",
                                  data={**fields, "action": "allow"})
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(redirect_uri + "?")
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == [state]
    service = httpx.AsyncClient(transport=httpx.ASGITransport(app=hub.asgi), base_url=BASE)
    async with service:
        wrong = await service.post("/hub/api/oauth2/token", data={
            "client_id": "service-oauth-client-test", "client_secret": "not-the-token",
            "grant_type": "authorization_code", "code": query["code"][0],
            "code_verifier": verifier, "redirect_uri": redirect_uri})
        assert wrong.status_code in (400, 401), wrong.text
        token = await service.post("/hub/api/oauth2/token", data={
            "client_id": "service-oauth-client-test", "client_secret": api_token,
            "grant_type": "authorization_code", "code": query["code"][0],
            "code_verifier": verifier, "redirect_uri": redirect_uri})
        assert token.status_code == 200, token.text
        access = token.json()["access_token"]
        me = await service.get("/hub/api/user", headers={"Authorization": f"token {access}"})
        assert me.status_code == 200, me.text
        assert me.json()["name"] == "wendy"
        # the service's own api_token works as JupyterHub's does: it is the service
        own = await service.get("/hub/api/user", headers={"Authorization": f"token {api_token}"})
        assert own.status_code == 200, own.text
        assert (own.json()["kind"], own.json()["name"]) == ("service", "external-oauth")


# -- examples/forced-login: sign in with a one-time token from an external app ----------------
FORCED_LOGIN = '''\
import json

from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from traitlets import Unicode

from jupyterhub.auth import Authenticator
from jupyterhub.utils import url_path_join


class ForcedLoginAuthenticator(Authenticator):
    """Authenticator to force login with a token provided by an external service

    The external service issues tokens, which are exchanged for a username.
    Visiting `/hub/login?login_token=...` logs in a user
    Each token can be used only once.
    """

    auto_login = True  # begin login without prompt (token is in url)
    allow_all = True  # external login app controls this
    token_provider_url = Unicode(
        config=True, help="""The URL of the token/username provider"""
    )

    async def authenticate(self, handler, data):
        token = handler.get_argument("login_token", None)
        if not token:
            raise web.HTTPError(
                400, f"Login with external provider at {self.token_provider_url}"
            )
        client = AsyncHTTPClient()
        try:
            response = await client.fetch(
                url_path_join(self.token_provider_url, "/login"),
                method="POST",
                headers={"Content-Type": "application/json"},
                body=json.dumps({"token": token}),
            )
        except HTTPClientError as e:
            self.log.info(
                "Error exchanging token for username: %s",
                e.response.body.decode("utf8", "replace"),
            )
            if e.code == 404:
                raise web.HTTPError(
                    403,
                    f"Invalid token. Login with external provider at {self.token_provider_url}",
                )
            else:
                raise
        # pass through the response
        return json.loads(response.body.decode())


c = get_config()  # noqa

# use our Authenticator
c.JupyterHub.authenticator_class = ForcedLoginAuthenticator
# tell it where the external launch app is
c.ForcedLoginAuthenticator.token_provider_url = "http://127.0.0.1:9000/"


# local testing config (fake spawner, localhost only)
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.spawner_class = "simple"
'''


class TokenProvider:
    """The example's external app, reduced to what the hub talks to: ``POST /login`` with
    ``{"token": ...}`` answers ``{"name": ...}`` once per token, else 404."""

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.server: asyncio.base_events.Server | None = None

    def issue(self, name: str) -> str:
        token = secrets.token_urlsafe(16)
        self.tokens[token] = name
        return token

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
        body = json.loads(await reader.readexactly(length))
        name = self.tokens.pop(body.get("token", ""), None) \
            if head.startswith(b"POST /login ") else None
        status, answer = (200, {"name": name}) if name else (404, {"message": "invalid token"})
        data = json.dumps(answer).encode()
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
        await writer.drain()
        writer.close()


@pytest.fixture
async def token_provider() -> AsyncIterator[TokenProvider]:
    provider = TokenProvider()
    server = await asyncio.start_server(provider.handle, "127.0.0.1", provider.port)
    async with server:
        yield provider


async def test_forced_login_example(served, token_provider, uname):
    """Adapted: the external app is :class:`TokenProvider` on a free port (the example's
    needs a browser form); the ``simple`` spawner is the test's mocksu (as root in CI a
    server never runs as the hub's user)."""
    text = FORCED_LOGIN + textwrap.dedent(f"""
        c.ForcedLoginAuthenticator.token_provider_url = {token_provider.url!r}
        c.JupyterHub.spawner_class = "local"
        """)
    name = uname("fl")
    async with served(text) as (hub, admin):
        host, port = hub.hub_bound
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}", trust_env=False,
                                     timeout=30) as browser:
            bare = await browser.get("/hub/login")
            assert bare.status_code == 400, bare.text
            assert f"Login with external provider at {token_provider.url}" in bare.text
            bad = await browser.get("/hub/login", params={"login_token": "made-up"})
            assert bad.status_code == 403, bad.text
            assert "Invalid token. Login with external provider" in bad.text
            token = token_provider.issue(name)
            fetched = await browser.get("/hub/login", params={"login_token": token},
                                        headers={"Sec-Fetch-Mode": "cors"})
            # a script's fetch signs nobody in, and leaves the token unspent (used below)
            assert fetched.status_code == 403, fetched.text
            response = await browser.get("/hub/login", params={
                "login_token": token, "next": "/hub/home"})
            assert response.status_code in (302, 303), response.text
            assert response.headers["location"].endswith("/hub/home")
            assert (await whoami(browser))["name"] == name
            # each token signs in once
            async with httpx.AsyncClient(base_url=f"http://{host}:{port}",
                                         trust_env=False) as other:
                again = await other.get("/hub/login", params={"login_token": token})
            assert again.status_code == 403
            xsrf = {"X-XSRFToken": browser.cookies["_xsrf"]}
            started = await browser.post(f"/hub/api/users/{name}/server", headers=xsrf)
            assert started.status_code in (201, 202), started.text

            async def ready() -> bool:
                model = (await admin.get(f"/users/{name}")).json()
                return model["servers"].get("", {}).get("ready", False)

            await wait_until(ready, what=f"{name}'s server")
        async with httpx.AsyncClient(trust_env=False, timeout=30) as outside:
            reached = await outside.get(f"http://127.0.0.1:{hub.options.port}/user/{name}/api")
        assert reached.status_code == 200 and reached.json() == {"version": "0.0-mocksu"}
        assert (await admin.delete(f"/users/{name}/server")).status_code in (202, 204)


# -- jupyterhub-ldapauthenticator: the whole way through a served hub ---------------------------
async def full_flow(hub: Any, admin: httpx.AsyncClient, login_name: str, password: str,
                    name: str) -> None:
    """Sign in through the login form as ``login_name``, which the hub calls ``name``;
    start, reach through the proxy, stop."""
    host, port = hub.hub_bound
    async with httpx.AsyncClient(base_url=f"http://{host}:{port}", trust_env=False,
                                 timeout=30) as browser:
        assert (await login(browser, login_name, password)).status_code == 303
        assert (await whoami(browser))["name"] == name
        xsrf = {"X-XSRFToken": browser.cookies["_xsrf"]}
        started = await browser.post(f"/hub/api/users/{name}/server", headers=xsrf)
        assert started.status_code in (201, 202), started.text

        async def ready() -> bool:
            model = (await admin.get(f"/users/{name}")).json()
            return model["servers"].get("", {}).get("ready", False)

        await wait_until(ready, what=f"{name}'s server")
    public = f"http://127.0.0.1:{hub.options.port}"
    async with httpx.AsyncClient(trust_env=False, timeout=30) as outside:
        reached = await outside.get(f"{public}/user/{name}/api")
    assert reached.status_code == 200 and reached.json() == {"version": "0.0-mocksu"}
    assert (await admin.delete(f"/users/{name}/server")).status_code in (202, 204)

    async def stopped() -> bool:
        return not (await admin.get(f"/users/{name}")).json()["servers"]

    await wait_until(stopped, what=f"{name}'s server to stop")


async def test_ldapauthenticator_sign_in_start_reach_stop(served, slapd, uname):
    """As root the server runs as a system account of the hub user's name: JupyterHub's
    ``username_map`` gives slapd's alice a name unique to the run (deleted at the end)."""
    name = uname("ld")
    text = ldap_config(slapd, f"c.Authenticator.username_map = {{'alice': {name!r}}}")
    async with served(text) as (hub, admin):
        assert type(hub.authenticator.inner).__name__ == "LDAPAuthenticator"
        await full_flow(hub, admin, "alice", "alicepw", name)
        state = (await admin.get(f"/users/{name}")).json()["auth_state"]
        assert state["ldap_groups"] == [slapd.group_dn("researchers")]


# -- a JupyterHub Authenticator inside Courtyard's MultiAuthenticator -------------------------
TEAM = """\
    from jupyterhub.auth import Authenticator

    class TeamAuthenticator(Authenticator):
        # a seed-style form authenticator: one shared team password
        async def authenticate(self, handler, data):
            if data["password"] == "team-pw":
                return {"name": data["username"], "auth_state": {"via": "team"}}
            return None

        async def check_allowed(self, username, authentication=None):
            return username.startswith("team")
    """
MULTI = TEAM + """
    c.JupyterHub.authenticator_class = [TeamAuthenticator, LDAPAuthenticator]
    """


async def test_jupyterhub_authenticators_inside_multi(hub_from_file, open_client, slapd):
    text = textwrap.dedent(ldap_config(slapd)) + textwrap.dedent(MULTI)
    hub = hub_from_file(text)
    kinds = [type(getattr(a, "inner", a)).__name__ for a in hub.authenticator.authenticators]
    assert kinds == ["TeamAuthenticator", "LDAPAuthenticator"]
    team = open_client(hub)
    assert (await login(team, "team1", "team-pw")).status_code == 303
    assert (await whoami(team))["name"] == "team1"
    ldap = open_client(hub)
    assert (await login(ldap, "alice", "alicepw")).status_code == 303
    assert (await whoami(ldap))["name"] == "alice"
    async with api(hub) as admin:
        assert (await admin.get("/users/team1")).json()["auth_state"] == {"via": "team"}
        state = (await admin.get("/users/alice")).json()["auth_state"]
        assert state["ldap_groups"] == [slapd.group_dn("researchers")]
    # each keeps its own rules: the team password is no LDAP password, bob is in no
    # allowed LDAP group, a non-team name is refused by the team check
    for user, password in [("alice", "team-pw"), ("bob", "bobpw"), ("other", "team-pw")]:
        refused = await login(open_client(hub), user, password)
        assert refused.status_code == 403, (user, refused.text)



# -- a subclass of oauthenticator's GenericOAuthenticator, overriding its hooks -----------------
OAUTH_SUBCLASS = """
    from oauthenticator.generic import GenericOAuthenticator

    class SiteOAuthenticator(GenericOAuthenticator):
        login_service = "Campus SSO"
        spawned = []

        def user_info_to_username(self, user_info):
            # the site's rule: the provider's names carry a prefix the hub drops
            return user_info["preferred_username"].removeprefix("sso-")

        async def authenticate(self, handler, data=None):
            model = await super().authenticate(handler, data)
            model["auth_state"]["site"] = {"from": handler.request.remote_ip,
                                           "groups": model.get("groups")}
            return model

        async def check_allowed(self, username, auth_model):
            if username.startswith("banned"):
                return False
            return await super().check_allowed(username, auth_model)

        def logout_url(self, base_url):
            return "https://sso.example.org/logout?back=" + base_url

        async def pre_spawn_start(self, user, spawner):
            state = await user.get_auth_state()
            type(self).spawned.append((user.name, state["oauth_user"]["preferred_username"]))

    c.JupyterHub.authenticator_class = SiteOAuthenticator
    c.Authenticator.enable_auth_state = True
    """


async def test_oauthenticator_subclass_hooks(served, idp, uname):
    name = uname("os")
    text = textwrap.dedent(jh_auth.oauth_config(idp)) + textwrap.dedent(OAUTH_SUBCLASS)
    async with served(text) as (hub, admin):
        assert type(hub.authenticator).__name__ == "SiteOAuthenticator"
        host, port = hub.hub_bound
        url = f"http://{host}:{port}"
        async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=30) as browser:
            assert "Sign in with Campus SSO" in (await browser.get("/hub/login")).text
            response = await idp_sign_in(browser, f"sso-{name}", next_url="/hub/home")
            assert response.status_code == 303, response.text
            me = await whoami(browser)
            assert (me["name"], me["groups"]) == (name, ["users"])
            xsrf = {"X-XSRFToken": browser.cookies["_xsrf"]}
            started = await browser.post(f"/hub/api/users/{name}/server", headers=xsrf)
            assert started.status_code in (201, 202), started.text

            async def ready() -> bool:
                model = (await admin.get(f"/users/{name}")).json()
                return model["servers"].get("", {}).get("ready", False)

            await wait_until(ready, what=f"{name}'s server")
        async with httpx.AsyncClient(trust_env=False, timeout=30) as outside:
            reached = await outside.get(f"http://127.0.0.1:{hub.options.port}/user/{name}/api")
        assert reached.status_code == 200 and reached.json() == {"version": "0.0-mocksu"}
        assert type(hub.authenticator.inner).spawned == [(name, f"sso-{name}")]
        # super().authenticate ran oauthenticator's own steps on the verified sign-in
        state = (await admin.get(f"/users/{name}")).json()["auth_state"]
        assert state["site"] == {"from": "127.0.0.1", "groups": ["users"]}
        assert state["token_response"]["access_token"] == state["access_token"]  # as theirs
        assert state["access_token"] and state["oauth_user"]["sub"] == f"sso-{name}"
        assert (await admin.delete(f"/users/{name}/server")).status_code in (202, 204)
        async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=30) as browser:
            assert (await idp_sign_in(browser, f"sso-{name}")).status_code == 303
            out = await browser.get("/hub/logout")
            assert out.status_code == 302
            assert out.headers["location"] == "https://sso.example.org/logout?back=/hub/"
            assert (await browser.get("/hub/api/user")).status_code == 403
        # the async override refuses one user; super() keeps oauthenticator's own group rule
        for login_name in ("sso-banned1", "guest7"):
            async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=30) as other:
                refused = await idp_sign_in(other, login_name)
                assert refused.status_code == 403, (login_name, refused.text)
                assert "may not use this hub" in refused.text
        assert (await admin.get("/users/banned1")).status_code == 404


async def test_oauthenticator_subclass_hook_failing_closed(hub_from_file, open_client, idp):
    text = textwrap.dedent(jh_auth.oauth_config(idp)) + textwrap.dedent("""
        from oauthenticator.generic import GenericOAuthenticator

        class Broken(GenericOAuthenticator):
            async def check_allowed(self, username, auth_model):
                raise RuntimeError("directory unreachable")

        c.JupyterHub.authenticator_class = Broken
        """)
    hub = hub_from_file(text)
    response = await idp_sign_in(open_client(hub), "erin")
    assert response.status_code == 500, response.text
    async with api(hub) as admin:
        assert (await admin.get("/users/erin")).status_code == 404


@pytest.mark.parametrize(("method", "says"), [
    ("get_handlers", "it overrides get_handlers, which serves or routes tornado pages"),
    ("refresh_user", "it overrides refresh_user, which Courtyard's OAuth login never calls"),
    ("token_to_user", "it overrides token_to_user, which Courtyard's OAuth login never calls"),
])
def test_oauthenticator_subclass_overrides_refused(hub_from_file, method, says):
    with pytest.raises(ConfigError, match=re.escape(says)):
        hub_from_file(f"""\
            from oauthenticator.generic import GenericOAuthenticator
            class Mine(GenericOAuthenticator):
                def {method}(self, *args):
                    return super().{method}(*args)
            c.JupyterHub.authenticator_class = Mine
            c.GenericOAuthenticator.client_id = "c"
            c.GenericOAuthenticator.authorize_url = "http://127.0.0.1:9/auth"
            c.GenericOAuthenticator.token_url = "http://127.0.0.1:9/token"
            """)


async def test_oauthenticator_subclass_http_error_refuses_with_its_message(
        hub_from_file, open_client, idp):
    """oauthenticator's hooks refuse with a tornado ``HTTPError``: its status and message."""
    text = textwrap.dedent(jh_auth.oauth_config(idp)) + textwrap.dedent("""
        from oauthenticator.generic import GenericOAuthenticator
        from tornado import web

        class Strict(GenericOAuthenticator):
            async def check_allowed(self, username, auth_model):
                raise web.HTTPError(403, "Ask the IT desk for access")

        c.JupyterHub.authenticator_class = Strict
        """)
    hub = hub_from_file(text)
    response = await idp_sign_in(open_client(hub), "fred")
    assert response.status_code == 403 and "Ask the IT desk for access" in response.text


async def test_oauthenticator_subclass_and_form_plugin_inside_multi(
        hub_from_file, open_client, idp):
    """Both kinds of JupyterHub class in one ``authenticator_class`` list: the form plugin
    signs in through the password form, the oauthenticator subclass through its button."""
    text = (textwrap.dedent(jh_auth.oauth_config(idp)) + textwrap.dedent(TEAM)
            + textwrap.dedent(f"""
        class OAuth(GenericOAuthenticator):
            async def check_allowed(self, username, auth_model):
                return username != "carol" and await super().check_allowed(username,
                                                                            auth_model)

        c.JupyterHub.authenticator_class = [TeamAuthenticator, OAuth]
        c.GenericOAuthenticator.oauth_callback_url = "{BASE}/hub/oauth/oauth_callback"
        """))
    hub = hub_from_file(text)
    page = (await open_client(hub).get("/hub/login")).text
    assert 'name="password"' in page and 'href="/hub/oauth/oauth_login' in page
    team = open_client(hub)
    assert (await login(team, "team2", "team-pw")).status_code == 303
    assert (await whoami(team))["name"] == "team2"
    sso = open_client(hub)
    response = await idp_sign_in(sso, "dan", start="/hub/oauth/oauth_login")
    assert response.status_code == 303, response.text
    assert (await whoami(sso))["name"] == "dan"
    refused = await idp_sign_in(open_client(hub), "carol", start="/hub/oauth/oauth_login")
    assert refused.status_code == 403 and "may not use this hub" in refused.text
