"""The database cannot take writes while servers stop and start: nothing is left stuck, the
API never reports success for work that did not happen, and the outage is logged with its
cause (issue 14, item 2).

The faults are real: the hub's SQLite file lives on a small tmpfs that the test fills to the
last byte (a full disk), then frees; with ``--db=postgresql``, the hub's own PostgreSQL
server is stopped with ``pg_ctl stop`` while servers stop, then started again.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from traitlets.config import Config

from courtyard.app import Hub
from tests.conftest import PG_BIN, free_port, tool_missing
from tests.spawners.conftest import ROOT, alive, server_get, server_row, serving, wait_until

OUTAGE_LOGGED = "cannot take the server lifecycle's writes"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MB tmpfs, unmounted at the end."""
    if not ROOT:
        tool_missing("mounting a tmpfs needs root")
    path = tmp_path / "disk"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(path)],
                   check=True)
    yield path
    subprocess.run(["umount", "--lazy", str(path)], check=False)


def fill(disk: Path) -> Path:
    """Write zeros until the disk is full; the file to delete to free it."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as f:
        for size in (65536, 512):  # then the last partial block
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                pass
    return filler


async def token_status(hub: Hub, token: str) -> int:
    host, port = hub.hub_bound
    async with httpx.AsyncClient(trust_env=False) as client:
        r = await client.get(f"http://{host}:{port}/hub/api/user",
                             headers={"Authorization": f"token {token}"})
    return r.status_code


async def test_full_disk_during_stop_and_start(spawn_hub, uname, small_disk, caplog):
    caplog.set_level(logging.INFO, logger="courtyard.lifecycle")
    c = Config()
    c.Courtyard.db_url = f"sqlite:///{small_disk}/courtyard.sqlite"
    hub = spawn_hub(c)
    alice, bob, carol, dave = uname("alice"), uname("bob"), uname("carol"), uname("dave")
    async with serving(hub) as api:
        assert (await api.post("/users", json={"usernames": [alice, bob, carol, dave]})
                ).status_code == 201
        for name in (alice, bob, carol):
            assert (await api.post(f"/users/{name}/server")).status_code == 201
        assert (await api.delete(f"/users/{carol}/server")).status_code == 204
        pids = {n: server_row(hub, n)["state"]["pid"] for n in (alice, bob)}
        tokens = {n: (await server_get(hub, n, "", "env"))["JUPYTERHUB_API_TOKEN"]
                  for n in (alice, bob)}
        assert all([await token_status(hub, t) == 200 for t in tokens.values()])

        filler = fill(small_disk)
        hub.options.slow_spawn_timeout = 1  # what cannot finish is not waited for
        for name in (alice, bob):
            # the process is stopped, but the hub cannot record it yet: not 204
            assert (await api.delete(f"/users/{name}/server")).status_code == 202
        await wait_until(lambda: not any(alive(p) for p in pids.values()), what="the stops")
        for name in (alice, bob):
            assert (await api.get(f"/users/{name}")).json()["servers"][""]["pending"] == "stop"
            r = await api.post(f"/users/{name}/server")
            assert r.status_code == 400 and "pending stop" in r.json()["message"]
        # a start: its credentials cannot be written yet, so it waits
        assert (await api.post(f"/users/{carol}/server")).status_code == 202
        assert OUTAGE_LOGGED in caplog.text
        assert (await api.get(f"/users/{carol}")).json()["servers"][""]["pending"] == "spawn"
        # a first server: the request's own row cannot be written: 503, to be tried again,
        # logged in one line (not an internal error with a traceback)
        r = await api.post(f"/users/{dave}/server")
        assert (r.status_code, r.json()["status"], r.headers["Retry-After"]) == (503, 503, "5")
        assert "try again" in r.json()["message"] and "Traceback" not in caplog.text

        filler.unlink()  # the disk has room again: every waiting write goes through
        await wait_until(lambda: all(hub.lifecycle.pending(n, "") is None
                                     for n in (alice, bob, carol)), what="the writes")
        for name in (alice, bob):
            assert server_row(hub, name)["url"] is None
            assert server_row(hub, name)["state"] == {}
            assert await token_status(hub, tokens[name]) == 403
            assert (await api.get(f"/users/{name}")).json()["servers"] == {}
        assert server_row(hub, carol)["url"] is not None
        # and they start again, one process each
        hub.options.slow_spawn_timeout = 10
        for name in (alice, bob):
            assert (await api.post(f"/users/{name}/server")).status_code == 201
            assert server_row(hub, name)["state"]["pid"] != pids[name]
            assert await token_status(hub, tokens[name]) == 403
    log = caplog.text
    assert OUTAGE_LOGGED in log
    assert "database or disk is full" in log
    assert "takes writes again" in log
    assert not any(os.path.exists(f"/proc/{p}") and alive(p) for p in pids.values())


async def test_shutdown_during_an_outage_ends(spawn_hub, uname, small_disk, caplog):
    """A hub asked to shut down while its database takes no writes waits for it a while
    (CLOSING_PATIENCE), then exits; the next hub start cleans up what was not recorded."""
    c = Config()
    c.Courtyard.db_url = f"sqlite:///{small_disk}/courtyard.sqlite"
    hub = spawn_hub(c)
    alice = uname("alice")
    async with serving(hub) as api:
        assert (await api.post("/users", json={"usernames": [alice]})).status_code == 201
        assert (await api.post(f"/users/{alice}/server")).status_code == 201
        pid = server_row(hub, alice)["state"]["pid"]
        filler = fill(small_disk)
        hub.options.slow_spawn_timeout = 1  # the stop is not waited for
        assert (await api.delete(f"/users/{alice}/server")).status_code == 202
        await wait_until(lambda: OUTAGE_LOGGED in caplog.text, what="the failed write logged")
    # serving() ended with the hub's shutdown: it did not wait for the disk
    assert "write(s) dropped" in caplog.text and not alive(pid)
    filler.unlink()
    assert server_row(hub, alice)["url"] is not None  # not recorded: the next start's work
    second = spawn_hub(c)
    async with serving(second) as api:
        await wait_until(lambda: second.lifecycle.recovered.is_set(), what="recovery")
        assert (await api.get(f"/users/{alice}")).json()["servers"] == {}


class Postgres:
    """A PostgreSQL server of this test's own (stopping the session's would disturb others)."""

    def __init__(self) -> None:
        if not (PG_BIN / "initdb").exists():
            tool_missing("PostgreSQL 15 is not installed (apt-get install postgresql)")
        self.runner: list[str] = []
        self.base = Path(tempfile.mkdtemp(prefix="courtyard-pg-outage-"))
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                tool_missing("no postgres system user")
            self.runner = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.base, "postgres", "postgres")
        self.data, self.port = self.base / "data", free_port()
        self.pg_ctl([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "hub", "--auth=trust",
                     "--no-sync"])
        self.start()
        self.url = f"postgresql://hub@127.0.0.1:{self.port}/postgres"

    def pg_ctl(self, args: list[str]) -> None:
        subprocess.run([*self.runner, *args], check=True, capture_output=True)

    def start(self) -> None:
        self.pg_ctl([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.base / "log"),
                     "-w", "-o", f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 "
                     "-c fsync=off", "start"])

    def stop(self) -> None:
        self.pg_ctl([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def remove(self) -> None:
        subprocess.run([*self.runner, str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m",
                        "immediate", "stop"], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def own_postgres() -> Iterator[Postgres]:
    """A PostgreSQL server of this test's own, whatever ``--db`` says: it is stopped and
    started again under the hub, which the session's shared server must not be."""
    server = Postgres()
    yield server
    server.remove()


