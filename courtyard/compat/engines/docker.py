"""DockerSpawner (``dockerspawner``) on Courtyard: what JupyterHub does not give with it.

- ``GET /hub/api/users/{name}/server/logs`` shows the container's own log (stdout and
  stderr, as ``docker logs`` does), also after a stop when the container is kept.
- Spawn progress says what the engine is doing (the image, the container created or an
  existing one restarted, the container running at its address) instead of one event.
- No server runs as root: a container whose user (``extra_create_kwargs['user']``, else the
  image's ``USER``) is root or a system uid is refused before it is created, and a container
  found at hub start running as one is stopped. Root is allowed only where it is not the
  host's root: a rootless engine, or a user-namespaced container (``userns_mode``).

- **Engine calls of different servers at once.** DockerSpawner runs every docker-py call
  of every spawner in one thread (a class-wide ``ThreadPoolExecutor(1)``): with many servers
  starting or stopping at once, one server's ``docker stop`` (up to its stop timeout) or
  ``docker start`` holds up everyone else's. Here each spawner's ``docker()`` runs its call
  in a pool of :data:`ENGINE_THREADS` threads shared by all (:func:`attach`); a call is
  still a thread running the same docker-py method on DockerSpawner's own client.

DockerSpawner itself runs unmodified; these hooks only read through its own Docker client
(``spawner.docker(method, ...)``) and give that method a wider pool.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ...errors import SpawnError
from ...spawners.base import ProgressEvent, Spawner

# the first uid of a person's account on Debian-like systems (login.defs UID_MIN): below it
# are root and the system accounts, which a server must never run as (docs/security.md)
FIRST_PERSON_UID = 1000
#: threads for the engine calls of every DockerSpawner (docker-py's connection pool holds 10)
ENGINE_THREADS = 8
_pool: ThreadPoolExecutor | None = None


def attach(jh: Any) -> None:
    """``jh.docker(method, ...)`` runs in Courtyard's shared pool of :data:`ENGINE_THREADS`
    threads instead of DockerSpawner's single thread: one server's slow call does not hold
    up the others'. The same method on the same client, and a future, as DockerSpawner's."""
    global _pool
    if getattr(jh, "_courtyard_pool", False):
        return
    if _pool is None:
        _pool = ThreadPoolExecutor(ENGINE_THREADS, thread_name_prefix="docker")
    pool = _pool

    def docker(method: str, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        return asyncio.wrap_future(pool.submit(jh._docker, method, *args, **kwargs))

    jh._courtyard_pool = True
    jh.docker = docker


async def _inspect(jh: Any, method: str, name: str) -> dict[str, Any] | None:
    """``inspect_container`` / ``inspect_image``, or None when the engine does not have it."""
    import docker.errors

    if not name:
        return None
    try:
        found: dict[str, Any] = await jh.docker(method, name)
    except docker.errors.NotFound:
        return None
    except docker.errors.APIError as e:
        if e.status_code == 404:
            return None
        raise
    return found


def _image_of(jh: Any) -> str:
    """The image this start will run: the form's choice (as DockerSpawner resolves it from
    ``allowed_images``) or ``c.DockerSpawner.image``."""
    chosen = (jh.user_options or {}).get("image")
    if chosen:
        allowed = jh._get_allowed_images()
        if isinstance(allowed, dict) and chosen in allowed:
            return str(allowed[chosen])
        return str(chosen)  # "*" allows any; else DockerSpawner refuses it itself
    return str(jh.image)


# -- logs ----------------------------------------------------------------------------------
async def read_log(jh: Any, tail: int | None) -> str | None:
    """The container's log (``docker logs``): its id while it runs, else its name (a kept
    container's log outlives the stop); None when there is no container."""
    import docker.errors

    for ref in dict.fromkeys(r for r in (jh.object_id, jh.object_name) if r):
        try:
            data = await jh.docker("logs", ref, stdout=True, stderr=True,
                                   tail=tail if tail else "all")
        except docker.errors.NotFound:
            continue
        except docker.errors.APIError as e:
            if e.status_code == 404:
                continue
            raise
        return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
    return None


# -- progress -------------------------------------------------------------------------------
def _has_run_before(container: dict[str, Any]) -> bool:
    """Whether the container ran before this start (a kept one being restarted): it has
    finished once (a new container's FinishedAt is Go's zero time, or absent)."""
    finished = str((container.get("State") or {}).get("FinishedAt") or "")
    return bool(finished) and not finished.startswith("0001-01-01")


