"""The OAuth 2 authorization-code flow the hub runs for servers and services (I/O is the
database only; :mod:`.routes` does HTTP).

Clients are rows of ``oauth_clients``: one per running server (``jupyterhub-user-NAME[-SERVER]``,
made by :mod:`courtyard.spawners.credentials` at launch) and one per service with a URL
(``service-NAME``, kept in step by :func:`sync_service_clients`). Each client's
``allowed_scopes`` holds the *access scope* of what it fronts, ``access:servers!server=U/S``
or ``access:services!service=NAME``, which a user must hold to sign in to it.

Codes are single-use, live five minutes and are stored hashed. A token request proves the
client with its secret (a server's is its API token; a service's, any of its API tokens)
and, when the code was made with a PKCE challenge, with the verifier. A client without a
secret may only use the flow with PKCE.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ..auth import tokens
from ..auth.scopes import (
    Parsed,
    Target,
    expand_scopes,
    intersect_scopes,
    is_custom_scope,
    parse_scopes,
    scope_allows,
    split_scope,
    unparse_scopes,
    validate_scopes,
)
from ..db import queries
from ..db.models import APIToken, OAuthClient, OAuthCode, Service, User, utcnow


class ProviderOptions(Protocol):
    @property
    def base_url(self) -> str: ...
    @property
    def cookie_max_age_days(self) -> float: ...
    @property
    def oauth_token_expires_in(self) -> int: ...


class Hub(Protocol):
    """What the provider needs of the hub: its public origin, base URL and token lifetimes."""

    @property
    def public_url(self) -> str: ...
    @property
    def options(self) -> ProviderOptions: ...

CODE_LIFETIME = timedelta(minutes=5)
# OpenID Connect scopes: they ask for claims in the ID token, not for hub permissions
OIDC_SCOPES = frozenset({"openid", "profile", "email", "groups"})
ACCESS_PREFIXES = ("access:servers!server=", "access:services!service=")


class OAuthError(Exception):
    """A refused OAuth request, with the RFC 6749 error code."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


@dataclass
class Client:
    """An OAuth client and what signing in to it means."""

    row: OAuthClient
    access_scope: str
    service: Service | None = None

    @property
    def id(self) -> str:
        return self.row.identifier

    @property
    def name(self) -> str:
        return self.row.description or self.row.identifier

    @property
    def target(self) -> Target:
        kind, _, value = self.access_scope.partition("!")[2].partition("=")
        if kind == "service":
            return Target(service=value)
        return Target(user=value.partition("/")[0], server=value)

    @property
    def server_owner(self) -> str | None:
        """The user whose server this client is (None for a service)."""
        return self.target.user if self.target.server is not None else None

    @property
    def public(self) -> bool:
        """No secret to prove: such a client must use PKCE."""
        return not self.row.hashed_secret and self.service is None


# -- clients -----------------------------------------------------------------------------------
def service_redirect_uri(hub: Hub, service: Service) -> str:
    return service.oauth_redirect_uri or f"{hub.options.base_url}services/{service.name}/oauth_callback"


def ensure_service_client(hub: Hub, db: Session, service: Service) -> OAuthClient | None:
    """The OAuth client row of a service with an ``oauth_client_id``, made or updated."""
    if not service.oauth_client_id:
        return None
    row = db.scalar(select(OAuthClient).where(OAuthClient.identifier == service.oauth_client_id))
    if row is None:
        row = OAuthClient(identifier=service.oauth_client_id)
        db.add(row)
    row.description = f"Service {service.name}"
    row.redirect_uri = service_redirect_uri(hub, service)
    row.allowed_scopes = [f"access:services!service={service.name}",
                          *service.oauth_client_allowed_scopes]
    return row


def sync_service_clients(hub: Hub, db: Session) -> None:
    """One client per service with an OAuth client id; clients of removed services go."""
    wanted = set()
    for service in db.scalars(select(Service)):
        if ensure_service_client(hub, db, service) is not None:
            wanted.add(service.oauth_client_id)
    stale = db.scalars(select(OAuthClient).where(OAuthClient.identifier.startswith("service-")))
    for row in stale:
        if row.identifier not in wanted:
            db.delete(row)
    db.flush()


