"""Hub API benchmark: Courtyard against JupyterHub 6, side by side in one run.

For each user count N it starts each hub on a fresh SQLite database from the same
`jupyterhub_config.py`, then talks to the hub port directly:

  a. create N users, one `POST /hub/api/users/{name}` each       (users/s)
  b. `GET /hub/api/users/{name}` for random names                (req/s, p50/p99)
  c. page through `GET /hub/api/users?limit=200` via `_pagination.next`  (s, users/s)
  d. `GET /hub/api/user`                                         (req/s)
  e. restart on the same database, time until `GET /hub/api/` answers 200  (best of 3);
     a hub that keeps its proxy running across restarts is also timed with it stopped

Then it prints every figure with the Courtyard/JupyterHub ratio and writes the results
to `bench/results/`. Performance is only measured here, never asserted in the tests.
With `--baseline REF` Courtyard at git ref REF runs too, right after this checkout's, and
each figure gets this checkout's ratio against it (to show a refactor changed no figure);
`--rounds K` measures every hub K times, the order reversed every other round, and reports
the medians.

Run `python bench/api.py --quick` for a smoke test; see bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import orjson  # the client parses every page; json.loads would add ~1 ms a page to both hubs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    BENCH_DIR,
    BOOST_NICE,
    HUBS,
    PAGINATION_ACCEPT,
    RESULTS_DIR,
    TOKEN,
    WRK_SCRIPT,
    Connection,
    CpuMeter,
    HubFailed,
    HubRun,
    baseline,
    boost_priority,
    checked_baseline_hub,
    cpu_model,
    ensure_environment,
    is_baseline,
    run_workers,
    wait_quiet,
)
from report import NOISY_OTHER_CPU_PCT, add_round_ratios, compare, format_table, median_results

PAGE_LIMIT = 200
HUB_WIDTH = 10  # progress lines align hub names to this width (wider names overflow it)

# --------------------------------------------------------------------------- phases


async def create_users(port: int, names: list[str], concurrency: int) -> dict[str, float]:
    """a. One `POST /users/{name}` per user, `concurrency` requests in flight."""
    todo = iter(names)
    bad: list[int] = []

    async def work(conn: Connection) -> None:
        for name in todo:
            status, _ = await conn.request("POST", f"/hub/api/users/{name}")
            if status != 201:
                bad.append(status)

    began = time.perf_counter()
    await run_workers(concurrency, port, work)
    elapsed = time.perf_counter() - began
    if bad:
        raise RuntimeError(f"{len(bad)} creates failed, statuses {sorted(set(bad))}")
    return {"users": len(names), "seconds": round(elapsed, 3), "per_s": len(names) / elapsed}


async def hammer_python(
    port: int, paths: Callable[[], str], seconds: float, concurrency: int
) -> dict[str, float]:
    """GET `paths()` for `seconds` on `concurrency` connections; req/s and latency."""
    latencies: list[float] = []
    errors: list[int] = []
    deadline = time.perf_counter() + seconds

    async def work(conn: Connection) -> None:
        clock = time.perf_counter
        while (began := clock()) < deadline:
            status, _ = await conn.request("GET", paths())
            latencies.append(clock() - began)
            if status != 200:
                errors.append(status)

    began = time.perf_counter()
    await run_workers(concurrency, port, work)
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    }


def hammer_wrk(
    port: int,
    path: str,
    names_file: Path | None,
    seconds: float,
    concurrency: int,
    meter: CpuMeter,
    boost: bool,
) -> dict[str, float]:
    """Same as hammer_python, with wrk (C, one thread) as the load generator."""
    env = {**os.environ, "BENCH_TOKEN": TOKEN, "BENCH_PATH": path}
    if names_file is not None:
        env["BENCH_NAMES"] = str(names_file)
    cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "10s"]
    cmd += ["-s", str(WRK_SCRIPT), f"http://127.0.0.1:{port}"]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    if boost:
        boost_priority(proc.pid)
    assert proc.stdout is not None
    output = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    meter.client += usage.ru_utime + usage.ru_stime
    marker = next((line for line in output.splitlines() if line.startswith("BENCH_JSON ")), None)
    if proc.returncode != 0 or marker is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{output}")
    got = json.loads(marker.removeprefix("BENCH_JSON "))
    errors = sum(v for k, v in got.items() if k.startswith("errors_"))
    return {
        "requests": got["requests"],
        "errors": errors,
        "per_s": got["requests"] / (got["duration_us"] / 1e6),
        "p50_ms": got["p50_us"] / 1000,
        "p99_ms": got["p99_us"] / 1000,
    }


async def page_users(port: int, expected: int) -> float:
    """c. One pass over `GET /users` following `_pagination.next`; seconds taken."""
    conn = Connection(port)
    path: str | None = f"/hub/api/users?limit={PAGE_LIMIT}"
    seen: set[str] = set()
    began = time.perf_counter()
    try:
        while path is not None:
            status, body = await conn.request("GET", path, accept=PAGINATION_ACCEPT)
            if status != 200:
                raise RuntimeError(f"GET {path} answered {status}: {body[:200]!r}")
            page = orjson.loads(body)
            seen.update(user["name"] for user in page["items"])
            nxt = page["_pagination"]["next"]
            path = None if nxt is None else _path_of(nxt["url"])
    finally:
        await conn.close()
    elapsed = time.perf_counter() - began
    if len(seen) != expected:
        raise RuntimeError(f"paging saw {len(seen)} distinct users, expected {expected}")
    return elapsed


def _path_of(url: str) -> str:
    """Path and query of `next.url`, which names the public host, not the hub port."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


