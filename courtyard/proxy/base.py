"""The Proxy contract the hub relies on, and :func:`reconcile`, which keeps it in sync.

A *routespec* is a URL path prefix ending in ``/`` (``/user/alice/``), or
``host/path/`` with host routing. ``/`` is the default route, which points at the hub.
Every method raises :class:`courtyard.errors.ProxyError` when the proxy cannot be
reached or refuses a change.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypedDict

from traitlets import Bool, List, Unicode
from traitlets.config import LoggingConfigurable


class RouteInfo(TypedDict):
    """One of the hub's routes, as a proxy reports it."""

    routespec: str
    target: str
    data: dict[str, Any]  # what the hub added (JSON), plus the proxy's own keys

# Keys a proxy adds to route data by itself; they must not make a route look changed.
PROXY_OWNED_KEYS = frozenset({"last_activity", "host", "jupyterhub"})


class Proxy(LoggingConfigurable):
    """What the hub needs from a proxy: five coroutines and a few attributes."""

    # Set by the hub before start().
    public_bind_url = Unicode("http://127.0.0.1:8000/", help="Public URL the proxy listens on.")
    default_target = Unicode("", help="Target of the default route /, i.e. the hub.")
    error_target = Unicode("", help="Where the proxy fetches error pages, {this}/{code}?url=.")
    ssl_cert = Unicode("", help="TLS certificate for the public port.").tag(config=True)
    ssl_key = Unicode("", help="TLS key for the public port.").tag(config=True)
    host_routing = Bool(False, help="Route on host name first (subdomain_host).")
    trusted_downstream_ips = List(Unicode(), help="Proxies in front of this one, whose "
                                  "X-Forwarded-* headers are kept (trusted_downstream_ips).")
    should_start = Bool(
        True, help="Start the proxy process; False means someone else runs it."
    ).tag(config=True)

    async def start(self) -> None:
        """Start the proxy (if ``should_start``) and return once its API answers."""
        raise NotImplementedError

    async def stop(self) -> None:
        """Stop a proxy this object started."""
        raise NotImplementedError

    async def shutdown(self) -> None:
        """Called when the hub exits: stop the proxy unless it should outlive the hub."""
        await self.stop()

    async def add_route(self, routespec: str, target: str, data: dict[str, Any]) -> None:
        """Route ``routespec`` to ``target``, replacing any previous route there."""
        raise NotImplementedError

    async def delete_route(self, routespec: str) -> None:
        """Remove the route; removing a missing route is not an error."""
        raise NotImplementedError

    async def get_all_routes(self) -> dict[str, RouteInfo]:
        """The hub's routes: ``{routespec: {"routespec", "target", "data"}}``.

        Routes the hub did not add are left out. ``data`` is what was added plus
        ``last_activity`` as the proxy reports it.
        """
        raise NotImplementedError

    async def get_route(self, routespec: str) -> RouteInfo | None:
        return (await self.get_all_routes()).get(routespec)


def _differs(current: RouteInfo, target: str, data: dict[str, Any]) -> bool:
    if current["target"] != target:
        return True
    have = {k: v for k, v in current["data"].items() if k not in PROXY_OWNED_KEYS}
    want = {k: v for k, v in data.items() if k not in PROXY_OWNED_KEYS}
    return have != want


async def reconcile(
    proxy: Proxy,
    desired: dict[str, tuple[str, dict[str, Any]]],
    keep: set[str] | frozenset[str] = frozenset(),
) -> tuple[list[str], list[str]]:
    """Make the proxy's hub-owned routes equal ``desired`` ``{routespec: (target, data)}``.

    Adds missing or changed routes and deletes stale ones, except the routespecs in
    ``keep`` (servers still starting). One read of the table plus one call per change,
    all concurrent (the proxy client bounds concurrency), so an unchanged table costs one
    request. Returns ``(added, removed)``, sorted.
    """
    current = await proxy.get_all_routes()
    added = sorted(
        spec
        for spec, (target, data) in desired.items()
        if spec not in current or _differs(current[spec], target, data)
    )
    removed = sorted(spec for spec in current if spec not in desired and spec not in keep)
    await asyncio.gather(
        *(proxy.add_route(spec, *desired[spec]) for spec in added),
        *(proxy.delete_route(spec) for spec in removed),
    )
    return added, removed
