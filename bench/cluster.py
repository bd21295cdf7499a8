"""Many servers at once on a cluster engine: Courtyard against JupyterHub 6, same spawner,
same engine, one run.

    python bench/cluster.py                         # every engine installed, 20 servers
    python bench/cluster.py --engines slurm --servers 10

For each engine (Slurm with batchspawner's ``SlurmSpawner``, podman with ``DockerSpawner``,
Kubernetes with ``KubeSpawner``), one after the other on the same running engine:

1. **record**: Courtyard starts ``--servers`` servers as in step 3 (this also warms the engine
   up); while all are running, what the spawner asked the engine to run is recorded: each
   Slurm job's batch script, submitting user and exported environment; each pod's manifest;
   each container's image, command, environment, labels and host config.
2. **floor**: the engine alone runs that recorded workload again, with no hub: a stub
   answers the hub API calls the servers make at start-up (the version check,
   batchspawner's port report, activity) at the recorded API address. All are submitted at
   once, as the hubs do; the time until every server answers at its address and URL prefix
   (any HTTP answer, as the hubs' readiness checks take it) is taken; then all are stopped
   as the spawner stops them (``scancel``; DELETE with the spawner's grace period; ``docker
   stop`` then remove) and the time until the engine has none left is taken. What the
   engine and the spawner's own workload cost, without a hub. The **bare floor** (plain
   ``jupyter server`` with a token, as the same accounts or image) is also reported, once.
3. **each hub** (JupyterHub 6 from ``bench/.venv``, Courtyard from this checkout), on a fresh
   database, with one ``jupyterhub_config.py`` both load unchanged: ``--servers`` users,
   ``POST /hub/api/users/{name}/server`` for all at once; time until the API shows every
   server ready; then ``DELETE`` for all at once; time until the API shows none and the
   engine has none left. The hub's CPU (its process and its proxy) over both.
4. **the floor again**, after the hubs: the engine's own times drift during a run.

The figure the issue asks for is the hub's **overhead**, its time above the replayed floor
(the mean of the two), summed over start and stop; the target is Courtyard's at most a fifth
of JupyterHub's. Runs as root (the servers run as the users' own accounts, made here as
``cybench0``... and removed at the end). Results are printed and written to
``bench/results/cluster-*.json``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import pwd
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from harness import (  # noqa: E402
    HUBS,
    TOKEN,
    HubFailed,
    HubRun,
    ensure_environment,
    free_ports,
    tree_cpu_seconds,
)

USER_PREFIX = "cybench"
PLUGINS = {"slurm": ["batchspawner>=1.3,<2"], "kubernetes": ["jupyterhub-kubespawner>=7,<8"],
           "docker": ["dockerspawner>=14,<15"]}  # what bench/.venv's JupyterHub needs
DELETE_GRACE = 1  # c.KubeSpawner.delete_grace_period, which the floor's deletes use too


def wait(check: Callable[[], Any], what: str, timeout: float) -> Any:
    """Poll ``check`` every 0.1 s until it returns something true; that value."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def answers(port: int, token: str) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/api", timeout=2,
                         headers={"Authorization": f"token {token}"}).status_code == 200
    except httpx.HTTPError:
        return False


# --------------------------------------------------------------------------- the replayed floor


@dataclass
class Recording:
    """What the spawner asked the engine to run, one entry per server (``user``, the
    server's ``env``, and what the engine needs to run it again), and the hub's version."""

    servers: list[dict[str, Any]]
    version: str

    def api_address(self) -> tuple[str, int]:
        """Where the servers call the hub's API (the same for all of them)."""
        url = urlsplit(self.servers[0]["env"]["JUPYTERHUB_API_URL"])
        return url.hostname or "127.0.0.1", url.port or 80

    def users_by_token(self) -> dict[str, str]:
        return {s["env"]["JUPYTERHUB_API_TOKEN"]: s["user"] for s in self.servers}


