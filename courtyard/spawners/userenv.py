"""The users' environment: a virtualenv the hub builds for the servers it runs itself.

LocalProcessSpawner's default command, ``courtyard-singleuser``, needs Jupyter Server,
JupyterLab and ipykernel, and a Python the server's user can execute. The hub's own
Python may offer neither: the ``singleuser`` extra is optional, and as root the hub's
interpreter may live where other users cannot reach it (a pyenv build under /root, whose
home is mode 0700). Then the hub builds, once, a venv from a system Python every user can
run (``/usr/bin/python3``, else the hub's own when it is world-readable) in a world-readable
directory, installs Courtyard there from the same source the hub runs (a local source tree
is copied, never installed editable, so other users can read it; else ``courtyard==VERSION``
from the package index) with the ``singleuser`` extra and ipykernel, and runs
``<env>/bin/courtyard-singleuser``.

A marker file in the venv records what it was built from. Hub restarts reuse it; a new
Python or new requirements rebuild it, a changed Courtyard source only reinstalls Courtyard.
Builds are shared: concurrent spawns wait for the one build (an asyncio lock within the hub,
a file lock between processes), and every waiting spawn shows its progress.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import stat
import sys
import tempfile
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import SpawnError
from .progress import ProgressLog

SYSTEM_PYTHON = "/usr/bin/python3"
EXTRA_REQUIREMENTS = ["ipykernel>=6.0"]
MARKER = ".courtyard-user-env.json"
PREPARING = "Preparing the users' Python environment (first start only)…"
UPDATING = "Updating Courtyard in the users' Python environment…"
JUPYTER_MODULES = ("jupyter_server", "jupyterlab")
PIP = ["-m", "pip", "install", "--disable-pip-version-check", "--no-input",
       "--progress-bar", "off"]


# -- when is it needed -------------------------------------------------------------------------
def world_accessible(path: str | os.PathLike[str], executable: bool = False) -> bool:
    """Whether any user can read (and, if asked, execute) ``path``: every directory on the
    way must be searchable by others, after symlinks are resolved."""
    real = Path(os.path.realpath(path))
    try:
        mode = real.stat().st_mode
        if not mode & stat.S_IROTH or (executable and not mode & stat.S_IXOTH):
            return False
        return all(parent.stat().st_mode & stat.S_IXOTH for parent in real.parents)
    except OSError:
        return False


def hub_python_shared() -> bool:
    """Whether other users can run the hub's Python and import Courtyard from it."""
    import courtyard

    return (world_accessible(sys.executable, executable=True)
            and world_accessible(os.__file__)
            and world_accessible(courtyard.__file__))


def hub_has_jupyter() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in JUPYTER_MODULES)


def user_env_reason(root: bool, shared: bool, has_jupyter: bool) -> str | None:
    """Why the default command needs the users' environment; None when the hub's Python
    will do (it has Jupyter, and other users can run it when the hub is root)."""
    if root and not shared:
        return "the hub's Python cannot be run by other users"
    if not has_jupyter:
        return "the hub's Python lacks jupyter_server/jupyterlab (courtyard[singleuser])"
    return None


def system_python() -> str:
    """A Python every user can run to make the venv from."""
    if world_accessible(SYSTEM_PYTHON, executable=True):
        return SYSTEM_PYTHON
    if world_accessible(sys.executable, executable=True):
        return sys.executable
    raise SpawnError(f"no Python readable by all users to build the users' environment from "
                     f"({SYSTEM_PYTHON} is missing; install python3 and python3-venv, or set "
                     "c.Spawner.cmd to a courtyard-singleuser they can run)")


def default_dir(root: bool, data_dir: str) -> Path:
    return Path("/opt/courtyard/user-env") if root else Path(data_dir or ".") / "user-env"


# -- what to install ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """Where the hub's Courtyard comes from: a local source tree, or the package index."""

    path: Path | None
    version: str
    key: str  # changes whenever the installed Courtyard would differ

    def requirement(self, where: Path | None = None) -> str:
        if self.path is None:
            return f"courtyard[singleuser]=={self.version}"
        return f"{where or self.path}[singleuser]"


def _source_tree() -> Path | None:
    import courtyard

    tree = Path(courtyard.__file__).resolve().parents[1]
    pyproject = tree / "pyproject.toml"
    if pyproject.is_file() and 'name = "courtyard"' in pyproject.read_text(errors="replace"):
        return tree
    try:
        from importlib.metadata import distribution

        info = json.loads(distribution("courtyard").read_text("direct_url.json") or "{}")
    except Exception:
        return None
    url = str(info.get("url", ""))
    if url.startswith("file://") and Path(url[7:]).is_dir():
        return Path(url[7:])
    return None


