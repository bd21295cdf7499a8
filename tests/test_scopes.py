"""The scope table and its algebra."""

from __future__ import annotations

from pathlib import Path

from courtyard.auth.scopes import (
    ALL,
    SCOPES,
    Target,
    expand_scopes,
    intersect_scopes,
    parse_scopes,
    scope_allows,
    scopes_markdown_table,
    validate_scopes,
)

DOCS = Path(__file__).parent.parent / "docs"


def test_docs_match_table():
    assert (DOCS / "scopes.md").read_text() == scopes_markdown_table(), \
        "docs/scopes.md is stale: python -m courtyard.auth.scopes > docs/scopes.md"


def test_subscopes_are_defined():
    for name, d in SCOPES.items():
        for sub in d.subscopes:
            assert sub in SCOPES, f"{name} -> {sub}"


def test_expand_self_and_filters():
    e = expand_scopes(["self"], "user", "alice")
    assert "read:users!user=alice" in e and "start:servers!user=alice" in e
    assert "read:users" not in e
    assert expand_scopes(["admin:users"]) >= {"users", "read:users", "read:users:name",
                                          "delete:users", "admin:auth_state"}
    assert expand_scopes(["users:activity!user"], "user", "bob") == {
        "users:activity!user=bob", "read:users:activity!user=bob"}
    assert expand_scopes(["access:servers!server"], "user", "bob", server="bob/x") == {
        "access:servers!server=bob/x"}
    assert expand_scopes(["users:activity!user"]) == frozenset()  # no owner: nothing


def test_intersect_keeps_narrower():
    a = parse_scopes(expand_scopes(["read:users"]))
    b = parse_scopes(["read:users!user=x"])
    assert intersect_scopes(a, b)["read:users"] == {"user=x"}
    c = parse_scopes(["read:servers!server=x/gpu"])
    d = parse_scopes(["read:servers!user=x"])
    assert intersect_scopes(c, d)["read:servers"] == {"server=x/gpu"}
    e = parse_scopes(["read:users!group=g"])
    assert intersect_scopes(e, parse_scopes(["read:users!user=m"]), lambda u: ["g"])["read:users"] == {
        "user=m"}
    assert "read:users" not in intersect_scopes(e, parse_scopes(["read:users!user=m"]), lambda u: [])


def test_allows():
    groups = {"m": ["g"]}.get
    assert scope_allows(ALL, Target(user="anyone"), lambda u: [])
    f = frozenset({"group=g"})
    assert scope_allows(f, Target(user="m"), lambda u: groups(u) or [])
    assert not scope_allows(f, Target(user="n"), lambda u: groups(u) or [])
    assert scope_allows(f, Target(group="g"), lambda u: [])
    assert scope_allows(frozenset({"user=m"}), Target(user="m", server="m/a"), lambda u: [])
    assert not scope_allows(frozenset({"server=m/a"}), Target(user="m", server="m/b"),
                         lambda u: [])
    assert not scope_allows(None, Target(user="m"), lambda u: [])


def test_validate():
    assert validate_scopes(["read:users", "custom:x"], ["custom:x"]) == []
    assert "unknown scope" in validate_scopes(["read:usres"])[0]
    assert "filter" in validate_scopes(["read:users!planet=mars"])[0]
