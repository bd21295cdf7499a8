"""JupyterHub's Authenticator contract on Courtyard: ``jupyterhub_config.py`` files that import
JupyterHub's classes and plugins from PyPI, run unmodified against real back ends (slapd, the
npm oidc-provider), through the real login form, the users API and a served hub."""

from __future__ import annotations

import copy
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from traitlets.config import Config

from courtyard.app import Hub
from courtyard.config import load_config_file
from courtyard.errors import ConfigError
from tests.auth import backends
from tests.auth.conftest import idp_sign_in, login
from tests.conftest import ADMIN_TOKEN, raw_sql
from tests.spawners import conftest as spawners
from tests.spawners.conftest import serving, wait_until

# the real back ends and the spawner set-up, from their own folders' fixtures
idp, slapd = backends.idp, backends.slapd
_made_names, mocksu_cmd, open_dir = spawners._made_names, spawners.mocksu_cmd, spawners.open_dir
spawn_config, uname = spawners.spawn_config, spawners.uname


BASE = "http://127.0.0.1:8081"
KEY = "3e" * 32


@pytest.fixture(autouse=True)
def crypt_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTERHUB_CRYPT_KEY", KEY)


@pytest.fixture
def hub_from_file(tmp_path: Path, db_url: str) -> Iterator[Callable[..., Hub]]:
    """``hub_from_file(text)``: write ``jupyterhub_config.py``, load it as ``courtyard -f``
    does, and initialize a hub on the test's database."""
    hubs: list[Hub] = []

    def make(text: str, extra: Config | None = None) -> Hub:
        path = tmp_path / "jupyterhub_config.py"
        path.write_text(textwrap.dedent(text))
        config = load_config_file(path)
        config.Courtyard.db_url = db_url
        config.Courtyard.data_files_path = str(tmp_path)
        config.Courtyard.api_tokens = {ADMIN_TOKEN: "admin"}
        config.Courtyard.admin_users = {"admin"}
        if extra is not None:
            config.merge(extra)
        hub = Hub(config, path)
        hub.initialize()
        hubs.append(hub)
        return hub

    yield make
    for hub in hubs:
        hub.session.kw["bind"].dispose()


@pytest.fixture
async def open_client() -> AsyncIterator[Callable[[Hub], httpx.AsyncClient]]:
    clients: list[httpx.AsyncClient] = []

    def open_(hub: Hub) -> httpx.AsyncClient:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=hub.asgi), base_url=BASE)
        clients.append(client)
        return client

    yield open_
    for client in clients:
        await client.aclose()


def api(hub: Hub) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=hub.asgi),
                             base_url=f"{BASE}/hub/api",
                             headers={"Authorization": f"token {ADMIN_TOKEN}"})


