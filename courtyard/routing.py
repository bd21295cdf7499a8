"""Keeping the proxy's table in step with the database, and activity flowing back from it.

The database says what should be routed: the hub at the base URL, every ready server, every
service with a URL. :func:`sync_routes` makes the proxy agree (adding what is missing,
removing what is stale, leaving servers that are still starting alone); the hub runs it at
start-up, every ``last_activity_interval``, and on ``POST /hub/api/proxy``.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, cast
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from .db.models import Server, Service, User
from .errors import ProxyError

if TYPE_CHECKING:
    from sqlalchemy.orm import sessionmaker
    from traitlets.config import Config

    from .metrics import Metrics
    from .options import Courtyard
    from .proxy.base import Proxy, RouteInfo
    from .subdomains import Origins


class Pending(Protocol):
    @property
    def all_pending(self) -> dict[tuple[str, str], str]: ...


class RouteTable(Protocol):
    """What keeping the proxy's table in step needs of the hub: the proxy and its lock,
    the database, where the hub and each server are routed, the servers in transition
    (left alone), and the metrics of each round."""

    @property
    def options(self) -> Courtyard: ...
    @property
    def proxy(self) -> Proxy | None: ...
    @property
    def route_lock(self) -> asyncio.Lock: ...
    @property
    def session(self) -> sessionmaker[Session]: ...
    @property
    def metrics(self) -> Metrics: ...
    @property
    def origins(self) -> Origins: ...
    @property
    def lifecycle(self) -> Pending: ...
    @property
    def hub_url(self) -> str: ...

    def server_proxy_spec(self, username: str, server_name: str) -> str: ...


class Hub(RouteTable, Protocol):
    """What starting and stopping the proxy also needs: the config that builds it, where
    it listens, and the hub's ``proxy`` to set."""

    proxy: Proxy | None

    @property
    def config(self) -> Config: ...
    @property
    def public_bind_url(self) -> str: ...


log = logging.getLogger("courtyard.routing")


def desired_routes(hub: RouteTable, db: Session) -> tuple[dict[str, tuple[str, dict[str, Any]]], set[str]]:
    """``({routespec: (target, data)}, routespecs to keep)`` as the database has it."""
    base = hub.options.base_url
    routes: dict[str, tuple[str, dict[str, Any]]] = {base: (hub.hub_url, {"hub": True})}
    keep: set[str] = set()
    rows = db.execute(select(User.name, Server.name, Server.url).join(
        Server, Server.user_id == User.id).where(Server.url.is_not(None)))
    pending = hub.lifecycle.all_pending
    for username, server_name in pending:  # starting, stopping or being checked: leave alone
        keep.add(hub.server_proxy_spec(username, server_name))
    for username, server_name, url in rows:
        if url is not None and (username, server_name) not in pending:
            routes[hub.server_proxy_spec(username, server_name)] = (
                url, {"user": username, "server_name": server_name})
    for name, url in db.execute(select(Service.name, Service.url).where(Service.url.is_not(None))):
        if url is None:
            continue
        # with host routing every route but the default one names a host: the hub's
        routes[f"{hub.origins.domain}{base}services/{name}/"] = (url, {"service": name})
    for spec, target in getattr(hub.proxy, "extra_routes", {}).items():
        routes[spec] = (target, {"extra": True})
    return routes, keep


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt


def record_activity(hub: RouteTable, db: Session, routes: dict[str, RouteInfo]) -> int:
    """Move users' and servers' ``last_activity`` forward from the proxy's route data."""
    updated = 0
    seen: list[tuple[dict[str, Any], datetime]] = []
    for info in routes.values():
        data = info.get("data", {})
        when = _parse_time(data.get("last_activity"))
        if when is not None and "user" in data:
            seen.append((data, when))
    if not seen:
        return 0
    names = {data["user"] for data, _when in seen}
    users = {u.name: u for u in db.scalars(  # one query, not one per route
        select(User).where(User.name.in_(names)).options(selectinload(User.servers)))}
    for data, when in seen:
        user = users.get(data["user"])
        if user is None:
            continue
        if user.last_activity is None or when > user.last_activity:
            user.last_activity = when
            updated += 1
        server = next((s for s in user.servers if s.name == data.get("server_name", "")), None)
        if server is not None and (server.last_activity is None or when > server.last_activity):
            server.last_activity = when
    return updated


async def sync_routes(hub: RouteTable) -> tuple[list[str], list[str]]:
    """Reconcile the proxy with the database; one at a time."""
    from .proxy.base import reconcile

    metrics = hub.metrics
    async with hub.route_lock:
        with metrics.timed(metrics.check_routes):
            with metrics.timed(metrics.proxy_poll):
                # its callers sync only a hub with a proxy
                routes = await cast("Proxy", hub.proxy).get_all_routes()
            with hub.session() as db:
                record_activity(hub, db, routes)
                desired, keep = desired_routes(hub, db)
                db.commit()
            added, removed = await reconcile(cast("Proxy", hub.proxy), desired, keep)
    metrics.proxy_routes = len((set(routes) | set(added)) - set(removed))
    metrics.route_repairs.inc("added", by=len(added))
    metrics.route_repairs.inc("removed", by=len(removed))
    if added or removed:
        log.info("Proxy routes: added %s, removed %s", added or "none", removed or "none")
    return added, removed


