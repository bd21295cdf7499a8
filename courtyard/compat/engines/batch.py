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
- **One ``squeue`` for every job.** batchspawner asks Slurm about each job with a
  ``squeue`` of its own (through ``sudo``: a shell, sudo and squeue per spawner per
  ``startup_poll_interval`` while it starts and per ``poll_interval`` while it runs), which
  with many servers starting at once takes the cores the servers need. Here every job's
  state asked for meanwhile (by ``poll()``, ``start()``, ``stop()`` and the progress
  events) comes from one shared ``squeue -j id,id,...`` that began after the question
  (:class:`SharedQueue`), with the text batchspawner's own query prints; if it fails,
  batchspawner's own command is asked (its error is what tells "unknown"). Only for
  SlurmSpawner's default ``batch_query_cmd``; a site's own command is left alone.
- **No second of lag.** Because a question costs no ``squeue`` of its own, a spawner that
  shares the queue asks as often as it likes: ``startup_poll_interval`` (0.5 s) defaults to
  :data:`STARTUP_POLL` unless configured, so ``start()`` sees the job run and its port
  reported sooner; and batchspawner's own ``stop()``, which looks at the job once a second
  after ``scancel``, ends as soon as the shared ``squeue`` shows the job gone
  (:func:`attach`). On JupyterHub either would cost a ``sudo squeue`` per spawner per look.

Slurm is asked with ``squeue``/``scontrol`` on the hub's ``PATH``, as the hub's own user.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import re
import shlex
import stat
import types
import weakref
from collections.abc import AsyncIterator
from typing import Any

from ...errors import SpawnError

#: attributes batchspawner's API handler may set on the spawner (the job's port report)
SERVER_SETTABLE = frozenset({"port"})

#: at most this much of a job's output is read for the logs endpoint
LOG_LIMIT = 1 << 20

#: batchspawner's ``startup_poll_interval`` for a spawner sharing the queue, unless configured
STARTUP_POLL = 0.1

log = logging.getLogger("courtyard.spawner")

SWITCHERS = {"sudo", "runuser"}


async def _run(*args: str, timeout: float = 20) -> str:
    """A Slurm command's stdout ("" when it fails: the job or the controller is gone)."""
    out = await _run_checked(*args, timeout=timeout)
    return out.strip() if out is not None else ""


# -- one squeue for every job -------------------------------------------------------------------
#: SlurmSpawner's own query; only a spawner using it gets its answers from :class:`SharedQueue`
DEFAULT_QUERY = "squeue -h -j {job_id} -o '%T %B'"
FIELDS = "%i|%T|%B|%r|%N"  # job id, state, batch host, reason, nodes
Row = tuple[str, str, str, str]  # (state, batch host, reason, nodes)
ENDED: Row = ("", "", "", "")  # a job squeue does not list (ended)
#: seconds from the start of one shared ``squeue`` to the next (batchspawner's own
#: ``startup_poll_interval`` is 0.5 s): each one forks from the hub and asks slurmctld
ROUND_GAP = 0.25