async def whoami(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/hub/api/user", params={"_xsrf": client.cookies["_xsrf"]})
    assert response.status_code == 200, response.text
    return response.json()


# -- JupyterHub's DummyAuthenticator, imported as a class ----------------------------------------
DUMMY = """\
    from jupyterhub.auth import DummyAuthenticator
    c.JupyterHub.authenticator_class = DummyAuthenticator
    c.Authenticator.allowed_users = {"ann", "ben"}
    """


async def test_dummy_authenticator_class_signs_in(hub_from_file, open_client):
    hub = hub_from_file(DUMMY)
    assert type(hub.authenticator.inner).__module__ == "jupyterhub.auth"
    client = open_client(hub)
    response = await login(client, "Ann", "any")
    assert response.status_code == 303, response.text
    assert (await whoami(client))["name"] == "ann"  # JupyterHub's normalize_username
    refused = await login(open_client(hub), "zoe", "any")
    assert refused.status_code == 403 and "Invalid username or password" in refused.text


async def test_courtyard_name_rules_stay_on_top(hub_from_file, open_client):
    hub = hub_from_file("""\
        from jupyterhub.auth import DummyAuthenticator
        c.JupyterHub.authenticator_class = DummyAuthenticator
        c.Authenticator.allow_all = True
        """)
    for name in ("..", "a/b", "%2e%2e"):  # JupyterHub's validate_username lets these pass
        response = await login(open_client(hub), name, "x")
        assert response.status_code == 403, name
    async with api(hub) as client:
        response = await client.post("/users", json={"usernames": ["a/b"]})
        assert response.status_code == 400, response.text


# -- a form-based Authenticator subclass as the seeds write one: salted hashes ---------------
SALTED = """\
    import hashlib, hmac
    from jupyterhub.auth import Authenticator
    from traitlets import Dict

    def digest(password, salt):
        return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 10000).hex()

    class SaltedHashAuthenticator(Authenticator):
        passwords = Dict(config=True, help="name -> 'salt-hex$pbkdf2-hex'")
        added = []
        deleted = []

        async def authenticate(self, handler, data):
            record = self.passwords.get(data["username"])
            if record is None:
                return None
            salt, expected = record.split("$")
            if not hmac.compare_digest(digest(data["password"], bytes.fromhex(salt)), expected):
                return None
            return {"name": data["username"],
                    "auth_state": {"ip": handler.request.remote_ip,
                                   "agent": handler.request.headers.get("User-Agent"),
                                   "field": handler.get_argument("username")}}

        async def check_allowed(self, username, authentication=None):
            return username != "mallory" and await self._allowed(username)

        async def _allowed(self, username):
            return True

        def add_user(self, user):
            if user.name == "forbidden":
                raise ValueError("no such account in the registry")
            type(self).added.append((user.name, user.id))
            super().add_user(user)

        def delete_user(self, user):
            type(self).deleted.append(user.name)
            super().delete_user(user)

    salt = bytes.fromhex("00112233445566778899aabbccddeeff")
    c.JupyterHub.authenticator_class = SaltedHashAuthenticator
    c.SaltedHashAuthenticator.passwords = {
        name: salt.hex() + "$" + digest(password, salt)
        for name, password in [("carl", "s3cret-carl"), ("mallory", "s3cret-mal")]}
    c.Authenticator.enable_auth_state = True
    """


async def test_salted_hash_authenticator(hub_from_file, open_client, db_url):
    hub = hub_from_file(SALTED)
    inner = type(hub.authenticator.inner)
    client = open_client(hub)
    wrong = await login(client, "carl", "guess")
    assert wrong.status_code == 403 and "Invalid username or password" in wrong.text
    assert (await login(client, "carl", "s3cret-carl")).status_code == 303
    assert (await whoami(client))["name"] == "carl"
    [(_, user_id)] = [a for a in inner.added if a[0] == "carl"]
    assert user_id is not None  # add_user got the new user, id and all
    # auth state is encrypted at rest, and what the plugin read from the handler
    stored = raw_sql(db_url, "SELECT encrypted_auth_state FROM users WHERE name = 'carl'")
    assert b"127.0.0.1" not in bytes(stored)
    async with api(hub) as admin:
        state = (await admin.get("/users/carl")).json()["auth_state"]
    assert state == {"ip": "127.0.0.1", "agent": "python-httpx/" + httpx.__version__,
                     "field": "carl"}


async def test_async_check_allowed_refuses(hub_from_file, open_client):
    hub = hub_from_file(SALTED)
    response = await login(open_client(hub), "mallory", "s3cret-mal")
    assert response.status_code == 403 and "Invalid username or password" in response.text
    async with api(hub) as admin:
        assert (await admin.get("/users/mallory")).status_code == 404


async def test_failing_hook_fails_closed(hub_from_file, open_client):
    hub = hub_from_file(SALTED + """
    async def broken(self, username):
        raise RuntimeError("directory unreachable")
    SaltedHashAuthenticator._allowed = broken
    """)
    response = await login(open_client(hub), "carl", "s3cret-carl")
    assert response.status_code == 500 and "because of an error in the hub" in response.text
    async with api(hub) as admin:
        assert (await admin.get("/users/carl")).status_code == 404


async def test_add_user_and_delete_user_hooks(hub_from_file):
    hub = hub_from_file(SALTED)
    inner = type(hub.authenticator.inner)
    async with api(hub) as admin:
        response = await admin.post("/users/forbidden")
        assert response.status_code == 400
        assert response.json() == {"status": 400, "message": "Failed to create user "
                                   "forbidden: no such account in the registry"}
        assert (await admin.get("/users/forbidden")).status_code == 404
        assert (await admin.post("/users", json={"usernames": ["dora"]})).status_code == 201
        assert "dora" in [name for name, _ in inner.added]
        assert (await admin.delete("/users/dora")).status_code == 204
        assert inner.deleted[-1] == "dora"


async def test_existing_users_allowed_after_restart(hub_from_file, open_client):
    """JupyterHub calls add_user for every stored user at start: with allow_existing_users,
    that is what lets them back in."""
    text = """\
        from jupyterhub.auth import DummyAuthenticator
        c.JupyterHub.authenticator_class = DummyAuthenticator
        c.Authenticator.allowed_users = {"ann"}
        c.Authenticator.allow_existing_users = True
        """
    hub = hub_from_file(text)
    async with api(hub) as admin:
        assert (await admin.post("/users/eli")).status_code == 201
    assert (await login(open_client(hub_from_file(text)), "eli", "x")).status_code == 303
    assert (await login(open_client(hub), "fay", "x")).status_code == 403


def test_tornado_handlers_and_local_subclasses_refused(hub_from_file):
    with pytest.raises(ConfigError, match=r"get_handlers\(\) serves /custom with a tornado"):
        hub_from_file("""\
            from jupyterhub.auth import Authenticator
            from tornado.web import RequestHandler
            class Custom(Authenticator):
                def get_handlers(self, app):
                    return [("/custom", RequestHandler)]
            c.JupyterHub.authenticator_class = Custom
            """)
    with pytest.raises(ConfigError, match="LocalAuthenticator manage system accounts"):
        hub_from_file("""\
            from jupyterhub.auth import LocalAuthenticator
            class Mine(LocalAuthenticator):
                pass
            c.JupyterHub.authenticator_class = Mine
            """)


# -- the real jupyterhub-ldapauthenticator against slapd ----------------------------------------
def ldap_config(slapd_dir: Any, extra: str = "") -> str:
    return f"""\
        import ssl
        from ldapauthenticator import LDAPAuthenticator
        c.JupyterHub.authenticator_class = LDAPAuthenticator
        c.LDAPAuthenticator.server_address = "127.0.0.1"
        c.LDAPAuthenticator.server_port = {slapd_dir.port}
        c.LDAPAuthenticator.tls_strategy = "before_bind"
        c.LDAPAuthenticator.tls_kwargs = {{"ca_certs_file": {slapd_dir.ca_file!r},
                                           "validate": ssl.CERT_REQUIRED}}
        c.LDAPAuthenticator.bind_dn_template = ["uid={{username}},ou=people,{slapd_dir.base}"]
        c.LDAPAuthenticator.allowed_groups = ["{slapd_dir.group_dn('researchers')}"]
        c.Authenticator.enable_auth_state = True
        {extra}
        """


async def test_ldapauthenticator_binds_against_slapd(hub_from_file, open_client, slapd):
    hub = hub_from_file(ldap_config(slapd))
    assert type(hub.authenticator.inner).__module__ == "ldapauthenticator.ldapauthenticator"
    client = open_client(hub)
    assert (await login(client, "alice", "wrong")).status_code == 403
    assert (await login(client, "alice", "alicepw")).status_code == 303
    assert (await whoami(client))["name"] == "alice"
    async with api(hub) as admin:
        state = (await admin.get("/users/alice")).json()["auth_state"]
    assert state["ldap_groups"] == [slapd.group_dn("researchers")]
    # bob's password is right, but he is in no allowed group
    refused = await login(open_client(hub), "bob", "bobpw")
    assert refused.status_code == 403 and "Invalid username or password" in refused.text


# -- oauthenticator's GenericOAuthenticator, as a JupyterHub site configures it -----------------
def oauth_config(provider: Any, extra: str = "") -> str:
    return f"""\
        from oauthenticator.generic import GenericOAuthenticator
        c.JupyterHub.authenticator_class = GenericOAuthenticator
        c.GenericOAuthenticator.client_id = {provider.client_id!r}
        c.GenericOAuthenticator.client_secret = {provider.client_secret!r}
        c.GenericOAuthenticator.oauth_callback_url = "{BASE}/hub/oauth_callback"
        c.GenericOAuthenticator.authorize_url = "{provider.url}/auth"
        c.GenericOAuthenticator.token_url = "{provider.url}/token"
        c.GenericOAuthenticator.userdata_url = "{provider.url}/me"
        c.GenericOAuthenticator.scope = ["openid", "profile", "groups"]
        c.GenericOAuthenticator.username_claim = "preferred_username"
        c.GenericOAuthenticator.claim_groups_key = "groups"
        c.GenericOAuthenticator.allowed_groups = {{"users"}}
        c.GenericOAuthenticator.admin_groups = {{"hubadmins"}}
        c.GenericOAuthenticator.manage_groups = True
        {extra}
        """


@pytest.fixture
async def served(hub_from_file, spawn_config) -> AsyncIterator[Callable[..., Any]]:
    """``async with served(text) as (hub, api)``: a hub from a config file, serving for
    real on loopback with the real proxy, its servers run by mocksu."""
    from contextlib import asynccontextmanager

    hubs: list[Hub] = []

    @asynccontextmanager
    async def run(text: str) -> AsyncIterator[tuple[Hub, httpx.AsyncClient]]:
        hub = hub_from_file(text, copy.deepcopy(spawn_config))
        hubs.append(hub)
        async with serving(hub) as client:
            yield hub, client

    yield run
    for hub in hubs:
        await hub.lifecycle.shutdown(stop_servers=True)


async def test_generic_oauthenticator_sign_in_start_reach_stop(served, idp, uname):
    name = uname("oa")  # as root its server runs as a new system user of that name
    async with served(oauth_config(idp)) as (hub, admin):
        host, port = hub.hub_bound
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}", trust_env=False,
                                     timeout=30) as browser:
            assert "Sign in with" in (await browser.get("/hub/login")).text
            response = await idp_sign_in(browser, name, next_url="/hub/home")
            assert response.status_code == 303, response.text
            me = await whoami(browser)
            assert (me["name"], me["admin"], me["groups"]) == (name, False, ["users"])
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
        assert reached.status_code == 200, reached.text
        assert reached.json() == {"version": "0.0-mocksu"}
        assert (await admin.delete(f"/users/{name}/server")).status_code in (202, 204)

        async def stopped() -> bool:
            return not (await admin.get(f"/users/{name}")).json()["servers"]

        await wait_until(stopped, what=f"{name}'s server to stop")