@dataclass
class Options:
    users: list[int]
    hubs: list[str]
    seconds: float
    warmup: float
    concurrency: int
    restarts: int
    client: str
    start_timeout: float
    keep: bool = False
    boost: bool = True
    baseline: str | None = None  # the baseline hub's name, courtyard@REF
    rounds: int = 1
    notes: list[str] = field(default_factory=list)


async def measure_hub(hub: str, n: int, opts: Options, result: dict[str, object]) -> None:
    """All five phases for one hub and one user count, on a fresh temp dir.

    Fills `result` as it goes, so a failure keeps the figures measured before it.
    """
    run = HubRun(hub, Path(tempfile.mkdtemp(prefix=f"bench-{hub}-{n}-")), users=n, boost=opts.boost)
    run.write_config()
    names = [f"bench-user-{i:05d}" for i in range(n)]
    names_file = run.tmp / "names.txt"
    names_file.write_text("\n".join(names) + "\n")
    result["users"] = n
    if hub == "courtyard":
        result["commit"] = courtyard_revision()  # the code may change between runs
    elif is_baseline(hub):
        result["commit"] = baseline(hub).short
    failed = True
    try:
        result["first_start_s"] = round(run.start(opts.start_timeout)[0], 3)
        run.settle()
        result["version"] = await hub_version(run.hub_port)
        result["create"] = await phase_create(run, names, opts)
        result["get_user_by_name"] = await phase_get(
            run,
            "get_user_by_name",
            lambda: f"/hub/api/users/{random.choice(names)}",
            opts,
            wrk_path="/hub/api/users/",
            names_file=names_file,
        )
        result["get_self"] = await phase_get(
            run, "get_self", lambda: "/hub/api/user", opts, wrk_path="/hub/api/user"
        )
        result["page_users"] = await phase_paging(run, n + 1)  # + the admin user
        result |= phase_startup(run, opts)
        failed = False
    finally:
        run.stop()
        if failed:
            print(f"--- {hub} log ({run.tmp}) ---\n{run.log_tail()}\n---", file=sys.stderr)
        elif not opts.keep:
            shutil.rmtree(run.tmp, ignore_errors=True)


