"""Presets of :mod:`courtyard.auth.oauth` for GitHub, GitLab, Google and Azure AD (Microsoft
Entra ID): endpoints, claims and the allow lists their oauthenticator classes offer.

Only the generic OIDC path can be tested against a real provider here; these presets set the
documented endpoints and claims and reuse that tested code.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
from traitlets import Set, Unicode, default

from .oauth import Endpoints, OAuthenticator, OAuthError


class GitHubOAuthenticator(OAuthenticator):
    """GitHub (or GitHub Enterprise via ``github_url``). Username: the login. Groups: the
    user's organizations and ``org:team`` names (needs the ``read:org`` scope)."""

    login_service = Unicode("GitHub", help="Name on the 'Sign in with ...' button.").tag(
        config=True
    )
    github_url = Unicode("https://github.com", help="GitHub (Enterprise) URL.").tag(config=True)
    allowed_organizations = Set(help="Organizations (or org:team) whose members may sign in."
                                ).tag(config=True)

    @property
    def api_url(self) -> str:
        url = self.github_url.rstrip("/")
        return "https://api.github.com" if url == "https://github.com" else f"{url}/api/v3"

    @default("authorize_url")
    def _authorize(self) -> str:
        return f"{self.github_url.rstrip('/')}/login/oauth/authorize"

    @default("token_url")
    def _token(self) -> str:
        return f"{self.github_url.rstrip('/')}/login/oauth/access_token"

    @default("userdata_url")
    def _userdata(self) -> str:
        return f"{self.api_url}/user"

    @default("username_claim")
    def _username_claim(self) -> str:
        return "login"

    @default("claim_groups_key")
    def _groups_key(self) -> str:
        return "courtyard_groups"

    @default("basic_auth")
    def _basic(self) -> bool:
        return False

    @default("scope")
    def _scope(self) -> list[str]:
        return ["read:user", "read:org"] if self.allowed_organizations or self.manage_groups \
            else ["read:user"]

    @default("allowed_groups")
    def _allowed_groups(self) -> set[str]:
        return set(self.allowed_organizations)

    async def user_claims(self, token: dict[str, Any], nonce: str | None = None,
                          refreshing: bool = False) -> dict[str, Any]:
        claims = await super().user_claims(token, nonce, refreshing)
        if self.allowed_groups or self.admin_groups or self.manage_groups:
            headers = {"Authorization": f"Bearer {token['access_token']}"}
            async with self._http() as client:
                try:
                    orgs = (await client.get(f"{self.api_url}/user/orgs", headers=headers,
                                             params={"per_page": 100})).json()
                    teams = (await client.get(f"{self.api_url}/user/teams", headers=headers,
                                              params={"per_page": 100})).json()
                except (httpx.HTTPError, ValueError) as e:
                    raise OAuthError(f"reading your GitHub organizations failed: {e}") from None
            groups = [o["login"] for o in orgs if isinstance(o, dict)]
            groups += [f"{t['organization']['login']}:{t['slug']}" for t in teams
                       if isinstance(t, dict) and "organization" in t]
            claims["courtyard_groups"] = groups
        return claims


class GitLabOAuthenticator(OAuthenticator):
    """GitLab (gitlab.com or ``gitlab_url``) through its OpenID Connect interface.
    Username: ``preferred_username`` (the GitLab username). Groups: the ``groups`` claim
    (full group paths)."""

    login_service = Unicode("GitLab", help="Name on the 'Sign in with ...' button.").tag(
        config=True
    )
    gitlab_url = Unicode(help="GitLab URL ($GITLAB_URL, default https://gitlab.com).").tag(
        config=True
    )
    allowed_gitlab_groups = Set(help="GitLab group paths whose members may sign in.").tag(
        config=True
    )

    @default("gitlab_url")
    def _gitlab_url(self) -> str:
        return os.environ.get("GITLAB_URL", "https://gitlab.com")

    @default("oidc_issuer")
    def _issuer(self) -> str:
        return self.gitlab_url.rstrip("/")

    @default("scope")
    def _scope(self) -> list[str]:
        return ["openid", "profile", "email"]

    @default("username_claim")
    def _username_claim(self) -> str:
        return "preferred_username"

    @default("claim_groups_key")
    def _groups_key(self) -> str:
        return "groups"

    @default("allowed_groups")
    def _allowed_groups(self) -> set[str]:
        return set(self.allowed_gitlab_groups)


class GoogleOAuthenticator(OAuthenticator):
    """Google accounts through OpenID Connect. Username: the e-mail address, or its local
    part when exactly one ``hosted_domain`` is set (only that domain can then sign in)."""

    login_service = Unicode("Google", help="Name on the 'Sign in with ...' button.").tag(
        config=True
    )
    hosted_domain = Set(help="Google Workspace domains whose users may sign in.").tag(
        config=True
    )

    @default("oidc_issuer")
    def _issuer(self) -> str:
        return "https://accounts.google.com"

    @default("scope")
    def _scope(self) -> list[str]:
        return ["openid", "email", "profile"]

    @default("username_claim")
    def _username_claim(self) -> str:
        return "email"

    @default("extra_authorize_params")
    def _extra(self) -> dict[str, str]:
        return {"hd": next(iter(self.hosted_domain))} if len(self.hosted_domain) == 1 else {}

    def build_model(self, claims: dict[str, Any], token: dict[str, Any],
                    previous: dict[str, Any] | None = None) -> dict[str, Any]:
        if not claims.get("email_verified", False):
            raise OAuthError("your Google e-mail address is not verified")
        if self.hosted_domain:
            domain = claims.get("hd") or str(claims.get("email", "")).rpartition("@")[2]
            if domain not in self.hosted_domain:
                raise OAuthError(f"accounts of {domain} may not sign in here")
            if len(self.hosted_domain) == 1:
                claims = {**claims, "email": str(claims["email"]).rpartition("@")[0]}
        return super().build_model(claims, token, previous)


class AzureAdOAuthenticator(OAuthenticator):
    """Azure AD / Microsoft Entra ID (v2.0 endpoints) for ``tenant_id``. Username:
    ``preferred_username``. Groups: the ``groups`` claim (object ids, when the app
    registration emits them)."""

    login_service = Unicode("Azure AD", help="Name on the 'Sign in with ...' button.").tag(
        config=True
    )
    tenant_id = Unicode(help="Directory (tenant) id ($AAD_TENANT_ID), or 'organizations' / "
                        "'common' for several tenants.").tag(config=True)

    @default("tenant_id")
    def _tenant(self) -> str:
        return os.environ.get("AAD_TENANT_ID", "common")

    @default("oidc_issuer")
    def _issuer(self) -> str:
        return f"https://login.microsoftonline.com/{self.tenant_id}/v2.0"

    @default("scope")
    def _scope(self) -> list[str]:
        return ["openid", "profile", "email", "offline_access"]

    @default("username_claim")
    def _username_claim(self) -> str:
        return "preferred_username"

    @default("claim_groups_key")
    def _groups_key(self) -> str:
        return "groups"

    def expected_issuer(self, ep: Endpoints, claims: dict[str, Any]) -> str:
        # multi-tenant discovery documents say {tenantid}; tokens name the real tenant
        return ep.issuer.replace("{tenantid}", str(claims.get("tid", "")))
