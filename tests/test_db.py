"""Database: schema creation, revision checks, Alembic migrations, PostgreSQL."""

from __future__ import annotations

import sqlite3

import pytest
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import make_url

from courtyard.db.session import (
    MIGRATIONS_DIR,
    SCHEMA_REVISION,
    init_db,
    make_engine,
    upgrade_db,
)
from courtyard.errors import DatabaseError, SchemaOutdated
from tests.conftest import raw_sql


def test_schema_revision_is_alembic_head():
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(cfg).get_current_head() == SCHEMA_REVISION


def test_migrations_match_models(db_url):
    """The migration scripts, run from nothing, give exactly the tables of the models."""
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from courtyard.db.models import Base

    engine = make_engine(db_url)
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    command.upgrade(cfg, "head")
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    engine.dispose()
    init_db(db_url)  # a migrated database is accepted at start-up


def test_sqlite_pragmas(tmp_path):
    # SQLite only, whatever --db says: these pragmas exist for SQLite alone
    engine = make_engine(f"sqlite:///{tmp_path}/p.sqlite")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_old_schema_refused_with_command(db_url):
    init_db(db_url).kw["bind"].dispose()
    raw_sql(db_url, "UPDATE alembic_version SET version_num = '0000'")
    with pytest.raises(SchemaOutdated) as e:
        init_db(db_url, "courtyard upgrade-db -f my_config.py")
    assert "courtyard upgrade-db -f my_config.py" in str(e.value)


def test_foreign_database_refused(db_url):
    raw_sql(db_url, "CREATE TABLE users (id INTEGER)")
    with pytest.raises(DatabaseError, match="not a Courtyard database"):
        init_db(db_url)


def test_upgrade_backs_up_sqlite(tmp_path):
    # SQLite only, whatever --db says: upgrade-db copies aside SQLite files alone (a server's
    # databases are backed up with its own tools)
    url = f"sqlite:///{tmp_path}/b.sqlite"
    init_db(url)
    backup = upgrade_db(url)
    assert backup is not None and backup.startswith(str(tmp_path / "b.sqlite"))
    assert sqlite3.connect(backup).execute("SELECT version_num FROM alembic_version").fetchone()


def test_upgrade_keeps_the_data(db_url):
    assert upgrade_db(db_url) is None  # an empty database: the schema, nothing to back up
    assert raw_sql(db_url, "SELECT version_num FROM alembic_version") == SCHEMA_REVISION
    raw_sql(db_url, "INSERT INTO users (name, admin, created, cookie_id) "
                    "VALUES ('kept', false, CURRENT_TIMESTAMP, 'c0ffee')")
    upgrade_db(db_url)  # at head already: nothing changes, nothing is lost
    assert raw_sql(db_url, "SELECT name FROM users") == "kept"
    init_db(db_url).kw["bind"].dispose()


def test_upgrade_to_ids_never_reused_keeps_users_and_their_rows(db_url):
    """0002: on SQLite the users table is rebuilt with AUTOINCREMENT. Every user, id and row
    that points at them survives (rebuilding drops the old table: with foreign keys on, that
    would cascade), and the newest user's id, once deleted, is not given out again."""
    from alembic import command

    engine = make_engine(db_url)
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    command.upgrade(cfg, "0001")
    engine.dispose()
    for name in ("ann", "ben", "cat"):
        raw_sql(db_url, "INSERT INTO users (name, admin, created, cookie_id) "
                        f"VALUES ('{name}', false, CURRENT_TIMESTAMP, 'c-{name}')")
    ids = {n: raw_sql(db_url, f"SELECT id FROM users WHERE name = '{n}'")
           for n in ("ann", "ben", "cat")}
    raw_sql(db_url, "INSERT INTO servers (user_id, name, state, user_options, created) "
                    f"VALUES ({ids['cat']}, 'lab', '{{}}', '{{}}', CURRENT_TIMESTAMP)")
    upgrade_db(db_url)
    assert raw_sql(db_url, "SELECT version_num FROM alembic_version") == SCHEMA_REVISION
    assert {n: raw_sql(db_url, f"SELECT id FROM users WHERE name = '{n}'") for n in ids} == ids
    assert raw_sql(db_url, f"SELECT name FROM servers WHERE user_id = {ids['cat']}") == "lab"
    raw_sql(db_url, "DELETE FROM users WHERE name = 'cat'")  # the newest
    raw_sql(db_url, "INSERT INTO users (name, admin, created, cookie_id) "
                    "VALUES ('dan', false, CURRENT_TIMESTAMP, 'c-dan')")
    assert raw_sql(db_url, "SELECT id FROM users WHERE name = 'dan'") > ids["cat"]
    init_db(db_url).kw["bind"].dispose()


def test_bad_urls():
    with pytest.raises(DatabaseError, match="not a database URL"):
        make_engine("nonsense")
    with pytest.raises(DatabaseError, match="cannot open"):
        init_db("sqlite:////nonexistent-dir/x/y.sqlite")


def test_database_that_cannot_be_opened(db_url):
    """One clear error naming the database, and never the password in the URL."""
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        url = url.set(database="/nonexistent-dir/no_such_database.sqlite")
    else:  # the run's server, a database it does not have
        url = url.set(database="no_such_database", password="pg-secret-42")
    with pytest.raises(DatabaseError, match="cannot open") as e:
        init_db(url.render_as_string(hide_password=False))
    assert "no_such_database" in str(e.value) and "pg-secret-42" not in str(e.value)


def test_tests_take_the_run_database_from_the_fixtures():
    """Every hub the tests make gets its database from ``db_url`` / ``new_db_url`` /
    ``databases`` (tests/conftest.py), so that ``--db=postgresql`` reaches all of them. Only
    these files name a SQLite database themselves, each saying why."""
    from pathlib import Path

    tests = Path(__file__).parent
    allowed = {
        "conftest.py",  # makes the SQLite databases of the default run
        "test_db.py",  # SQLite's own pragmas and the backup upgrade-db makes of SQLite files
        "cli/test_cli.py",  # the same backup, through the command
        "test_file_modes.py",  # the modes of SQLite's own files (-wal, -shm, backups)
        "reliability/test_db_files.py",  # SQLite's own files: corrupt, emptied, read-only
        "reliability/test_db_outage.py",  # SQLite on a full disk of its own (a small tmpfs)
        "proxy/test_jupyterhub.py",  # JupyterHub's own database, not Courtyard's
        "spawners/test_local_spawner.py",  # a config that is resolved, never opened
        "singleuser/startup_timing.py",  # a timing script, not a test
        "cluster/docker/test_hub_image.py",  # the hub image's own data directory, in podman
    }
    naming = {str(p.relative_to(tests)) for p in tests.rglob("*.py")
              if "sqlite:///" in p.read_text()}
    assert naming <= allowed, f"use the db_url fixture in: {sorted(naming - allowed)}"