class SharedQueue:
    """Answers "what is the state of job N?" for every job asked about with one ``squeue``.

    A question joins the next round; a round starts once the previous one has ended and
    at least :data:`ROUND_GAP` seconds after the previous one began, so at most one
    ``squeue`` runs at a time, a few a second however many servers ask, and every answer
    comes from a ``squeue`` that began after the question was asked (a ``stop()`` right
    after ``scancel`` never reads a state from before it). Questions asked in the same loop
    iteration share a round.
    """

    def __init__(self) -> None:
        self._wanted: set[str] = set()
        self._next: asyncio.Future[dict[str, Row] | None] | None = None
        self._rounds: asyncio.Task[None] | None = None
        self._pending: tuple[float, asyncio.Task[list[str]]] | None = None

    async def pending(self) -> list[str]:
        """The pending jobs, in the order Slurm would start them (priority, then submission),
        from one ``squeue -t PENDING`` shared by every spawner that asks within
        :data:`ROUND_GAP` of its start: a queue position is news, not a decision, and 20
        queued spawners each asking five times a second would keep slurmctld busy."""
        loop = asyncio.get_running_loop()
        last = self._pending
        if last is None or (last[1].done() and loop.time() - last[0] >= ROUND_GAP):
            last = self._pending = (loop.time(), loop.create_task(_pending_order()))
        return await asyncio.shield(last[1])

    async def row(self, job: str) -> Row | None:
        """``job``'s row; ``ENDED`` when ``squeue`` does not list it (as ``squeue -j`` of
        that one job prints nothing, or an error once Slurm has forgotten it: batchspawner
        reads either as "not found"); None when the shared ``squeue`` failed."""
        loop = asyncio.get_running_loop()
        if self._next is None:
            self._next = loop.create_future()
        self._wanted.add(job)
        answer = self._next
        if self._rounds is None or self._rounds.done():
            self._rounds = loop.create_task(self._run_rounds())
        rows = await asyncio.shield(answer)
        return rows.get(job, ENDED) if rows is not None else None

    async def _run_rounds(self) -> None:
        loop = asyncio.get_running_loop()
        began = float("-inf")
        while self._next is not None:
            if (gap := began + ROUND_GAP - loop.time()) > 0:
                await asyncio.sleep(gap)
            began = loop.time()
            answer, wanted = self._next, sorted(self._wanted, key=_job_order)
            self._next, self._wanted = None, set()
            rows: dict[str, Row] | None = None  # failed: batchspawner's own way for these
            try:
                rows = await self._query(wanted)
            except asyncio.CancelledError:  # the hub is closing
                for left in (answer, self._next):
                    if left is not None and not left.done():
                        left.set_result(None)
                self._next, self._wanted = None, set()
                raise
            except Exception:  # e.g. no answer within the timeout
                pass
            answer.set_result(rows)

    async def _query(self, jobs: list[str]) -> dict[str, Row] | None:
        out = await _run_checked("squeue", "-h", "-j", ",".join(jobs), "-o", FIELDS)
        if out is None:
            return None
        rows: dict[str, Row] = {}
        for line in out.splitlines():
            parts = line.split("|")
            if len(parts) == 5:
                rows[parts[0].strip()] = (parts[1].strip(), parts[2].strip(), parts[3].strip(),
                                          parts[4].strip())
        return rows


def _job_order(job: str) -> tuple[int, str]:
    return (int(job), job) if job.isdigit() else (0, job)


_queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SharedQueue] = \
    weakref.WeakKeyDictionary()


def shared_queue() -> SharedQueue:
    """The event loop's :class:`SharedQueue` (one per hub)."""
    loop = asyncio.get_running_loop()
    queue = _queues.get(loop)
    if queue is None:
        queue = _queues[loop] = SharedQueue()
    return queue


def _shares_queries(jh: Any) -> bool:
    """Whether ``jh`` asks Slurm with SlurmSpawner's own, unchanged query."""
    from batchspawner import BatchSpawnerBase, SlurmSpawner

    return (isinstance(jh, SlurmSpawner)
            and type(jh).query_job_status is BatchSpawnerBase.query_job_status
            and jh.batch_query_cmd == DEFAULT_QUERY)


async def _query_job_status(jh: Any) -> Any:
    """batchspawner's ``query_job_status``, its job's row from the shared ``squeue``: the
    same ``job_status`` text (``'%T %B'``, "" for an ended job) and so the same answer;
    when the shared ``squeue`` fails (the controller does not answer) the question goes to
    batchspawner's own command, whose error text it reads as "unknown"."""
    from batchspawner import BatchSpawnerBase
    from batchspawner.batchspawner import JobStatus

    job = str(jh.job_id or "")
    row = await shared_queue().row(job) if job and _shares_queries(jh) else None
    if row is None:
        return await BatchSpawnerBase.query_job_status(jh)
    jh.job_status = f"{row[0]} {row[1]}" if row != ENDED else ""
    if jh.state_isrunning():
        return JobStatus.RUNNING
    if jh.state_ispending():
        return JobStatus.PENDING
    if jh.state_isunknown():
        return JobStatus.UNKNOWN
    return JobStatus.NOTFOUND


def share_queries(jh: Any) -> None:
    """Give ``jh`` (once) its job states from the shared ``squeue``."""
    if not getattr(jh, "_courtyard_shared", False) and _shares_queries(jh):
        jh._courtyard_shared = True
        jh.query_job_status = types.MethodType(_query_job_status, jh)


