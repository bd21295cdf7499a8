"""batchspawner's SlurmSpawner, unmodified, on a real Slurm behind a real ``courtyard serve``:
the job runs as the user's account, reports its port through batchspawner's own API
handler, is proxied, shows its state as spawn progress and its output as the server's log,
survives a hub restart, and is cancelled on stop, on a cancelled spawn, and noticed when
cancelled behind the hub's back. Every request goes to 127.0.0.1."""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port
from tests.hubprocess import HubProcess, wait_for

from .engine import Slurm

pytestmark = pytest.mark.cluster


def user_token(hub: HubProcess, name: str) -> str:
    """A new user ``name`` and an API token of theirs (as ``courtyard token`` gives one)."""
    r = hub.api("POST", f"/users/{name}")
    assert r.status_code == 201, r.text
    r = hub.api("POST", f"/users/{name}/tokens", json={"note": "test"})
    assert r.status_code == 201, r.text
    return r.json()["token"]


def as_user(hub: HubProcess, token: str, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(method, f"{hub.url}{path}", headers={"Authorization": f"token {token}"},
                         timeout=30, **kw)


def server_model(hub: HubProcess, name: str) -> dict[str, Any] | None:
    return hub.api("GET", f"/users/{name}").json()["servers"].get("")


def wait_ready(hub: HubProcess, name: str, timeout: float = 120) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        model = server_model(hub, name)
        if model is None and name not in hub.log.read_text():
            return None
        assert model is not None, f"the spawn failed:\n{hub.log.read_text()[-3000:]}"
        return model if model["ready"] else None

    return wait_for(ready, f"{name}'s server", timeout)


def one_job(slurm: Slurm, name: str, timeout: float = 30) -> str:
    jobs = wait_for(lambda: slurm.jobs(name), f"{name}'s job", timeout)
    assert len(jobs) == 1, jobs
    return jobs[0]


def server_token(name: str) -> str:
    """The API token in the environment of the user's running notebook server (what the
    job holds: the user can read it)."""
    uid = pwd.getpwnam(name).pw_uid
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for var in env:
            if var.startswith(b"JUPYTERHUB_API_TOKEN="):
                return var.split(b"=", 1)[1].decode()
    raise AssertionError(f"no process of {name} holds a server token")


def hub_for(slurm: Slurm, tmp_path: Path, db_url: str, extra: str = "") -> HubProcess:
    return HubProcess(tmp_path, db_url, slurm.spawner_config() + extra)


def test_job_runs_as_the_user_is_proxied_logs_and_stops(slurm, slurm_users, tmp_path, db_url):
    hub = hub_for(slurm, tmp_path, db_url)
    name = slurm_users[0]
    try:
        token = user_token(hub, name)
        r = as_user(hub, token, "POST", f"/hub/api/users/{name}/server")
        assert r.status_code == 202, r.text
        model = wait_ready(hub, name)
        job = one_job(slurm, name)
        assert slurm.run("squeue", "-h", "-j", job, "-o", "%T %u") == f"RUNNING {name}"
        # the hub's proxy reaches the real jupyterhub-singleuser in the job
        r = as_user(hub, token, "GET", f"/user/{name}/api")
        assert r.status_code == 200, r.text
        assert "version" in r.json()
        assert model["url"] == f"/user/{name}/"
        # the job's output file, through the logs endpoint
        r = as_user(hub, token, "GET", f"/hub/api/users/{name}/server/logs")
        assert r.status_code == 200, r.text
        assert "Jupyter Server" in r.text and f"/user/{name}/" in r.text
        r = as_user(hub, token, "GET", f"/hub/api/users/{name}/server/logs", params={"tail": 2})
        assert len(r.text.splitlines()) == 2
        # the file is the user's: a symlink put in its place shows nothing else
        output = Path(pwd.getpwnam(name).pw_dir) / f"jupyterhub_slurmspawner_{job}.log"
        assert output.is_file()
        output.rename(output.with_suffix(".moved"))
        output.symlink_to("/etc/shadow")
        r = as_user(hub, token, "GET", f"/hub/api/users/{name}/server/logs")
        assert r.status_code == 404
        # batchspawner's API handler takes the port from the server's token, nothing else
        secret = server_token(name)
        r = as_user(hub, secret, "POST", "/hub/api/batchspawner",
                    json={"exec_prefix": "", "batch_cancel_cmd": "true"})
        assert r.status_code == 403
        assert r.json() == {"status": 403,
                            "message": "the spawner's 'exec_prefix' cannot be set through "
                                       "the API"}
        # batchspawner's own switch of user (jupyterhub.spawner.set_user_setuid) works here
        from batchspawner import SlurmSpawner

        switch = SlurmSpawner().make_preexec_fn(name)
        done = subprocess.run(["id", "-un"], preexec_fn=switch, capture_output=True, text=True,
                              cwd="/", timeout=30)
        assert done.stdout.strip() == name
        # stop: scancel, and the job is gone
        r = as_user(hub, token, "DELETE", f"/hub/api/users/{name}/server")
        assert r.status_code == 202, r.text
        wait_for(lambda: server_model(hub, name) is None, "the stop")
        wait_for(lambda: job not in slurm.jobs(), "the job to leave the queue")
        assert f"scancel {job}" in hub.stop()
    finally:
        hub.stop()


def read_progress(hub: HubProcess, token: str, name: str, events: list[dict[str, Any]]) -> None:
    with httpx.stream("GET", f"{hub.url}/hub/api/users/{name}/server/progress",
                      headers={"Authorization": f"token {token}"}, timeout=120) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))


