"""A server's credentials: its API token and its OAuth client, made per launch.

The token belongs to the user (note ``Server at /user/NAME/SERVER/``) with the scopes a
server needs, resolved to this server when it is made. The same secret is the client secret
of the OAuth client ``jupyterhub-user-NAME[-SERVER]`` (stored hashed). Both go when the
server stops; deleting the client also deletes the OAuth tokens issued through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, joinedload

from ..auth import tokens
from ..db import queries
from ..db.models import APIToken, OAuthClient, Server, User
from .env import access_scopes

DEFAULT_SCOPES = ("users:activity!user", "access:servers!server")


def client_id(username: str, server: str) -> str:
    """``jupyterhub-user-NAME[-SERVER]``, URL-quoted, ``-`` in NAME too: the first ``-``
    after the prefix starts the server's name, so alice's server ``x`` and the user
    ``alice-x`` never share a client (a launch of one would replace the other's, with its
    sign-ins) or a cookie name."""
    cid = "jupyterhub-user-" + quote(username, safe="").replace("-", "%2D")
    return f"{cid}-{quote(server, safe='')}" if server else cid


def token_scopes(configured: list[str], username: str, server: str) -> list[str]:
    """Owner-relative filters resolved to this user and server; activity is always allowed."""
    resolved = set()
    for scope in configured or DEFAULT_SCOPES:
        base, _, filt = scope.partition("!")
        if filt == "user":
            scope = f"{base}!user={username}"
        elif filt == "server":
            scope = f"{base}!server={username}/{server}"
        resolved.add(scope)
    resolved.add(f"users:activity!user={username}")
    return sorted(resolved)


def _create(db: Session, user: User, server: Server, prefix: str, scopes: list[str],
            allowed_scopes: list[str], host: str = "") -> tuple[str, str]:
    row, secret = queries.issue_token(db, user, note=f"Server at {prefix}", scopes=scopes)
    row.server_id = server.id
    cid = client_id(user.name, server.name)
    client = OAuthClient(identifier=cid, description=f"Server at {prefix}",
                         hashed_secret=tokens.fast_hash(secret),
                         # on the server's own origin with subdomains: a full URL
                         redirect_uri=f"{host}{prefix}oauth_callback",
                         allowed_scopes=[*access_scopes(user.name, server.name)[:1],
                                         *allowed_scopes])
    db.add(client)
    return secret, cid


def revoke_many(db: Session, servers: list[tuple[int, str, str]]) -> None:
    """Delete the tokens and OAuth clients (and so the clients' OAuth tokens) of servers,
    ``(server id, user name, server name)``, in a few statements however many.

    Looks first and deletes only what exists: a delete drops every cached permission of
    the hub, and before a launch there is usually nothing left to delete.
    """
    if not servers:
        return
    ids = [sid for sid, _u, _s in servers]
    cids = [client_id(user, name) for _sid, user, name in servers]
    tokens_of_servers = list(db.scalars(select(APIToken.id).where(
        APIToken.server_id.in_(ids), APIToken.note.startswith("Server at "))))
    clients = list(db.scalars(select(OAuthClient.identifier).where(
        OAuthClient.identifier.in_(cids))))
    if tokens_of_servers:
        db.execute(delete(APIToken).where(APIToken.id.in_(tokens_of_servers)))
    if clients:
        db.execute(delete(APIToken).where(APIToken.oauth_client_id.in_(clients)))
        db.execute(delete(OAuthClient).where(OAuthClient.identifier.in_(clients)))


@dataclass
class Launch:
    """One server's credentials to issue with :func:`issue_many`; the result lands here."""

    server_id: int
    prefix: str
    scopes: list[str]
    allowed_scopes: list[str]
    host: str = ""  # the server's origin with subdomain_host, else ""
    secret: str = ""
    client_id: str = ""
    missing: bool = False  # the server's record is gone


def issue_many(db: Session, launches: list[Launch]) -> None:
    """Tokens and OAuth clients for many launches at once (after revoking whatever a crashed
    hub left behind): a few queries whatever their number."""
    ids = [launch.server_id for launch in launches]
    servers = {s.id: s for s in db.scalars(
        select(Server).where(Server.id.in_(ids)).options(joinedload(Server.user)))}
    revoke_many(db, [(s.id, s.user.name, s.name) for s in servers.values()])
    for launch in launches:
        server = servers.get(launch.server_id)
        if server is None:
            launch.missing = True
            continue
        launch.secret, launch.client_id = _create(db, server.user, server, launch.prefix,
                                                  launch.scopes, launch.allowed_scopes,
                                                  launch.host)


def issue(db: Session, server: Server, prefix: str, scopes: list[str],
          allowed_scopes: list[str]) -> tuple[str, str]:
    """One launch's credentials (:func:`issue_many` for one); returns (secret, client id)."""
    launch = Launch(server.id, prefix, scopes, allowed_scopes)
    issue_many(db, [launch])
    return launch.secret, launch.client_id
