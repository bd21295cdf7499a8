"""The engines ``bench/cluster.py`` runs on: Slurm (batchspawner's ``SlurmSpawner``), podman
(``DockerSpawner``) and Kubernetes (``KubeSpawner``), each started as the tests start it,
with what the hubs' config needs, the recording of what the spawner asked for, its replay
with no hub, and the bare floor (plain ``jupyter server``)."""

from __future__ import annotations

import http.client
import json
import os
import pwd
import re
import secrets
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from cluster_replay import (
    Recording,
    StubHub,
    all_answer,
    answers,
    answers_any,
    server_address,
    wait,
)
from harness import free_ports

BENCH = Path(__file__).resolve().parent
DELETE_GRACE = 1  # c.KubeSpawner.delete_grace_period, which the floor's deletes use too


def job_process_env(job: str) -> dict[str, str]:
    """The environment of the job's ``batchspawner-singleuser`` (or, without it, its
    ``jupyterhub-singleuser``), read as root from /proc; {} while there is none yet."""
    found: dict[str, dict[str, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            raw = (entry / "environ").read_bytes()
        except OSError:
            continue
        env = dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0")
                   if "=" in item)
        if env.get("SLURM_JOB_ID") != job:
            continue
        for name in ("batchspawner-singleuser", "jupyterhub-singleuser"):
            if name.encode() in cmdline:
                found.setdefault(name, env)
    return found.get("batchspawner-singleuser") or found.get("jupyterhub-singleuser") or {}


class Slurm:
    """batchspawner's SlurmSpawner on a real slurmctld/slurmd/munged
    (``tests/cluster/slurm/engine.py``), jobs as the users' own accounts."""

    name = "slurm"

    def __init__(self, servers: int) -> None:
        self.servers = servers
        self.cluster: Any = None

    @contextmanager
    def running(self) -> Iterator[Slurm]:
        from tests.cluster.slurm.engine import running_slurm

        with running_slurm(jobs=self.servers) as cluster:
            self.cluster = cluster
            old = os.environ.get("SLURM_CONF")
            os.environ["SLURM_CONF"] = str(cluster.conf)  # the hubs' squeue and scancel ask it
            try:
                yield self
            finally:
                if old is None:
                    del os.environ["SLURM_CONF"]
                else:
                    os.environ["SLURM_CONF"] = old

    def hub_config(self, users: list[str]) -> str:
        return str(self.cluster.spawner_config()) + (
            # accounts made by the benchmark (JupyterHub needs them to exist), allowed by name
            f"c.LocalProcessSpawner.allowed_system_users = {set(users)!r}\n"
            # the one node has 2 CPUs: N jobs share them (the partition allows it on request)
            "c.SlurmSpawner.req_options = '--oversubscribe'\n")

    def jobs(self) -> list[str]:
        out = subprocess.run(["squeue", "-h", "-o", "%i"], env=self.cluster.env,
                             capture_output=True, text=True, timeout=30).stdout
        return out.split()

    def record(self) -> list[dict[str, Any]]:
        """Each running job's batch script, user, and the environment its submission
        exported (the names in the script's ``--export``, valued as the job's server got
        them; ``PATH`` without the prefix the script's prologue adds)."""
        out = subprocess.run(["squeue", "-h", "-o", "%i %u"], env=self.cluster.env,
                             capture_output=True, text=True, timeout=30, check=True).stdout
        servers = []
        for job, user in (line.split() for line in out.splitlines() if line.strip()):
            script = subprocess.run(["scontrol", "write", "batch_script", job, "-"],
                                    env=self.cluster.env, capture_output=True, text=True,
                                    timeout=30, check=True).stdout
            exported = re.search(r"^#SBATCH --export=(\S+)", script, re.M)
            names = exported.group(1).split(",") if exported else []
            env: dict[str, str] = wait(partial(job_process_env, job), f"job {job}'s server", 60)
            kept = {k: env[k] for k in names if k in env}
            prologue = re.search(r"^export PATH=(\S+):\$PATH$", script, re.M)
            if prologue and kept.get("PATH", "").startswith(prologue.group(1) + ":"):
                kept["PATH"] = kept["PATH"][len(prologue.group(1)) + 1:]
            servers.append({"user": user, "script": script, "env": kept})
        return servers

    def replay(self, recording: Recording, stub: StubHub,
               keep: Path | None) -> tuple[float, float]:
        """batchspawner's ``sudo -E -u USER sbatch --parsable`` with each recorded script and
        environment, all at once; ready when each server answers at the port it reported;
        then ``sudo -E -u USER scancel JOB`` for all at once, until the queue is empty."""
        servers = recording.servers

        def submit(server: dict[str, Any]) -> str:
            done = subprocess.run(f"sudo -E -u {server['user']} sbatch --parsable", shell=True,
                                  input=server["script"], env=server["env"], text=True,
                                  capture_output=True, timeout=120)
            if done.returncode:
                raise RuntimeError(f"sbatch for {server['user']}: {done.stderr}")
            return str(done.stdout).strip().split(";")[0]

        def locate(server: dict[str, Any]) -> Callable[[], str | None]:
            def url() -> str | None:
                port = stub.ports.get(server["user"])
                return server_address(server["env"], "127.0.0.1", port) if port else None
            return url

        began = time.perf_counter()
        with ThreadPoolExecutor(len(servers)) as pool:
            jobs = list(pool.map(submit, servers))
        all_answer({s["user"]: locate(s) for s in servers}, 300)
        ready = time.perf_counter() - began
        began = time.perf_counter()
        with ThreadPoolExecutor(len(servers)) as pool:
            list(pool.map(lambda s, j: subprocess.run(
                f"sudo -E -u {s['user']} scancel {j}", shell=True, env=s["env"],
                capture_output=True, timeout=120), servers, jobs))
        wait(self.gone, "every job to end", 120)
        stopped = time.perf_counter() - began
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            for server, job in zip(servers, jobs, strict=True):
                out = Path(pwd.getpwnam(server["user"]).pw_dir) / f"jupyterhub_slurmspawner_{job}.log"
                if out.exists():
                    (keep / f"{server['user']}.log").write_bytes(out.read_bytes())
        return ready, stopped

    def floor(self, users: list[str]) -> tuple[float, float]:
        """The bare floor: seconds until N jobs running ``jupyter server`` all answer; until
        all are gone."""
        ports = free_ports(len(users))
        token = secrets.token_hex(16)
        jupyter = self.cluster.venv / "bin" / "jupyter-server"
        began = time.perf_counter()
        for user, port in zip(users, ports, strict=True):
            script = (f"#!/bin/bash\ncd /tmp\nexec {jupyter} --ServerApp.ip=127.0.0.1 "
                      f"--ServerApp.port={port} --IdentityProvider.token={token} "
                      "--ServerApp.open_browser=False\n")
            subprocess.run(
                ["runuser", "-u", user, "--", "sbatch", "--parsable", "--mem=300M",
                 "--oversubscribe",
                 "--chdir=/tmp", "-o", "/dev/null"],
                input=script, text=True, env=self.cluster.env, check=True, capture_output=True)
        with ThreadPoolExecutor(len(users)) as pool:
            list(pool.map(lambda p: wait(lambda: answers(p, token), f"port {p}", 300), ports))
        ready = time.perf_counter() - began
        began = time.perf_counter()
        for user in users:
            subprocess.run(["scancel", "-u", user], env=self.cluster.env, check=True,
                           capture_output=True)
        wait(lambda: not self.jobs(), "every job to end", 120)
        return ready, time.perf_counter() - began

    def gone(self) -> bool:
        return not self.jobs()

    def clean(self, users: list[str]) -> None:
        for user in users:
            subprocess.run(["scancel", "-u", user], env=self.cluster.env, capture_output=True)
        wait(self.gone, "the engine to be empty", 120)


def notebook_command(port: int, token: str) -> list[str]:
    """The floor's server: Jupyter Server with JupyterLab, as the image's singleuser runs it,
    with a token instead of the hub."""
    return ["jupyter", "server", "--ServerApp.ip=0.0.0.0", f"--ServerApp.port={port}",
            f"--IdentityProvider.token={token}", "--ServerApp.open_browser=False"]


def answers_at(ip: str, port: int) -> bool:
    """Whether a server in a pod or container answers (the floor's readiness check)."""
    try:
        return httpx.get(f"http://{ip}:{port}/api", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def load_k8s() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "courtyard_k8s_cluster", BENCH.parent / "scripts" / "k8s" / "cluster.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class KeptConnections:
    """The benchmark's own apiserver calls over kept-alive HTTPS connections, one per
    thread, with one TLS context. ``Cluster.request`` builds a context (loading the CA
    bundle) and does a handshake per call: the floor's looks at the pod list, 5-10 a
    second, took the cores the pods needed, and made the floor slower than the hubs'
    runs (KubeSpawner keeps its connections)."""

    def __init__(self, server: str, token: str) -> None:
        url = urlsplit(server)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 443
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.context.check_hostname, self.context.verify_mode = False, ssl.CERT_NONE
        self.local = threading.local()

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """The decoded JSON answer (text where it is not JSON), None on 404."""
        data = json.dumps(body).encode() if body is not None else None
        for attempt in (1, 2):  # a kept connection the apiserver closed: once more, anew
            connection = getattr(self.local, "connection", None)
            if connection is None:
                connection = self.local.connection = http.client.HTTPSConnection(
                    self.host, self.port, timeout=30, context=self.context)
            try:
                connection.request(method, path, body=data, headers=self.headers)
                response = connection.getresponse()
                raw = response.read()
            except (OSError, http.client.HTTPException):
                connection.close()
                self.local.connection = None
                if attempt == 2:
                    raise
                continue
            if response.status == 404:
                return None
            if response.status >= 400:
                raise RuntimeError(f"{method} {path}: HTTP {response.status} {raw[:200]!r}")
            try:
                return json.loads(raw)
            except ValueError:
                return raw.decode()
        raise AssertionError("unreachable")


class Kubernetes:
    """KubeSpawner on the single-node cluster of ``scripts/k8s/cluster.py`` (built from
    Debian's source by ``scripts/ci/kubernetes.sh``): pods on the bridge cni0, the hubs
    listening on its address 10.244.0.1, where the pods reach them."""

    name = "kubernetes"
    namespace = "cybench"

    def __init__(self, servers: int) -> None:
        self.k8s = load_k8s()
        self.cluster: Any = None
        self.api: Any = None  # KeptConnections, while the cluster runs

    @contextmanager
    def running(self) -> Iterator[Kubernetes]:
        bindir = self.k8s.build(cached_only=True)
        with tempfile.TemporaryDirectory(prefix="bench-k8s-") as tmp:
            self.cluster = self.k8s.Cluster(bindir, Path(tmp))
            try:
                self.cluster.start((self.k8s.pause_image(bindir), self.k8s.NOTEBOOK_TAR))
                self.cluster.request("POST", "/api/v1/namespaces", {
                    "apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": self.namespace}})
                os.environ["KUBECONFIG"] = str(self.cluster.kubeconfig)
                self.api = KeptConnections(self.cluster.server, self.k8s.TOKEN)
                yield self
            finally:
                os.environ.pop("KUBECONFIG", None)
                self.cluster.stop()

    def hub_config(self, users: list[str]) -> str:
        gateway = self.k8s.GATEWAY
        return (
            "c.JupyterHub.spawner_class = 'kubespawner.KubeSpawner'\n"
            f"c.JupyterHub.hub_ip = {gateway!r}\n"
            "c.DummyAuthenticator.allow_insecure = True\n"
            f"c.KubeSpawner.namespace = {self.namespace!r}\n"
            f"c.KubeSpawner.image = {self.k8s.NOTEBOOK_IMAGE!r}\n"
            "c.KubeSpawner.image_pull_policy = 'Never'\n"
            "c.KubeSpawner.uid = 1000\n"
            "c.KubeSpawner.start_timeout = 300\n"
            "c.KubeSpawner.http_timeout = 120\n"
            f"c.KubeSpawner.delete_grace_period = {DELETE_GRACE}\n")

    def pods(self) -> list[dict[str, Any]]:
        """The namespace's pods from the apiserver's watch cache (``resourceVersion=0``), as
        KubeSpawner's reflector sees them: a plain list is a quorum read of etcd, and the
        floor's looks, up to 10 a second, cost etcd and the apiserver what the kubelet
        needed for the pods."""
        found = self.api.request(
            "GET", f"/api/v1/namespaces/{self.namespace}/pods?resourceVersion=0")
        return list((found or {}).get("items", []))

    def record(self) -> list[dict[str, Any]]:
        """Each pod as it could be created again: its name, labels, annotations and spec,
        without what the cluster filled in (node, priority, service-account token volume)."""
        servers = []
        for pod in self.pods():
            meta, spec = pod["metadata"], dict(pod["spec"])
            for added in ("nodeName", "priority", "preemptionPolicy"):
                spec.pop(added, None)
            tokens = {v["name"] for v in spec.get("volumes", [])
                      if v["name"].startswith("kube-api-access-") or any(
                          "serviceAccountToken" in source
                          for source in v.get("projected", {}).get("sources", []))}
            spec["volumes"] = [v for v in spec.get("volumes", []) if v["name"] not in tokens]
            for container in spec["containers"] + spec.get("initContainers", []):
                container["volumeMounts"] = [m for m in container.get("volumeMounts", [])
                                             if m["name"] not in tokens]
            env = {e["name"]: e.get("value", "") for e in spec["containers"][0].get("env", [])}
            servers.append({"user": env.get("JUPYTERHUB_USER", meta["name"]), "env": env,
                            "pod": {"apiVersion": "v1", "kind": "Pod", "metadata": {
                                k: meta[k] for k in ("name", "labels", "annotations")
                                if k in meta}, "spec": spec}})
        return servers

    def replay(self, recording: Recording, stub: StubHub,
               keep: Path | None) -> tuple[float, float]:
        """The recorded pods created all at once; ready when each answers at its pod IP
        (looked up at most every 0.2 s); then deleted all at once with the spawner's grace
        period, until none is left."""
        servers, path = recording.servers, f"/api/v1/namespaces/{self.namespace}/pods"
        ips: dict[str, str] = {}
        looked = [0.0]
        lock = threading.Lock()

        def locate(server: dict[str, Any]) -> Callable[[], str | None]:
            def url() -> str | None:
                with lock:
                    if time.perf_counter() - looked[0] > 0.2:
                        looked[0] = time.perf_counter()
                        ips.update({p["metadata"]["name"]: p["status"]["podIP"]
                                    for p in self.pods() if p.get("status", {}).get("podIP")})
                    ip = ips.get(server["pod"]["metadata"]["name"])
                return server_address(server["env"], ip) if ip else None
            return url

        began = time.perf_counter()
        with ThreadPoolExecutor(len(servers)) as pool:
            list(pool.map(lambda s: self.api.request("POST", path, s["pod"]), servers))
        all_answer({s["user"]: locate(s) for s in servers}, 600)
        ready = time.perf_counter() - began
        names = [s["pod"]["metadata"]["name"] for s in servers]
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            for name in names:
                log = self.api.request("GET", f"{path}/{name}/log")
                (keep / f"{name}.log").write_text(log if isinstance(log, str) else
                                                  json.dumps(log))
        began = time.perf_counter()
        with ThreadPoolExecutor(len(servers)) as pool:
            list(pool.map(lambda n: self.api.request(
                "DELETE", f"{path}/{n}", {"gracePeriodSeconds": DELETE_GRACE}), names))
        wait(self.gone, "every pod to go", 300)
        return ready, time.perf_counter() - began

    def floor(self, users: list[str]) -> tuple[float, float]:
        """The bare floor: N plain ``jupyter server``s with a token, not the spawner's
        workload; seconds until all answer, until all are gone."""
        token = secrets.token_hex(16)
        began = time.perf_counter()
        for user in users:
            self.api.request("POST", f"/api/v1/namespaces/{self.namespace}/pods", {
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"floor-{user}"},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                    "name": "notebook", "image": self.k8s.NOTEBOOK_IMAGE,
                    "imagePullPolicy": "Never", "command": notebook_command(8888, token),
                    "securityContext": {"runAsUser": 1000}}]}})

        def all_answer() -> bool:
            ips = [p.get("status", {}).get("podIP") for p in self.pods()]
            return len(ips) == len(users) and all(ip and answers_at(ip, 8888) for ip in ips)

        wait(all_answer, "every floor pod to answer", 600)
        ready = time.perf_counter() - began
        began = time.perf_counter()
        for user in users:
            self.api.request("DELETE", f"/api/v1/namespaces/{self.namespace}/pods/floor-{user}",
                                 {"gracePeriodSeconds": 1})
        wait(self.gone, "every floor pod to go", 300)
        return ready, time.perf_counter() - began

    def gone(self) -> bool:
        return not self.pods()

    def clean(self, users: list[str]) -> None:
        for pod in self.pods():
            self.api.request(
                "DELETE", f"/api/v1/namespaces/{self.namespace}/pods/{pod['metadata']['name']}",
                {"gracePeriodSeconds": 0})
        wait(self.gone, "the engine to be empty", 300)


