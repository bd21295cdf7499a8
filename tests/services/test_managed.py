"""Managed services as JupyterHub runs them, in a real hub process behind its real proxy.

- a small OAuth-protected app using ``jupyterhub.services.auth.HubOAuth``, which a visitor
  signs in to: JupyterHub's environment, the visitor's token scopes, the ``/hub/api/user``
  model;
- ``jupyterhub-idle-culler``, configured as its README does, culling a real idle server.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port
from tests.hubprocess import sign_in, wait_for

HERE = Path(__file__).parent
ROOT = os.geteuid() == 0
HUB_USER = pwd.getpwuid(os.geteuid()).pw_name


def test_hub_oauth_service_gets_jupyterhubs_environment_and_scopes(run_hub: Any,
                                                                   tmp_path: Path) -> None:
    port = free_port()
    env_file = tmp_path / "whoami-env.json"
    hub = run_hub(f"""
import sys
c.JupyterHub.custom_scopes = {{"custom:whoami:read": {{"description": "read whoami"}}}}
c.JupyterHub.load_roles = [{{"name": "whoami-readers", "users": ["alice"],
                             "scopes": ["custom:whoami:read", "access:services!service=whoami"]}}]
c.JupyterHub.services = [{{
    "name": "whoami",
    "url": "http://127.0.0.1:{port}",
    "command": [sys.executable, {str(HERE / "whoami_oauth.py")!r}, {str(env_file)!r}],
    "user": {HUB_USER!r},
    "oauth_no_confirm": True,
    "oauth_client_allowed_scopes": ["custom:whoami:read"],
    "environment": {{"WHOAMI_GREETING": "hi"}},
    "info": {{"owner": "ops"}},
}}]
""")
    wait_for(lambda: env_file.exists() and env_file.stat().st_size, "the service to start")
    started = json.loads(env_file.read_text())
    env = started["env"]
    assert started["uid"] == os.geteuid()
    assert env["JUPYTERHUB_SERVICE_NAME"] == "whoami"
    assert env["JUPYTERHUB_CLIENT_ID"] == "service-whoami"
    assert env["JUPYTERHUB_OAUTH_CALLBACK_URL"] == "/services/whoami/oauth_callback"
    assert env["JUPYTERHUB_SERVICE_PREFIX"] == "/services/whoami/"
    assert env["JUPYTERHUB_SERVICE_URL"] == f"http://127.0.0.1:{port}"
    assert env["JUPYTERHUB_BASE_URL"] == "/"
    assert env["JUPYTERHUB_API_URL"] == f"http://127.0.0.1:{hub.hub_port}/hub/api"
    assert env["JUPYTERHUB_HOST"] == ""
    access = ["access:services", "access:services!service=whoami"]
    assert json.loads(env["JUPYTERHUB_OAUTH_ACCESS_SCOPES"]) == access
    assert json.loads(env["JUPYTERHUB_OAUTH_SCOPES"]) == access
    assert json.loads(env["JUPYTERHUB_OAUTH_CLIENT_ALLOWED_SCOPES"]) == ["custom:whoami:read"]
    assert env["JUPYTERHUB_API_TOKEN"] == env["JPY_API_TOKEN"]

    with httpx.Client(follow_redirects=True, timeout=30) as browser:
        r = sign_in(hub, browser, f"{hub.url}/services/whoami/", "alice")
        assert r.status_code == 200, r.text[:500]
        assert str(r.url) == f"{hub.url}/services/whoami/"
        seen = r.json()
    # JupyterHub's model for a token that may identify its owner, and nothing more
    assert set(seen["user"]) == {"kind", "name", "admin", "groups", "scopes", "session_id",
                                 "token_id"}
    assert seen["user"]["name"] == "alice" and seen["user"]["kind"] == "user"
    assert seen["user"]["admin"] is False and seen["user"]["groups"] == []
    assert {"read:users:name!user=alice", "read:users:groups!user=alice",
            "access:services!service=whoami", "custom:whoami:read"} <= set(seen["user"]["scopes"])
    assert seen["read_self"] == 200  # the identify scopes let it read its visitor

    model = hub.api("GET", "/services/whoami").json()
    assert model["info"] == {"owner": "ops"}
    assert model["command"] == [sys.executable, str(HERE / "whoami_oauth.py"), str(env_file)]
    log = hub.stop()
    assert "not started" not in log
    assert "Started service whoami" in log


def test_a_service_without_user_runs_as_the_hubs_user(run_hub: Any) -> None:
    hub = run_hub("""
c.JupyterHub.services = [{"name": "plain", "cwd": "/",
    "command": ["/bin/sh", "-c", "echo service-uid=$(id -u); exec sleep 300"]}]
""")
    found = wait_for(lambda: re.search(r"service-uid=(\d+)", hub.log.read_text()),
                     "the service to start")
    assert int(found.group(1)) == os.geteuid()  # as JupyterHub: the operator's own code
    assert "Started service plain" in hub.stop()


def test_idle_culler_culls_an_idle_server(run_hub: Any, mocksu_cmd: list[str],
                                          uname: Any) -> None:
    import jupyterhub_idle_culler  # noqa: F401  (the test extra installs it)
    name = uname("cull")
    hub = run_hub(f"""
import sys
c.Spawner.cmd = {mocksu_cmd!r}
c.Spawner.start_timeout = 30
c.Spawner.http_timeout = 30
c.LocalProcessSpawner.create_system_users = {ROOT!r}
c.JupyterHub.load_roles = [
    {{
        "name": "jupyterhub-idle-culler-role",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["jupyterhub-idle-culler-service"],
    }}
]
c.JupyterHub.services = [
    {{
        "name": "jupyterhub-idle-culler-service",
        "command": [sys.executable, "-m", "jupyterhub_idle_culler", "--timeout=2",
                    "--cull-every=1"],
    }}
]
""")
    assert hub.api("POST", f"/users/{name}").status_code == 201
    r = hub.api("POST", f"/users/{name}/server")
    assert r.status_code == 201, r.text  # mocksu is ready at once

    def server() -> dict[str, Any] | None:
        return hub.api("GET", f"/users/{name}").json()["servers"].get("")

    wait_for(lambda: (s := server()) is not None and s["ready"], "the server to be ready")
    wait_for(lambda: server() is None, "the culler to stop the idle server", timeout=90)
    log = hub.stop()
    assert f"Culling server {name}" in log  # the culler's own log line: it did the stopping