async def check_proxy(hub: RouteTable) -> bool:
    """Restart a proxy the hub manages if it stopped answering; True when it was restarted."""
    proxy = hub.proxy
    state = getattr(proxy, "api_state", None)
    if proxy is None or state is None or await state() != "down":
        return False
    if not proxy.should_start:
        log.warning("The proxy at %s does not answer", getattr(proxy, "api_url", "?"))
        return False
    log.warning("The proxy stopped answering; starting it again")
    await proxy.start()
    return True


async def keep_routes_in_sync(hub: RouteTable, check_interval: float | None = None) -> None:
    """Check the proxy every ``check_running_interval`` (5 s), and at once when the proxy
    process the hub started or adopted exits (restarting it and restoring routes if it
    died), and every ``last_activity_interval`` pull activity and repair the table. Errors
    are logged, never fatal: the next round tries again."""
    loop = asyncio.get_running_loop()
    interval = max(1, hub.options.last_activity_interval)
    if check_interval is None:
        check_interval = getattr(hub.proxy, "check_running_interval", 5)
    check_interval = max(0.1, min(check_interval, interval))
    next_sync = loop.time() + interval
    exited: asyncio.Future[None] | None = None
    try:
        while True:
            if exited is None or exited.done():
                exited = asyncio.ensure_future(_proxy_exit(hub.proxy))
            await asyncio.wait({exited}, timeout=check_interval)
            try:
                restarted = await check_proxy(hub)
                if restarted or loop.time() >= next_sync:
                    await sync_routes(hub)
                    next_sync = loop.time() + interval
            except ProxyError as e:
                log.warning("Could not sync routes with the proxy: %s", e)
    finally:
        if exited is not None:
            exited.cancel()


async def _proxy_exit(proxy: Proxy | None) -> None:
    """Return when the proxy process exits (``wait_exit``); never, when it cannot be
    watched (an external proxy, no pidfds): the periodic check alone notices then."""
    watch = getattr(proxy, "wait_exit", None)
    try:
        watched = watch is not None and await watch()
    except Exception as e:
        log.warning("Cannot watch the proxy process: %s", e)
        watched = False
    if not watched:
        await asyncio.get_running_loop().create_future()
    log.warning("The proxy process exited")


def proxy_class(options: Courtyard) -> type[Proxy]:
    """The configured ``proxy_class``, resolved (a short name, a dotted path or a class)."""
    from . import config
    from .proxy.base import Proxy

    return config.resolve_class("proxy", options.proxy_class, Proxy)


async def start_proxy(hub: Hub) -> Proxy:
    """Create, configure and start (or adopt a running) proxy; returns it."""
    from . import config

    opts = hub.options
    proxy = config.build_configurable(proxy_class(opts), hub.config, log=logging.getLogger("courtyard.proxy"))
    proxy.public_bind_url = hub.public_bind_url
    proxy.default_target = hub.hub_url
    proxy.error_target = f"{hub.hub_url}{opts.base_url}hub/error"
    if opts.ssl_cert and not proxy.ssl_cert:
        proxy.ssl_cert, proxy.ssl_key = opts.ssl_cert, opts.ssl_key
    proxy.host_routing = bool(opts.subdomain_host)
    proxy.trusted_downstream_ips = list(opts.trusted_downstream_ips)
    if opts.proxy_api_port and hasattr(proxy, "api_url"):  # --proxy-api-port wins
        api = urlsplit(proxy.api_url)
        host = api.netloc.rpartition(":")[0] if api.port else api.netloc
        proxy.api_url = f"{api.scheme}://{host}:{opts.proxy_api_port}"
    if hasattr(proxy, "data_dir") and not proxy.data_dir:
        proxy.data_dir = opts.data_files_path
    await proxy.start()
    hub.proxy = proxy
    log.info("Proxy %s serving %s", type(proxy).__name__, hub.public_bind_url)
    return proxy


async def stop_proxy(hub: Hub) -> None:
    """At hub exit: stop the proxy if ``cleanup_proxy``, else let it decide (the built-in
    proxy keeps serving users' traffic while the hub restarts)."""
    proxy, hub.proxy = hub.proxy, None
    if proxy is None:
        return
    try:
        if hub.options.cleanup_proxy:
            await proxy.stop()
        else:
            await proxy.shutdown()
    except ProxyError as e:
        log.warning("Stopping the proxy: %s", e)
    closer = getattr(proxy, "aclose", None)
    if closer is not None:
        await closer()
