"""The replayed floor of ``bench/cluster.py``: what the spawner had the engine run
(``Recording``), a stub in the hub's place that answers the servers' start-up calls
(``StubHub``), and the polling both the floor and the engines' replays use."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx


def wait(check: Callable[[], Any], what: str, timeout: float) -> Any:
    """Poll ``check`` every 0.1 s until it returns something true; that value."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def answers(port: int, token: str) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/api", timeout=2,
                         headers={"Authorization": f"token {token}"}).status_code == 200
    except httpx.HTTPError:
        return False



@dataclass
class Recording:
    """What the spawner asked the engine to run, one entry per server (``user``, the
    server's ``env``, and what the engine needs to run it again), and the hub's version."""

    servers: list[dict[str, Any]]
    version: str

    def api_address(self) -> tuple[str, int]:
        """Where the servers call the hub's API (the same for all of them)."""
        url = urlsplit(self.servers[0]["env"]["JUPYTERHUB_API_URL"])
        return url.hostname or "127.0.0.1", url.port or 80

    def users_by_token(self) -> dict[str, str]:
        return {s["env"]["JUPYTERHUB_API_TOKEN"]: s["user"] for s in self.servers}


def server_address(env: dict[str, str], host: str, port: int | None = None) -> str:
    """The URL a hub's readiness check asks: the server's prefix at ``host`` and its port."""
    url = urlsplit(env.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:8888"))
    return f"http://{host}:{port or url.port or 8888}{env.get('JUPYTERHUB_SERVICE_PREFIX', '/')}"


def answers_any(url: str) -> bool:
    """Whether anything answers HTTP at ``url`` (a redirect to the login is an answer).
    Plain ``http.client``: ``httpx.get`` builds a client and an SSL context per call, CPU
    the starting servers need when 20 are probed every 0.1 s."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=2)
    try:
        connection.request("GET", parts.path or "/")
        connection.getresponse().read()
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()
    return True


def all_answer(locate: dict[str, Callable[[], str | None]], timeout: float) -> None:
    """Poll each server (its URL from ``locate[user]``, None while unknown) every 0.1 s, all
    at once, until every one answers."""
    def one(user: str) -> None:
        def check() -> bool:
            url = locate[user]()
            return url is not None and answers_any(url)

        wait(check, f"{user}'s server to answer", timeout)

    with ThreadPoolExecutor(len(locate)) as pool:
        list(pool.map(one, locate))


class StubHub:
    """The hub's API as the servers meet it at start-up, answered at once: the version
    header on every answer, batchspawner's port report (kept per user), activity, the
    token's user. Every request is counted (``requests``), to show what the servers asked."""

    def __init__(self, recording: Recording) -> None:
        self.version = recording.version
        self.users = recording.users_by_token()
        self.ports: dict[str, int] = {}
        self.requests: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(recording.api_address(), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> StubHub:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def answer(self, method: str, path: str, token: str, body: bytes) -> tuple[int, Any]:
        path = path.split("?")[0]
        with self.lock:
            self.requests[f"{method} {re.sub(r'/users/[^/]+', '/users/{name}', path)}"] += 1
        user = self.users.get(token)
        if method == "POST" and path.endswith("/batchspawner"):
            if user is None:
                return 403, {"message": "unknown token"}
            with self.lock:
                self.ports[user] = int(json.loads(body)["port"])
            return 200, {}
        if method == "GET" and path.rstrip("/").endswith("/hub/api/user"):
            if user is None:
                return 403, {"message": "unknown token"}
            return 200, {"kind": "user", "name": user, "admin": False, "groups": [],
                         "scopes": [f"access:servers!user={user}"], "server": None}
        if method == "GET":
            return 200, {"version": self.version}
        return 200, {}  # activity posts, and anything else

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _reply(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                token = (self.headers.get("Authorization") or "").removeprefix("token ").strip()
                status, content = stub.answer(method, self.path, token, body)
                data = json.dumps(content).encode()
                self.send_response(status)
                self.send_header("X-JupyterHub-Version", stub.version)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._reply("GET")

            def do_POST(self) -> None:
                self._reply("POST")

            def do_PATCH(self) -> None:
                self._reply("PATCH")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def replay_floor(engine: Any, recording: Recording, keep: Path | None,
                 label: str) -> dict[str, Any]:
    """The engine runs the recorded servers again, the stub in the hub's place: seconds
    until all answer, until all are gone, and what the servers asked the stub."""
    with StubHub(recording) as stub:
        ready, stopped = engine.replay(recording, stub, keep / f"{engine.name}-{label}"
                                       if keep else None)
    return {"ready_s": round(ready, 2), "stop_s": round(stopped, 2),
            "stub_requests": dict(stub.requests)}