async def phase_create(run: HubRun, names: list[str], opts: Options) -> dict[str, object]:
    """a. Create every user with its own `POST /users/{name}`."""
    meter = run.meter()
    with meter.measure():
        created = await create_users(run.hub_port, names, opts.concurrency)
    say(run, f"create: {created['per_s']:.0f} users/s", meter)
    return created | meter.report()


async def phase_get(
    run: HubRun,
    key: str,
    paths: Callable[[], str],
    opts: Options,
    wrk_path: str,
    names_file: Path | None = None,
) -> dict[str, object]:
    """b./d. A warm-up, then a timed GET load at fixed concurrency."""
    await get_load(run, paths, wrk_path, names_file, opts, run.meter(), opts.warmup)
    meter = run.meter()
    got = await get_load(run, paths, wrk_path, names_file, opts, meter, opts.seconds)
    say(
        run,
        f"{key}: {got['per_s']:.0f} req/s, p50 {got['p50_ms']:.1f} ms, p99 {got['p99_ms']:.1f} ms",
        meter,
    )
    return got | meter.report()


async def phase_paging(run: HubRun, expected: int) -> dict[str, object]:
    """c. Full passes over `GET /users` (3, or fewer if they take over 10 s); the median."""
    meter = run.meter()
    passes: list[float] = []
    with meter.measure():
        began = time.perf_counter()
        while len(passes) < 3 and (not passes or time.perf_counter() - began < 10):
            passes.append(await page_users(run.hub_port, expected))
    seconds = statistics.median(passes)
    say(run, f"paging: {seconds:.2f} s per pass ({expected / seconds:.0f} users/s)", meter)
    return {"passes": len(passes), "seconds": seconds, "per_s": expected / seconds} | (meter.report())


def phase_startup(run: HubRun, opts: Options) -> dict[str, object]:
    """e. Restart on the same database; best of `opts.restarts` start-up times.

    A hub that keeps its proxy running across restarts (Courtyard's default) is also timed
    from a cold start, with the proxy stopped too, as JupyterHub always starts.
    """
    result: dict[str, object] = {}
    kept = False
    for key, stop_proxy in (("startup", False), ("startup_cold", True)):
        if key == "startup_cold" and not kept:
            result |= {
                "startup_cold_s": result["startup_s"],
                "startup_cold_best_other_cpu_pct": result["startup_best_other_cpu_pct"],
            }
            break
        starts: list[tuple[float, float]] = []
        for _ in range(opts.restarts):
            run.stop(proxy=stop_proxy)
            kept = kept or run.proxy_left_running() is not None
            wait_quiet()
            starts.append(run.start(opts.start_timeout))
            run.settle()
        best, other = min(starts)
        noisy = " NOISY" if other > NOISY_OTHER_CPU_PCT else ""
        what = "start-up with the proxy running" if kept else "start-up"
        if stop_proxy:
            what = "start-up with the proxy stopped too"
        say(
            run,
            f"{what}: best {best:.2f} s of {', '.join(f'{s:.2f}' for s, _ in starts)}"
            f"  [other processes {other:.0f}% CPU]{noisy}",
        )
        result |= {
            f"{key}_s": round(best, 3),
            f"{key}_best_other_cpu_pct": other,
            f"{key}_all_s": [round(s, 3) for s, _ in starts],
            f"{key}_other_cpu_pct": [o for _, o in starts],
        }
    result["proxy_kept_across_restart"] = kept
    return result


async def get_load(
    run: HubRun,
    paths: Callable[[], str],
    wrk_path: str,
    names_file: Path | None,
    opts: Options,
    meter: CpuMeter,
    seconds: float,
) -> dict[str, float]:
    """GET load with the chosen client; raises when any request failed."""
    with meter.measure():
        if opts.client == "wrk":
            got = await asyncio.to_thread(
                hammer_wrk,
                run.hub_port,
                wrk_path,
                names_file,
                seconds,
                opts.concurrency,
                meter,
                opts.boost,
            )
        else:
            got = await hammer_python(run.hub_port, paths, seconds, opts.concurrency)
    if got["errors"]:
        raise RuntimeError(f"{got['errors']:.0f} of {got['requests']:.0f} GETs failed")
    return got


