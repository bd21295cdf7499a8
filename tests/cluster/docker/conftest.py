"""Fixtures for DockerSpawner on podman's Docker-compatible API, for real.

``podman system service`` runs on a socket in a temp dir (tracked by PID); the tests get a
podman network of their own, whose bridge gateway is the one address beyond loopback the
hub listens on (servers in containers call the hub there, as ``hub_connect_ip`` does on
JupyterHub). The proxy routes to the containers' IPs on that bridge. Every container,
image tag and network a test makes is removed at the end.

The notebook image comes from ``scripts/images/notebook.sh`` (run by ``scripts/ci/podman.sh``).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_ports, tool_missing
from tests.hubprocess import TOKEN, wait_for

IMAGE = "localhost/courtyard-notebook:latest"
PREFIX = "cytest"  # c.DockerSpawner.prefix: every container the tests' hubs make


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check,
                          timeout=120)


@dataclass
class Engine:
    """The podman service and the test network."""

    socket: Path
    network: str
    subnet: str
    gateway: str
    bridge: str
    client: Any = field(repr=False)

    @property
    def base_url(self) -> str:
        return f"unix://{self.socket}"

    def containers(self) -> list[Any]:
        """Every container of the tests' hubs (running or not)."""
        return [c for c in self.client.containers.list(all=True)
                if c.name.startswith(PREFIX + "-")]

    def container(self, user: str) -> Any:
        found = [c for c in self.containers() if c.name == f"{PREFIX}-{user}"]
        return found[0] if found else None

    def remove_all(self) -> None:
        for container in self.containers():
            try:
                container.remove(force=True)
            except Exception:  # already gone
                pass


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.201.0.0-10.250.255.0 that no address or route here overlaps."""
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    out += subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True,
                          text=True).stdout
    used = []
    for word in out.split():
        try:
            used.append(ipaddress.ip_network(word, strict=False))
        except ValueError:
            continue
    used = [n for n in used if n.version == 4 and n.prefixlen > 0]
    for _ in range(100):
        net = ipaddress.ip_network(f"10.{secrets.randbelow(50) + 201}."
                                   f"{secrets.randbelow(250) + 1}.0/24")
        if not any(net.overlaps(n) for n in used):
            return net
    raise RuntimeError("no free /24 for the test network")


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """``podman system service`` on a private socket, with a network of the tests' own."""
    if shutil.which("podman") is None:
        tool_missing("podman is not installed (bash scripts/ci/podman.sh)")
    if podman("image", "exists", IMAGE, check=False).returncode != 0:
        tool_missing(f"the image {IMAGE} is missing (bash scripts/ci/podman.sh)")
    try:
        import docker  # noqa: F401
    except ImportError:
        tool_missing("docker-py is missing (pip install -e '.[test]')")
    with running_podman(tmp_path_factory.mktemp("podman")) as found:
        yield found


@contextmanager
def running_podman(directory: Path) -> Iterator[Engine]:
    """``podman system service`` on a socket in ``directory`` and a network of its own
    (also used by ``bench/cluster.py``); containers, network and bridge removed after."""
    import docker

    sock = directory / "podman.sock"
    log = (directory / "service.log").open("w")
    service = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{sock}"],
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    network = f"{PREFIX}-{secrets.token_hex(3)}"
    client = None
    try:
        wait_for(lambda: service.poll() is not None or sock.exists(), "the podman socket", 30)
        assert service.poll() is None, (directory / "service.log").read_text()
        client = docker.DockerClient(base_url=f"unix://{sock}", timeout=120)
        wait_for(client.ping, "the Docker API", 30)
        subnet = _free_subnet()
        gateway = str(subnet.network_address + 1)
        podman("network", "create", "--subnet", str(subnet), "--gateway", gateway, network)
        bridge = podman("network", "inspect", network, "--format",
                        "{{.NetworkInterface}}").stdout.strip()
        # the bridge (and its gateway address, where the hub listens) exists once a
        # container has joined the network; CNI leaves it up afterwards
        podman("run", "--rm", "--network", network, IMAGE, "true")
        found = Engine(sock, network, str(subnet), gateway, bridge, client)
        found.remove_all()
        yield found
    finally:
        if client is not None:
            Engine(sock, network, "", "", "", client).remove_all()
            client.close()
        podman("network", "rm", "-f", network, check=False)
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(20)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
        log.close()
        bridge_name = locals().get("bridge")
        if bridge_name:
            subprocess.run(["ip", "link", "del", bridge_name], capture_output=True)


