"""A stop ends when KubeSpawner's shared pod watch sees the pod go
(``courtyard.compat.engines.kubernetes.attach``), not at the next tick of KubeSpawner's
jittered back-off; the pod really is gone from the API by then, and KubeSpawner's own
delete request (with its grace period) is what removed it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.cluster.kubernetes.conftest import hub_config
from tests.cluster.kubernetes.test_kubespawner import QUICK, pod_of, server, start, wait_ready
from tests.hubprocess import run_hub, wait_for

__all__ = ["run_hub"]  # the fixture, used by name

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(420)]


def test_a_stop_ends_when_the_watch_sees_the_pod_go(kube: Any, namespace: str,
                                                     kubeconfig: Path, run_hub: Any) -> None:
    hub = run_hub(hub_config(namespace, QUICK + "c.JupyterHub.log_level = 'DEBUG'\n"))
    start(hub, "erin")
    wait_ready(hub, "erin")
    assert pod_of(kube, namespace, "erin") is not None
    assert hub.api("DELETE", "/users/erin/server").status_code == 202
    wait_for(lambda: server(hub, "erin") is None, "the server to stop")
    # stopped means gone: the API has no such pod any more
    assert pod_of(kube, namespace, "erin") is None
    log = hub.log.read_text()
    # KubeSpawner's own delete request did it, with the configured grace period ...
    assert f"Deleting pod {namespace}/jupyter-erin" in log
    # ... and the stop ended on the watch's word, KubeSpawner's back-off cut short
    gone = f"Pod {namespace}/jupyter-erin is gone (seen by the pod watch)"
    assert gone in log
    assert log.index(gone) < log.index("Stopped server erin")
