"""The hub as an OAuth 2 and OpenID Connect provider for servers and services.

- :mod:`.provider`: clients, scopes, codes and tokens (the rules; database only)
- :mod:`.routes`: the HTTP endpoints below ``/hub/api/oauth2/`` and discovery
- :mod:`.oidc`: issuer, discovery document, ID tokens
- :mod:`.keys`: the RS256 signing key and its JWKS

See ``docs/oauth.md``.
"""
