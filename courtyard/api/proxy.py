"""``/proxy``: read the routing table, force a sync, point the hub at a new proxy."""

from __future__ import annotations

from starlette.routing import Route

from ..errors import BadRequest, HTTPError, ProxyError
from ..proxy.base import Proxy, RouteInfo
from .base import Ctx, Page, endpoint


async def _proxy(ctx: Ctx) -> Proxy:
    proxy = await ctx.hub.ready_proxy()
    if proxy is None:
        raise HTTPError("This hub runs without a proxy", status=503)
    return proxy


@endpoint("proxy")
async def get_routes(ctx: Ctx) -> dict[str, RouteInfo] | Page[dict[str, RouteInfo]]:
    """The proxy's routing table (the hub's routes), paginated by sorted routespec."""
    try:
        routes = await (await _proxy(ctx)).get_all_routes()
    except ProxyError as e:
        raise HTTPError(f"The proxy did not answer: {e}", status=502) from None
    envelope = ctx.wants_envelope()
    offset, limit = ctx.page_args(envelope)
    keys = sorted(routes)
    if "offset" in ctx.request.query_params or "limit" in ctx.request.query_params or envelope:
        page = {k: routes[k] for k in keys[offset:offset + limit]}
    else:
        page = routes
    if envelope:
        return ctx.paginate(page, offset, limit, len(keys), True)
    return page


@endpoint("proxy")
async def sync_now(ctx: Ctx) -> None:
    """Reconcile the proxy with the database now."""
    from ..routing import sync_routes

    await _proxy(ctx)
    try:
        await sync_routes(ctx.hub)
    except ProxyError as e:
        raise HTTPError(f"The proxy did not answer: {e}", status=502) from None


@endpoint("proxy")
async def update_proxy(ctx: Ctx) -> None:
    """Point the hub at a new proxy API (``api_url``, ``auth_token``), then sync."""
    proxy = await _proxy(ctx)
    body = await ctx.body(required=True) or {}
    for key in ("api_url", "auth_token"):
        if key in body:
            if not isinstance(body[key], str) or not body[key]:
                raise BadRequest(f"{key} must be a non-empty string")
            setattr(proxy, key, body[key])
    await sync_now.__wrapped__(ctx)


routes = [
    Route("/proxy", get_routes, methods=["GET"]),
    Route("/proxy", sync_now, methods=["POST"]),
    Route("/proxy", update_proxy, methods=["PATCH"]),
]
