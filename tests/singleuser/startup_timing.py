"""Where a notebook server's start-up time goes (not a test; timings are never asserted).

    python -m tests.singleuser.startup_timing [ROUNDS]

Starts a real hub with the built-in proxy, then for each variant spawns a server ROUNDS
times and reports, from the spawn request: when the hub marked it ready, when ``/lab``
answered through the proxy, when the server itself said it was listening (from its log),
and the CPU time the server process used. Variants: ``courtyard-singleuser`` as shipped,
the same with its start-up savings turned off, and JupyterHub's ``jupyterhub-singleuser``.
"""

from __future__ import annotations

import asyncio
import copy
import os
import re
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
from traitlets.config import Config

from courtyard.app import Hub
from tests.conftest import ADMIN_TOKEN, free_port

from .venv import ensure_venv

RUNNING = re.compile(r"\[I (\S+ \S+) ServerApp\] Jupyter Server \S+ is running at")


def _server_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(hub: Hub, public: str, api: httpx.AsyncClient, user: str,
                  log_dir: Path) -> dict[str, float]:
    await api.post(f"/users/{user}")
    token = (await api.post(f"/users/{user}/tokens", json={})).json()["token"]
    t0 = time.time()
    r = await api.post(f"/users/{user}/server")
    assert r.status_code in (201, 202), r.text
    while True:
        server = (await api.get(f"/users/{user}")).json()["servers"].get("")
        if server and server["ready"]:
            break
        await asyncio.sleep(0.01)
    t_ready = time.time()
    pid = hub.lifecycle._slots[(user, "")].spawner.pid
    cpu = _server_cpu(pid)
    async with httpx.AsyncClient(trust_env=False) as client:
        r = await client.get(f"{public}/user/{user}/lab",
                             headers={"Authorization": f"token {token}"})
        assert r.status_code == 200, r.text[:300]
    t_lab = time.time()
    log = (log_dir / user / "_default.log").read_text()
    match = RUNNING.search(log)
    listening = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp() \
        if match else float("nan")
    r = await api.delete(f"/users/{user}/server")
    return {"ready": t_ready - t0, "lab": t_lab - t0, "listening": listening - t0, "cpu": cpu}


async def run(rounds: int) -> None:
    venv = ensure_venv()
    work = Path(tempfile.mkdtemp(prefix="courtyard-timing-"))
    work.chmod(0o755)
    src = Path(__file__).resolve().parents[2]
    wrapper = work / "courtyard-singleuser"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={src} exec {venv}/bin/python -m "
                       "courtyard.singleuser \"$@\"\n")
    wrapper.chmod(0o755)
    variants = {
        "courtyard-singleuser": ([str(wrapper)], {}),
        "courtyard-singleuser, savings off": ([str(wrapper)], {
            "COURTYARD_SINGLEUSER_IRI_FORMAT": "1", "COURTYARD_SINGLEUSER_NOTEBOOK_SHIM": "1",
            "COURTYARD_SINGLEUSER_LAB_NODE": "1"}),
        "jupyterhub-singleuser": ([str(venv / "bin" / "jupyterhub-singleuser")], {}),
    }
    base = Config()
    port = free_port()
    base.Courtyard.db_url = f"sqlite:///{work}/hub.sqlite"
    base.Courtyard.data_files_path = str(work)
    base.Courtyard.api_tokens = {ADMIN_TOKEN: "admin"}
    base.Authenticator.admin_users = {"admin"}
    base.Courtyard.authenticator_class = "dummy"
    base.Courtyard.hub_port = 0
    base.Courtyard.port = port
    base.BuiltinProxy.api_url = f"http://127.0.0.1:{free_port()}"
    base.BuiltinProxy.workers = 1
    base.Courtyard.cleanup_proxy = True
    base.LocalProcessSpawner.create_system_users = os.geteuid() == 0
    results: dict[str, list[dict[str, float]]] = {}
    for label, (cmd, env) in variants.items():
        c = copy.deepcopy(base)
        c.Spawner.cmd = cmd
        c.Spawner.environment = env
        c.Spawner.http_timeout = 120
        hub = Hub(c)
        hub.initialize()
        task = asyncio.create_task(hub.serve())
        public = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(trust_env=False, timeout=120) as probe:
            while True:
                try:
                    if (await probe.get(f"{public}/hub/api/")).status_code == 200:
                        break
                except httpx.HTTPError:
                    await asyncio.sleep(0.05)
        host, hub_port = hub.hub_bound  # type: ignore[misc]
        async with httpx.AsyncClient(base_url=f"http://{host}:{hub_port}/hub/api",
                                     headers={"Authorization": f"token {ADMIN_TOKEN}"},
                                     trust_env=False, timeout=120) as api:
            for i in range(rounds):
                user = f"timing{i}"
                results.setdefault(label, []).append(
                    await measure(hub, public, api, user, work / "logs"))
        hub.shutdown_event.set()
        await task
        hub.session.kw["bind"].dispose()
    if os.geteuid() == 0:
        import subprocess

        for i in range(rounds):
            subprocess.run(["userdel", "--remove", f"timing{i}"], capture_output=True)
    print(f"{'variant':36} {'listening':>10} {'ready':>8} {'/lab':>8} {'CPU':>8}  (s, median "
          f"of {rounds})")
    for label, rows in results.items():
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print(f"{label:36} {med['listening']:10.2f} {med['ready']:8.2f} {med['lab']:8.2f} "
              f"{med['cpu']:8.2f}")


if __name__ == "__main__":
    asyncio.run(run(int(sys.argv[1]) if len(sys.argv) > 1 else 3))
