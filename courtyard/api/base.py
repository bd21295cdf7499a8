"""What every API endpoint shares: auth, scope checks, JSON in and out, errors, paging.

An endpoint is ``async def f(ctx: Ctx)`` wrapped by :func:`endpoint`, which resolves the
caller, checks that it holds at least one of the scopes named, runs the endpoint in one
database transaction, and turns :class:`~courtyard.errors.HTTPError` into JupyterHub's
``{"status", "message"}`` body.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypedDict, TypeVar
from urllib.parse import urlencode

import orjson
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from .. import JUPYTERHUB_API_VERSION
from ..auth import refresh
from ..auth.identity import Identity, groups_of
from ..auth.scopes import Filters, Target, scope_allows
from ..db import writes
from ..errors import BadRequest, Conflict, Forbidden, HTTPError, NotFound
from ..web.hub import Hub as PageHub, Servers as PageServers

if TYPE_CHECKING:
    from traitlets.config import Config

    from ..db.models import User
    from ..db.records import RecordCache
    from ..proxy.base import Proxy
    from ..spawners.base import Spawner, UserInfo
    from ..spawners.queue import SpawnQueue


class Servers(PageServers, Protocol):
    """What the API asks of the lifecycle beyond what pages do: waiting for a start,
    stopping, removing, renaming, logs, the spawn queue and its counts."""

    @property
    def all_pending(self) -> dict[tuple[str, str], str]: ...
    @property
    def queue(self) -> SpawnQueue: ...

    def count(self, state: str) -> int: ...
    async def check_alive(self, user: str, server: str) -> bool: ...
    async def wait(self, slot: Any, timeout: float) -> bool: ...  # slot: what spawn returned
    def failure_status(self, user: str, server: str) -> int: ...
    def stop(self, user: str, server: str) -> asyncio.Task[None] | None: ...
    def remove_after(self, task: asyncio.Task[None], server_id: int, user: UserInfo) -> None: ...
    def forget(self, user: str, server: str) -> None: ...
    async def delete_forever(self, user: UserInfo, servers: list[str]) -> None: ...
    def rename_user(self, old: str, new: str) -> None: ...
    async def user_renamed(self, user: UserInfo, old: str) -> None: ...
    async def read_log(self, user: UserInfo, server: str, tail: int | None) -> str | None: ...
    def built_spawners(self, user: str) -> list[tuple[str, Spawner]]: ...  # plugins' handlers


class Hub(PageHub, Protocol):
    """What the API's endpoints need of the hub: what pages need
    (:class:`courtyard.web.hub.Hub`), more of the lifecycle, a request's caller
    (:meth:`identify`), the user snapshots, services' specs and PIDs, the shutdown, the proxy
    and what syncing its routes needs (:class:`courtyard.routing.RouteTable`), and the
    config that plugins' handlers get (:mod:`courtyard.compat.handlers`)."""

    @property
    def lifecycle(self) -> Servers: ...
    @property
    def records(self) -> RecordCache: ...
    @property
    def spawner_class(self) -> type[Spawner] | None: ...
    @property
    def service_specs(self) -> dict[str, dict[str, Any]]: ...
    @property
    def service_pids(self) -> dict[str, int]: ...
    @property
    def shutdown_event(self) -> asyncio.Event: ...
    @property
    def shutdown_options(self) -> dict[str, bool]: ...
    @property
    def config(self) -> Config: ...
    @property
    def proxy(self) -> Proxy | None: ...
    @property
    def route_lock(self) -> asyncio.Lock: ...
    @property
    def hub_url(self) -> str: ...

    def identify(self, request: Request, open_db: Callable[[], Session]) -> Identity | None: ...
    def write_auth_state(self, user: User, state: dict[str, Any] | None) -> None: ...
    def server_proxy_spec(self, username: str, server_name: str) -> str: ...
    async def ready_proxy(self) -> Proxy | None: ...


log = logging.getLogger("courtyard.api")

PAGINATION_MEDIA_TYPE = "application/jupyterhub-pagination+json"
VERSION_HEADER = {"X-JupyterHub-Version": JUPYTERHUB_API_VERSION}


# naive datetimes are UTC; written as JupyterHub writes them: 2026-12-06T17:00:00.123456Z
JSON_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z


class NextPage(TypedDict):
    """Where the next page of a paginated list starts."""

    offset: int
    limit: int
    url: str


class Pagination(TypedDict):
    """JupyterHub's ``_pagination`` of a paginated list."""

    offset: int
    limit: int
    total: int
    next: NextPage | None


Items = TypeVar("Items", bound=Sequence[Mapping[str, object]] | Mapping[str, object])


class Page(TypedDict, Generic[Items]):
    """JupyterHub's pagination envelope, for a caller that accepts it."""

    items: Items
    _pagination: Pagination


# A JSON body: a model (or a routing table, or an error), a list of models, or none.
JsonBody = Mapping[str, object] | Sequence[Mapping[str, object]] | None
# What an endpoint returns: a JSON body, or its own Response.
Reply = Response | JsonBody


