"""Starting, stopping and editing servers through the REST API, with real servers."""

from __future__ import annotations

import json

from tests.conftest import client_for, new_token
from tests.spawners.conftest import server_get, server_row, wait_until


async def test_start_ready_201_then_stop_204(hub, api, uname):
    alice = uname("alice")
    await api.post(f"/users/{alice}")
    r = await api.post(f"/users/{alice}/server")
    assert r.status_code == 201, r.text
    model = r.json()
    assert model["ready"] is True and model["pending"] is None and model["stopped"] is False
    assert model["url"] == f"/user/{alice}/"
    assert model["progress_url"] == f"/hub/api/users/{alice}/server/progress"
    assert model["started"].endswith("Z")
    user = (await api.get(f"/users/{alice}")).json()
    assert user["server"] == f"/user/{alice}/" and user["pending"] is None
    assert user["servers"][""]["ready"] is True
    row = server_row(hub, alice)
    assert row["url"].startswith("http://127.0.0.1:") and row["state"]["pid"] > 0
    assert (await server_get(hub, alice, "", "api"))["version"]

    r = await api.post(f"/users/{alice}/server")
    assert r.status_code == 400 and "already running" in r.json()["message"]

    r = await api.delete(f"/users/{alice}/server")
    assert r.status_code == 204
    user = (await api.get(f"/users/{alice}")).json()
    assert user["server"] is None and user["servers"] == {}
    row = server_row(hub, alice)
    assert row["url"] is None and row["state"] == {}
    assert (await api.delete(f"/users/{alice}/server")).status_code == 204  # already stopped


async def test_environment_and_credentials(hub, api, uname):
    alice = uname("alice")
    await api.post(f"/users/{alice}")
    await api.post(f"/users/{alice}/servers/gpu")
    env = await server_get(hub, alice, "gpu", "env")
    prefix = f"/user/{alice}/gpu/"
    assert env["JUPYTERHUB_USER"] == alice and env["JUPYTERHUB_SERVER_NAME"] == "gpu"
    assert env["JUPYTERHUB_SERVICE_PREFIX"] == prefix
    assert env["JUPYTERHUB_SERVICE_URL"].startswith("http://127.0.0.1:")
    assert env["JUPYTERHUB_SERVICE_URL"].endswith(prefix)
    assert env["JUPYTERHUB_CLIENT_ID"] == f"jupyterhub-user-{alice}-gpu"
    assert env["JUPYTERHUB_OAUTH_CALLBACK_URL"] == prefix + "oauth_callback"
    assert json.loads(env["JUPYTERHUB_OAUTH_ACCESS_SCOPES"]) == [
        f"access:servers!server={alice}/gpu", f"access:servers!user={alice}"]
    assert env["JUPYTERHUB_OAUTH_SCOPES"] == env["JUPYTERHUB_OAUTH_ACCESS_SCOPES"]
    assert env["JUPYTERHUB_API_URL"].endswith("/hub/api")
    assert env["JUPYTERHUB_ACTIVITY_URL"] == env["JUPYTERHUB_API_URL"] + f"/users/{alice}/activity"
    assert env["JUPYTERHUB_BASE_URL"] == "/"
    assert env["JPY_API_TOKEN"] == env["JUPYTERHUB_API_TOKEN"]
    assert "PATH" in env  # env_keep
    assert env["HOME"]

    # the token is the user's, reports activity for this server, and nothing more
    token = env["JUPYTERHUB_API_TOKEN"]
    async with client_for(hub, token) as server_api:
        r = await server_api.post(f"/users/{alice}/activity", json={
            "servers": {"gpu": {"last_activity": "2020-01-01T00:00:00Z"}}})
        assert r.status_code == 200, r.text
        me = (await server_api.get("/user")).json()
        assert me["name"] == alice
        assert f"access:servers!server={alice}/gpu" in me["scopes"]
        assert f"users:activity!user={alice}" in me["scopes"]
        assert (await server_api.post(f"/users/{alice}/servers/other")).status_code == 403
    tokens = (await api.get(f"/users/{alice}/tokens")).json()["api_tokens"]
    assert [t["note"] for t in tokens] == [f"Server at {prefix}"]

    from sqlalchemy import select

    from courtyard.auth.tokens import matches
    from courtyard.db.models import OAuthClient

    with hub.session() as db:
        client = db.scalar(select(OAuthClient).where(
            OAuthClient.identifier == f"jupyterhub-user-{alice}-gpu"))
        assert client is not None and client.redirect_uri == prefix + "oauth_callback"
        assert matches(token, client.hashed_secret) and token not in client.hashed_secret

    assert (await api.delete(f"/users/{alice}/servers/gpu")).status_code == 204
    async with client_for(hub, token) as server_api:
        assert (await server_api.get("/user")).status_code == 403  # revoked on stop
    assert (await api.get(f"/users/{alice}/tokens")).json()["api_tokens"] == []
    with hub.session() as db:
        assert db.scalar(select(OAuthClient).where(
            OAuthClient.identifier == f"jupyterhub-user-{alice}-gpu")) is None


