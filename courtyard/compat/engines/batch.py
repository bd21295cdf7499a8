"""batchspawner (``SlurmSpawner``) on Courtyard: what JupyterHub does not give it.

- **The account policy.** The job runs as the account batchspawner submits as
  (``req_username``, the hub user's name by default, through ``exec_prefix``, ``sudo -E -u
  {username}``). As root, :func:`check_start` creates that account as Courtyard's local
  spawner would (``create_system_users``) and holds it to the same policy (no root, no
  system account, only Courtyard's own or allowed ones); an ``exec_prefix`` that does not
  switch to it is refused. A job found at hub start must run as such an account too
  (:func:`check_adopted`), else it is cancelled.
- **Progress.** The job's state in Slurm (:func:`progress`): "Slurm job 12 queued (position
  1 of 2; reason: Resources)", then running on its node, then the port the job reported.
- **The job's output** for ``GET .../logs`` (:func:`read_log`): the file Slurm writes
  (``scontrol show job``'s ``StdOut``, else the batch script's ``--output``), read only if it
  is a regular file owned by the job's account (a user's symlink cannot show another file).
- **No job left behind.** The job id is on record as soon as the job is submitted (a hub
  killed while it is queued: the next hub's clean-up cancels it), and a job batchspawner
  forgets while Slurm still lists it (a cancelled spawn interrupting its ``squeue``) is
  cancelled.
- **What the job may set** through batchspawner's API handler
  (:mod:`courtyard.compat.handlers`): its port, nothing else.

Slurm is asked with ``squeue``/``scontrol`` on the hub's ``PATH``, as the hub's own user.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import shlex
import stat
from collections.abc import AsyncIterator
from typing import Any

from ...errors import SpawnError

#: attributes batchspawner's API handler may set on the spawner (the job's port report)
SERVER_SETTABLE = frozenset({"port"})

#: at most this much of a job's output is read for the logs endpoint
LOG_LIMIT = 1 << 20

SWITCHERS = {"sudo", "runuser"}


async def _run(*args: str, timeout: float = 20) -> str:
    """A Slurm command's stdout ("" when it fails: the job or the controller is gone)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL)
    except OSError:
        return ""
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except (TimeoutError, asyncio.CancelledError):
        proc.kill()
        await proc.wait()
        raise
    return out.decode(errors="replace").strip() if proc.returncode == 0 else ""


def _account(jh: Any) -> str:
    return str(jh.req_username or jh.user.name)


def _switches_to(prefix: str, account: str) -> bool:
    """Whether the rendered ``exec_prefix`` runs the command as ``account`` (sudo/runuser)."""
    try:
        words = shlex.split(prefix)
    except ValueError:
        return False
    if not words or os.path.basename(words[0]) not in SWITCHERS:
        return False
    for i, word in enumerate(words):
        if word in ("-u", "--user") and i + 1 < len(words) and words[i + 1] == account:
            return True
        if word in (f"--user={account}", f"-u{account}"):
            return True
    return False


# -- jobs batchspawner forgets ----------------------------------------------------------------
_cancelling: set[asyncio.Task[None]] = set()


def _forgotten(change: dict[str, Any]) -> None:
    """``job_id`` went from a job to none: batchspawner forgets a job when it thinks it is
    gone, but a cancelled spawn interrupts its ``squeue`` (its bare ``except:`` takes the
    cancellation for a failed query) and it forgets a job that is still queued; ``stop()``
    then has nothing to cancel. A job forgotten while Slurm still lists it is cancelled."""
    old = str(change["old"] or "")
    if not old or change["new"]:
        return
    try:
        task = asyncio.get_running_loop().create_task(_cancel_if_listed(old))
    except RuntimeError:  # no loop: nothing is running here
        return
    _cancelling.add(task)
    task.add_done_callback(_cancelling.discard)


async def _cancel_if_listed(job: str) -> None:
    if await _run("squeue", "-h", "-j", job, "-o", "%T"):
        await _run("scancel", job)


