"""Engine and session set-up, schema checks, and the SQLite pragmas Courtyard relies on."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import ArgumentError, DatabaseError as SQLAlchemyDatabaseError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from ..errors import DatabaseError, SchemaOutdated
from ..files import owner_only
from .models import Base

log = logging.getLogger("courtyard.db")

# The Alembic head this code expects. Kept here so start-up needs no Alembic import;
# tests/test_db.py checks it against the migration scripts.
SCHEMA_REVISION = "0003"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


# a driver module missing -> what installs it
DRIVER_PACKAGES = {
    "psycopg": "pip install 'courtyard[postgres]'",
    "psycopg2": "pip install psycopg2-binary, or drop '+psycopg2' from the URL to use psycopg 3 "
                "(pip install 'courtyard[postgres]')",
}


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


# What SQLite makes beside a database: it gives each the database file's own mode
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def sqlite_file(db_url: str) -> Path | None:
    """The file of a SQLite URL (relative to the working directory, as SQLite takes it)."""
    try:
        url = make_url(db_url)
    except ArgumentError:
        return None
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:") or \
            url.query.get("uri"):
        return None
    return Path(url.database)


def secure_sqlite(db_url: str) -> None:
    """Before SQLite opens the database: its file exists and is owner-only (0600).

    SQLite creates its ``-wal``, ``-shm`` and ``-journal`` files with the database file's
    mode (not the umask's), so a 0600 database keeps them 0600 too; ones an older version
    left open (0644) are fixed now, or refused if another user owns them.
    """
    path = sqlite_file(db_url)
    if path is None:
        return
    if not path.exists():
        with contextlib.suppress(OSError):  # no such directory: SQLite says so, with the URL
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    for name in ("", *SQLITE_COMPANIONS):
        owner_only(path.with_name(path.name + name), "database file")


def shown_url(db_url: str) -> str:
    """``db_url`` as messages and logs show it: without its password."""
    try:
        return make_url(db_url).render_as_string(hide_password=True)
    except ArgumentError:
        return db_url


def make_engine(db_url: str, **kwargs: object) -> Engine:
    """Create an engine; SQLite gets WAL and foreign keys, PostgreSQL uses psycopg 3."""
    try:
        url = make_url(db_url)
    except ArgumentError as e:
        raise DatabaseError(f"db_url {db_url!r} is not a database URL: {e}") from None
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        # JupyterHub also runs on MySQL/MariaDB; Courtyard is built and tested on these two
        raise DatabaseError(
            f"db_url {shown_url(db_url)!r}: Courtyard runs on SQLite and PostgreSQL only, "
            f"not {url.get_backend_name()}; use sqlite:///FILE, or postgresql://USER@HOST/DB "
            "with pip install 'courtyard[postgres]'")
    # requests that await (spawns, streams) can hold sessions at once; one process, no threads
    if "poolclass" not in kwargs:
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 40)
    if url.get_backend_name() == "sqlite":
        kwargs.setdefault("connect_args", {"check_same_thread": False})
        if url.database in (None, "", ":memory:"):
            kwargs.pop("pool_size", None), kwargs.pop("max_overflow", None)
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        kwargs.setdefault("pool_pre_ping", True)
        try:
            engine = create_engine(url, **kwargs)
        except ModuleNotFoundError as e:
            fix = DRIVER_PACKAGES.get(e.name or "", f"pip install {e.name}")
            raise DatabaseError(
                f"db_url {shown_url(db_url)!r} needs the driver {e.name!r}: {fix}") from None
    return engine


def current_revision(engine: Engine) -> str | None:
    """The Alembic revision stamped in the database, or None for an empty database."""
    with engine.connect() as conn:
        names = set(inspect(conn).get_table_names())
        if "alembic_version" not in names:
            if names & {"users", "api_tokens"}:
                raise DatabaseError(
                    f"{engine.url.render_as_string(hide_password=True)} holds tables but no "
                    "Courtyard schema version; it is not a Courtyard database "
                    "(a JupyterHub database? point db_url at a new file)"
                )
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def init_db(db_url: str, upgrade_command: str = "courtyard upgrade-db",
            earlier_run: Path | None = None) -> sessionmaker[Session]:
    """Open the database, creating the schema when empty; refuse an out-of-date schema, a
    corrupt or read-only database (now, not at the first write), and an empty SQLite file
    where ``earlier_run`` (a file a previous hub left) shows there was data."""
    check_sqlite_file(db_url, earlier_run)
    secure_sqlite(db_url)
    engine = make_engine(db_url)
    try:
        revision = current_revision(engine)
        if revision is None:
            Base.metadata.create_all(engine)
            with engine.begin() as conn:
                conn.execute(text("CREATE TABLE IF NOT EXISTS alembic_version "
                                  "(version_num VARCHAR(32) NOT NULL PRIMARY KEY)"))
                conn.execute(text("INSERT INTO alembic_version VALUES (:r)"),
                             {"r": SCHEMA_REVISION})
        elif revision != SCHEMA_REVISION:
            raise SchemaOutdated(
                f"database schema is at revision {revision}, this Courtyard needs "
                f"{SCHEMA_REVISION}; back up the database and run: {upgrade_command}"
            )
        check_writable(engine)
    except SQLAlchemyDatabaseError as e:
        engine.dispose()
        raise DatabaseError(database_failure(db_url, e)) from None
    except DatabaseError:
        engine.dispose()
        raise
    return sessionmaker(engine, expire_on_commit=False)


def check_sqlite_file(db_url: str, earlier_run: Path | None) -> None:
    """Before SQLite opens it: an empty file where an earlier run kept data is refused (SQLite
    would make a new database in it without a word), and one the hub's user cannot write,
    or whose directory it cannot write (SQLite puts its -wal and -shm there), is named."""
    path = sqlite_file(db_url)
    if path is None or not path.is_file():
        return
    if path.stat().st_size == 0:
        if earlier_run is not None:
            raise DatabaseError(
                f"database file {path} is empty (0 bytes), but {earlier_run} shows a hub ran "
                "here before: its data is gone (truncated or replaced); restore it from a "
                "backup, or to start over with a new, empty database: courtyard serve --init-db")
        log.warning("Database file %s is empty: making a new database in it", path)
    for where, what in ((path, "database file"), (path.parent, "directory of the database")):
        if not os.access(where, os.R_OK | os.W_OK):
            raise DatabaseError(f"{what} {where} is not writable by the hub's user "
                                f"({_user()}): the hub writes at every sign-in and spawn; "
                                "check its owner and mode, chattr -i, or a read-only mount")


def check_writable(engine: Engine) -> None:
    """A write rolled back, so a read-only database (a file root cannot write either, a
    read-only mount, a PostgreSQL standby or read-only default) shows at start-up."""
    with engine.connect() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = version_num"))
        conn.rollback()


# What SQLite and PostgreSQL say, and what the operator should do about it
_FAILURES = (
    (("readonly", "read-only"), "is read-only ({error}): the hub writes at every sign-in and "
     "spawn; make it writable (file mode, chattr -i, a read-write mount or primary server)"),
    (("file is not a database", "malformed", "not a database"),
     "is corrupt or not a SQLite database ({error}); restore it from a backup "
     "(courtyard upgrade-db leaves one beside it as FILE.DATE.bak)"),
)


def database_failure(db_url: str | None, error: SQLAlchemyDatabaseError) -> str:
    """One line for a database that cannot be used: what is wrong, and what to do."""
    reason = str(error.orig or error).strip().splitlines()[0]
    name = f"database {shown_url(db_url)!r}" if db_url else "the database"
    for needles, advice in _FAILURES:
        if any(needle in reason.lower() for needle in needles):
            return f"{name} " + advice.format(error=reason)
    return f"cannot open {name}: {reason}" if db_url else f"the database failed: {reason}"


def database_error_line(error: Exception) -> str | None:
    """The CLI's one line for a database failure past start-up's own checks (a page corrupt
    deep in the file, the server gone mid-start), or None for any other error."""
    if not isinstance(error, SQLAlchemyDatabaseError):
        return None
    return database_failure(None, error)


def _user() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _new_private_file(stem: str, suffix: str) -> str:
    """A new, empty 0600 file ``stem[-N]suffix``: a backup is owner-only like the database
    (SQLite then gives its -journal the same mode), and never overwrites an earlier one."""
    for n in range(1000):
        name = f"{stem}{f'-{n}' if n else ''}{suffix}"
        try:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            continue
        return name
    raise DatabaseError(f"cannot make a backup file next to {stem}: too many exist")


def upgrade_db(db_url: str) -> str | None:
    """Migrate to the newest schema with Alembic; a SQLite file is copied aside first.

    Returns the path of the backup, if one was made.
    """
    from alembic import command
    from alembic.config import Config

    path = sqlite_file(db_url)
    existed = path is not None and path.exists()
    secure_sqlite(db_url)
    engine = make_engine(db_url)
    backup = None
    if path is not None and existed:
        backup = _new_private_file(f"{path}.{time.strftime('%Y-%m-%d-%H%M%S')}", ".bak")
        # SQLite's online backup includes what still sits in the WAL file
        with sqlite3.connect(path) as src, sqlite3.connect(backup) as dst:
            src.backup(dst)
        log.info("Backed up %s to %s", path, backup)
    if current_revision(engine) is None:
        init_db(db_url)
        return backup
    alembic_config = Config()
    alembic_config.set_main_option("script_location", str(MIGRATIONS_DIR))
    alembic_config.set_main_option("sqlalchemy.url", db_url.replace("%", "%%"))  # an ini-style value
    alembic_config.attributes["engine"] = engine
    command.upgrade(alembic_config, "head")
    return backup
