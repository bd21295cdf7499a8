"""Fixtures for the JupyterHub compatibility tests: the spawner tests' real hubs and servers."""

from tests.spawners.conftest import (  # noqa: F401 (fixtures used by this folder's tests)
    _made_names,
    gate,
    mocksu_cmd,
    open_dir,
    spawn_config,
    spawn_hub,
    uname,
)
