"""The systemd unit we ship (``deploy/systemd/courtyard.service``) is valid and does what
docs/deploy.md says: systemd's own checker accepts it, and its command, run as systemd runs
it (its environment, working directory and stop signal, sent to the main process only as
``KillMode=process`` does), serves the hub, stops cleanly, leaves the proxy running and is
found again by the next start. There is no systemd as PID 1 here: ``systemd-analyze`` works
without one, and the rest is what the unit's lines mean."""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_ports
from tests.hubprocess import wait_for

UNIT = Path(__file__).resolve().parent.parent / "deploy" / "systemd" / "courtyard.service"
INSTALLED = "/opt/courtyard/bin/courtyard"
CONFIG = "/etc/courtyard/jupyterhub_config.py"


def service() -> dict[str, str]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    return dict(parser["Service"])


def this_courtyard() -> str:
    """The courtyard command of the environment under test (what /opt/courtyard holds)."""
    return shutil.which("courtyard", path=str(Path(sys.executable).parent)) or "courtyard"


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None and not os.environ.get("CI"):
        pytest.skip("systemd-analyze is not installed")
    assert analyze is not None, "CI installs systemd"
    unit = tmp_path / "courtyard.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED, this_courtyard()))
    checked = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")


def test_the_unit_stops_the_hub_and_leaves_servers_and_proxy_to_the_next(tmp_path: Path) -> None:
    unit = service()
    assert unit["KillMode"] == "process" and unit["KillSignal"] == "SIGTERM"
    state = tmp_path / "state"  # StateDirectory=, made by systemd with StateDirectoryMode
    state.mkdir(mode=int(unit["StateDirectoryMode"], 8))
    port, hub_port, api_port = free_ports(3)
    config = tmp_path / "jupyterhub_config.py"
    config.write_text(
        "c.JupyterHub.authenticator_class = 'dummy'\n"
        f"c.JupyterHub.port = {port}\nc.JupyterHub.hub_port = {hub_port}\n"
        f"c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:{api_port}'\n"
        f"c.JupyterHub.data_files_path = {str(state)!r}\n")
    command = [this_courtyard() if word == INSTALLED else str(config) if word == CONFIG else word
               for word in shlex.split(unit["ExecStart"])]
    environment = dict(os.environ, **dict(
        pair.split("=", 1) for pair in shlex.split(unit["Environment"])))

    def start() -> subprocess.Popen[bytes]:
        hub = subprocess.Popen(command, cwd=state, env=environment, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: hub.poll() is not None or httpx.get(
            f"http://127.0.0.1:{port}/hub/api/").status_code == 200, "the hub")
        assert hub.poll() is None
        return hub

    hub = start()
    pidfile = state / "courtyard-proxy.pid"
    proxy = int(pidfile.read_text())
    try:
        hub.send_signal(getattr(signal, unit["KillSignal"]))  # the main process only
        assert hub.wait(float(unit["TimeoutStopSec"])) == 0
        os.kill(proxy, 0)  # still running: users' traffic went on meanwhile
        hub = start()
        assert int(pidfile.read_text()) == proxy  # the next start adopted it
    finally:
        hub.terminate()
        hub.wait(60)
        try:
            os.kill(proxy, signal.SIGTERM)
        except ProcessLookupError:
            pass