def load_client(hub: Hub, db: Session, client_id: str) -> Client:
    if not client_id:
        raise OAuthError("invalid_request", "client_id is required")
    service = db.scalar(select(Service).where(Service.oauth_client_id == client_id))
    row = ensure_service_client(hub, db, service) if service is not None else None
    if row is None:
        row = db.scalar(select(OAuthClient).where(OAuthClient.identifier == client_id))
    if row is None:
        raise OAuthError("invalid_client", f"No such OAuth client: {client_id} (is the server "
                         "running?)", 401)
    access = next((s for s in row.allowed_scopes if s.startswith(ACCESS_PREFIXES)), None)
    if access is None or (service is None and access.startswith(ACCESS_PREFIXES[1])):
        # a client left behind by a deleted service must not sign anyone in
        raise OAuthError("invalid_client", f"OAuth client {client_id} fronts no server or "
                         "service", 401)
    return Client(row, access, service)


def check_redirect_uri(hub: Hub, client: Client, given: str | None) -> str:
    """The redirect URI to use: the registered one, given as a path or a full URL on the
    hub's public origin."""
    registered = client.row.redirect_uri
    if not given:
        return registered
    if given == registered:
        return given
    origin = _origin(hub.public_url)
    if registered.startswith("/") and origin and given == origin + registered:
        return given
    raise OAuthError("invalid_request", "redirect_uri does not match the client's")


