"""Two hubs on one database: the second is refused with one line naming the first, and a
hub killed with SIGKILL is replaced at once (issue 14, item 3). Real ``courtyard serve``
processes, each in its own directory with its own ports, on the run's kind of database."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import raw_sql


@pytest.fixture
def serve(hubs: Any, tmp_path: Path, db_url: str) -> Any:
    """``serve(name, *args)``: a ``courtyard serve`` in ``tmp_path/name`` on the test's
    database."""
    return lambda name, *args: hubs(tmp_path / name, db_url, *args)


def test_second_hub_is_refused_naming_the_first(serve, db_url, tmp_path):
    first = serve("first").serving()
    line = serve("second").refused()
    assert f"is in use by the hub with pid {first.proc.pid} on {socket.gethostname()} at " \
           f"{first.url}, running since " in line
    assert "stop that hub first" in line
    assert first.users() == ["admin"]  # the first serves on, untouched
    # commands that only use the database are no hubs: they work while it runs
    cli = [sys.executable, "-m", "courtyard"]
    token = subprocess.run([*cli, "token", "admin"], cwd=first.dir, capture_output=True,
                           text=True, timeout=60)
    assert token.returncode == 0 and len(token.stdout.strip()) == 32, token.stderr
    upgrade = subprocess.run([*cli, "upgrade-db"], cwd=first.dir, capture_output=True,
                             text=True, timeout=60)
    assert upgrade.returncode == 0 and "is up to date" in upgrade.stdout, upgrade.stderr
    assert raw_sql(db_url, "SELECT count(*) FROM hub_leases") == 1


def test_hub_killed_with_sigkill_is_replaced_at_once(serve, db_url):
    """No waiting for the lease to expire: on SQLite its process is seen to be gone, on
    PostgreSQL its advisory lock went with its connection."""
    first = serve("first").serving()
    first.stop(signal.SIGKILL)
    second = serve("second").serving()
    assert second.users() == ["admin"]
    assert raw_sql(db_url, "SELECT pid FROM hub_leases") == second.proc.pid
    second.stop()  # a clean stop gives the database up
    assert raw_sql(db_url, "SELECT count(*) FROM hub_leases") == 0


def test_lease_of_a_hub_on_another_machine(serve, db_url, databases):
    """A lease row from a hub elsewhere: on SQLite it holds until it expires; on PostgreSQL
    only the advisory lock counts, and a row without it is left over from a dead hub."""
    serve("setup").serving().stop()  # the schema, on either kind of database
    raw_sql(db_url, "INSERT INTO hub_leases (id, mode, host, machine, pid, pid_start, url, "
                    "started, renewed, expires) VALUES ('elsewhere', 'exclusive', "
                    "'hub2.example.org', 'another-boot/pid:[1]', 4242, '77', "
                    "'https://hub2.example.org/', '2026-01-02 03:04:05', CURRENT_TIMESTAMP, "
                    "'2999-01-01 00:00:00')")
    if databases.kind == "sqlite":
        line = serve("here").refused()
        assert "the hub with pid 4242 on hub2.example.org at https://hub2.example.org/, " \
               "running since 2026-01-02 03:04:05 UTC" in line
        raw_sql(db_url, "UPDATE hub_leases SET expires = '2001-01-01 00:00:00'")
    hub = serve("after").serving()
    assert raw_sql(db_url, "SELECT host FROM hub_leases") == socket.gethostname()
    assert "Taking over the database from the hub with pid 4242 on hub2.example.org" in \
        hub.log.read_text()


def test_hub_whose_lease_was_taken_stops(serve, db_url):
    """A hub that stalled past its lease and was taken over (here: its row replaced, as a
    hub on another machine would) stops at its next renewal, with status 1, rather than run
    on beside the new holder."""
    first = serve("first").serving()
    raw_sql(db_url, "UPDATE hub_leases SET id = 'newer', host = 'hub2.example.org', "
                    "machine = 'another-boot/pid:[1]', pid = 4242")
    assert first.proc.wait(60) == 1
    output = first.log.read_text()
    assert "Another hub has taken over database" in output and "Traceback" not in output
    assert output.splitlines()[-1].startswith("courtyard: error: another hub took over the "
                                              "database while this one stalled")
    assert raw_sql(db_url, "SELECT id FROM hub_leases") == "newer"  # its row, left alone
