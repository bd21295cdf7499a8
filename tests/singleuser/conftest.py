"""Fixtures for the single-user server, OAuth provider and sharing tests.

Two speeds: in-process hubs (httpx over ASGI) for the OAuth provider's rules, and a real
stack for everything a notebook server does: the hub serving on a free port, the built-in
proxy process in front, and real Jupyter servers (``courtyard-singleuser``, or JupyterHub's
``jupyterhub-singleuser``) started by LocalProcessSpawner.

Servers run from a virtualenv made from Debian's ``/usr/bin/python3`` in a world-readable
cache directory (``venv.py``), because as root LocalProcessSpawner runs each server as its
system user, who cannot reach the test interpreter. Courtyard itself reaches the servers as a
per-session world-readable copy of the package on ``PYTHONPATH``.
"""

from __future__ import annotations

import asyncio
import copy
import html
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest
from traitlets.config import Config

from courtyard.app import Hub
from courtyard.db import queries
from tests.conftest import ADMIN_TOKEN, free_ports, tool_missing

from .venv import ensure_venv

ROOT = os.geteuid() == 0
REPO = Path(__file__).resolve().parents[2]
XSRF_RE = re.compile(r'name="_xsrf" value="([^"]+)"')


# -- in-process hubs ---------------------------------------------------------------------------
def client_for(hub: Hub, base_url: str = "http://127.0.0.1:8000") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=hub.asgi), base_url=base_url)


def xsrf_of(response: httpx.Response) -> str:
    match = XSRF_RE.search(response.text)
    assert match, f"no _xsrf field in {response.url}: {response.text[:500]}"
    return html.unescape(match.group(1))


async def login(client: httpx.AsyncClient, username: str, next_url: str | None = None
                ) -> httpx.Response:
    """Sign in through the hub's form (the dummy authenticator takes any password)."""
    params = {"next": next_url} if next_url else {}
    page = await client.get("/hub/login", params=params)
    assert page.status_code == 200, page.text
    form = {"_xsrf": xsrf_of(page), "username": username, "password": "pw"}
    if next_url:
        form["next"] = next_url
    r = await client.post("/hub/login", data=form)
    assert r.status_code == 303, r.text
    return r


def form_fields(response: httpx.Response) -> dict[str, str]:
    """The hidden fields of the first form in a page."""
    return {html.unescape(m.group(1)): html.unescape(m.group(2)) for m in re.finditer(
        r'<input type="hidden" name="([^"]+)" value="([^"]*)">', response.text)}


def user_token(hub: Hub, name: str, scopes: list[str] | None = None) -> str:
    with hub.session() as db:
        user = queries.get_user(db, name) or queries.create_user(db, name)
        _, secret = queries.issue_token(db, user, note="test", scopes=scopes)
        db.commit()
    hub.scope_cache.invalidate()
    return secret


# -- the single-user environment ---------------------------------------------------------------
@dataclass
class SingleUserEnv:
    """Where real servers come from: a venv, and a readable copy of Courtyard."""

    python: Path
    bin: Path
    src: Path
    wrappers: Path

    @property
    def courtyard_cmd(self) -> list[str]:
        return [str(self.wrappers / "courtyard-singleuser")]

    @property
    def jupyterhub_cmd(self) -> list[str]:
        return [str(self.bin / "jupyterhub-singleuser")]