def _tree_files(tree: Path) -> list[Path]:
    """What a build needs: the top-level files and the package (no caches, tests, docs)."""
    files = [p for p in sorted(tree.iterdir()) if p.is_file() and not p.name.startswith(".")]
    for p in sorted((tree / "courtyard").rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo"):
            files.append(p)
    return files


@cache
def courtyard_source() -> Source:
    """The hub's Courtyard, computed once per process (hashing a tree takes a few ms)."""
    tree = _source_tree()
    if tree is None:
        return Source(None, __version__, f"pypi:{__version__}")
    digest = hashlib.sha256()
    for path in _tree_files(tree):
        digest.update(str(path.relative_to(tree)).encode() + b"\0" + path.read_bytes() + b"\0")
    return Source(tree, __version__, f"path:{__version__}:{digest.hexdigest()[:16]}")


def requirements_key(python: str, source: Source) -> str:
    """What forces a full rebuild: the base Python, the requirements, Courtyard's origin."""
    pyproject = source.path / "pyproject.toml" if source.path else None
    deps = pyproject.read_text(errors="replace") if pyproject and pyproject.exists() else ""
    text = "\n".join([os.path.realpath(python), *EXTRA_REQUIREMENTS,
                      "path" if source.path else f"pypi:{source.version}", deps])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# -- the build ---------------------------------------------------------------------------------
class UserEnv:
    """One users' environment directory: check it, build or update it, run from it."""

    def __init__(self, path: Path, python: str, source: Source | None = None) -> None:
        self.path = Path(path)
        self.python = python
        self.source = source or courtyard_source()
        self.requirements = requirements_key(python, self.source)

    @property
    def cmd(self) -> list[str]:
        return [str(self.path / "bin" / "courtyard-singleuser")]

    @property
    def marker(self) -> Path:
        return self.path / MARKER

    def state(self) -> str:
        """'ok' (ready), 'update' (only Courtyard changed) or 'build' (missing or stale)."""
        try:
            marker = json.loads(self.marker.read_text())
        except (OSError, ValueError):
            return "build"
        if marker.get("requirements") != self.requirements or not \
                (self.path / "bin" / "python").exists():
            return "build"
        if marker.get("source") != self.source.key or not Path(self.cmd[0]).exists():
            return "update"
        return "ok"

    async def ensure(self, progress: ProgressLog) -> None:
        """Make the env current; events go to ``progress`` (the last one has "ready")."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.parent / f".{self.path.name}.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
            state = self.state()  # again: another process may have built it meanwhile
            if state == "build":
                await self._build(progress)
            elif state == "update":
                await self._update(progress)
        finally:
            os.close(fd)  # releases the lock
        progress.emit({"progress": 40, "message": "The users' Python environment is ready",
                       "ready": True})

    async def _build(self, progress: ProgressLog) -> None:
        progress.emit({"progress": 2, "message": PREPARING})
        _open_parents(self.path)
        shutil.rmtree(self.path, ignore_errors=True)  # a venv records its path: build in place
        await self._run([self.python, "-m", "venv", str(self.path)], "creating the venv",
                        hint=" (on Debian: apt-get install python3-venv)")
        progress.emit({"progress": 8, "message": f"{PREPARING} Created a virtualenv from "
                       f"{self.python}"})
        await self._install(progress, [], 8)
        self._finish()
        progress.emit({"progress": 38, "message": f"{PREPARING} Done"})

    async def _update(self, progress: ProgressLog) -> None:
        progress.emit({"progress": 5, "message": UPDATING})
        await self._install(progress, ["--no-deps", "--force-reinstall"], 10)
        self._finish()

    async def _install(self, progress: ProgressLog, flags: list[str], start: int) -> None:
        counter = {"n": 0}

        def on_line(line: str) -> None:
            if line.startswith(("Collecting ", "Processing ")):  # from an index, or a file
                counter["n"] += 1
                if counter["n"] % 10 == 0:
                    progress.emit({"progress": min(30, start + 2 + counter["n"] // 5),
                                   "message": f"{PREPARING} Fetching packages "
                                   f"({counter['n']} so far)"})
            elif line.startswith("Installing collected packages"):
                progress.emit({"progress": 32, "message": f"{PREPARING} Installing "
                               f"{counter['n'] or 'the'} packages"})

        python = str(self.path / "bin" / "python")
        with tempfile.TemporaryDirectory(prefix="courtyard-src-") as tmp:
            where = None
            if self.source.path is not None:  # a copy: pip must not write into the tree
                where = Path(tmp) / "courtyard"
                for file in _tree_files(self.source.path):
                    target = where / file.relative_to(self.source.path)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(file, target)
            progress.emit({"progress": start + 2, "message": f"{PREPARING} Installing "
                           "Jupyter Server, JupyterLab, ipykernel and Courtyard"})
            await self._run([python, *PIP, *flags, self.source.requirement(where),
                             *([] if flags else EXTRA_REQUIREMENTS)], "pip install",
                            on_line=on_line)

    def _finish(self) -> None:
        _chmod_readable(self.path)
        if not Path(self.cmd[0]).exists():
            raise SpawnError(f"building the users' environment: {self.cmd[0]} is missing "
                             "after the install")
        self.marker.write_text(json.dumps({
            "requirements": self.requirements, "source": self.source.key,
            "python": self.python, "courtyard": self.source.version}, indent=1) + "\n")
        self.marker.chmod(0o644)

    async def _run(self, cmd: list[str], what: str, hint: str = "",
                   on_line: Callable[[str], None] | None = None) -> None:
        """Run a build step; its output goes to ``<env>.log``; failure raises with its tail."""
        log_path = self.path.with_name(f"{self.path.name}.log")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV",
                                                                 "PYTHONHOME")}
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=env)
        lines: list[str] = []
        assert proc.stdout is not None
        try:
            with log_path.open("a") as log:
                log.write(f"$ {' '.join(cmd)}\n")
                async for raw in proc.stdout:
                    line = raw.decode(errors="replace").rstrip()
                    log.write(line + "\n")
                    lines = [*lines[-30:], line]
                    if on_line is not None:
                        on_line(line)
            code = await proc.wait()
        except BaseException:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        if code != 0:
            tail = "\n".join(lines[-8:])
            raise UserEnvError(f"building the users' environment in {self.path} failed: "
                               f"{what} exited with status {code}{hint}. Last output:\n{tail}"
                               f"\n(full output in {log_path})", "\n".join(lines))


class UserEnvError(SpawnError):
    """A failed build; ``output`` is the tail of the step's output (for the server log)."""

    def __init__(self, message: str, output: str) -> None:
        super().__init__(message)
        self.output = output


def _open_parents(path: Path) -> None:
    """Create the env's parent directories, searchable by everyone."""
    for parent in reversed([path.parent, *path.parent.parents]):
        if not parent.exists():
            parent.mkdir(mode=0o755)
            parent.chmod(0o755)


def _chmod_readable(root: Path) -> None:
    """``chmod -R a+rX``: users read everything and run what the owner may run."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames, ""]:
            p = os.path.join(dirpath, name) if name else dirpath
            if os.path.islink(p):
                continue
            mode = os.stat(p).st_mode
            extra = stat.S_IRGRP | stat.S_IROTH
            if stat.S_ISDIR(mode) or mode & stat.S_IXUSR:
                extra |= stat.S_IXGRP | stat.S_IXOTH
            if mode & extra != extra:
                os.chmod(p, stat.S_IMODE(mode) | extra)


# -- one build per hub -------------------------------------------------------------------------
_builds: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Path, tuple[
    asyncio.Task[None], ProgressLog]]] = weakref.WeakKeyDictionary()
_ready: set[tuple[Path, str]] = set()


def ensure_user_env(env: UserEnv) -> tuple[asyncio.Task[None], ProgressLog] | None:
    """The running (or just started) build of ``env``, or None when it is ready already.

    Every spawn that needs the env awaits the same task (shielded: a cancelled spawn does
    not cancel the build others wait for) and follows the same progress.
    """
    key = (env.path, env.source.key)
    if key in _ready:
        return None
    builds = _builds.setdefault(asyncio.get_running_loop(), {})
    running = builds.get(env.path)
    if running is not None and not running[0].done():
        return running
    if env.state() == "ok":
        _ready.add(key)
        return None
    progress = ProgressLog()

    async def build() -> None:
        try:
            await env.ensure(progress)
        except BaseException as e:
            progress.emit({"progress": 40, "failed": True, "message": str(e)})
            raise
        _ready.add(key)

    task = asyncio.ensure_future(build())
    task.add_done_callback(_retrieve)
    builds[env.path] = (task, progress)
    return task, progress


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # reported by the spawns that await it