async def test_postgresql_down_while_servers_stop(spawn_hub, uname, own_postgres, caplog):
    """The stops are under way (servers that ignore SIGTERM take term_timeout to die) when
    PostgreSQL goes down; they finish once it is back, as the API said (202)."""
    caplog.set_level(logging.INFO, logger="courtyard.lifecycle")
    c = Config()
    c.Courtyard.db_url = own_postgres.url
    hub = spawn_hub(c)
    names = [uname("alice"), uname("bob")]
    async with serving(hub) as api:
        assert (await api.post("/users", json={"usernames": names})).status_code == 201
        for name in names:
            r = await api.post(f"/users/{name}/server", json={"mode": "ignore-term"})
            assert r.status_code == 201
        pids = {n: server_row(hub, n)["state"]["pid"] for n in names}
        tokens = {n: (await server_get(hub, n, "", "env"))["JUPYTERHUB_API_TOKEN"]
                  for n in names}
        hub.options.slow_spawn_timeout = 1
        for name in names:  # SIGTERM is ignored: they take term_timeout (3 s) to stop
            assert (await api.delete(f"/users/{name}/server")).status_code == 202
        own_postgres.stop()
        await wait_until(lambda: not any(alive(p) for p in pids.values()), what="the stops")
        await wait_until(lambda: OUTAGE_LOGGED in caplog.text, what="the failed write logged")
        assert all(hub.lifecycle.pending(n, "") == "stop" for n in names)

        own_postgres.start()
        await wait_until(lambda: all(hub.lifecycle.pending(n, "") is None for n in names),
                         what="the writes")
        hub.options.slow_spawn_timeout = 10
        for name in names:
            assert server_row(hub, name)["url"] is None
            assert await token_status(hub, tokens[name]) == 403
            assert (await api.get(f"/users/{name}")).json()["servers"] == {}
            assert (await api.post(f"/users/{name}/server")).status_code == 201
    log = caplog.text
    assert OUTAGE_LOGGED in log
    assert "Connection refused" in log or "connection failed" in log
    assert "takes writes again" in log
