"""Shared fixtures: a hub per test on SQLite or a real PostgreSQL, and API clients."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from traitlets.config import Config

from courtyard.app import Hub

ADMIN_TOKEN = "admin-secret-token"
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tool_missing(reason: str) -> None:
    """Skip only where the tool cannot exist; under CI a missing tool is a failure."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must provide it)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A real PostgreSQL on a free loopback port, for the whole session; yields a base URL."""
    if not (PG_BIN / "initdb").exists():
        tool_missing("PostgreSQL 15 is not installed (apt-get install postgresql)")
    runner: list[str] = []
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            tool_missing("no postgres system user")
        runner = ["runuser", "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix="courtyard-pg-"))
    if runner:
        shutil.chown(base, "postgres", "postgres")
    data, port = base / "data", free_port()
    subprocess.run([*runner, str(PG_BIN / "initdb"), "-D", str(data), "-U", "hub",
                    "--auth=trust", "-E", "UTF8", "--no-sync"], check=True,
                   capture_output=True)
    subprocess.run([*runner, str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(base / "log"),
                    "-w", "-o", f"-p {port} -k {base} -c listen_addresses=127.0.0.1 "
                    "-c fsync=off -c max_connections=200", "start"], check=True,
                   capture_output=True)
    try:
        yield f"postgresql://hub@127.0.0.1:{port}"
    finally:
        subprocess.run([*runner, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a new database on the real PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/courtyard.sqlite"
        return
    import psycopg

    base = request.getfixturevalue("postgres_server")
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield f"{base}/{name}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def hub_config(db_url: str, tmp_path: Path) -> Config:
    c = Config()
    c.Courtyard.db_url = db_url
    c.Courtyard.data_files_path = str(tmp_path)
    c.Courtyard.api_tokens = {ADMIN_TOKEN: "admin"}
    c.Authenticator.admin_users = {"admin"}
    c.Courtyard.authenticator_class = "dummy"
    return c


@pytest.fixture
def make_hub(hub_config: Config) -> Iterator[Callable[..., Hub]]:
    """Build and initialize hubs on the test's database; extra keyword args are options."""
    hubs: list[Hub] = []

    def make(config: Config | None = None, **options: Any) -> Hub:
        c = Config(hub_config)
        if config is not None:
            c.merge(config)
        for key, value in options.items():
            c.Courtyard[key] = value
        hub = Hub(c)
        hub.initialize()
        hubs.append(hub)
        return hub

    yield make
    for hub in hubs:
        hub.session.kw["bind"].dispose()


@pytest.fixture
def hub(make_hub: Callable[..., Hub]) -> Hub:
    return make_hub()


def client_for(hub: Hub, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"token {token}"} if token else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=hub.asgi),
                             base_url="http://127.0.0.1:8081/hub/api", headers=headers)


@pytest.fixture
async def api(hub: Hub) -> AsyncIterator[httpx.AsyncClient]:
    """An API client holding the admin's config token."""
    async with client_for(hub, ADMIN_TOKEN) as client:
        yield client


@pytest.fixture
def client() -> Callable[..., httpx.AsyncClient]:
    return client_for


async def new_token(api: httpx.AsyncClient, user: str, **body: Any) -> str:
    """Create ``user`` if needed and return a fresh token of theirs with ``body`` options."""
    await api.post(f"/users/{user}")
    r = await api.post(f"/users/{user}/tokens", json=body)
    assert r.status_code == 201, r.text
    return r.json()["token"]
