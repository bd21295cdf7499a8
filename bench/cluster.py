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
4. **the floor again**, after the hubs: the engine's own times drift during a run. Steps 3
   and 4 are one round; ``--rounds`` (default 3) runs them again, the hubs' order reversed
   every other round.

The figure the issue asks for is the hub's **overhead**, its time above the replayed floor
(the mean of the floors before and after its round), summed over start and stop, as the
median over the rounds; the target is Courtyard's at most a fifth of JupyterHub's. Runs as
root (the servers run as the users' own accounts, made here as ``cybench0``... and removed at
the end). Results are printed and written to ``bench/results/cluster-*.json``; the engines
are in ``cluster_engines.py``, the recording, the stub hub and the replay in
``cluster_replay.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import signal
import statistics
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

from cluster_engines import ENGINES  # noqa: E402
from cluster_replay import Recording, replay_floor, wait  # noqa: E402
from harness import (  # noqa: E402
    HUBS,
    TOKEN,
    HubFailed,
    HubRun,
    ensure_environment,
    tree_cpu_seconds,
)

USER_PREFIX = "cybench"
PLUGINS = {"slurm": ["batchspawner>=1.3,<2"], "kubernetes": ["jupyterhub-kubespawner>=7,<8"],
           "docker": ["dockerspawner>=14,<15"]}  # what bench/.venv's JupyterHub needs


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
               bare: bool = True, rounds: int = 3) -> dict[str, Any]:
    """Record; then ``rounds`` rounds, each the replayed floor followed by every hub (their
    order reversed every other round); and the floor once more. The engine's own times
    drift during a run (Kubernetes' pod deletion took from 16 to 40 s for the same 20 pods),
    so each hub run's overhead is taken against the mean of the floors on either side of it,
    and the summary is the median over the rounds. The bare floor (once, with ``bare``) is
    informative."""
    with engine.running(), accounts(count) as users:
        recording, recorded = record("courtyard" if "courtyard" in hubs else hubs[0], engine,
                                     users, keep)
        result: dict[str, Any] = {"recording_run": recorded}
        print(f"  recording run: {recorded}", flush=True)
        if bare:
            ready, stopped = engine.floor(users)
            result["bare_floor"] = {"ready_s": round(ready, 2), "stop_s": round(stopped, 2)}
            print(f"  bare floor: {result['bare_floor']}", flush=True)
        floors = [replay_floor(engine, recording, keep, "floor-0")]
        print(f"  floor: {floors[0]}", flush=True)
        runs: dict[str, list[dict[str, Any]]] = {hub: [] for hub in hubs}
        for index in range(rounds):
            for hub in hubs if index % 2 == 0 else hubs[::-1]:
                found = measure_hub(hub, engine, users, keep and keep / f"round-{index + 1}")
                found["round"] = index + 1
                runs[hub].append(found)
                print(f"  round {index + 1}, {hub}: {found}", flush=True)
            floors.append(replay_floor(engine, recording, keep, f"floor-{index + 1}"))
            print(f"  floor: {floors[-1]}", flush=True)
        result["floors"] = floors
        result.update(summarize(floors, runs))
        return result


def summarize(floors: list[dict[str, Any]],
              runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Each hub run's start and stop overheads (its time above the mean of the floors
    before and after its round), the medians over the rounds, and Courtyard's overhead
    over JupyterHub's: of the medians, and per round."""
    summary: dict[str, Any] = {}
    for hub, found in runs.items():
        for run in found:
            before, after = floors[run["round"] - 1], floors[run["round"]]
            run["start_overhead_s"] = round(
                run["ready_s"] - (before["ready_s"] + after["ready_s"]) / 2, 2)
            run["stop_overhead_s"] = round(
                run["stop_s"] - (before["stop_s"] + after["stop_s"]) / 2, 2)
            run["overhead_s"] = round(run["start_overhead_s"] + run["stop_overhead_s"], 2)
        summary[hub] = {key: round(statistics.median(run[key] for run in found), 2)
                        for key in ("ready_s", "stop_s", "hub_cpu_s", "start_overhead_s",
                                    "stop_overhead_s", "overhead_s")}
        summary[hub]["rounds"] = found
    summary["floor"] = {key: round(statistics.median(f[key] for f in floors), 2)
                        for key in ("ready_s", "stop_s")}
    if {"jupyterhub", "courtyard"} <= set(runs):
        theirs, ours = summary["jupyterhub"], summary["courtyard"]
        # a ratio only means something against an overhead above the floor's noise
        summary["overhead_ratio"] = (round(ours["overhead_s"] / theirs["overhead_s"], 3)
                                     if theirs["overhead_s"] > 0 else None)
        summary["overhead_ratio_per_round"] = [
            round(o["overhead_s"] / t["overhead_s"], 3) if t["overhead_s"] > 0 else None
            for t, o in zip(runs["jupyterhub"], runs["courtyard"], strict=True)]
        summary["cpu_ratio"] = round(ours["hub_cpu_s"] / theirs["hub_cpu_s"], 3)
    return summary


