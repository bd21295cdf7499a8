"""Many servers at once on a cluster engine: Courtyard against JupyterHub 6, same spawner,
same engine, one run.

    python bench/cluster.py                         # every engine installed, 20 servers
    python bench/cluster.py --engines slurm --servers 10

For each engine (Slurm with batchspawner's ``SlurmSpawner``; more as they are added to
``ENGINES``), one after the other on the same running engine:

1. **floor**: the engine alone starts ``--servers`` notebook servers (the same environment
   and user accounts, ``jupyter server`` with a token: no hub at all) and the time until
   every one answers ``/api`` is taken; then they are all stopped and the time until the
   engine has none left is taken. What the engine itself costs.
2. **each hub** (JupyterHub 6 from ``bench/.venv``, Courtyard from this checkout), on a fresh
   database, with one ``jupyterhub_config.py`` both load unchanged: ``--servers`` users,
   ``POST /hub/api/users/{name}/server`` for all at once; time until the API shows every
   server ready; then ``DELETE`` for all at once; time until the API shows none and the
   engine has none left. The hub's CPU (its process and its proxy) over both.
3. **the floor again**, after the hubs: the engine's own times drift during a run.

The figure the issue asks for is the hub's **overhead**, its time above the floor (the mean
of the two), summed over start and stop; the target is Courtyard's at most a fifth of JupyterHub's. Runs as
root (the servers run as the users' own accounts, made here as ``cybench0``... and removed
at the end). Results are printed and written to ``bench/results/cluster-*.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


# --------------------------------------------------------------------------- engines


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
        return self.cluster.spawner_config() + (
            # accounts made by the benchmark (JupyterHub needs them to exist), allowed by name
            f"c.LocalProcessSpawner.allowed_system_users = {set(users)!r}\n"
            # the one node has 2 CPUs: N jobs share them (the partition allows it on request)
            "c.SlurmSpawner.req_options = '--oversubscribe'\n")

    def jobs(self) -> list[str]:
        out = subprocess.run(["squeue", "-h", "-o", "%i"], env=self.cluster.env,
                             capture_output=True, text=True, timeout=30).stdout
        return out.split()

    def floor(self, users: list[str]) -> tuple[float, float]:
        """Seconds until N jobs running ``jupyter server`` all answer; until all are gone."""
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
            "c.KubeSpawner.delete_grace_period = 1\n")

    def pods(self) -> list[dict[str, Any]]:
        found = self.cluster.request("GET", f"/api/v1/namespaces/{self.namespace}/pods")
        return list((found or {}).get("items", []))

    def floor(self, users: list[str]) -> tuple[float, float]:
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

    def floor(self, users: list[str]) -> tuple[float, float]:
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


def hub_log(run: HubRun, lines: int = 80) -> str:
    """The end of the hub's log without the benchmark's own polling requests."""
    text = (run.tmp / f"hub-{run.starts}.log").read_text(errors="replace")
    kept = [line for line in text.splitlines() if "GET /hub/api/users " not in line]
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


def measure_hub(hub: str, engine: Any, users: list[str],
                keep: Path | None = None) -> dict[str, Any]:
    """Start N servers through ``hub`` at once, then stop them: seconds and the hub's CPU
    (and, with ``keep``, the hub's log copied there)."""
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
            began = time.perf_counter()
            with ThreadPoolExecutor(len(users)) as pool:
                statuses = list(pool.map(lambda u: api.delete(f"/users/{u}/server").status_code,
                                         users))
            wait(lambda: not servers_of(run.hub_port) and engine.gone(), "every server gone",
                 600)
            stopped = time.perf_counter() - began
            cpu = tree_cpu_seconds(run.proc.pid) - cpu
            api.close()
            found = {"ready_s": round(ready, 2), "stop_s": round(stopped, 2),
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


def run_engine(engine: Any, count: int, hubs: list[str],
               keep: Path | None = None) -> dict[str, Any]:
    """The floor, each hub, and the floor again: the engine's own times drift during a
    run (Kubernetes' pod deletion took from 16 to 40 s for the same 20 pods), so the
    overhead is taken against the mean of the floor before and after the hubs, and both
    are reported."""
    with engine.running(), accounts(count) as users:
        engine.floor(users)  # warm-up: the first jobs/containers start slower
        before = engine.floor(users)
        result: dict[str, Any] = {"floor_before": {"ready_s": round(before[0], 2),
                                                   "stop_s": round(before[1], 2)}}
        print(f"  floor: {result['floor_before']}", flush=True)
        for hub in hubs:
            result[hub] = measure_hub(hub, engine, users, keep)
            print(f"  {hub}: {result[hub]}", flush=True)
        after = engine.floor(users)
        result["floor_after"] = {"ready_s": round(after[0], 2), "stop_s": round(after[1], 2)}
        ready, stopped = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
        result["floor"] = {"ready_s": round(ready, 2), "stop_s": round(stopped, 2)}
        print(f"  floor again: {result['floor_after']}", flush=True)
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
                        help="copy each hub's log to DIR/<engine>-<hub>.log")
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
        results[name] = run_engine(ENGINES[name](args.servers), args.servers, hubs, args.keep)
    print(f"\n{'engine':<11} {'hub':<11} {'ready s':>8} {'stop s':>8} {'overhead s':>11} "
          f"{'hub CPU s':>10}")
    for name, result in results.items():
        floor = result["floor"]
        print(f"{name:<11} {'(floor)':<11} {floor['ready_s']:>8} {floor['stop_s']:>8}   "
              f"mean of {result['floor_before']} and {result['floor_after']}")
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
