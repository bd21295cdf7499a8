"""``/users/{name}/server`` and ``/users/{name}/servers/{server}``: start, stop, watch, edit.

The default server has the empty name. Starting answers 201 when the server is ready
within ``slow_spawn_timeout``, else 202; the lifecycle (:mod:`courtyard.lifecycle`) does the
work in the background either way. Every change to the database is committed before the
lifecycle is asked to act, since it writes through sessions of its own.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Final, cast

from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from ..auth import refresh
from ..auth.scopes import Target
from ..db import queries
from ..db.models import Server, User
from ..errors import BadRequest, Conflict, HTTPError, NotFound, error_reason
from ..names import check_server_name
from ..spawners.base import UserInfo
from ..spawners.progress import event_stream
from . import guard
from .base import Ctx, endpoint, json_response
from .models import ServerModel, server_model

UNSET: Final = object()  # a field the body leaves out


def _load(ctx: Ctx, scopes: tuple[str, ...]) -> tuple[User, Server | None, str]:
    """The user and server named in the URL (server None if it has no record yet)."""
    name = ctx.arg("name")
    server_name = ctx.request.path_params.get("server", "")
    ctx.require(scopes, Target(user=name, server=f"{name}/{server_name}"))
    user = queries.get_user(ctx.db, name)
    if user is None:
        raise NotFound(f"No such user: {name}")
    server = next((s for s in user.servers if s.name == server_name), None)
    return user, server, server_name


def _label(user: User, server_name: str) -> str:
    return f"{user.name}'s server {server_name!r}" if server_name else f"{user.name}'s server"


def user_info(ctx: Ctx, user: User) -> UserInfo:
    return UserInfo(user.name, bool(user.admin), [g.name for g in user.groups],
                    ctx.hub.read_auth_state(user))


def _require_named(ctx: Ctx, server_name: str) -> None:
    if server_name and not ctx.hub.options.allow_named_servers:
        raise BadRequest("Named servers are not enabled.")


async def _check_new_name(ctx: Ctx, user: User, server_name: str) -> None:
    """A new named server: a slug-like name, and room under named_server_limit_per_user."""
    problem = check_server_name(server_name)
    if problem:
        raise BadRequest(problem)
    limit = ctx.hub.options.named_server_limit_per_user
    if callable(limit):
        limit = limit(ctx)
        if inspect.isawaitable(limit):
            limit = await limit
    named = sum(1 for s in user.servers if s.name)
    if limit and named >= limit:
        raise BadRequest(f"User {user.name} already has the maximum of {limit} named servers. "
                         "One must be deleted before a new server can be created")


def _server_request(body: dict[str, Any] | None, legacy: bool
                    ) -> tuple[str | object | None, dict[str, Any] | None]:
    """(display_name, user_options) from a body; UNSET/None where the body leaves them.

    5.x sends the whole body as user_options; 6.0 sends ``{"display_name", "user_options"}``
    (recognised when either key is present). None for user_options reuses the last ones.
    """
    if body is None:
        return UNSET, None
    if legacy and "display_name" not in body and "user_options" not in body:
        return UNSET, body
    display_name = body.get("display_name", UNSET)
    options = body.get("user_options")
    if display_name is not UNSET and not isinstance(display_name, str | None):
        raise BadRequest("display_name must be a string or null")
    if isinstance(display_name, str) and (len(display_name) > 255 or "\x00" in display_name):
        raise BadRequest("display_name must be at most 255 characters, without NUL")
    if not isinstance(options, dict | None):
        raise BadRequest("user_options must be a JSON object or null")
    return display_name, options


@endpoint("servers", "start:servers")
async def start_server(ctx: Ctx) -> Response:
    """Start a user's server (the body is user_options, or 6.0's ServerRequest)."""
    hub, lifecycle = ctx.hub, ctx.hub.lifecycle
    user, server, name = _load(ctx, ("start:servers",))
    # not when stopping: the idle culler stops everyone's servers, and that gains nothing
    guard.require_user_below(ctx, user, "start a server of", self_ok=True)
    display_name, options = _server_request(await ctx.body(), legacy=True)
    _require_named(ctx, name)
    if server is None and name:
        await _check_new_name(ctx, user, name)
    pending = lifecycle.pending(user.name, name)
    if pending == "spawn" and server is not None:
        return json_response(server_model(ctx, user, server), 202)
    if pending:
        raise BadRequest(f"{_label(user, name)} is pending {pending}")
    if server is not None and server.url is not None:
        if await lifecycle.check_alive(user.name, name):
            raise BadRequest(f"{_label(user, name)} is already running")
        ctx.db.refresh(server)
    await refresh.before_spawn(hub, ctx.db, user, ctx.request)  # refresh_pre_spawn
    lifecycle.check_limits()
    if server is None:
        server = Server(name=name, state={}, user_options={})
        user.servers.append(server)
    if display_name is not UNSET:
        server.display_name = cast(str | None, display_name)
    if options is not None:
        try:  # the spawner checks the options (e.g. an unknown profile) before anything starts
            lifecycle.make_spawner(user_info(ctx, user), name).user_options = dict(options)
        except ValueError as e:
            ctx.db.rollback()
            raise BadRequest(str(e)) from None
        server.user_options = options
    ctx.db.commit()
    slot = lifecycle.spawn(user_info(ctx, user), server)
    # hand the connection back while waiting: hundreds of spawns may be waiting at once
    server_id = server.id
    ctx.db.close()
    done = await lifecycle.wait(slot, hub.options.slow_spawn_timeout)
    server = ctx.db.get(Server, server_id) or server
    if done and (failure := lifecycle.failure(user.name, name)):
        raise HTTPError(failure, lifecycle.failure_status(user.name, name))
    return json_response(server_model(ctx, user, server), 201 if done else 202)


@endpoint("delete:servers")
async def stop_server(ctx: Ctx) -> Response:
    """Stop a user's server (or cancel its pending start); 202 while it is still stopping."""
    lifecycle = ctx.hub.lifecycle
    user, server, name = _load(ctx, ("delete:servers",))
    body = await ctx.body() or {}
    remove = body.get("remove", False)
    if not isinstance(remove, bool):
        raise BadRequest("remove must be true or false")
    _require_named(ctx, name)
    if name and server is None:
        raise NotFound(f"{user.name} has no server named '{name}'")
    if remove and not name:
        raise BadRequest("Cannot delete the default server")
    if server is None:
        return Response(status_code=204)
    owner = user_info(ctx, user) if remove else None  # read now: the session closes below
    task = lifecycle.stop(user.name, name)
    ctx.db.commit()
    ctx.db.close()  # no connection held while waiting for the stop
    done = task is None or bool(
        (await asyncio.wait({task}, timeout=ctx.hub.options.slow_spawn_timeout))[0])
    failed = task.exception() if done and task is not None and not task.cancelled() else None
    if failed is not None:
        # never 204 for a stop that was not recorded (the lifecycle logged why)
        raise HTTPError(f"Stopping {_label(user, name)} failed: {error_reason(failed)}", 500)
    if owner is not None:  # remove
        if done:
            server = ctx.db.get(Server, server.id) or server
            if server.url is None and lifecycle.pending(user.name, name) is None:
                await lifecycle.delete_forever(owner, [name])
                ctx.db.delete(server)
        elif task is not None:
            lifecycle.remove_after(task, server.id, owner)
    return Response(status_code=204 if done else 202)


