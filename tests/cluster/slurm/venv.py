"""The environment Slurm jobs run the notebook server from.

A job runs as the user's own system account, which cannot reach the pyenv interpreter
under /root: the venv is made from Debian's ``/usr/bin/python3`` in a world-readable
directory, ``/var/cache/courtyard-cluster/slurm-venv-<hash>`` (the hash covers the
requirements, so a change builds a new one and the old stays usable meanwhile). It holds
batchspawner (``batchspawner-singleuser``), JupyterHub (``jupyterhub-singleuser``),
Jupyter Server and JupyterLab. rfc3987-syntax is removed: it costs seconds at every server
start (components.md section 9). ``scripts/ci/slurm.sh`` builds it ahead of the tests.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
REQUIREMENTS = ["batchspawner>=1.3,<2", "jupyterhub>=5,<7", "jupyter_server>=2.13",
                "jupyterlab>=4.0", "requests>=2"]
CACHE = Path("/var/cache/courtyard-cluster")


def venv_path() -> Path:
    key = hashlib.sha256("\n".join([SYSTEM_PYTHON, *REQUIREMENTS]).encode()).hexdigest()[:12]
    return CACHE / f"slurm-venv-{key}"


def usable(path: Path) -> bool:
    """Built to the end (``.complete``) and importable."""
    python = path / "bin" / "python"
    return (path / ".complete").exists() and python.exists() and subprocess.run(
        [str(python), "-c", "import batchspawner, jupyterhub, jupyter_server, jupyterlab"],
        capture_output=True).returncode == 0


def ensure_venv() -> Path:
    """The venv, built now if missing (about a minute; a lock keeps parallel runs apart)."""
    path = venv_path()
    if usable(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o755)
    with open(path.parent / ".slurm-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if usable(path):
            return path
        shutil.rmtree(path, ignore_errors=True)
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(path)], check=True)
        pip = [str(path / "bin" / "python"), "-m", "pip", "-q", "--disable-pip-version-check"]
        done = subprocess.run([*pip, "install", *REQUIREMENTS], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"pip install into {path} failed:\n{done.stdout}{done.stderr}")
        subprocess.run([*pip, "uninstall", "-y", "rfc3987-syntax"], capture_output=True)
        subprocess.run(["chmod", "-R", "a+rX", str(path)], check=True)
        (path / ".complete").write_text("\n".join(REQUIREMENTS) + "\n")
    return path


if __name__ == "__main__":
    print(ensure_venv())
    sys.exit(0)