async def _run_checked(*args: str, timeout: float = 20) -> str | None:
    """A command's stdout, None when it fails (or cannot run)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL)
    except OSError:
        return None
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except (TimeoutError, asyncio.CancelledError):
        proc.kill()
        await proc.wait()
        raise
    return out.decode(errors="replace") if proc.returncode == 0 else None


def attach(jh: Any) -> None:
    """A new spawner object: its job states from the shared ``squeue`` from the start (a
    server found at hub start is polled before :func:`check_adopted`), and, when it shares
    them, no lag in its start and stop loops."""
    share_queries(jh)
    if not getattr(jh, "_courtyard_shared", False):
        return
    if not _configured(jh, "startup_poll_interval"):
        jh.startup_poll_interval = STARTUP_POLL
    from batchspawner import BatchSpawnerBase

    if type(jh).stop is BatchSpawnerBase.stop and type(jh).cancel_batch_job is \
            BatchSpawnerBase.cancel_batch_job:
        _stop_on_the_queues_word(jh)


def _configured(jh: Any, name: str) -> bool:
    """Whether the site's config sets ``name`` for ``jh``'s class or one of its bases."""
    return any(name in jh.config.get(cls.__name__, {}) for cls in type(jh).__mro__)


def _stop_on_the_queues_word(jh: Any) -> None:
    """Wrap ``jh.stop``: batchspawner's own stop runs as it is (``scancel``, then a look at
    the job once a second, up to ten); it ends as soon as, after its ``scancel``, the shared
    ``squeue`` gives the answer batchspawner stops on (neither running nor unknown)."""
    from batchspawner.batchspawner import JobStatus

    if getattr(jh, "_courtyard_stop_wrapped", False):
        return
    jh._courtyard_stop_wrapped = True
    package_stop, package_cancel = jh.stop, jh.cancel_batch_job
    cancelled: list[bool] = [False]  # this stop's scancel has run

    async def cancel_batch_job() -> Any:
        try:
            return await package_cancel()
        finally:
            cancelled[0] = True

    async def stop(now: bool = False) -> Any:
        if now:
            return await package_stop(now=now)
        cancelled[0] = False
        job = str(jh.job_id or "")
        task = asyncio.ensure_future(package_stop(now=now))
        look: asyncio.Future[Any] | None = None
        try:
            while True:
                if not cancelled[0]:
                    if (await asyncio.wait({task}, timeout=ROUND_GAP / 2))[0]:
                        return task.result()
                    continue
                look = asyncio.ensure_future(_query_job_status(jh))
                done, _ = await asyncio.wait({task, look},
                                             return_when=asyncio.FIRST_COMPLETED)
                if task in done:
                    return task.result()
                if look.result() not in (JobStatus.RUNNING, JobStatus.UNKNOWN):
                    log.debug("Job %s is gone (seen by the shared squeue)", job)
                    return None
        finally:
            if look is not None:
                look.cancel()
            if not task.done():  # in its one-second sleep (or this stop was cancelled)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    jh.cancel_batch_job = cancel_batch_job
    jh.stop = stop


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
    """Watch ``jh``'s job id, and give it the shared ``squeue`` (once per spawner object)."""
    share_queries(jh)
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
    from ...db import queries
    from ...db.writes import set_server_columns

    hub = adapter.courtyard_hub
    state = adapter.get_state()
    user, name = adapter.user.name, adapter.name

    def write(db: Any) -> None:
        row = queries.get_user(db, user)
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


async def _pending_order() -> list[str]:
    out = await _run("squeue", "-h", "-t", "PENDING", "-o", "%i|%Q")
    rows = []
    for line in out.splitlines():
        ident, _, priority = line.partition("|")
        try:
            rows.append((-int(priority or 0), int(ident), ident))
        except ValueError:
            continue
    return [ident for *_, ident in sorted(rows)]


async def _queue_position(job: str) -> tuple[int, int]:
    """``(position, pending jobs)`` of a pending job: by priority, then submission order."""
    order = await shared_queue().pending()
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
        row = await shared_queue().row(job)
        if row is not None:
            state, _, reason, node = row
        else:
            out = await _run("squeue", "-h", "-j", job, "-o", "%T|%r|%N")
            state, _, rest = out.partition("|")
            reason, _, node = rest.partition("|")
        if state in ("PENDING", "CONFIGURING"):
            position, pending = await _queue_position(job)
            where = f"position {position} of {pending}; " if position else ""
            event: dict[str, Any] = {"progress": 20, "message": f"Slurm job {job} queued "
                                     f"({where}reason: {reason or 'none'})"}
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
        path: str = format_template(found.group(1), **jh.get_req_subvars())
    except Exception:
        return None
    return path


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
