"""REST handlers a JupyterHub plugin adds to ``jupyterhub.apihandlers.default_handlers``
(as batchspawner does) are served by a real hub process, with Courtyard's authentication,
JupyterHub's scope decisions (``@web.authenticated``, ``@needs_scope``), the API's body
limit and JupyterHub's error body; paths Courtyard serves stay its own.
(batchspawner's own handler on a real Slurm: tests/cluster/slurm.)"""

from __future__ import annotations

import re

import httpx

from tests.hubprocess import TOKEN, HubProcess, sign_in

PLUGIN = '''
import json

from jupyterhub.apihandlers import APIHandler, default_handlers
from jupyterhub.scopes import needs_scope
from tornado import web


class WhoAmI(APIHandler):
    @web.authenticated
    def post(self):
        user = self.current_user
        body = self.get_json_body() or {}
        self.db.commit()
        self.set_status(201)
        self.finish(json.dumps({"name": user.name, "servers": sorted(user.spawners),
                                "echo": body.get("echo")}))


class Activity(APIHandler):
    async def prepare(self):
        await super().prepare()
        self.prepared = True

    @needs_scope("read:users:activity")
    def get(self, user_name):
        self.finish(json.dumps({"user": user_name, "prepared": self.prepared}))


class Broken(APIHandler):
    def get(self):
        raise web.HTTPError(418, "a plugin's own error")


default_handlers.append((r"/api/plugin/whoami", WhoAmI))
default_handlers.append((r"/api/plugin/activity/([^/]+)", Activity))
default_handlers.append((r"/api/plugin/broken", Broken))
default_handlers.append((r"/api/users", WhoAmI))  # Courtyard's own path: not the plugin's
c.JupyterHub.api_max_body_size = 2048
'''


def test_plugin_api_handlers_run_with_courtyards_auth(tmp_path, db_url):
    hub = HubProcess(tmp_path, db_url, PLUGIN)
    try:
        for name in ("alice", "bob"):
            assert hub.api("POST", f"/users/{name}").status_code == 201
        token = hub.api("POST", "/users/alice/tokens", json={}).json()["token"]
        alice = {"Authorization": f"token {token}"}
        api = f"{hub.url}/hub/api"

        r = httpx.post(f"{api}/plugin/whoami", json={"echo": "hi"}, headers=alice)
        assert r.status_code == 201
        assert r.json() == {"name": "alice", "servers": [], "echo": "hi"}
        # no credentials: tornado's @web.authenticated, JupyterHub's error body
        r = httpx.post(f"{api}/plugin/whoami", json={})
        assert r.status_code == 403
        assert r.json() == {"status": 403, "message": "Forbidden"}
        # a token Courtyard does not know is no credential either
        r = httpx.post(f"{api}/plugin/whoami", json={}, headers={"Authorization": "token nope"})
        assert r.status_code == 403
        # @needs_scope decides from the caller's scopes, filters included
        r = httpx.get(f"{api}/plugin/activity/alice", headers=alice)
        assert r.status_code == 200 and r.json() == {"user": "alice", "prepared": True}
        r = httpx.get(f"{api}/plugin/activity/bob", headers=alice)
        assert r.status_code == 404
        assert r.json() == {"status": 404,
                            "message": "No access to resources or resources not found"}
        assert hub.api("GET", "/plugin/activity/bob").json() == {"user": "bob", "prepared": True}
        # the API's body limit holds before the plugin runs
        r = httpx.post(f"{api}/plugin/whoami", content=b'{"echo": "' + b"x" * 4096 + b'"}',
                       headers=alice)
        assert r.status_code == 413
        # a signed-in browser: the login cookie counts with the session's XSRF token only
        with httpx.Client(follow_redirects=True, timeout=30) as browser:
            assert sign_in(hub, browser, f"{hub.url}/hub/home", "alice").status_code == 200
            xsrf = re.search(r'data-xsrf="([^"]+)"', browser.get(f"{hub.url}/hub/home").text)[1]
            r = browser.post(f"{api}/plugin/whoami", json={})
            assert r.status_code == 403
            r = browser.post(f"{api}/plugin/whoami", json={}, headers={"X-XSRFToken": xsrf})
            assert r.status_code == 201 and r.json()["name"] == "alice"
        # a plugin's own HTTP error keeps its status, in JupyterHub's body
        r = httpx.get(f"{api}/plugin/broken", headers=alice)
        assert r.status_code == 418
        assert r.json() == {"status": 418, "message": "a plugin's own error"}
        # Courtyard's paths are Courtyard's; a path nobody serves is a 404
        r = httpx.get(f"{api}/users", headers={"Authorization": f"token {TOKEN}"})
        assert r.status_code == 200 and isinstance(r.json(), list)
        r = httpx.put(f"{api}/users", headers={"Authorization": f"token {TOKEN}"})
        assert r.status_code == 405
        r = httpx.get(f"{api}/plugin/nothing", headers=alice)
        assert r.status_code == 404
    finally:
        hub.stop()
