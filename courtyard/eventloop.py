"""The hub's event loop: uvloop, but subprocesses started the standard library's way.

libuv starts a subprocess with ``fork()``, which copies the hub's page tables while the loop
waits: on this project's 2-core VM, 5-6 ms per spawn for a 50 MiB process, 20-21 ms at 300 MiB
(``bench/spawn_cost.py``), so 20 cluster stops at once (a ``sudo scancel`` each) held the
loop for seconds on a busy machine. ``subprocess.Popen`` uses ``vfork()``: about 1 ms,
whatever the size. :class:`HubLoop` keeps uvloop for everything else and makes
``asyncio.create_subprocess_exec``/``_shell`` (the hub's own, and those of JupyterHub
plugins such as batchspawner) go through ``Popen``, with the exit seen through a pidfd.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from asyncio.unix_events import _UnixSubprocessTransport  # type: ignore[attr-defined]
from collections.abc import Callable
from typing import IO, Any, cast

import uvloop

Program = str | bytes | os.PathLike[str] | os.PathLike[bytes]
Stream = int | IO[Any] | None  # subprocess.PIPE, DEVNULL, STDOUT, a file, or None
Factory = Callable[[], asyncio.BaseProtocol]


class HubLoop(uvloop.Loop):
    """uvloop with the standard library's subprocess transport."""

    # the same parameters as asyncio's (typeshed spells them as Literal types)
    async def subprocess_exec(  # type: ignore[override]
            self, protocol_factory: Factory, program: Program, *args: Program,
            stdin: Stream = subprocess.PIPE, stdout: Stream = subprocess.PIPE,
            stderr: Stream = subprocess.PIPE, universal_newlines: bool = False,
            shell: bool = False, bufsize: int = 0, encoding: str | None = None,
            errors: str | None = None, text: bool | None = None, **kwargs: Any
            ) -> tuple[asyncio.SubprocessTransport, asyncio.BaseProtocol]:
        _check_popen_options(universal_newlines, shell, bufsize, text, encoding, errors)
        protocol = protocol_factory()
        transport = await self._spawn(protocol, (program, *args), False, stdin, stdout,
                                      stderr, bufsize, **kwargs)
        return transport, protocol

    async def subprocess_shell(  # type: ignore[override]
            self, protocol_factory: Factory, cmd: str | bytes, *,
            stdin: Stream = subprocess.PIPE, stdout: Stream = subprocess.PIPE,
            stderr: Stream = subprocess.PIPE, universal_newlines: bool = False,
            shell: bool = True, bufsize: int = 0, encoding: str | None = None,
            errors: str | None = None, text: bool | None = None, **kwargs: Any
            ) -> tuple[asyncio.SubprocessTransport, asyncio.BaseProtocol]:
        if not isinstance(cmd, (bytes, str)):
            raise ValueError("cmd must be a string")
        if not shell:
            raise ValueError("shell must be True")
        _check_popen_options(universal_newlines, False, bufsize, text, encoding, errors)
        protocol = protocol_factory()
        transport = await self._spawn(protocol, cmd, True, stdin, stdout, stderr, bufsize,
                                      **kwargs)
        return transport, protocol

    async def _spawn(self, protocol: asyncio.BaseProtocol,
                     args: str | bytes | tuple[Program, ...], shell: bool, stdin: Stream,
                     stdout: Stream, stderr: Stream, bufsize: int,
                     extra: dict[str, object] | None = None, **kwargs: Any
                     ) -> asyncio.SubprocessTransport:
        waiter = self.create_future()
        transport: Any = _UnixSubprocessTransport(self, protocol, args, shell, stdin, stdout,
                                             stderr, bufsize, waiter=waiter, extra=extra,
                                             **kwargs)
        self._watch_exit(transport)
        try:
            await waiter
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            transport.close()
            await transport._wait()
            raise
        return cast(asyncio.SubprocessTransport, transport)

    def _watch_exit(self, transport: Any) -> None:
        """Reap the child when its pidfd turns readable, and tell its transport."""
        pid: int = transport.get_pid()
        fd = os.pidfd_open(pid)

        def exited() -> None:
            self.remove_reader(fd)
            os.close(fd)
            try:
                _, status = os.waitpid(pid, 0)
                code = os.waitstatus_to_exitcode(status)
            except ChildProcessError:  # reaped by someone else: Popen's own poll()
                code = transport._proc.returncode if transport._proc.returncode is not None \
                    else 255
            transport._process_exited(code)

        self.add_reader(fd, exited)


def _check_popen_options(universal_newlines: bool, shell: bool, bufsize: int,
                         text: bool | None, encoding: str | None, errors: str | None) -> None:
    """What asyncio refuses for a subprocess (its pipes carry bytes, unbuffered)."""
    if universal_newlines:
        raise ValueError("universal_newlines must be False")
    if shell:
        raise ValueError("shell must be False")
    if bufsize != 0:
        raise ValueError("bufsize must be 0")
    if text:
        raise ValueError("text must be False")
    if encoding is not None:
        raise ValueError("encoding must be None")
    if errors is not None:
        raise ValueError("errors must be None")


class HubLoopPolicy(uvloop.EventLoopPolicy):  # type: ignore[misc]
    """The event loop policy that makes :class:`HubLoop`\\ s."""

    def _loop_factory(self) -> HubLoop:
        return HubLoop()


def install() -> None:
    """Make :class:`HubLoop` the loop ``asyncio.run`` creates in this process."""
    asyncio.set_event_loop_policy(HubLoopPolicy())