@endpoint("read:servers")
async def get_server(ctx: Ctx) -> ServerModel:
    """A server's model, running or not (6.0)."""
    user, server, name = _load(ctx, ("read:servers",))
    if server is None:
        raise NotFound(f"{user.name} has no server named '{name}'")
    return server_model(ctx, user, server, with_state=True)


@endpoint("start:servers", status=201)
async def create_server(ctx: Ctx) -> ServerModel:
    """Create a named server without starting it (6.0)."""
    user, server, name = _load(ctx, ("start:servers",))
    guard.require_user_below(ctx, user, "create a server for", self_ok=True)
    if not name:
        raise Conflict("The default server always exists; start it with POST")
    _require_named(ctx, name)
    if server is not None:
        raise Conflict(f"{_label(user, name)} already exists")
    await _check_new_name(ctx, user, name)
    display_name, options = _server_request(await ctx.body(), legacy=False)
    server = Server(name=name, state={}, user_options=options or {},
                    display_name=None if display_name is UNSET else cast(str | None, display_name))
    user.servers.append(server)
    ctx.db.flush()
    return server_model(ctx, user, server)


@endpoint("start:servers")
async def edit_server(ctx: Ctx) -> ServerModel:
    """Rename a stopped server, or set its display_name or user_options (6.0)."""
    lifecycle = ctx.hub.lifecycle
    user, server, name = _load(ctx, ("start:servers",))
    guard.require_user_below(ctx, user, "change a server of", self_ok=True)
    _require_named(ctx, name)
    if server is None:
        raise NotFound(f"{user.name} has no server named '{name}'")
    body = await ctx.body(required=True) or {}
    unknown = set(body) - {"name", "display_name", "user_options"}
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
    if server.url is not None or lifecycle.pending(user.name, name):
        raise BadRequest(f"{_label(user, name)} is active; stop it before changing it")
    display_name, options = _server_request(body, legacy=False)
    new_name = body.get("name", name)
    if new_name != name:
        if not name:
            raise BadRequest("The default server cannot be renamed")
        problem = check_server_name(new_name)
        if problem:
            raise BadRequest(problem)
        if any(s.name == new_name for s in user.servers):
            raise Conflict(f"{_label(user, new_name)} already exists")
        lifecycle.forget(user.name, name)
        server.name = new_name
    if display_name is not UNSET:
        server.display_name = cast(str | None, display_name)
    if "user_options" in body:
        server.user_options = options or {}
    ctx.db.flush()
    return server_model(ctx, user, server)


