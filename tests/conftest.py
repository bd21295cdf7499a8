"""Shared fixtures: a hub per test on a fresh database, and API clients.

The whole run uses one kind of database, chosen with ``--db=sqlite`` (the default) or
``--db=postgresql`` (or ``COURTYARD_TEST_DB``): every hub a test makes, in this process or
as a ``courtyard serve`` process, gets its own new database from the ``db_url`` /
``new_db_url`` fixtures; under PostgreSQL that is a new database on one real server the
session starts, dropped after the test.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.pool import NullPool
from traitlets.config import Config

from courtyard.app import Hub
from tests.ports import free_port, free_ports  # noqa: F401 (imported from here by many tests)

ADMIN_TOKEN = "admin-secret-token"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
DATABASES = ("sqlite", "postgresql")




def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db", choices=DATABASES, default=os.environ.get("COURTYARD_TEST_DB") or "sqlite",
        help="the database every hub of the run uses: a SQLite file (the default) or a "
             "database on a real PostgreSQL server started for the session (default from "
             "$COURTYARD_TEST_DB)")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--db") not in DATABASES:
        raise pytest.UsageError(f"--db / COURTYARD_TEST_DB must be one of {DATABASES}")


def pytest_report_header(config: pytest.Config) -> str:
    return f"database: {config.getoption('--db')}"


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
                    # not UTC, as many servers are not: stored times must not depend on it
                    "-c fsync=off -c max_connections=200 -c TimeZone=Asia/Kathmandu", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql://hub@127.0.0.1:{port}"
    finally:
        subprocess.run([*runner, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


class Databases:
    """Fresh, empty databases of the kind the run tests (``--db``): SQLite files, or new
    databases (``CREATE DATABASE``) on the session's one real PostgreSQL server."""

    def __init__(self, kind: str, postgres: str | None = None) -> None:
        self.kind, self.postgres = kind, postgres

    def new(self, directory: Path, label: str = "courtyard") -> str:
        if self.kind == "sqlite":
            return f"sqlite:///{directory}/{label}.sqlite"
        import psycopg

        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(f"{self.postgres}/postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"{self.postgres}/{name}"

    def drop(self, url: str) -> None:
        """Remove a database made by ``new`` (SQLite files go with their directory)."""
        if self.kind == "sqlite":
            return
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(f"{self.postgres}/postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def databases(request: pytest.FixtureRequest) -> Databases:
    kind = request.config.getoption("--db")
    if kind == "sqlite":
        return Databases(kind)
    return Databases(kind, request.getfixturevalue("postgres_server"))


@pytest.fixture
def new_db_url(databases: Databases, tmp_path: Path) -> Iterator[Callable[..., str]]:
    """``new_db_url()``: another fresh database for this test, dropped after it (``label``
    names a SQLite file)."""
    made: list[str] = []

    def new(label: str = "courtyard") -> str:
        url = databases.new(tmp_path, f"{label}{len(made)}" if made else label)
        made.append(url)
        return url

    yield new
    for url in made:
        databases.drop(url)


@pytest.fixture
def db_url(new_db_url: Callable[..., str]) -> str:
    """This test's fresh, empty database, of the kind chosen with ``--db``."""
    return new_db_url()


def raw_sql(db_url: str, sql: str) -> Any:
    """Run ``sql`` past the hub, straight on its database, and commit; the first column of
    the first row, if it returns rows (what is stored, in place of the hub's view of it)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(db_url)
    if url.get_backend_name() == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(sql))
            return result.scalar() if result.returns_rows else None
    finally:
        engine.dispose()


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
