"""A baseline hub for the benchmarks: Courtyard as it was at a git ref (``courtyard@REF``),
exported with ``git archive`` and installed in a venv of its own, to measure this checkout
against the code before a change (``--baseline REF``; see bench/README.md)."""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
COURTYARD_BIN = BENCH_DIR / ".venv-courtyard" / "bin" / "courtyard"  # this checkout's hub
BASELINE_PREFIX = "courtyard@"  # a baseline hub is named courtyard@REF
BASELINE_DIR = BENCH_DIR / ".baseline"  # <commit>/: the source of REF, from git archive
BASELINE_VENVS = BENCH_DIR / ".venv-baseline"  # <commit>/: a venv with that source installed


def is_baseline(hub: str) -> bool:
    """Whether `hub` names a baseline, courtyard@REF."""
    return hub.startswith(BASELINE_PREFIX)


def is_courtyard(hub: str) -> bool:
    """Whether `hub` is Courtyard, this checkout's or a baseline's."""
    return hub == "courtyard" or is_baseline(hub)


def baseline_hub(ref: str) -> str:
    """The hub name of the baseline at git ref `ref`."""
    return BASELINE_PREFIX + ref


def checked_baseline_hub(parser: argparse.ArgumentParser, ref: str | None) -> str | None:
    """The baseline hub named by ``--baseline REF`` (None without one); a REF that names no
    commit ends the script with ``parser``'s usage error."""
    if not ref:
        return None
    hub = baseline_hub(ref)
    try:
        baseline(hub)
    except ValueError as exc:
        parser.error(str(exc))
    return hub


@functools.cache
def baseline(hub: str) -> Baseline:
    """The Baseline a courtyard@REF hub runs; ValueError if REF names no commit."""
    ref = hub.removeprefix(BASELINE_PREFIX)
    found = subprocess.run(
        ["git", "-C", str(BENCH_DIR.parent), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if found.returncode != 0 or not ref:
        raise ValueError(f"{ref!r} names no commit of {BENCH_DIR.parent}")
    return Baseline(ref, found.stdout.strip())


def installed_versions(python: Path) -> dict[str, str]:
    """Distribution name -> version in the environment of `python` (courtyard left out)."""
    listing = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m\n"
         "for d in m.distributions(): print(d.metadata['Name'], d.version)"],
        capture_output=True, text=True, check=True, cwd="/",
    )
    names = (line.split(" ", 1) for line in listing.stdout.splitlines() if " " in line)
    return {name.lower(): version for name, version in names if name.lower() != "courtyard"}


@dataclass(frozen=True)
class Baseline:
    """Courtyard as it was at a git ref, to measure this checkout against the code before a change.

    The source comes from `git archive` (no checkout, no worktree: the repository is shared)
    and is installed non-editable into a venv of its own, built once per commit and reused.
    Its dependencies are pinned to bench/.venv-courtyard's versions where it has the same
    ones, with the same interpreter, so that the two differ in Courtyard's code only. Its
    `courtyard serve` runs its own proxy: the hub starts `python -m courtyard.proxy` with the
    venv's interpreter.
    """

    ref: str
    commit: str

    @property
    def source(self) -> Path:
        return BASELINE_DIR / self.commit

    @property
    def venv(self) -> Path:
        return BASELINE_VENVS / self.commit

    @property
    def short(self) -> str:
        return self.commit[:7]

    def bin(self, name: str) -> Path:
        return self.venv / "bin" / name

    def ensure(self) -> None:
        """Export and install the baseline unless a complete build of its commit exists."""
        done = self.venv / ".built"  # written last: a venv without it is rebuilt
        if done.exists():
            return
        print(f"baseline {self.ref}: building {self.venv} from {self.short} (once)", flush=True)
        self._export()
        shutil.rmtree(self.venv, ignore_errors=True)
        subprocess.run([str(self._interpreter()), "-m", "venv", str(self.venv)], check=True)
        pins = self.venv / "pins.txt"
        pins.write_text("".join(f"{name}=={version}\n" for name, version in self._pinned().items()))
        pip = [str(self.bin("python")), "-m", "pip", "install", "--quiet"]
        if subprocess.run([*pip, "-c", str(pins), str(self.source)], cwd=self.venv).returncode:
            print(f"baseline {self.ref}: not installable with bench/.venv-courtyard's versions; "
                  "installing with pip's choice", file=sys.stderr)
            pins.write_text("")
            subprocess.run([*pip, str(self.source)], cwd=self.venv, check=True)
        self._check()
        done.write_text(f"{self.commit}\n")

    def version_differences(self) -> dict[str, tuple[str, str]]:
        """Libraries both venvs have at different versions: name -> (bench/.venv-courtyard's,
        the baseline's). Libraries only one has (the spawner packages bench/cluster.py adds,
        a dependency dropped since) are left out: neither hub imports what it does not use."""
        new_python = COURTYARD_BIN.parent / "python"
        if not new_python.exists():
            return {}
        new, old = installed_versions(new_python), installed_versions(self.bin("python"))
        return {
            name: (new[name], old[name])
            for name in sorted(new.keys() & old.keys())
            if new[name] != old[name] and name not in ("pip", "setuptools", "wheel")
        }

    def _export(self) -> None:
        """`git archive REF | tar -x` into bench/.baseline/<commit>, whole or not at all."""
        if self.source.exists():
            return
        BASELINE_DIR.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(dir=BASELINE_DIR, prefix=f".{self.short}-"))
        try:
            archive = subprocess.Popen(
                ["git", "-C", str(BENCH_DIR.parent), "archive", self.commit], stdout=subprocess.PIPE
            )
            assert archive.stdout is not None
            untar = subprocess.run(["tar", "-x", "-C", str(partial)], stdin=archive.stdout)
            archive.stdout.close()
            if archive.wait() or untar.returncode:
                raise RuntimeError(f"git archive {self.commit} | tar -x failed")
            partial.rename(self.source)
        finally:
            shutil.rmtree(partial, ignore_errors=True)

    def _interpreter(self) -> Path:
        """The Python bench/.venv-courtyard was made with, else $PYTHON or python3."""
        with contextlib.suppress(OSError):
            for line in (COURTYARD_BIN.parent.parent / "pyvenv.cfg").read_text().splitlines():
                key, _, value = line.partition("=")
                if key.strip() == "executable" and Path(value.strip()).exists():
                    return Path(value.strip())
        return Path(shutil.which(os.environ.get("PYTHON", "python3")) or sys.executable)

    def _pinned(self) -> dict[str, str]:
        """bench/.venv-courtyard's library versions, as constraints (pip's own tools left free)."""
        new_python = COURTYARD_BIN.parent / "python"
        if not new_python.exists():
            return {}
        versions = installed_versions(new_python)
        return {k: v for k, v in versions.items() if k not in ("pip", "setuptools", "wheel")}

    def _check(self) -> None:
        """The venv imports the baseline's own courtyard, not this checkout's."""
        where = subprocess.run(
            [str(self.bin("python")), "-c", "import courtyard; print(courtyard.__file__)"],
            capture_output=True, text=True, check=True, cwd=self.venv,
            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        ).stdout.strip()
        if not where.startswith(str(self.venv)):
            raise RuntimeError(f"baseline {self.ref}: courtyard imports from {where}, not {self.venv}")
