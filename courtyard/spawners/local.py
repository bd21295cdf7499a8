"""LocalProcessSpawner: each server is a process on the hub's machine.

As root, a server runs as the system user named after the hub user
(``system_username_template``; setuid/setgid, the user's supplementary groups, home
directory, HOME/USER/SHELL); missing users can be made with ``useradd`` the way The Littlest
JupyterHub does (by default when the authenticator's users are not system accounts, i.e. not
PAM). Never as root, and never as an account the policy of :mod:`.accounts` refuses (a
system account, or one Courtyard did not create), checked at each start and again for a
server found running at hub start (:meth:`LocalProcessSpawner.check_adopted`); the account
of a deleted or renamed hub user is released (``delete_forever``, ``user_renamed``), so the
next user of the name does not inherit it. Not as root, every server runs as the
hub's own user in ``<data>/users/<name>``, and users are not isolated from each other.
:class:`SimpleLocalProcessSpawner` always runs servers as the hub's own user.

A server's environment is built from scratch (:meth:`LocalProcessSpawner.server_env`): the
system's standard ``PATH``, ``LANG``, the account's variables, and what ``get_env`` gives;
nothing else of the hub's own environment.

With the default command, servers may run from the users' environment, a venv the hub
builds on the first spawn that needs it (:mod:`courtyard.spawners.userenv`).

Each server gets its own session and process group, so stopping it signals everything it
started. Its output goes to ``<data>/logs/<user>/<server>.log`` (``_default.log`` for
the default server), mode 0600. The pid, process group and start time are the state kept in
the database; the start time guards against a recycled pid after a hub restart. A server's
exit is noticed at once (:meth:`LocalProcessSpawner.wait_exit`, a pidfd), whether this hub
started it or adopted it.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Collection
from pathlib import Path
from typing import Any

from traitlets import Bool, Dict, Enum, Float, Set, TraitError, Unicode, validate

from .. import pidfd
from ..errors import SpawnError
from ..files import private_dirs
from ..names import check_user_name
from . import accounts, userenv
from .accounts import SYSTEM_NAME_RE, AccountPolicy, private_dir
from .base import ProgressEvent, Spawner
from .progress import ProgressLog

DEFAULT_CMD = ["courtyard-singleuser"]


def random_port(ip: str = "127.0.0.1", avoid: Collection[int] = ()) -> int:
    """A port free right now (the server binds it moments later), not one of ``avoid``."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind((ip if ip not in ("", "0.0.0.0") else "127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in avoid:
            break
    return port


# Ports handed to servers of this hub that have not stopped. A port is free again the moment
# random_port() closes its socket, and a server may take many seconds to bind it when
# hundreds start at once: without this, two could be given the same port, and the probe of
# the one that lost the race would be answered by the other.
_handed_out: set[int] = set()


def safe_filename(name: str) -> str:
    """A user or server name as one path component: no '/', no leading dot, no surprises."""
    return "".join(c if c.isalnum() or c in "@+-_" else f"%{ord(c):02X}" for c in name)


def process_status(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of a process from /proc, None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return ("?", 0)
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], int(fields[19])


