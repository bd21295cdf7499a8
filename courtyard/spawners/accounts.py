"""System accounts for servers: which account a hub user's server may run as, and new ones.

A hub user's name is chosen by whoever signs up (or by an OAuth/LDAP provider), so it must
never decide on its own which existing account a server runs as: signing up as ``root``,
``daemon`` or a colleague's login name must not give that account. The rules
(:class:`AccountPolicy`):

- uid 0 (and primary group 0) never, whatever the options say;
- an account named in ``allowed_system_users``: yes (the admin's explicit choice);
- otherwise the uid must lie in the system's range of user accounts, ``UID_MIN`` to
  ``UID_MAX`` from ``/etc/login.defs`` (1000 and 60000 if unset), and the account must
  be one Courtyard created, or existing accounts must be allowed
  (``allow_existing_system_users``, on by default for PAM sites, whose users *are* the
  machine's accounts).

Courtyard knows it created an account because ``useradd`` put it in the group
``system_users_group`` (default ``courtyard-users``, as TLJH's ``jupyterhub-users``):
membership of a group is written in ``/etc/group`` by root only, so a user cannot forge it,
and it survives a new database. An admin may add an existing account to that group to hand
it over to Courtyard.

The group means "made for a *current* hub user": when that user is deleted or renamed, the
account leaves the group (:func:`release_account`; account and home stay), so whoever gets
the name next is refused rather than handed the old account and its files.
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import re
import stat
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SpawnError

LOGIN_DEFS = Path("/etc/login.defs")
DEFAULT_UID_MIN, DEFAULT_UID_MAX = 1000, 60000
# PATH for servers when login.defs has no ENV_PATH / ENV_SUPATH (Debian's values otherwise)
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
DEFAULT_SUPATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# what useradd accepts everywhere (Debian's NAME_REGEX, without its trailing '$' for Samba)
SYSTEM_NAME_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
MAX_NAME = 32
_useradd_lock = threading.Lock()  # two named servers of a new user may start at once


def login_defs(path: Path = LOGIN_DEFS) -> dict[str, str]:
    """``KEY value`` pairs of ``/etc/login.defs`` (empty if it is missing)."""
    values: dict[str, str] = {}
    try:
        text = path.read_text()
    except OSError:
        return values
    for line in text.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and not parts[0].startswith("#"):
            values[parts[0]] = parts[1].strip()
    return values


def uid_range(defs: dict[str, str]) -> tuple[int, int]:
    """``(UID_MIN, UID_MAX)``: the uids of ordinary user accounts on this system."""
    def number(key: str, fallback: int) -> int:
        try:
            return int(defs.get(key, fallback))
        except ValueError:
            return fallback
    return number("UID_MIN", DEFAULT_UID_MIN), number("UID_MAX", DEFAULT_UID_MAX)


def system_path(defs: dict[str, str], root: bool = False) -> str:
    """The standard ``PATH`` of a login on this system (``ENV_PATH``; ``ENV_SUPATH`` for root)."""
    value = defs.get("ENV_SUPATH" if root else "ENV_PATH", "")
    value = value.removeprefix("PATH=")
    return value or (DEFAULT_SUPATH if root else DEFAULT_PATH)


def system_name(template: str, username: str) -> str:
    """The account name for a hub user: ``template`` with ``{username}`` expanded.

    The plain template (``{username}``) keeps the name as it is: a name that is not a valid
    account name then fails the spawn. Any other template (e.g. ``jupyter-{username}``)
    escapes it: characters an account name cannot hold become ``-``, and a short hash of the
    hub name is added whenever that changed it or the result had to be cut to 32
    characters, so two hub names never share an account.
    """
    if template == "{username}":
        return username
    part = "".join(c if c in "abcdefghijklmnopqrstuvwxyz0123456789_-" else "-"
                   for c in username.lower())
    name = template.replace("{username}", part)
    if part != username or len(name) > MAX_NAME:
        digest = hashlib.sha256(username.encode()).hexdigest()[:8]
        room = MAX_NAME - len(template.replace("{username}", "")) - len(digest) - 1
        name = template.replace("{username}", f"{part[:max(room, 0)]}-{digest}")
    return name


def in_group(pw: pwd.struct_passwd, group: str) -> bool:
    """Whether the account belongs to ``group`` (as a member or by its primary group)."""
    try:
        entry = grp.getgrnam(group)
    except KeyError:
        return False
    return pw.pw_name in entry.gr_mem or pw.pw_gid == entry.gr_gid


@dataclass(frozen=True)
class AccountPolicy:
    """Which existing accounts a server may run as; see the module docstring."""

    group: str = "courtyard-users"
    allowed: frozenset[str] = field(default_factory=frozenset)
    allow_existing: bool = False
    uid_min: int = DEFAULT_UID_MIN
    uid_max: int = DEFAULT_UID_MAX

    def refusal(self, pw: pwd.struct_passwd) -> str | None:
        """None when a server may run as ``pw``, else why not (for the user and the log)."""
        name, uid = pw.pw_name, pw.pw_uid
        if uid == 0 or pw.pw_gid == 0:
            return (f"the system account {name!r} is root or in root's group: no server ever "
                    "runs as root")
        if name in self.allowed:
            return None
        if not self.uid_min <= uid <= self.uid_max:
            return (f"the system account {name!r} (uid {uid}) is not a user account (uids "
                    f"{self.uid_min}-{self.uid_max}, UID_MIN/UID_MAX in /etc/login.defs); an "
                    "admin may allow it with c.LocalProcessSpawner.allowed_system_users, or "
                    "set c.LocalProcessSpawner.system_username_template = "
                    "'jupyter-{username}'")
        if self.allow_existing or in_group(pw, self.group):
            return None
        return (f"the system account {name!r} exists but was not created by Courtyard for a "
                f"current hub user (it is not in the group {self.group!r}: someone else made "
                "it, or it belonged to a hub user of that name who was deleted or renamed); "
                f"an admin may remove it with its files (userdel -r {name}), hand it and its "
                f"files over to this user (usermod -aG {self.group} {name}), allow it with "
                "c.LocalProcessSpawner.allowed_system_users (or, where hub users are the "
                "machine's users, allow_existing_system_users), or set "
                "c.LocalProcessSpawner.system_username_template = 'jupyter-{username}'")

    def process_refusal(self, uids: list[int], gids: list[int]) -> tuple[str, int, str] | None:
        """None when a running process with these ids (``/proc/PID/status``: real,
        effective, saved, filesystem) may go on, else ``(account, uid, why)``."""
        for uid in dict.fromkeys(uids):
            try:
                pw = pwd.getpwuid(uid)
            except KeyError:
                return f"uid {uid}", uid, f"uid {uid} has no system account (deleted?)"
            problem = self.refusal(pw)
            if problem is not None:
                return pw.pw_name, uid, problem
        if 0 in gids:  # every uid passed, so each has an account
            return (pwd.getpwuid(uids[0]).pw_name, uids[0],
                    "it runs in root's group: no server ever runs as root")
        return None


def process_ids(pid: int) -> tuple[list[int], list[int]] | None:
    """The uids and gids (real, effective, saved, filesystem) of a process, from
    ``/proc/PID/status``; None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    ids: dict[str, list[int]] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid"):
            ids[key] = [int(v) for v in value.split()]
    if "Uid" not in ids or "Gid" not in ids:
        return None
    return ids["Uid"], ids["Gid"]


