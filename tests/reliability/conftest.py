"""Fixtures for the fault-injection tests: the spawner tests' real servers (mocksu) and
their system users (deleted at the end of the session, as root)."""

from tests.hubprocess import run_hub  # noqa: F401  (courtyard -f ... processes)
from tests.reliability.serve import hubs  # noqa: F401  (courtyard serve processes)
from tests.spawners.conftest import (  # noqa: F401  (fixtures used here)
    _made_names,
    gate,
    hub,
    mocksu_cmd,
    open_dir,
    spawn_config,
    spawn_hub,
    uname,
)