def _address(container: dict[str, Any], jh: Any) -> str:
    networks = (container.get("NetworkSettings") or {}).get("Networks") or {}
    network: dict[str, Any] = \
        networks.get(jh.network_name) or next(iter(networks.values()), {}) or {}
    return str(network.get("IPAddress") or "")


async def progress(jh: Any) -> AsyncIterator[ProgressEvent]:
    """Events from the engine while ``start()`` runs: the image found (or pulled), the
    container created (or a kept one restarted), the container running at its address.
    Read by inspecting the container DockerSpawner records in ``object_id``; ends when
    the start ends (bounded by ``start_timeout`` in any case)."""
    image = _image_of(jh)
    if await _inspect(jh, "inspect_image", image) is not None:
        yield {"progress": 10, "message": f"Image {image} is on the engine"}
    elif jh.pull_policy.lower() in ("ifnotpresent", "always"):
        yield {"progress": 10, "message": f"Pulling image {image}"}
    said: set[str] = set()
    deadline = time.monotonic() + max(float(jh.start_timeout), 1.0)
    while time.monotonic() < deadline:
        pending = bool(getattr(jh, "_spawn_pending", False))
        container = await _inspect(jh, "inspect_container", jh.object_id) if jh.object_id else None
        if container is not None:
            name = str(container.get("Name") or jh.object_name).lstrip("/")
            state = container.get("State") or {}
            if "created" not in said:
                said.add("created")
                if _has_run_before(container):
                    yield {"progress": 40,
                           "message": f"Restarting the existing container {name}"}
                else:
                    yield {"progress": 40,
                           "message": f"Created container {name} from image {image}"}
            if state.get("Running") and "running" not in said:
                said.add("running")
                address = _address(container, jh)
                where = f" at {address}" if address else ""
                yield {"progress": 70, "message": f"Container {name} is running{where}; "
                                                  "waiting for the server to answer"}
        if not pending or "running" in said:
            return
        await asyncio.sleep(0.5)  # an inspect per server starting: the engine's CPU too


# -- no server as root ------------------------------------------------------------------------
def _root_is_contained(jh: Any, info: dict[str, Any] | None) -> bool:
    """Whether uid 0 in the container is not the host's root: the engine runs rootless, or
    the container gets its own user namespace."""
    host_config = jh._eval_if_callable(jh.extra_host_config) or {}
    if isinstance(host_config, dict) and str(host_config.get("userns_mode") or "") not in (
            "", "host"):
        return True
    options = (info or {}).get("SecurityOptions") or []
    return any("rootless" in str(option) for option in options)


def _refusal(user: str) -> str | None:
    """Why running a server as ``user`` (a container's ``user``: name, uid, ``uid:gid``) is
    refused, or None."""
    account = user.partition(":")[0].strip()
    if account in ("", "root"):
        return "its server would run as root"
    if account.isdigit() and int(account) < FIRST_PERSON_UID:
        return f"its server would run as uid {account}, a system account's uid on the host"
    return None


async def check_start(adapter: Spawner, jh: Any) -> None:
    """Refuse, before the container is made, an image or config that runs the server as
    root or a system uid (unless root is a user-namespaced one)."""
    create = jh._eval_if_callable(jh.extra_create_kwargs) or {}
    if asyncio.iscoroutine(create):
        create = await create
    user = str(create.get("user") or "") if isinstance(create, dict) else ""
    image = _image_of(jh)
    if not user:
        found = await _inspect(jh, "inspect_image", image)
        if found is None:
            return  # DockerSpawner pulls it, or fails with its own message (pull_policy)
        user = str((found.get("Config") or {}).get("User") or "")
    problem = _refusal(user)
    if problem is not None and not _root_is_contained(jh, await jh.docker("info")):
        adapter.log.warning("Refused to start the server of %s from image %s: %s",
                            adapter.log_name, image, problem)
        raise SpawnError(f"refused: the image {image} runs as {user or 'root'}: {problem}; "
                         "set a non-root USER in the image or "
                         "c.DockerSpawner.extra_create_kwargs = {'user': ...}")


async def check_adopted(adapter: Spawner, jh: Any) -> None:
    """A container a previous hub left running must not run its server as root either."""
    # by name, as DockerSpawner's own poll() finds it
    container = await _inspect(jh, "inspect_container", jh.object_name or jh.object_id)
    if container is None:
        return
    user = str((container.get("Config") or {}).get("User") or "")
    problem = _refusal(user)
    if problem is not None and not _root_is_contained(jh, await jh.docker("info")):
        raise SpawnError(f"refused: container {jh.object_name} runs as {user or 'root'}: "
                         f"{problem}")