def _origin(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


# -- scopes --------------------------------------------------------------------------------------
def may_access(held: Parsed, client: Client, groups_of: Callable[[str], Iterable[str]]
               ) -> bool:
    base = client.access_scope.partition("!")[0]
    return scope_allows(held.get(base), client.target, groups_of)


def grant_scopes(requested: Iterable[str], held: Parsed, client: Client, user: str,
                 groups_of: Callable[[str], Iterable[str]]) -> list[str]:
    """requested ∩ held ∩ what the client may carry; the access scope always; OIDC scopes
    as asked. No scopes requested means the client's allowed scopes."""
    requested = [s for s in requested if s]
    oidc = sorted({s for s in requested if s in OIDC_SCOPES})
    wanted = [s for s in requested if s not in OIDC_SCOPES] or list(client.row.allowed_scopes)
    # as JupyterHub: every token may read its owner's name and groups and open its client
    required = {client.access_scope, *identify_scopes(user)}
    if "inherit" in wanted and "inherit" in client.row.allowed_scopes:
        return sorted(required | {"inherit"}) + oidc  # the user's own rights, as they change
    wanted = [s for s in wanted if s != "inherit"]
    if validate_scopes(wanted, _custom(wanted)):
        raise OAuthError("invalid_scope", "unknown scope(s): " + ", ".join(validate_scopes(wanted)))
    parsed = parse_scopes(expand_scopes(wanted, "user", user))
    allowed = parse_scopes(expand_scopes(client.row.allowed_scopes, "user", user))
    granted = intersect_scopes(intersect_scopes(parsed, allowed, groups_of), held, groups_of)
    return sorted(set(unparse_scopes(granted)) | required) + oidc


def identify_scopes(user: str) -> list[str]:
    """JupyterHub's identify scopes (``read:users:name!user``, ``read:users:groups!user``)
    for ``user``: what a service needs to read the model of whoever signed in to it."""
    return [f"read:users:name!user={user}", f"read:users:groups!user={user}"]


def _custom(scopes: Iterable[str]) -> list[str]:
    return [split_scope(s)[0] for s in scopes if is_custom_scope(split_scope(s)[0])]


def needs_consent(db: Session, user: User, client: Client, scopes: list[str]) -> bool:
    """The consent page is skipped for the user's own servers, services that opted out, and
    clients the user already granted these scopes to."""
    if client.server_owner == user.name:
        return False
    if client.service is not None and client.service.oauth_no_confirm:
        return False
    wanted = {s for s in scopes if s not in OIDC_SCOPES}
    now = utcnow()
    for row in db.scalars(select(APIToken).where(APIToken.user_id == user.id,
                                                 APIToken.oauth_client_id == client.id)):
        if (row.expires_at is None or row.expires_at > now) and wanted <= set(row.scopes):
            return False
    return True


# -- codes ---------------------------------------------------------------------------------------
def issue_code(db: Session, client: Client, user: User, redirect_uri: str, scopes: list[str],
               session_id: str | None, challenge: str | None, method: str | None,
               nonce: str | None) -> str:
    if challenge:
        if (method or "plain") != "S256":
            raise OAuthError("invalid_request", "code_challenge_method must be S256")
        if not 43 <= len(challenge) <= 128:
            raise OAuthError("invalid_request", "code_challenge must be 43-128 characters")
    elif client.public:
        raise OAuthError("invalid_request", "this client has no secret and must use PKCE")
    if nonce and (len(nonce) > 255 or not nonce.isprintable()):  # what the column holds
        raise OAuthError("invalid_request", "nonce must be at most 255 printable characters")
    secret = secrets.token_urlsafe(32)
    db.execute(delete(OAuthCode).where(OAuthCode.expires_at <= utcnow()))
    db.add(OAuthCode(client_id=client.id, hashed_code=tokens.fast_hash(secret), user_id=user.id,
                     redirect_uri=redirect_uri, scopes=scopes, session_id=session_id,
                     code_challenge=challenge or None,
                     code_challenge_method="S256" if challenge else None,
                     nonce=nonce or None, expires_at=utcnow() + CODE_LIFETIME))
    db.flush()
    return secret


def authenticate_client(hub: Hub, db: Session, client_id: str, secret: str) -> Client:
    """The client, if ``secret`` proves it (or it is public and sends none)."""
    client = load_client(hub, db, client_id)
    if client.row.hashed_secret:
        if secret and tokens.matches(secret, client.row.hashed_secret):
            return client
    elif client.service is not None:
        if secret and _service_token_matches(db, client.service, secret):
            return client
    elif not secret:
        return client
    raise OAuthError("invalid_client", "client authentication failed", 401)


def _service_token_matches(db: Session, service: Service, secret: str) -> bool:
    rows = db.scalars(select(APIToken).where(APIToken.service_id == service.id,
                                             APIToken.prefix == tokens.prefix(secret)))
    now = utcnow()
    return any(tokens.matches(secret, r.hashed) and (r.expires_at is None or r.expires_at > now)
               for r in rows)


def redeem_code(db: Session, client: Client, code: str, redirect_uri: str | None,
                verifier: str | None) -> OAuthCode:
    """Use up ``code``: it is deleted whether or not the exchange succeeds."""
    row = db.scalar(select(OAuthCode).where(OAuthCode.hashed_code == tokens.fast_hash(code)))
    if row is None:
        raise OAuthError("invalid_grant", "unknown, used or expired code")
    db.delete(row)
    db.flush()
    if row.client_id != client.id:
        raise OAuthError("invalid_grant", "the code was issued to another client")
    if row.expires_at <= utcnow():
        raise OAuthError("invalid_grant", "the code has expired")
    if redirect_uri and redirect_uri != row.redirect_uri:
        raise OAuthError("invalid_grant", "redirect_uri differs from the authorization request")
    if row.code_challenge:
        if not verifier:
            raise OAuthError("invalid_grant", "code_verifier is required")
        if not hmac.compare_digest(tokens.pkce_challenge(verifier), row.code_challenge):
            raise OAuthError("invalid_grant", "code_verifier does not match the challenge")
    elif verifier:
        raise OAuthError("invalid_grant", "no code_challenge was sent for this code")
    return row


def token_lifetime(hub: Hub) -> int:
    configured = hub.options.oauth_token_expires_in
    return int(configured or hub.options.cookie_max_age_days * 86400)


def issue_access_token(hub: Hub, db: Session, client: Client, code: OAuthCode
                       ) -> tuple[str, APIToken, User]:
    user = db.get(User, code.user_id)
    if user is None:
        raise OAuthError("invalid_grant", "the user no longer exists")
    lifetime = token_lifetime(hub)
    row, secret = queries.issue_token(
        db, user, note=f"OAuth {client.name}",
        scopes=[s for s in code.scopes if s not in OIDC_SCOPES],
        expires_at=utcnow() + timedelta(seconds=lifetime))
    row.oauth_client_id = client.id
    row.session_id = code.session_id
    db.flush()
    return secret, row, user
