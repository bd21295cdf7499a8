"""API tokens: made here, stored only as hashes, looked up fast.

Generated tokens carry 128 random bits, so one SHA-256 is as safe as any slow hash.
Tokens an admin writes into the config may be weak; they get PBKDF2 with a salt, and a
verified token is remembered in memory by its SHA-256, so only its first use each run pays
for the slow hash (JupyterHub pays 16,384 SHA-512 rounds on every request).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

PREFIX_LENGTH = 4
PBKDF2_ROUNDS = 100_000


def new_token() -> str:
    """A fresh token: 32 hex characters, like JupyterHub's."""
    return secrets.token_hex(16)


def fast_hash(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def slow_hash(token: str, salt: str | None = None, rounds: int = PBKDF2_ROUNDS) -> str:
    salt = salt or secrets.token_hex(8)
    digest = hashlib.pbkdf2_hmac("sha256", token.encode(), salt.encode(), rounds).hex()
    return f"pbkdf2:{rounds}:{salt}:{digest}"


def pkce_challenge(verifier: str) -> str:
    """RFC 7636's S256 challenge, ``BASE64URL(SHA256(verifier))`` unpadded: the hub's OAuth
    client sends it, the hub's provider checks a verifier against it."""
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def matches(token: str, hashed: str) -> bool:
    """Whether ``token`` is the one ``hashed`` was made from."""
    if hashed.startswith("sha256:"):
        return hmac.compare_digest(fast_hash(token), hashed)
    if hashed.startswith("pbkdf2:"):
        _, rounds, salt, _ = hashed.split(":", 3)
        return hmac.compare_digest(slow_hash(token, salt, int(rounds)), hashed)
    return False


def prefix(token: str) -> str:
    return token[:PREFIX_LENGTH]