async def test_environment_options(spawn_hub, uname):
    from traitlets.config import Config

    c = Config()
    c.Spawner.notebook_dir = "/srv/{username}/%U"
    c.Spawner.default_url = "/lab/tree/{username}"
    c.Spawner.disable_user_config = True
    c.Spawner.mem_limit = "1G"
    c.Spawner.cpu_limit = 1.5
    c.Spawner.environment = {"GREETING": "hello", "WHO": lambda spawner: spawner.user.name}
    stopped = []

    async def pre_spawn(spawner):
        spawner.environment["HOOKED"] = f"{spawner.user.name}/{spawner.name}"

    c.Spawner.pre_spawn_hook = pre_spawn
    c.Spawner.post_stop_hook = lambda spawner: stopped.append(spawner.log_name)
    hub = spawn_hub(c)
    alice = uname("alice")
    async with client_for(hub, "admin-secret-token") as api:
        await api.post(f"/users/{alice}")
        assert (await api.post(f"/users/{alice}/server")).status_code == 201
        env = await server_get(hub, alice, "", "env")
        assert env["HOOKED"] == f"{alice}/" and stopped == []
        assert (await api.delete(f"/users/{alice}/server")).status_code == 204
        assert stopped == [alice]
    assert env["JUPYTERHUB_ROOT_DIR"] == f"/srv/{alice}/{alice}"
    assert env["JUPYTERHUB_DEFAULT_URL"] == f"/lab/tree/{alice}"
    assert env["JUPYTERHUB_DISABLE_USER_CONFIG"] == "1"
    assert env["MEM_LIMIT"] == str(1024**3) and env["CPU_LIMIT"] == "1.5"
    assert env["GREETING"] == "hello" and env["WHO"] == alice


async def test_owner_starts_own_server_only(hub, api, uname):
    alice, bob = uname("alice"), uname("bob")
    token = await new_token(api, alice)
    await api.post(f"/users/{bob}")
    async with client_for(hub, token) as mine:
        assert (await mine.post(f"/users/{bob}/server")).status_code == 404
        r = await mine.post(f"/users/{alice}/server")
        assert r.status_code == 201
        r = await mine.get(f"/users/{alice}/server/logs")
        assert r.status_code == 200 and "listening" in r.text
        assert (await mine.get(f"/users/{bob}/server/logs")).status_code == 404
        assert (await mine.delete(f"/users/{alice}/server")).status_code == 204
    # a token with 6.0's start:servers may start but not stop
    start_only = await new_token(api, alice, scopes=[f"start:servers!user={alice}"])
    async with client_for(hub, start_only) as limited:
        assert (await limited.post(f"/users/{alice}/server")).status_code == 201
        assert (await limited.delete(f"/users/{alice}/server")).status_code == 403


async def test_named_servers(spawn_hub, uname):
    hub = spawn_hub(named_server_limit_per_user=2)
    alice = uname("alice")
    async with client_for(hub, "admin-secret-token") as api:
        await api.post(f"/users/{alice}")
        assert (await api.post(f"/users/{alice}/servers/Bad_Name")).status_code == 400
        assert (await api.post(f"/users/{alice}/servers/one")).status_code == 201
        assert (await api.post(f"/users/{alice}/servers/two")).status_code == 201
        r = await api.post(f"/users/{alice}/servers/three")
        assert r.status_code == 400 and "maximum of 2" in r.json()["message"]
        user = (await api.get(f"/users/{alice}")).json()
        assert set(user["servers"]) == {"one", "two"}
        assert user["servers"]["one"]["url"] == f"/user/{alice}/one/"
        # stop and remove one: its record goes, so there is room again
        assert (await api.delete(f"/users/{alice}/servers/one", )).status_code == 204
        r = await api.request("DELETE", f"/users/{alice}/servers/two", json={"remove": True})
        assert r.status_code == 204
        assert server_row(hub, alice, "two") is None
        assert server_row(hub, alice, "one") is not None
        r = await api.request("DELETE", f"/users/{alice}/server", json={"remove": True})
        assert r.status_code == 400
        assert (await api.delete(f"/users/{alice}/servers/nope")).status_code == 404
        assert (await api.post(f"/users/{alice}/servers/three")).status_code == 201


async def test_named_servers_disabled(spawn_hub, uname):
    hub = spawn_hub(allow_named_servers=False)
    alice = uname("alice")
    async with client_for(hub, "admin-secret-token") as api:
        await api.post(f"/users/{alice}")
        r = await api.post(f"/users/{alice}/servers/one")
        assert r.status_code == 400 and r.json()["message"] == "Named servers are not enabled."
        assert (await api.put(f"/users/{alice}/servers/one")).status_code == 400


