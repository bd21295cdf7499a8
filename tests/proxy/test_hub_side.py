"""The hub's proxy classes against real proxy processes: start, routes, reconcile, reuse."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from conftest import ProxyProcess, free_port, require_chp

from courtyard.errors import ProxyError
from courtyard.proxy import PROXY_CLASSES
from courtyard.proxy.base import reconcile
from courtyard.proxy.rest import (
    BuiltinProxy,
    ConfigurableHTTPProxy,
    ProcessProxy,
    path_to_routespec,
    routespec_to_path,
)


def make(cls: type[ProcessProxy], tmp_path: Path, backend: str, **kw: object) -> ProcessProxy:
    port, api_port = free_port(), free_port()
    kw.setdefault("api_retry_timeout", 2.0)
    return cls(
        public_bind_url=f"http://127.0.0.1:{port}/",
        api_url=f"http://127.0.0.1:{api_port}",
        default_target=backend,
        data_dir=str(tmp_path),
        **kw,
    )


@pytest.fixture
async def builtin(tmp_path: Path, backend: str) -> AsyncIterator[ProcessProxy]:
    proxy = make(BuiltinProxy, tmp_path, backend, workers=1)
    await proxy.start()
    yield proxy
    await proxy.stop()


def test_routespec_conversion() -> None:
    assert routespec_to_path("/user/alice/") == "/user/alice"
    assert routespec_to_path("/") == "/"
    assert routespec_to_path("host.test/user/a/") == "/host.test/user/a"
    assert path_to_routespec("/user/a@b c", False) == "/user/a@b%20c/"
    assert path_to_routespec("/host.test/user/a", True) == "host.test/user/a/"
    assert path_to_routespec("/", False) == "/"
    assert set(PROXY_CLASSES) >= {"builtin", "chp", "jupyterhub.proxy.ConfigurableHTTPProxy"}


async def test_builtin_routes_round_trip(builtin: ProcessProxy, backend2: str) -> None:
    await builtin.add_route("/user/alice/", backend2, {"user": "alice", "server_name": ""})
    routes = await builtin.get_all_routes()
    assert set(routes) == {"/user/alice/"}  # the --default-target route is not the hub's
    route = routes["/user/alice/"]
    assert route["routespec"] == "/user/alice/"
    assert route["target"] == backend2
    assert route["data"]["user"] == "alice"
    assert "jupyterhub" not in route["data"] and "last_activity" in route["data"]
    async with httpx.AsyncClient() as client:
        r = await client.get(builtin.public_bind_url + "user/alice/lab")
    assert r.json()["server"] == "two"
    await builtin.delete_route("/user/alice/")
    await builtin.delete_route("/user/alice/")  # missing is fine
    assert await builtin.get_all_routes() == {}


async def test_reconcile(builtin: ProcessProxy, backend: str, backend2: str) -> None:
    await builtin.add_route("/user/stale/", backend, {"user": "stale"})
    await builtin.add_route("/user/pending/", backend, {"user": "pending"})
    await builtin.add_route("/user/moved/", backend, {"user": "moved"})
    await builtin.add_route("/user/same/", backend, {"user": "same"})
    desired = {
        "/": (backend, {"hub": True}),
        "/user/same/": (backend, {"user": "same"}),
        "/user/moved/": (backend2, {"user": "moved"}),
        "/user/new/": (backend2, {"user": "new"}),
    }
    added, removed = await reconcile(builtin, desired, keep={"/user/pending/"})
    assert added == ["/", "/user/moved/", "/user/new/"]
    assert removed == ["/user/stale/"]
    routes = await builtin.get_all_routes()
    assert set(routes) == {*desired, "/user/pending/"}
    assert routes["/user/moved/"]["target"] == backend2
    # an in-sync table costs nothing more
    assert await reconcile(builtin, desired, keep={"/user/pending/"}) == ([], [])


async def test_builtin_survives_hub_and_is_reused(tmp_path: Path, backend: str) -> None:
    first = make(BuiltinProxy, tmp_path, backend, workers=1)
    await first.start()
    try:
        pid = int(Path(first.pid_file).read_text())
        assert os.getsid(pid) == pid  # its own session: the hub's exit does not reach it
        await first.add_route("/user/kept/", backend, {"user": "kept"})
        await first.shutdown()  # hub exits: the proxy keeps running
        os.kill(pid, 0)
        second = make(BuiltinProxy, tmp_path, backend, workers=1)
        second.public_bind_url, second.api_url = first.public_bind_url, first.api_url
        assert second.auth_token == first.auth_token  # kept in the data dir
        await second.start()
        assert second.proc is None  # reused, not started
        assert "/user/kept/" in await second.get_all_routes()
    finally:
        await first.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_foreign_token_is_refused(tmp_path: Path, backend: str) -> None:
    first = make(BuiltinProxy, tmp_path, backend, workers=1)
    await first.start()
    try:
        other = make(BuiltinProxy, tmp_path, backend, auth_token="different")
        other.api_url = first.api_url
        with pytest.raises(ProxyError, match="token"):
            await other.start()
    finally:
        await first.stop()


async def test_proxy_restart_recovers_routes_by_reconcile(
    tmp_path: Path, backend: str, backend2: str
) -> None:
    proxy = make(BuiltinProxy, tmp_path, backend, workers=1)
    await proxy.start()
    try:
        desired = {f"/user/u{i}/": (backend2, {"user": f"u{i}"}) for i in range(50)}
        await reconcile(proxy, desired)
        pid = int(Path(proxy.pid_file).read_text())
        os.kill(pid, signal.SIGKILL)
        proxy.proc.wait()  # type: ignore[union-attr]
        proxy.proc = None
        await proxy.start()  # the hub notices and starts a new one
        added, _ = await reconcile(proxy, desired)
        assert len(added) == 50
        async with httpx.AsyncClient() as client:
            r = await client.get(proxy.public_bind_url + "user/u7/")
        assert r.json()["server"] == "two"
    finally:
        await proxy.stop()


async def test_unreachable_proxy_raises_after_retries(tmp_path: Path, backend: str) -> None:
    proxy = make(BuiltinProxy, tmp_path, backend, api_retry_timeout=0.3)
    with pytest.raises(ProxyError):
        await proxy.get_all_routes()
    proxy.should_start = False
    proxy.start_timeout = 0.3
    with pytest.raises(ProxyError):
        await proxy.start()


@pytest.mark.chp
async def test_configurable_http_proxy_class(
    tmp_path: Path, backend: str, backend2: str
) -> None:
    chp = require_chp()
    proxy = make(ConfigurableHTTPProxy, tmp_path, backend, command=[chp])
    await proxy.start()
    try:
        await proxy.add_route("/user/c/", backend2, {"user": "c"})
        assert (await proxy.get_all_routes())["/user/c/"]["target"] == backend2
        added, removed = await reconcile(proxy, {"/user/d/": (backend2, {})})
        assert (added, removed) == (["/user/d/"], ["/user/c/"])
        async with httpx.AsyncClient() as client:
            r = await client.get(proxy.public_bind_url + "user/d/x")
        assert r.json()["server"] == "two"
    finally:
        await proxy.shutdown()  # JupyterHub semantics: the hub's CHP stops with it
    assert proxy.proc is None and not Path(proxy.pid_file).exists()


async def test_external_proxy_not_started(
    proxy_factory: Callable[..., ProxyProcess], backend: str
) -> None:
    running = proxy_factory("--default-target", backend)
    proxy = ConfigurableHTTPProxy(
        api_url=running.api, auth_token=running.token, should_start=False
    )
    await proxy.start()
    await proxy.add_route("/ext/", backend, {})
    assert "/ext/" in await proxy.get_all_routes()
    await proxy.shutdown()
    assert running.proc.poll() is None  # not ours to stop


async def test_builtin_proxy_files_are_owner_only(tmp_path: Path, backend: str) -> None:
    """Its log names users and their clients' addresses, its token rules every route: both
    are owner-only, a log an older version made 0644 is fixed, and a token file someone
    opened to others is refused (the hub always writes it 0600), as the cookie secret is."""
    import stat

    from courtyard.errors import ConfigError

    log = tmp_path / "courtyard-proxy.log"
    log.write_text("from an older version\n")
    log.chmod(0o644)
    first = make(BuiltinProxy, tmp_path, backend, workers=1)
    await first.start()
    try:
        token_file = tmp_path / "courtyard-proxy.token"
        assert first.log_file == str(log)
        for path in (log, token_file):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert log.read_text().startswith("from an older version")  # appended to, not lost
    finally:
        await first.stop()
    token_file.chmod(0o644)
    again = make(BuiltinProxy, tmp_path, backend, workers=1)
    with pytest.raises(ConfigError, match=f"proxy token file {token_file} is readable by "
                                          f"others .*chmod 600 {token_file}"):
        _ = again.auth_token


def test_proxy_api_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """No timing assertion: the guess and the token go through hmac.compare_digest, which
    takes as long whatever prefix matches (``==`` stops at the first difference)."""
    from courtyard.proxy import api as proxy_api
    from courtyard.proxy.routes import RouteTable

    seen: list[tuple[bytes, bytes]] = []
    real = proxy_api.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(proxy_api.hmac, "compare_digest", spy)
    routes = proxy_api.RouteApi(RouteTable(), "s3cret-token")
    for guess, ok in ((b"s3cret-tokeX", False), (b"s3cret", False), (b"s3cret-token", True),
                      ("s3cr\u00e9t".encode(), False)):
        assert routes.authorized([(b"Authorization", b"token " + guess)]) is ok
        assert seen.pop() == (guess, b"s3cret-token")
