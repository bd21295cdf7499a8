"""``/hub/metrics`` and ``/hub/api/metrics``: the hub's metrics in Prometheus' text format.

JupyterHub's names, so a dashboard made for JupyterHub keeps working: the gauges
``jupyterhub_total_users``, ``jupyterhub_running_servers``, ``jupyterhub_active_users{period}``
(counted from the database at each scrape: a few aggregate queries per scrape, none per
request), then the histograms the hub fills as it runs (``jupyterhub_server_spawn_duration_
seconds``, ``jupyterhub_server_stop_seconds``, ``jupyterhub_proxy_add_duration_seconds``, ...:
:mod:`courtyard.metrics`), plus Courtyard's own (``courtyard_spawn_queue_length``,
``courtyard_spawn_stage_duration_seconds{stage}``, ``courtyard_proxy_routes``, ...).
Scraping needs ``read:metrics`` unless ``authenticate_prometheus`` is off, as in JupyterHub.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, case, func, select
from starlette.responses import Response
from starlette.routing import Route

from ..db.models import Server, User, utcnow
from ..errors import Forbidden
from ..metrics import gauge
from .base import Ctx, endpoint

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # Prometheus' text format
ACTIVE_PERIODS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
PENDING_STATES = ("spawn", "check", "stop")


def _was_active(since: datetime) -> ColumnElement[int]:
    return func.coalesce(func.sum(case((User.last_activity >= since, 1), else_=0)), 0)


@endpoint(public=True)  # the scope check depends on authenticate_prometheus: done below
async def metrics(ctx: Ctx) -> Response:
    """Prometheus metrics: users, servers, the spawn queue and proxy routes (gauges read now),
    then the hub's histograms and counters (:mod:`courtyard.metrics`)."""
    hub = ctx.hub
    if hub.options.authenticate_prometheus:
        ctx.identity = hub.identify(ctx.request, ctx.open_db)
        if ctx.identity is None:
            raise Forbidden("Missing or invalid credentials.")
        ctx.require_any(["read:metrics"])
    db = ctx.db
    now = utcnow()
    total, *active = db.execute(select(func.count(User.id), *(
        _was_active(now - span) for span in ACTIVE_PERIODS.values()))).one()
    running = db.scalar(select(func.count(Server.id)).where(Server.url.is_not(None))) or 0
    lifecycle = hub.lifecycle
    text = (
        gauge("jupyterhub_total_users", "Total number of users", [((), (), total)])
        + gauge("jupyterhub_running_servers", "The number of user servers currently running",
                [((), (), running)])
        + gauge("jupyterhub_active_users", "Number of users who were active in the given "
                "time period", [(("period",), (period,), n)
                                for period, n in zip(ACTIVE_PERIODS, active, strict=True)])
        + gauge("courtyard_spawn_queue_length", "Spawns waiting for a slot "
                "(c.JupyterHub.concurrent_spawn_limit)", [((), (), lifecycle.queue.waiting)])
        + gauge("courtyard_spawns_active", "Spawns holding a slot (starting now)",
                [((), (), lifecycle.queue.active)])
        + gauge("courtyard_servers_pending", "Servers in transition, by what they wait for",
                [(("state",), (state,), lifecycle.count(state)) for state in PENDING_STATES])
        + (gauge("courtyard_proxy_routes", "Routes in the proxy at its last check",
                 [((), (), hub.metrics.proxy_routes)])
           if hub.metrics.proxy_routes is not None else "")
        + hub.metrics.render())
    return Response(text, media_type=CONTENT_TYPE)


routes = [Route("/metrics", metrics, methods=["GET"])]
