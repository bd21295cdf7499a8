"""The scope table and its algebra."""

from __future__ import annotations

from pathlib import Path

from courtyard.auth import scopes as sc

DOCS = Path(__file__).parent.parent / "docs"


def test_docs_match_table():
    assert (DOCS / "scopes.md").read_text() == sc.markdown_table(), \
        "docs/scopes.md is stale: python -m courtyard.auth.scopes > docs/scopes.md"


def test_subscopes_are_defined():
    for name, d in sc.SCOPES.items():
        for sub in d.subscopes:
            assert sub in sc.SCOPES, f"{name} -> {sub}"


def test_expand_self_and_filters():
    e = sc.expand(["self"], "user", "alice")
    assert "read:users!user=alice" in e and "start:servers!user=alice" in e
    assert "read:users" not in e
    assert sc.expand(["admin:users"]) >= {"users", "read:users", "read:users:name",
                                          "delete:users", "admin:auth_state"}
    assert sc.expand(["users:activity!user"], "user", "bob") == {
        "users:activity!user=bob", "read:users:activity!user=bob"}
    assert sc.expand(["access:servers!server"], "user", "bob", server="bob/x") == {
        "access:servers!server=bob/x"}
    assert sc.expand(["users:activity!user"]) == frozenset()  # no owner: nothing


def test_intersect_keeps_narrower():
    a = sc.parse(sc.expand(["read:users"]))
    b = sc.parse(["read:users!user=x"])
    assert sc.intersect(a, b)["read:users"] == {"user=x"}
    c = sc.parse(["read:servers!server=x/gpu"])
    d = sc.parse(["read:servers!user=x"])
    assert sc.intersect(c, d)["read:servers"] == {"server=x/gpu"}
    e = sc.parse(["read:users!group=g"])
    assert sc.intersect(e, sc.parse(["read:users!user=m"]), lambda u: ["g"])["read:users"] == {
        "user=m"}
    assert "read:users" not in sc.intersect(e, sc.parse(["read:users!user=m"]), lambda u: [])


def test_allows():
    groups = {"m": ["g"]}.get
    assert sc.allows(sc.ALL, sc.Target(user="anyone"), lambda u: [])
    f = frozenset({"group=g"})
    assert sc.allows(f, sc.Target(user="m"), lambda u: groups(u) or [])
    assert not sc.allows(f, sc.Target(user="n"), lambda u: groups(u) or [])
    assert sc.allows(f, sc.Target(group="g"), lambda u: [])
    assert sc.allows(frozenset({"user=m"}), sc.Target(user="m", server="m/a"), lambda u: [])
    assert not sc.allows(frozenset({"server=m/a"}), sc.Target(user="m", server="m/b"),
                         lambda u: [])
    assert not sc.allows(None, sc.Target(user="m"), lambda u: [])


def test_validate():
    assert sc.validate(["read:users", "custom:x"], ["custom:x"]) == []
    assert "unknown scope" in sc.validate(["read:usres"])[0]
    assert "filter" in sc.validate(["read:users!planet=mars"])[0]