@pytest.fixture
def clean(engine: Engine) -> Iterator[Engine]:
    """The engine, with every container a test's hubs made removed after the test."""
    yield engine
    engine.remove_all()


@pytest.fixture(scope="session")
def alt_image(engine: Engine) -> Iterator[str]:
    """A second image for the options form: the notebook image with a marker variable."""
    name = f"localhost/courtyard-notebook-alt:{secrets.token_hex(3)}"
    work = subprocess.run(["buildah", "from", IMAGE], capture_output=True, text=True,
                          check=True, timeout=120).stdout.strip()
    try:
        subprocess.run(["buildah", "config", "--env", "NOTEBOOK_FLAVOR=alt", work], check=True,
                       timeout=60)
        subprocess.run(["buildah", "commit", "-q", work, name], check=True,
                       capture_output=True, timeout=300)
    finally:
        subprocess.run(["buildah", "rm", work], capture_output=True, timeout=60)
    yield name
    podman("rmi", "-f", name, check=False)


@pytest.fixture(scope="session")
def root_image(engine: Engine) -> Iterator[str]:
    """The notebook image set to run as root, which the hub must refuse."""
    name = f"localhost/courtyard-notebook-root:{secrets.token_hex(3)}"
    work = subprocess.run(["buildah", "from", IMAGE], capture_output=True, text=True,
                          check=True, timeout=120).stdout.strip()
    try:
        subprocess.run(["buildah", "config", "--user", "root", work], check=True, timeout=60)
        subprocess.run(["buildah", "commit", "-q", work, name], check=True,
                       capture_output=True, timeout=300)
    finally:
        subprocess.run(["buildah", "rm", work], capture_output=True, timeout=60)
    yield name
    podman("rmi", "-f", name, check=False)


