"""bench/api.py's report: each figure of both hubs, the ratio, and whether it meets the target.

With a baseline (Courtyard at an earlier commit, `--baseline REF`), each figure also gets the
baseline's value and how many times better this checkout is than it (1.00x: the same). Over
several rounds each figure is the median of the rounds', with the range of the round ratios.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import cast

from harness import HUBS, better_by

TARGET_RATIO = 10.0
TARGET_STARTUP_S = 1.0
TARGET_STARTUP_USERS = 10_000
NOISY_OTHER_CPU_PCT = 25.0  # other processes took a quarter core: the figure is suspect


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    higher_is_better: bool

    def value(self, result: dict[str, object]) -> float | None:
        node: object = result
        for part in self.key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return float(node) if isinstance(node, int | float) else None

    def noisy(self, result: dict[str, object]) -> bool:
        """Whether other processes took more than NOISY_OTHER_CPU_PCT while it was measured."""
        value = self.other_cpu().value(result)
        return value is not None and value > NOISY_OTHER_CPU_PCT

    def other_cpu(self) -> Metric:
        """The share of a core other processes took while this figure was measured."""
        phase, _, _ = self.key.partition(".")
        if phase.startswith("startup"):
            return Metric(f"{phase.removesuffix('_s')}_best_other_cpu_pct", "", "", True)
        return Metric(f"{phase}.other_cpu_pct", "", "", True)


METRICS = (
    Metric("create.per_s", "create users (POST /users/{name})", "users/s", True),
    Metric("get_user_by_name.per_s", "GET /users/{name}", "req/s", True),
    Metric("get_user_by_name.p50_ms", "GET /users/{name} p50", "ms", False),
    Metric("get_user_by_name.p99_ms", "GET /users/{name} p99", "ms", False),
    Metric("page_users.seconds", "GET /users all pages (limit 200)", "s", False),
    Metric("page_users.per_s", "GET /users paging", "users/s", True),
    Metric("get_self.per_s", "GET /user", "req/s", True),
    Metric("startup_s", "start-up until /hub/api/ answers", "s", False),
    Metric("startup_cold_s", "start-up, proxy stopped too", "s", False),
)


def median_results(rounds: list[dict[str, dict[str, object]]]) -> dict[str, dict[str, object]]:
    """Per hub, the median over rounds of each figure and of the share other processes took
    meanwhile, as a result compare() reads."""
    medians: dict[str, dict[str, object]] = {}
    for hub in dict.fromkeys(hub for one in rounds for hub in one):
        merged: dict[str, object] = {}
        for metric in (m for figure in METRICS for m in (figure, figure.other_cpu())):
            values = [v for one in rounds if (v := metric.value(one.get(hub, {}))) is not None]
            if values:
                *parents, leaf = metric.key.split(".")
                node = merged
                for part in parents:
                    node = cast(dict[str, object], node.setdefault(part, {}))
                node[leaf] = statistics.median(values)
        medians[hub] = merged
    return medians


def add_round_ratios(rows: list[dict[str, object]], per_round: list[list[dict[str, object]]]) -> None:
    """Put each round's ratio against the baseline beside the median's (rows in the same order)."""
    for i, row in enumerate(rows):
        row["vs_baseline_rounds"] = [one[i].get("vs_baseline") for one in per_round]


def compare(
    results: dict[int, dict[str, dict[str, object]]], baseline: str | None = None
) -> list[dict[str, object]]:
    """One row per (N, metric): both values, the better-by factor and the targets; with the
    `baseline` hub's name, its value and this checkout's better-by factor against it."""
    rows = []
    for n, by_hub in results.items():
        for metric in METRICS:
            jh = metric.value(by_hub.get("jupyterhub", {}))
            cy = metric.value(by_hub.get("courtyard", {}))
            ratio = better_by(cy, jh, metric.higher_is_better)
            row: dict[str, object] = {
                "users": n,
                "metric": metric.label,
                "unit": metric.unit,
                "jupyterhub": jh,
                "courtyard": cy,
                "ratio": ratio,
                "meets_10x": None if ratio is None else ratio >= TARGET_RATIO,
                "noisy": [h for h in (*HUBS, baseline) if h and metric.noisy(by_hub.get(h, {}))],
            }
            if baseline is not None:
                base = metric.value(by_hub.get(baseline, {}))
                row["baseline"] = base
                row["vs_baseline"] = better_by(cy, base, metric.higher_is_better)
            if metric.key.startswith("startup") and n >= TARGET_STARTUP_USERS:
                row["meets_startup_1s"] = None if cy is None else cy < TARGET_STARTUP_S
            rows.append(row)
    return rows


def format_table(rows: list[dict[str, object]], baseline: str | None = None) -> str:
    """The rows as a text table; with `baseline` (its hub name), two more columns: its value
    and this checkout's better-by factor against it."""
    def num(value: object, noisy: bool) -> str:
        if not isinstance(value, float):
            return "-"
        text = f"{value:,.0f}" if value >= 100 else f"{value:.3g}"
        return text + ("*" if noisy else " ")

    def mark(ok: object) -> str:
        return "-" if ok is None else ("yes" if ok else "NO")

    header: tuple[str, ...] = ("N", "metric", "unit", "JupyterHub", "Courtyard", "ratio", ">=10x")
    rounds = baseline is not None and any(
        len(cast(list[object], row.get("vs_baseline_rounds", []))) > 1 for row in rows
    )
    if baseline is not None:
        header += (baseline.replace("courtyard", "Courtyard", 1), "vs base")
    if rounds:
        header += ("rounds' range",)
    lines = []
    for row in rows:
        target = mark(row["meets_10x"])
        if "meets_startup_1s" in row:
            target += f"; <1 s: {mark(row['meets_startup_1s'])}"
        ratio, noisy = row["ratio"], cast(list[str], row["noisy"])
        line: tuple[str, ...] = (
            f"{row['users']:,}",
            str(row["metric"]),
            str(row["unit"]),
            num(row["jupyterhub"], "jupyterhub" in noisy),
            num(row["courtyard"], "courtyard" in noisy),
            "-" if ratio is None else f"{ratio:.1f}x",
            target,
        )
        if baseline is not None:
            against = row.get("vs_baseline")
            line += (
                num(row.get("baseline"), baseline in noisy),
                "-" if not isinstance(against, float) else f"{against:.2f}x",
            )
        if rounds:
            spread = [r for r in cast(list[object], row["vs_baseline_rounds"]) if isinstance(r, float)]
            line += (f"{min(spread):.2f}-{max(spread):.2f}x" if spread else "-",)
        lines.append(line)
    widths = [max(len(col) for col in column) for column in zip(header, *lines, strict=True)]
    out = []
    for i, line in enumerate([header, *lines]):
        out.append(
            "  ".join(
                col.ljust(w) if j in (1, 2, 6) else col.rjust(w)
                for j, (col, w) in enumerate(zip(line, widths, strict=True))
            ).rstrip()
        )
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    if any(row["noisy"] for row in rows):
        out.append(
            f"* other processes used over {NOISY_OTHER_CPU_PCT:.0f}% of a core while this was "
            "measured: the machine was busy, re-run for a clean figure"
        )
    return "\n".join(out)
