"""The tests' Slurm: one cluster (``engine.py``) for the session, with ``SLURM_CONF`` set in
this process so the hub processes the tests start ask it; users whose jobs and accounts
are removed after each test.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import tool_missing

from .engine import TOOLS, Slurm, running_slurm, wait_until


@pytest.fixture(scope="session")
def slurm() -> Iterator[Slurm]:
    """munged + slurmctld + slurmd on loopback for the session; every job cancelled at
    the end, the daemons stopped by PID."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        tool_missing(f"Slurm is not installed (missing {', '.join(missing)}; "
                     "bash scripts/ci/slurm.sh)")
    if os.geteuid() != 0:
        tool_missing("the Slurm tests run as root (jobs run as other users)")
    old_conf = os.environ.get("SLURM_CONF")
    with running_slurm() as cluster:
        os.environ["SLURM_CONF"] = str(cluster.conf)  # the hubs the tests start ask it
        try:
            yield cluster
        finally:
            if old_conf is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = old_conf


@pytest.fixture
def slurm_users(slurm: Slurm) -> Iterator[list[str]]:
    """Names for hub users whose accounts the hub creates on their first spawn; their jobs
    are cancelled and the accounts removed after the test."""
    names = [f"slurm{uuid.uuid4().hex[:6]}{i}" for i in range(3)]
    yield names
    for name in names:
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        subprocess.run(["scancel", "-u", name], env=slurm.env, capture_output=True, timeout=30)
        try:
            wait_until(lambda n=name: not slurm.jobs(n), f"the jobs of {name} to end", 30)
        finally:
            subprocess.run(["userdel", "-r", name], capture_output=True)

