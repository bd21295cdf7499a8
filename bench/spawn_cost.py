"""What starting a subprocess costs the hub's event loop, by the loop and the process's size.

    python bench/spawn_cost.py                 # 50 and 300 MiB, 40 spawns of /bin/true each

For each size, a fresh Python process touches that much memory (a hub with its plugins
loaded is 100-300 MiB) and starts ``true`` 40 times, one after the other, with
``asyncio.create_subprocess_exec`` on: uvloop as it is (libuv's ``fork()``), Courtyard's
``eventloop.HubLoop`` (uvloop, subprocesses through ``subprocess.Popen``: ``vfork()``), and
the standard library's loop. Prints ms per spawn (until the process has exited and been
reaped); the loop is held for most of it with ``fork()``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CHILD = """
import asyncio, sys, time
sys.path.insert(0, {root!r})
ballast = [bytearray(1 << 20) for _ in range({mib})]
for block in ballast:
    block[::4096] = b"x" * len(block[::4096])
if {loop!r} == "uvloop":
    import uvloop
    uvloop.install()
elif {loop!r} == "HubLoop":
    from courtyard import eventloop
    eventloop.install()

async def main():
    began = time.perf_counter()
    for _ in range(40):
        proc = await asyncio.create_subprocess_exec("true")
        await proc.wait()
    print(f"{{1000 * (time.perf_counter() - began) / 40:.2f}}")

asyncio.run(main())
"""


def main() -> int:
    root = str(Path(__file__).resolve().parent.parent)
    print(f"{'loop':<10} {'MiB':>5} {'ms per spawn':>13}")
    for mib in (50, 300):
        for loop in ("uvloop", "HubLoop", "asyncio"):
            out = subprocess.run([sys.executable, "-c", CHILD.format(root=root, mib=mib,
                                                                      loop=loop)],
                                 capture_output=True, text=True, check=True).stdout.strip()
            print(f"{loop:<10} {mib:>5} {out:>13}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
