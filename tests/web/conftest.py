"""Fixtures for the browser tests: one real hub for the session, and headless Chromium.

The hub is ``courtyard serve`` as a process, with the built-in proxy, native accounts
(sign-up open), named servers, a ``profile_list``, and the LocalProcessSpawner running
``tests/spawners/mocksu.py`` as each server, so spawns and their progress are real. Before
it starts, 50,000 users are written straight into its database (one bulk INSERT): a
SQLite file, or a database on the session's PostgreSQL under ``--db=postgresql``.

Chromium is Debian's (``/usr/bin/chromium``), driven by Playwright; no browser download.
Without either the tests skip, except under ``CI``, where they fail.
"""

from __future__ import annotations

import functools
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Databases, free_port, tool_missing

try:
    from playwright.sync_api import expect
except ImportError:  # the fixtures below skip the tests (or fail them under CI)
    expect = None

ROOT = os.geteuid() == 0
HERE = Path(__file__).parent
REPO = HERE.parent.parent
MOCKSU = REPO / "tests" / "spawners" / "mocksu.py"
SYSTEM_PYTHON = "/usr/bin/python3"
CHROMIUM = os.environ.get("COURTYARD_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]
# The committed screenshots (the README shows them) are rewritten only when asked, with
# COURTYARD_SCREENSHOTS=1; otherwise a run writes its screenshots to a temp directory, so
# running the tests never modifies the tree.
DOCS_SCREENSHOTS = REPO / "docs" / "screenshots"
TOKEN = "web-tests-admin-token-" + secrets.token_hex(8)
ADMIN_PASSWORD = "admin-" + secrets.token_hex(8)
BULK_USERS = 50_000
RUN = secrets.token_hex(2)

CONFIG = """\
import os
GATES = {gates!r}

def gate(spawner):
    # the server waits for this file before it listens: a start the test holds back
    return os.path.join(GATES, f"{{spawner.user.name}}-{{spawner.name or 'default'}}")

c.JupyterHub.db_url = {db_url!r}
c.JupyterHub.data_files_path = {data!r}
c.JupyterHub.authenticator_class = "native"
c.NativeAuthenticator.enable_signup = True
c.NativeAuthenticator.open_signup = True
c.Authenticator.admin_users = {{{admin!r}}}
c.JupyterHub.api_tokens = {{{token!r}: {admin!r}}}
c.JupyterHub.services = [{{"name": "culler", "api_token": "culler-token-{run}"}},
                         {{"name": "docs", "url": "http://127.0.0.1:9"}}]
c.JupyterHub.allow_named_servers = True
c.JupyterHub.named_server_limit_per_user = 3
c.JupyterHub.concurrent_spawn_limit = 1
c.JupyterHub.cleanup_proxy = True
c.JupyterHub.template_vars = {{"announcement": "Browser tests are running on this hub."}}
c.BuiltinProxy.api_url = "http://127.0.0.1:{api_port}"
c.BuiltinProxy.workers = 1
c.Spawner.cmd = {cmd!r}
c.Spawner.start_timeout = 30
c.Spawner.http_timeout = 30
c.Spawner.poll_interval = 1
c.Spawner.default_url = "/tree"
c.Spawner.profile_list = [
    {{"display_name": "Standard", "slug": "standard", "default": True,
      "description": "A small server that starts at once."}},
    {{"display_name": "Held at start", "slug": "held",
      "description": "Starts only when the test lets it: watch the progress.",
      "kubespawner_override": {{"environment": {{"MOCKSU_GATE": gate}}}}}},
    {{"display_name": "Broken", "slug": "broken",
      "description": "Exits at once, to show a failed start and its log.",
      "kubespawner_override": {{"environment": {{"MOCKSU_MODE": "crash"}}}}}},
]
c.LocalProcessSpawner.create_system_users = {root}
c.LocalProcessSpawner.term_timeout = 2
"""


@dataclass
class WebHub:
    """The running hub: its public URL (through the proxy), files and helpers."""

    url: str  # http://127.0.0.1:PORT (the proxy)
    hub_api: str  # the hub's own port, for direct API calls
    data: Path
    gates: Path
    admin: str
    log: Path
    proc: subprocess.Popen[bytes]
    names: list[str] = field(default_factory=list)

    def name(self, label: str) -> str:
        """A user name unique to this run (and a valid system user name, as root)."""
        name = f"w{RUN}{len(self.names)}{label}"[:30]
        self.names.append(name)
        return name

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=f"{self.hub_api}/hub/api", trust_env=False, timeout=30,
                            headers={"Authorization": f"token {TOKEN}"})

    def release(self, user: str, server: str = "") -> None:
        """Let a server started with the "held" profile listen."""
        (self.gates / f"{user}-{server or 'default'}").touch()

    def server(self, user: str, server: str = "") -> dict[str, Any] | None:
        with self.api() as api:
            r = api.get(f"/users/{user}", params={"include_stopped_servers": "1"})
            r.raise_for_status()
            return r.json()["servers"].get(server)

    def wait_server(self, user: str, server: str = "", ready: bool = True,
                    timeout: float = 30) -> None:
        """Until the server is ready (or, ``ready=False``, neither ready nor pending)."""
        deadline = time.monotonic() + timeout
        while True:
            model = self.server(user, server)
            done = bool(model and model["ready"]) if ready else \
                not (model and (model["ready"] or model["pending"]))
            if done:
                return
            assert time.monotonic() < deadline, f"{user}/{server}: {model}"
            time.sleep(0.1)

    def stop_server(self, user: str, server: str = "") -> None:
        path = f"/users/{user}/servers/{server}" if server else f"/users/{user}/server"
        with self.api() as api:
            api.delete(path)
        self.wait_server(user, server, ready=False)


