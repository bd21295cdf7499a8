"""End to end in a real browser: ``courtyard serve`` (hub, built-in proxy, LocalProcessSpawner,
``courtyard-singleuser``) driven by headless Chromium through Playwright.

A user signs in, opens ``/hub/user-redirect/lab`` (which starts their server), lands in
JupyterLab, creates a notebook and runs ``print(6*7)`` over the kernel's WebSocket through
the proxy. A second user is refused that server until it is shared with them through a
share code, then gets in, and is shut out again when the share is revoked. The same test
runs with JupyterHub's own ``jupyterhub-singleuser`` as the server command.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, free_port, tool_missing

from .conftest import ROOT, SingleUserEnv

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]
UI_TIMEOUT = 120_000  # ms; JupyterLab's first load on a busy 2-core machine is slow

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(params=["courtyard-singleuser", "jupyterhub-singleuser"])
def served_hub(request: pytest.FixtureRequest, tmp_path: Path, db_url: str,
               su_env: SingleUserEnv) -> Iterator[str]:
    """``courtyard serve`` in a subprocess on free ports, its servers run by our own
    single-user command or by JupyterHub's unchanged; yields the public URL."""
    port, hub_port, api_port = free_port(), free_port(), free_port()
    if request.param == "courtyard-singleuser":
        cmd = su_env.courtyard_cmd
    else:  # a short identity cache, so that revoking a share bites within the test
        cmd = [*su_env.jupyterhub_cmd, "--HubOAuth.cache_max_age=1"]
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
c.Spawner.cmd = {cmd!r}
c.Spawner.environment = {{"COURTYARD_SINGLEUSER_CACHE_MAX_AGE": "1"}}
c.Spawner.http_timeout = 90
c.LocalProcessSpawner.create_system_users = {ROOT}
""")
    log = (tmp_path / "hub.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "courtyard", "serve", "-f", str(config)],
                            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    public = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                if httpx.get(f"{public}/hub/api/", trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("courtyard serve did not come up:\n" +
                                     (tmp_path / "hub.log").read_text()[-3000:])
            time.sleep(0.1)
        yield public
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
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


def sign_in(page: object, public: str, name: str) -> None:
    page.goto(f"{public}/hub/login")  # type: ignore[attr-defined]
    page.fill("input[name=username]", name)  # type: ignore[attr-defined]
    page.fill("input[name=password]", "any")  # type: ignore[attr-defined]
    page.click("form button[type=submit]")  # type: ignore[attr-defined]
    page.wait_for_load_state()  # type: ignore[attr-defined]


def test_lab_kernel_and_sharing_in_a_browser(served_hub: str, chromium: object,
                                             uname: Callable[[str], str],
                                             tmp_path: Path) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    public = served_hub
    alice, bob = uname("alice"), uname("bob")
    admin = httpx.Client(base_url=f"{public}/hub/api", trust_env=False, timeout=60,
                         headers={"Authorization": f"token {ADMIN_TOKEN}"})
    for name in (alice, bob):
        assert admin.post(f"/users/{name}").status_code == 201

    alice_ctx = chromium.new_context()  # type: ignore[attr-defined]
    page = alice_ctx.new_page()
    try:
        sign_in(page, public, alice)
        # user-redirect starts the server and lands in JupyterLab once it is ready
        started = time.monotonic()
        page.goto(f"{public}/hub/user-redirect/lab", timeout=UI_TIMEOUT)
        page.wait_for_url(f"**/user/{alice}/lab**", timeout=UI_TIMEOUT)
        at_lab = time.monotonic()
        launcher = page.locator(".jp-LauncherCard[data-category='Notebook']").first
        launcher.wait_for(timeout=UI_TIMEOUT)
        # reported, never asserted: timings depend on the machine
        print(f"\nspawn to Lab's URL {at_lab - started:.2f} s, to Lab's launcher "
              f"{time.monotonic() - started:.2f} s")
        launcher.click(timeout=UI_TIMEOUT)
        cell = page.locator(".jp-Notebook .jp-Cell .cm-content").first
        cell.wait_for(timeout=UI_TIMEOUT)
        cell.click()
        page.keyboard.type("print(6*7)")
        # the status bar reads "Python 3 (ipykernel) | Idle" once the kernel's WebSocket is
        # up; a run sent while Lab is still connecting can be dropped, so run until it shows
        page.get_by_text(re.compile(r"\|\s*Idle")).first.wait_for(timeout=UI_TIMEOUT)
        output = page.locator(".jp-OutputArea-output").first
        for attempt in range(4):
            cell.click()
            page.keyboard.press("Control+Enter")
            try:
                output.wait_for(timeout=UI_TIMEOUT // 4)
                break
            except PlaywrightTimeout:
                if attempt == 3:
                    raise
        assert output.inner_text().strip() == "42"
        page.screenshot(path=str(tmp_path / "alice-lab.png"))
    except BaseException:
        page.screenshot(path=str(tmp_path / "alice-failure.png"))
        shutil.copy(tmp_path / "alice-failure.png", "/tmp/courtyard-e2e-alice-failure.png")
        raise

    bob_ctx = chromium.new_context()  # type: ignore[attr-defined]
    page = bob_ctx.new_page()
    try:
        sign_in(page, public, bob)
        response = page.goto(f"{public}/user/{alice}/lab", timeout=UI_TIMEOUT)
        assert response is not None and response.status == 403

        r = admin.post(f"/share-codes/{alice}/", json={})
        assert r.status_code == 201, r.text
        page.goto(public + r.json()["accept_url"])
        page.click("button:has-text('Accept and open')")
        page.click("button:has-text('Authorize')", timeout=UI_TIMEOUT)  # not bob's own
        page.wait_for_url(f"**/user/{alice}/lab**", timeout=UI_TIMEOUT)
        # bob sees alice's new notebook in her file browser
        page.locator(".jp-DirListing-item:has-text('Untitled')").first.wait_for(
            timeout=UI_TIMEOUT)
        page.screenshot(path=str(tmp_path / "bob-lab.png"))

        # revoking the share shuts bob out again, once the server's identity cache expires
        assert admin.delete(f"/shares/{alice}/").status_code == 204
        deadline = time.monotonic() + 60
        while True:
            response = page.goto(f"{public}/user/{alice}/api/contents", timeout=UI_TIMEOUT)
            assert response is not None
            if response.status == 403:
                break
            assert time.monotonic() < deadline, f"still {response.status} after revoking"
            time.sleep(1)
    except BaseException:
        page.screenshot(path=str(tmp_path / "bob-failure.png"))
        shutil.copy(tmp_path / "bob-failure.png", "/tmp/courtyard-e2e-bob-failure.png")
        raise
    finally:
        alice_ctx.close()
        bob_ctx.close()
        admin.close()
