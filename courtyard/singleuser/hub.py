"""The single-user server's calls to the hub: who is this token, code exchange, activity.

Uses Tornado's HTTP client, which Jupyter Server already loads, so the server imports no
other HTTP stack. Identity lookups are cached in memory for ``cache_max_age`` seconds,
keyed on the SHA-256 of the token (the token itself is never kept as a key).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import time
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.web import HTTPError

from .env import HubEnv

log = logging.getLogger("courtyard.singleuser")

Model = dict[str, Any]


def token_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class HubClient:
    """Talks to ``JUPYTERHUB_API_URL`` with this server's token or a visitor's."""

    def __init__(self, env: HubEnv, cache_max_age: float | None = None) -> None:
        self.env = env
        self.cache_max_age = env.cache_max_age if cache_max_age is None else cache_max_age
        self._cache: dict[str, tuple[float, Model]] = {}
        self._http: AsyncHTTPClient | None = None

    @property
    def http(self) -> AsyncHTTPClient:
        if self._http is None:
            self._http = AsyncHTTPClient()
        return self._http

    async def _fetch(self, url: str, method: str = "GET", token: str = "",
                     body: str | None = None, content_type: str = "application/json",
                     timeout: float = 20) -> tuple[int, dict[str, str], bytes]:
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"token {token}"
        if body is not None:
            headers["Content-Type"] = content_type
        request = HTTPRequest(url, method=method, headers=headers, body=body,
                              follow_redirects=False, request_timeout=timeout,
                              connect_timeout=min(timeout, 10))
        try:
            response = await self.http.fetch(request, raise_error=False)
        except (OSError, HTTPClientError) as e:
            raise HTTPError(502, f"cannot reach the hub at {url}: {e}") from None
        if response.code == 599:  # Tornado's code for a connection that never got an answer
            raise HTTPError(502, f"cannot reach the hub at {url}: {response.error}")
        return response.code, dict(response.headers), response.body or b""

    # -- identity ----------------------------------------------------------------------------
    async def identify(self, token: str) -> Model | None:
        """The hub's model of a token's owner, with ``scopes``; None for an unknown token.

        A 403 from the hub means "no such token" (expired, revoked); other errors are the
        hub's fault, and surface as 500/502 rather than as a sign-out.
        """
        key = token_key(token)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        status, _, body = await self._fetch(f"{self.env.api_url}/user", token=token)
        if status in (401, 403):
            self._cache.pop(key, None)
            return None
        if status >= 500:
            raise HTTPError(502, f"the hub answered {status} to an identity lookup")
        if status != 200:
            raise HTTPError(500, f"the hub answered {status} to an identity lookup")
        model: Model = json.loads(body)
        if len(self._cache) > 1000:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
        if self.cache_max_age > 0:
            self._cache[key] = (now + self.cache_max_age, model)
        return model

    def forget(self, token: str) -> None:
        self._cache.pop(token_key(token), None)

    # -- OAuth -------------------------------------------------------------------------------
    async def exchange_code(self, code: str, verifier: str) -> Model:
        """Trade an authorization code for an access token (``{"access_token", ...}``)."""
        env = self.env
        body = urlencode({
            "grant_type": "authorization_code", "code": code, "redirect_uri": env.callback_url,
            "client_id": env.client_id, "client_secret": env.api_token,
            "code_verifier": verifier,
        })
        status, _, raw = await self._fetch(env.token_url, "POST", body=body,
                                           content_type="application/x-www-form-urlencoded")
        try:
            reply = json.loads(raw)
        except ValueError:
            reply = {}
        if status != 200 or not isinstance(reply, dict) or "access_token" not in reply:
            reason = reply.get("error_description") or reply.get("error") or f"HTTP {status}" \
                if isinstance(reply, dict) else f"HTTP {status}"
            raise HTTPError(403 if status < 500 else 502, f"the hub refused the sign-in: {reason}")
        return reply

    # -- start-up and activity -----------------------------------------------------------------
    async def hub_version(self, attempts: int = 6) -> str:
        """``X-JupyterHub-Version`` of ``GET {api_url}/``, retried with back-off; raises when
        the hub stays unreachable."""
        delay = 0.25
        for attempt in range(1, attempts + 1):
            try:
                status, headers, _ = await self._fetch(f"{self.env.api_url}/", timeout=5)
            except HTTPError as e:
                if attempt == attempts:
                    raise
                log.warning("Hub not reachable yet (attempt %d/%d): %s", attempt, attempts,
                            e.log_message)
            else:
                if status < 500:
                    return headers.get("X-Jupyterhub-Version", headers.get(
                        "X-JupyterHub-Version", ""))
                if attempt == attempts:
                    raise HTTPError(502, f"the hub answered {status}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 8)
        raise AssertionError("unreachable")  # pragma: no cover

    async def post_activity(self, when: datetime, retry_for: float = 60) -> bool:
        """``POST JUPYTERHUB_ACTIVITY_URL``, retried with back-off for up to ``retry_for`` s."""
        env = self.env
        stamp = when.isoformat().replace("+00:00", "Z")
        if not stamp.endswith("Z"):
            stamp += "Z"
        body = json.dumps({"servers": {env.server_name: {"last_activity": stamp}},
                           "last_activity": stamp})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + retry_for
        delay = 1.0
        while True:
            try:
                status, _, raw = await self._fetch(env.activity_url, "POST", token=env.api_token,
                                                   body=body)
            except HTTPError as e:
                status, raw = 0, str(e.log_message).encode()
            if status < 300 and status:
                return True
            if status and status < 500:
                log.error("The hub refused activity of %s: %d %s", env.user, status,
                          raw[:200].decode(errors="replace"))
                return False
            if loop.time() + delay > deadline:
                log.error("Could not report activity to the hub: %s", raw[:200])
                return False
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, 15)
