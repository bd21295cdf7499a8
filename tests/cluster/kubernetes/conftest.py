"""A real single-node Kubernetes for KubeSpawner's tests, started once per session.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd and kubelet run from
the binaries ``scripts/k8s/build.sh`` caches (built from Debian's ``kubernetes`` source
package), in a temp dir, on private loopback ports (``scripts/k8s/cluster.py``). Pods get
10.244.0.x on the bridge cni0, whose address 10.244.0.1 is where the test hubs listen so that
servers in pods reach them. Each test gets its own namespace.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import tool_missing

ROOT = Path(__file__).resolve().parents[3]


def _cluster_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "courtyard_k8s_cluster", ROOT / "scripts" / "k8s" / "cluster.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


k8s = _cluster_module()
GATEWAY: str = k8s.GATEWAY
IMAGE: str = k8s.NOTEBOOK_IMAGE


def _engine_missing() -> str | None:
    """Why this machine cannot run the cluster, or None."""
    if os.geteuid() != 0:
        return "the Kubernetes cluster needs root (containerd, the CNI bridge)"
    for tool in ("etcd", "containerd", "ctr", "runc", "ip", "openssl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/ci/kubernetes.sh installs it)"
    if not Path("/usr/lib/cni/bridge").exists():
        return "containernetworking-plugins is not installed (scripts/ci/kubernetes.sh)"
    if not k8s.NOTEBOOK_TAR.exists():
        return f"the notebook image {k8s.NOTEBOOK_TAR} is missing (scripts/ci/kubernetes.sh)"
    return None


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The running cluster (``scripts/k8s/cluster.py``'s ``Cluster``), node Ready."""
    problem = _engine_missing()
    if problem is not None:
        tool_missing(problem)
    try:
        bindir = k8s.build(cached_only=True)  # CI builds them in scripts/ci/kubernetes.sh
    except subprocess.CalledProcessError:
        tool_missing("the Kubernetes binaries are not built (scripts/ci/kubernetes.sh)")
    if k8s.stale_bridge():
        subprocess.run(["ip", "link", "del", k8s.BRIDGE], check=True)
    if subprocess.run(["ip", "link", "show", k8s.BRIDGE], capture_output=True).returncode == 0:
        pytest.fail(f"{k8s.BRIDGE} already exists: another cluster runs on this machine")
    cluster = k8s.Cluster(bindir, tmp_path_factory.mktemp("k8s"))
    try:
        cluster.start((k8s.pause_image(bindir), k8s.NOTEBOOK_TAR))
        yield cluster
    finally:
        cluster.stop()


_names = itertools.count(1)


@pytest.fixture
def namespace(kube: Any) -> Iterator[str]:
    """A namespace of this test's own, deleted (pods first, at once) afterwards."""
    name = f"courtyard-{os.getpid()}-{next(_names)}"
    kube.request("POST", "/api/v1/namespaces",
                 {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    pods = kube.request("GET", f"/api/v1/namespaces/{name}/pods") or {"items": []}
    for pod in pods["items"]:
        kube.request("DELETE", f"/api/v1/namespaces/{name}/pods/{pod['metadata']['name']}",
                     {"gracePeriodSeconds": 0})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (
            kube.request("GET", f"/api/v1/namespaces/{name}/pods") or {}).get("items"):
        time.sleep(0.5)
    kube.request("DELETE", f"/api/v1/namespaces/{name}")


@pytest.fixture
def kubeconfig(kube: Any, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``KUBECONFIG`` for the hub processes: KubeSpawner's client reads it (it is not
    running in a pod, so it does not find a service account)."""
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig))
    return Path(kube.kubeconfig)


def hub_config(namespace: str, extra: str = "") -> str:
    """The config lines of a hub running KubeSpawner on the test cluster: the hub listens on
    cni0's address (where pods reach it), the notebook image, never pulled, uid 1000."""
    return (
        "c.JupyterHub.spawner_class = 'kubespawner.KubeSpawner'\n"
        f"c.JupyterHub.hub_ip = {GATEWAY!r}\n"
        "c.JupyterHub.cleanup_servers = False\n"
        # the hub is reachable from the pod bridge, which is not loopback
        "c.DummyAuthenticator.allow_insecure = True\n"
        f"c.KubeSpawner.namespace = {namespace!r}\n"
        f"c.KubeSpawner.image = {IMAGE!r}\n"
        "c.KubeSpawner.image_pull_policy = 'Never'\n"
        "c.KubeSpawner.uid = 1000\n"
        "c.KubeSpawner.start_timeout = 120\n"
        "c.KubeSpawner.http_timeout = 60\n"
        "c.KubeSpawner.delete_grace_period = 1\n"
        "c.KubeSpawner.poll_interval = 2\n" + extra)
