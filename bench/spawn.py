"""Spawning servers: Courtyard against JupyterHub 6, side by side, with a tiny real server.

Both hubs run ``tests/spawners/mocksu.py`` (stdlib only) with bench/.venv's Python: JupyterHub
through its ``SimpleLocalProcessSpawner``, Courtyard through its LocalProcessSpawner run as the
hub's own user (as JupyterHub's simple spawner does; as root it would otherwise create a system
user per server). Phases, per hub, on a fresh temp dir:

- ``start_N``: N users each POST their server at once; until ``state=ready`` counts N;
- ``stop_N``: every server DELETEd at once; until ``state=active`` counts 0;
- ``restart_R``: R servers running, the hub stopped (servers left running) and started again:
  seconds until the API answers, and until ``state=ready`` counts R again (every server checked).

    python bench/spawn.py [--servers 50 500] [--restart-servers 1000] [--only HUB] [--quick]
                          [--baseline REF]

``--baseline REF`` also runs Courtyard at git ref REF (see bench/README.md) and gives each
figure this checkout's ratio against it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    HUBS,
    PAGINATION_ACCEPT,
    RESULTS_DIR,
    TOKEN,
    HubRun,
    baseline,
    better_by,
    checked_baseline_hub,
    ensure_environment,
    free_ports,
    is_courtyard,
    wait_quiet,
)

VENV_PYTHON = Path(__file__).resolve().parent / ".venv" / "bin" / "python"
MOCKSU = Path(__file__).resolve().parent.parent / "tests" / "spawners" / "mocksu.py"
TARGET_RATIO = 5.0

SPAWNER_MODULE = '''\
"""Courtyard's local spawner run as the hub's own user (as JupyterHub's simple spawner)."""
import os
from pathlib import Path

from courtyard.spawners.local import LocalProcessSpawner


class HubUserSpawner(LocalProcessSpawner):
    async def _account(self):
        home = Path(self.hub.data_dir) / "users" / self.user.name
        home.mkdir(parents=True, exist_ok=True)
        return {}, str(home), {"HOME": str(home)}

    async def check_adopted(self):
        # as root the hub stops a server it finds running as root at its start; here every
        # server runs as the hub's user by design (above), so the restart keeps them
        return None
'''

EXTRA_CONFIG = """
# bench/spawn.py: servers are mocksu, run by bench/.venv's Python
import sys
sys.path.insert(0, {tmp!r})
c.Spawner.cmd = [{python!r}, {mocksu!r}]
c.Spawner.start_timeout = 300
c.Spawner.http_timeout = 300
c.Spawner.poll_interval = 30
c.JupyterHub.concurrent_spawn_limit = 100000
c.JupyterHub.active_server_limit = 0
c.JupyterHub.cleanup_servers = False
c.JupyterHub.spawner_class = {spawner!r}
c.LocalProcessSpawner.term_timeout = 5
"""


class SpawnRun(HubRun):
    def write_config(self) -> None:
        super().write_config()
        shutil.copy(MOCKSU, self.tmp / "mocksu.py")
        if is_courtyard(self.hub):
            (self.tmp / "bench_spawner.py").write_text(SPAWNER_MODULE)
            spawner = "bench_spawner.HubUserSpawner"
        else:
            spawner = "simple"
        with self.config.open("a") as f:
            f.write(
                EXTRA_CONFIG.format(
                    tmp=str(self.tmp),
                    python=str(VENV_PYTHON),
                    mocksu=str(self.tmp / "mocksu.py"),
                    spawner=spawner,
                )
            )

    def leftover_servers(self) -> list[int]:
        """PIDs of this run's mocksu processes (their command names this run's copy)."""
        marker = str(self.tmp / "mocksu.py").encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if marker in (entry / "cmdline").read_bytes():
                        pids.append(int(entry.name))
                except OSError:
                    pass
        return pids


def client(run: HubRun) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{run.hub_port}/hub/api",
        trust_env=False,
        timeout=600,
        headers={"Authorization": f"token {TOKEN}"},
        # idle connections go before the hub drops them (uvicorn: after 5 s), so that a
        # request never meets a connection closing under it
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=100,
                            keepalive_expiry=1.0),
    )


async def count(api: httpx.AsyncClient, state: str) -> int:
    r = await api.get("/users", params={"state": state, "limit": 1}, headers={"Accept": PAGINATION_ACCEPT})
    r.raise_for_status()
    return int(r.json()["_pagination"]["total"])


async def until(api: httpx.AsyncClient, state: str, target: int, timeout: float) -> float:
    began = time.perf_counter()
    while True:
        n = await count(api, state)
        if n == target:
            return time.perf_counter() - began
        if time.perf_counter() - began > timeout:
            raise TimeoutError(f"state={state}: {n}, not {target}, after {timeout:.0f} s")
        await asyncio.sleep(0.1)


async def burst(run: HubRun, method: str, paths: list[str]) -> list[int]:
    """Every request at once, each on its own connection (as many users clicking at once).

    A few lines of asyncio cost the client microseconds per request; httpx costs over a
    millisecond, and with hundreds of requests queued on its pool far more (its pool
    rescans every queued request at each step), which here took tens of seconds of this
    machine's two cores away from the hub under test."""
    head = (f"Host: 127.0.0.1:{run.hub_port}\r\nAuthorization: token {TOKEN}\r\n"
            "Content-Length: 0\r\nConnection: close\r\n\r\n")

    async def one(path: str) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", run.hub_port)
        try:
            writer.write(f"{method} /hub/api{path} HTTP/1.1\r\n{head}".encode())
            status = int((await reader.readline()).split()[1])
            await reader.read()  # the rest, until the hub closes the connection
        finally:
            writer.close()
        return status

    return await asyncio.gather(*(one(path) for path in paths))


async def all_checked(api: httpx.AsyncClient, timeout: float) -> int:
    """Until the new hub has checked every recorded server: as many ready as active (a
    server still being checked counts as active, not ready; one found dead as neither).
    Returns how many are ready."""
    began = time.perf_counter()
    while True:
        ready, active = await count(api, "ready"), await count(api, "active")
        if ready == active and ready > 0:
            return ready
        if time.perf_counter() - began > timeout:
            raise TimeoutError(f"{ready} ready of {active} active after {timeout:.0f} s")
        await asyncio.sleep(0.1)


async def start_all(run: HubRun, api: httpx.AsyncClient, names: list[str]) -> dict[str, Any]:
    r = await api.post("/users", json={"usernames": names})
    assert r.status_code in (201, 409), r.text
    began = time.perf_counter()
    statuses = await burst(run, "POST", [f"/users/{n}/server" for n in names])
    bad = [s for s in statuses if s not in (201, 202)]
    posted = time.perf_counter() - began
    await until(api, "ready", len(names), 60 + len(names))
    took = time.perf_counter() - began
    return {
        "servers": len(names),
        "seconds": round(took, 3),
        "posts_s": round(posted, 3),
        "per_s": round(len(names) / took, 1),
        "errors": len(bad),
    }


async def stop_all(run: HubRun, api: httpx.AsyncClient, names: list[str]) -> dict[str, Any]:
    began = time.perf_counter()
    statuses = await burst(run, "DELETE", [f"/users/{n}/server" for n in names])
    bad = [s for s in statuses if s not in (202, 204)]
    await until(api, "active", 0, 60 + len(names))
    took = time.perf_counter() - began
    return {
        "servers": len(names),
        "seconds": round(took, 3),
        "per_s": round(len(names) / took, 1),
        "errors": len(bad),
    }


async def _answers(port: int, path: str, deadline: float) -> None:
    """Until ``GET http://127.0.0.1:port{path}`` answers (10 ms between tries)."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    while True:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(request.encode())
                if (await reader.readline()).split(b" ")[1:2] == [b"200"]:
                    return
            finally:
                writer.close()
        except (OSError, IndexError):
            pass
        if time.perf_counter() > deadline:
            raise TimeoutError(f"nothing answered at port {port}")
        await asyncio.sleep(0.01)


async def bare_start(n: int) -> dict[str, Any]:
    """The floor under ``start_N``: N mocksu started at once by a plain loop, no hub, until
    each answers its ``api`` URL; every hub's figure includes this much."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-spawn-bare-"))
    procs = []
    began = time.perf_counter()
    try:
        seen: set[int] = set()
        while len(seen) < n:  # distinct ports: each batch is held open together
            seen.update(free_ports(min(500, n - len(seen))))
        ports = sorted(seen)
        for i, port in enumerate(ports):
            env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp),
                   "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}/user/u{i}/"}
            procs.append(subprocess.Popen([str(VENV_PYTHON), str(MOCKSU)], env=env, cwd=tmp,
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.STDOUT, start_new_session=True))
        deadline = began + 60 + n
        await asyncio.gather(*(_answers(port, f"/user/u{i}/api", deadline)
                               for i, port in enumerate(ports)))
        took = time.perf_counter() - began
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"servers": n, "seconds": round(took, 3)}


def quiet() -> float:
    """Wait (up to 30 s) for the rest of the machine to go quiet; the % of a core it used."""
    return round(wait_quiet(), 1)


async def measure(hub: str, sizes: list[int], restart: int) -> dict[str, Any]:
    run = SpawnRun(hub, Path(tempfile.mkdtemp(prefix=f"bench-spawn-{hub}-")), users=0)
    run.write_config()
    result: dict[str, Any] = {}
    try:
        run.start(120)
        run.settle()
        async with client(run) as api:
            for n in sizes:
                names = [f"s{n}-{i:05d}" for i in range(n)]
                other = quiet()
                result[f"start_{n}"] = {**await start_all(run, api, names), "other_cpu_pct": other}
                print(f"  {hub}: started {n} in {result[f'start_{n}']['seconds']:.2f} s")
                other = quiet()
                result[f"stop_{n}"] = {**await stop_all(run, api, names), "other_cpu_pct": other}
                print(f"  {hub}: stopped {n} in {result[f'stop_{n}']['seconds']:.2f} s")
            names = [f"r{restart}-{i:05d}" for i in range(restart)]
            result[f"restart_start_{restart}"] = await start_all(run, api, names)
            print(f"  {hub}: {restart} running for the restart")
        run.stop(proxy=False)
        other = quiet()
        began = time.perf_counter()
        answers, _ = run.start(300)
        async with client(run) as api:
            ready = await all_checked(api, 600)
            checked = time.perf_counter() - began
            result[f"restart_{restart}"] = {
                "servers": restart,
                "still_running": ready,  # a server that died meanwhile is not waited for
                "api_s": round(answers, 3),
                "checked_s": round(checked, 3),
                "other_cpu_pct": other,
            }
            print(f"  {hub}: restart with {restart}: API in {answers:.2f} s, all checked in {checked:.2f} s")
            run.settle()
            result[f"restart_stop_{restart}"] = await stop_all(run, api, names)
    except BaseException:
        print(run.log_tail(40), file=sys.stderr)
        kept = Path(tempfile.mkdtemp(prefix=f"bench-spawn-failed-{hub}-"))
        for log in run.tmp.glob("*.log"):
            shutil.copy(log, kept)
        print(f"{hub}: its logs are in {kept}", file=sys.stderr)
        raise
    finally:
        run.stop(proxy=True)
        for pid in run.leftover_servers():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(run.tmp, ignore_errors=True)
    return result


def table(results: dict[str, dict[str, Any]], floors: dict[str, dict[str, Any]] | None = None,
          base: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """Rows of seconds per hub, the JupyterHub/Courtyard ratio and the 5x target; for starts,
    the floor (the same servers started without a hub) too; with `base` (a baseline hub's
    name), its seconds and this checkout's better-by factor against it."""
    floors = floors or {}
    keys: list[tuple[str, str, str]] = []
    for hub in results.values():
        for phase, fig in hub.items():
            if phase.startswith(("start_", "stop_")):
                keys.append((phase, "seconds", f"{phase.split('_')[0]} {fig['servers']} servers"))
            elif phase.startswith("restart_") and "api_s" in fig:
                keys += [
                    (phase, "api_s", f"restart, {fig['servers']} running: API answers"),
                    (phase, "checked_s", f"restart, {fig['servers']} running: all checked"),
                ]
        break
    rows = []
    lines = [f"{'metric':<44}{'JupyterHub s':>14}{'Courtyard s':>13}{'ratio':>8}  5x?"
             f"{'floor s':>10}"]
    base_width = len(base) + 4 if base else 0
    if base:
        lines[0] += f"{base.replace('courtyard', 'Courtyard', 1) + ' s':>{base_width}}{'vs base':>9}"
    for phase, field, label in keys:
        jh = results.get("jupyterhub", {}).get(phase, {}).get(field)
        cy = results.get("courtyard", {}).get(phase, {}).get(field)
        ratio = round(jh / cy, 1) if jh and cy else None
        floor = floors.get(phase, {}).get("seconds")
        row = {
            "metric": label,
            "jupyterhub_s": jh,
            "courtyard_s": cy,
            "ratio": ratio,
            "meets_target": ratio is not None and ratio >= TARGET_RATIO,
            "floor_s": floor,
        }
        line = (
            f"{label:<44}{jh if jh is not None else '-':>14}"
            f"{cy if cy is not None else '-':>13}{ratio if ratio else '-':>8}  "
            f"{('yes' if ratio >= TARGET_RATIO else 'NO ') if ratio else '-  '}"
            f"{floor if floor is not None else '':>10}"
        )
        if base:
            old = results.get(base, {}).get(phase, {}).get(field)
            against = better_by(cy, old, higher_is_better=False)
            row |= {"baseline_s": old, "vs_baseline": None if against is None else round(against, 2)}
            line += (f"{old if old is not None else '-':>{base_width}}"
                     f"{f'{against:.2f}x' if against else '-':>9}")
        rows.append(row)
        lines.append(line)
    return "\n".join(lines), rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--servers", type=int, nargs="+", default=[50, 500])
    p.add_argument("--restart-servers", type=int, default=1000)
    p.add_argument("--only", choices=HUBS)
    p.add_argument("--baseline", metavar="REF",
                   help="also run Courtyard at git ref REF (see bench/README.md)")
    p.add_argument("--quick", action="store_true", help="20 servers, restart with 50")
    p.add_argument("--no-floor", action="store_true",
                   help="skip timing N bare mocksu processes started without a hub")
    args = p.parse_args(argv)
    if args.quick:
        args.servers, args.restart_servers = [20], 50
    hubs = [args.only] if args.only else list(HUBS)
    base = checked_baseline_hub(p, args.baseline)
    if base is not None:
        hubs.append(base)
    ensure_environment(["jupyterhub", *([base] if base else [])])  # mocksu: bench/.venv's Python
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    floors = {}
    if not args.no_floor:
        for n in args.servers:
            quiet()
            floors[f"start_{n}"] = asyncio.run(bare_start(n))
            print(f"floor: {n} mocksu started without a hub answer in "
                  f"{floors[f'start_{n}']['seconds']:.2f} s")
    results: dict[str, dict[str, Any]] = {}
    for hub in hubs:
        print(f"{hub}: servers {args.servers}, restart with {args.restart_servers}")
        results[hub] = asyncio.run(measure(hub, args.servers, args.restart_servers))
    text, rows = table(results, floors, base)
    print(text)
    RESULTS_DIR.mkdir(exist_ok=True)
    parts = ("quick" if args.quick else "", args.only or "", f"vs-{args.baseline}" if base else "")
    suffix = "".join(f"-{part}" for part in parts if part)
    out = RESULTS_DIR / f"spawn-{date.today().isoformat()}{suffix}.json"
    if out.exists():  # a second run the same day keeps the first
        out = out.with_stem(f"{out.stem}-{time.strftime('%H%M%S')}")
    out.write_text(
        json.dumps(
            {
                "args": vars(args),
                "results": results,
                "floor": floors,
                "comparison": rows,
                "target_ratio": TARGET_RATIO,
                "cpus": os.cpu_count(),
                **({"baseline_commit": baseline(base).commit} if base else {}),
            },
            indent=2,
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