class LocalProcessSpawner(Spawner):
    """Run servers as local processes (as their system user when the hub is root)."""

    interrupt_timeout = Float(0, help="Seconds to wait after SIGINT before SIGTERM (0: do "
                              "not send SIGINT; Jupyter servers ignore it without a tty)."
                              ).tag(config=True)
    term_timeout = Float(5, help="Seconds to wait after SIGTERM before SIGKILL.").tag(
        config=True)
    kill_timeout = Float(5, help="Seconds to wait for a process to die after SIGKILL.").tag(
        config=True)
    create_system_users = Bool(None, allow_none=True, help="As root: create a missing "
                               "system user (useradd, a 0700 home, in system_users_group) "
                               "before the first start. Default (None): True unless the "
                               "authenticator's users "
                               "are system accounts (PAM), as native, dummy, OAuth and LDAP "
                               "users have no other way to get one.").tag(config=True)
    user_env = Enum(["auto", "never"], "auto", help="'auto': with the default cmd, when the "
                    "hub's Python lacks jupyter_server/jupyterlab or (as root) other users "
                    "cannot run it, build the users' environment (a venv with Courtyard, "
                    "Jupyter Server, JupyterLab and ipykernel) on the first spawn and run "
                    "servers from it. 'never': always run cmd as it is.").tag(config=True)
    user_env_dir = Unicode("", help="Where the users' environment is built (world-readable). "
                           "Default: /opt/courtyard/user-env as root, else "
                           "<data_files_path>/user-env.").tag(config=True)
    popen_kwargs = Dict(help="Extra keyword arguments for subprocess.Popen.").tag(config=True)
    system_username_template = Unicode("{username}", help="As root: the system account a hub "
                                       "user's server runs as. '{username}' is the hub name "
                                       "itself; 'jupyter-{username}' (The Littlest "
                                       "JupyterHub's scheme) gives accounts that cannot be "
                                       "the system's own, the name escaped (plus a short "
                                       "hash) where an account name cannot hold it.").tag(
        config=True)
    allowed_system_users = Set(Unicode(), help="As root: existing system accounts servers may "
                               "run as although their uid is outside UID_MIN..UID_MAX "
                               "(/etc/login.defs) or Courtyard did not create them (account "
                               "names, after system_username_template). Never uid 0."
                               ).tag(config=True)
    allow_existing_system_users = Bool(None, allow_none=True, help="As root: let servers run "
                                       "as existing accounts Courtyard did not create, when "
                                       "their uid is within UID_MIN..UID_MAX. Default (None): "
                                       "True when every authenticator's users are the "
                                       "machine's accounts (PAM: the password proves the "
                                       "account is theirs), else False: a name from sign-up, "
                                       "OAuth, LDAP or a rename proves nothing.").tag(
        config=True)
    system_users_group = Unicode("courtyard-users", help="As root: the group the accounts "
                                 "Courtyard creates are put in (made if missing). Membership "
                                 "marks an account as Courtyard's; only root can grant it, so "
                                 "an admin may add an existing account to hand it over.").tag(
        config=True)

    @validate("system_username_template")
    def _check_template(self, proposal: dict[str, Any]) -> str:
        template = str(proposal["value"])
        sample = accounts.system_name(template, "alice")
        if "{username}" not in template or not SYSTEM_NAME_RE.fullmatch(sample):
            raise TraitError(f"c.LocalProcessSpawner.system_username_template = {template!r} "
                             "must contain '{username}' and make account names (lowercase "
                             "letters, digits, '_' and '-', starting with a letter or '_')")
        return template

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pid = 0
        self.pgid = 0
        self.starttime: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._chosen_port = 0  # the port start() picked (c.Spawner.port is 0)
        self._started = asyncio.Event()
        self._prepared = asyncio.Event()
        self._build: ProgressLog | None = None
        self._env: userenv.UserEnv | None = None
        self._run_as: tuple[dict[str, Any], str, dict[str, str]] | None = None

    @classmethod
    def startup_warnings(cls) -> list[str]:
        if os.geteuid() == 0:
            return []
        return [f"The hub is not running as root: every server runs as {_me()} and users are "
                "not isolated from each other (LocalProcessSpawner)"]

    @property
    def switches_user(self) -> bool:
        """Whether servers run as their own system accounts (the hub is root)."""
        return os.geteuid() == 0

    # -- contract ------------------------------------------------------------------------------
    async def prepare(self) -> None:
        """Find (or create) the account and build the users' environment if this server
        needs it, outside start_timeout; a refused account fails before anything is built."""
        running, env = None, None
        try:
            self._run_as = await self._account()
            env = self._env = self.user_environment()
            if env is not None:
                running = userenv.ensure_user_env(env)
                self._build = running[1] if running else None
        finally:
            self._prepared.set()
        if running is None or env is None:
            return
        self.log.info("Building the users' environment in %s for %s", env.path, self.log_name)
        try:
            await asyncio.shield(running[0])
        except userenv.UserEnvError as e:
            await asyncio.to_thread(self._write_log, f"{e}\n\n{e.output}\n")
            raise

    def user_environment(self) -> userenv.UserEnv | None:
        """The users' environment to run the default command from; None to run cmd as is."""
        if self.user_env == "never" or list(self.cmd) != DEFAULT_CMD:
            return None
        root = self.switches_user
        reason = userenv.user_env_reason(root, _hub_python_shared(), _hub_has_jupyter())
        if reason is None:
            return None
        path = self.user_env_dir or userenv.default_dir(root, self.hub.data_dir)
        return userenv.UserEnv(Path(path), userenv.system_python())

    async def start(self) -> str:
        if not self._prepared.is_set():  # prepare() was not called: do it now
            await self.prepare()
        if not self.port:
            self.port = self._chosen_port = random_port(self.ip, _handed_out)
            _handed_out.add(self.port)
        if self._run_as is None:
            raise SpawnError("the server's account was not resolved (prepare() failed)")
        run_as, cwd, account_env = self._run_as
        env = self.server_env(account_env, as_root="user" not in run_as and os.geteuid() == 0)
        command = list(self.cmd)
        if self._env is not None:
            command = self._env.cmd
            env["VIRTUAL_ENV"] = str(self._env.path)
            env["PATH"] = os.pathsep.join([str(self._env.path / "bin"), env["PATH"]])
        elif command:
            command[0] = _on_path(command[0], env)
        cmd = [*command, *self.get_args()]
        log_path = self.log_path
        private_dirs(log_path.parent)  # <data>/logs too: its user names are nobody's business
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            kwargs = {"env": env, "cwd": cwd, "stdin": subprocess.DEVNULL, "stdout": fd,
                      "stderr": subprocess.STDOUT, "start_new_session": True, "close_fds": True,
                      **run_as, **self.popen_kwargs}
            self.proc = subprocess.Popen(cmd, **kwargs)
        except OSError as e:
            raise SpawnError(f"cannot run {cmd[0]!r}: {e.strerror or e}") from None
        finally:
            os.close(fd)
        self.pid = self.pgid = self.proc.pid
        status = process_status(self.pid)
        self.starttime = status[1] if status else None
        self._started.set()
        self.log.info("Started server %s as pid %d: %s", self.log_name, self.pid, " ".join(cmd))
        host = self.ip if self.ip not in ("", "0.0.0.0") else "127.0.0.1"
        return f"http://{host}:{self.port}"

    async def stop(self, now: bool = False) -> None:
        if not self.pid:
            return
        if await self.poll() is None:
            steps = [] if now else [(signal.SIGINT, self.interrupt_timeout),
                                    (signal.SIGTERM, self.term_timeout)]
            steps.append((signal.SIGKILL, self.kill_timeout))
            for sig, timeout in steps:
                if timeout <= 0 and sig != signal.SIGKILL:
                    continue
                self._signal(sig, alive=True)
                if await self._wait_for_death(timeout):
                    break
            else:
                self.log.warning("Server %s (pid %d) is still alive after SIGKILL",
                                 self.log_name, self.pid)
        self._signal(signal.SIGKILL)  # whatever else the server left in its process group

    async def poll(self) -> int | None:
        if self.proc is not None:
            return self.proc.poll()
        if not self.pid:
            return 0
        status = process_status(self.pid)
        if status is None or (self.starttime and status[1] != self.starttime):
            return 0  # gone, or the pid now belongs to another process
        if status[0] == "Z":
            try:  # a child of this very process (a test's earlier hub): reap it
                _, code = os.waitpid(self.pid, os.WNOHANG)
                return os.waitstatus_to_exitcode(code) if code else 0
            except ChildProcessError:
                return 0
        return None

    async def wait_exit(self) -> None:
        """Return the moment the server's process exits: a pidfd on the event loop, which
        works for a child of this hub and for a server a previous hub started alike. Where
        pidfds cannot be used, never returns (the hub polls every poll_interval)."""
        if self.pid and not await pidfd.wait_exit(self.pid, self._same_process):
            await asyncio.get_running_loop().create_future()

    def _same_process(self) -> bool:
        """Whether ``self.pid`` still names the recorded process (not a reused pid)."""
        status = process_status(self.pid)
        return status is not None and not (self.starttime and status[1] != self.starttime)

    def get_state(self) -> dict[str, Any]:
        if not self.pid:
            return {}
        return {"pid": self.pid, "pgid": self.pgid, "starttime": self.starttime,
                "log_path": str(self.log_path)}

    def load_state(self, state: dict[str, Any]) -> None:
        self.pid = int(state.get("pid") or 0)
        self.pgid = int(state.get("pgid") or self.pid)
        self.starttime = state.get("starttime")

    def clear_state(self) -> None:
        if self._chosen_port:
            _handed_out.discard(self._chosen_port)
            if self.port == self._chosen_port:
                self.port = 0  # a next start picks a free one again
            self._chosen_port = 0
        self.pid = self.pgid = 0
        self.starttime = None
        self.proc = None
        self._started.clear()
        self._prepared.clear()
        self._build = self._env = None
        self._run_as = None

    async def progress(self) -> AsyncIterator[ProgressEvent]:
        await self._prepared.wait()
        if self._build is not None:
            async for event in self._build.follow():
                if event.get("ready") or event.get("failed"):
                    break
                yield event
        yield {"progress": 45 if self._build else 10,
               "message": f"Starting the server process for {self.log_name}"}
        await self._started.wait()
        yield {"progress": 50, "message": f"Server process {self.pid} started; waiting for "
                                          "it to answer"}

    async def read_log(self, tail: int | None = None) -> str | None:
        return await asyncio.to_thread(_read_tail, self.log_path, tail)

    async def delete_forever(self) -> None:
        """The user is deleted (the default server's hook; a named server shares the
        user's account with the others, so removing one leaves it): as root, the account
        leaves ``system_users_group``, so a later hub user of the name does not get it."""
        if self.switches_user and not self.name:
            await self._release_account(self.user.name, "was deleted")

    async def user_renamed(self, old_name: str) -> None:
        """As root, the old name's account leaves ``system_users_group`` (the renamed user
        gets the new name's account; the old one would otherwise go to the next user
        called ``old_name``)."""
        template = self.system_username_template
        if self.switches_user and (accounts.system_name(template, old_name)
                                   != accounts.system_name(template, self.user.name)):
            await self._release_account(old_name, f"was renamed to {self.user.name}")

    async def _release_account(self, hub_name: str, what: str) -> None:
        account = accounts.system_name(self.system_username_template, hub_name)
        group = self.system_users_group
        done = await asyncio.to_thread(accounts.release_account, account, group)
        if done == "released":
            self.log.warning(
                "The hub user %s %s: its system account %s leaves the group %s and no hub "
                "user's server will run as it (it and its home stay; remove them with "
                "'userdel -r %s', or hand them to a user with 'usermod -aG %s %s')",
                hub_name, what, account, group, account, group, account)
        elif done == "primary":
            self.log.warning(
                "The hub user %s %s, but its system account %s has %s as its primary group, "
                "so it still counts as made by Courtyard: change its primary group "
                "(usermod -g) or remove it (userdel -r %s) before anyone else is called %s",
                hub_name, what, account, group, account, hub_name)

    async def check_adopted(self) -> None:
        """As root, the process a previous hub left must run as an account the policy
        allows now (an earlier version may have started it as root, or as an account
        refused since): its uids and gids from ``/proc/PID/status``."""
        if not self.switches_user or not self.pid:
            return
        ids = accounts.process_ids(self.pid)
        if ids is None:
            return  # gone meanwhile: the HTTP check fails on its own
        found = self.account_policy().process_refusal(*ids)
        if found is None:
            return
        account, uid, problem = found
        self.log.warning("Stopping server %s (pid %d) found running at hub start as system "
                         "user %s (uid %d): %s", self.log_name, self.pid, account, uid, problem)
        raise SpawnError(f"refused: it runs as {account} (uid {uid}): {problem}")

    # -- helpers -------------------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        server = safe_filename(self.name) if self.name else "_default"
        return Path(self.hub.data_dir) / "logs" / safe_filename(self.user.name) / f"{server}.log"

    def _write_log(self, text: str) -> None:
        """Put ``text`` where read_log finds it (a failure before the server ran)."""
        private_dirs(self.log_path.parent)
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)

    def server_env(self, account_env: dict[str, str], as_root: bool = False) -> dict[str, str]:
        """The whole environment of the server, built from scratch: the system's standard
        ``PATH`` and ``LANG``, then ``get_env()`` (env_keep, the hub's variables,
        ``environment``), then the account's HOME/USER/SHELL. Nothing else of the hub's own
        environment (its PATH, secrets, PYTHON* variables) reaches a server."""
        env = {"PATH": accounts.system_path(accounts.login_defs(), root=as_root),
               "LANG": "C.UTF-8"}
        env.update(self.get_env())
        env.update(account_env)
        return env

    async def _account(self) -> tuple[dict[str, Any], str, dict[str, str]]:
        """Popen arguments that switch user, the working directory, and account variables."""
        name = self.user.name
        problem = check_user_name(name)
        if problem is not None:  # a name stored before names were checked
            raise SpawnError(f"the user name {name!r} cannot have a server: {problem}")
        if not self.switches_user:
            home = Path(self.hub.data_dir) / "users" / safe_filename(name)
            private_dir(home)
            return {}, str(home), {"HOME": str(home)}
        account = accounts.system_name(self.system_username_template, name)
        pw = await self._system_user(account)
        problem = self.account_policy().refusal(pw)
        if problem is not None:
            self.log.warning("Refused to start the server of %s as system user %s (uid %d): "
                             "%s", self.log_name, pw.pw_name, pw.pw_uid, problem)
            raise SpawnError(f"refused: {problem}")
        groups = os.getgrouplist(pw.pw_name, pw.pw_gid)
        cwd = pw.pw_dir if os.path.isdir(pw.pw_dir) else "/"
        env = {"HOME": pw.pw_dir, "USER": pw.pw_name, "LOGNAME": pw.pw_name,
               "SHELL": pw.pw_shell}
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": groups}, cwd, env

    def account_policy(self) -> AccountPolicy:
        """Which existing accounts servers may run as (this system's UID_MIN..UID_MAX)."""
        allow_existing = self.allow_existing_system_users
        if allow_existing is None:
            allow_existing = bool(getattr(self.hub, "system_accounts_only", False))
        low, high = accounts.uid_range(accounts.login_defs())
        return AccountPolicy(group=self.system_users_group,
                             allowed=frozenset(self.allowed_system_users),
                             allow_existing=allow_existing, uid_min=low, uid_max=high)

    @property
    def creates_system_users(self) -> bool:
        """``create_system_users``, or its default: not for system accounts (PAM)."""
        if self.create_system_users is not None:
            return bool(self.create_system_users)
        return not getattr(self.hub, "system_accounts", False)

    async def _system_user(self, name: str) -> pwd.struct_passwd:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            if not self.creates_system_users:
                raise SpawnError(f"there is no system user {name!r}; create it, or set "
                                 "c.LocalProcessSpawner.create_system_users = True") from None
        if not SYSTEM_NAME_RE.fullmatch(name):
            raise SpawnError(
                f"{name!r} cannot be a system user name (lowercase letters, digits, '_' and "
                "'-', starting with a letter or '_', at most 32 characters); restrict hub "
                "user names with c.Authenticator.username_pattern, set "
                "c.LocalProcessSpawner.system_username_template = 'jupyter-{username}', or "
                "create the accounts yourself and set "
                "c.LocalProcessSpawner.create_system_users = False")
        self.log.info("Creating system user %s for %s", name, self.log_name)
        return await asyncio.to_thread(accounts.add_account, name, self.system_users_group)

    def _signal(self, sig: int, alive: bool = False) -> None:
        """Signal the server's process group; the process alone if it has none (and lives)."""
        try:
            try:
                os.killpg(self.pgid or self.pid, sig)
            except ProcessLookupError:
                if alive:  # state from elsewhere, where the server did not lead a group
                    os.kill(self.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError as e:
            raise SpawnError(f"cannot signal server {self.log_name} (pid {self.pid}): {e}"
                             ) from None

    async def _wait_for_death(self, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.01
        while await self.poll() is None:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)
        return True


class SimpleLocalProcessSpawner(LocalProcessSpawner):
    """JupyterHub's SimpleLocalProcessSpawner, for tests and demos: every server runs as the
    hub's own user (no setuid, no useradd), in a home from ``home_dir_template``.

    The only way a server may run as root: when the hub does, and only because the admin
    chose this class; the hub then warns at every start.
    """

    home_dir_template = Unicode("/tmp/{username}", help="SimpleLocalProcessSpawner: the "
                                "home directory (and working directory) of each server; "
                                "{username} expands. Made 0700; refused if it exists and "
                                "is not the hub user's own directory.").tag(config=True)

    @classmethod
    def startup_warnings(cls) -> list[str]:
        if os.geteuid() == 0:
            return ["SECURITY WARNING: SimpleLocalProcessSpawner with the hub running as ROOT: "
                    "every user's server runs as root, so any user can take over this "
                    "machine, the hub and every other user. Use it only for tests and demos; "
                    "use LocalProcessSpawner for real users"]
        return [f"SimpleLocalProcessSpawner: every server runs as {_me()}, and users are not "
                "isolated from each other (for tests and demos)"]

    @property
    def switches_user(self) -> bool:
        return False

    async def _account(self) -> tuple[dict[str, Any], str, dict[str, str]]:
        name = self.user.name
        problem = check_user_name(name)
        if problem is not None:
            raise SpawnError(f"the user name {name!r} cannot have a server: {problem}")
        home = private_dir(Path(self.format_string(self.home_dir_template)))
        return {}, str(home), {"HOME": str(home), "USER": name, "SHELL": "/bin/bash"}


def _hub_python_shared() -> bool:
    global _SHARED
    if _SHARED is None:
        _SHARED = userenv.hub_python_shared()
    return _SHARED


def _hub_has_jupyter() -> bool:
    global _JUPYTER
    if _JUPYTER is None:
        _JUPYTER = userenv.hub_has_jupyter()
    return _JUPYTER


_SHARED: bool | None = None
_JUPYTER: bool | None = None


def _me() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def _on_path(command: str, env: dict[str, str]) -> str:
    """``command`` as the server will run it, looked up on the hub's own PATH when the
    server's does not have it, that directory then put first on the server's PATH (a venv's
    bin, so kernels and terminals use the same environment). Only that one directory of
    the hub's PATH reaches the server."""
    if os.sep in command or shutil.which(command, path=env["PATH"]):
        return command
    found = shutil.which(command)
    if found is None:
        return command
    env["PATH"] = os.pathsep.join([os.path.dirname(found), env["PATH"]])
    return found


def _read_tail(path: Path, tail: int | None) -> str | None:
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            chunk = size if tail is None else min(size, max(65536, tail * 1024))
            f.seek(size - chunk)
            data = f.read()
    except FileNotFoundError:
        return None
    text = data.decode("utf-8", errors="replace")
    if tail is None:
        return text
    lines = text.splitlines(keepends=True)
    if chunk < size:
        lines = lines[1:]  # the first line is probably cut
    return "".join(lines[-tail:] if tail > 0 else [])
