"""Fixtures for the spawner tests: real hubs, real single-user servers (``mocksu.py``).

As root (as in CI) every server runs as a real system user: the hub creates it with
``useradd`` (``create_system_users``) and the session deletes it afterwards. Such a user
cannot exec the pyenv interpreter under /root, so mocksu then runs under Debian's
``/usr/bin/python3`` from a world-readable copy. Not as root, servers run as the hub's
user with the test's own interpreter.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from traitlets.config import Config

from courtyard.app import Hub
from tests.conftest import ADMIN_TOKEN, free_port, tool_missing

ROOT = os.geteuid() == 0
HERE = Path(__file__).parent
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="session")
def _made_names() -> Iterator[list[str]]:
    """Names handed out this session; as root, their system users are deleted at the end."""
    names: list[str] = []
    yield names
    if not ROOT:
        return
    for name in names:
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
        subprocess.run(["userdel", "--remove", name], capture_output=True)


@pytest.fixture
def uname(_made_names: list[str]) -> Callable[[str], str]:
    """``uname("alice")``: a user name unique to this run (a system user name as root)."""
    run = secrets.token_hex(3)

    def make(label: str) -> str:
        name = f"cy{run}{len(_made_names)}{label}"[:30]
        _made_names.append(name)
        return name

    return make


@pytest.fixture(scope="session")
def open_dir() -> Iterator[Path]:
    """A world-readable scratch directory (for files spawned users must reach)."""
    path = Path(tempfile.mkdtemp(prefix="courtyard-spawn-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def mocksu_cmd(open_dir: Path) -> list[str]:
    if not ROOT:
        return [sys.executable, str(HERE / "mocksu.py")]
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        tool_missing(f"{SYSTEM_PYTHON} is needed to run servers as other users")
    copy = open_dir / "mocksu.py"
    shutil.copy(HERE / "mocksu.py", copy)
    copy.chmod(0o644)
    return [SYSTEM_PYTHON, str(copy)]


@pytest.fixture
def gate(open_dir: Path) -> Callable[[], Path]:
    """A fresh path a server waits for before it listens (see mocksu's MOCKSU_GATE)."""
    return lambda: open_dir / f"gate-{secrets.token_hex(6)}"


def _from_options(key: str) -> Callable[[Any], str]:
    return lambda spawner: str(spawner.user_options.get(key, ""))


@pytest.fixture
def spawn_config(mocksu_cmd: list[str]) -> Config:
    c = Config()
    c.Courtyard.hub_port = 0
    # hubs that serve() run the real built-in proxy, on private ports, stopped with the hub
    c.Courtyard.port = free_port()
    c.BuiltinProxy.api_url = f"http://127.0.0.1:{free_port()}"
    c.BuiltinProxy.workers = 1
    c.Courtyard.cleanup_proxy = True
    c.Courtyard.allow_named_servers = True
    c.Spawner.cmd = mocksu_cmd
    c.Spawner.poll_interval = 0.2
    c.Spawner.start_timeout = 20
    c.Spawner.http_timeout = 20
    c.Spawner.environment = {"MOCKSU_MODE": _from_options("mode"),
                             "MOCKSU_GATE": _from_options("gate")}
    c.LocalProcessSpawner.term_timeout = 3
    c.LocalProcessSpawner.create_system_users = ROOT
    return c


@pytest.fixture
async def spawn_hub(hub_config: Config, spawn_config: Config
                    ) -> AsyncIterator[Callable[..., Hub]]:
    """Make hubs with the spawner set-up plus ``**options``; their servers stop at the end.

    Configs are deep-copied: ``Config.merge`` changes nested sections in place.
    """
    hubs: list[Hub] = []

    def make(config: Config | None = None, **options: Any) -> Hub:
        c = copy.deepcopy(hub_config)
        c.merge(copy.deepcopy(spawn_config))
        if config is not None:
            c.merge(copy.deepcopy(config))
        for key, value in options.items():
            c.Courtyard[key] = value
        hub = Hub(c)
        hub.initialize()
        hubs.append(hub)
        return hub

    yield make
    for hub in hubs:
        await hub.lifecycle.shutdown(stop_servers=True)
        hub.session.kw["bind"].dispose()


@pytest.fixture
def hub(spawn_hub: Callable[..., Hub]) -> Hub:
    return spawn_hub()


async def wait_until(check: Callable[[], Awaitable[bool] | bool], timeout: float = 30,
                     what: str = "condition") -> None:
    """Poll ``check`` with a short back-off: no fixed sleeps in these tests."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.01
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.2)


@asynccontextmanager
async def serving(hub: Hub, token: str = ADMIN_TOKEN) -> AsyncIterator[httpx.AsyncClient]:
    """Run ``hub.serve()`` for real (uvicorn on a free port); yield a client of its API."""
    task = asyncio.create_task(hub.serve())
    await wait_until(lambda: hub.hub_bound is not None or task.done(), what="the hub to listen")
    if task.done():
        task.result()
    assert hub.hub_bound is not None
    host, port = hub.hub_bound
    base = f"http://{host}:{port}/hub/api"
    try:
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"token {token}"},
                                     trust_env=False, timeout=30) as client:
            yield client
    finally:
        hub.shutdown_event.set()
        await task


async def sse_events(client: httpx.AsyncClient, url: str) -> list[dict[str, Any]]:
    """Read a progress stream to its end and return its events."""
    events = []
    async with client.stream("GET", url) as r:
        assert r.status_code == 200, await r.aread()
        assert r.headers["content-type"].startswith("text/event-stream")
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    return events


async def server_get(hub: Hub, user: str, server: str, path: str) -> Any:
    """GET ``path`` from a running server directly (not through a proxy)."""
    with hub.session() as db:
        from courtyard.db import queries

        row = next(s for s in queries.get_user(db, user).servers if s.name == server)  # type: ignore[union-attr]
        url = row.url
    prefix = hub.server_routespec(user, server)
    async with httpx.AsyncClient(trust_env=False) as client:
        r = await client.get(f"{url}{prefix}{path}")
    r.raise_for_status()
    return r.json()


def server_row(hub: Hub, user: str, server: str = "") -> dict[str, Any] | None:
    """A snapshot of a server's database record."""
    from courtyard.db import queries

    with hub.session() as db:
        u = queries.get_user(db, user)
        row = next((s for s in u.servers if s.name == server), None) if u else None
        if row is None:
            return None
        return {"url": row.url, "state": dict(row.state or {}), "started": row.started,
                "user_options": dict(row.user_options or {}), "id": row.id}


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# -- witnessed servers (which uids a server command ever ran as) ----------------------------
@pytest.fixture
def witness(open_dir: Path, mocksu_cmd: list[str], tmp_path: Path) -> Iterator[Path]:
    """A file every server of the test appends its uid to before it starts (any uid may)."""
    script = open_dir / "witness.py"
    if not script.exists():
        script.write_text(textwrap.dedent("""\
            import os, runpy, sys
            with open(os.environ["WITNESS"], "a") as f:
                f.write(f"{os.getuid()}\\n")
            sys.argv = sys.argv[1:]
            runpy.run_path(sys.argv[0], run_name="__main__")
            """))
        script.chmod(0o644)
    spool = open_dir / f"witness-{tmp_path.name}"
    spool.mkdir(mode=0o1777, exist_ok=True)
    spool.chmod(0o1777)
    path = spool / "uids"
    path.touch()
    path.chmod(0o666)
    yield path
    shutil.rmtree(spool, ignore_errors=True)


@pytest.fixture
def policy_hub(spawn_hub: Callable[..., Hub], witness: Path, mocksu_cmd: list[str]
               ) -> Callable[..., Hub]:
    """``policy_hub(**spawner_options)``: a hub whose servers are witnessed."""
    def make(config: Config | None = None, **options: Any) -> Hub:
        c = Config()
        c.Spawner.cmd = [mocksu_cmd[0], str(witness.parent.parent / "witness.py"),
                         *mocksu_cmd[1:]]
        c.Spawner.environment = {"WITNESS": str(witness)}
        for key, value in options.items():
            c.LocalProcessSpawner[key] = value
        if config is not None:
            c.merge(config)
        return spawn_hub(c)
    return make


def uids_run(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()]
