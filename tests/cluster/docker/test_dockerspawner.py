"""DockerSpawner, unmodified, on podman's Docker API behind a real Courtyard hub process.

Each test starts a real ``courtyard`` hub whose servers are real containers from the
notebook image (JupyterLab, jupyterhub-singleuser, user jovyan); the proxy routes to the
containers' IPs on the tests' own bridge network, and the servers call the hub back on the
bridge gateway (``hub_connect_ip``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.cluster.docker.conftest import IMAGE, PREFIX, Engine
from tests.hubprocess import TOKEN, sign_in, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]


def create_user(hub: Any, name: str) -> None:
    r = hub.api("POST", f"/users/{name}")
    assert r.status_code == 201, r.text


async def terminal_says(hub: Any, user: str, command: str, expect: str) -> str:
    """Run ``command`` in a terminal of ``user``'s server over its WebSocket, through the
    proxy; the output once it shows ``expect``."""
    r = httpx.post(f"{hub.url}/user/{user}/api/terminals", timeout=30,
                   headers={"Authorization": f"token {TOKEN}"})
    assert r.status_code == 200, r.text
    name = r.json()["name"]
    url = f"ws://127.0.0.1:{hub.port}/user/{user}/terminals/websocket/{name}"
    output = ""
    async with websockets.connect(url, additional_headers={
            "Authorization": f"token {TOKEN}"}, open_timeout=30) as ws:
        await ws.send(json.dumps(["stdin", command + "\r"]))
        async with asyncio.timeout(30):
            while expect not in output:
                message = json.loads(await ws.recv())
                if message[0] == "stdout":
                    output += message[1]
    return output


def start_following(hub: Any, user: str) -> list[str]:
    """Start ``user``'s server and read its progress stream to the end (the hub answers
    202 at once with ``slow_spawn_timeout = 0``); the events' messages."""
    r = hub.api("POST", f"/users/{user}/server")
    assert r.status_code == 202, r.text
    messages: list[str] = []
    with httpx.stream("GET", f"{hub.url}/hub/api/users/{user}/server/progress", timeout=150,
                      headers={"Authorization": f"token {TOKEN}"}) as stream:
        assert stream.status_code == 200
        for line in stream.iter_lines():
            if line.startswith("data:"):
                event = json.loads(line[5:])
                messages.append(event.get("message", ""))
                if event.get("ready") or event.get("failed"):
                    break
    hub.wait_ready(user)
    return messages


def container_ip(container: Any, engine: Engine) -> str:
    container.reload()
    return container.attrs["NetworkSettings"]["Networks"][engine.network]["IPAddress"]


def test_start_reaches_lab_and_a_terminal_websocket_on_the_container_ip(docker_hub: Any,
                                                                          clean: Engine) -> None:
    hub = docker_hub()
    create_user(hub, "alice")
    hub.start_server("alice")

    # the hub listens where the containers reach it (the bridge gateway), not on loopback
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{hub.hub_port}/hub/api/", timeout=5)
    container = clean.container("alice")
    assert container is not None and container.status == "running"
    ip = container_ip(container, clean)
    # the route goes to the container on the bridge, not to a port on the host
    assert hub.route("alice") == f"http://{ip}:8888"
    lab = hub.user_get("alice", "lab")
    assert lab.status_code == 200 and "JupyterLab" in lab.text, lab.text[:300]
    # a WebSocket through the proxy to the container; the shell runs as jovyan, not root
    output = asyncio.run(terminal_says(hub, "alice", "id", "uid="))
    assert re.search(r"uid=1000\(jovyan\)", output), output
    assert container.attrs["Config"]["User"] == "jovyan"


def test_progress_events_and_the_container_log(docker_hub: Any, clean: Engine) -> None:
    hub = docker_hub("c.JupyterHub.tornado_settings = {'slow_spawn_timeout': 0}\n")
    create_user(hub, "bob")
    text = "\n".join(start_following(hub, "bob"))
    ip = container_ip(clean.container("bob"), clean)
    assert f"Image {IMAGE} is on the engine" in text, text
    assert f"Created container {PREFIX}-bob from image {IMAGE}" in text, text
    assert f"Container {PREFIX}-bob is running at {ip}" in text, text

    # the log endpoint shows what the container printed (jupyterhub-singleuser's start)
    log = hub.api("GET", "/users/bob/server/logs")
    assert log.status_code == 200, log.text
    assert "Jupyter Server" in log.text and "/user/bob/" in log.text, log.text[-2000:]
    tail = hub.api("GET", "/users/bob/server/logs", params={"tail": 2})
    assert tail.status_code == 200 and len(tail.text.strip().splitlines()) <= 2


