"""The pure route table: longest whole-segment prefix, CHP's path cleaning, scale."""

from __future__ import annotations

import pytest

from courtyard.proxy.api import iso8601, parse_timestamp
from courtyard.proxy.routes import RouteTable, Target, clean_path


def test_clean_path_like_chp() -> None:
    assert clean_path("user/a/") == "/user/a"
    assert clean_path("/") == "/"
    assert clean_path("") == "/"
    assert clean_path("/a//") == "/a/"


def test_longest_whole_segment_prefix() -> None:
    t = RouteTable()
    t.add("/", "http://hub:8081")
    t.add("/user/alice/", "http://a:1")
    t.add("/user/alice/deep", "http://d:1")
    t.add("/services/x", "http://s:1")
    m = lambda p: t.match(p).prefix  # type: ignore[union-attr]  # noqa: E731
    assert m("/user/alice") == "/user/alice"
    assert m("/user/alice/") == "/user/alice"
    assert m("/user/alice/lab?x") == "/user/alice"
    assert m("/user/alice/deep/er") == "/user/alice/deep"
    assert m("/user/alicex") == "/"
    assert m("/user/") == "/"
    assert m("/user/%61lice/x") == "/user/alice"
    assert m("//user/alice") == "/user/alice"


def test_no_default_route_means_no_match() -> None:
    t = RouteTable()
    t.add("/a", "http://a:1")
    assert t.match("/b") is None
    assert t.match("/a/b").prefix == "/a"  # type: ignore[union-attr]


def test_remove_prunes_and_keeps_others() -> None:
    t = RouteTable()
    t.add("/a/b/c", "http://c:1")
    t.add("/a", "http://a:1")
    assert t.remove("/a/b/c/").prefix == "/a/b/c"  # type: ignore[union-attr]
    assert t.remove("/a/b/c") is None
    assert t.match("/a/b/c/d").prefix == "/a"  # type: ignore[union-attr]
    assert not t._root.children["a"].children  # the dead branch is gone
    assert len(t) == 1 and "/a/" in t


def test_target_parsing() -> None:
    target = Target.parse("https://host.test/base/")
    assert (target.scheme, target.host, target.port, target.path) == ("https", "host.test", 443, "/base")
    assert Target.parse("http://127.0.0.1:9").port == 9
    with pytest.raises(ValueError):
        Target.parse("ftp://x")
    with pytest.raises(ValueError):
        Target.parse("not a url")


def test_ten_thousand_routes_each_match_their_own() -> None:
    # how fast a lookup is among them is measured by bench/timings.py, not asserted here
    t = RouteTable()
    t.add("/", "http://hub:8081")
    for i in range(10_000):
        t.add(f"/user/u{i}/", f"http://10.0.{i // 250}.{i % 250}:8888")
    for i in range(10_000):
        route = t.match(f"/user/u{i}/lab/tree/notebook.ipynb")
        assert route is not None and route.prefix == f"/user/u{i}"
        assert route.target.url == f"http://10.0.{i // 250}.{i % 250}:8888"
    assert t.match("/user/u10000/").prefix == "/"  # type: ignore[union-attr]


def test_timestamps_round_trip() -> None:
    stamp = 1767225600.123
    text = iso8601(stamp)
    assert text == "2026-01-01T00:00:00.123Z"
    assert abs(parse_timestamp(text) - stamp) < 1e-3  # type: ignore[operator]
    assert parse_timestamp("2026-01-01") == 1767225600.0
    assert parse_timestamp("Thu, 01 Jan 2026 00:00:00 GMT") == 1767225600.0
    assert parse_timestamp("nope") is None
