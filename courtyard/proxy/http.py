"""HTTP/1.1 message helpers for the data path: header filtering, framing, error pages.

Headers are kept as lists of ``(name, value)`` byte pairs in arrival order, as httptools
hands them over, so nothing is decoded or re-cased on the hot path.
"""

from __future__ import annotations

from html import escape
from http import HTTPStatus

Headers = list[tuple[bytes, bytes]]

# Hop-by-hop fields (RFC 9110 §7.6.1, plus the legacy Proxy-* ones): they describe one
# connection, so a proxy consumes them instead of forwarding them.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

CRLF = b"\r\n"
LAST_CHUNK = b"0\r\n\r\n"


def reason_phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"


def end_to_end(headers: Headers) -> tuple[Headers, set[bytes]]:
    """Split ``headers`` into the ones to forward and the Connection tokens seen.

    One pass; the second one only runs when Connection names a field that is not
    hop-by-hop anyway (browsers send just ``keep-alive`` or ``Upgrade``).
    """
    kept: Headers = []
    tokens: set[bytes] = set()
    for name, value in headers:
        low = name.lower()
        if low in HOP_BY_HOP:
            if low == b"connection":
                tokens.update(t.strip().lower() for t in value.split(b","))
            continue
        kept.append((name, value))
    if tokens and not tokens <= HOP_BY_HOP:
        kept = [(n, v) for n, v in kept if n.lower() not in tokens]
    return kept, tokens


def encode_chunk(data: bytes) -> list[bytes]:
    """One chunk of a chunked body, as pieces so a large ``data`` is never copied."""
    return [b"%x\r\n" % len(data), data, CRLF]


_FORWARDING = frozenset({b"x-forwarded-for", b"x-forwarded-port", b"x-forwarded-proto",
                        b"x-forwarded-host", b"forwarded", b"x-real-ip"})


def forwarded_headers(
    headers: Headers, client_ip: str, scheme: str, host: bytes | None, trusted: bool = True
) -> Headers:
    """X-Forwarded-For/-Port/-Proto appended to earlier values, -Host set if absent.

    This is what CHP does (through http-proxy's ``xfwd``), so backends that already
    parse CHP's headers (JupyterHub, jupyter-server) see the same values. From a client
    that is not a ``trusted`` proxy, earlier forwarding headers (``Forwarded`` and
    ``X-Real-IP`` too) are dropped: the target sees only what this proxy saw.
    """
    if not trusted:
        headers = [(n, v) for n, v in headers if n.lower() not in _FORWARDING]
    existing: dict[bytes, bytes] = {}
    rest: Headers = []
    for name, value in headers:
        low = name.lower()
        if low in (b"x-forwarded-for", b"x-forwarded-port", b"x-forwarded-proto"):
            existing[low] = existing[low] + b"," + value if low in existing else value
        elif low == b"x-forwarded-host":
            existing.setdefault(low, value)
        else:
            rest.append((name, value))
    port = b""
    if host:
        _, sep, tail = host.rpartition(b":")
        if sep and tail.isdigit() and not host.endswith(b"]"):
            port = tail
    if not port:
        port = b"443" if scheme == "https" else b"80"
    added = {
        b"x-forwarded-for": client_ip.encode(),
        b"x-forwarded-port": port,
        b"x-forwarded-proto": scheme.encode(),
    }
    for key, value in added.items():
        old = existing.get(key)
        rest.append((key, old + b"," + value if old else value))
    forwarded_host = existing.get(b"x-forwarded-host") or host
    if forwarded_host:
        rest.append((b"x-forwarded-host", forwarded_host))
    return rest


def serialize_headers(headers: Headers) -> bytes:
    return b"".join(name + b": " + value + CRLF for name, value in headers)


def simple_response(
    status: int,
    body: bytes,
    content_type: bytes = b"text/html; charset=utf-8",
    keep_alive: bool = False,
    extra: Headers | None = None,
) -> bytes:
    """A complete response with a Content-Length body, for pages the proxy makes itself."""
    lines = [
        b"HTTP/1.1 %d %s\r\n" % (status, reason_phrase(status)),
        b"Content-Type: " + content_type + CRLF,
        b"Content-Length: %d\r\n" % len(body),
    ]
    if extra:
        lines.append(serialize_headers(extra))
    lines.append(b"Connection: keep-alive\r\n\r\n" if keep_alive else b"Connection: close\r\n\r\n")
    lines.append(body)
    return b"".join(lines)


_MESSAGES = {
    404: "No service is registered at this URL.",
    408: "The request's headers did not arrive in time.",
    431: "The request's headers are too large or too many.",
    502: "The service at this URL sent an invalid response.",
    503: "The service at this URL is not reachable.",
    504: "The service at this URL did not answer in time.",
}


def error_page(status: int) -> bytes:
    """The built-in error page, used when no --error-target is set or it fails."""
    phrase = escape(reason_phrase(status).decode())
    message = escape(_MESSAGES.get(status, phrase))
    return (
        "<!doctype html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{status}: {phrase}</title></head>\n"
        f"<body><h1>{status}: {phrase}</h1><p>{message}</p><hr><p>courtyard-proxy</p>"
        "</body></html>\n"
    ).encode()


HEALTH_RESPONSE = b"{\"status\":\"OK\"}"
