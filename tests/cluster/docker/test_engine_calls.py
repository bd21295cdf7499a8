"""DockerSpawner's engine calls of different servers run at once on Courtyard
(``courtyard.compat.engines.docker.attach``): DockerSpawner itself runs every docker-py call
of every spawner in one thread, so one server's slow ``docker stop`` would hold up every
other server's start until it ends."""

from __future__ import annotations

from typing import Any

import pytest

from tests.cluster.docker.conftest import Engine
from tests.cluster.docker.test_dockerspawner import create_user
from tests.hubprocess import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

# slow's container ignores the stop signal: `docker stop` waits its stop timeout (30 s),
# then kills it
SLOW_STOP = """
def slow_stop(spawner):
    if spawner.user.name == 'slow':
        spawner.extra_create_kwargs = {'stop_signal': 'SIGWINCH', 'stop_timeout': 30}
c.Spawner.pre_spawn_hook = slow_stop
c.DockerSpawner.remove = True
c.JupyterHub.slow_spawn_timeout = 0
"""


def test_a_slow_stop_does_not_hold_up_another_start(docker_hub: Any, clean: Engine) -> None:
    hub = docker_hub(SLOW_STOP)
    for name in ("slow", "quick"):
        create_user(hub, name)
    hub.start_server("slow")
    assert hub.api("DELETE", "/users/slow/server").status_code == 202
    # slow's `docker stop` is under way (its container still there) ...
    wait_for(lambda: (hub.server("slow") or {}).get("pending") == "stop", "slow's stop")
    r = hub.api("POST", "/users/quick/server")
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("quick")
    # ... and quick's server started meanwhile: its engine calls did not queue behind it
    assert (hub.server("slow") or {}).get("pending") == "stop"
    assert clean.container("slow") is not None
    # the stop still ends with the container gone
    wait_for(lambda: hub.server("slow") is None, "slow's stop to end", 90)
    assert clean.container("slow") is None
    hub.stop_server("quick")
    assert clean.container("quick") is None
