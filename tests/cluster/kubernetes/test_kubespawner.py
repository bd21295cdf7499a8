"""KubeSpawner, unmodified, on a real single-node Kubernetes behind real ``courtyard serve``
processes: pods really run on the CNI bridge, the proxy reaches JupyterLab at the pod's IP,
and what Courtyard adds (logs, progress, cancel, restart, no root) works with it."""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import shutil
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from tests.cluster.kubernetes.conftest import GATEWAY, ROOT, hub_config
from tests.conftest import free_port
from tests.hubprocess import TOKEN, HubProcess, run_hub, sign_in, wait_for

__all__ = ["run_hub"]  # the fixture, used by name

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(420)]

POD_NET = ipaddress.ip_network("10.244.0.0/24")
# every start and stop answers 202 at once: what a client sees does not depend on the speed
QUICK = "c.JupyterHub.slow_spawn_timeout = 0\n"


def pod_of(kube: Any, namespace: str, user: str) -> dict[str, Any] | None:
    return kube.request("GET", f"/api/v1/namespaces/{namespace}/pods/jupyter-{user}")


def notebook(pod: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in pod["spec"]["containers"] if c["name"] == "notebook")


def server(hub: HubProcess, user: str) -> dict[str, Any] | None:
    r = hub.api("GET", f"/users/{user}")
    assert r.status_code == 200, r.text
    return r.json()["servers"].get("")


def start(hub: HubProcess, user: str, options: dict[str, Any] | None = None) -> None:
    assert hub.api("POST", f"/users/{user}").status_code in (201, 409)
    r = hub.api("POST", f"/users/{user}/server", json=options or {})
    assert r.status_code == 202, r.text


def wait_ready(hub: HubProcess, user: str) -> dict[str, Any]:
    return wait_for(lambda: (s := server(hub, user)) and s["ready"] and s, f"{user}'s server",
                    timeout=180)


def user_token(hub: HubProcess, user: str) -> str:
    r = hub.api("POST", f"/users/{user}/tokens", json={"note": "test"})
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def start_following(hub: HubProcess, user: str) -> list[dict[str, Any]]:
    """Start ``user``'s server and read its progress stream to the end (ready)."""
    events: list[dict[str, Any]] = []

    def follow() -> None:
        with httpx.stream("GET", f"{hub.url}/hub/api/users/{user}/server/progress",
                          headers={"Authorization": f"token {TOKEN}"}, timeout=180) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))

    start(hub, user)
    reader = threading.Thread(target=follow)
    reader.start()
    wait_ready(hub, user)
    reader.join(60)
    assert not reader.is_alive()
    return events


def test_server_in_a_pod_through_the_proxy(kube: Any, namespace: str, kubeconfig: Path,
                                           run_hub: Any) -> None:
    """A user's server runs in a pod on the bridge as uid 1000; the user reaches JupyterLab
    through the hub's proxy (OAuth with the hub over the bridge), runs code in a kernel over a
    WebSocket; stopping deletes the pod."""
    hub = run_hub(hub_config(namespace, QUICK))
    start(hub, "alice")
    model = wait_ready(hub, "alice")
    pod = pod_of(kube, namespace, "alice")
    assert pod is not None and pod["status"]["phase"] == "Running"
    ip = pod["status"]["podIP"]
    assert ipaddress.ip_address(ip) in POD_NET
    assert notebook(pod)["securityContext"]["runAsUser"] == 1000
    assert notebook(pod)["image"] == "localhost/courtyard-notebook:latest"
    assert model["url"] == "/user/alice/"

    with httpx.Client(follow_redirects=True, timeout=60) as browser:
        page = sign_in(hub, browser, f"{hub.url}/user/alice/lab", "alice")
        assert page.status_code == 200, page.text[:500]
        assert str(page.url) == f"{hub.url}/user/alice/lab"
        assert "JupyterLab" in page.text

    token = user_token(hub, "alice")
    headers = {"Authorization": f"token {token}"}
    base = f"{hub.url}/user/alice/api"
    status = httpx.get(f"{base}/status", headers=headers, timeout=30)
    assert status.status_code == 200 and "started" in status.json()
    kernel = httpx.post(f"{base}/kernels", headers=headers, json={}, timeout=60)
    assert kernel.status_code == 201, kernel.text
    ws_url = (f"{base}/kernels/{kernel.json()['id']}/channels?session_id={uuid.uuid4().hex}"
              .replace("http://", "ws://"))
    with ws_connect(ws_url, additional_headers=headers, open_timeout=30) as ws:
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "alice",
                       "session": uuid.uuid4().hex, "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": "import os; print(os.getuid() * 0 + 6 * 7, os.getuid())",
                        "silent": False}}))
        printed = ""
        for _ in range(200):  # bounded: status, input echo, stream, reply
            reply = json.loads(ws.recv(timeout=60))
            if reply.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if reply["msg_type"] == "stream":
                printed += reply["content"]["text"]
            if reply["msg_type"] == "execute_reply":
                break
    assert printed == "42 1000\n"

    assert hub.api("DELETE", "/users/alice/server").status_code == 202
    wait_for(lambda: server(hub, "alice") is None, "the server to stop")
    assert pod_of(kube, namespace, "alice") is None