async def test_generic_oauthenticator_allow_rules(hub_from_file, open_client, idp):
    hub = hub_from_file(oauth_config(idp))
    guest = open_client(hub)
    response = await idp_sign_in(guest, "guest1")
    assert response.status_code == 403 and "may not use this hub" in response.text
    admin = open_client(hub)
    assert (await idp_sign_in(admin, "admin3")).status_code == 303
    assert (await whoami(admin))["admin"] is True


def test_unsupported_oauthenticator_option_refused(hub_from_file):
    with pytest.raises(ConfigError, match=r"c.GenericOAuthenticator.allowed_scopes \(an "
                       "oauthenticator option\\) is not supported"):
        hub_from_file(oauth_config(
            type("P", (), {"client_id": "c", "client_secret": "s", "url": "http://x"}),
            'c.GenericOAuthenticator.allowed_scopes = ["admin"]'))
    with pytest.raises(ConfigError, match="it overrides login_handler, which serves or "
                       "routes tornado pages"):  # its hooks run (test_jupyterhub_examples.py)
        hub_from_file("""\
            from oauthenticator.generic import GenericOAuthenticator
            class Mine(GenericOAuthenticator):
                def login_handler(self):
                    pass
            c.JupyterHub.authenticator_class = Mine
            """)


# -- refresh_user, pre_spawn_start and post_spawn_stop with a served hub -------------------------
HOOKS = """\
    from jupyterhub.auth import DummyAuthenticator

    class Hooked(DummyAuthenticator):
        seen = []

        async def refresh_user(self, user, handler=None):
            if user.name == {refused!r}:
                return False
            return {{"auth_state": {{"refreshed_for": handler.request.path}}}}

        async def pre_spawn_start(self, user, spawner):
            state = await user.get_auth_state()
            type(self).seen.append(("pre", user.name, user.id, user.url, state))

        def post_spawn_stop(self, user, spawner):
            type(self).seen.append(("post", user.name))

    c.JupyterHub.authenticator_class = Hooked
    c.Authenticator.allow_all = True
    c.Authenticator.enable_auth_state = True
    c.Authenticator.refresh_pre_spawn = True
    """