def json_response(data: JsonBody, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = b"" if data is None else orjson.dumps(data, option=JSON_OPTIONS)
    all_headers = dict(VERSION_HEADER)
    if headers:
        all_headers.update(headers)
    return Response(body, status_code=status, headers=all_headers,
                    media_type="application/json")


class ErrorBody(TypedDict):
    """JupyterHub's error body."""

    status: int
    message: str


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"status": status, "message": message}, status, headers)


# The keys of JupyterHub's user and group models (its ``APIHandler._check_model``). JupyterHub
# takes the whole model wherever one is posted, and ignores the keys an endpoint does not use.
USER_MODEL = {"name": str, "admin": bool, "groups": list, "roles": list, "auth_state": dict}
GROUP_MODEL = {"name": str, "users": list, "roles": list}


def check_model(body: dict[str, Any], model: Mapping[str, type], used: set[str], what: str) -> None:
    """Be as lenient as JupyterHub: 400 for a key outside ``model`` or an unused key of the
    wrong type; a key of ``model`` the endpoint does not use is accepted and ignored (logged)."""
    unknown = set(body) - set(model) - used
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
    ignored = sorted(set(body) - used)
    for key in ignored:
        if not isinstance(body[key], model[key]):
            raise BadRequest(f"{what}.{key} must be {model[key].__name__}, "
                             f"not {type(body[key]).__name__}")
    if ignored:
        log.info("Ignored %s field(s) %s, as JupyterHub ignores them here", what,
                 ", ".join(ignored))


class Ctx:
    """One API request: the hub, the request, its database session and its caller."""

    def __init__(self, hub: Hub, request: Request) -> None:
        self.hub = hub
        self.request = request
        self.session: Session | None = None
        self.identity: Identity | None = None
        self._body: Any = None
        self._groups: dict[str, list[str]] = {}
        self.memo: dict[Any, Any] = {}  # per-request results that do not depend on the target

    @property
    def db(self) -> Session:
        """The request's database session, opened on first use: a request answered from
        the hub's memory (most reads by a known token) never opens one."""
        return self.open_db()

    def open_db(self) -> Session:
        if self.session is None:
            self.session = self.hub.session()
        return self.session

    def rollback(self) -> None:
        if self.session is not None:
            self.session.rollback()

    # -- input -----------------------------------------------------------------------------
    def arg(self, name: str) -> str:
        return str(self.request.path_params[name])

    async def body(self, required: bool = False) -> dict[str, Any] | None:
        """The JSON object in the body; None when empty (unless required)."""
        raw = await self.request.body()
        if not raw.strip():
            if required:
                raise BadRequest("request body must be a JSON object")
            return None
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise BadRequest(f"invalid JSON in request body: {e}") from None
        if data is None and not required:  # JupyterHub reads a JSON null as no body
            return None
        if not isinstance(data, dict):
            raise BadRequest(f"request body must be a JSON object, not {type(data).__name__}")
        return data

    def query_bool(self, name: str) -> bool:
        if not self.request.scope["query_string"]:  # most requests: no need to parse
            return False
        value = self.request.query_params.get(name)
        if value is None:
            return False
        # JupyterHub takes every value but "0" and "false" as true
        return value.lower() not in ("0", "false", "no", "off")

    @property
    def current_user(self) -> User | None:
        """The calling user's record (``.name``, ``.admin``, ``.groups``), None for a
        service: what JupyterHub's handlers offer callables such as
        ``named_server_limit_per_user``."""
        if self.identity is None or self.identity.kind != "user":
            return None
        from ..db.models import User

        return self.db.get(User, self.identity.id)

    # -- permissions -------------------------------------------------------------------------
    def groups_of(self, username: str) -> list[str]:
        if username not in self._groups:
            self._groups[username] = groups_of(self.db, username)
        return self._groups[username]

    def filters(self, scope: str) -> Filters | None:
        assert self.identity is not None
        return self.identity.parsed.get(scope)

    def can(self, scope: str, target: Target) -> bool:
        if self.identity is None:
            return False
        return scope_allows(self.identity.parsed.get(scope), target, self.groups_of)

    def require(self, scopes: Iterable[str], target: Target) -> None:
        """Refuse with 404 (not 403) when the caller's scopes do not reach ``target``."""
        if not any(self.can(s, target) for s in scopes):
            raise NotFound("No access to resources or resources not found")

    def require_any(self, scopes: Iterable[str]) -> None:
        scopes = list(scopes)
        if self.identity is None or not self.identity.has_any(scopes):
            raise Forbidden("Action is not authorized with current scopes; requires any of "
                            f"[{', '.join(scopes)}]")

    # -- paging ------------------------------------------------------------------------------
    def wants_envelope(self) -> bool:
        accept = self.request.headers.get("accept", "")
        return any(p.split(";")[0].strip().lower() == PAGINATION_MEDIA_TYPE
                   for p in accept.split(","))

    def page_args(self, envelope: bool) -> tuple[int, int]:
        opts = self.hub.options
        params = self.request.query_params
        try:  # JupyterHub takes the absolute values: offset=-10 is offset=10
            offset = abs(int(params.get("offset", 0)))
            default = opts.api_page_default_limit if envelope else opts.api_page_max_limit
            limit = abs(int(params.get("limit", default)))
        except ValueError:
            raise BadRequest("offset and limit must be integers") from None
        if offset >= 2**63:  # what SQLite and PostgreSQL take
            raise BadRequest("offset is too large")
        return offset, max(1, min(limit, opts.api_page_max_limit))

    def paginate(self, items: Items, offset: int, limit: int, total: int,
                 envelope: bool) -> Items | Page[Items]:
        if not envelope:
            if total > offset + limit:
                log.warning("Truncated %s to %d items; ask for %s to page through all",
                            self.request.url.path, limit, PAGINATION_MEDIA_TYPE)
            return items
        nxt: NextPage | None = None
        if offset + limit < total:
            params = dict(self.request.query_params)
            params.update(offset=str(offset + limit), limit=str(limit))
            url = str(self.request.url.replace(query=urlencode(params)))
            nxt = {"offset": offset + limit, "limit": limit, "url": url}
        page: Page[Items] = {
            "items": items,
            "_pagination": {"offset": offset, "limit": limit, "total": total, "next": nxt}}
        return page


