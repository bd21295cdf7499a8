"""The hub's own image (``scripts/images/hub.sh``) run with podman, as docs/deploy.md shows:
host network on a loopback port, config and data directory mounted, as a non-root user."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cluster.docker.conftest import podman
from tests.conftest import free_ports, tool_missing
from tests.hubprocess import TOKEN, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

HUB_IMAGE = "localhost/courtyard-hub:latest"


@pytest.fixture
def hub_container(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """The hub image running ``courtyard serve`` on 127.0.0.1; (container name, port)."""
    if shutil.which("podman") is None:
        tool_missing("podman is not installed (bash scripts/ci/podman.sh)")
    if podman("image", "exists", HUB_IMAGE, check=False).returncode != 0:
        tool_missing(f"the image {HUB_IMAGE} is missing (bash scripts/images/hub.sh)")
    port, hub_port, api_port = free_ports(3)
    config, data = tmp_path / "etc", tmp_path / "data"
    config.mkdir()
    data.mkdir(mode=0o700)
    os.chown(data, 1000, 1000)  # the image's user, courtyard
    (config / "jupyterhub_config.py").write_text(
        "c.JupyterHub.db_url = 'sqlite:////srv/courtyard/courtyard.sqlite'\n"
        "c.JupyterHub.data_files_path = '/srv/courtyard'\n"
        f"c.JupyterHub.api_tokens = {{{TOKEN!r}: 'admin'}}\n"
        "c.Authenticator.admin_users = {'admin'}\n"
        "c.JupyterHub.authenticator_class = 'dummy'\n"
        "c.JupyterHub.ip = '127.0.0.1'\n"
        f"c.JupyterHub.port = {port}\n"
        "c.JupyterHub.hub_ip = '127.0.0.1'\n"
        f"c.JupyterHub.hub_port = {hub_port}\n"
        f"c.BuiltinProxy.api_url = 'http://127.0.0.1:{api_port}'\n"
        "c.BuiltinProxy.workers = 1\n")
    config.chmod(0o755)
    (config / "jupyterhub_config.py").chmod(0o644)
    name = f"cytest-hub-{secrets.token_hex(3)}"
    podman("run", "-d", "--name", name, "--network", "host",
           "-v", f"{config}:/etc/courtyard:ro", "-v", f"{data}:/srv/courtyard", HUB_IMAGE)
    try:
        yield name, port
    finally:
        logs = podman("logs", name, check=False)
        print(logs.stdout[-3000:], logs.stderr[-3000:])
        podman("rm", "-f", "-t", "2", name, check=False)


def test_the_hub_image_serves_the_api_as_a_non_root_user(hub_container: tuple[str, int]) -> None:
    name, port = hub_container
    url = f"http://127.0.0.1:{port}/hub/api/"

    def up() -> bool:
        state = podman("inspect", "--format", "{{.State.Running}}", name).stdout.strip()
        if state != "true":
            pytest.fail("the hub container exited:\n" + podman("logs", name, check=False).stderr)
        return httpx.get(url, timeout=5).status_code == 200

    wait_for(up, "the hub in its container", 120)
    assert "version" in httpx.get(url, timeout=10).json()
    users = httpx.get(f"{url}users", headers={"Authorization": f"token {TOKEN}"}, timeout=10)
    assert users.status_code == 200 and [u["name"] for u in users.json()] == ["admin"]
    # the hub in the container runs as the image's user, not root
    pid = podman("inspect", "--format", "{{.State.Pid}}", name).stdout.strip()
    uids = Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[:4]
    assert uids == ["1000"] * 4, uids
