"""JupyterHub's Spawner classes from real ``jupyterhub_config.py`` files, on real hubs with
real servers (``tests/spawners/mocksu.py``) behind the real proxy: a spawn-form subclass of
JupyterHub's LocalProcessSpawner, ``wrapspawner.ProfilesSpawner``, a plain ``Spawner``
subclass, and ``named_server_limit_per_user`` as a callable of the handler."""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest
from traitlets.config import Config

from courtyard.config import load_config_file
from tests.spawners.conftest import (
    ROOT,
    alive,
    server_get,
    server_row,
    serving,
    sse_events,
    wait_until,
)

XSRF_RE = re.compile(r'name="_xsrf" value="([^"]+)"')


def load(tmp_path: Path, text: str) -> Config:
    """A jupyterhub_config.py loaded as the hub loads it."""
    path = tmp_path / "jupyterhub_config.py"
    path.write_text(textwrap.dedent(text))
    config = load_config_file(path)
    config.Spawner.poll_interval = 1  # an Integer in JupyterHub
    return config


async def sign_in(browser: httpx.AsyncClient, name: str) -> None:
    """Through the login form (the dummy authenticator of the test hubs)."""
    page = await browser.get("/hub/login")
    r = await browser.post("/hub/login", data={
        "_xsrf": XSRF_RE.search(page.text).group(1), "username": name, "password": ""})
    assert r.status_code == 303, r.text


FORM_CONFIG = """\
    from jupyterhub.spawner import LocalProcessSpawner

    class FormSpawner(LocalProcessSpawner):
        # a spawn form, as JupyterHub's documentation shows one
        options_form = '''
            <label for="flavour">Flavour</label>
            <select name="flavour"><option value="plain">plain</option>
            <option value="fancy">fancy</option></select>'''

        def options_from_form(self, formdata):
            return {"flavour": formdata.get("flavour", ["plain"])[0]}

    c = get_config()  # noqa
    c.JupyterHub.spawner_class = FormSpawner
    c.Spawner.environment = {"FLAVOUR": lambda spawner: spawner.user_options["flavour"]}
    """


async def test_spawn_form_subclass_of_jupyterhubs_local_spawner(spawn_hub, uname, tmp_path):
    hub = spawn_hub(load(tmp_path, FORM_CONFIG))
    alice = uname("alice")
    async with serving(hub) as api, httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{hub.options.port}", trust_env=False,
            timeout=30) as browser:
        await hub.ready_proxy()
        await sign_in(browser, alice)
        form = await browser.get("/hub/spawn")
        assert form.status_code == 200 and '<option value="fancy">' in form.text
        r = await browser.post("/hub/spawn", data={
            "_xsrf": XSRF_RE.search(form.text).group(1), "flavour": "fancy"})
        assert r.status_code == 303, r.text  # a form post, answered with its progress page
        assert r.headers["location"].endswith(f"/hub/spawn-pending/{alice}"), r.headers

        async def ready() -> bool:
            model = (await api.get(f"/users/{alice}")).json()
            return bool(model["servers"].get("", {}).get("ready"))

        await wait_until(ready, what="the server to be ready")
        env = (await browser.get(f"/user/{alice}/env")).json()  # through the proxy
        assert env["FLAVOUR"] == "fancy" and env["JUPYTERHUB_USER"] == alice
        assert env["JUPYTERHUB_SERVICE_PREFIX"] == f"/user/{alice}/"
        assert env["JUPYTERHUB_API_URL"] == hub.api_url
        assert env["JUPYTERHUB_CLIENT_ID"] == f"jupyterhub-user-{alice}"
        # JupyterHub's env_keep passes the hub's PATH on, as JupyterHub does
        assert env["PATH"] == os.environ["PATH"]
        pid = server_row(hub, alice)["state"]["pid"]
        if ROOT:  # as the account Courtyard made for the hub user, never root
            who = (await browser.get(f"/user/{alice}/whoami")).json()
            assert who["uid"] == pwd.getpwnam(alice).pw_uid != 0
        assert (await api.delete(f"/users/{alice}/server")).status_code == 204
        assert not alive(pid)
        assert server_row(hub, alice)["url"] is None


async def test_jupyterhub_local_spawner_obeys_the_account_policy(spawn_hub, tmp_path):
    if not ROOT:
        pytest.skip("switching users needs root (CI runs the tests as root)")
    hub = spawn_hub(load(tmp_path, FORM_CONFIG))
    async with serving(hub) as api:
        for name in ("daemon", "root"):  # a system account, and root
            await api.post(f"/users/{name}")
            r = await api.post(f"/users/{name}/server", json={"flavour": "plain"})
            assert r.status_code == 500, r.text
            assert "refused: the system account" in r.json()["message"]
            assert server_row(hub, name)["url"] is None


