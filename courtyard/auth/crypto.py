"""Encryption of auth state at rest, with keys from ``COURTYARD_CRYPT_KEY`` or
``JUPYTERHUB_CRYPT_KEY``.

Keys are 32 bytes, written as hex or base64, several separated by ``;``: the first encrypts,
all decrypt, so keys can be rotated. The format is JupyterHub's (Fernet over the JSON), so a
JupyterHub ``encrypted_auth_state`` column reads here with the same key.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from typing import Any

import orjson
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from ..errors import ConfigError

ENV_VARS = ("COURTYARD_CRYPT_KEY", "JUPYTERHUB_CRYPT_KEY")
KEY_BYTES = 32


class DecryptError(Exception):
    """Stored auth state cannot be read with the keys given (was the key changed?)."""


def _decode_key(text: str, var: str) -> bytes:
    text = text.strip()
    candidates: list[bytes] = []
    try:
        candidates.append(bytes.fromhex(text))
    except ValueError:
        pass
    for decode in (base64.urlsafe_b64decode, base64.b64decode):
        try:
            candidates.append(decode(text + "=" * (-len(text) % 4)))
        except (binascii.Error, ValueError):
            pass
    for key in candidates:
        if len(key) == KEY_BYTES:
            return key
    raise ConfigError(f"{var} must hold {KEY_BYTES}-byte keys as hex or base64, separated by "
                      "';' (make one with: openssl rand -hex 32)")


def keys_from_env(environ: Mapping[str, str] | None = None) -> list[bytes]:
    """The keys, first one used for encryption; a ConfigError naming the variable if none."""
    environ = os.environ if environ is None else environ
    for var in ENV_VARS:
        raw = environ.get(var, "")
        if raw.strip():
            return [_decode_key(part, var) for part in raw.split(";") if part.strip()]
    raise ConfigError("c.Authenticator.enable_auth_state is on but no encryption key is set; "
                      f"set {ENV_VARS[0]} (or {ENV_VARS[1]}) to the output of "
                      "'openssl rand -hex 32' in the hub's environment")


class Crypt:
    """Encrypts and decrypts JSON-able state with the configured keys."""

    def __init__(self, keys: list[bytes]) -> None:
        self._fernet = MultiFernet([Fernet(base64.urlsafe_b64encode(k)) for k in keys])

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Crypt:
        return cls(keys_from_env(environ))

    def encrypt(self, data: object) -> bytes:
        return self._fernet.encrypt(orjson.dumps(data))

    def decrypt(self, blob: bytes) -> Any:
        try:
            return orjson.loads(self._fernet.decrypt(bytes(blob)))
        except InvalidToken:
            raise DecryptError("auth state cannot be decrypted with the current "
                               f"{'/'.join(ENV_VARS)}") from None

    def rotate(self, blob: bytes) -> bytes:
        """Re-encrypt with the first key."""
        return self._fernet.rotate(bytes(blob))