def test_progress_shows_the_job_queued_then_running(slurm, slurm_users, tmp_path, db_url):
    # the job is submitted held: it stays queued until released
    hub = hub_for(slurm, tmp_path, db_url, "c.SlurmSpawner.req_options = '--hold'\n")
    name = slurm_users[0]
    # another job waits in the queue before it
    ahead = slurm.run("sbatch", "--parsable", "--hold", "-o", "/dev/null", "--wrap", "true")
    try:
        token = user_token(hub, name)
        assert as_user(hub, token, "POST", f"/hub/api/users/{name}/server").status_code == 202
        job = one_job(slurm, name)
        events: list[dict[str, Any]] = []
        reader = threading.Thread(target=read_progress, args=(hub, token, name, events))
        reader.start()
        queued = f"Slurm job {job} queued (position 2 of 2; reason: JobHeldUser)"
        try:
            wait_for(lambda: any(e["message"] == queued for e in events), "the queued event")
            assert slurm.state(job) == "PENDING"
            slurm.run("scontrol", "release", job)
        finally:
            reader.join(150)
        messages = [e["message"] for e in events]
        running = next(i for i, m in enumerate(messages)
                       if m.startswith(f"Slurm job {job} running on "))
        assert messages.index(queued) < running < len(messages) - 1
        assert events[-1]["ready"] is True
        assert as_user(hub, token, "GET", f"/user/{name}/api").status_code == 200
    finally:
        slurm.run("scancel", ahead)
        hub.stop()


def test_cancelling_a_queued_spawn_cancels_the_job(slurm, slurm_users, tmp_path, db_url):
    hub = hub_for(slurm, tmp_path, db_url, "c.SlurmSpawner.req_options = '--hold'\n")
    name = slurm_users[0]
    try:
        token = user_token(hub, name)
        assert as_user(hub, token, "POST", f"/hub/api/users/{name}/server").status_code == 202
        job = one_job(slurm, name)
        assert slurm.state(job) == "PENDING"
        assert server_model(hub, name)["pending"] == "spawn"
        r = as_user(hub, token, "DELETE", f"/hub/api/users/{name}/server")
        assert r.status_code == 202, r.text
        wait_for(lambda: server_model(hub, name) is None, "the cancelled spawn to end")
        wait_for(lambda: not slurm.jobs(name), "the job to leave the queue")
        assert slurm.jobs() == []
    finally:
        hub.stop()


