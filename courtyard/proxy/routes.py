"""The routing table: a trie of path segments, pure and free of I/O.

A route is a path prefix such as ``/user/alice`` (stored without the trailing slash, as
configurable-http-proxy stores it) plus its target URL. A request path matches the route
with the longest prefix made of *whole segments*: ``/user/alice/lab`` matches
``/user/alice`` but ``/user/alicex`` does not. Lookup cost depends on the depth of the
request path, not on the number of routes, so 10,000 routes route as fast as ten.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit


def clean_path(path: str) -> str:
    """Normalise a route path the way CHP does: leading ``/``, no trailing ``/``.

    Only one trailing slash is removed, so ``/a//`` stays distinct from ``/a``, as in CHP.
    """
    if not path.startswith("/"):
        path = "/" + path
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    return path


def split_path(path: str) -> list[str]:
    """Turn ``/a/b/`` into ``["a", "b"]``; the root is the empty list."""
    path = path.strip("/")
    return path.split("/") if path else []


@dataclass(slots=True)
class Target:
    """A route's target URL, parsed once when the route is added, not per request."""

    url: str
    scheme: str
    host: str
    port: int
    # Path of the target URL without its trailing slash; it is prepended to the
    # request path, as CHP's default prepend-path does.
    path: str

    @classmethod
    def parse(cls, url: str) -> Target:
        """Parse ``url``; raise ValueError for a URL the data path could not reach."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https", "ws", "wss"):
            raise ValueError(f"unsupported target scheme in {url!r}")
        if not parts.hostname:
            raise ValueError(f"no host in target {url!r}")
        secure = scheme in ("https", "wss")
        port = parts.port or (443 if secure else 80)
        return cls(
            url=url,
            scheme="https" if secure else "http",
            host=parts.hostname,
            port=port,
            path=parts.path.rstrip("/"),
        )

    @property
    def secure(self) -> bool:
        return self.scheme == "https"


@dataclass(slots=True)
class Route:
    """One entry of the table. ``data`` is what the API returns (target included)."""

    prefix: str
    target: Target
    data: dict[str, Any]
    # Wall-clock seconds of the last proxied activity; the data path only stores a float.
    last_activity: float = 0.0
    # When this process last recorded activity; throttles marks independently of the
    # time the route was added (which also sets last_activity).
    marked_at: float = 0.0


@dataclass(slots=True)
class _Node:
    children: dict[str, _Node] = field(default_factory=dict)
    route: Route | None = None


class RouteTable:
    """Longest-prefix routing on path segments.

    Besides the trie, a flat dict keeps routes by prefix so that exact lookups and
    listings do not walk the trie.
    """

    def __init__(self) -> None:
        self._root = _Node()
        self._by_prefix: dict[str, Route] = {}

    def __len__(self) -> int:
        return len(self._by_prefix)

    def __iter__(self) -> Iterator[Route]:
        return iter(list(self._by_prefix.values()))

    def __contains__(self, prefix: str) -> bool:
        return clean_path(prefix) in self._by_prefix

    def get(self, prefix: str) -> Route | None:
        """The route stored at exactly ``prefix`` (not a match), or None."""
        return self._by_prefix.get(clean_path(prefix))

    def add(self, prefix: str, target: str, data: dict[str, Any] | None = None) -> Route:
        """Add or replace the route at ``prefix``. Raises ValueError for a bad target."""
        prefix = clean_path(prefix)
        parsed = Target.parse(target)
        node = self._root
        for part in split_path(prefix):
            child = node.children.get(part)
            if child is None:
                child = node.children[part] = _Node()
            node = child
        route = Route(prefix=prefix, target=parsed, data=dict(data or {"target": target}))
        node.route = route
        self._by_prefix[prefix] = route
        return route

    def remove(self, prefix: str) -> Route | None:
        """Remove the route at ``prefix``; prune empty branches. Returns the removed route."""
        prefix = clean_path(prefix)
        route = self._by_prefix.pop(prefix, None)
        if route is None:
            return None
        trail: list[tuple[_Node, str]] = []
        node = self._root
        for part in split_path(prefix):
            trail.append((node, part))
            node = node.children[part]
        node.route = None
        # Prune bottom-up so that removed users leave no dead branches behind.
        for parent, part in reversed(trail):
            child = parent.children[part]
            if child.route is not None or child.children:
                break
            del parent.children[part]
        return route

    def match(self, path: str) -> Route | None:
        """The route whose prefix is the longest whole-segment prefix of ``path``."""
        if "%" in path:
            path = unquote(path)
        node = self._root
        best = node.route
        for part in path.split("/"):
            if not part:
                # Leading slash and repeated slashes: CHP's trie strips only the outer
                # ones, but an inner empty segment can only match an inner empty key.
                if node is self._root:
                    continue
            child = node.children.get(part)
            if child is None:
                break
            node = child
            if node.route is not None:
                best = node.route
        return best

    def clear(self) -> None:
        self._root = _Node()
        self._by_prefix.clear()