@pytest.fixture(scope="session")
def open_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="courtyard-su-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def su_env(open_dir: Path) -> SingleUserEnv:
    """The venv (made once and cached) and this session's copy of the package."""
    if not os.access("/usr/bin/python3", os.X_OK):
        tool_missing("/usr/bin/python3 (Debian's python3 and python3-venv) is needed")
    venv = ensure_venv()
    src = open_dir / "src"
    shutil.copytree(REPO / "courtyard", src / "courtyard",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    wrappers = open_dir / "bin"
    wrappers.mkdir()
    script = wrappers / "courtyard-singleuser"
    # what `pip install courtyard` makes, pointed at this session's copy of the code
    script.write_text(f"#!/bin/sh\nPYTHONPATH={src} exec {venv}/bin/python -m "
                      "courtyard.singleuser \"$@\"\n")
    script.chmod(0o755)
    for path in [src, *src.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    subprocess.run([str(venv / "bin" / "python"), "-m", "compileall", "-q", str(src)],
                   check=False, capture_output=True)
    return SingleUserEnv(venv / "bin" / "python", venv / "bin", src, wrappers)


@pytest.fixture(scope="session")
def _made_users() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    if not ROOT:
        return
    for name in names:
        subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
        subprocess.run(["userdel", "--remove", name], capture_output=True)


@pytest.fixture
def uname(_made_users: list[str]) -> Callable[[str], str]:
    """A user name unique to this run (a new system user as root)."""
    run = secrets.token_hex(2)

    def make(label: str) -> str:
        name = f"su{run}{len(_made_users)}{label}"[:30]
        _made_users.append(name)
        return name

    return make


# -- a real stack: hub + proxy + servers -------------------------------------------------------
@dataclass
class Stack:
    hub: Hub
    public: str  # http://127.0.0.1:PORT (the proxy)
    api: httpx.AsyncClient  # admin token, straight to the hub's API
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    def browser(self) -> httpx.AsyncClient:
        """A cookie-keeping client of the public URL that follows no redirects by itself."""
        client = httpx.AsyncClient(base_url=self.public, trust_env=False, timeout=60)
        self.clients.append(client)
        return client

    async def start(self, user: str, wait: float = 60) -> dict[str, Any]:
        if (await self.api.get(f"/users/{user}")).status_code == 404:
            r = await self.api.post(f"/users/{user}")
            assert r.status_code == 201, r.text
        r = await self.api.post(f"/users/{user}/server")
        assert r.status_code == 201, r.text  # see slow_spawn_timeout in stack_config
        return await self.wait_ready(user, wait)

    async def wait_ready(self, user: str, wait: float = 60) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            model = (await self.api.get(f"/users/{user}")).json()
            server = model["servers"].get("")
            if server and server["ready"]:
                return server
            if loop.time() > deadline or (not server and not model["pending"]):
                log = (await self.api.get(f"/users/{user}/server/logs")).text
                raise AssertionError(f"{user}'s server did not become ready: {model}\n{log}")
            await asyncio.sleep(0.1)

    async def token(self, user: str, scopes: list[str] | None = None) -> str:
        body = {"scopes": scopes} if scopes else {}
        await self.api.post(f"/users/{user}")  # 201, or 409 when it exists
        r = await self.api.post(f"/users/{user}/tokens", json=body)
        assert r.status_code == 201, r.text
        return str(r.json()["token"])


async def follow(client: httpx.AsyncClient, url: str, limit: int = 20,
                 method: str = "GET", data: dict[str, str] | None = None) -> httpx.Response:
    """Follow redirects by hand (they cross between the hub and servers), like a browser."""
    for _ in range(limit):
        r = await client.request(method, url, data=data)
        if not r.is_redirect:
            return r
        url = urljoin(str(r.url), r.headers["location"])
        method, data = "GET", None
    raise AssertionError(f"too many redirects, last {url}")


@pytest.fixture
def stack_config(hub_config: Config, su_env: SingleUserEnv) -> Config:
    c = copy.deepcopy(hub_config)
    c.Courtyard.hub_port = 0
    c.Courtyard.authenticator_class = "dummy"
    c.Courtyard.cleanup_proxy = True  # the built-in proxy would outlive the test otherwise
    c.Spawner.cmd = su_env.courtyard_cmd
    c.Spawner.start_timeout = 60
    c.Spawner.http_timeout = 90
    # a start or stop request waits for the outcome (past http_timeout, a start has failed),
    # so it answers 201/204 (or 500), never a 202 that would depend on the machine's speed
    c.Courtyard.slow_spawn_timeout = 120
    c.Spawner.poll_interval = 1
    c.Spawner.environment = {"JUPYTERHUB_ACTIVITY_INTERVAL": "1",
                             "COURTYARD_SINGLEUSER_CACHE_MAX_AGE": "1",
                             "JUPYTER_PLATFORM_DIRS": "1"}
    c.LocalProcessSpawner.create_system_users = ROOT
    c.LocalProcessSpawner.term_timeout = 3
    return c


@pytest.fixture
async def make_stack(stack_config: Config, tmp_path: Path
                     ) -> AsyncIterator[Callable[..., Awaitable[Stack]]]:
    """``await make_stack(**options)``: hub serving for real, built-in proxy in front."""
    started: list[tuple[Stack, asyncio.Task[None]]] = []

    async def make(config: Config | None = None, **options: Any) -> Stack:
        c = copy.deepcopy(stack_config)
        if config is not None:
            c.merge(copy.deepcopy(config))
        # three distinct ports, the hub's too: a hub on port 0 could be given the proxy's
        # public port by the kernel once free_port() has let it go
        port, api_port, hub_port = free_ports(3)
        c.Courtyard.port = port
        c.Courtyard.bind_url = f"http://127.0.0.1:{port}/"
        c.Courtyard.hub_port = hub_port
        c.BuiltinProxy.api_url = f"http://127.0.0.1:{api_port}"
        c.BuiltinProxy.workers = 1
        for key, value in options.items():
            c.Courtyard[key] = value
        hub = Hub(c)
        hub.initialize()
        task = asyncio.create_task(hub.serve())
        public = f"http://127.0.0.1:{port}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        async with httpx.AsyncClient(trust_env=False) as probe:
            while True:  # serving once the hub answers through its proxy
                if task.done():
                    task.result()
                    raise AssertionError("the hub stopped")
                if hub.hub_bound is not None and hub.proxy is not None:
                    try:
                        if (await probe.get(f"{public}/hub/api/")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                if loop.time() > deadline:
                    raise TimeoutError("the hub and its proxy did not start")
                await asyncio.sleep(0.02)
        assert hub.hub_bound is not None
        host, hub_port = hub.hub_bound
        api = httpx.AsyncClient(base_url=f"http://{host}:{hub_port}/hub/api",
                                headers={"Authorization": f"token {ADMIN_TOKEN}"},
                                trust_env=False, timeout=60)
        stack = Stack(hub, public, api)
        started.append((stack, task))
        return stack

    yield make
    for stack, task in started:
        for client in stack.clients:
            await client.aclose()
        await stack.api.aclose()
        stack.hub.shutdown_event.set()
        await task
        stack.hub.session.kw["bind"].dispose()


@asynccontextmanager
async def signed_in(stack: Stack, user: str) -> AsyncIterator[httpx.AsyncClient]:
    client = stack.browser()
    await login(client, user)
    yield client