def test_stop_removes_the_container(docker_hub: Any, clean: Engine) -> None:
    hub = docker_hub("c.DockerSpawner.remove = True\n")
    create_user(hub, "carol")
    hub.start_server("carol")
    assert clean.container("carol") is not None
    hub.stop_server("carol")
    assert clean.container("carol") is None
    assert hub.route("carol") is None
    assert hub.user_get("carol", "api/status", follow_redirects=False).status_code != 200


def test_a_kept_container_is_restarted_on_the_next_start(docker_hub: Any,
                                                          clean: Engine) -> None:
    hub = docker_hub("c.DockerSpawner.remove = False\n"
                     "c.JupyterHub.tornado_settings = {'slow_spawn_timeout': 0}\n")
    create_user(hub, "dave")
    hub.start_server("dave")
    first = clean.container("dave")
    # a file in the container's own filesystem (not a volume)
    asyncio.run(terminal_says(hub, "dave", "echo kept > /tmp/marker && echo wrote", "wrote\r"))
    hub.stop_server("dave")
    kept = clean.container("dave")
    assert kept is not None and kept.id == first.id and kept.status == "exited"
    # the stopped container's log is still there to read
    log = hub.api("GET", "/users/dave/server/logs")
    assert log.status_code == 200 and "Jupyter Server" in log.text, log.text[-1000:]

    messages = start_following(hub, "dave")
    assert f"Restarting the existing container {PREFIX}-dave" in messages, messages
    again = clean.container("dave")
    assert again.id == first.id and again.status == "running"
    output = asyncio.run(terminal_says(hub, "dave", "cat /tmp/marker", "kept\r"))
    assert "kept" in output
    assert hub.user_get("dave", "api/status").status_code == 200
    # the restarted server still holds the credentials it was created with: its owner
    # signs in to it through the hub's OAuth as on a new one
    with httpx.Client(timeout=30, follow_redirects=True) as browser:
        page = sign_in(hub, browser, f"{hub.url}/user/dave/lab", "dave")
        assert page.status_code == 200 and "JupyterLab" in page.text, hub.api(
            "GET", "/users/dave/server/logs", params={"tail": 30}).text
        assert str(page.url).startswith(f"{hub.url}/user/dave/lab")


def test_the_home_volume_outlives_the_container(docker_hub: Any, clean: Engine,
                                                tmp_path: Path) -> None:
    homes = tmp_path / "homes"
    (homes / "erin").mkdir(parents=True)
    os.chown(homes / "erin", 1000, 1000)  # jovyan's, as a site's home directories are
    hub = docker_hub("c.DockerSpawner.remove = True\n"
                     f"c.DockerSpawner.volumes = {{{str(homes) + '/{username}'!r}: "
                     "'/home/jovyan/work'}\n")
    create_user(hub, "erin")
    hub.start_server("erin")
    r = httpx.put(f"{hub.url}/user/erin/api/contents/work/notes.txt", timeout=30,
                  headers={"Authorization": f"token {TOKEN}"},
                  json={"type": "file", "format": "text", "content": "remember me"})
    assert r.status_code in (200, 201), r.text
    first = clean.container("erin").id
    hub.stop_server("erin")
    assert clean.container("erin") is None
    assert (homes / "erin" / "notes.txt").read_text() == "remember me"

    hub.start_server("erin")
    assert clean.container("erin").id != first  # a new container, the same home
    r = hub.user_get("erin", "api/contents/work/notes.txt")
    assert r.status_code == 200 and r.json()["content"] == "remember me", r.text


def test_the_container_survives_a_hub_restart_and_is_adopted(docker_hub: Any,
                                                              clean: Engine) -> None:
    # the hub on the bridge by hub_bind_url / hub_connect_url this time
    hub = docker_hub("c.DockerSpawner.remove = True\n", connect="url")
    create_user(hub, "frank")
    hub.start_server("frank")
    container = clean.container("frank")

    hub.stop()  # cleanup_servers and cleanup_proxy are off by default: both stay up
    assert clean.container("frank").status == "running"
    # the proxy left up still routes to the container while no hub runs (``api`` is the
    # one page a Jupyter server shows without asking the hub who is calling)
    r = httpx.get(f"{hub.url}/user/frank/api", timeout=30)
    assert r.status_code == 200 and "version" in r.json(), r.text

    hub.start()  # a new hub on the same database, ports and proxy adopts the container
    server = hub.wait_ready("frank")
    assert server["ready"]
    assert clean.container("frank").id == container.id
    assert hub.user_get("frank", "api/status").status_code == 200
    assert hub.route("frank") == f"http://{container_ip(container, clean)}:8888"
    hub.stop_server("frank")
    assert clean.container("frank") is None


