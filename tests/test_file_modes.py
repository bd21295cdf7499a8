"""Owner-only files (issue 12, finding 4): the database and its -wal/-shm files, the data
directory, the logs, and backups, checked with real files after real writes.

Another local user who could read the SQLite database would have every password and token
hash. The SQLite tests name their own database whatever ``--db`` says: these are the modes
of SQLite's files (the data directory and logs tests take the run's database).
"""

from __future__ import annotations

import logging
import os
import pwd
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from courtyard.db.session import upgrade_db
from courtyard.errors import ConfigError
from tests.conftest import ADMIN_TOKEN, client_for
from tests.spawners.conftest import (  # noqa: F401 - fixtures
    _made_names,
    mocksu_cmd,
    open_dir,
    spawn_config,
    spawn_hub,
    uname,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def sqlite_files(path: Path) -> list[Path]:
    return [p for p in (path, *(Path(f"{path}{s}") for s in ("-wal", "-shm", "-journal")))
            if p.exists()]


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """The umask most systems run with (0022), which made these files 0644 before."""
    old = os.umask(0o022)
    yield
    os.umask(old)


async def test_database_files_are_owner_only_after_writes(make_hub, tmp_path):
    path = tmp_path / "hub.sqlite"
    hub = make_hub(db_url=f"sqlite:///{path}")
    async with client_for(hub, ADMIN_TOKEN) as api:  # real writes, through the API
        for name in ("alice", "bob"):
            assert (await api.post(f"/users/{name}")).status_code == 201
            assert (await api.post(f"/users/{name}/tokens", json={})).status_code == 201
        assert (await api.delete("/users/bob")).status_code == 204
    files = sqlite_files(path)
    assert {p.name for p in files} >= {"hub.sqlite", "hub.sqlite-wal", "hub.sqlite-shm"}
    assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}


def test_an_older_world_readable_database_is_made_owner_only(make_hub, tmp_path, caplog):
    """As an older Courtyard left it (0644 from the umask), with its WAL open: the hub's own
    files, so it fixes them, says so, and keeps the data."""
    path = tmp_path / "old.sqlite"
    make_hub(db_url=f"sqlite:///{path}").session.kw["bind"].dispose()
    path.chmod(0o644)
    with sqlite3.connect(path) as old:  # another connection: SQLite makes -wal, -shm 0644
        old.execute("INSERT INTO groups (name, properties) VALUES ('kept', '{}')")
        old.commit()
        assert {p.name: mode(p) for p in sqlite_files(path)} == {
            "old.sqlite": 0o644, "old.sqlite-wal": 0o644, "old.sqlite-shm": 0o644}
        with caplog.at_level(logging.WARNING, logger="courtyard"):
            hub = make_hub(db_url=f"sqlite:///{path}")
    assert {p.name: mode(p) for p in sqlite_files(path)} == {
        p.name: 0o600 for p in sqlite_files(path)}
    assert f"Database file {path} was open to other users (mode 0644)" in caplog.text
    with hub.session() as db:
        from courtyard.db import queries

        assert queries.get_group(db, "kept") is not None


def test_a_database_of_another_user_is_refused(make_hub, tmp_path):
    """Not the hub's to fix: someone shares it, on purpose or not; one line, with the fix."""
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root (CI runs as root)")
    path = tmp_path / "theirs.sqlite"
    make_hub(db_url=f"sqlite:///{path}").session.kw["bind"].dispose()
    path.chmod(0o644)
    os.chown(path, pwd.getpwnam("nobody").pw_uid, -1)
    with pytest.raises(ConfigError) as e:
        make_hub(db_url=f"sqlite:///{path}")
    message = str(e.value)
    assert "\n" not in message and f"database file {path} is open to other users" in message
    assert f"chmod 600 {path}" in message and "belongs to nobody" in message
    assert mode(path) == 0o644  # untouched


def test_upgrade_db_backup_is_owner_only(make_hub, tmp_path):
    path = tmp_path / "up.sqlite"
    make_hub(db_url=f"sqlite:///{path}").session.kw["bind"].dispose()
    path.chmod(0o644)
    backup = upgrade_db(f"sqlite:///{path}")
    assert backup is not None
    assert mode(Path(backup)) == 0o600 and mode(path) == 0o600
    again = upgrade_db(f"sqlite:///{path}")  # the same second: a new file, not the first
    assert again != backup and mode(Path(again)) == 0o600  # type: ignore[arg-type]


def test_data_directory_made_owner_only(make_hub, tmp_path):
    data = tmp_path / "srv" / "courtyard"
    make_hub(data_files_path=str(data))
    assert mode(data) == 0o700 and mode(data.parent) == 0o700
    assert mode(data / "courtyard_cookie_secret") == 0o600


def test_open_data_directory_warns_and_old_logs_directory_is_fixed(make_hub, tmp_path, caplog):
    data = tmp_path / "data"
    (data / "logs" / "alice").mkdir(parents=True)
    data.chmod(0o755)
    (data / "logs").chmod(0o755)  # what mkdir(parents=True) gave it before
    with caplog.at_level(logging.WARNING, logger="courtyard"):
        make_hub(data_files_path=str(data))
    assert mode(data / "logs") == 0o700
    assert f"run: chmod 700 {data}" in caplog.text
    assert mode(data) == 0o755  # the admin's directory (the working directory by default)


async def test_server_logs_are_owner_only_and_still_readable(
        spawn_hub, uname, tmp_path):  # noqa: F811 - the spawner tests' fixtures, imported
    """A real server: its log under <data>/logs/<user>/ is the hub's alone, and the hub
    still reads it back for the logs API."""
    data = tmp_path / "spawn-data"
    hub = spawn_hub(data_files_path=str(data))
    alice = uname("alice")
    async with client_for(hub, ADMIN_TOKEN) as api:
        await api.post(f"/users/{alice}")
        assert (await api.post(f"/users/{alice}/server")).status_code == 201
        logs = await api.get(f"/users/{alice}/server/logs")
        assert logs.status_code == 200
        assert (await api.delete(f"/users/{alice}/server")).status_code == 204
    log_dir = data / "logs"
    user_dir = next(log_dir.iterdir())
    assert mode(data) == 0o700 and mode(log_dir) == 0o700 and mode(user_dir) == 0o700
    assert {f.name: mode(f) for f in user_dir.iterdir()} == {"_default.log": 0o600}
