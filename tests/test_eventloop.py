"""The hub's event loop (``courtyard.eventloop.HubLoop``): uvloop, with subprocesses that
behave as asyncio's and are started without ``fork()`` (libuv's fork copies the hub's page
tables while the loop waits)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from courtyard.eventloop import HubLoop, HubLoopPolicy

ROOT = Path(__file__).resolve().parent.parent


def run(coro_fn):  # type: ignore[no-untyped-def]
    loop = HubLoop()
    try:
        return loop.run_until_complete(coro_fn())
    finally:
        loop.close()


def test_subprocesses_behave_as_asyncios():
    async def go() -> list[object]:
        shell = await asyncio.create_subprocess_shell(
            "echo hi; echo oops >&2; exit 3", stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await shell.communicate()
        cat = await asyncio.create_subprocess_exec(
            "cat", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        echoed, _ = await cat.communicate(b"data")
        sleeper = await asyncio.create_subprocess_exec("sleep", "30")
        sleeper.terminate()
        return [out, err, shell.returncode, echoed, cat.returncode, await sleeper.wait()]

    assert run(go) == [b"hi\n", b"oops\n", 3, b"data", 0, -15]


def test_a_program_that_cannot_start_raises_as_asyncios():
    async def go() -> None:
        await asyncio.create_subprocess_exec("/nonexistent/program")

    with pytest.raises(FileNotFoundError):
        run(go)

    async def buffered() -> None:
        await asyncio.get_running_loop().subprocess_exec(
            asyncio.SubprocessProtocol, "true", bufsize=1)

    with pytest.raises(ValueError, match="bufsize"):
        run(buffered)


def test_the_policy_makes_hub_loops():
    assert isinstance(HubLoopPolicy().new_event_loop(), HubLoop)


AT_FORK = """
import asyncio, os, sys
sys.path.insert(0, {root!r})
os.register_at_fork(after_in_child=lambda: os.write(2, b"forked\\n"))
if {hub_loop}:
    from courtyard import eventloop
    eventloop.install()
else:
    import uvloop
    uvloop.install()

async def main():
    proc = await asyncio.create_subprocess_exec("true")
    await proc.wait()

asyncio.run(main())
"""


@pytest.mark.parametrize("hub_loop", [True, False])
def test_a_subprocess_is_started_without_fork(hub_loop: bool):
    """A fork (uvloop's) runs the interpreter's at-fork hooks in the child; ``vfork``+``exec``
    (``subprocess.Popen``'s) does not: the hub's loop starts no fork, plain uvloop does."""
    done = subprocess.run([sys.executable, "-c", AT_FORK.format(root=str(ROOT),
                                                                hub_loop=hub_loop)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert ("forked" in done.stderr) is not hub_loop
