"""What an attacker tries after the issue's findings (issue 12, "go on to whatever else an
attacker would try next"), each run for real: the hub serving on loopback with the built-in
proxy in front and real notebook servers (``courtyard-singleuser``), as real system users
when root.

- A share is of one server, whatever that server or its owner is later called: renaming
  alice's shared server ``x`` and making a new ``x`` must not open the new one to the
  people the old one was shared with (nor may a new user who takes a renamed owner's name
  inherit what was shared of the old owner's servers), and a share cannot reach the owner's
  other servers.
- Alice's named server ``x`` and the user ``alice-x`` do not share an OAuth client: a launch
  of either replaced the other's client and revoked its sign-ins.
- The hub's own port, which every local account can reach, closes a connection whose
  request head does not arrive in time (slowloris), as the built-in proxy does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from traitlets.config import Config

from courtyard.web.protocol import HeadDeadlineProtocol
from tests.singleuser.conftest import (  # noqa: F401 - fixtures
    Stack,
    _made_users,
    follow,
    login,
    make_stack,
    open_dir,
    stack_config,
    su_env,
    uname,
)

MakeStack = Callable[..., Awaitable[Stack]]

# real servers start in seconds, but a busy 2-core CI machine can take much longer
pytestmark = pytest.mark.timeout(400)


def named_servers() -> Config:
    c = Config()
    c.Courtyard.allow_named_servers = True
    return c


async def start_server(stack: Stack, user: str, server: str = "", wait: float = 90
                       ) -> dict[str, Any]:
    """Start ``user``'s server (made first if new) and wait until it is ready."""
    if (await stack.api.get(f"/users/{user}")).status_code == 404:
        assert (await stack.api.post(f"/users/{user}")).status_code == 201
    path = f"/users/{user}/servers/{server}" if server else f"/users/{user}/server"
    r = await stack.api.post(path)
    assert r.status_code == 201, r.text  # the stack's requests wait for the outcome
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        model = (await stack.api.get(f"/users/{user}")).json()
        found = model["servers"].get(server)
        if found and found["ready"]:
            return found  # type: ignore[no-any-return]
        if loop.time() > deadline or (not found and not model["pending"]):
            log = (await stack.api.get(f"{path}/logs")).text
            raise AssertionError(f"{user}/{server} did not become ready: {model}\n{log}")
        await asyncio.sleep(0.1)


async def stop_server(stack: Stack, user: str, server: str) -> None:
    path = f"/users/{user}/servers/{server}" if server else f"/users/{user}/server"
    r = await stack.api.delete(path)
    assert r.status_code == 204, r.text  # the stack's requests wait for the outcome
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while (await stack.api.get(f"/users/{user}")).json()["servers"].get(server, {}).get("url"):
        assert loop.time() < deadline, f"{user}/{server} did not stop"
        await asyncio.sleep(0.1)


async def status_with(stack: Stack, token: str, path: str) -> int:
    """The status a request with ``token`` gets from a server, through the proxy."""
    async with httpx.AsyncClient(base_url=stack.public, trust_env=False, timeout=60) as c:
        r = await c.get(path, headers={"Authorization": f"token {token}"})
    return r.status_code


async def held_scopes(stack: Stack, token: str) -> list[str]:
    async with httpx.AsyncClient(trust_env=False, timeout=60) as c:
        r = await c.get(str(stack.api.base_url).rstrip("/") + "/user",
                        headers={"Authorization": f"token {token}"})
    assert r.status_code == 200, r.text
    return r.json()["scopes"]  # type: ignore[no-any-return]