def ensure_plugins(engines: list[str]) -> None:
    """The spawner packages beside each hub: in bench/.venv (JupyterHub 6) and in
    bench/.venv-courtyard when Courtyard runs from there (its extras of the same names)."""
    wanted = [req for name in engines for req in PLUGINS.get(name, [])]
    for venv in (".venv", ".venv-courtyard"):
        pip = BENCH / venv / "bin" / "pip"
        if wanted and pip.exists():
            subprocess.run([str(pip), "install", "-q", "--disable-pip-version-check",
                            "jupyterhub>=6,<7", *wanted], check=True)


def report(results: dict[str, Any], hubs: list[str]) -> None:
    """The medians over the rounds, per engine, and the ratio with its range per round."""
    print(f"\n{'engine':<11} {'hub':<11} {'ready s':>8} {'stop s':>8} {'start +':>8} "
          f"{'stop +':>7} {'overhead s':>11} {'hub CPU s':>10}")
    for name, result in results.items():
        floor = result["floor"]
        print(f"{name:<11} {'(floor)':<11} {floor['ready_s']:>8} {floor['stop_s']:>8}   "
              "replayed; " + ", ".join(f"{f['ready_s']} / {f['stop_s']}"
                                       for f in result["floors"]))
        if "bare_floor" in result:
            bare = result["bare_floor"]
            print(f"{'':<11} {'(bare)':<11} {bare['ready_s']:>8} {bare['stop_s']:>8}   "
                  "plain jupyter server, informative")
        for hub in hubs:
            r = result[hub]
            print(f"{'':<11} {hub:<11} {r['ready_s']:>8} {r['stop_s']:>8} "
                  f"{r['start_overhead_s']:>8} {r['stop_overhead_s']:>7} {r['overhead_s']:>11} "
                  f"{r['hub_cpu_s']:>10}")
        if "overhead_ratio" in result:
            ratio = result["overhead_ratio"]
            print(f"{'':<11} Courtyard's overhead / JupyterHub's, of the medians: "
                  f"{ratio if ratio is not None else 'n/a (no overhead above the floor)'} "
                  f"(target: at most 0.2); per round: {result['overhead_ratio_per_round']}; "
                  f"hub CPU: {result['cpu_ratio']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default=",".join(ENGINES),
                        help=f"comma-separated, of {', '.join(ENGINES)}")
    parser.add_argument("--servers", type=int, default=20)
    parser.add_argument("--only", choices=HUBS, action="append")
    parser.add_argument("--rounds", type=int, default=3,
                        help="floor-and-hubs rounds per engine (the hubs' order reversed "
                             "every other round); the summary is the median (default 3)")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="copy each hub's log to DIR/round-<n>/<engine>-<hub>.log (the "
                             "recording run's to DIR/record/), the floor's servers' to "
                             "DIR/<engine>-floor-<n>/")
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
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    hubs = args.only or list(HUBS)
    ensure_environment(hubs)
    ensure_plugins(engines)
    results: dict[str, Any] = {}
    out = BENCH / "results" / f"cluster-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    for name in engines:
        print(f"{name}: {args.servers} servers, {args.rounds} rounds", flush=True)
        results[name] = run_engine(ENGINES[name](args.servers), args.servers, hubs, args.keep,
                                   not args.no_bare, args.rounds)
        # after each engine: a later engine's failure does not lose this one's rounds
        out.write_text(json.dumps({"servers": args.servers, "rounds": args.rounds,
                                   "cpus": os.cpu_count(),
                                   "uptime": Path("/proc/loadavg").read_text().split()[:3],
                                   "results": results}, indent=2))
    report(results, hubs)
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())