@endpoint("read:servers")
async def progress(ctx: Ctx) -> StreamingResponse:
    """The progress of a starting server, as an EventSource stream."""
    user, server, name = _load(ctx, ("read:servers",))
    if server is None:
        raise NotFound(f"{user.name} has no server named '{name}'")
    events = ctx.hub.lifecycle.progress_events(user.name, name, ready=server.url is not None)
    if events is None:
        raise BadRequest(f"{_label(user, name)} is not starting")
    return StreamingResponse(event_stream(events), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@endpoint("read:servers")
async def server_logs(ctx: Ctx) -> PlainTextResponse:
    """The output of a user's server, as text; ``?tail=N`` for the last N lines."""
    user, server, name = _load(ctx, ("read:servers",))
    if server is None and name:
        raise NotFound(f"{user.name} has no server named '{name}'")
    raw = ctx.request.query_params.get("tail")
    try:
        tail = None if raw is None else int(raw)
    except ValueError:
        raise BadRequest(f"tail must be a number of lines, not {raw!r}") from None
    if tail is not None and tail < 0:
        raise BadRequest("tail must not be negative")
    text = await ctx.hub.lifecycle.read_log(UserInfo(user.name), name, tail)
    if text is None:
        raise NotFound(f"There is no log of {_label(user, name)}")
    return PlainTextResponse(text)


_SERVER_ROUTES = [
    Route("/users/{name}/server", start_server, methods=["POST"]),
    Route("/users/{name}/server", stop_server, methods=["DELETE"]),
    Route("/users/{name}/server", create_server, methods=["PUT"]),
    Route("/users/{name}/server/progress", progress, methods=["GET"]),
    Route("/users/{name}/server/logs", server_logs, methods=["GET"]),
    Route("/users/{name}/servers/{server}", get_server, methods=["GET"]),
    Route("/users/{name}/servers/{server}", start_server, methods=["POST"]),
    Route("/users/{name}/servers/{server}", stop_server, methods=["DELETE"]),
    Route("/users/{name}/servers/{server}", create_server, methods=["PUT"]),
    Route("/users/{name}/servers/{server}", edit_server, methods=["PATCH"]),
    Route("/users/{name}/servers/{server}/progress", progress, methods=["GET"]),
    Route("/users/{name}/servers/{server}/logs", server_logs, methods=["GET"]),
]

# JupyterHub's routes take an empty server name (``/users/{name}/servers/``, and
# ``.../servers//progress``) as the default server; its own server-API example uses it.
routes = _SERVER_ROUTES + [
    Route(route.path.replace("{server}", ""), route.endpoint, methods=list(route.methods or ()))
    for route in _SERVER_ROUTES if "{server}" in route.path]