class DockerHub:
    """``courtyard -f jupyterhub_config.py`` running DockerSpawner on the engine: the hub
    listens on the bridge gateway (``hub_ip``, ``hub_connect_ip``), the built-in proxy on
    127.0.0.1. :meth:`restart` runs a new hub on the same directory, database and ports."""

    def __init__(self, directory: Path, db_url: str, engine: Engine, config: str,
                 connect: str = "ip") -> None:
        self.dir, self.engine = directory, engine
        self.port, self.hub_port, api_port = free_ports(3)
        self.proxy_api = f"http://127.0.0.1:{api_port}"
        (directory / "jupyterhub_config.py").write_text(
            f"c.JupyterHub.db_url = {db_url!r}\n"
            f"c.JupyterHub.data_files_path = {str(directory)!r}\n"
            f"c.JupyterHub.api_tokens = {{{TOKEN!r}: 'admin'}}\n"
            "c.Authenticator.admin_users = {'admin'}\n"
            "c.JupyterHub.authenticator_class = 'dummy'\n"
            # the hub's port is on the tests' own bridge only, which nothing else joins
            "c.DummyAuthenticator.allow_insecure = True\n"
            f"c.JupyterHub.port = {self.port}\n"
            # the hub where containers reach it: on the bridge gateway, as on JupyterHub,
            # with hub_ip + hub_connect_ip or with hub_bind_url + hub_connect_url
            + (f"c.JupyterHub.hub_ip = {engine.gateway!r}\n"
               f"c.JupyterHub.hub_port = {self.hub_port}\n"
               f"c.JupyterHub.hub_connect_ip = {engine.gateway!r}\n" if connect == "ip" else
               f"c.JupyterHub.hub_bind_url = 'http://{engine.gateway}:{self.hub_port}'\n"
               f"c.JupyterHub.hub_connect_url = 'http://{engine.gateway}:{self.hub_port}'\n") +
            f"c.BuiltinProxy.api_url = {self.proxy_api!r}\n"
            "c.ConfigurableHTTPProxy.auth_token = 'proxy-test-token'\n"
            "c.BuiltinProxy.workers = 1\n"
            "c.JupyterHub.spawner_class = 'dockerspawner.DockerSpawner'\n"
            f"c.DockerSpawner.client_kwargs = {{'base_url': {engine.base_url!r}}}\n"
            f"c.DockerSpawner.image = {IMAGE!r}\n"
            "c.DockerSpawner.pull_policy = 'never'\n"
            f"c.DockerSpawner.network_name = {engine.network!r}\n"
            f"c.DockerSpawner.prefix = {PREFIX!r}\n"
            "c.DockerSpawner.name_template = '{prefix}-{username}'\n"
            "c.DockerSpawner.poll_interval = 1\n"
            "c.DockerSpawner.start_timeout = 120\n"
            "c.DockerSpawner.http_timeout = 90\n" + config)
        self.log = directory / "hub.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "courtyard", "-f", "jupyterhub_config.py"],
                cwd=self.dir, stdout=out, stderr=subprocess.STDOUT)
        wait_for(lambda: self.proc.poll() is not None or httpx.get(
            f"{self.url}/hub/api/", timeout=5).status_code == 200, "the hub", 90)
        assert self.proc.poll() is None, self.log.read_text()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        kw.setdefault("timeout", 30)
        return httpx.request(method, f"{self.url}/hub/api{path}",
                             headers={"Authorization": f"token {TOKEN}"}, **kw)

    def user_get(self, user: str, path: str, **kw: Any) -> httpx.Response:
        """A request to ``user``'s server through the proxy, with the admin's token."""
        kw.setdefault("timeout", 30)
        return httpx.get(f"{self.url}/user/{user}/{path}",
                         headers={"Authorization": f"token {TOKEN}"}, **kw)

    def routes(self) -> dict[str, Any]:
        r = httpx.get(f"{self.proxy_api}/api/routes", timeout=10,
                      headers={"Authorization": "token proxy-test-token"})
        assert r.status_code == 200, r.text
        return r.json()

    def route(self, user: str) -> str | None:
        """The proxy's target for ``user``'s server (CHP's API lists paths without the
        trailing slash), or None."""
        routes = self.routes()
        found = routes.get(f"/user/{user}") or routes.get(f"/user/{user}/")
        return found["target"] if found else None

    def server(self, user: str) -> dict[str, Any] | None:
        r = self.api("GET", f"/users/{user}")
        assert r.status_code == 200, r.text
        return r.json()["servers"].get("")

    def start_server(self, user: str, options: dict[str, Any] | None = None) -> None:
        """Start ``user``'s server and wait until the hub says it is ready."""
        r = self.api("POST", f"/users/{user}/server", json=options or {})
        assert r.status_code in (201, 202), r.text
        self.wait_ready(user)

    def wait_ready(self, user: str) -> dict[str, Any]:
        def ready() -> Any:
            server = self.server(user)
            if server is None and self.proc is not None and self.proc.poll() is not None:
                pytest.fail(self.log.read_text())
            return server if server and server.get("ready") else None

        return wait_for(ready, f"{user}'s server", 150)

    def stop_server(self, user: str) -> None:
        r = self.api("DELETE", f"/users/{user}/server")
        assert r.status_code in (202, 204), r.text
        wait_for(lambda: self.server(user) is None, f"{user}'s server to stop", 90)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def stop_proxy(self) -> None:
        """The built-in proxy a hub leaves up (cleanup_proxy is off by default)."""
        pidfile = self.dir / "courtyard-proxy.pid"
        if pidfile.exists():
            try:
                pid = int(pidfile.read_text())
                os.kill(pid, signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                return
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.1)


@pytest.fixture
def docker_hub(tmp_path: Path, db_url: str, clean: Engine) -> Iterator[Any]:
    """``docker_hub(config_text)``: a hub running DockerSpawner on podman; stopped, with its
    proxy, at the end (the containers go with ``clean``)."""
    hubs: list[DockerHub] = []

    def run(config: str = "", connect: str = "ip") -> DockerHub:
        directory = tmp_path / f"hub{len(hubs)}"
        directory.mkdir(mode=0o700)
        hubs.append(DockerHub(directory, db_url, clean, config, connect))
        return hubs[-1]

    yield run
    for hub in hubs:
        hub.stop()
        hub.stop_proxy()
