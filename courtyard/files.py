"""Owner-only files: the hub's database, data directory and logs are for the hub's user alone.

They hold what other local users must not read: password and token hashes, the cookie
secret, which users exist and what their servers printed. What the hub makes, it makes
owner-only (0600 files, 0700 directories). At start it checks what is already there, as it
does for the cookie secret:

- a file or directory of its own that is open to others is made owner-only, with a warning
  (versions before this check made SQLite files 0644 and ``<data>/logs`` 0755 from the umask);
- one that belongs to another user is refused with a one-line error naming the fix: the hub
  did not make it, so someone shares it on purpose or by mistake, and must decide;
- secrets the hub always wrote 0600 (cookie secret, OAuth signing key, proxy token) are
  refused when open to others, whoever owns them: someone else made or loosened them.

The data directory is a directory the admin picks (the working directory by default), so
the hub makes it 0700 only when it creates it, and otherwise warns when others can list it.
The users' environment (``spawners/userenv.py``) is the exception on purpose: it must stay
world-readable, and lives outside the data directory when servers run as other users.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import stat
import tempfile
from pathlib import Path

from .errors import ConfigError

log = logging.getLogger("courtyard")

TOO_OPEN = 0o077  # any access for the group or others
LOGS_DIR = "logs"


def private_dirs(path: Path) -> Path:
    """``mkdir -p path`` where every directory made is 0700 (``Path.mkdir(parents=True)``
    makes the parents with the umask's mode, 0755 by default)."""
    missing = []
    here = path
    while not here.exists():
        missing.append(here)
        if here.parent == here:
            break
        here = here.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)
    return path


def open_private(path: str | os.PathLike[str], flags: int, what: str = "file") -> int:
    """``os.open`` a file for writing, created 0600; an existing one of the hub's that is
    open to others is made owner-only first."""
    owner_only(Path(path), what)
    return os.open(path, flags | os.O_CREAT, 0o600)


def write_private(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to an owner-only file all at once: a reader (or a hub killed midway)
    sees the old file or the whole new one, never an empty or half-written one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # made 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def owner_only(path: Path, what: str) -> bool:
    """Make the hub's own ``path`` owner-only if it is open to others (True if changed);
    refuse one that belongs to another user. A missing path is fine."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    mode = stat.S_IMODE(st.st_mode)
    if not mode & TOO_OPEN:
        return False
    wanted = "700" if stat.S_ISDIR(st.st_mode) else "600"
    if st.st_uid != os.geteuid():
        raise ConfigError(f"{what} {path} is open to other users (mode {mode:04o}) and belongs "
                          f"to {_owner(st.st_uid)}, not the hub's user; run: chown "
                          f"{_owner(os.geteuid())} {path} && chmod {wanted} {path}")
    os.chmod(path, mode & 0o700)
    log.warning("%s %s was open to other users (mode %04o); made it owner-only (%04o)",
                what.capitalize(), path, mode, mode & 0o700)
    return True


def refuse_if_open(path: Path, what: str) -> None:
    """For a secret the hub only ever writes 0600: open to others means someone else made or
    loosened it, so the hub stops rather than trust (or silently fix) it."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & TOO_OPEN:
        raise ConfigError(f"{what} {path} is readable by others (mode {mode:04o}); run: "
                          f"chmod 600 {path}")


def secure_data_dir(path: Path) -> None:
    """The data directory at start: made 0700 when missing, a warning when others can list
    it; its logs directory owner-only."""
    if not path.exists():
        private_dirs(path)
        log.info("Made the data directory %s (mode 0700)", path)
    else:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & TOO_OPEN:
            log.warning("The data directory %s is open to other users (mode %04o): the hub's "
                        "files in it are owner-only, but their names show; run: chmod 700 %s "
                        "(or set c.JupyterHub.data_files_path)", path, mode, path)
    owner_only(path / LOGS_DIR, "logs directory")


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
