"""The hub's OpenID Connect signing key: RS256, made once into a 0600 file in the data dir.

The key is read (or made) the first time it is needed, not at every start-up, so hubs that
never issue an ID token never pay for RSA key generation. Services verify ID tokens against
the public half published at ``/hub/api/oauth2/jwks``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError

log = logging.getLogger("courtyard.oauth")

KEY_FILE = "courtyard_oauth_signing_key.pem"
ALGORITHM = "RS256"

_signers: dict[Path, Signer] = {}


class Signer:
    """Signs ID tokens with one RSA key and publishes its public half."""

    def __init__(self, key: Any) -> None:
        self.key = key
        self.kid = key.thumbprint()

    @classmethod
    def from_file(cls, path: Path) -> Signer:
        """The key in ``path``; a new one is written there (mode 0600) when it is missing."""
        if path.exists():
            if path.stat().st_mode & 0o077:
                raise ConfigError(f"OAuth signing key {path} is readable by others; run: "
                                  f"chmod 600 {path}")
            try:
                from joserfc.jwk import RSAKey  # imported when first needed: it is slow

                return cls(RSAKey.import_key(path.read_bytes()))
            except ValueError as e:
                raise ConfigError(f"OAuth signing key {path} cannot be read ({e}); delete it "
                                  "to have a new one made (issued ID tokens stop verifying)"
                                  ) from None
        from joserfc.jwk import RSAKey

        key = RSAKey.generate_key(2048, private=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.as_pem(private=True))
        log.info("Wrote a new OAuth signing key to %s", path)
        return cls(key)

    def jwks(self) -> dict[str, Any]:
        public = self.key.as_dict(private=False)
        public.update(kid=self.kid, use="sig", alg=ALGORITHM)
        return {"keys": [public]}

    def sign(self, claims: dict[str, Any]) -> str:
        from joserfc import jwt

        return jwt.encode({"alg": ALGORITHM, "kid": self.kid, "typ": "JWT"}, claims, self.key)


def signer(data_dir: str) -> Signer:
    """The signer of the hub whose data directory is ``data_dir``, its key loaded or made on
    first use."""
    path = Path(data_dir) / KEY_FILE
    found = _signers.get(path)
    if found is None:
        found = _signers[path] = Signer.from_file(path)
    return found
