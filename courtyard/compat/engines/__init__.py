"""What Courtyard adds to JupyterHub's cluster spawners, one module per engine.

A JupyterHub spawner runs unmodified (:mod:`courtyard.compat.spawner`); what JupyterHub
cannot give (the server's log for ``GET .../logs``, engine events as spawn progress, the
account policy for jobs run as the user) comes from the module named after the spawner's
package here (``batchspawner`` -> :mod:`.batch`, ``dockerspawner`` -> :mod:`.docker`,
``kubespawner`` -> :mod:`.kubernetes`). Each module may define, all optional::

    async def read_log(jh, tail: int | None) -> str | None
    async def progress(jh) -> AsyncIterator[ProgressEvent]   # replaces jh.progress()
    async def check_start(adapter, jh) -> None               # before jh.start(); raise SpawnError to refuse
    async def check_adopted(adapter, jh) -> None             # a server found at hub start
    def attach(jh) -> None                                    # once, on the new spawner object

A wrapper (``wrapspawner``) is looked through: its child decides.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

ENGINES = {
    "batchspawner": "courtyard.compat.engines.batch",
    "dockerspawner": "courtyard.compat.engines.docker",
    "kubespawner": "courtyard.compat.engines.kubernetes",
}


def engine_of(jh: Any) -> tuple[ModuleType, Any] | None:
    """The engine module for ``jh`` (or the child it wraps) and that spawner object."""
    seen: set[int] = set()
    while jh is not None and id(jh) not in seen:
        seen.add(id(jh))
        for klass in type(jh).__mro__:
            module = ENGINES.get(klass.__module__.partition(".")[0])
            if module is not None:
                try:
                    return importlib.import_module(module), jh
                except ModuleNotFoundError as e:
                    if e.name != module:
                        raise
                    return None
        jh = getattr(jh, "child_spawner", None)
    return None


def hook(jh: Any, name: str) -> tuple[Any, Any] | None:
    """``(function, spawner)`` for the engine hook ``name``, or None when there is none."""
    found = engine_of(jh)
    if found is None:
        return None
    module, spawner = found
    function = getattr(module, name, None)
    return (function, spawner) if function is not None else None