async def test_a_server_left_running_as_root_is_stopped(spawn_hub, uname, tmp_path):
    """popen_kwargs can drop JupyterHub's switch of user: the process is checked after the
    start, and one running as root is stopped and the spawn refused."""
    if not ROOT:
        pytest.skip("switching users needs root (CI runs the tests as root)")
    config = load(tmp_path, FORM_CONFIG)
    config.LocalProcessSpawner.popen_kwargs = {"preexec_fn": None}
    hub = spawn_hub(config)
    frank = uname("frank")
    async with serving(hub) as api:
        await api.post(f"/users/{frank}")
        r = await api.post(f"/users/{frank}/server", json={"flavour": "plain"})
        assert r.status_code == 500, r.text
        assert "refused: it runs as root (uid 0)" in r.json()["message"]
        row = server_row(hub, frank)
        assert row["url"] is None and row["state"] == {}


PROFILES_CONFIG = """\
    from jupyterhub.spawner import LocalProcessSpawner

    c = get_config()  # noqa
    c.JupyterHub.spawner_class = "wrapspawner.ProfilesSpawner"
    c.ProfilesSpawner.profiles = [
        ("Small", "small", LocalProcessSpawner, {"environment": {"SIZE": "small"}}),
        ("Big", "big", "jupyterhub.spawner.LocalProcessSpawner",
         {"environment": {"SIZE": "big"}}),
    ]
    """


async def test_profiles_spawner_wrapping_the_local_spawner(spawn_hub, uname, tmp_path):
    config = load(tmp_path, PROFILES_CONFIG)
    first = spawn_hub(config, cleanup_servers=False)
    bob = uname("bob")
    async with serving(first) as api:
        await api.post(f"/users/{bob}")
        assert (await api.post(f"/users/{bob}/server", json={"profile": "small"})
                ).status_code == 201
        assert (await api.post(f"/users/{bob}/servers/big", json={"profile": "big"})
                ).status_code == 201
        env = await server_get(first, bob, "", "env")
        assert env["SIZE"] == "small" and env["JUPYTERHUB_USER"] == bob
        env = await server_get(first, bob, "big", "env")
        assert (env["SIZE"], env["JUPYTERHUB_SERVER_NAME"]) == ("big", "big")
        assert env["JUPYTERHUB_SERVICE_PREFIX"] == f"/user/{bob}/big/"
        # the form lists the profiles
        spawner = first.lifecycle.make_spawner(first.lifecycle._slots[(bob, "")].spawner.user,
                                               "other")
        assert 'value="big"' in await spawner.get_options_form()
    states = {name: server_row(first, bob, name)["state"] for name in ("", "big")}
    assert states[""]["profile"] == "small" and states["big"]["profile"] == "big"
    pids = {name: state["child_state"]["pid"] for name, state in states.items()}
    assert all(alive(pid) for pid in pids.values())
    first.lifecycle._slots.clear()
    # a new hub finds both servers again; its stop signals processes it did not start (in
    # this test they stay zombies of the test process, which JupyterHub's spawner waits out)
    config.LocalProcessSpawner.update(interrupt_timeout=1, term_timeout=1, kill_timeout=1)
    second = spawn_hub(config)
    async with serving(second) as api:
        await asyncio.wait_for(second.lifecycle.recovered.wait(), 30)
        model = (await api.get(f"/users/{bob}")).json()
        assert model["servers"][""]["ready"] and model["servers"]["big"]["ready"]
        assert (await server_get(second, bob, "big", "env"))["SIZE"] == "big"
        assert (await api.delete(f"/users/{bob}/server")).status_code == 204
        assert (await api.delete(f"/users/{bob}/servers/big")).status_code == 204
    assert not any(alive(pid) for pid in pids.values())


PLAIN_CONFIG = """\
    import os, signal, subprocess
    from jupyterhub.spawner import Spawner
    from jupyterhub.utils import random_port
    from traitlets import Integer

    class ProcessSpawner(Spawner):
        '''Starts cmd as a process of its own and returns (ip, port).'''
        pid = Integer(0)

        def get_state(self):
            state = super().get_state()
            if self.pid:
                state["pid"] = self.pid
            return state

        def load_state(self, state):
            super().load_state(state)
            self.pid = state.get("pid", 0)

        def clear_state(self):
            super().clear_state()
            self.pid = 0

        async def start(self):
            self.port = random_port()
            run_as = {"user": "nobody", "group": "nogroup"} if os.geteuid() == 0 else {}
            self.proc = subprocess.Popen(self.cmd + self.get_args(), env=self.get_env(),
                                         cwd="/", start_new_session=True, **run_as)
            self.pid = self.proc.pid
            return (self.ip or "127.0.0.1", self.port)

        async def poll(self):
            if not self.pid:
                return 0
            return self.proc.poll() if getattr(self, "proc", None) else None

        async def stop(self, now=False):
            if self.pid:
                os.killpg(self.pid, signal.SIGKILL)
                if getattr(self, "proc", None):
                    self.proc.wait()

        async def progress(self):
            yield {"progress": 30, "message": "Forking the process"}
            yield {"progress": 60, "message": "Waiting for it to listen"}

    async def server_token_scopes(spawner):  # JupyterHub calls it with the spawner
        return ["users:activity!user", "access:servers!server",
                f"read:users:name!user={spawner.user.name}"]

    c = get_config()  # noqa
    c.JupyterHub.spawner_class = ProcessSpawner
    c.JupyterHub.allow_named_servers = True
    c.Spawner.server_token_scopes = server_token_scopes
    """