def server_address(env: dict[str, str], host: str, port: int | None = None) -> str:
    """The URL a hub's readiness check asks: the server's prefix at ``host`` and its port."""
    url = urlsplit(env.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:8888"))
    return f"http://{host}:{port or url.port or 8888}{env.get('JUPYTERHUB_SERVICE_PREFIX', '/')}"


def answers_any(url: str) -> bool:
    """Whether anything answers HTTP at ``url`` (a redirect to the login is an answer).
    Plain ``http.client``: ``httpx.get`` builds a client and an SSL context per call, CPU
    the starting servers need when 20 are probed every 0.1 s."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=2)
    try:
        connection.request("GET", parts.path or "/")
        connection.getresponse().read()
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()
    return True


def all_answer(locate: dict[str, Callable[[], str | None]], timeout: float) -> None:
    """Poll each server (its URL from ``locate[user]``, None while unknown) every 0.1 s, all
    at once, until every one answers."""
    def one(user: str) -> None:
        def check() -> bool:
            url = locate[user]()
            return url is not None and answers_any(url)

        wait(check, f"{user}'s server to answer", timeout)

    with ThreadPoolExecutor(len(locate)) as pool:
        list(pool.map(one, locate))


class StubHub:
    """The hub's API as the servers meet it at start-up, answered at once: the version
    header on every answer, batchspawner's port report (kept per user), activity, the
    token's user. Every request is counted (``requests``), to show what the servers asked."""

    def __init__(self, recording: Recording) -> None:
        self.version = recording.version
        self.users = recording.users_by_token()
        self.ports: dict[str, int] = {}
        self.requests: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(recording.api_address(), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> StubHub:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def answer(self, method: str, path: str, token: str, body: bytes) -> tuple[int, Any]:
        path = path.split("?")[0]
        with self.lock:
            self.requests[f"{method} {re.sub(r'/users/[^/]+', '/users/{name}', path)}"] += 1
        user = self.users.get(token)
        if method == "POST" and path.endswith("/batchspawner"):
            if user is None:
                return 403, {"message": "unknown token"}
            with self.lock:
                self.ports[user] = int(json.loads(body)["port"])
            return 200, {}
        if method == "GET" and path.rstrip("/").endswith("/hub/api/user"):
            if user is None:
                return 403, {"message": "unknown token"}
            return 200, {"kind": "user", "name": user, "admin": False, "groups": [],
                         "scopes": [f"access:servers!user={user}"], "server": None}
        if method == "GET":
            return 200, {"version": self.version}
        return 200, {}  # activity posts, and anything else

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _reply(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                token = (self.headers.get("Authorization") or "").removeprefix("token ").strip()
                status, content = stub.answer(method, self.path, token, body)
                data = json.dumps(content).encode()
                self.send_response(status)
                self.send_header("X-JupyterHub-Version", stub.version)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._reply("GET")

            def do_POST(self) -> None:
                self._reply("POST")

            def do_PATCH(self) -> None:
                self._reply("PATCH")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def replay_floor(engine: Any, recording: Recording, keep: Path | None,
                 label: str) -> dict[str, Any]:
    """The engine runs the recorded servers again, the stub in the hub's place: seconds
    until all answer, until all are gone, and what the servers asked the stub."""
    with StubHub(recording) as stub:
        ready, stopped = engine.replay(recording, stub, keep / f"{engine.name}-{label}"
                                       if keep else None)
    return {"ready_s": round(ready, 2), "stop_s": round(stopped, 2),
            "stub_requests": dict(stub.requests)}


# --------------------------------------------------------------------------- engines


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


class Kubernetes:
    """KubeSpawner on the single-node cluster of ``scripts/k8s/cluster.py`` (built from
    Debian's source by ``scripts/ci/kubernetes.sh``): pods on the bridge cni0, the hubs
    listening on its address 10.244.0.1, where the pods reach them."""

    name = "kubernetes"
    namespace = "cybench"

    def __init__(self, servers: int) -> None:
        self.k8s = load_k8s()
        self.cluster: Any = None

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
        found = self.cluster.request("GET", f"/api/v1/namespaces/{self.namespace}/pods")
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
            list(pool.map(lambda s: self.cluster.request("POST", path, s["pod"]), servers))
        all_answer({s["user"]: locate(s) for s in servers}, 600)
        ready = time.perf_counter() - began
        names = [s["pod"]["metadata"]["name"] for s in servers]
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            for name in names:
                log = self.cluster.request("GET", f"{path}/{name}/log")
                (keep / f"{name}.log").write_text(log if isinstance(log, str) else
                                                  json.dumps(log))
        began = time.perf_counter()
        with ThreadPoolExecutor(len(servers)) as pool:
            list(pool.map(lambda n: self.cluster.request(
                "DELETE", f"{path}/{n}", {"gracePeriodSeconds": DELETE_GRACE}), names))
        wait(self.gone, "every pod to go", 300)
        return ready, time.perf_counter() - began

    def floor(self, users: list[str]) -> tuple[float, float]:
        """The bare floor: N plain ``jupyter server``s with a token, not the spawner's
        workload; seconds until all answer, until all are gone."""
        token = secrets.token_hex(16)
        began = time.perf_counter()
        for user in users:
            self.cluster.request("POST", f"/api/v1/namespaces/{self.namespace}/pods", {
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
            self.cluster.request("DELETE", f"/api/v1/namespaces/{self.namespace}/pods/floor-{user}",
                                 {"gracePeriodSeconds": 1})
        wait(self.gone, "every floor pod to go", 300)
        return ready, time.perf_counter() - began

    def gone(self) -> bool:
        return not self.pods()

    def clean(self, users: list[str]) -> None:
        for pod in self.pods():
            self.cluster.request(
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


# --------------------------------------------------------------------------- hubs


@contextmanager
def accounts(count: int) -> Iterator[list[str]]:
    """``count`` system accounts for the servers (JupyterHub needs them made beforehand)."""
    names = [f"{USER_PREFIX}{i}" for i in range(count)]
    for name in names:
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run(["useradd", "-m", "-s", "/bin/bash", name], check=True)
    try:
        yield names
    finally:
        for name in names:
            subprocess.run(["userdel", "-r", name], capture_output=True)


def servers_of(port: int) -> dict[str, dict[str, Any]]:
    """``{user: default server model}`` of every user that has one, from the API."""
    r = httpx.get(f"http://127.0.0.1:{port}/hub/api/users", timeout=30,
                  headers={"Authorization": f"token {TOKEN}"})
    r.raise_for_status()
    return {u["name"]: u["servers"][""] for u in r.json() if "" in (u.get("servers") or {})}


#: CHP's complaints while the hub is not up yet (with node's stack), which bury the hub's own
CHP_NOISE = re.compile(r"\[ConfigProxy\].*error|^    at |^  (errno|code|syscall|address|port):|^}$")


def hub_log(run: HubRun, lines: int = 80) -> str:
    """The end of the hub's log without the benchmark's own polling requests or CHP's
    complaints while the hub was not up."""
    text = (run.tmp / f"hub-{run.starts}.log").read_text(errors="replace")
    kept = [line for line in text.splitlines()
            if "GET /hub/api/users " not in line and not CHP_NOISE.search(line)]
    return "\n".join(kept[-lines:])


#: Courtyard's own metrics summed into the results: where its time went
BREAKDOWN = {"courtyard_spawn_stage_duration_seconds": "spawn_stage_s",
             "jupyterhub_server_stop_seconds": "stop_s",
             "jupyterhub_server_poll_duration_seconds": "poll_s",
             "jupyterhub_proxy_add_duration_seconds": "route_add_s",
             "jupyterhub_proxy_delete_duration_seconds": "route_delete_s"}


def breakdown(port: int) -> dict[str, Any]:
    """Courtyard's seconds summed over every launch (``{name: {label: [sum, count]}}``)
    from ``/hub/metrics``: spawn stages (queue, prepare, start, check, route), stops,
    polls, route changes; {} from a hub without them."""
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/hub/metrics", timeout=30,
                      headers={"Authorization": f"token {TOKEN}"})
    except httpx.HTTPError:
        return {}
    found: dict[str, Any] = {}
    for line in r.text.splitlines() if r.status_code == 200 else []:
        head, _, value = line.rpartition(" ")
        metric, _, labels = head.partition("{")
        labels = labels.rstrip("}")
        for suffix, index in (("_sum", 0), ("_count", 1)):
            name = BREAKDOWN.get(metric.removesuffix(suffix)) if metric.endswith(suffix) else None
            if name is None:
                continue
            label = ",".join(part.partition("=")[2].strip('"')
                             for part in labels.split(",") if part) or "all"
            entry = found.setdefault(name, {}).setdefault(label, [0.0, 0])
            entry[index] = round(float(value), 2) if index == 0 else int(float(value))
    return {name: {k: v for k, v in labels.items() if v[1]} for name, labels in found.items()}


def measure_hub(hub: str, engine: Any, users: list[str], keep: Path | None = None,
                on_ready: Callable[[HubRun], None] | None = None) -> dict[str, Any]:
    """Start N servers through ``hub`` at once, then stop them: seconds and the hub's CPU
    (and, with ``keep``, the hub's log copied there). ``on_ready(run)`` is called while all
    servers run, outside the times taken."""
    with tempfile.TemporaryDirectory(prefix=f"bench-cluster-{hub}-") as tmp:
        run = HubRun(hub, Path(tmp))
        run.write_config()
        with run.config.open("a") as config:
            config.write(engine.hub_config(users))
        # the hub may listen where the servers reach it (a bridge), not on loopback: the
        # benchmark reaches its API through the proxy's public port instead
        run.hub_port = run.port
        try:
            run.start(timeout=120)
        except HubFailed as e:
            run.stop()  # what it left in its process group (JupyterHub's CHP)
            raise RuntimeError(f"{e}\n{hub_log(run)}") from None
        try:
            run.settle()
            assert run.proc is not None
            api = httpx.Client(base_url=f"http://127.0.0.1:{run.hub_port}/hub/api", timeout=300,
                               headers={"Authorization": f"token {TOKEN}"})
            for user in users:
                api.post(f"/users/{user}").raise_for_status()
            cpu = tree_cpu_seconds(run.proc.pid)
            began = time.perf_counter()
            with ThreadPoolExecutor(len(users)) as pool:
                statuses = list(pool.map(lambda u: api.post(f"/users/{u}/server").status_code,
                                         users))
            if any(s not in (201, 202) for s in statuses):
                raise RuntimeError(f"{hub}: starts answered {statuses}\n{run.log_tail()}")
            try:
                wait(lambda: sum(s.get("ready", False)
                                 for s in servers_of(run.hub_port).values()) == len(users),
                     "every server ready", 300)
            except TimeoutError as e:
                raise RuntimeError(f"{hub}: {e}\n{hub_log(run)}") from None
            ready = time.perf_counter() - began
            if on_ready is not None:
                on_ready(run)
            began = time.perf_counter()
            with ThreadPoolExecutor(len(users)) as pool:
                statuses = list(pool.map(lambda u: api.delete(f"/users/{u}/server").status_code,
                                         users))
            wait(lambda: not servers_of(run.hub_port) and engine.gone(), "every server gone",
                 600)
            stopped = time.perf_counter() - began
            cpu = tree_cpu_seconds(run.proc.pid) - cpu
            api.close()
            found: dict[str, Any] = {"ready_s": round(ready, 2), "stop_s": round(stopped, 2),
                     "hub_cpu_s": round(cpu, 2)}
            summed = breakdown(run.hub_port)
            if summed:
                found["summed_s_count"] = summed
            return found
        finally:
            run.stop()
            engine.clean(users)
            if keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
                log = run.tmp / f"hub-{run.starts}.log"
                if log.exists():
                    (keep / f"{engine.name}-{hub}.log").write_bytes(log.read_bytes())


def record(hub: str, engine: Any, users: list[str],
           keep: Path | None) -> tuple[Recording, dict[str, Any]]:
    """Start and stop the servers through ``hub`` (which also warms the engine up: the
    first jobs/containers start slower), recording what the spawner had the engine run."""
    found: list[Recording] = []

    def take(run: HubRun) -> None:
        version = httpx.get(f"http://127.0.0.1:{run.hub_port}/hub/api/",
                            timeout=30).headers.get("X-JupyterHub-Version", "")
        found.append(Recording(engine.record(), version))

    result = measure_hub(hub, engine, users, keep and keep / "record", on_ready=take)
    if keep is not None:
        (keep / "record" / f"{engine.name}.json").write_text(
            json.dumps({"version": found[0].version, "servers": found[0].servers}, indent=2))
    if len(found[0].servers) != len(users):
        raise RuntimeError(f"recorded {len(found[0].servers)} servers of {len(users)}")
    return found[0], result


def run_engine(engine: Any, count: int, hubs: list[str], keep: Path | None = None,
               bare: bool = True) -> dict[str, Any]:
    """Record, the replayed floor, each hub, and the floor again: the engine's own times
    drift during a run (Kubernetes' pod deletion took from 16 to 40 s for the same 20
    pods), so the overhead is taken against the mean of the floor before and after the
    hubs, and both are reported. The bare floor (once, with ``bare``) is informative."""
    with engine.running(), accounts(count) as users:
        recording, recorded = record("courtyard" if "courtyard" in hubs else hubs[0], engine,
                                     users, keep)
        result: dict[str, Any] = {"recording_run": recorded}
        print(f"  recording run: {recorded}", flush=True)
        if bare:
            ready, stopped = engine.floor(users)
            result["bare_floor"] = {"ready_s": round(ready, 2), "stop_s": round(stopped, 2)}
            print(f"  bare floor: {result['bare_floor']}", flush=True)
        before = replay_floor(engine, recording, keep, "floor-before")
        result["floor_before"] = before
        print(f"  floor: {before}", flush=True)
        for hub in hubs:
            result[hub] = measure_hub(hub, engine, users, keep)
            print(f"  {hub}: {result[hub]}", flush=True)
        after = replay_floor(engine, recording, keep, "floor-after")
        result["floor_after"] = after
        ready = (before["ready_s"] + after["ready_s"]) / 2
        stopped = (before["stop_s"] + after["stop_s"]) / 2
        result["floor"] = {"ready_s": round(ready, 2), "stop_s": round(stopped, 2)}
        print(f"  floor again: {after}", flush=True)
        for hub in hubs:
            hub_result = result[hub]
            hub_result["overhead_s"] = round(
                hub_result["ready_s"] - ready + hub_result["stop_s"] - stopped, 2)
        if {"jupyterhub", "courtyard"} <= set(hubs):
            theirs = result["jupyterhub"]["overhead_s"]
            # a ratio only means something against an overhead above the floor's noise
            result["overhead_ratio"] = (round(result["courtyard"]["overhead_s"] / theirs, 3)
                                        if theirs > 0 else None)
        return result


def ensure_plugins(engines: list[str]) -> None:
    """The spawner packages beside each hub: in bench/.venv (JupyterHub 6) and in
    bench/.venv-courtyard when Courtyard runs from there (its extras of the same names)."""
    wanted = [req for name in engines for req in PLUGINS.get(name, [])]
    for venv in (".venv", ".venv-courtyard"):
        pip = BENCH / venv / "bin" / "pip"
        if wanted and pip.exists():
            subprocess.run([str(pip), "install", "-q", "--disable-pip-version-check",
                            "jupyterhub>=6,<7", *wanted], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default=",".join(ENGINES),
                        help=f"comma-separated, of {', '.join(ENGINES)}")
    parser.add_argument("--servers", type=int, default=20)
    parser.add_argument("--only", choices=HUBS, action="append")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="copy each hub's log to DIR/<engine>-<hub>.log (the recording "
                             "run's to DIR/record/), the floor's servers' to "
                             "DIR/<engine>-floor-{before,after}/")
    parser.add_argument("--no-bare", action="store_true",
                        help="skip the bare floor (plain jupyter server), which is informative")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C: engines, hubs and accounts are cleaned up on the way out
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if os.geteuid() != 0:
        print("bench/cluster.py runs as root (servers run as users' own accounts)",
              file=sys.stderr)
        return 2
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        parser.error(f"unknown engine {unknown[0]!r}; choose from {', '.join(ENGINES)}")
    hubs = args.only or list(HUBS)
    ensure_environment(hubs)
    ensure_plugins(engines)
    results: dict[str, Any] = {}
    for name in engines:
        print(f"{name}: {args.servers} servers", flush=True)
        results[name] = run_engine(ENGINES[name](args.servers), args.servers, hubs, args.keep,
                                   not args.no_bare)
    print(f"\n{'engine':<11} {'hub':<11} {'ready s':>8} {'stop s':>8} {'overhead s':>11} "
          f"{'hub CPU s':>10}")
    for name, result in results.items():
        floor = result["floor"]
        print(f"{name:<11} {'(floor)':<11} {floor['ready_s']:>8} {floor['stop_s']:>8}   "
              f"replayed; mean of {result['floor_before']['ready_s']} / "
              f"{result['floor_before']['stop_s']} and {result['floor_after']['ready_s']} / "
              f"{result['floor_after']['stop_s']}")
        if "bare_floor" in result:
            bare = result["bare_floor"]
            print(f"{'':<11} {'(bare)':<11} {bare['ready_s']:>8} {bare['stop_s']:>8}   "
                  "plain jupyter server, informative")
        for hub in hubs:
            r = result[hub]
            print(f"{'':<11} {hub:<11} {r['ready_s']:>8} {r['stop_s']:>8} {r['overhead_s']:>11} "
                  f"{r['hub_cpu_s']:>10}")
        if "overhead_ratio" in result:
            ratio = result["overhead_ratio"]
            print(f"{'':<11} Courtyard's overhead / JupyterHub's: "
                  f"{ratio if ratio is not None else 'n/a (no overhead above the floor)'} "
                  "(target: at most 0.2)")
    out = BENCH / "results" / f"cluster-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"servers": args.servers, "cpus": os.cpu_count(),
                               "uptime": Path("/proc/loadavg").read_text().split()[:3],
                               "results": results}, indent=2))
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
