"""Database files an operator's worst day brings: corrupt, emptied, read-only, and a URL of
a database Courtyard does not run on (issue 14, item 5). Each is found when ``courtyard
serve`` starts and reported on one line with status 1, never as a traceback, and never
papered over with a new database."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from courtyard.db.session import init_db
from tests.conftest import raw_sql, tool_missing


def earlier_run(hubs, directory: Path, db_url: str) -> Path:
    """A hub's data directory after a real run: its database holds the admin, and its
    cookie secret is there; the database file."""
    hubs(directory, db_url).serving().stop()
    assert raw_sql(db_url, "SELECT name FROM users") == "admin"
    assert (directory / "courtyard_cookie_secret").exists()
    return directory / "data.sqlite"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    # SQLite's own files, whatever --db says: garbage, truncation and file modes are theirs
    return f"sqlite:///{tmp_path}/hub/data.sqlite"


def test_corrupt_file_is_one_line(hubs, tmp_path, sqlite_url):
    path = earlier_run(hubs, tmp_path / "hub", sqlite_url)
    size = path.stat().st_size
    with path.open("r+b") as f:  # the schema page is intact, the rows are garbage
        f.seek(4096)
        f.write(os.urandom(size - 4096))
    line = hubs(tmp_path / "hub", sqlite_url).refused()
    assert "data.sqlite' is corrupt or not a SQLite database (database disk image is " \
           "malformed); restore it from a backup" in line
    path.write_bytes(os.urandom(size))  # garbage from the first byte
    line = hubs(tmp_path / "hub", sqlite_url).refused()
    assert "is corrupt or not a SQLite database (file is not a database)" in line
    assert path.stat().st_size == size  # left as it was found, for whoever examines it


def test_empty_file_where_data_was_is_refused_without_init_db(hubs, tmp_path, sqlite_url):
    path = earlier_run(hubs, tmp_path / "hub", sqlite_url)
    path.write_bytes(b"")  # truncated: a full disk, a bad copy, a stray `>`
    line = hubs(tmp_path / "hub", sqlite_url).refused()
    assert f"database file {path} is empty (0 bytes), but " \
           f"{tmp_path / 'hub' / 'courtyard_cookie_secret'} shows a hub ran here before" in line
    assert "courtyard serve --init-db" in line
    assert path.stat().st_size == 0  # nothing was created over it
    hub = hubs(tmp_path / "hub", sqlite_url, "--init-db").serving()  # asked for: a new one
    assert hub.users() == ["admin"]
    hub.stop()


def test_empty_file_in_a_new_data_directory_becomes_the_database(hubs, tmp_path, sqlite_url):
    """A file made empty on purpose before the first start (as for a container volume)."""
    (tmp_path / "hub").mkdir(mode=0o700)
    (tmp_path / "hub" / "data.sqlite").write_bytes(b"")
    hub = hubs(tmp_path / "hub", sqlite_url).serving()
    assert hub.users() == ["admin"]
    hub.stop()
    assert "Database file" in hub.log.read_text() and "is empty: making a new database" in \
        hub.log.read_text()


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[list[Path]]:
    """Files made read-only for the hub's user, root included (the immutable flag), and
    made writable again at the end."""
    made: list[Path] = []
    yield made
    for path in made:
        subprocess.run(["chattr", "-i", str(path)], check=False, capture_output=True)


def make_read_only(path: Path, made: list[Path]) -> None:
    if os.geteuid() != 0:
        path.chmod(0o400)
        return
    r = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        tool_missing(f"chattr +i does not work here: {r.stderr.strip()}")
    made.append(path)


def test_read_only_database_is_found_at_start(hubs, tmp_path, db_url, databases, read_only):
    """Not at the first sign-in: at start, before anything is served."""
    init_db(db_url).kw["bind"].dispose()
    if databases.kind == "sqlite":
        path = Path(db_url.removeprefix("sqlite:///"))
        make_read_only(path, read_only)
        line = hubs(tmp_path / "hub", db_url).refused()
        assert f"database file {path} is not writable by the hub's user" in line
    else:  # a standby, or a database set read-only: PostgreSQL says so at the first write
        name = db_url.rsplit("/", 1)[1]
        raw_sql(db_url, f"ALTER DATABASE {name} SET default_transaction_read_only = on")
        line = hubs(tmp_path / "hub", db_url).refused()
        assert f"/{name}' is read-only (cannot execute UPDATE in a read-only transaction)" in line


def test_unsupported_database_is_named(tmp_path):
    """JupyterHub runs on MySQL too; Courtyard says it does not, rather than name a driver."""
    for url, shown in (("mysql://hub@127.0.0.1/hub", "mysql://hub@127.0.0.1/hub"),
                       ("mysql+pymysql://hub:pw@127.0.0.1/hub",
                        "mysql+pymysql://hub:***@127.0.0.1/hub")):
        r = subprocess.run([sys.executable, "-m", "courtyard", "serve", "--db", url],
                           cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.strip().splitlines()[-1] == (
            f"courtyard: error: db_url '{shown}': Courtyard runs on "
            "SQLite and PostgreSQL only, not mysql; use sqlite:///FILE, or "
            "postgresql://USER@HOST/DB with pip install 'courtyard[postgres]'")
