"""Hub-side proxies that speak configurable-http-proxy's REST API: over
:mod:`courtyard.http11` to an ``http://`` API (a thirteenth of httpx's CPU per call, see its
docstring), over httpx to an ``https://`` one, with one answer type (``ApiReply``) either way.

``BuiltinProxy`` runs ``courtyard-proxy`` and lets it outlive the hub, so users' traffic
keeps flowing while the hub restarts; a restarted hub finds it through the pid file and
its API (same token) and reuses it. ``ConfigurableHTTPProxy`` runs Node's
``configurable-http-proxy`` the way JupyterHub does (stopped with the hub), or talks to an
external one when ``should_start`` is False. Both retry connection errors with back-off
and limit concurrent API calls, as JupyterHub's CHP client does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote, urlsplit

import orjson
from traitlets import Bool, Dict, Float, Integer, List, Unicode, default

from .. import http11, pidfd
from ..errors import ProxyError
from ..files import open_private, refuse_if_open, write_private
from ..spawners.traits import Command
from .base import Proxy, RouteInfo

if TYPE_CHECKING:  # imported on first use: after the hub already answers its API
    import httpx

TOKEN_ENV = "CONFIGPROXY_AUTH_TOKEN"
_RETRY_STATUS = frozenset({502, 503, 504})
_PATH_SAFE = "/%@~:!$&'()*+,;="  # already-escaped route paths pass through unchanged


def routespec_to_path(routespec: str) -> str:
    """``/user/alice/`` -> ``/user/alice``; ``host/x/`` -> ``/host/x`` (CHP's API form)."""
    path = routespec if routespec.startswith("/") else "/" + routespec
    if path != "/":
        path = path.rstrip("/")
    return path


def path_to_routespec(path: str, host_routing: bool) -> str:
    """Inverse of :func:`routespec_to_path`; CHP returns keys unescaped, so re-escape."""
    spec = quote(path, safe="@/~")
    if host_routing:
        spec = spec.lstrip("/")
    if not spec.endswith("/"):
        spec += "/"
    return spec


def default_api_port(public_bind_url: str) -> int:
    """The proxy API's port when none is configured: the public port + 1 (JupyterHub's
    8001 with the default 8000; also where the port has no successor, or is 0)."""
    port = urlsplit(public_bind_url).port or 0
    return port + 1 if 0 < port < 65535 else 8001


class ApiReply(NamedTuple):
    """One answer of the proxy's REST API, whichever client carried it."""

    method: str
    path: str  # below /api/routes
    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return orjson.loads(self.content)


class RestProxy(Proxy):
    """A proxy driven through CHP's ``/api/routes``."""

    api_url = Unicode(help="URL of the proxy's REST API (default: http://127.0.0.1:P+1 for "
                      "public port P, so 8001 with the default 8000, and two hubs on "
                      "different ports do not collide).").tag(config=True)
    auth_token = Unicode(help=f"Token for the proxy's REST API (default: ${TOKEN_ENV}).").tag(
        config=True
    )
    extra_routes = Dict(
        Unicode(), help="Extra {routespec: target} routes the hub keeps in the proxy."
    ).tag(config=True)
    concurrency = Integer(10, help="Most API requests in flight at once.").tag(config=True)
    api_retry_timeout = Float(
        30.0, help="Seconds to keep retrying an API call while the proxy is unreachable."
    ).tag(config=True)
    debug = Bool(False, help="Start the proxy with --log-level debug.").tag(config=True)
    check_running_interval = Float(5, help="Seconds between checks that the proxy's API "
                                   "answers; one the hub runs is then started again and "
                                   "its routes restored. A proxy process the hub started or "
                                   "adopted is also watched for its exit, noticed at once "
                                   "(JupyterHub's option, on ConfigurableHTTPProxy).").tag(
        config=True)

    @default("auth_token")
    def _default_token(self) -> str:
        return os.environ.get(TOKEN_ENV) or secrets.token_hex(32)

    @default("api_url")
    def _default_api_url(self) -> str:
        return f"http://127.0.0.1:{default_api_port(self.public_bind_url)}"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._client: httpx.AsyncClient | None = None
        self._fast: http11.Client | None = None  # for an http:// API: cheaper than httpx
        self._fast_url = ""
        self._semaphore: asyncio.Semaphore | None = None

    # -- REST calls ---------------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        """For an ``https://`` API (making one loads the CA bundle: not for plain http)."""
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(timeout=httpx.Timeout(20.0, connect=5.0))
        return self._client

    def _fast_client(self) -> http11.Client | None:
        """Keep-alive connections to an ``http://`` API (None for https: httpx does that)."""
        if self._fast is None or self._fast_url != self.api_url:
            if self._fast is not None:
                self._fast.close()
            self._fast_url = self.api_url
            plain = http11.Origin.of(self.api_url) is not None
            self._fast = http11.Client(self.api_url, keep=self.concurrency) if plain else None
        return self._fast

    async def _send(self, method: str, url: str, target: str, headers: dict[str, str],
                    content: bytes | None) -> tuple[int, bytes]:
        """(status, body) of one call: over :mod:`courtyard.http11` to an ``http://`` API,
        over httpx to an ``https://`` one; a failed connection raises ``http11.HTTPError``
        either way."""
        fast = self._fast_client()
        if fast is not None:
            return await fast.request(method, target, headers, content, timeout=20.0)
        import httpx

        try:
            response = await self._http().request(method, url, headers=headers, content=content)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError,
                httpx.ReadError) as e:
            raise http11.HTTPError(f"{type(e).__name__}: {e}") from None
        return response.status_code, response.content

    async def api_request(
        self, method: str, path: str, body: dict[str, Any] | None = None, retry: bool = True
    ) -> ApiReply:
        """One API call; connection errors and 502-504 are retried until api_retry_timeout."""
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.concurrency)
        url = self.api_url.rstrip("/") + "/api/routes" + path
        headers = {"Authorization": f"token {self.auth_token}"}
        content = orjson.dumps(body) if body is not None else None
        if content is not None:
            headers["Content-Type"] = "application/json"
        target = quote(urlsplit(url).path, safe=_PATH_SAFE)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.api_retry_timeout if retry else 0)
        delay = 0.05
        async with self._semaphore:
            while True:
                try:
                    status, data = await self._send(method, url, target, headers, content)
                except http11.HTTPError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                except TimeoutError:
                    raise ProxyError(f"{method} {url}: no answer within 20 s") from None
                else:
                    if status not in _RETRY_STATUS:
                        return ApiReply(method, path, status, data)
                    problem = f"HTTP {status}"
                if loop.time() + delay > deadline:
                    raise ProxyError(f"{method} {url} failed: {problem}")
                self.log.debug("Proxy API %s %s: %s; retrying in %.2fs", method, url, problem, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    @staticmethod
    def _check(response: ApiReply, *ok: int) -> None:
        if response.status_code not in ok:
            raise ProxyError(
                f"{response.method} /api/routes{response.path} -> "
                f"{response.status_code} {response.text[:200]}"
            )

    async def add_route(self, routespec: str, target: str, data: dict[str, Any]) -> None:
        body = {**data, "jupyterhub": True, "target": target}
        response = await self.api_request("POST", routespec_to_path(routespec), body)
        self._check(response, 201, 200)

    async def delete_route(self, routespec: str) -> None:
        response = await self.api_request("DELETE", routespec_to_path(routespec))
        self._check(response, 204, 200, 404)

    async def get_all_routes(self) -> dict[str, RouteInfo]:
        response = await self.api_request("GET", "")
        self._check(response, 200)
        routes: dict[str, RouteInfo] = {}
        for path, data in response.json().items():
            if not data.pop("jupyterhub", False):
                continue  # not ours: e.g. the --default-target route
            target = data.pop("target")
            spec = path_to_routespec(path, self.host_routing)
            routes[spec] = {"routespec": spec, "target": target, "data": data}
        return routes

    async def api_state(self) -> str:
        """``"ours"`` if the API answers our token, ``"foreign"`` if it refuses, else ``"down"``."""
        try:
            response = await self.api_request("GET", "", retry=False)
        except ProxyError:
            return "down"
        return "ours" if response.status_code == 200 else "foreign"

    async def wait_for_api(self, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
        """Poll the API until it answers; fail early if ``proc`` exits."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.02
        while True:
            state = await self.api_state()
            if state == "ours":
                return
            if state == "foreign":
                raise ProxyError(f"The proxy at {self.api_url} rejects our auth token")
            if proc is not None and proc.poll() is not None:
                raise ProxyError(f"The proxy exited with status {proc.returncode} while starting")
            if loop.time() > deadline:
                raise ProxyError(f"The proxy API at {self.api_url} did not answer in {timeout} s")
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        if self._fast is not None:
            self._fast.close()
        self._client = self._semaphore = self._fast = None


class ProcessProxy(RestProxy):
    """A REST proxy that this hub may start as a child process."""

    command = Command([], help="The proxy command and any fixed arguments (a list, or one "
                      "string as JupyterHub's configs may write it).").tag(config=True)
    pid_file = Unicode(help="Where the proxy's PID is kept between hub runs.").tag(config=True)
    data_dir = Unicode("", help="Directory for the pid and log files (default: cwd).").tag(
        config=True
    )
    log_file = Unicode("", help="Send the proxy's output here instead of the hub's.").tag(
        config=True
    )
    start_timeout = Float(30.0, help="Seconds to wait for a started proxy's API.").tag(config=True)
    keep_running = Bool(False, help="Leave the proxy running when the hub exits.").tag(config=True)
    extra_args = List(Unicode(), help="More command-line arguments for the proxy.").tag(config=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.proc: subprocess.Popen[bytes] | None = None
        self._gone = 0  # the pid wait_exit last reported gone (never reported twice)

    def _path(self, name: str) -> str:
        return os.path.join(self.data_dir or os.getcwd(), name)

    def proxy_args(self) -> list[str]:
        """Command-line flags for the public and API addresses, TLS and error pages."""
        public = urlsplit(self.public_bind_url)
        api = urlsplit(self.api_url)
        args = [
            "--ip", public.hostname or "", "--port", str(public.port or 8000),
            "--api-ip", api.hostname or "127.0.0.1", "--api-port", str(api.port or 8001),
        ]
        if self.default_target:
            args += ["--default-target", self.default_target]
        if self.error_target:
            args += ["--error-target", self.error_target]
        if self.ssl_cert:
            args += ["--ssl-cert", self.ssl_cert, "--ssl-key", self.ssl_key]
        if self.host_routing:
            args.append("--host-routing")
        if self.debug:
            args += ["--log-level", "debug"]
        return [*self.command, *args, *self.extra_args]

    async def launch(self) -> None:
        """Start the proxy process and wait for its API."""
        env = dict(os.environ, **{TOKEN_ENV: self.auth_token})
        cmd = self.proxy_args()
        self.log.info("Starting proxy at %s: %s", self.public_bind_url, " ".join(cmd))
        output = None
        if self.log_file:  # owner-only: it names users and their clients' addresses
            output = open_private(self.log_file, os.O_WRONLY | os.O_APPEND, "proxy log file")
        try:
            self.proc = subprocess.Popen(
                cmd, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=output,
                start_new_session=self.keep_running,
            )
        except OSError as exc:
            raise ProxyError(f"Cannot run {cmd[0]}: {exc}") from exc
        finally:
            if output is not None:
                os.close(output)
        write_private(self.pid_file, str(self.proc.pid))
        try:
            await self.wait_for_api(self.start_timeout, self.proc)
        except ProxyError:
            await self.stop()
            raise

    def _running_pid(self) -> int | None:
        """The PID from the pid file if that process is still alive."""
        try:
            with open(self.pid_file) as f:
                pid = int(f.read().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    async def stop(self) -> None:
        """Terminate the proxy (ours, or the one named by the pid file) and wait for it."""
        pid = self.proc.pid if self.proc is not None else self._running_pid()
        if pid is not None:
            self.log.info("Stopping proxy (pid %d)", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not await self._wait_exit(pid, 10.0):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                await self._wait_exit(pid, 5.0)
        self.proc = None
        with contextlib.suppress(OSError):
            os.unlink(self.pid_file)
        await self.aclose()

    async def wait_exit(self) -> bool:
        """Return True when the proxy process this hub started or adopted exits (a pidfd:
        at once, whoever its parent is), once its workers are gone too; False at once when
        there is none to watch (``should_start`` False) or it cannot be watched."""
        pid = self.proc.pid if self.proc is not None else self._running_pid()
        if not self.should_start or pid is None or pid == self._gone:
            return False
        try:
            leads_group = os.getpgid(pid) == pid
        except ProcessLookupError:
            leads_group = False
        if not await pidfd.wait_exit(pid):
            return False
        self._gone = pid
        if self.proc is not None and self.proc.pid == pid:
            self.proc.poll()  # reap it
        if leads_group:  # its workers leave when its socket closes; they hold the port
            await self._wait_group_exit(pid, 5.0)
        return True

    async def _wait_group_exit(self, pgid: int, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            await asyncio.sleep(0.02)

    async def _wait_exit(self, pid: int, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self.proc is not None and self.proc.pid == pid:
                if self.proc.poll() is not None:
                    return True
            else:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return True
            await asyncio.sleep(0.05)
        return False

    async def shutdown(self) -> None:
        if self.should_start and not self.keep_running:
            await self.stop()
        else:
            await self.aclose()


class BuiltinProxy(ProcessProxy):
    """Courtyard's own proxy (``courtyard-proxy``); it outlives hub restarts by default."""

    workers = Integer(0, help="Worker processes (0: one per CPU).").tag(config=True)

    @default("command")
    def _default_command(self) -> list[str]:
        return [sys.executable, "-m", "courtyard.proxy"]

    @default("keep_running")
    def _default_keep_running(self) -> bool:
        return True

    @default("pid_file")
    def _default_pid_file(self) -> str:
        return self._path("courtyard-proxy.pid")

    @default("log_file")
    def _default_log_file(self) -> str:
        # A proxy that outlives the hub must not write to the hub's (closed) stdout.
        return self._path("courtyard-proxy.log") if self.keep_running else ""

    @default("auth_token")
    def _default_token(self) -> str:
        """From the env, else kept in the data dir, so a restarted hub can reuse the proxy."""
        if os.environ.get(TOKEN_ENV):
            return os.environ[TOKEN_ENV]
        path = self._path("courtyard-proxy.token")
        with contextlib.suppress(FileNotFoundError), open(path) as f:
            refuse_if_open(Path(path), "proxy token file")  # always written 0600
            token = f.read().strip()
            if token:
                return token
        token = secrets.token_hex(32)
        write_private(path, token)
        return token

    def proxy_args(self) -> list[str]:
        args = super().proxy_args()
        extra = ["--workers", str(self.workers)] if self.workers else []
        if self.trusted_downstream_ips:
            extra += ["--trusted-downstream-ips", ",".join(self.trusted_downstream_ips)]
        args[len(self.command):len(self.command)] = extra
        return args

    async def start(self) -> None:
        state = await self.api_state()
        if state == "ours":
            self.log.info("Reusing the proxy already running at %s", self.api_url)
            return
        if state == "foreign":
            raise ProxyError(f"Another proxy answers at {self.api_url} and rejects our token")
        if not self.should_start:
            await self.wait_for_api(self.start_timeout)
            return
        await self.launch()


class ConfigurableHTTPProxy(ProcessProxy):
    """Node's configurable-http-proxy, managed like JupyterHub manages it."""

    @default("command")
    def _default_command(self) -> list[str]:
        return ["configurable-http-proxy"]

    @default("pid_file")
    def _default_pid_file(self) -> str:
        return self._path("jupyterhub-proxy.pid")

    async def start(self) -> None:
        if not self.should_start:
            await self.wait_for_api(self.start_timeout)
            return
        if self._running_pid() is not None:
            # JupyterHub's behaviour: a CHP left over from a previous hub is replaced.
            await self.stop()
        await self.launch()