def release_account(name: str, group: str) -> str:
    """Take the account ``name`` out of ``group``: it is no longer made for a current hub
    user. Nothing else changes (the account, its home and files stay).

    Returns what happened: ``"released"``; ``"none"`` (no such account, or not a member:
    not Courtyard's, left alone); ``"primary"`` (the group is its primary group, which only
    an admin should change).
    """
    if not SYSTEM_NAME_RE.fullmatch(name):
        return "none"  # never an account Courtyard made (nor an option to gpasswd)
    with _useradd_lock:
        try:
            pw = pwd.getpwnam(name)
            entry = grp.getgrnam(group)
        except KeyError:
            return "none"
        if name not in entry.gr_mem:
            return "primary" if pw.pw_gid == entry.gr_gid else "none"
        done = subprocess.run(["gpasswd", "-d", name, group], capture_output=True, text=True)
        if done.returncode != 0:
            raise SpawnError(f"gpasswd -d {name} {group} failed: {done.stderr.strip()}")
        return "released"


def add_account(name: str, group: str) -> pwd.struct_passwd:
    """``useradd`` ``name`` in ``group`` with a 0700 home, unless it exists by now.

    The group marks the account as Courtyard's (see the module docstring); it is made
    (``groupadd --system``) if missing. ``-K HOME_MODE=0700`` asks useradd for the mode (it
    would use 0755 on Debian), and the home is set to 0700 afterwards in any case.
    """
    with _useradd_lock:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
        _ensure_group(group)
        done = subprocess.run(["useradd", "--create-home", "-K", "HOME_MODE=0700",
                               "--groups", group, name], capture_output=True, text=True)
        if done.returncode != 0:
            raise SpawnError(f"useradd {name} failed: {done.stderr.strip()}")
        pw = pwd.getpwnam(name)
        try:
            home = os.lstat(pw.pw_dir)
        except FileNotFoundError:
            return pw
        if home.st_uid == pw.pw_uid and stat.S_ISDIR(home.st_mode):
            os.chmod(pw.pw_dir, 0o700)
        return pw


def _ensure_group(group: str) -> None:
    try:
        grp.getgrnam(group)
        return
    except KeyError:
        pass
    done = subprocess.run(["groupadd", "--system", group], capture_output=True, text=True)
    if done.returncode not in (0, 9):  # 9: made meanwhile by someone else
        raise SpawnError(f"groupadd {group} failed: {done.stderr.strip()}")


def private_dir(path: Path) -> Path:
    """``path`` as a directory only this process's user can use (0700), made if missing.

    Refuses a path that is a symlink or belongs to someone else: under a shared directory
    such as /tmp another user could have made it first to read what the server writes.
    """
    if not path.is_absolute() or ".." in path.parts:
        raise SpawnError(f"{path} is not an absolute path without '..'")
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise SpawnError(f"{path} exists but is not a directory of the hub's own user; "
                         "remove it or choose another home_dir_template")
    if info.st_mode & 0o077:
        path.chmod(0o700)
    return path
