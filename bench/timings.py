"""Timings the test suite used to assert, measured here instead (see bench/README.md).

A shared CI machine makes a timing assertion a coin toss, so the tests check behaviour
(one page of users is fetched, every route matches its own server, an unknown user costs
one argon2 check like a known one) and this script measures how long those take:

- ``users-page``: the API's first page of users (``GET /hub/api/users?limit=50``) on a
  ``courtyard serve`` with 50,000 users, from outside the hub; median and worst of 20;
- ``admin-page``: the admin page in headless Chromium until its first 50 rows show (only
  when Playwright and /usr/bin/chromium are installed);
- ``route-lookup``: one lookup among 10,000 routes in the proxy's route table;
- ``login-refusal``: a wrong password for an existing user against one for a user who does
  not exist (native accounts, the token API's auth body), medians of 5; their ratio shows
  whether a user's existence leaks through timing.

Run: ``python bench/timings.py [--users N]``. It prints one line per figure with the
bound the tests used to assert, and exits 1 if a figure is past its bound.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.harness import free_ports  # noqa: E402

CHROMIUM = os.environ.get("COURTYARD_CHROMIUM", "/usr/bin/chromium")
TOKEN = "timings-admin-token-" + secrets.token_hex(4)
PASSWORD = "Admin-" + secrets.token_hex(8)

CONFIG = """\
c.JupyterHub.db_url = 'sqlite:///{data}/hub.sqlite'
c.JupyterHub.data_files_path = {data!r}
c.JupyterHub.authenticator_class = 'native'
c.Authenticator.admin_users = {{'admin'}}
c.Authenticator.login_attempts_free = 1000000
c.Authenticator.login_global_limit = 1000000
c.JupyterHub.api_tokens = {{{token!r}: 'admin'}}
c.JupyterHub.cleanup_proxy = True
c.BuiltinProxy.workers = 1
"""


def prepare(data: Path, config: Path, users: int) -> None:
    """The schema, the admin's native account, and ``users`` more users in one INSERT."""
    from sqlalchemy import insert

    from courtyard.app import Hub
    from courtyard.auth.native import set_password
    from courtyard.db import queries
    from courtyard.db.models import User, utcnow

    hub = Hub.from_file(str(config), {"log_level": "WARNING"})
    hub.initialize()
    with hub.session() as db:
        admin = queries.get_user(db, "admin") or queries.create_user(db, "admin", admin=True)
        set_password(db, admin, PASSWORD)
        now = utcnow()
        db.execute(insert(User.__table__), [
            {"name": f"user{n:06d}", "admin": False, "created": now, "last_activity": None,
             "cookie_id": secrets.token_hex(16)} for n in range(users)])
        db.commit()
    hub.session.kw["bind"].dispose()


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def users_page(api: httpx.Client) -> tuple[float, float]:
    def get() -> None:
        r = api.get("/users", params={"limit": 50, "sort": "name"},
                    headers={"Accept": "application/jupyterhub-pagination+json"})
        assert r.status_code == 200 and len(r.json()["items"]) == 50, r.text[:200]

    times = [timed(get) for _ in range(20)]
    return statistics.median(times), max(times)


def admin_page(url: str) -> float | None:
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        return None
    if not os.access(CHROMIUM, os.X_OK):
        return None
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto(f"{url}/hub/login")
        page.get_by_label("Username").fill("admin")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{url}/hub/home")
        started = time.perf_counter()
        page.goto(f"{url}/hub/admin")
        expect(page.locator("#users-table tbody tr")).to_have_count(50, timeout=60_000)
        took = time.perf_counter() - started
        browser.close()
    return took


def login_refusal(api: httpx.Client) -> tuple[float, float]:
    def refuse(name: str) -> Callable[[], None]:
        def post() -> None:
            r = api.post("/users/x/tokens", headers={"Authorization": ""},
                         json={"auth": {"username": name, "password": "wrong-password"}})
            assert r.status_code == 403, r.text[:200]
        return post

    known = statistics.median(timed(refuse("admin")) for _ in range(5))
    absent = statistics.median(timed(refuse("nobody-at-all")) for _ in range(5))
    return known, absent


def route_lookup() -> float:
    from courtyard.proxy.routes import RouteTable

    table = RouteTable()
    table.add("/", "http://hub:8081")
    for i in range(10_000):
        table.add(f"/user/u{i}/", f"http://10.0.{i // 250}.{i % 250}:8888")
    paths = [f"/user/u{i}/lab/tree/notebook.ipynb" for i in range(0, 10_000, 10)]
    best = min(timed(lambda: [table.match(p) for p in paths]) for _ in range(5))
    return best / len(paths)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=50_000, help="users besides the admin")
    args = parser.parse_args()
    results: list[tuple[str, str, bool]] = []
    per_lookup = route_lookup()
    results.append(("route-lookup", f"{per_lookup * 1e6:.1f} µs per lookup among 10,000 "
                    "routes (bound 50 µs)", per_lookup < 50e-6))
    with tempfile.TemporaryDirectory(prefix="courtyard-timings-") as tmp:
        data = Path(tmp)
        data.chmod(0o700)
        config = data / "courtyard_config.py"
        config.write_text(CONFIG.format(data=str(data), token=TOKEN))
        prepare(data, config, args.users)
        port, hub_port, api_port = free_ports(3)
        with (data / "hub.log").open("w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "courtyard", "serve", "-f", str(config), "--port",
                 str(port), "--hub-port", str(hub_port), "--proxy-api-port", str(api_port)],
                cwd=data, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    print((data / "hub.log").read_text(), file=sys.stderr)
                    return 2
                try:
                    if httpx.get(f"{url}/hub/api/", trust_env=False).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            with httpx.Client(base_url=f"http://127.0.0.1:{hub_port}/hub/api", trust_env=False,
                              timeout=60, headers={"Authorization": f"token {TOKEN}"}) as api:
                median, worst = users_page(api)
                results.append(("users-page", f"median {median * 1000:.0f} ms, worst "
                                f"{worst * 1000:.0f} ms, {args.users:,} users (bound 1 s)",
                                worst < 1.0))
                known, absent = login_refusal(api)
                ratio = max(known, absent) / min(known, absent)
                results.append(("login-refusal", f"existing user {known * 1000:.0f} ms, "
                                f"no such user {absent * 1000:.0f} ms, ratio {ratio:.2f} "
                                "(bound 3)", ratio < 3))
            rendered = admin_page(url)
            if rendered is None:
                results.append(("admin-page", "skipped: needs playwright and Chromium", True))
            else:
                results.append(("admin-page", f"{rendered:.2f} s to its first 50 rows "
                                "(bound 10 s)", rendered < 10))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    for name, text, ok in results:
        print(f"{name:14} {'ok  ' if ok else 'SLOW'} {text}")
    return 0 if all(ok for _n, _t, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