def _require_browser() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        tool_missing("playwright is not installed (pip install playwright)")
    if not os.access(CHROMIUM, os.X_OK):
        tool_missing(f"{CHROMIUM} is missing (apt-get install chromium fonts-dejavu-core)")
    return sync_playwright


def _mocksu_cmd(open_dir: Path) -> list[str]:
    if not ROOT:
        return [sys.executable, str(MOCKSU)]
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        tool_missing(f"{SYSTEM_PYTHON} is needed to run servers as other users")
    copy = open_dir / "mocksu.py"
    shutil.copy(MOCKSU, copy)
    copy.chmod(0o644)
    return [SYSTEM_PYTHON, str(copy)]


def _prepare_database(data: Path, config: Path, admin: str, bulk: int = BULK_USERS) -> float:
    """Make the schema and the admin's account, then bulk-insert the users; seconds taken."""
    from sqlalchemy import insert

    from courtyard.app import Hub
    from courtyard.auth.native import set_password
    from courtyard.db import queries
    from courtyard.db.models import User, utcnow

    hub = Hub.from_file(str(config), {"log_level": "WARNING"})
    hub.initialize()
    with hub.session() as db:
        user = queries.get_user(db, admin) or queries.create_user(db, admin, admin=True)
        set_password(db, user, ADMIN_PASSWORD)
        db.commit()
        started = time.monotonic()
        now = utcnow()
        rows = [{"name": f"user{n:06d}", "admin": False, "created": now,
                 "last_activity": None, "cookie_id": secrets.token_hex(16)}
                for n in range(bulk)]
        if rows:
            db.execute(insert(User.__table__), rows)
        db.commit()
        took = time.monotonic() - started
    hub.session.kw["bind"].dispose()
    return took


@pytest.fixture(scope="session")
def web_hub(databases: Databases) -> Iterator[WebHub]:
    """The hub the browser tests share, with BULK_USERS users besides their own."""
    yield from _web_hub(databases, BULK_USERS)


@pytest.fixture
def own_web_hub(databases: Databases) -> Iterator[WebHub]:
    """A hub of the test's own (no bulk users), for what ends a hub: shutting it down."""
    yield from _web_hub(databases, 0)


def _web_hub(databases: Databases, bulk: int) -> Iterator[WebHub]:
    _require_browser()
    data = Path(tempfile.mkdtemp(prefix="courtyard-web-"))
    open_dir = data / "open"
    gates = open_dir / "gates"
    gates.mkdir(parents=True)
    for path in (data, open_dir, gates):
        path.chmod(0o755 if path is not gates else 0o777)
    admin = f"w{RUN}admin"
    hub_port, port, api_port = free_port(), free_port(), free_port()
    config = data / "courtyard_config.py"
    db_url = databases.new(data)
    config.write_text(CONFIG.format(
        gates=str(gates), db_url=db_url, data=str(data),
        admin=admin, token=TOKEN, run=RUN, api_port=api_port, cmd=_mocksu_cmd(open_dir),
        root=ROOT))
    _prepare_database(data, config, admin, bulk)
    log = data / "hub.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "courtyard", "serve", "-f", str(config), "--hub-port",
             str(hub_port), "--port", str(port)], cwd=data, stdout=out, stderr=subprocess.STDOUT)
    hub = WebHub(url=f"http://127.0.0.1:{port}", hub_api=f"http://127.0.0.1:{hub_port}",
                 data=data, gates=gates, admin=admin, log=log, proc=proc, names=[admin])
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{hub.url}/hub/api/", trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield hub
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        _kill_leftover_proxy(data)
        _remove_system_users(hub.names)
        databases.drop(db_url)
        shutil.rmtree(data, ignore_errors=True)


