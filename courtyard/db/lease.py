"""One serving hub per database: the lease ``courtyard serve`` takes before it touches anything.

Two hubs on one database each adopt and start the same servers, then disagree on who runs
what. So a hub that serves claims the database first, and a second one is refused with one
line naming the first: its host, pid, URL and since when. Commands that only open the
database (``courtyard token``, ``upgrade-db``) are not hubs and claim nothing.

The claim is a row in ``hub_leases`` (who, where, renewed until when), renewed every
``RENEW_SECONDS``. Whether its holder is alive is decided:

- on PostgreSQL, by a session advisory lock (``pg_try_advisory_lock``) the hub holds on a
  connection of its own. The server drops it when that connection closes, which a killed
  hub's does at once (a vanished host's within the TCP keepalive set on it); the row only
  names the holder for the message;
- on SQLite, by the row: on the same machine (same kernel boot and pid namespace) the
  holder is alive exactly while its process runs (pid and process start time, so a reused
  pid is not mistaken for it), so a hub killed with SIGKILL is replaced at once and a live
  one that stalls is never taken over; from another machine, until its lease expires.

A hub that finds its row gone at renewal (it stalled past its expiry and another hub took
over) stops at once and leaves the servers to the new holder. How several hubs could share
one PostgreSQL database later is in ``docs/architecture.md`` (one row per hub, ``mode``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Connection, Table, delete, insert, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from ..errors import DatabaseHeld
from .models import HubLease, utcnow
from .session import make_engine, shown_url

log = logging.getLogger("courtyard.db")

LEASE_SECONDS = 30  # how long a holder on another machine counts as alive without renewing
RENEW_SECONDS = 10
# the PostgreSQL advisory lock of "one hub holds this database" (locks are per database)
LOCK_KEY = int.from_bytes(b"Courtyrd", "big") & 0x7FFF_FFFF_FFFF_FFFF
LEASES = cast(Table, HubLease.__table__)  # declarative: always a Table


def machine_id() -> str:
    """What makes pids comparable: the kernel's boot id and our pid namespace ("" if
    unknown, and then only expiry counts)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
    return f"{boot}/{namespace}"


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), None if none runs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def describe(row: Any, now: datetime) -> str:
    """The holder as the refusal names it."""
    if row is None:
        return "another hub, still starting (its lease row is not written yet)"
    ago = max(0, int((now - row.renewed).total_seconds()))
    return (f"the hub with pid {row.pid} on {row.host} at {row.url or '(no URL)'}, running "
            f"since {row.started:%Y-%m-%d %H:%M:%S} UTC (lease renewed {ago} s ago)")


