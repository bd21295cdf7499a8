"""The hub's Prometheus metrics, kept in memory: JupyterHub's names, plus Courtyard's own.

Each event (a spawn ending, a stop, a poll, a route added) costs a dict lookup and a
bisection, never a query; ``/hub/metrics`` (:mod:`courtyard.api.metrics`) renders them in
Prometheus' text format, with the gauges read at scrape time. One :class:`Metrics` per hub
(``hub.metrics``), so hubs in one process (the tests) never mix their numbers. Written here
rather than with ``prometheus_client`` (whose registry is global to the process, and which
Courtyard does not otherwise need). The series and buckets JupyterHub 6 declares up front
are declared here too, so a dashboard made for JupyterHub finds them at zero.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from time import perf_counter

# JupyterHub's buckets (jupyterhub/metrics.py): spawns take a while, the rest is quick
SPAWN_BUCKETS = (0.5, 1, 2.5, 5, 10, 15, 30, 60, 120, 180, 300, 600)
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
STAGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

Labels = tuple[str, ...]


def number(value: float) -> str:
    """A sample value as Prometheus writes it."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def label_text(names: Labels, values: Labels) -> str:
    if not names:
        return ""
    escaped = (v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"") for v in values)
    return "{" + ",".join(f'{n}="{v}"' for n, v in zip(names, escaped, strict=True)) + "}"


class Histogram:
    """Observations bucketed by upper bound, per label values."""

    kind = "histogram"

    def __init__(self, name: str, help_text: str, labels: Labels = (),
                 buckets: tuple[float, ...] = DEFAULT_BUCKETS,
                 declared: Iterable[Labels] = ()) -> None:
        self.name, self.help, self.labels, self.buckets = name, help_text, labels, buckets
        # label values -> [count in each bucket (not cumulative), count above the last, sum]
        self.series: dict[Labels, list[float]] = {}
        for values in declared if labels else [()]:  # a metric without labels: one series
            self._row(values)

    def _row(self, values: Labels) -> list[float]:
        row = self.series.get(values)
        if row is None:
            row = self.series[values] = [0.0] * (len(self.buckets) + 2)
        return row

    def observe(self, seconds: float, *values: str) -> None:
        row = self._row(values)
        row[bisect_left(self.buckets, seconds)] += 1  # a bucket holds values <= its bound
        row[-1] += seconds

    def count(self, *values: str) -> int:
        row = self.series.get(values)
        return int(sum(row[:-1])) if row else 0

    def samples(self) -> Iterator[str]:
        for values, row in sorted(self.series.items()):
            total = 0.0
            for bound, hits in zip((*self.buckets, math.inf), row[:-1], strict=True):
                total += hits
                labels = label_text((*self.labels, "le"), (*values, number(bound)))
                yield f"{self.name}_bucket{labels} {number(total)}"
            labels = label_text(self.labels, values)
            yield f"{self.name}_count{labels} {number(total)}"
            yield f"{self.name}_sum{labels} {number(row[-1])}"


class Counter:
    """A count that only goes up (its name ends in ``_total``, as Prometheus wants)."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Labels = (),
                 declared: Iterable[Labels] = ()) -> None:
        assert name.endswith("_total")
        self.name, self.help, self.labels = name, help_text, labels
        self.series: dict[Labels, float] = {values: 0.0 for values in declared}

    def inc(self, *values: str, by: float = 1) -> None:
        self.series[values] = self.series.get(values, 0.0) + by

    def samples(self) -> Iterator[str]:
        for values, value in sorted(self.series.items()):
            yield f"{self.name}{label_text(self.labels, values)} {number(value)}"


def family(name: str, kind: str, help_text: str, samples: Iterable[str]) -> str:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]
    return "\n".join(lines) + "\n"


def gauge(name: str, help_text: str, samples: Iterable[tuple[Labels, Labels, float]]) -> str:
    """A gauge family from ``(label names, label values, value)`` read at scrape time."""
    return family(name, "gauge", help_text,
                  (f"{name}{label_text(n, v)} {number(x)}" for n, v, x in samples))


SUCCESS_FAILURE = [("success",), ("failure",)]


class Metrics:
    """What the hub counts as it runs (see the module docstring)."""

    def __init__(self) -> None:
        self.spawn = Histogram(
            "jupyterhub_server_spawn_duration_seconds",
            "Time taken for server spawning operation", ("status", "reason"), SPAWN_BUCKETS,
            [("success", ""), ("failure", ""), ("error", ""), ("failure", "throttled"),
             ("failure", "too-many-users"), ("failure", "already-pending")])
        self.stop = Histogram("jupyterhub_server_stop_seconds",
                              "Time taken for server stopping operation", ("status",),
                              declared=SUCCESS_FAILURE)
        self.poll = Histogram("jupyterhub_server_poll_duration_seconds",
                              "Time taken to poll if server is running", ("status",),
                              declared=[("running",), ("stopped",)])
        self.proxy_add = Histogram("jupyterhub_proxy_add_duration_seconds",
                                   "Duration for adding user routes to proxy", ("status",),
                                   declared=SUCCESS_FAILURE)
        self.proxy_delete = Histogram("jupyterhub_proxy_delete_duration_seconds",
                                      "Duration for deleting user routes from proxy",
                                      ("status",), declared=SUCCESS_FAILURE)
        self.proxy_poll = Histogram("jupyterhub_proxy_poll_duration_seconds",
                                    "Duration for polling all routes from proxy")
        self.check_routes = Histogram("jupyterhub_check_routes_duration_seconds",
                                      "Time taken to validate all routes in proxy")
        self.login = Histogram("jupyterhub_login_duration_seconds",
                               "duration for all authentication attempts", ("status",),
                               declared=SUCCESS_FAILURE)
        # Courtyard's own
        self.stage = Histogram(
            "courtyard_spawn_stage_duration_seconds", "Time each stage of a spawn took: "
            "queue (waiting for a slot), prepare (credentials, hooks), start "
            "(Spawner.start), check (until the server answers), route (adding it to the "
            "proxy)", ("stage",), STAGE_BUCKETS,
            [(s,) for s in ("queue", "prepare", "start", "check", "route")])
        self.route_repairs = Counter(
            "courtyard_proxy_route_repairs_total", "Routes the periodic check found missing "
            "(added) or stale (removed) in the proxy and repaired", ("change",),
            [("added",), ("removed",)])
        #: routes in the proxy at its last check (None: not checked yet)
        self.proxy_routes: int | None = None

    @contextmanager
    def timed(self, histogram: Histogram, *values: str) -> Iterator[None]:
        """Observe how long the block took, with ``values`` + ("success" or "failure") as
        labels when ``histogram`` has a status label, else just ``values``."""
        start = perf_counter()
        status = len(values) < len(histogram.labels)
        try:
            yield
        except BaseException:
            histogram.observe(perf_counter() - start, *values, *(("failure",) if status else ()))
            raise
        histogram.observe(perf_counter() - start, *values, *(("success",) if status else ()))

    def render(self) -> str:
        parts = []
        for metric in (self.spawn, self.stop, self.poll, self.proxy_add, self.proxy_delete,
                       self.proxy_poll, self.check_routes, self.login, self.stage,
                       self.route_repairs):
            parts.append(family(metric.name, metric.kind, metric.help, metric.samples()))
        return "".join(parts)
