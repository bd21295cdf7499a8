"""A real Slurm: munged, slurmctld and slurmd, on loopback, all state in a temp dir,
started and stopped by PID (components.md section 1). Used by the tests' fixtures
(``conftest.py``) and by ``bench/cluster.py``.

Nothing is written outside the temp dir: clients find the config through ``SLURM_CONF``
(in :attr:`Slurm.env`; the fixture also sets it in the test process, so the hub processes
the tests start inherit it, and the spawner config passes it to the jobs through
``c.SlurmSpawner.environment``), and munge through its socket there
(``AuthInfo=socket=...``). The directory is world-readable: the jobs' users submit with
``sudo -E -u USER sbatch`` and need the config and the socket.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import free_ports

from .venv import ensure_venv

TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sudo")


@dataclass
class Slurm:
    """The running cluster: its directory, config file and the venv jobs run from."""

    dir: Path
    conf: Path
    venv: Path
    env: dict[str, str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def run(self, *args: str, user: str | None = None) -> str:
        """A Slurm command's stdout (as ``user`` if given)."""
        prefix = ["runuser", "-u", user, "--"] if user else []
        done = subprocess.run([*prefix, *args], env=self.env, capture_output=True, text=True,
                              timeout=30)
        assert done.returncode == 0, f"{args}: {done.stderr}"
        return done.stdout.strip()

    def jobs(self, user: str | None = None) -> list[str]:
        """Job ids in the queue (pending or running), of ``user`` if given."""
        args = ["squeue", "-h", "-o", "%i"] + (["-u", user] if user else [])
        return self.run(*args).split()

    def state(self, job: str) -> str:
        return self.run("squeue", "-h", "-j", job, "-o", "%T") if job in self.jobs() else ""

    def spawner_config(self) -> str:
        """``jupyterhub_config.py`` lines for SlurmSpawner on this cluster (docs/deploy.md's,
        on one node: the server listens on loopback and the hub reaches it there)."""
        bin_dir = self.venv / "bin"
        return (
            "c.JupyterHub.spawner_class = 'batchspawner.SlurmSpawner'\n"
            f"c.SlurmSpawner.req_prologue = 'export PATH={bin_dir}:$PATH'\n"
            "c.SlurmSpawner.req_keepvars_extra = 'PATH'\n"
            f"c.SlurmSpawner.environment = {{'SLURM_CONF': {str(self.conf)!r}}}\n"
            "c.SlurmSpawner.req_partition = 'debug'\n"
            "c.SlurmSpawner.req_memory = '300M'\n"
            "c.SlurmSpawner.req_runtime = '8:00:00'\n"
            "c.SlurmSpawner.args = ['--ServerApp.ip=127.0.0.1']\n"
            "c.SlurmSpawner.state_exechost_exp = '127.0.0.1'\n"
            "c.SlurmSpawner.startup_poll_interval = 0.25\n"
            "c.SlurmSpawner.poll_interval = 1\n"
            "c.SlurmSpawner.start_timeout = 120\n"
            "c.SlurmSpawner.http_timeout = 60\n"
            # a start request answers 202 at once (the tests follow the spawn themselves)
            "c.JupyterHub.tornado_settings = {'slow_spawn_timeout': 0}\n")


def wait_until(check: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def running_slurm(jobs: int = 8) -> Iterator[Slurm]:
    """munged + slurmctld + slurmd on loopback until the block ends; every job cancelled
    at the end, the daemons stopped by PID, the directory removed. The one node (2 CPUs)
    runs up to ``jobs`` jobs of 300 MB at once when they ask to share (``--oversubscribe``)."""
    venv = ensure_venv()
    base = Path(tempfile.mkdtemp(prefix="courtyard-slurm-"))
    base.chmod(0o755)
    munge_dir = base / "munge"
    for d in ("state", "spool", "log", "out"):
        (base / d).mkdir()
    (base / "out").chmod(0o1777)
    munge_dir.mkdir()
    shutil.chown(munge_dir, "munge", "munge")
    munge_dir.chmod(0o755)
    sock = munge_dir / "munge.socket"
    host = socket.gethostname().split(".")[0]
    ctld_port, slurmd_port = free_ports(2)
    conf = base / "slurm.conf"
    conf.write_text(f"""\
ClusterName=courtyard
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
AuthInfo=socket={sock}
StateSaveLocation={base}/state
SlurmdSpoolDir={base}/spool
SlurmctldPidFile={base}/slurmctld.pid
SlurmdPidFile={base}/slurmd.pid
SlurmctldLogFile={base}/log/slurmctld.log
SlurmdLogFile={base}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=30
KillWait=5
# a busy 2-core machine can take over slurmd's default minute to reap 20 servers; past it
# the node is drained ("Kill task failed") and takes no more jobs
UnkillableStepTimeout=180
Waittime=0
NodeName={host} NodeAddr=127.0.0.1 CPUs=2 RealMemory={max(4000, 310 * jobs)} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES:{-(-jobs // 2)}
""")
    conf.chmod(0o644)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    procs: list[subprocess.Popen[bytes]] = []
    cluster = Slurm(base, conf, venv, env, procs)
    try:
        procs.append(subprocess.Popen(
            ["runuser", "-u", "munge", "--", "munged", "-F", f"--socket={sock}",
             f"--pid-file={munge_dir}/munged.pid", f"--seed-file={munge_dir}/seed",
             f"--log-file={munge_dir}/munged.log"],
            stdout=subprocess.DEVNULL, stderr=(base / "log" / "munged.err").open("wb")))
        wait_until(lambda: sock.exists() or procs[0].poll() is not None, "munged")
        assert procs[0].poll() is None, (base / "log" / "munged.err").read_text()
        for daemon in ("slurmctld", "slurmd"):
            procs.append(subprocess.Popen(
                [daemon, "-D", "-f", str(conf)], env=env, stdout=subprocess.DEVNULL,
                stderr=(base / "log" / f"{daemon}.err").open("wb")))
        wait_until(lambda: subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True,
                                     text=True).stdout.strip() == "idle", "an idle node", 60)
        yield cluster
    finally:
        subprocess.run(["scancel", "--full", "--partition=debug"], env=env, capture_output=True,
                       timeout=30)
        _stop(procs)
        shutil.rmtree(base, ignore_errors=True)