async def hub_version(port: int) -> dict[str, object]:
    """What `GET /hub/api/` says about the hub: JupyterHub's version (and Courtyard's own)."""
    conn = Connection(port)
    try:
        status, body = await conn.request("GET", "/hub/api/")
    finally:
        await conn.close()
    return json.loads(body) if status == 200 else {}


def courtyard_revision() -> str:
    """The git commit Courtyard runs from, "+dirty" when `courtyard/` has changes."""
    git = ["git", "-C", str(BENCH_DIR.parent)]
    try:
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "courtyard"], capture_output=True, text=True
        )
    except OSError:
        return "?"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") or "?"


def say(run: HubRun, text: str, meter: CpuMeter | None = None) -> None:
    """Print one progress line, with the CPU split of the phase when there is one."""
    cpu = ""
    if meter is not None:
        r = meter.report()
        cpu = (
            f"  [CPU: client {r['client_cpu_pct']:.0f}%, hub {r['server_cpu_pct']:.0f}%, "
            f"other processes {r['other_cpu_pct']:.0f}%]"
        )
        if r["other_cpu_pct"] > NOISY_OTHER_CPU_PCT:
            cpu += " NOISY"
    print(f"  {run.hub:<{HUB_WIDTH}} N={run.users:<6} {text}{cpu}", flush=True)


def environment_info(opts: Options) -> dict[str, object]:
    cpu = cpu_model()
    client = (
        "wrk 1 thread (GETs) + asyncio raw HTTP/1.1 keep-alive (create, paging)"
        if opts.client == "wrk"
        else "asyncio raw HTTP/1.1 keep-alive, one process"
    )
    info: dict[str, object] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "courtyard_commit": courtyard_revision(),
        "client": f"{client}, {opts.concurrency} concurrent connections",
        "get_seconds": opts.seconds,
        "restarts": opts.restarts,
        "priority": f"hub and client at nice {BOOST_NICE}" if opts.boost else "default",
        "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
    }
    if opts.baseline is not None:
        base = baseline(opts.baseline)
        info["baseline"] = {
            "ref": base.ref,
            "commit": base.commit,
            "venv": str(base.venv),
            "library_versions_differing": base.version_differences(),  # (this checkout, baseline)
        }
    return info


def parse_args(argv: list[str] | None) -> tuple[Options, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, nargs="+", default=[1000, 10_000], metavar="N")
    parser.add_argument("--only", choices=HUBS, help="benchmark one hub only (and the baseline)")
    parser.add_argument(
        "--baseline",
        metavar="REF",
        help="also run Courtyard at git ref REF (built once into bench/.venv-baseline) and "
        "give each figure this checkout's ratio against it",
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: 200 users, 2 s loads")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each GET load")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--restarts", type=int, default=3, help="start-up: best of this many")
    parser.add_argument(
        "--client",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="GET load generator; auto uses wrk when installed",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every hub this many times, the order reversed every other round; "
        "the table shows medians (and, with --baseline, the range of the rounds' ratios)",
    )
    parser.add_argument("--start-timeout", type=float, default=300.0)
    parser.add_argument("--keep", action="store_true", help="keep each hub's temp dir")
    parser.add_argument(
        "--no-boost",
        dest="boost",
        action="store_false",
        help="do not raise the priority of the hubs and the client (done when root)",
    )
    parser.add_argument("--output", type=Path, help="results JSON (default bench/results/)")
    args = parser.parse_args(argv)
    client = args.client
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "python"
    elif client == "wrk" and not shutil.which("wrk"):
        parser.error("wrk is not installed (apt-get install wrk)")
    opts = Options(
        users=[200] if args.quick else args.users,
        hubs=[args.only] if args.only else list(HUBS),
        seconds=2.0 if args.quick else args.seconds,
        warmup=1.0,
        concurrency=args.concurrency,
        restarts=args.restarts,
        client=client,
        start_timeout=args.start_timeout,
        keep=args.keep,
        boost=args.boost,
        baseline=checked_baseline_hub(parser, args.baseline),
        rounds=max(1, args.rounds),
    )
    if opts.baseline is not None:
        opts.hubs.append(opts.baseline)  # right after this checkout's Courtyard
    return opts, args