async def test_plain_spawner_subclass_returning_ip_and_port(spawn_hub, uname, tmp_path, gate):
    hub = spawn_hub(load(tmp_path, PLAIN_CONFIG), slow_spawn_timeout=0.05)
    carol, door = uname("carol"), gate()
    async with serving(hub) as api:
        await api.post(f"/users/{carol}")
        r = await api.post(f"/users/{carol}/server", json={"gate": str(door)})
        assert r.status_code == 202
        reader = asyncio.create_task(sse_events(api, f"/users/{carol}/server/progress"))
        await wait_until(lambda: bool((server_row(hub, carol) or {}).get("state")),
                         what="the process to start")
        door.touch()
        events = await reader
        messages = [e["message"] for e in events]
        assert "Forking the process" in messages and "Waiting for it to listen" in messages
        assert events[-1]["ready"] is True
        state = server_row(hub, carol)["state"]
        assert alive(state["pid"])
        env = await server_get(hub, carol, "", "env")
        assert env["JUPYTERHUB_SERVICE_URL"].startswith("http://127.0.0.1:")
        r = await api.get("/user", headers={"Authorization": f"token {env['JUPYTERHUB_API_TOKEN']}"})
        assert f"read:users:name!user={carol}" in r.json()["scopes"]
        assert (await api.delete(f"/users/{carol}/server")).status_code == 204
        assert server_row(hub, carol)["state"] == {}
        assert not alive(state["pid"])


LIMIT_CONFIG = """\
    c = get_config()  # noqa
    c.JupyterHub.allow_named_servers = True

    def named_server_limit_per_user_fn(handler):
        user = handler.current_user
        if user and user.admin:
            return 0
        if user and "power" in [g.name for g in user.groups]:
            return 2
        return 1

    c.JupyterHub.named_server_limit_per_user = named_server_limit_per_user_fn
    """


async def test_named_server_limit_callable_gets_the_current_user(spawn_hub, uname, tmp_path):
    hub = spawn_hub(load(tmp_path, LIMIT_CONFIG))
    dave, erin = uname("dave"), uname("erin")
    async with serving(hub) as api:
        await api.post(f"/users/{dave}")
        await api.post(f"/users/{erin}")
        await api.post("/groups/power", json={"users": [erin]})
        tokens = {}
        for name in (dave, erin):
            r = await api.post(f"/users/{name}/tokens", json={})
            tokens[name] = r.json()["token"]

        async def create(name: str, server: str) -> Any:
            async with httpx.AsyncClient(base_url=str(api.base_url), trust_env=False,
                                         headers={"Authorization": f"token {tokens[name]}"}
                                         ) as client:
                return await client.put(f"/users/{name}/servers/{server}")

        assert (await create(dave, "one")).status_code == 201
        r = await create(dave, "two")
        assert r.status_code == 400 and "maximum of 1 named servers" in r.json()["message"]
        assert (await create(erin, "one")).status_code == 201
        assert (await create(erin, "two")).status_code == 201
        assert (await create(erin, "three")).status_code == 400
        # the admin's token: no limit
        for n in range(3):
            assert (await api.put(f"/users/{dave}/servers/admin{n}")).status_code == 201
        r = await api.request("DELETE", f"/users/{erin}/servers/two", json={"remove": True})
        assert r.status_code == 204
        # the spawn page asks the same callable, with the signed-in user
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.options.port}",
                                     trust_env=False, timeout=30) as browser:
            await hub.ready_proxy()
            await sign_in(browser, erin)
            r = await browser.get(f"/hub/spawn/{erin}/four")
            assert r.status_code == 303, r.text
            r = await browser.get(f"/hub/spawn/{erin}/five")
            assert r.status_code == 400 and "maximum of 2 named servers" in r.text


ASYNC_FORM_CONFIG = PLAIN_CONFIG + """
    async def options_from_form(formdata):
        return {"gate": "", "size": formdata["size"][0].upper()}

    c.Spawner.options_form = '<input name="size">'
    c.Spawner.options_from_form = options_from_form
    c.Spawner.environment = {"SIZE": lambda spawner: spawner.user_options["size"]}
    """


async def test_async_options_from_form_is_awaited(spawn_hub, uname, tmp_path):
    hub = spawn_hub(load(tmp_path, ASYNC_FORM_CONFIG))
    gina = uname("gina")
    async with serving(hub), httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{hub.options.port}", trust_env=False,
            timeout=30) as browser:
        await hub.ready_proxy()
        await sign_in(browser, gina)
        form = await browser.get("/hub/spawn")
        assert '<input name="size">' in form.text
        r = await browser.post("/hub/spawn", data={
            "_xsrf": XSRF_RE.search(form.text).group(1), "size": "xl"})
        assert r.status_code == 303, r.text
        await wait_until(lambda: bool((server_row(hub, gina) or {}).get("url")),
                         what="the server to be ready")
        assert server_row(hub, gina)["user_options"] == {"gate": "", "size": "XL"}
        assert (await browser.get(f"/user/{gina}/env")).json()["SIZE"] == "XL"