def test_logs_and_progress_from_the_pod(kube: Any, namespace: str, kubeconfig: Path,
                                        run_hub: Any) -> None:
    """The spawn's progress stream carries the pod's own events (scheduled, image, started),
    and the logs endpoint shows the notebook container's log."""
    hub = run_hub(hub_config(namespace, QUICK))
    assert hub.api("GET", "/users/bob/server/logs").status_code == 404  # no user yet
    events = start_following(hub, "bob")
    messages = [e.get("message", "") for e in events]
    node = subprocess.run(["hostname"], capture_output=True, text=True).stdout.strip()
    assert f"Pod scheduled on node {node}" in messages, messages
    assert any(m.startswith("Image ready:") and "already present" in m for m in messages)
    assert any(m.startswith("Container started") for m in messages), messages
    assert events[-1]["ready"] is True and events[-1]["progress"] == 100

    log = wait_for(lambda: (r := hub.api("GET", "/users/bob/server/logs")).status_code == 200
                   and "/user/bob/" in r.text and r.text, "the pod's log")
    assert "Jupyter Server" in log
    pod_log = kube.request("GET", f"/api/v1/namespaces/{namespace}/pods/jupyter-bob/log"
                           "?container=notebook")
    assert log.splitlines()[0] == pod_log.splitlines()[0]
    last = hub.api("GET", "/users/bob/server/logs", params={"tail": 1})
    assert last.status_code == 200 and len(last.text.strip().splitlines()) == 1


PROFILES = """
c.KubeSpawner.profile_list = [
    {'display_name': 'Small notebook', 'slug': 'small', 'default': True,
     'kubespawner_override': {'environment': {'COURTYARD_PROFILE': 'small'}}},
    {'display_name': 'Large notebook', 'slug': 'large',
     # small requests: both test pods fit on the 2-CPU node whatever their limits
     'kubespawner_override': {'environment': {'COURTYARD_PROFILE': 'large'},
                              'mem_limit': '3G', 'mem_guarantee': '64M',
                              'cpu_guarantee': 0.1},
     'profile_options': {
         'cpu': {'display_name': 'CPUs', 'choices': {
             'one': {'display_name': 'One CPU', 'kubespawner_override': {'cpu_limit': 1}},
             'two': {'display_name': 'Two CPUs', 'kubespawner_override': {'cpu_limit': 2}}}}}},
]
"""


def test_profile_form_and_user_options_reach_the_pod(kube: Any, namespace: str,
                                                     kubeconfig: Path, run_hub: Any) -> None:
    """``profile_list`` is the spawn form; the profile chosen there, or given as
    ``user_options`` through the API, is what the pod's spec says."""
    hub = run_hub(hub_config(namespace, QUICK + PROFILES))
    with httpx.Client(follow_redirects=True, timeout=60) as browser:
        form = sign_in(hub, browser, f"{hub.url}/hub/spawn", "carol")
        assert form.status_code == 200 and str(form.url) == f"{hub.url}/hub/spawn"
        assert "Small notebook" in form.text and "Large notebook" in form.text
        assert "Two CPUs" in form.text
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', form.text)
        data = {"profile": "large", "profile-option-large--cpu": "two"}
        if xsrf:
            data["_xsrf"] = xsrf.group(1)
        sent = browser.post(f"{hub.url}/hub/spawn", data=data, follow_redirects=False)
        assert sent.status_code == 303, sent.text[:300]
    wait_ready(hub, "carol")
    pod = pod_of(kube, namespace, "carol")
    assert pod is not None
    container = notebook(pod)
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["COURTYARD_PROFILE"] == "large"
    assert container["resources"]["limits"] == {"cpu": "2", "memory": str(3 * 1024**3)}
    assert server(hub, "carol")["user_options"] == {"profile": "large", "cpu": "two"}

    start(hub, "dave", {"profile": "large", "cpu": "one"})
    wait_ready(hub, "dave")
    container = notebook(pod_of(kube, namespace, "dave"))
    assert {e["name"]: e.get("value") for e in container["env"]}["COURTYARD_PROFILE"] == "large"
    assert container["resources"]["limits"] == {"cpu": "1", "memory": str(3 * 1024**3)}


