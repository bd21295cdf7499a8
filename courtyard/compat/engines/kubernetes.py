"""KubeSpawner (``jupyterhub-kubespawner``) on Courtyard: what JupyterHub does not give with it.

- ``GET /hub/api/users/{name}/server/logs`` shows the notebook container's log (what
  ``kubectl logs`` shows), read through KubeSpawner's own API client.
- Spawn progress comes from the pod's events, as KubeSpawner reports them, each said in a
  few words (scheduled on a node, image pulled or already there, container started) instead
  of the raw event line.
- No server runs as root or a system uid: a pod whose notebook container would run as one
  (``uid`` / ``extra_pod_config`` / ``extra_container_config``, or an unset uid without
  ``runAsNonRoot``) or privileged is refused before it is created, and a pod found at hub
  start running as one is stopped. Kubernetes 1.20 gives a pod no user namespace of its own,
  so uid 0 in the pod is the node's root.
- A stop ends when the pod is gone. KubeSpawner's ``stop()`` deletes the pod, then checks
  its pod reflector (a watch shared by every spawner) for the pod with exponential back-off
  and full jitter, up to 5 s between checks: the pod is often gone seconds before it
  looks. Here the same check (the shared watch no longer lists the pod, once KubeSpawner's
  own delete request went through) is made every :data:`GONE_CHECK` seconds, and
  KubeSpawner's back-off is cut short when it holds (:func:`attach`).

KubeSpawner itself runs unmodified; these hooks only read its traits and its client, and
wrap its ``stop()`` on each spawner object.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import inspect
import logging
from collections.abc import AsyncIterator
from typing import Any

from ...errors import SpawnError
from ...spawners.base import ProgressEvent, Spawner

# the first uid of a person's account on Debian-like systems (login.defs UID_MIN): below it
# are root and the system accounts, which a server must never run as (docs/security.md)
FIRST_PERSON_UID = 1000
CONTAINER = "notebook"  # KubeSpawner's name for the server's container
#: seconds between looks at the shared pod watch while a stop waits for the pod to go
GONE_CHECK = 0.1

log = logging.getLogger("courtyard.spawner")


def _get(obj: object, key: str) -> Any:
    """``key`` of a kubernetes model object or of the same thing as a dict (camelCase)."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        camel = "".join(p if i == 0 else p.title() for i, p in enumerate(key.split("_")))
        return obj.get(camel, obj.get(key))
    return getattr(obj, key, None)


# -- logs ----------------------------------------------------------------------------------
async def read_log(jh: Any, tail: int | None) -> str | None:
    """The notebook container's log; None when there is no pod (or not yet a container)."""
    from kubernetes_asyncio.client.rest import ApiException

    kwargs: dict[str, Any] = {"container": CONTAINER}
    if tail is not None:
        kwargs["tail_lines"] = tail
    try:
        text = await jh.api.read_namespaced_pod_log(jh.pod_name, jh.namespace, **kwargs)
    except ApiException as e:
        if e.status in (400, 404):  # no such pod, or its container is not created yet
            return None
        raise
    return text if isinstance(text, str) else bytes(text).decode("utf-8", "replace")


# -- progress -------------------------------------------------------------------------------
def _say(event: dict[str, Any]) -> str:
    """One pod event in a few words (the event's own message kept for what is not known)."""
    reason = str(event.get("reason") or "")
    message = str(event.get("message") or "")
    source = event.get("source") or {}
    if reason == "Scheduled":
        node = message.rsplit(" to ", 1)[-1] if " to " in message else source.get("host", "")
        return f"Pod scheduled on node {node}" if node else "Pod scheduled"
    if reason == "Pulling":
        return f"Pulling the image: {message}"
    if reason == "Pulled":
        return f"Image ready: {message}"
    if reason == "Created":
        return f"Container created: {message}"
    if reason == "Started":
        return f"Container started ({message}); waiting for the server to answer"
    kind = str(event.get("type") or "Normal")
    return f"[{kind}] {reason}: {message}" if reason else f"[{kind}] {message}"


