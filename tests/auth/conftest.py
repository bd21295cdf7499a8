"""Fixtures for the authentication tests: in-process hubs, a browser-like client, and the
real back ends (slapd, an OIDC provider, PAM users) started on loopback.

A back end may be skipped only when its tool cannot exist here and ``CI`` is unset; under
CI a missing slapd, node or root fails the test.
"""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from traitlets.config import Config

from courtyard.app import Hub

from .backends import idp, pam_users, slapd  # noqa: F401 - fixtures

HERE = Path(__file__).parent
BASE = "http://127.0.0.1:8081"
XSRF_RE = re.compile(r'name="_xsrf" value="([^"]+)"')


def make_config(tmp_path: Path, db_url: str, options: dict[str, Any]) -> Config:
    config = Config()
    config.Courtyard.db_url = db_url
    config.Courtyard.data_files_path = str(tmp_path)
    config.Courtyard.authenticator_class = "dummy"
    for key, value in options.items():
        section, _, name = key.rpartition(".")
        config[section or "Courtyard"][name] = value
    return config


@pytest.fixture
def make_hub(tmp_path: Path, db_url: str) -> Iterator[Callable[..., Hub]]:
    """``make_hub({"Authenticator.allowed_users": {...}, ...})``: an initialized hub; all the
    hubs of a test share its database (``db_url``), as restarts of one hub would."""
    hubs: list[Hub] = []

    def make(options: dict[str, Any] | None = None) -> Hub:
        hub = Hub(make_config(tmp_path, db_url, options or {}))
        hub.initialize()
        hubs.append(hub)
        return hub

    yield make
    for hub in hubs:
        hub.session.kw["bind"].dispose()


def client_for(hub: Hub, base_url: str = BASE) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=hub.asgi), base_url=base_url)


@pytest.fixture
async def browser(make_hub: Callable[..., Hub]) -> AsyncIterator[Callable[..., Any]]:
    """``await browser(options)`` -> (hub, client); clients are closed after the test."""
    clients: list[httpx.AsyncClient] = []

    async def open_(options: dict[str, Any] | None = None, base_url: str = BASE
                    ) -> tuple[Hub, httpx.AsyncClient]:
        hub = make_hub(options)
        client = client_for(hub, base_url)
        clients.append(client)
        return hub, client

    yield open_
    for client in clients:
        await client.aclose()


def xsrf_of(response: httpx.Response) -> str:
    match = XSRF_RE.search(response.text)
    assert match, f"no _xsrf field in {response.url}: {response.text[:300]}"
    return match.group(1)


async def login(client: httpx.AsyncClient, username: str, password: str = "",
                next_url: str | None = None, **extra: str) -> httpx.Response:
    """Sign in through the real form: GET the page (cookies + XSRF), POST it back."""
    params = {"next": next_url} if next_url is not None else {}
    page = await client.get("/hub/login", params=params)
    assert page.status_code == 200, page.text
    form = {"_xsrf": xsrf_of(page), "username": username, "password": password, **extra}
    if next_url is not None:
        form["next"] = next_url
    return await client.post("/hub/login", data=form)


def xsrf_cookie(client: httpx.AsyncClient) -> str:
    return client.cookies.get("_xsrf", path="/hub/") or ""


async def idp_sign_in(client: httpx.AsyncClient, login_name: str,
                      start: str = "/hub/oauth_login", next_url: str | None = None
                      ) -> httpx.Response:
    """Sign in through a real OIDC provider: the hub's redirect, the provider's login and
    consent forms (a separate real HTTP client), then the hub's callback."""
    from urllib.parse import urljoin

    params = {"next": next_url} if next_url else {}
    first = await client.get(start, params=params)
    assert first.status_code == 302, first.text
    url, method, data = first.headers["location"], "GET", None
    async with httpx.AsyncClient() as idp_client:
        for _ in range(20):
            response = await idp_client.request(method, url, data=data)
            if response.is_redirect:
                url = urljoin(str(response.url), response.headers["location"])
                method, data = "GET", None
                if url.startswith(BASE):
                    break
                continue
            action = re.search(r'<form[^>]*action="([^"]+)"[^>]*method="post"', response.text)
            assert action, response.text[:2000]
            data = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"',
                                   response.text))
            if 'name="login"' in response.text:
                data.update(login=login_name, password="anything")
            method, url = "POST", html.unescape(action.group(1))
        else:
            raise AssertionError("the provider never sent the browser back to the hub")
    return await client.get(url[len(BASE):])
