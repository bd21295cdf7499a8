"""The hub itself in the cluster: deploy/kubernetes/'s Deployment (the hub image of
``scripts/images/hub.sh``), with its ServiceAccount and Role, its database URL from the
Secret (PostgreSQL), spawning users' pods with KubeSpawner."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.cluster.kubernetes.conftest import GATEWAY, IMAGE, ROOT, k8s
from tests.cluster.kubernetes.test_kubespawner import kubectl, pod_of, server
from tests.conftest import Databases, free_port, tool_missing
from tests.hubprocess import TOKEN, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(420)]


def test_the_hub_deployment_runs_in_the_cluster(kube: Any, namespace: str, tmp_path: Path,
                                                postgres_server: str) -> None:
    """hub.yaml's Deployment runs the hub image as uid 1000 with rbac.yaml's account (its
    token mounted as a pod's), on PostgreSQL through the Secret's URL; a user's server is
    started in its own pod and reached through the hub's proxy. The hub pod uses the host's
    network (this test cluster has no kube-proxy to reach the apiserver's Service)."""
    if not k8s.HUB_TAR.exists():
        tool_missing(f"the hub image {k8s.HUB_TAR} is missing (scripts/ci/podman.sh)")
    kube.import_image(k8s.HUB_TAR)
    manifests = ROOT / "deploy" / "kubernetes"
    applied = kubectl(kube, "apply", f"--namespace={namespace}", "-f",
                      str(manifests / "rbac.yaml"))
    assert applied.returncode == 0, applied.stderr

    def token_secret() -> str | None:
        secrets = kube.request("GET", f"/api/v1/namespaces/{namespace}/secrets") or {}
        return next((s["metadata"]["name"] for s in secrets.get("items", [])
                     if s["type"] == "kubernetes.io/service-account-token"
                     and s["metadata"].get("annotations", {}).get(
                         "kubernetes.io/service-account.name") == "courtyard-hub"), None)

    secret_name = wait_for(token_secret, "the service account's token")
    db_url = Databases("postgresql", postgres_server).new(tmp_path)
    secret = yaml.safe_load((manifests / "secret.yaml").read_text())
    secret["stringData"]["db-url"] = db_url

    port, hub_port = free_port(), free_port()
    api = f"{kube.server}"
    config = f"""\
import os
c.JupyterHub.db_url = os.environ["COURTYARD_DB_URL"]
c.JupyterHub.data_files_path = "/srv/courtyard"
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = {GATEWAY!r}
c.JupyterHub.hub_port = {hub_port}
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.allow_insecure = True
c.JupyterHub.api_tokens = {{{TOKEN!r}: "admin"}}
c.Authenticator.admin_users = {{"admin"}}
c.JupyterHub.slow_spawn_timeout = 0
c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
c.KubeSpawner.namespace = os.environ["POD_NAMESPACE"]
c.KubeSpawner.k8s_api_host = {api!r}
c.KubeSpawner.image = {IMAGE!r}
c.KubeSpawner.image_pull_policy = "Never"
c.KubeSpawner.uid = 1000
c.KubeSpawner.start_timeout = 120
c.KubeSpawner.delete_grace_period = 1
"""
    docs = [d for d in yaml.safe_load_all((manifests / "hub.yaml").read_text()) if d]
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    config_map["data"]["jupyterhub_config.py"] = config
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    # what this single-node test cluster needs: the host's network (the apiserver on
    # loopback), no volume provisioner, no ServiceAccount admission to mount the token
    pod["hostNetwork"] = True
    pod["dnsPolicy"] = "ClusterFirstWithHostNet"
    hub = pod["containers"][0]
    hub["imagePullPolicy"] = "Never"
    hub["ports"] = [{"name": "proxy-public", "containerPort": port},
                    {"name": "hub", "containerPort": hub_port}]
    hub["volumeMounts"].append({"name": "token", "readOnly": True,
                                "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"})
    pod["volumes"] = [v for v in pod["volumes"] if v["name"] != "data"] + [
        {"name": "data", "emptyDir": {}},
        {"name": "token", "secret": {"secretName": secret_name}}]
    (tmp_path / "hub.json").write_text(json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": [secret, config_map, deployment]}))
    applied = kubectl(kube, "apply", f"--namespace={namespace}", "-f",
                      str(tmp_path / "hub.json"))
    assert applied.returncode == 0, applied.stderr

    def hub_pod() -> dict[str, Any] | None:
        pods = kube.request("GET", f"/api/v1/namespaces/{namespace}/pods"
                            "?labelSelector=app.kubernetes.io/component%3Dhub") or {}
        return next(iter(pods.get("items", [])), None)

    def hub_log() -> str:
        found = hub_pod()
        if found is None:
            return "(no hub pod)"
        text = kube.request("GET", f"/api/v1/namespaces/{namespace}/pods/"
                            f"{found['metadata']['name']}/log")
        return str(text)[-3000:]

    try:
        check_hub(kube, namespace, port, hub_pod, hub_log)
        import psycopg

        with psycopg.connect(db_url) as conn:  # the hub's records are in PostgreSQL
            names = {row[0] for row in conn.execute("SELECT name FROM users")}
        assert "heidi" in names
    finally:  # no new hub pod while the namespace is cleared
        kube.request("DELETE", f"/apis/apps/v1/namespaces/{namespace}/deployments/"
                     "courtyard-hub", {"propagationPolicy": "Background"})


def check_hub(kube: Any, namespace: str, port: int, hub_pod: Any, hub_log: Any) -> None:
    """The hub in its pod answers, as the Deployment says, and starts a user's server."""
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"token {TOKEN}"}
    try:
        wait_for(lambda: httpx.get(f"{url}/hub/api/", timeout=5).status_code == 200,
                 "the hub in its pod", timeout=180)
    except BaseException:
        print(hub_log())
        raise
    found = hub_pod()
    assert found is not None
    assert found["spec"]["securityContext"]["runAsUser"] == 1000
    assert found["spec"]["serviceAccountName"] == "courtyard-hub"

    assert httpx.post(f"{url}/hub/api/users/heidi", headers=headers).status_code == 201
    r = httpx.post(f"{url}/hub/api/users/heidi/server", headers=headers, json={})
    assert r.status_code == 202, r.text

    class View:  # server() reads the hub's API like a HubProcess
        def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
            return httpx.request(method, f"{url}/hub/api{path}", headers=headers, **kw)

    wait_for(lambda: (s := server(View(), "heidi")) and s["ready"], "heidi's server",  # type: ignore[arg-type]
             timeout=180)
    user_pod = pod_of(kube, namespace, "heidi")
    assert user_pod is not None and user_pod["status"]["phase"] == "Running"
    token = httpx.post(f"{url}/hub/api/users/heidi/tokens", headers=headers,
                       json={"note": "test"}).json()["token"]
    status = httpx.get(f"{url}/user/heidi/api/status",
                       headers={"Authorization": f"token {token}"}, timeout=30)
    assert status.status_code == 200 and "started" in status.json()
