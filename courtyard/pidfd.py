"""Knowing at once that a process exited, whoever its parent is.

A *pidfd* (``os.pidfd_open``, Linux 5.3+) becomes readable when its process exits, so the
event loop wakes the moment a server or the proxy dies: for a child of this hub as for a
process a previous hub started and this one adopted (no ``SIGCHLD`` reaches it then).
Where pidfds are missing (another OS, an old kernel, a seccomp filter) or the hub has used
half of its descriptors on them, :func:`wait_exit` says so at once and callers poll as
they did before.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
from collections.abc import Callable

log = logging.getLogger("courtyard.pidfd")

_open = 0  # pidfds held right now
_warned = False


def _budget() -> int:
    """At most half the descriptors the hub may open: the rest is for connections."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft // 2 if soft != resource.RLIM_INFINITY else 1 << 20


def _cannot(why: str) -> bool:
    global _warned
    if not _warned:
        _warned = True
        log.warning("Cannot watch processes with pidfds (%s): exits are noticed by polling "
                    "(c.Spawner.poll_interval) instead", why)
    return False


async def wait_exit(pid: int, still_ours: Callable[[], bool] | None = None) -> bool:
    """Wait until process ``pid`` exits, then return True; a process already gone counts.

    ``still_ours`` is checked once the pidfd is open (e.g. a recorded start time still
    matches): False means the pid now names another process, so ours is gone. Returns
    False at once when the process cannot be watched this way.
    """
    global _open
    if not hasattr(os, "pidfd_open"):
        return _cannot("no os.pidfd_open")
    if _open >= _budget():
        return _cannot(f"{_open} open, half of RLIMIT_NOFILE; raise it (ulimit -n)")
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except OSError as e:  # ENOSYS, EPERM (seccomp), EMFILE
        return _cannot(e.strerror or str(e))
    _open += 1
    try:
        if still_ours is not None and not still_ours():
            return True
        loop = asyncio.get_running_loop()
        readable = loop.create_future()
        def exited() -> None:
            if not readable.done():
                readable.set_result(None)

        loop.add_reader(fd, exited)
        try:
            await readable
        finally:
            loop.remove_reader(fd)
        return True
    finally:
        os.close(fd)
        _open -= 1