async def test_user_options_5x_and_60_forms(hub, api, uname):
    alice = uname("alice")
    await api.post(f"/users/{alice}")
    # 5.x: the whole body is user_options
    r = await api.post(f"/users/{alice}/servers/a", json={"profile": "small", "n": 1})
    assert r.status_code == 201 and r.json()["user_options"] == {"profile": "small", "n": 1}
    await api.delete(f"/users/{alice}/servers/a")
    # no body: the previous options again
    r = await api.post(f"/users/{alice}/servers/a")
    assert r.json()["user_options"] == {"profile": "small", "n": 1}
    await api.delete(f"/users/{alice}/servers/a")
    # 6.0: display_name and user_options
    r = await api.post(f"/users/{alice}/servers/a", json={
        "display_name": "My A", "user_options": {"profile": "big"}})
    assert r.status_code == 201
    assert r.json()["user_options"] == {"profile": "big"} and r.json()["display_name"] == "My A"
    await api.delete(f"/users/{alice}/servers/a")
    r = await api.post(f"/users/{alice}/servers/a", json={"display_name": "Still A"})
    assert r.json()["user_options"] == {"profile": "big"}  # null/absent: reused
    assert r.json()["display_name"] == "Still A"
    await api.delete(f"/users/{alice}/servers/a")
    r = await api.post(f"/users/{alice}/servers/a", json={"user_options": [1]})
    assert r.status_code == 400
    # the spawner sees them (the test config maps user_options["mode"] to MOCKSU_MODE)
    r = await api.post(f"/users/{alice}/servers/a", json={"mode": "plain"})
    assert (await server_get(hub, alice, "a", "env"))["MOCKSU_MODE"] == "plain"


async def test_put_patch_get_60(hub, api, uname):
    alice = uname("alice")
    await api.post(f"/users/{alice}")
    r = await api.put(f"/users/{alice}/servers/lab", json={
        "display_name": "Lab", "user_options": {"x": 1}})
    assert r.status_code == 201, r.text
    model = r.json()
    assert model["stopped"] is True and model["ready"] is False and model["started"] is None
    assert model["display_name"] == "Lab" and model["user_options"] == {"x": 1}
    assert (await api.put(f"/users/{alice}/servers/lab")).status_code == 409
    assert (await api.put(f"/users/{alice}/server")).status_code == 409
    assert (await api.put(f"/users/{alice}/servers/Bad")).status_code == 400

    r = await api.get(f"/users/{alice}/servers/lab")
    assert r.status_code == 200 and r.json()["name"] == "lab"
    assert (await api.get(f"/users/{alice}/servers/nope")).status_code == 404

    r = await api.patch(f"/users/{alice}/servers/lab", json={
        "name": "lab2", "display_name": "Lab 2", "user_options": {"x": 2}})
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "lab2" and r.json()["user_options"] == {"x": 2}
    assert (await api.get(f"/users/{alice}/servers/lab")).status_code == 404
    await api.put(f"/users/{alice}/servers/other")
    r = await api.patch(f"/users/{alice}/servers/lab2", json={"name": "other"})
    assert r.status_code == 409
    assert (await api.patch(f"/users/{alice}/servers/lab2", json={"name": "-x"})).status_code \
        == 400
    assert (await api.patch(f"/users/{alice}/servers/lab2", json={"bogus": 1})).status_code \
        == 400
    for name in ("L" * 256, "L\x00b"):  # what no database's display_name column holds
        r = await api.patch(f"/users/{alice}/servers/lab2", json={"display_name": name})
        assert r.status_code == 400 and "display_name" in r.json()["message"], r.text
        r = await api.put(f"/users/{alice}/servers/lab3", json={"display_name": name})
        assert r.status_code == 400 and "display_name" in r.json()["message"], r.text
    r = await api.patch(f"/users/{alice}/servers/lab2", json={"display_name": "L" * 255})
    assert r.status_code == 200 and r.json()["display_name"] == "L" * 255

    # starting uses the stored options; editing is refused while it runs
    r = await api.post(f"/users/{alice}/servers/lab2")
    assert r.status_code == 201 and r.json()["user_options"] == {"x": 2}
    r = await api.patch(f"/users/{alice}/servers/lab2", json={"display_name": "x"})
    assert r.status_code == 400
    user = (await api.get(f"/users/{alice}", params={"include_stopped_servers": 1})).json()
    assert set(user["servers"]) == {"lab2", "other"}


async def test_user_deletion_stops_servers(hub, api, uname):
    alice = uname("alice")
    await api.post(f"/users/{alice}")
    await api.post(f"/users/{alice}/server")
    pid = server_row(hub, alice)["state"]["pid"]
    from tests.spawners.conftest import alive

    assert alive(pid)
    assert (await api.delete(f"/users/{alice}")).status_code == 204
    await wait_until(lambda: not alive(pid), what="the server process to end")
    assert hub.lifecycle.pending(alice, "") is None
