"""``/hub/metrics`` and ``/hub/api/metrics``: JupyterHub's Prometheus gauges of users and servers.

The same names as JupyterHub's (``jupyterhub_total_users``, ``jupyterhub_running_servers``,
``jupyterhub_active_users{period}``), counted from the database at each scrape, so a
dashboard made for JupyterHub keeps working. Scraping needs ``read:metrics`` unless
``authenticate_prometheus`` is off, as in JupyterHub.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from starlette.responses import Response
from starlette.routing import Route

from ..db.models import Server, User, utcnow
from ..errors import Forbidden
from .base import Ctx, endpoint

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # Prometheus' text format
ACTIVE_PERIODS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}


def _gauge(name: str, help_text: str, samples: list[tuple[str, int]]) -> str:
    lines = [f"# HELP jupyterhub_{name} {help_text}", f"# TYPE jupyterhub_{name} gauge"]
    lines += [f"jupyterhub_{name}{labels} {float(value)}" for labels, value in samples]
    return "\n".join(lines) + "\n"


@endpoint(public=True)  # the scope check depends on authenticate_prometheus: done below
async def metrics(ctx: Ctx) -> Response:
    """Prometheus metrics: users, running servers, active users by period."""
    hub = ctx.hub
    if hub.options.authenticate_prometheus:
        ctx.identity = hub.identify(ctx.request, ctx.open_db)
        if ctx.identity is None:
            raise Forbidden("Missing or invalid credentials.")
        ctx.require_any(["read:metrics"])
    db = ctx.db
    now = utcnow()
    active = [(f'{{period="{period}"}}', db.scalar(select(func.count(User.id)).where(
        User.last_activity >= now - span)) or 0) for period, span in ACTIVE_PERIODS.items()]
    text = (_gauge("total_users", "Total number of users",
                   [("", db.scalar(select(func.count(User.id))) or 0)])
            + _gauge("running_servers", "The number of user servers currently running",
                     [("", db.scalar(select(func.count(Server.id)).where(
                         Server.url.is_not(None))) or 0)])
            + _gauge("active_users", "Number of users who were active in the given time "
                     "period", active))
    return Response(text, media_type=CONTENT_TYPE)


routes = [Route("/metrics", metrics, methods=["GET"])]