async def test_refresh_and_spawn_hooks(served, uname):
    name, refused = uname("hk"), uname("no")
    async with served(HOOKS.format(refused=refused)) as (hub, admin):
        seen = type(hub.authenticator.inner).seen
        host, port = hub.hub_bound
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}", trust_env=False,
                                     timeout=30) as browser:
            assert (await login(browser, refused, "x")).status_code == 303
            xsrf = {"X-XSRFToken": browser.cookies["_xsrf"]}
            response = await browser.post(f"/hub/api/users/{refused}/server", headers=xsrf)
            assert response.status_code == 403, response.text  # refresh_user said no
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}", trust_env=False,
                                     timeout=30) as browser:
            assert (await login(browser, name, "x")).status_code == 303
            xsrf = {"X-XSRFToken": browser.cookies["_xsrf"]}
            response = await browser.post(f"/hub/api/users/{name}/server", headers=xsrf)
            assert response.status_code in (201, 202), response.text

        async def ready() -> bool:
            model = (await admin.get(f"/users/{name}")).json()
            return model["servers"].get("", {}).get("ready", False)

        await wait_until(ready, what=f"{name}'s server")
        [pre] = [s for s in seen if s[0] == "pre"]
        assert pre[1] == name and isinstance(pre[2], int) and pre[3] == f"/user/{name}/"
        assert pre[4] == {"refreshed_for": f"/hub/api/users/{name}/server"}
        assert (await admin.delete(f"/users/{name}/server")).status_code in (202, 204)
        await wait_until(lambda: ("post", name) in seen, what="post_spawn_stop")
