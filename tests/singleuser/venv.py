"""The virtualenv real single-user servers run from in the tests.

Made from Debian's ``/usr/bin/python3`` (system users spawned by the hub cannot reach a
pyenv interpreter under /root) in a world-readable directory, once per set of
requirements, and reused: ``/var/cache/courtyard-tests/singleuser-<hash>`` unless
``$COURTYARD_TEST_VENV`` names another. CI may build it ahead of the tests with
``python -m tests.singleuser.venv``.

It holds Jupyter Server, JupyterLab, ipykernel and JupyterHub (for the real
``jupyterhub-singleuser``), but not Courtyard: the tests put a copy of the package under
test on ``PYTHONPATH``. rfc3987-syntax stays installed, as a user would have it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
REQUIREMENTS = ["jupyter_server>=2.13", "jupyterlab>=4.0", "ipykernel>=6.0",
                "jupyterhub>=5.0", "tornado>=6.2"]
CACHE = Path("/var/cache/courtyard-tests")


def venv_path() -> Path:
    override = os.environ.get("COURTYARD_TEST_VENV")
    if override:
        return Path(override)
    key = hashlib.sha256("\n".join([SYSTEM_PYTHON, *REQUIREMENTS]).encode()).hexdigest()[:12]
    return CACHE / f"singleuser-{key}"


def _usable(path: Path) -> bool:
    python = path / "bin" / "python"
    return (path / ".complete").exists() and python.exists() and subprocess.run(
        [str(python), "-c", "import jupyter_server, jupyterlab, ipykernel, jupyterhub"],
        capture_output=True).returncode == 0


def ensure_venv() -> Path:
    """The venv, made now if missing (about a minute; a lock keeps parallel runs apart)."""
    path = venv_path()
    if _usable(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o755)
    with open(path.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _usable(path):
            return path
        # a venv records its own path, so it is built in place; .complete marks it done
        shutil.rmtree(path, ignore_errors=True)
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(path)], check=True)
        done = subprocess.run([str(path / "bin" / "python"), "-m", "pip", "install", "-q",
                               "--disable-pip-version-check", *REQUIREMENTS],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"pip install into {path} failed:\n{done.stdout}{done.stderr}")
        subprocess.run(["chmod", "-R", "a+rX", str(path)], check=True)
        (path / ".complete").write_text("\n".join(REQUIREMENTS) + "\n")
    return path


if __name__ == "__main__":
    print(ensure_venv())
    sys.exit(0)
