"""One ``squeue`` for every job: Courtyard answers batchspawner's job-state questions for
all the servers at once (``courtyard.compat.engines.batch.SharedQueue``) instead of one
``sudo ... squeue`` per spawner per poll, with the same answer batchspawner's own query
gives. Counted through ``sudo`` and ``squeue`` wrappers on the hub's ``PATH``."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from courtyard.compat.engines.batch import FIELDS
from tests.hubprocess import wait_for

from .engine import Slurm
from .test_slurm import hub_for, server_model, user_token, wait_ready

pytestmark = pytest.mark.cluster


def logging_wrappers(directory: Path, log: Path) -> None:
    """``sudo`` and ``squeue`` that append their arguments to ``log`` and run the real one
    (batchspawner's own query is ``sudo -E -u USER squeue ...``; sudo's secure_path then
    finds the real squeue, so it is counted by the sudo wrapper)."""
    directory.mkdir()
    log.touch()
    log.chmod(0o666)
    for tool in ("sudo", "squeue"):
        real = shutil.which(tool)
        assert real is not None
        wrapper = directory / tool
        wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "{tool} $*" >> {log}\nexec {real} "$@"\n')
        wrapper.chmod(0o755)


def test_one_squeue_answers_every_job(slurm: Slurm, slurm_users, tmp_path, db_url,
                                      monkeypatch):
    wrappers, log = tmp_path / "bin", tmp_path / "calls.log"
    logging_wrappers(wrappers, log)
    monkeypatch.setenv("PATH", f"{wrappers}:{os.environ['PATH']}")  # the hub inherits it
    # the three jobs share the node's 2 CPUs (else the third waits for one)
    hub = hub_for(slurm, tmp_path, db_url, "c.SlurmSpawner.req_options = '--oversubscribe'\n")
    try:
        tokens = {name: user_token(hub, name) for name in slurm_users}
        for name, token in tokens.items():
            r = httpx.post(f"{hub.url}/hub/api/users/{name}/server", timeout=30,
                           headers={"Authorization": f"token {token}"})
            assert r.status_code == 202, r.text
        for name in slurm_users:
            wait_ready(hub, name)
        jobs = {name: slurm.jobs(name) for name in slurm_users}
        assert all(len(j) == 1 for j in jobs.values()), jobs
        ids = sorted((j[0] for j in jobs.values()), key=int)
        # the servers are running, polled every second (poll_interval), and then stopped
        for name in slurm_users:
            assert hub.api("DELETE", f"/users/{name}/server").status_code in (202, 204)
        for name in slurm_users:
            wait_for(lambda n=name: server_model(hub, n) is None, f"{name}'s stop")
        wait_for(lambda: not any(slurm.jobs(n) for n in slurm_users), "the jobs to end")
        calls = log.read_text().splitlines()
        shared = [c for c in calls if c.startswith("squeue ") and FIELDS in c]
        own = [c for c in calls if c.startswith("sudo ") and " squeue " in c]
        # batchspawner's per-job query (start, poll and stop each ask) never ran: every
        # answer came from the shared squeue, which asked about these jobs
        assert own == [], own
        asked = {job for c in shared for job in c.split(" -j ")[1].split()[0].split(",")}
        assert asked == set(ids), (asked, ids)
    finally:
        hub.stop()


def test_questions_asked_together_share_one_squeue(slurm: Slurm, tmp_path, monkeypatch):
    """Questions asked at once get one ``squeue`` for all; a question asked while it runs
    waits for the next one (never an answer from before it was asked)."""
    from courtyard.compat.engines.batch import SharedQueue

    wrappers, log = tmp_path / "bin", tmp_path / "calls.log"
    logging_wrappers(wrappers, log)
    monkeypatch.setenv("PATH", f"{wrappers}:{os.environ['PATH']}")
    opts = ["--parsable", "--oversubscribe", "-o", "/dev/null"]
    jobs = [slurm.run("sbatch", *opts, "--hold", "--wrap", "sleep 60") for _ in range(3)]

    async def ask() -> tuple[list[Any], list[Any]]:
        queue = SharedQueue()
        first = [asyncio.ensure_future(queue.row(job)) for job in jobs]
        await asyncio.sleep(0)  # the first squeue is under way
        later = [asyncio.ensure_future(queue.row(job)) for job in jobs[:2]]
        return await asyncio.gather(*first), await asyncio.gather(*later)

    try:
        first, later = asyncio.run(ask())
        assert [row[0] for row in first] == ["PENDING"] * 3
        assert [row[0] for row in later] == ["PENDING"] * 2
        calls = [c for c in log.read_text().splitlines() if c.startswith("squeue ")]
        assert calls == [f"squeue -h -j {','.join(jobs)} -o {FIELDS}",
                         f"squeue -h -j {','.join(jobs[:2])} -o {FIELDS}"]
    finally:
        slurm.run("scancel", *jobs)


def test_queue_positions_asked_together_share_one_squeue(slurm: Slurm, tmp_path,
                                                         monkeypatch):
    """Every queued spawner's progress asks for its job's position: asked at once, one
    ``squeue -t PENDING`` answers all of them, with each job's place in Slurm's order."""
    from courtyard.compat.engines.batch import _queue_position

    wrappers, log = tmp_path / "bin", tmp_path / "calls.log"
    logging_wrappers(wrappers, log)
    monkeypatch.setenv("PATH", f"{wrappers}:{os.environ['PATH']}")
    opts = ["--parsable", "--oversubscribe", "-o", "/dev/null"]
    jobs = [slurm.run("sbatch", *opts, "--hold", "--wrap", "sleep 60") for _ in range(3)]

    async def ask() -> list[tuple[int, int]]:
        return await asyncio.gather(*(_queue_position(job) for job in reversed(jobs)))

    try:
        assert asyncio.run(ask()) == [(3, 3), (2, 3), (1, 3)]
        calls = [c for c in log.read_text().splitlines() if c.startswith("squeue ")]
        assert calls == ["squeue -h -t PENDING -o %i|%Q"]
    finally:
        slurm.run("scancel", *jobs)


def test_the_shared_answer_is_batchspawners_own(slurm: Slurm, slurm_users):
    """The shared row gives batchspawner exactly the ``job_status`` its own query prints
    (``squeue -h -j ID -o '%T %B'``), for a pending, a running and an ended job."""
    opts = ["--parsable", "--oversubscribe", "-o", "/dev/null"]
    held = slurm.run("sbatch", *opts, "--hold", "--wrap", "sleep 60")
    running = slurm.run("sbatch", *opts, "--wrap", "sleep 60")
    cancelled = slurm.run("sbatch", *opts, "--wrap", "sleep 60")
    try:
        wait_for(lambda: slurm.state(running) == "RUNNING", "the job to run")
        slurm.run("scancel", cancelled)
        wait_for(lambda: cancelled not in slurm.jobs(), "the job to end")
        shared = slurm.run("squeue", "-h", "-j", f"{held},{running},{cancelled}",
                           "-o", FIELDS).splitlines()
        for job in (held, running):
            own = slurm.run("squeue", "-h", "-j", job, "-o", "%T %B")
            _, state, host, _, _ = next(r for r in shared if r.split("|")[0] == job).split("|")
            assert f"{state} {host}" == own
        # an ended job: not listed, and batchspawner's own query prints nothing either
        assert not [r for r in shared if r.split("|")[0] == cancelled]
        assert slurm.run("squeue", "-h", "-j", cancelled, "-o", "%T %B") == ""
    finally:
        slurm.run("scancel", held, running)


def test_a_stop_ends_on_the_shared_squeues_word(slurm: Slurm, slurm_users, tmp_path, db_url):
    """batchspawner's own ``stop()`` runs ``scancel`` (``sudo -u USER scancel``), then looks
    at the job once a second; Courtyard ends the stop as soon as the shared ``squeue``
    shows the job gone, and the job really is gone from Slurm by then."""
    hub = hub_for(slurm, tmp_path, db_url, "c.JupyterHub.log_level = 'DEBUG'\n")
    name = slurm_users[0]
    try:
        user_token(hub, name)
        assert hub.api("POST", f"/users/{name}/server").status_code in (201, 202)
        wait_ready(hub, name)
        [job] = slurm.jobs(name)
        assert hub.api("DELETE", f"/users/{name}/server").status_code in (202, 204)
        wait_for(lambda: server_model(hub, name) is None, f"{name}'s stop")
        assert job not in slurm.jobs(name)
        log = hub.log.read_text()
        assert f"Stopping server job {job}" in log  # batchspawner's own stop ran
        gone = f"Job {job} is gone (seen by the shared squeue)"
        assert gone in log
        assert log.index(gone) < log.index(f"Stopped server {name}")
    finally:
        hub.stop()


def test_start_polls_at_the_shared_queues_pace_unless_configured():
    """A SlurmSpawner sharing the queue looks at its job every 0.1 s while it starts (its
    looks cost no squeue of their own); a configured ``startup_poll_interval`` is kept."""
    from batchspawner import SlurmSpawner
    from traitlets.config import Config

    from courtyard.compat.engines.batch import STARTUP_POLL, attach

    default = SlurmSpawner()
    attach(default)
    assert default.startup_poll_interval == STARTUP_POLL == 0.1
    config = Config()
    config.BatchSpawnerBase.startup_poll_interval = 2.0
    configured = SlurmSpawner(config=config)
    attach(configured)
    assert configured.startup_poll_interval == 2.0
    # a site's own query is not shared, so its spawner keeps batchspawner's pace
    config = Config()
    config.SlurmSpawner.batch_query_cmd = "squeue -h -j {job_id} -o '%T %B %N'"
    own_query = SlurmSpawner(config=config)
    attach(own_query)
    assert own_query.startup_poll_interval == 0.5