Endpoint = Callable[[Ctx], Awaitable[Reply]]


class Handler(Protocol):
    """An endpoint as Starlette calls it; ``__wrapped__`` is the endpoint itself, for an
    endpoint that answers as another would."""

    __wrapped__: Endpoint
    __name__: str

    def __call__(self, request: Request) -> Awaitable[Response]: ...


async def _refresh(ctx: Ctx, ident: Identity) -> None:
    """The caller's ``auth_refresh_age`` has passed: ask the authenticator again. Expired:
    the request is unauthenticated (403), as in JupyterHub; the token stays, and the next
    request asks again."""
    version = ctx.hub.scope_cache.version
    if not await refresh.check_identity(ctx.hub, ctx.request, ctx.db, ident):
        raise refresh.AuthExpired(ident.name)
    if ctx.hub.scope_cache.version != version:  # the refresh changed admin, groups...
        ctx.identity = ctx.hub.identify(ctx.request, ctx.open_db) or ident


def endpoint(*scopes: str, status: int = 200, public: bool = False,
             body_auth: bool = False) -> Callable[[Endpoint], Handler]:
    """Make ``f(ctx)`` a Starlette endpoint that needs any one of ``scopes``.

    The endpoint returns data (sent as JSON with ``status``) or a Response. With
    ``body_auth``, a caller without a token may authenticate with ``{"auth": {...}}``
    in the body, which goes to the Authenticator.
    """

    def wrap(func: Endpoint) -> Handler:
        @functools.wraps(func)
        async def handle(request: Request) -> Response:
            hub: Hub = request.app.state.hub
            ctx = Ctx(hub, request)
            try:
                if not public:
                    ctx.identity = hub.identify(request, ctx.open_db)
                    if ctx.identity is None and body_auth:
                        from ..auth.login import identify_body

                        ctx.identity = await identify_body(hub, request, ctx.db)
                    if ctx.identity is None:
                        raise Forbidden("Missing or invalid credentials.")
                    if ctx.identity.kind == "user" and refresh.due(hub.authenticator,
                                                                    ctx.identity.id):
                        await _refresh(ctx, ctx.identity)
                    if scopes:
                        ctx.require_any(scopes)
                result = await func(ctx)
                if ctx.session is not None:
                    ctx.session.commit()
            except HTTPError as e:
                ctx.rollback()
                return error_response(e.status, e.message, e.headers)
            except IntegrityError as e:
                ctx.rollback()
                log.info("Conflict on %s: %s", request.url.path, e.orig)
                return error_response(Conflict.status, "conflict with existing data")
            except DataError as e:  # PostgreSQL: too long or large, or a NUL character
                ctx.rollback()
                log.info("Value refused on %s: %s", request.url.path, e.orig)
                return error_response(400, "a value in the request is not one the "
                                           "database can hold (too long, too large, or "
                                           "with a NUL character)")
            except writes.OUTAGES as e:  # a full disk, a database down or restarting
                ctx.rollback()
                log.warning("The database failed %s %s: %s", request.method, request.url.path,
                            writes.reason(e))
                return error_response(503, "The hub's database is not available right now; "
                                           "try again shortly", {"Retry-After": "5"})
            except Exception:
                ctx.rollback()
                log.exception("Error in %s %s", request.method, request.url.path)
                return error_response(500, "Internal server error; see the hub's log")
            finally:
                if ctx.session is not None:
                    ctx.session.close()
            if isinstance(result, Response):
                result.headers.update(VERSION_HEADER)
                return result
            return json_response(result, status)

        vars(handle).update(scopes=scopes, public=public, status=status)  # read by api/openapi.py
        return handle

    return wrap
