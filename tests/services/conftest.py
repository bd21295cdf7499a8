"""Fixtures for the service tests: the spawner tests' real servers (``mocksu.py``) and
system-user names, and hubs as processes, reused."""

from tests.hubprocess import run_hub
from tests.spawners.conftest import _made_names, mocksu_cmd, open_dir, uname

__all__ = ["_made_names", "mocksu_cmd", "open_dir", "run_hub", "uname"]