def output_path(args: argparse.Namespace) -> Path:
    if args.output:
        return args.output
    parts = ("quick" if args.quick else "", args.only or "", f"vs-{args.baseline}" if args.baseline else "")
    suffix = "".join(f"-{part}" for part in parts if part)
    path = RESULTS_DIR / f"api-{dt.date.today().isoformat()}{suffix}.json"
    if path.exists():  # a second run the same day keeps the first
        path = path.with_stem(f"{path.stem}-{dt.datetime.now():%H%M%S}")
    return path


async def main_async(opts: Options, args: argparse.Namespace) -> int:
    info = environment_info(opts)
    print(f"client: {info['client']} ({info['event_loop']} loop); CPU: {info['cpu']}, {info['cores']} cores")
    if opts.baseline is not None:
        base = baseline(opts.baseline)
        print(f"baseline: {opts.baseline} = {base.short}, from {base.venv}")
        for name, (new, old) in base.version_differences().items():
            print(f"  library versions differ: {name} {new} here, {old} in the baseline")
    rounds: dict[int, list[dict[str, dict[str, object]]]] = {}
    failures: dict[str, str] = {}
    for n in opts.users:
        rounds[n] = []
        for turn in range(opts.rounds):
            rounds[n].append({})
            if opts.rounds > 1:
                print(f"round {turn + 1} of {opts.rounds}, N={n}", flush=True)
            for hub in opts.hubs if turn % 2 == 0 else opts.hubs[::-1]:
                result = rounds[n][turn][hub] = {}
                try:
                    await measure_hub(hub, n, opts, result)
                except (HubFailed, RuntimeError, OSError, ValueError, KeyError) as exc:
                    where = f"{hub} N={n}" + (f" round {turn + 1}" if opts.rounds > 1 else "")
                    failures[where] = result["error"] = f"{type(exc).__name__}: {exc}"
                    print(f"  {hub:<{HUB_WIDTH}} N={n:<6} FAILED: {exc}", file=sys.stderr, flush=True)
    if opts.rounds == 1:
        results = {n: runs[0] for n, runs in rounds.items()}
        rows = compare(results, opts.baseline)
    else:
        results = {n: median_results(runs) for n, runs in rounds.items()}
        rows = compare(results, opts.baseline)
        if opts.baseline is not None:
            per_round = [
                [row for n, runs in rounds.items() for row in compare({n: runs[turn]}, opts.baseline)]
                for turn in range(opts.rounds)
            ]
            add_round_ratios(rows, per_round)
    print()
    if opts.rounds > 1:
        print(f"medians of {opts.rounds} rounds")
    print(format_table(rows, opts.baseline))
    for what, why in failures.items():
        print(f"FAILED {what}: {why}")
    out = output_path(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"environment": info, "results": results, "comparison": rows, "failures": failures}
    if opts.rounds > 1:
        report["rounds"] = rounds
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nresults: {out}")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    opts, args = parse_args(argv)
    opts.boost = opts.boost and boost_priority()
    ensure_environment(opts.hubs)
    try:
        import uvloop  # a cheaper client loop leaves more CPU to the hub
    except ImportError:
        return asyncio.run(main_async(opts, args))
    return uvloop.run(main_async(opts, args))


if __name__ == "__main__":
    sys.exit(main())
