"""OpenID Connect on top of the OAuth provider: discovery document, ID tokens, userinfo.

The issuer is ``{public origin}{base_url}hub``; its discovery document is served at
``{issuer}/.well-known/openid-configuration`` (and at the site root). ID tokens are RS256
JWTs signed with :mod:`.keys`, so a service can verify who signed in without asking the hub.
"""

from __future__ import annotations

import time
from typing import Protocol, TypedDict
from urllib.parse import urlsplit

from ..db.models import User
from .keys import ALGORITHM, signer

ID_TOKEN_LIFETIME = 3600
SCOPES_SUPPORTED = ["openid", "profile", "groups"]


class IssuerOptions(Protocol):
    @property
    def base_url(self) -> str: ...
    @property
    def data_files_path(self) -> str: ...


class Issuer(Protocol):
    """What OpenID Connect needs of the hub: where people reach it, and where its key is."""

    @property
    def public_url(self) -> str: ...
    @property
    def options(self) -> IssuerOptions: ...


class Discovery(TypedDict):
    """The OpenID Connect discovery document."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    userinfo_endpoint: str
    jwks_uri: str
    response_types_supported: list[str]
    response_modes_supported: list[str]
    grant_types_supported: list[str]
    subject_types_supported: list[str]
    id_token_signing_alg_values_supported: list[str]
    token_endpoint_auth_methods_supported: list[str]
    code_challenge_methods_supported: list[str]
    scopes_supported: list[str]
    claims_supported: list[str]


class UserClaims(TypedDict):
    """What the hub says of a user in ID tokens and at userinfo."""

    sub: str
    name: str
    preferred_username: str
    groups: list[str]


def issuer(hub: Issuer) -> str:
    parts = urlsplit(hub.public_url)
    origin = f"{parts.scheme}://{parts.netloc}" if parts.netloc else ""
    return f"{origin}{hub.options.base_url}hub"


def discovery(hub: Issuer) -> Discovery:
    iss = issuer(hub)
    api = f"{iss}/api/oauth2"
    return {
        "issuer": iss,
        "authorization_endpoint": f"{api}/authorize",
        "token_endpoint": f"{api}/token",
        "userinfo_endpoint": f"{api}/userinfo",
        "jwks_uri": f"{api}/jwks",
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [ALGORITHM],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic",
                                                  "none"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": SCOPES_SUPPORTED,
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nonce", "name",
                             "preferred_username", "groups"],
    }


def user_claims(user: User) -> UserClaims:
    """``sub`` is the user's id: a name changes with a rename and comes back after a
    deletion, so a service keying accounts by it would hand one person's data to another.
    Ids are never reused (AUTOINCREMENT on SQLite, sequences on PostgreSQL)."""
    return {"sub": str(user.id), "name": user.name, "preferred_username": user.name,
            "groups": [g.name for g in user.groups]}


def id_token(hub: Issuer, user: User, client_id: str, nonce: str | None,
             lifetime: int = ID_TOKEN_LIFETIME) -> str:
    now = int(time.time())
    claims = {"iss": issuer(hub), "aud": client_id, "iat": now, "exp": now + lifetime,
              **user_claims(user)}
    if nonce:
        claims["nonce"] = nonce
    return signer(hub.options.data_files_path).sign(claims)