def test_restart_finds_the_pod_and_a_deleted_pod_is_noticed(
        kube: Any, namespace: str, kubeconfig: Path, tmp_path: Path, db_url: str) -> None:
    """A hub stopped with servers running (the default) leaves the pod; the next hub finds
    it, routes to it again; a pod deleted behind the hub's back is noticed, its route goes."""
    # the hub comes back where the servers call it (as a deployment's would)
    config = hub_config(namespace, QUICK + f"c.JupyterHub.hub_bind_url = "
                        f"'http://{GATEWAY}:{free_port()}'\n")
    first = HubProcess(tmp_path, db_url, config)
    second = None
    try:
        start(first, "erin")
        wait_ready(first, "erin")
        uid = pod_of(kube, namespace, "erin")["metadata"]["uid"]
        first.stop()
        pod = pod_of(kube, namespace, "erin")
        assert pod is not None and pod["metadata"]["uid"] == uid
        assert pod["status"]["phase"] == "Running"

        second = HubProcess(tmp_path, db_url, config)
        model = wait_ready(second, "erin")  # the adopted pod, checked
        assert model["url"] == "/user/erin/"
        token = user_token(second, "erin")
        headers = {"Authorization": f"token {token}"}
        r = httpx.get(f"{second.url}/user/erin/api/status", headers=headers, timeout=30)
        assert r.status_code == 200 and "started" in r.json()
        assert pod_of(kube, namespace, "erin")["metadata"]["uid"] == uid

        kube.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/jupyter-erin",
                     {"gracePeriodSeconds": 0})
        wait_for(lambda: server(second, "erin") is None, "the hub to notice the pod is gone",
                 timeout=90)
        r = httpx.get(f"{second.url}/user/erin/api/status", headers=headers, timeout=30)
        # the route is gone: the hub answers for the stopped server (sending the client to
        # its own page for it), not the pod
        assert r.status_code == 302, (r.status_code, r.text[:300])
        assert r.headers["location"].endswith("/hub/user/erin/api/status")
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_an_adopted_pod_running_as_root_is_stopped(
        kube: Any, namespace: str, kubeconfig: Path, tmp_path: Path, db_url: str) -> None:
    """A pod found at hub start whose server runs as root (here swapped in while the hub was
    down) is refused: its route is not restored and the pod is deleted."""
    config = hub_config(namespace, QUICK + f"c.JupyterHub.hub_bind_url = "
                        f"'http://{GATEWAY}:{free_port()}'\n")
    first = HubProcess(tmp_path, db_url, config)
    second = None
    try:
        start(first, "oscar")
        wait_ready(first, "oscar")
        first.stop()
        pod = pod_of(kube, namespace, "oscar")
        path = f"/api/v1/namespaces/{namespace}/pods/jupyter-oscar"
        kube.request("DELETE", path, {"gracePeriodSeconds": 0})
        wait_for(lambda: pod_of(kube, namespace, "oscar") is None, "the pod to go")
        spec = pod["spec"]
        spec["terminationGracePeriodSeconds"] = 1
        container = notebook(pod)
        container["securityContext"] = {"runAsUser": 0}
        container["command"] = ["python3", "-c", "import time; time.sleep(600)"]
        container["args"] = []
        kube.request("POST", f"/api/v1/namespaces/{namespace}/pods", {
            "apiVersion": "v1", "kind": "Pod", "spec": spec, "metadata": {
                "name": "jupyter-oscar", "labels": pod["metadata"]["labels"],
                "annotations": pod["metadata"].get("annotations", {})}})
        wait_for(lambda: (p := pod_of(kube, namespace, "oscar")) and p["status"]["phase"]
                 == "Running", "the root pod to run")

        second = HubProcess(tmp_path, db_url, config)
        wait_for(lambda: server(second, "oscar") is None, "the refused server to be stopped")
        wait_for(lambda: pod_of(kube, namespace, "oscar") is None, "the root pod to go")
        assert "pod jupyter-oscar: its server would run as root" in second.log.read_text()
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_cancelling_a_pending_spawn_deletes_the_pod(kube: Any, namespace: str,
                                                     kubeconfig: Path, run_hub: Any) -> None:
    """A pod that cannot be scheduled stays Pending; DELETE on the spawn cancels it and the
    pod goes."""
    hub = run_hub(hub_config(namespace, QUICK + (
        "c.KubeSpawner.node_selector = {'courtyard.test/no-such-node': 'true'}\n")))
    start(hub, "frank")
    wait_for(lambda: (p := pod_of(kube, namespace, "frank")) and p["status"]["phase"]
             == "Pending" and p["status"].get("conditions"), "the pod to be Pending")
    model = server(hub, "frank")
    assert model is not None and model["pending"] == "spawn" and not model["ready"]
    assert hub.api("DELETE", "/users/frank/server").status_code == 202
    wait_for(lambda: server(hub, "frank") is None, "the spawn to be cancelled", timeout=90)
    wait_for(lambda: pod_of(kube, namespace, "frank") is None, "the pod to go", timeout=60)


