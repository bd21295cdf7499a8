"""bench/api.py's report: each figure of both hubs, the ratio, and whether it meets the target."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from harness import HUBS

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
        phase, _, _ = self.key.partition(".")
        if phase.startswith("startup"):
            other = Metric(f"{phase.removesuffix('_s')}_best_other_cpu_pct", "", "", True)
        else:
            other = Metric(f"{phase}.other_cpu_pct", "", "", True)
        value = other.value(result)
        return value is not None and value > NOISY_OTHER_CPU_PCT


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


def compare(results: dict[int, dict[str, dict[str, object]]]) -> list[dict[str, object]]:
    """One row per (N, metric): both values, the better-by factor and the targets."""
    rows = []
    for n, by_hub in results.items():
        for metric in METRICS:
            jh = metric.value(by_hub.get("jupyterhub", {}))
            cy = metric.value(by_hub.get("courtyard", {}))
            ratio = None
            if jh and cy:
                ratio = cy / jh if metric.higher_is_better else jh / cy
            row: dict[str, object] = {
                "users": n,
                "metric": metric.label,
                "unit": metric.unit,
                "jupyterhub": jh,
                "courtyard": cy,
                "ratio": ratio,
                "meets_10x": None if ratio is None else ratio >= TARGET_RATIO,
                "noisy": [h for h in HUBS if metric.noisy(by_hub.get(h, {}))],
            }
            if metric.key.startswith("startup") and n >= TARGET_STARTUP_USERS:
                row["meets_startup_1s"] = None if cy is None else cy < TARGET_STARTUP_S
            rows.append(row)
    return rows


def format_table(rows: list[dict[str, object]]) -> str:
    def num(value: object, noisy: bool) -> str:
        if not isinstance(value, float):
            return "-"
        text = f"{value:,.0f}" if value >= 100 else f"{value:.3g}"
        return text + ("*" if noisy else " ")

    def mark(ok: object) -> str:
        return "-" if ok is None else ("yes" if ok else "NO")

    header = ("N", "metric", "unit", "JupyterHub", "Courtyard", "ratio", ">=10x")
    lines = []
    for row in rows:
        target = mark(row["meets_10x"])
        if "meets_startup_1s" in row:
            target += f"; <1 s: {mark(row['meets_startup_1s'])}"
        ratio, noisy = row["ratio"], cast(list[str], row["noisy"])
        lines.append(
            (
                f"{row['users']:,}",
                str(row["metric"]),
                str(row["unit"]),
                num(row["jupyterhub"], "jupyterhub" in noisy),
                num(row["courtyard"], "courtyard" in noisy),
                "-" if ratio is None else f"{ratio:.1f}x",
                target,
            )
        )
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