# -- shares follow their server ---------------------------------------------------------------
async def test_a_share_does_not_pass_to_a_new_server_under_the_old_name(
        make_stack: MakeStack, uname: Callable[[str], str]) -> None:  # noqa: F811
    """Alice shares ``x`` with bob, later renames it ``y`` and makes a new, private ``x``:
    bob must get into ``y`` and not into the new ``x``."""
    stack = await make_stack(named_servers())
    alice, bob = uname("alice"), uname("bob")
    alice_token, bob_token = await stack.token(alice), await stack.token(bob)
    await start_server(stack, alice, "x")
    r = await stack.api.post(f"/shares/{alice}/x", json={"user": bob})
    assert r.status_code == 200, r.text
    assert await status_with(stack, bob_token, f"/user/{alice}/x/api/status") == 200

    await stop_server(stack, alice, "x")
    assert f"access:servers!server={alice}/x" in await held_scopes(stack, bob_token)
    async with httpx.AsyncClient(base_url=str(stack.api.base_url), trust_env=False,
                                 headers={"Authorization": f"token {alice_token}"}) as own:
        r = await own.patch(f"/users/{alice}/servers/x", json={"name": "y"})
        assert r.status_code == 200, r.text
    held = await held_scopes(stack, bob_token)  # at once: no stale permission is served
    assert f"access:servers!server={alice}/y" in held and f"{alice}/x" not in str(held)
    await start_server(stack, alice, "x")  # a new server under the old name
    assert await status_with(stack, bob_token, f"/user/{alice}/x/api/status") == 403
    shared = (await stack.api.get(f"/users/{bob}/shared")).json()["items"]
    assert [(s["server"]["name"], s["scopes"]) for s in shared] == [
        ("y", [f"access:servers!server={alice}/y"])]
    await start_server(stack, alice, "y")  # and the renamed one is still bob's to use
    assert await status_with(stack, bob_token, f"/user/{alice}/y/api/status") == 200


async def test_a_share_does_not_pass_to_a_new_user_of_a_renamed_owners_name(
        make_stack: MakeStack, uname: Callable[[str], str]) -> None:  # noqa: F811
    """An admin renames alice to carol; someone then signs up as alice: what carol shared
    stays carol's, and gives bob nothing of the new alice's."""
    stack = await make_stack(named_servers())
    alice, bob, carol = uname("alice"), uname("bob"), uname("carol")
    bob_token = await stack.token(bob)
    assert (await stack.api.post(f"/users/{alice}")).status_code == 201
    assert (await stack.api.post(f"/users/{alice}/servers/x", json={})).status_code == 201
    await stop_server(stack, alice, "x")
    assert (await stack.api.post(f"/shares/{alice}/x", json={"user": bob})).status_code == 200
    assert f"access:servers!server={alice}/x" in await held_scopes(stack, bob_token)

    r = await stack.api.patch(f"/users/{alice}", json={"name": carol})
    assert r.status_code == 200, r.text
    assert (await stack.api.post(f"/users/{alice}")).status_code == 201  # the new alice
    held = await held_scopes(stack, bob_token)
    assert f"access:servers!server={carol}/x" in held
    assert not [s for s in held if alice in s], held


async def test_a_share_cannot_reach_the_owners_other_servers(
        make_stack: MakeStack, uname: Callable[[str], str]) -> None:  # noqa: F811
    """Sharing the default server with ``access:servers!user=alice`` would open every one
    of alice's servers, the unshared named ones too (JupyterHub refuses such a filter)."""
    c = named_servers()
    c.Courtyard.load_roles = [{"name": "user", "scopes": ["self", "shares!user",
                                                          "read:users:name"]}]
    stack = await make_stack(c)
    alice, bob = uname("alice"), uname("bob")
    alice_token = await stack.token(alice)
    await stack.token(bob)
    await start_server(stack, alice)  # the default server, the one shared below
    async with httpx.AsyncClient(base_url=str(stack.api.base_url), trust_env=False,
                                 headers={"Authorization": f"token {alice_token}"}) as own:
        r = await own.post(f"/shares/{alice}/", json={
            "user": bob, "scopes": [f"access:servers!user={alice}"]})
        assert r.status_code == 400, r.text
        assert r.json()["status"] == 400 and "access:servers!server=" in r.json()["message"]
        # the unfiltered scope is filtered to the one server, as JupyterHub does
        r = await own.post(f"/shares/{alice}/", json={"user": bob, "scopes": ["access:servers"]})
        assert r.status_code == 200, r.text
        assert r.json()["scopes"] == [f"access:servers!server={alice}/"]