class Docker:
    """DockerSpawner on podman's Docker API (``tests/cluster/docker/conftest.py``'s service
    and network), containers on the network's bridge, the hubs on its gateway address."""

    name = "docker"

    def __init__(self, servers: int) -> None:
        self.engine: Any = None

    @contextmanager
    def running(self) -> Iterator[Docker]:
        from tests.cluster.docker.conftest import running_podman

        with tempfile.TemporaryDirectory(prefix="bench-podman-") as tmp, \
                running_podman(Path(tmp)) as engine:
            self.engine = engine
            yield self

    def hub_config(self, users: list[str]) -> str:
        from tests.cluster.docker.conftest import IMAGE, PREFIX

        gateway = self.engine.gateway
        return (
            "c.JupyterHub.spawner_class = 'dockerspawner.DockerSpawner'\n"
            f"c.JupyterHub.hub_ip = {gateway!r}\n"
            f"c.JupyterHub.hub_connect_ip = {gateway!r}\n"
            "c.DummyAuthenticator.allow_insecure = True\n"
            f"c.DockerSpawner.client_kwargs = {{'base_url': {self.engine.base_url!r}}}\n"
            f"c.DockerSpawner.image = {IMAGE!r}\n"
            "c.DockerSpawner.pull_policy = 'never'\n"
            f"c.DockerSpawner.network_name = {self.engine.network!r}\n"
            f"c.DockerSpawner.prefix = {PREFIX!r}\n"
            "c.DockerSpawner.name_template = '{prefix}-{username}'\n"
            "c.DockerSpawner.remove = True\n"
            "c.DockerSpawner.start_timeout = 300\n"
            "c.DockerSpawner.http_timeout = 120\n")

    def record(self) -> list[dict[str, Any]]:
        """Each container's name and what it was created with: image, command, user,
        working dir, environment (without the hostname podman adds), labels, exposed ports,
        host config (auto-remove, binds, network, port bindings)."""
        servers = []
        for container in self.engine.containers():
            config, host = container.attrs["Config"], container.attrs["HostConfig"]
            env = dict(item.split("=", 1) for item in config.get("Env") or [] if "=" in item)
            env.pop("HOSTNAME", None)
            servers.append({"user": env.get("JUPYTERHUB_USER", container.name), "env": env,
                            "name": container.name, "image": config["Image"],
                            "command": config.get("Cmd"), "user_id": config.get("User") or None,
                            "working_dir": config.get("WorkingDir") or None,
                            "labels": config.get("Labels") or {},
                            "ports": list(config.get("ExposedPorts") or {}),
                            "auto_remove": bool(host.get("AutoRemove")),
                            "binds": host.get("Binds") or None,
                            # podman's NetworkMode says "bridge" on any network
                            "network": next(iter(container.attrs["NetworkSettings"]
                                                 .get("Networks") or {}), self.engine.network),
                            "port_bindings": host.get("PortBindings") or None})
        return servers

    def replay(self, recording: Recording, stub: StubHub,
               keep: Path | None) -> tuple[float, float]:
        """Each recorded container created and started (DockerSpawner's two calls), all at
        once; ready when each answers at its address on the network; then ``docker stop``
        (the engine's default timeout, as DockerSpawner's) and remove, all at once."""
        import docker

        api = self.engine.client.api

        def start(server: dict[str, Any]) -> str:
            host_config = api.create_host_config(
                auto_remove=server["auto_remove"], binds=server["binds"],
                network_mode=server["network"], port_bindings=server["port_bindings"])
            created = api.create_container(
                server["image"], command=server["command"], name=server["name"],
                environment=server["env"], user=server["user_id"],
                working_dir=server["working_dir"], labels=server["labels"],
                ports=server["ports"], host_config=host_config)
            api.start(created["Id"])
            networks = api.inspect_container(created["Id"])["NetworkSettings"]["Networks"]
            ip = networks[server["network"]]["IPAddress"]
            wait(lambda: answers_any(server_address(server["env"], ip)),
                 f"{server['user']}'s container", 600)
            return str(created["Id"])

        def stop(container_id: str) -> None:
            api.stop(container_id)
            try:
                api.remove_container(container_id, v=True)
            except docker.errors.APIError as e:  # auto-removed already, or being removed
                if e.status_code not in (404, 409):
                    raise

        began = time.perf_counter()
        with ThreadPoolExecutor(len(recording.servers)) as pool:
            ids = list(pool.map(start, recording.servers))
        ready = time.perf_counter() - began
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            for server, container_id in zip(recording.servers, ids, strict=True):
                (keep / f"{server['name']}.log").write_bytes(api.logs(container_id))
        began = time.perf_counter()
        with ThreadPoolExecutor(len(ids)) as pool:
            list(pool.map(stop, ids))
        wait(self.gone, "every container to go", 300)
        return ready, time.perf_counter() - began

    def floor(self, users: list[str]) -> tuple[float, float]:
        """The bare floor: N plain ``jupyter server``s with a token, not the spawner's
        workload; seconds until all answer, until all are gone."""
        from tests.cluster.docker.conftest import IMAGE, PREFIX

        token = secrets.token_hex(16)
        client = self.engine.client
        began = time.perf_counter()

        def start(user: str) -> str:
            container = client.containers.run(
                IMAGE, notebook_command(8888, token), detach=True, name=f"{PREFIX}-{user}",
                network=self.engine.network)
            container.reload()
            ip = container.attrs["NetworkSettings"]["Networks"][self.engine.network]["IPAddress"]
            wait(lambda: answers_at(ip, 8888), f"{user}'s container", 600)
            return str(container.id)

        with ThreadPoolExecutor(len(users)) as pool:
            ids = list(pool.map(start, users))
        ready = time.perf_counter() - began
        began = time.perf_counter()

        def stop(container_id: str) -> None:
            container = client.containers.get(container_id)
            container.stop(timeout=10)
            container.remove()

        with ThreadPoolExecutor(len(users)) as pool:
            list(pool.map(stop, ids))
        return ready, time.perf_counter() - began

    def gone(self) -> bool:
        return not self.engine.containers()

    def clean(self, users: list[str]) -> None:
        self.engine.remove_all()


ENGINES: dict[str, Callable[[int], Any]] = {"slurm": Slurm, "docker": Docker,
                                         "kubernetes": Kubernetes}