def test_a_pod_running_as_root_is_refused(kube: Any, namespace: str, kubeconfig: Path,
                                         run_hub: Any) -> None:
    """uid 0 in the pod is the node's root (no user namespace in Kubernetes 1.20): the spawn
    is refused before any pod is made."""
    hub = run_hub(hub_config(namespace, QUICK + "c.KubeSpawner.uid = 0\n"))
    start(hub, "mallory")

    def failure() -> str | None:
        text = hub.api("GET", "/users/mallory/server/progress").text
        events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
        return next((e["message"] for e in events if e.get("failed")), None)

    failed = wait_for(failure, "the spawn to fail")
    assert "its server would run as root" in failed
    assert server(hub, "mallory") is None
    assert pod_of(kube, namespace, "mallory") is None


def kubectl(kube: Any, *args: str) -> subprocess.CompletedProcess[str]:
    """kubectl as the cluster's admin."""
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail("kubectl is not installed (scripts/ci/kubernetes.sh installs it)")
    return subprocess.run([path, f"--kubeconfig={kube.kubeconfig}", *args],
                          capture_output=True, text=True, timeout=120)


def test_hub_manifests_are_accepted_by_the_apiserver(kube: Any, namespace: str) -> None:
    """deploy/kubernetes/ (the hub's Deployment, Service, RBAC for KubeSpawner, the
    database Secret and PostgreSQL) passes the apiserver's own validation."""
    out = kubectl(kube, "apply", "--dry-run=server", f"--namespace={namespace}", "-f",
                  str(ROOT / "deploy" / "kubernetes"), "-o", "name")
    assert out.returncode == 0, out.stderr
    created = set(out.stdout.split())
    for kind in ("deployment.apps/courtyard-hub", "service/courtyard-hub",
                 "serviceaccount/courtyard-hub", "role.rbac.authorization.k8s.io/courtyard-hub",
                 "rolebinding.rbac.authorization.k8s.io/courtyard-hub",
                 "secret/courtyard-hub-db", "statefulset.apps/courtyard-postgres",
                 "configmap/courtyard-hub-config", "service/courtyard-postgres"):
        assert kind in created, out.stdout


def test_the_hub_needs_no_more_than_its_role(kube: Any, namespace: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            run_hub: Any) -> None:
    """With only deploy/kubernetes/rbac.yaml's ServiceAccount and Role (its token, not the
    admin's), KubeSpawner starts a server, reports the pod's events, reads its log and
    stops it."""
    applied = kubectl(kube, "apply", f"--namespace={namespace}", "-f",
                      str(ROOT / "deploy" / "kubernetes" / "rbac.yaml"))
    assert applied.returncode == 0, applied.stderr

    def token() -> str | None:
        secrets = kube.request("GET", f"/api/v1/namespaces/{namespace}/secrets") or {}
        for secret in secrets.get("items", []):
            owner = secret["metadata"].get("annotations", {}).get(
                "kubernetes.io/service-account.name")
            if secret["type"] == "kubernetes.io/service-account-token" and \
                    owner == "courtyard-hub":
                return base64.b64decode(secret["data"]["token"]).decode()
        return None

    sa_token = wait_for(token, "the service account's token")
    config = json.loads(Path(kube.kubeconfig).read_text())
    config["users"] = [{"name": "admin", "user": {"token": sa_token}}]
    hub_kubeconfig = tmp_path / "hub-kubeconfig"
    hub_kubeconfig.write_text(json.dumps(config))
    monkeypatch.setenv("KUBECONFIG", str(hub_kubeconfig))
    elsewhere = httpx.get(f"{kube.server}/api/v1/namespaces/default/pods", verify=False,
                          headers={"Authorization": f"Bearer {sa_token}"})
    assert elsewhere.status_code == 403  # the hub really runs with the Role only

    hub = run_hub(hub_config(namespace, QUICK))
    events = start_following(hub, "grace")
    assert any(e.get("message", "").startswith("Container started") for e in events), events
    pod = pod_of(kube, namespace, "grace")
    assert pod is not None and pod["status"]["phase"] == "Running"
    log = wait_for(lambda: (r := hub.api("GET", "/users/grace/server/logs")).status_code == 200
                   and "/user/grace/" in r.text and r.text, "the pod's log")
    assert "Jupyter Server" in log
    assert hub.api("DELETE", "/users/grace/server").status_code == 202
    wait_for(lambda: server(hub, "grace") is None, "the server to stop")
    assert pod_of(kube, namespace, "grace") is None
