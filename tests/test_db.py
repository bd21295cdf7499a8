"""Database: schema creation, revision checks, Alembic migrations, PostgreSQL."""

from __future__ import annotations

import sqlite3

import pytest
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from sqlalchemy import text

from courtyard.db.session import (
    MIGRATIONS_DIR,
    SCHEMA_REVISION,
    init_db,
    make_engine,
    upgrade_db,
)
from courtyard.errors import DatabaseError, SchemaOutdated


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
    engine = make_engine(f"sqlite:///{tmp_path}/p.sqlite")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_old_schema_refused_with_command(tmp_path):
    url = f"sqlite:///{tmp_path}/old.sqlite"
    init_db(url)
    con = sqlite3.connect(tmp_path / "old.sqlite")
    con.execute("UPDATE alembic_version SET version_num = '0000'")
    con.commit()
    con.close()
    with pytest.raises(SchemaOutdated) as e:
        init_db(url, "courtyard upgrade-db -f my_config.py")
    assert "courtyard upgrade-db -f my_config.py" in str(e.value)


def test_foreign_database_refused(tmp_path):
    con = sqlite3.connect(tmp_path / "jh.sqlite")
    con.execute("CREATE TABLE users (id INTEGER)")
    con.commit()
    con.close()
    with pytest.raises(DatabaseError, match="not a Courtyard database"):
        init_db(f"sqlite:///{tmp_path}/jh.sqlite")


def test_upgrade_backs_up_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path}/b.sqlite"
    init_db(url)
    backup = upgrade_db(url)
    assert backup is not None and backup.startswith(str(tmp_path / "b.sqlite"))
    assert sqlite3.connect(backup).execute("SELECT version_num FROM alembic_version").fetchone()


def test_bad_urls():
    with pytest.raises(DatabaseError, match="not a database URL"):
        make_engine("nonsense")
    with pytest.raises(DatabaseError, match="cannot open"):
        init_db("sqlite:////nonexistent-dir/x/y.sqlite")
