"""CHP's REST API: every test runs against Courtyard's proxy and the real CHP."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest
from conftest import ProxyProcess, wait_for

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def test_initial_table_has_default_route(api_proxy: ProxyProcess, backend: str) -> None:
    routes = api_proxy.api_client().get("/api/routes")
    assert routes.status_code == 200
    assert routes.headers["content-type"].startswith("application/json")
    body = routes.json()
    assert list(body) == ["/"]
    assert body["/"]["target"] == backend
    assert ISO_MS.match(body["/"]["last_activity"])


def test_add_get_delete_route(api_proxy: ProxyProcess) -> None:
    api = api_proxy.api_client()
    data = {"target": "http://127.0.0.1:9", "jupyterhub": True, "user": "alice", "n": [1, 2]}
    assert api.post("/api/routes/user/alice", json=data).status_code == 201
    for path in ("/api/routes/user/alice", "/api/routes/user/alice/"):
        route = api.get(path)
        assert route.status_code == 200
        body = route.json()
        assert {k: v for k, v in body.items() if k != "last_activity"} == data
        assert ISO_MS.match(body["last_activity"])
    table = api.get("/api/routes").json()
    assert set(table) == {"/", "/user/alice"}
    assert api.get("/api/routes/user").status_code == 404
    assert api.delete("/api/routes/user/alice").status_code == 204
    assert api.delete("/api/routes/user/alice").status_code == 404
    assert api.get("/api/routes/user/alice").status_code == 404
    assert set(api.get("/api/routes").json()) == {"/"}


def test_repost_replaces_data(api_proxy: ProxyProcess) -> None:
    api = api_proxy.api_client()
    api.post("/api/routes/x", json={"target": "http://127.0.0.1:9", "a": 1})
    api.post("/api/routes/x/", json={"target": "http://127.0.0.1:10", "b": 2})
    route = api.get("/api/routes/x").json()
    assert route["target"] == "http://127.0.0.1:10"
    assert "a" not in route and route["b"] == 2


def test_escaped_path_is_stored_unescaped(api_proxy: ProxyProcess) -> None:
    api = api_proxy.api_client()
    assert api.post("/api/routes/user/a%40b", json={"target": "http://127.0.0.1:9"}).status_code == 201
    assert "/user/a@b" in api.get("/api/routes").json()
    assert api.delete("/api/routes/user/a@b").status_code == 204


@pytest.mark.parametrize(
    "body", [b'{"target": 5}', b"{}", b"[]", b"null", b"not json", b""], ids=repr
)
def test_post_rejects_bad_body(api_proxy: ProxyProcess, body: bytes) -> None:
    response = api_proxy.api_client().post("/api/routes/bad", content=body)
    assert response.status_code == 400
    assert api_proxy.api_client().get("/api/routes/bad").status_code == 404


@pytest.mark.parametrize(
    "header", [None, "token wrong", "Bearer test-proxy-token", "test-proxy-token"]
)
def test_token_required(api_proxy: ProxyProcess, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    for method in ("GET", "DELETE"):
        response = httpx.request(method, f"{api_proxy.api}/api/routes/x", headers=headers)
        assert response.status_code == 403
    response = httpx.post(f"{api_proxy.api}/api/routes/x", headers=headers,
                          json={"target": "http://127.0.0.1:9"})
    assert response.status_code == 403
    assert api_proxy.api_client().get("/api/routes/x").status_code == 404


def test_unknown_method_and_path(api_proxy: ProxyProcess) -> None:
    api = api_proxy.api_client()
    assert api.put("/api/routes/x", json={}).status_code == 405
    assert api.get("/api/other").status_code == 404
    assert api.get("/").status_code == 404


def test_inactive_since(api_proxy: ProxyProcess) -> None:
    api = api_proxy.api_client()
    api.post("/api/routes/a", json={"target": "http://127.0.0.1:9"})
    for key in ("inactive_since", "inactiveSince"):
        assert set(api.get("/api/routes", params={key: "2999-01-01T00:00:00Z"}).json()) == {"/", "/a"}
        assert api.get("/api/routes", params={key: "2000-01-01T00:00:00.000Z"}).json() == {}
        bad = api.get("/api/routes", params={key: "yesterday-ish"})
        assert bad.status_code == 400
        assert "Invalid datestamp" in bad.text


def test_last_activity_follows_traffic(api_proxy: ProxyProcess, backend: str) -> None:
    api = api_proxy.api_client()
    api.post("/api/routes/active", json={"target": backend})
    api.post("/api/routes/idle", json={"target": backend})
    before = api.get("/api/routes/active").json()["last_activity"]
    assert httpx.get(f"{api_proxy.url}/active/x").status_code == 200

    def moved() -> bool:
        return api.get("/api/routes/active").json()["last_activity"] > before

    wait_for(moved, 5, "last_activity to move")
    idle = api.get("/api/routes/idle").json()["last_activity"]
    active = api.get("/api/routes/active").json()["last_activity"]
    assert set(api.get("/api/routes", params={"inactive_since": active}).json()) >= {"/idle"}
    assert "/active" not in api.get("/api/routes", params={"inactive_since": idle}).json()


def test_health_check(api_proxy: ProxyProcess) -> None:
    response = httpx.get(f"{api_proxy.url}/_chp_healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "OK"}


@pytest.mark.parametrize("kind", ["courtyard", pytest.param("chp", marks=pytest.mark.chp)])
def test_host_routing_adds_host(
    kind: str, proxy_factory: Callable[..., ProxyProcess], backend: str, backend2: str
) -> None:
    p = proxy_factory("--host-routing", kind=kind)
    api = p.api_client()
    assert api.post("/api/routes/one.test/user/a", json={"target": backend}).status_code == 201
    assert api.post("/api/routes/two.test", json={"target": backend2}).status_code == 201
    assert api.get("/api/routes/one.test/user/a").json()["host"] == "one.test"
    assert api.get("/api/routes/two.test").json()["host"] == "two.test"
    one = httpx.get(f"{p.url}/user/a/lab", headers={"Host": "one.test:8000"}).json()
    assert one["server"] == "one"
    assert one["path"] == "/user/a/lab"
    assert httpx.get(f"{p.url}/user/a/lab", headers={"Host": "two.test"}).json()["server"] == "two"
    assert httpx.get(f"{p.url}/user/a/lab", headers={"Host": "three.test"}).status_code == 404