async def progress(jh: Any) -> AsyncIterator[ProgressEvent]:
    """KubeSpawner's own progress (the pod's events while ``start()`` runs), said plainly;
    the raw event stays in ``raw_event`` as on JupyterHub."""
    async for event in jh.progress():
        raw = event.get("raw_event")
        if isinstance(raw, dict):
            event = {**event, "message": _say(raw)}
        yield event


# -- no server as root ------------------------------------------------------------------------
def _refusal(pod: object) -> str | None:
    """Why the notebook container of ``pod`` (a V1Pod or its dict) may not run, or None."""
    spec = _get(pod, "spec")
    pod_context = _get(spec, "security_context")
    container = next((c for c in _get(spec, "containers") or []
                      if _get(c, "name") == CONTAINER), None)
    if container is None:
        return None
    context = _get(container, "security_context")
    if _get(context, "privileged"):
        return "its container would be privileged (root on the node)"
    uid = _get(context, "run_as_user")
    if uid is None:
        uid = _get(pod_context, "run_as_user")
    if uid is None:
        non_root = _get(context, "run_as_non_root")
        if non_root is None:
            non_root = _get(pod_context, "run_as_non_root")
        if non_root:
            return None  # the kubelet itself refuses to start an image that runs as root
        return ("it would run as the image's user, which may be root; set c.KubeSpawner.uid "
                "to a non-root uid (the image's user, e.g. 1000)")
    if int(uid) == 0:
        return "its server would run as root"
    if int(uid) < FIRST_PERSON_UID:
        return f"its server would run as uid {uid}, a system account's uid on the node"
    return None


async def check_start(adapter: Spawner, jh: Any) -> None:
    """Refuse, before the pod is made, a config whose pod runs the server as root or a
    system uid: the manifest KubeSpawner is about to create (with ``modify_pod_hook``)."""
    pod = await jh.get_pod_manifest()
    if jh.modify_pod_hook:
        pod = jh.modify_pod_hook(jh, copy.deepcopy(pod))
        if inspect.isawaitable(pod):
            pod = await pod
    problem = _refusal(pod)
    if problem is not None:
        adapter.log.warning("Refused to start the server of %s in pod %s: %s",
                            adapter.log_name, jh.pod_name, problem)
        raise SpawnError(f"refused: pod {jh.pod_name}: {problem}")


async def check_adopted(adapter: Spawner, jh: Any) -> None:
    """A pod a previous hub left running must not run its server as root either."""
    from kubernetes_asyncio.client.rest import ApiException

    try:
        pod = await jh.api.read_namespaced_pod(jh.pod_name, jh.namespace)
    except ApiException as e:
        if e.status == 404:
            return  # gone: the lifecycle's poll notices
        raise
    problem = _refusal(pod)
    if problem is not None:
        raise SpawnError(f"refused: pod {jh.pod_name}: {problem}")


# -- a stop ends when the watch sees the pod go ---------------------------------------------
def attach(jh: Any) -> None:
    """Wrap ``jh.stop`` (once): KubeSpawner's own stop runs as it is; it ends as soon as its
    pod reflector no longer lists the pod after KubeSpawner's delete request succeeded,
    instead of at its next back-off check (up to 5 s later)."""
    if getattr(jh, "_courtyard_stop_wrapped", False):
        return
    jh._courtyard_stop_wrapped = True
    package_stop, package_delete = jh.stop, jh._make_delete_pod_request
    deleted: list[bool] = [False]  # this stop's delete request went through

    async def delete_request(*args: Any, **kwargs: Any) -> Any:
        done = await package_delete(*args, **kwargs)
        if done:  # True: deleted, or already gone (KubeSpawner retries on False)
            deleted[0] = True
        return done

    async def stop(now: bool = False) -> Any:
        deleted[0] = False
        task = asyncio.ensure_future(package_stop(now=now))
        key = f"{jh.namespace}/{jh.pod_name}"
        try:
            while not (await asyncio.wait({task}, timeout=GONE_CHECK))[0]:
                reflector = jh.pod_reflector
                if deleted[0] and reflector is not None and key not in reflector.pods:
                    log.debug("Pod %s is gone (seen by the pod watch)", key)
                    break
            else:
                return task.result()
        finally:
            if not task.done():  # waiting in its back-off (or this stop was cancelled)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return None

    jh._make_delete_pod_request = delete_request
    jh.stop = stop