def test_a_hub_restart_finds_the_running_job(slurm, slurm_users, tmp_path, db_url,
                                             monkeypatch):
    leave = "c.JupyterHub.cleanup_servers = False\n"  # Courtyard's default
    hub = hub_for(slurm, tmp_path, db_url, leave)
    name = slurm_users[0]
    try:
        token = user_token(hub, name)
        assert as_user(hub, token, "POST", f"/hub/api/users/{name}/server").status_code == 202
        wait_ready(hub, name)
        job = one_job(slurm, name)
    finally:
        hub.stop()
    assert slurm.state(job) == "RUNNING"
    # the next hub where the last one was: the job's server calls the hub's API there
    ports = iter([hub.port, hub.hub_port, free_port()])
    monkeypatch.setattr("tests.hubprocess.free_port", lambda: next(ports))
    hub = hub_for(slurm, tmp_path, db_url, leave)
    try:
        wait_for(lambda: as_user(hub, token, "GET", f"/user/{name}/api").status_code == 200,
                 "the server through the new hub's proxy")
        assert server_model(hub, name)["ready"] is True
        assert slurm.jobs(name) == [job]
        # still the hub's to stop
        assert as_user(hub, token, "DELETE", f"/hub/api/users/{name}/server").status_code == 202
        wait_for(lambda: not slurm.jobs(name), "the job to leave the queue")
    finally:
        hub.stop()


def test_a_hub_killed_while_the_job_is_queued_leaves_no_job(slurm, slurm_users, tmp_path,
                                                           db_url, monkeypatch):
    held = "c.SlurmSpawner.req_options = '--hold'\n"
    hub = hub_for(slurm, tmp_path, db_url, held)
    name = slurm_users[0]
    try:
        token = user_token(hub, name)
        assert as_user(hub, token, "POST", f"/hub/api/users/{name}/server").status_code == 202
        job = one_job(slurm, name)
        # the job is on record before the spawn ends (else nothing would find it below)
        wait_for(lambda: server_model(hub, name)["state"].get("job_id") == job,
                 "the job on record")
    finally:
        hub.proc.kill()
        hub.proc.wait()
        pidfile = tmp_path / "courtyard-proxy.pid"  # a killed hub leaves its proxy up
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGTERM)
    assert slurm.state(job) == "PENDING"
    ports = iter([hub.port, hub.hub_port, free_port()])
    monkeypatch.setattr("tests.hubprocess.free_port", lambda: next(ports))
    hub = hub_for(slurm, tmp_path, db_url, held)
    try:
        # the next hub cleans the unfinished launch up: its queued job is cancelled
        wait_for(lambda: not slurm.jobs(name), "the job of the unfinished launch to go")
        assert server_model(hub, name) is None
    finally:
        hub.stop()


def test_a_job_cancelled_behind_the_hubs_back_is_noticed(slurm, slurm_users, tmp_path, db_url):
    hub = hub_for(slurm, tmp_path, db_url)
    name = slurm_users[0]
    try:
        token = user_token(hub, name)
        assert as_user(hub, token, "POST", f"/hub/api/users/{name}/server").status_code == 202
        wait_ready(hub, name)
        job = one_job(slurm, name)
        spec = f"/user/{name}/"
        assert spec in hub.api("GET", "/proxy").json()
        slurm.run("scancel", job)
        wait_for(lambda: server_model(hub, name) is None, "the hub to notice")
        wait_for(lambda: spec not in hub.api("GET", "/proxy").json(), "the route's removal")
        assert not slurm.jobs(name)
    finally:
        hub.stop()


def test_jobs_only_as_allowed_accounts(slurm, slurm_users, tmp_path, db_url):
    hub = hub_for(slurm, tmp_path, db_url)
    try:
        # a hub user named after a system account gets no job
        assert hub.api("POST", "/users/daemon").status_code == 201
        r = hub.api("POST", "/users/daemon/server")
        assert r.status_code == 202, r.text
        wait_for(lambda: server_model(hub, "daemon") is None, "the refusal")
        log = hub.log.read_text()
        assert "Spawn failed: refused: the system account 'daemon' (uid 1) is not a user " \
               "account" in log
        assert slurm.jobs() == []
    finally:
        hub.stop()
    # an exec_prefix that does not switch to the user would submit as root: refused
    hub = hub_for(slurm, tmp_path, db_url, "c.SlurmSpawner.exec_prefix = ''\n")
    name = slurm_users[1]
    try:
        user_token(hub, name)
        assert hub.api("POST", f"/users/{name}/server").status_code == 202
        wait_for(lambda: server_model(hub, name) is None, "the refusal")
        assert "SlurmSpawner.exec_prefix ('') does not switch to the user's account" in \
            hub.log.read_text()
        assert slurm.jobs() == []
    finally:
        hub.stop()
