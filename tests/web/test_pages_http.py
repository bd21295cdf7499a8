"""The pages without a browser: in-process requests for what the browser tests do not reach
(options forms, status codes, headers, redirects, customisation)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from traitlets.config import Config

from courtyard.app import Hub
from courtyard.spawners.base import Spawner

XSRF_RE = re.compile(r'name="_xsrf" value="([^"]+)"')


class HeldSpawner(Spawner):
    """Starts nothing and never finishes starting: the spawn stays pending."""

    async def start(self) -> str:
        await asyncio.Event().wait()
        return "http://127.0.0.1:9"

    async def stop(self, now: bool = False) -> None:
        pass

    async def poll(self) -> int | None:
        return 0


@pytest.fixture
async def site(tmp_path: Path, new_db_url: Callable[..., str]
               ) -> AsyncIterator[Callable[..., Any]]:
    """``await site(options)`` -> (hub, client signed in as alice, an admin)."""
    hubs: list[Hub] = []
    clients: list[httpx.AsyncClient] = []

    async def make(**options: Any) -> tuple[Hub, httpx.AsyncClient]:
        c = Config()
        c.Courtyard.db_url = new_db_url("site")
        c.Courtyard.data_files_path = str(tmp_path)
        c.Courtyard.authenticator_class = "dummy"
        c.Courtyard.spawner_class = HeldSpawner
        c.Authenticator.admin_users = {"alice"}
        for key, value in options.items():
            section, _, name = key.rpartition(".")
            c[section or "Courtyard"][name] = value
        hub = Hub(c)
        hub.initialize()
        hubs.append(hub)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=hub.asgi),
                                   base_url="http://127.0.0.1:8081")
        clients.append(client)
        page = await client.get("/hub/login")
        r = await client.post("/hub/login", data={"_xsrf": XSRF_RE.search(page.text).group(1),
                                                  "username": "alice", "password": ""})
        assert r.status_code == 303, r.text
        return hub, client

    yield make
    for client in clients:
        await client.aclose()
    for hub in hubs:
        await hub.lifecycle.shutdown(stop_servers=True)
        hub.session.kw["bind"].dispose()


def server_options(hub: Hub, user: str, name: str = "") -> dict[str, Any]:
    from courtyard.db import queries

    with hub.session() as db:
        row = next(s for s in queries.get_user(db, user).servers if s.name == name)
        return dict(row.user_options)


async def test_site_root_leads_to_the_hub(site) -> None:
    """``/`` (the README's address) goes to ``/hub/`` and on, as in JupyterHub."""
    _hub, client = await site()
    r = await client.get("/")
    assert r.status_code == 302 and r.headers["location"] == "/hub/"
    r = await client.get("/hub/")  # signed in: on to the home page
    assert r.status_code == 302 and r.headers["location"].endswith("/hub/home")


async def test_options_form_posts_user_options(site) -> None:
    form = ('<label for="image">Image</label><select id="image" name="image">'
            '<option value="scipy">SciPy</option><option value="r">R</option></select>'
            '<label for="cpus">CPUs</label><input id="cpus" name="cpus" value="1">')
    hub, client = await site(**{
        "Spawner.options_form": form,
        "Spawner.options_from_form": lambda data: {"image": data["image"][0],
                                                   "cpus": int(data["cpus"][0])}})
    page = await client.get("/hub/spawn")
    assert page.status_code == 200
    assert form in page.text  # the admin's HTML, as given
    xsrf = XSRF_RE.search(page.text).group(1)
    # without the XSRF token nothing starts
    r = await client.post("/hub/spawn/alice", data={"image": "r", "cpus": "2"})
    assert r.status_code == 403
    r = await client.post("/hub/spawn/alice", data={"_xsrf": xsrf, "image": "r", "cpus": "2"})
    assert r.status_code == 303
    assert r.headers["location"] == "/hub/spawn-pending/alice"
    assert server_options(hub, "alice") == {"image": "r", "cpus": 2}
    assert hub.lifecycle.pending("alice", "") == "spawn"
    # the spawn page of a pending server sends the browser to its progress
    r = await client.get("/hub/spawn")
    assert r.status_code == 302 and r.headers["location"] == "/hub/spawn-pending/alice"
    pending = await client.get("/hub/spawn-pending/alice")
    assert 'data-progress-url="/hub/api/users/alice/server/progress"' in pending.text
    assert 'data-state="spawn"' in pending.text


async def test_opt_query_arguments_start_without_the_form(site) -> None:
    hub, client = await site(**{"Spawner.options_form": '<input name="size">',
                                "allow_named_servers": True})
    r = await client.get("/hub/spawn/alice/big", params={"opt-size": "xl"})
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/hub/spawn-pending/alice/big"
    assert server_options(hub, "alice", "big") == {"size": ["xl"]}


async def test_profile_list_choice_applies_the_override(site) -> None:
    profiles = [{"display_name": "Small", "default": True},
                {"display_name": "Large GPU", "slug": "gpu", "description": "One GPU",
                 "kubespawner_override": {"cpu_limit": 8.0, "environment": {"GPU": "1"}}}]
    hub, client = await site(**{"Spawner.profile_list": profiles})
    page = await client.get("/hub/spawn")
    assert 'value="small" checked' in page.text and "One GPU" in page.text
    xsrf = XSRF_RE.search(page.text).group(1)
    r = await client.post("/hub/spawn", data={"_xsrf": xsrf, "profile": "nope"})
    assert r.status_code == 400 and "Choose one of the offered profiles" in r.text
    r = await client.post("/hub/spawn", data={"_xsrf": xsrf, "profile": "gpu"})
    assert r.status_code == 303
    assert server_options(hub, "alice") == {"profile": "gpu"}
    spawner = hub.lifecycle._slots[("alice", "")].spawner
    assert spawner.cpu_limit == 8.0 and spawner.environment == {"GPU": "1"}


async def test_named_server_rules_on_the_spawn_page(site) -> None:
    _hub, client = await site()
    r = await client.get("/hub/spawn/alice/extra")
    assert r.status_code == 400 and "Named servers are not enabled" in r.text
    _hub, client = await site(allow_named_servers=True, named_server_limit_per_user=1)
    assert (await client.get("/hub/spawn/alice/Bad_Name")).status_code == 400
    assert (await client.get("/hub/spawn/alice/one")).status_code == 303
    r = await client.get("/hub/spawn/alice/two")
    assert r.status_code == 400 and "maximum of 1 named servers" in r.text
    # nobody starts someone else's server without the scopes
    assert (await client.get("/hub/spawn/nobody")).status_code == 404


async def test_stopped_server_status_codes(site) -> None:
    _hub, client = await site()
    r = await client.get("/user/alice/lab")
    assert r.status_code == 302 and r.headers["location"] == "/hub/user/alice/lab"
    r = await client.get("/hub/user/alice/lab", headers={"Accept": "text/html"})
    assert r.status_code == 424 and "is not running" in r.text
    assert 'href="/hub/spawn/alice?next=/user/alice/lab"' in r.text
    r = await client.get("/hub/user/alice/api/kernels", headers={"Accept": "application/json"})
    assert r.status_code == 424 and r.json() == {"status": 424,
                                                 "message": "alice's server is not running"}
    _hub, client = await site(use_legacy_stopped_server_status_code=True)
    r = await client.get("/hub/user/alice/api/kernels")
    assert r.status_code == 503


async def test_security_headers_on_every_page(site) -> None:
    _hub, client = await site()
    for path in ("/hub/home", "/hub/token", "/hub/admin", "/hub/spawn-pending/alice",
                 "/hub/error/404", "/hub/no-such-page"):
        r = await client.get(path)
        assert r.headers["content-type"].startswith("text/html"), path
        csp = r.headers["content-security-policy"]
        for directive in ("default-src 'self'", "script-src 'self'", "style-src 'self'",
                          "object-src 'none'", "frame-ancestors 'none'",
                          "report-uri /hub/security/csp-report"):
            assert directive in csp, (path, csp)
        assert r.headers["x-frame-options"] == "DENY"
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", r.text), path
        assert not re.search(r"\son[a-z]+=[\"']", r.text), path
    # the API keeps answering JSON, even for errors
    r = await client.get("/hub/api/nowhere")
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"
    assert "content-security-policy" not in r.headers
    r = await client.post("/hub/security/csp-report", content=b'{"csp-report": {}}')
    assert r.status_code == 204


async def test_root_redirects(site) -> None:
    _hub, client = await site()
    assert (await client.get("/hub/")).headers["location"] == "/hub/home"
    _hub, client = await site(default_url="/hub/token")
    assert (await client.get("/hub/")).headers["location"] == "/hub/token"
    anonymous = httpx.AsyncClient(transport=client._transport, base_url="http://127.0.0.1:8081")
    async with anonymous:
        assert (await anonymous.get("/hub/")).headers["location"] == "/hub/login"
        r = await anonymous.get("/hub/admin")
        assert r.status_code == 302 and r.headers["location"] == "/hub/login?next=/hub/admin"


async def test_custom_templates_vars_and_logo(site, tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "home.html").write_text(
        '{% extends "page.html" %}{% block main %}<p>Welcome to {{ site_name }}, '
        '{{ user.name }}</p>{% endblock %}')
    logo = tmp_path / "logo.png"
    logo.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    _hub, client = await site(template_paths=[str(templates)],
                              template_vars={"site_name": "Physics Hub"},
                              logo_file=str(logo))
    home = await client.get("/hub/home")
    assert "Welcome to Physics Hub, alice" in home.text
    assert "<title>Physics Hub" not in home.text  # the block was replaced, the layout kept
    assert '<span>Physics Hub</span>' in home.text
    r = await client.get("/hub/logo")
    assert r.status_code == 200 and r.content.startswith(b"\x89PNG")


async def test_a_broken_page_gets_the_500_page(site) -> None:
    def broken_form(spawner: Any) -> str:
        raise RuntimeError("the site's options_form is broken")

    hub, client = await site(**{"Spawner.options_form": broken_form})
    transport = httpx.ASGITransport(app=hub.asgi, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8081",
                                 cookies=client.cookies) as browser:
        r = await browser.get("/hub/spawn")
        assert r.status_code == 500
        assert r.headers["content-type"].startswith("text/html")
        assert "Something went wrong" in r.text and "broken" not in r.text  # no details
        assert "content-security-policy" in r.headers


async def test_a_value_the_database_refuses_is_a_400_page(site) -> None:
    """PostgreSQL refuses a NUL character even in a lookup (SQLite finds nothing): the bad
    request's page, not the 500 page; and no user is ever made with such a name."""
    hub, client = await site()
    postgres = hub.session.kw["bind"].dialect.name == "postgresql"
    r = await client.get("/hub/spawn-pending/bo%00b")
    assert r.status_code == (400 if postgres else 404), r.text
    assert r.headers["content-type"].startswith("text/html")
    assert ("The request was not understood." if postgres else "There is no server of bo") \
        in r.text
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=hub.asgi),
                                 base_url="http://127.0.0.1:8081") as stranger:
        page = await stranger.get("/hub/login")
        for name in ("bo\x00b", "b" * 256):
            r = await stranger.post("/hub/login", data={
                "_xsrf": XSRF_RE.search(page.text).group(1), "username": name, "password": ""})
            assert r.status_code == 403 and "Invalid username or password" in r.text, name