def _track(jh: Any) -> None:
    """Watch ``jh``'s job id (once per spawner object)."""
    if not getattr(jh, "_courtyard_tracked", False):
        jh._courtyard_tracked = True
        jh.observe(_forgotten, names="job_id")


def _record_submitted(adapter: Any, jh: Any) -> None:
    """Record the job id in the server's state as soon as the job is submitted, not only once
    ``start()`` returns: a hub killed while the job waits in the queue leaves a launch the
    next hub cleans up, and with the job id on record that clean-up (``stop()``) cancels the
    job instead of leaving it to run later with a revoked token."""

    def submitted(change: dict[str, Any]) -> None:
        if change["new"] and not change["old"]:
            try:
                task = asyncio.get_running_loop().create_task(_save_state(adapter))
            except RuntimeError:
                return
            _cancelling.add(task)
            task.add_done_callback(_cancelling.discard)

    jh.observe(submitted, names="job_id")


async def _save_state(adapter: Any) -> None:
    from ...db import queries as q
    from ...db.writes import set_server_columns

    hub = adapter.courtyard_hub
    state = adapter.get_state()
    user, name = adapter.user.name, adapter.name

    def write(db: Any) -> None:
        row = q.get_user(db, user)
        server = next((s for s in row.servers if s.name == name), None) if row else None
        if server is not None and server.url is None:  # only while it starts
            set_server_columns(db, [(server.id, {"state": state})])

    try:
        await hub.lifecycle.write(write)
    except Exception as e:  # start() records the state anyway when it returns
        adapter.log.warning("Could not record Slurm job of %s early: %s", adapter.log_name, e)


async def check_start(adapter: Any, jh: Any) -> None:
    """As root: the job's account exists (made as Courtyard's local spawner makes it), is
    allowed by the account policy, and ``exec_prefix`` switches to it. A job batchspawner
    forgets while Slurm still lists it is cancelled (:func:`_forgotten`); a submitted job
    is on record at once (:func:`_record_submitted`)."""
    _track(jh)
    if adapter.courtyard_hub is not None and not getattr(jh, "_courtyard_recorded", False):
        jh._courtyard_recorded = True
        _record_submitted(adapter, jh)
    if os.geteuid() != 0:
        return
    from batchspawner.batchspawner import format_template

    account = _account(jh)
    local = adapter._courtyard_local()
    pw = await local._system_user(account)
    problem = local.account_policy().refusal(pw)
    if problem is not None:
        adapter.log.warning("Refused to submit the job of %s as system user %s (uid %d): %s",
                            adapter.log_name, pw.pw_name, pw.pw_uid, problem)
        raise SpawnError(f"refused: {problem}")
    prefix = format_template(jh.exec_prefix, **jh.get_req_subvars())
    if not _switches_to(prefix, account):
        raise SpawnError(f"refused: {type(jh).__name__}.exec_prefix ({prefix!r}) does not "
                         f"switch to the user's account {account!r} (e.g. "
                         "'sudo -E -u {username}'): no job is submitted as root")


async def check_adopted(adapter: Any, jh: Any) -> None:
    """A job found at hub start must run as an allowed account; else it is cancelled."""
    _track(jh)
    job = str(jh.job_id or "")
    if os.geteuid() != 0 or not job:
        return
    owner = await _run("squeue", "-h", "-j", job, "-o", "%u")
    if not owner:
        return  # gone: poll() says so
    try:
        pw = pwd.getpwnam(owner)
    except KeyError:
        problem: str | None = f"its user {owner!r} has no account here"
    else:
        problem = adapter._courtyard_local().account_policy().refusal(pw)
        if problem is None and owner != _account(jh):
            problem = f"it runs as {owner!r}, not as {_account(jh)!r}"
    if problem is not None:
        adapter.log.warning("Slurm job %s of %s: %s; cancelling it", job, adapter.log_name,
                            problem)
        await _run("scancel", job)
        raise SpawnError(f"refused: Slurm job {job}: {problem}")