def test_the_options_form_picks_the_image(docker_hub: Any, clean: Engine,
                                          alt_image: str) -> None:
    hub = docker_hub(f"c.DockerSpawner.allowed_images = {{'Standard': {IMAGE!r}, "
                     f"'Alternative': {alt_image!r}}}\n")
    create_user(hub, "grace")
    with httpx.Client(timeout=30, follow_redirects=True) as browser:
        page = sign_in(hub, browser, f"{hub.url}/hub/spawn", "grace")
        assert page.status_code == 200
        form = browser.get(f"{hub.url}/hub/spawn")
        assert form.status_code == 200
        assert 'name="image"' in form.text and "Alternative" in form.text, form.text[:2000]
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', form.text)
        data = {"image": "Alternative"}
        if xsrf:
            data["_xsrf"] = xsrf.group(1)
        r = browser.post(f"{hub.url}/hub/spawn", data=data)
        assert r.status_code < 500, r.text[:500]
    hub.wait_ready("grace")
    container = clean.container("grace")
    assert container.attrs["Config"]["Image"] == alt_image
    output = asyncio.run(terminal_says(hub, "grace", "echo flavor=$NOTEBOOK_FLAVOR", "flavor=a"))
    assert "flavor=alt" in output
    # an image outside allowed_images is refused, and no container is made
    create_user(hub, "heidi")
    r = hub.api("POST", "/users/heidi/server", json={"image": "localhost/other:latest"})
    assert r.status_code == 400, r.text
    assert "not in allowed list" in r.json()["message"]
    assert clean.container("heidi") is None


def test_a_container_removed_behind_the_hubs_back_loses_its_route(docker_hub: Any,
                                                                   clean: Engine) -> None:
    hub = docker_hub("c.DockerSpawner.remove = True\n")
    create_user(hub, "ivan")
    hub.start_server("ivan")
    assert hub.route("ivan") is not None
    clean.container("ivan").remove(force=True)
    wait_for(lambda: hub.server("ivan") is None, "the hub to notice", 60)
    wait_for(lambda: hub.route("ivan") is None, "the route to go", 30)


def test_an_image_running_as_root_is_refused(docker_hub: Any, clean: Engine,
                                             root_image: str) -> None:
    hub = docker_hub(f"c.DockerSpawner.image = {root_image!r}\n")
    create_user(hub, "judy")
    r = hub.api("POST", "/users/judy/server")
    assert r.status_code in (202, 400, 500), r.text
    wait_for(lambda: hub.server("judy") is None, "the refusal", 60)
    assert clean.container("judy") is None
    assert "its server would run as root" in hub.log.read_text()


@pytest.mark.parametrize("when", ["at-once", "once-created"])
def test_cancelling_a_pending_start_removes_its_container(docker_hub: Any, clean: Engine,
                                                          when: str) -> None:
    hub = docker_hub("c.JupyterHub.tornado_settings = {'slow_spawn_timeout': 0}\n"
                     "c.DockerSpawner.remove = True\n")
    create_user(hub, "kim")
    r = hub.api("POST", "/users/kim/server")
    assert r.status_code == 202, r.text
    if when == "once-created":
        wait_for(lambda: clean.container("kim") is not None, "the container", 60)
    r = hub.api("DELETE", "/users/kim/server")
    assert r.status_code in (202, 204), r.text
    wait_for(lambda: hub.server("kim") is None, "the cancelled server", 60)
    # nothing left behind, even if the engine was still making the container
    wait_for(lambda: clean.container("kim") is None, "the container to go", 60)
    assert hub.route("kim") is None


def test_a_root_container_found_at_hub_start_is_stopped(docker_hub: Any, clean: Engine,
                                                        root_image: str) -> None:
    hub = docker_hub("c.DockerSpawner.remove = True\n")
    create_user(hub, "lena")
    hub.start_server("lena")
    hub.stop()
    # while no hub runs, the container under the server's name becomes one running as root
    old = clean.container("lena")
    environment = old.attrs["Config"]["Env"]
    old.remove(force=True)
    clean.client.containers.run(root_image, ["sleep", "600"], name=f"{PREFIX}-lena",
                                environment=environment, network=clean.network,
                                user="root", detach=True)
    assert clean.container("lena").status == "running"

    hub.start()
    wait_for(lambda: hub.server("lena") is None, "the hub to refuse the container", 60)
    assert clean.container("lena") is None  # stopped (and removed: remove = True)
    assert hub.route("lena") is None
    assert "runs as root" in hub.log.read_text()