def _kill_leftover_proxy(data: Path) -> None:
    pid_file = data / "courtyard-proxy.pid"
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
        except (ProcessLookupError, ValueError):
            pass


def _remove_system_users(names: list[str]) -> None:
    if not ROOT:
        return
    for name in names:
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
        subprocess.run(["userdel", "--remove", name], capture_output=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium, per test module: the sync Playwright API keeps an event loop running in
    this thread while it is open, which would stop async tests of other modules."""
    sync_playwright = _require_browser()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield b
        b.close()


class PageWatch:
    """What went wrong in a page: CSP violations, script errors, console errors."""

    def __init__(self) -> None:
        self.csp: list[str] = []
        self.errors: list[str] = []

    def console(self, message: Any) -> None:
        text = message.text
        if "Content Security Policy" in text or "Content-Security-Policy" in text:
            self.csp.append(text)
        elif message.type == "error" and "Failed to load resource" not in text:
            self.errors.append(text)

    def check(self, page: Any) -> None:
        try:
            events = page.evaluate("window.__cspViolations || []")
        except Exception:  # the page is gone or navigating
            events = []
        violations = self.csp + [f"{e['directive']}: {e['blocked']}" for e in events]
        assert not violations, f"Content-Security-Policy violations: {violations}"
        assert not self.errors, f"errors in the page: {self.errors}"


CSP_LISTENER = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push({directive: e.violatedDirective, blocked: e.blockedURI});
});
"""


def _new_page(browser: Any, watch: PageWatch, **context_args: Any) -> tuple[Any, Any]:
    context = browser.new_context(**context_args)
    context.set_default_timeout(20_000)
    context.add_init_script(CSP_LISTENER)
    page = context.new_page()
    page.on("console", watch.console)
    page.on("pageerror", lambda e: watch.errors.append(f"{e}"))
    page.on("requestfailed", lambda r: print(f"request failed: {r.method} {r.url}: {r.failure}"))
    page.on("dialog", lambda dialog: dialog.accept())
    return context, page


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) at laptop size; checked for CSP violations."""
    watch = PageWatch()
    context, pg = _new_page(browser, watch, viewport={"width": 1280, "height": 860})
    pg.watch = watch
    yield pg
    watch.check(pg)
    context.close()


@pytest.fixture
def phone(browser: Any) -> Iterator[Any]:
    """A fresh browser context the size of a phone."""
    watch = PageWatch()
    context, pg = _new_page(browser, watch, viewport={"width": 390, "height": 844},
                            device_scale_factor=2, is_mobile=True, has_touch=True)
    pg.watch = watch
    yield pg
    watch.check(pg)
    context.close()


@functools.cache
def _run_screenshots() -> Path:
    return Path(tempfile.mkdtemp(prefix="courtyard-screenshots-"))


def screenshot_dir() -> Path:
    """``docs/screenshots`` with COURTYARD_SCREENSHOTS=1, else this run's temp directory."""
    if os.environ.get("COURTYARD_SCREENSHOTS") == "1":
        return DOCS_SCREENSHOTS
    return _run_screenshots()


def screenshot(page: Any, name: str, full_page: bool = True) -> None:
    """Save ``NAME.png`` in :func:`screenshot_dir` (the committed docs/screenshots only when
    COURTYARD_SCREENSHOTS=1)."""
    directory = screenshot_dir()
    directory.mkdir(parents=True, exist_ok=True)
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(directory / f"{name}.png"), full_page=full_page,
                    animations="disabled", caret="hide")


def sign_up(page: Any, hub: WebHub, name: str, password: str = "correct-horse-9") -> None:
    """Create an account through the sign-up page and sign in with it."""
    page.goto(f"{hub.url}/hub/signup")
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_label("Password again").fill(password)
    page.get_by_role("button", name="Create account").click()
    page.get_by_text("Your account is ready").wait_for()
    sign_in(page, hub, name, password)


def sign_in(page: Any, hub: WebHub, name: str, password: str) -> None:
    page.goto(f"{hub.url}/hub/login")
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{hub.url}/hub/home")


@pytest.fixture
def admin_page(page: Any, web_hub: WebHub) -> Any:
    sign_in(page, web_hub, web_hub.admin, ADMIN_PASSWORD)
    return page