class Lease:
    """This hub's hold on its database: ``claim``, then ``keep`` renewing it, ``release``."""

    def __init__(self, db_url: str, url: str) -> None:
        self.db_url, self.url = db_url, url
        self.id = secrets.token_hex(16)
        self.host, self.machine, self.pid = socket.gethostname(), machine_id(), os.getpid()
        self.engine = make_engine(db_url, poolclass=NullPool)
        self.postgres = self.engine.dialect.name == "postgresql"
        self.lock_conn: Connection | None = None
        self.lost = False

    # -- claiming ----------------------------------------------------------------------------
    def claim(self) -> None:
        """Hold the database, or raise ``DatabaseHeld`` naming the live hub that does."""
        now = utcnow()
        if self.postgres:
            if not self._lock():
                with self.engine.connect() as conn:
                    row = conn.execute(select(LEASES).order_by(LEASES.c.renewed.desc())).first()
                raise DatabaseHeld(self._refusal(row, now))
            with self.engine.begin() as conn:  # the lock is ours: every row left is stale
                self._take_over(conn, now, list(conn.execute(select(LEASES))))
            return
        with self._sqlite_write() as conn:
            rows = list(conn.execute(select(LEASES)))
            live = [row for row in rows if self._alive(row, now)]
            if live:
                raise DatabaseHeld(self._refusal(live[0], now))
            self._take_over(conn, now, rows)

    def _refusal(self, row: Any, now: datetime) -> str:
        return (f"database {shown_url(self.db_url)} is in use by {describe(row, now)}; stop "
                "that hub first (two hubs on one database would start the same servers twice)")

    def _alive(self, row: Any, now: datetime) -> bool:
        if self.machine and row.machine == self.machine and row.host == self.host:
            started = process_start(row.pid)
            return started is not None and started == (row.pid_start or started)
        return bool(row.expires > now)

    def _take_over(self, conn: Connection, now: datetime, stale: list[Any]) -> None:
        for row in stale:
            log.warning("Taking over the database from %s, which is gone", describe(row, now))
        conn.execute(delete(LEASES))
        conn.execute(insert(LEASES).values(
            id=self.id, mode="exclusive", host=self.host, machine=self.machine, pid=self.pid,
            pid_start=process_start(self.pid) or "", url=self.url, started=now, renewed=now,
            expires=now + timedelta(seconds=LEASE_SECONDS)))

    @contextmanager
    def _sqlite_write(self) -> Iterator[Connection]:
        """A transaction that holds SQLite's write lock from its first statement, so two hubs
        starting at once cannot both read "nobody" and both take the database."""
        with self.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")  # we say BEGIN ourselves
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT")

    def _lock(self) -> bool:
        """Take the advisory lock on a connection kept for it (PostgreSQL)."""
        conn = self.engine.connect()
        conn.execution_options(isolation_level="AUTOCOMMIT")
        # the server notices a vanished client (host down, cable cut) within ~30 s, not the
        # kernel's default 2 h, and then drops the lock; on a Unix socket these do nothing
        for setting, value in (("tcp_keepalives_idle", 10), ("tcp_keepalives_interval", 5),
                               ("tcp_keepalives_count", 3), ("tcp_user_timeout", 30_000)):
            with suppress(DBAPIError):
                conn.exec_driver_sql(f"SET {setting} = {value}")
        if conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar():
            self.lock_conn = conn
            return True
        conn.close()
        return False

    # -- keeping -----------------------------------------------------------------------------
    def renew(self) -> bool:
        """Push the expiry on; False once another hub holds the database."""
        if self.postgres and not self._still_locked():
            return False
        now = utcnow()
        with self.engine.begin() as conn:
            found = conn.execute(update(LEASES).where(LEASES.c.id == self.id).values(
                renewed=now, expires=now + timedelta(seconds=LEASE_SECONDS))).rowcount
        return found == 1

    def _still_locked(self) -> bool:
        """The lock connection still stands, or a new one got the lock back (the server
        restarted); raises while the server is unreachable, which is no loss of the lock."""
        if self.lock_conn is not None:
            try:
                self.lock_conn.exec_driver_sql("SELECT 1")
                return True
            except DBAPIError:
                with suppress(DBAPIError):
                    self.lock_conn.close()
                self.lock_conn = None
        return self._lock()

    async def keep(self, on_lost: Callable[[], None]) -> None:
        """Renew until cancelled; call ``on_lost`` once another hub has taken over."""
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            try:
                held = await asyncio.to_thread(self.renew)
            except DBAPIError as e:  # the database is down: nobody else can take it either
                log.warning("Could not renew the hub's lease on the database (retrying in %d s): "
                            "%s", RENEW_SECONDS, e.orig)
                continue
            if not held:
                self.lost = True
                log.error("Another hub has taken over database %s (this hub stalled past its "
                          "lease): stopping, and leaving the servers to it",
                          shown_url(self.db_url))
                on_lost()
                return

    def release(self) -> None:
        """Give the database up (at shutdown): the next hub starts without waiting."""
        with suppress(DBAPIError), self.engine.begin() as conn:
            conn.execute(delete(LEASES).where(LEASES.c.id == self.id))
        if self.lock_conn is not None:
            with suppress(DBAPIError):
                self.lock_conn.close()  # ends the session, and with it the advisory lock
            self.lock_conn = None
        self.engine.dispose()


def claim_database(db_url: str, url: str) -> Lease:
    """Claim the database for a serving hub at ``url`` (see the module docstring)."""
    lease = Lease(db_url, url)
    try:
        lease.claim()
    except BaseException:
        lease.release()  # a lock taken before the failure; our row, if written
        raise
    return lease