# -- OAuth clients ----------------------------------------------------------------------------
async def test_a_named_server_and_a_hyphenated_user_keep_their_own_oauth_clients(
        make_stack: MakeStack, uname: Callable[[str], str],  # noqa: F811
        _made_users: list[str]) -> None:  # noqa: F811
    """``jupyterhub-user-alice-x`` named both alice's server ``x`` and the user ``alice-x``'s
    server: starting the latter replaced alice's client, so alice could no longer sign in
    to her own server (and lost the sign-ins she had)."""
    stack = await make_stack(named_servers())
    alice = uname("alice")
    squatter = f"{alice}-x"
    _made_users.append(squatter)  # its system user goes at the end too
    await start_server(stack, alice, "x")
    browser = stack.browser()
    await login(browser, alice)
    r = await follow(browser, f"/user/{alice}/x/lab")
    assert r.status_code == 200 and str(r.url).endswith(f"/user/{alice}/x/lab"), r.text[:300]

    await start_server(stack, squatter)
    fresh = stack.browser()  # a new sign-in to alice's server, through its OAuth client
    await login(fresh, alice)
    r = await follow(fresh, f"/user/{alice}/x/lab")
    assert r.status_code == 200 and str(r.url).endswith(f"/user/{alice}/x/lab"), r.text[:300]
    # and the sign-in alice already had still works
    r = await browser.get(f"/user/{alice}/x/api/contents")
    assert r.status_code == 200, r.text[:300]


# -- the hub's own port -----------------------------------------------------------------------
async def closed_by_peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         trickle: bytes | None, rounds: int = 100) -> bool:
    """Send ``trickle`` (or nothing) every 0.3 s; True once the hub closes the connection."""
    for _ in range(rounds):
        try:
            data = await asyncio.wait_for(reader.read(1024), 0.3)
        except TimeoutError:
            data = None
        except ConnectionError:
            return True
        if data is not None:
            return data == b"" or data.startswith(b"HTTP/1.1 408")
        if trickle:
            try:
                writer.write(trickle)
                await writer.drain()
            except ConnectionError:
                return True
    return False


async def test_the_hub_port_closes_a_trickled_or_silent_request_head(
        make_stack: MakeStack, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """A local account (a user's kernel, say) reaches the hub's port directly: a connection
    that trickles its request head, or sends nothing, must not stay open for good (a few
    thousand such connections take all of the hub's file descriptors)."""
    monkeypatch.setattr(HeadDeadlineProtocol, "header_timeout", 1.0)  # 20 s in real life
    stack = await make_stack()
    assert stack.hub.hub_bound is not None
    host, port = stack.hub.hub_bound

    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /hub/api/ HTTP/1.1\r\nHost: hub\r\n")
    assert await closed_by_peer(reader, writer, b"X-Trickle: 1\r\n")
    writer.close()

    reader, writer = await asyncio.open_connection(host, port)  # not a byte
    assert await closed_by_peer(reader, writer, None)
    writer.close()

    # a kept-alive connection: the next request head has its own deadline
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /hub/api/ HTTP/1.1\r\nHost: hub\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    assert head.startswith(b"HTTP/1.1 200")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    await asyncio.wait_for(reader.readexactly(length), 30)
    writer.write(b"GET /hub/api/ HTTP/1.1\r\n")
    assert await closed_by_peer(reader, writer, b"X-Trickle: 1\r\n")
    writer.close()

    # while whole requests, slow or not, are answered as before
    async with httpx.AsyncClient(trust_env=False) as client:
        r = await client.get(f"http://{host}:{port}/hub/api/")
    assert r.status_code == 200
