"""Engine and session set-up, schema checks, and the SQLite pragmas Courtyard relies on."""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import DatabaseError, SchemaOutdated
from .models import Base

log = logging.getLogger("courtyard.db")

# The Alembic head this code expects. Kept here so start-up needs no Alembic import;
# tests/test_db.py checks it against the migration scripts.
SCHEMA_REVISION = "0001"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


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
    # requests that await (spawns, streams) can hold sessions at once; one process, no threads
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 40)
    if url.get_backend_name() == "sqlite":
        kwargs.setdefault("connect_args", {"check_same_thread": False})
        if url.database in (None, "", ":memory:"):
            kwargs.pop("pool_size"), kwargs.pop("max_overflow")
        engine = create_engine(url, **kwargs)  # type: ignore[arg-type]
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        kwargs.setdefault("pool_pre_ping", True)
        try:
            engine = create_engine(url, **kwargs)  # type: ignore[arg-type]
        except ModuleNotFoundError as e:
            raise DatabaseError(
                f"db_url {shown_url(db_url)!r} needs the driver {e.name!r}: pip install 'courtyard[postgres]'"
            ) from None
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


def init_db(db_url: str, upgrade_command: str = "courtyard upgrade-db") -> sessionmaker[Session]:
    """Open the database, creating the schema when empty; refuse an out-of-date schema."""
    engine = make_engine(db_url)
    try:
        revision = current_revision(engine)
    except OperationalError as e:
        raise DatabaseError(f"cannot open database {shown_url(db_url)!r}: {e.orig}") from None
    if revision is None:
        Base.metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE IF NOT EXISTS alembic_version "
                              "(version_num VARCHAR(32) NOT NULL PRIMARY KEY)"))
            conn.execute(text("INSERT INTO alembic_version VALUES (:r)"), {"r": SCHEMA_REVISION})
    elif revision != SCHEMA_REVISION:
        raise SchemaOutdated(
            f"database schema is at revision {revision}, this Courtyard needs "
            f"{SCHEMA_REVISION}; back up the database and run: {upgrade_command}"
        )
    return sessionmaker(engine, expire_on_commit=False)


def upgrade_db(db_url: str) -> str | None:
    """Migrate to the newest schema with Alembic; a SQLite file is copied aside first.

    Returns the path of the backup, if one was made.
    """
    from alembic import command
    from alembic.config import Config

    engine = make_engine(db_url)
    backup = None
    database = engine.url.database
    if engine.url.get_backend_name() == "sqlite" and database not in (None, "", ":memory:"):
        path = Path(database)  # type: ignore[arg-type]
        if path.exists():
            backup = f"{path}.{time.strftime('%Y-%m-%d-%H%M%S')}.bak"
            # SQLite's online backup includes what still sits in the WAL file
            with sqlite3.connect(path) as src, sqlite3.connect(backup) as dst:
                src.backup(dst)
            log.info("Backed up %s to %s", path, backup)
    if current_revision(engine) is None:
        init_db(db_url)
        return backup
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", db_url.replace("%", "%%"))  # an ini-style value
    cfg.attributes["engine"] = engine
    command.upgrade(cfg, "head")
    return backup