async def _queue_position(job: str) -> tuple[int, int]:
    """``(position, pending jobs)`` of a pending job: by priority, then submission order."""
    out = await _run("squeue", "-h", "-t", "PENDING", "-o", "%i|%Q")
    rows = []
    for line in out.splitlines():
        ident, _, priority = line.partition("|")
        try:
            rows.append((-int(priority or 0), int(ident), ident))
        except ValueError:
            continue
    order = [ident for *_, ident in sorted(rows)]
    return (order.index(job) + 1 if job in order else 0), len(order)


async def progress(jh: Any) -> AsyncIterator[dict[str, Any]]:
    """The job's state as spawn progress: queued (position, reason), running (node), the
    port reported. Ends when the port is known or the job is gone (``start()`` then fails)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + float(jh.start_timeout or 300)
    interval = max(float(getattr(jh, "startup_poll_interval", 0.5) or 0.5), 0.2)
    last = ""
    while loop.time() < deadline:
        job = str(jh.job_id or "")
        if not job:
            await asyncio.sleep(interval)
            continue
        out = await _run("squeue", "-h", "-j", job, "-o", "%T|%r|%N")
        state, _, rest = out.partition("|")
        reason, _, node = rest.partition("|")
        if state in ("PENDING", "CONFIGURING"):
            position, pending = await _queue_position(job)
            where = f"position {position} of {pending}; " if position else ""
            event = {"progress": 20, "message": f"Slurm job {job} queued ({where}reason: "
                                                f"{reason or 'none'})"}
        elif state in ("RUNNING", "COMPLETING"):
            if jh.port:
                yield {"progress": 80, "message": f"Slurm job {job} running on {node}: the "
                                                  f"server reported port {jh.port}"}
                return
            event = {"progress": 50, "message": f"Slurm job {job} running on {node}; "
                                                "waiting for the server to report its port"}
        else:
            return
        if event["message"] != last:
            last = event["message"]
            yield event
        await asyncio.sleep(interval)


def _output_template(jh: Any) -> str | None:
    """The ``--output`` (``-o``) path in the batch script template, rendered."""
    from batchspawner.batchspawner import format_template

    found = re.search(r"^#SBATCH\s+(?:--output[= ]|-o\s*)(\S+)", str(jh.batch_script), re.M)
    if found is None:
        return None
    try:
        return format_template(found.group(1), **jh.get_req_subvars())
    except Exception:
        return None


def _expand(path: str, job: str, account: str) -> str:
    """Slurm's filename pattern: %j (job id), %u (user), %% (a %)."""
    return re.sub(r"%(%|j|u)", lambda m: {"%": "%", "j": job, "u": account}[m.group(1)], path)


def _read_owned(path: str, uid: int | None, tail: int | None) -> str | None:
    """The end of ``path`` if it is a regular file (not a symlink) owned by ``uid``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode) or (uid is not None and info.st_uid != uid):
            return None
        f.seek(max(0, info.st_size - LOG_LIMIT))
        text = f.read(LOG_LIMIT).decode(errors="replace")
    if tail is not None:
        lines = text.splitlines(keepends=True)
        text = "".join(lines[-tail:]) if tail > 0 else ""
    return text


async def read_log(jh: Any, tail: int | None) -> str | None:
    """The job's output file (its last ``tail`` lines), None when there is no job."""
    job = str(jh.job_id or "")
    if not job:
        return None
    account = _account(jh)
    shown = await _run("scontrol", "show", "job", "-o", job)
    found = re.search(r"\bStdOut=(\S+)", shown)
    path = found.group(1) if found else _output_template(jh)
    if not path:
        return None
    path = _expand(path, job, account)
    uid: int | None = None
    if os.geteuid() == 0:
        try:
            uid = pwd.getpwnam(account).pw_uid
        except KeyError:
            return None
    return await asyncio.to_thread(_read_owned, path, uid, tail)
