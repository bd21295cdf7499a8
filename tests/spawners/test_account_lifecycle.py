"""System accounts outlive hub users; servers outlive hubs (follow-ups to finding 1 of issue 12).

As root, with real system users and real processes:

- a deleted (by the API, or at start by ``delete_invalid_users``) or renamed hub user's
  account leaves ``courtyard-users``, so the next hub user of that name is refused (with
  the admin's remedies) instead of getting the old account and its files; nothing is
  deleted, and accounts Courtyard did not make are not touched;
- a server a previous hub left running as root, or as an account refused since, is stopped
  at the next hub start, its route removed and its credentials revoked.
"""

from __future__ import annotations

import asyncio
import grp
import logging
import os
import pwd
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from traitlets.config import Config

from courtyard.app import Hub
from courtyard.spawners import accounts
from courtyard.spawners.local import LocalProcessSpawner, process_status
from tests.conftest import ADMIN_TOKEN, client_for, free_port
from tests.spawners.conftest import alive, server_get, server_row, serving, uids_run, wait_until
from tests.spawners.test_uid_policy import need_root, refused

GROUP = "courtyard-users"


def members(group: str = GROUP) -> list[str]:
    try:
        return list(grp.getgrnam(group).gr_mem)
    except KeyError:
        return []


def stored(hub: Hub, name: str) -> bool:
    """Whether the hub's database holds a user called ``name``."""
    from courtyard.db import queries

    with hub.session() as db:
        return queries.get_user(db, name) is not None


def runs_as(uid: int) -> bool:
    """Whether any process runs as ``uid`` right now."""
    return subprocess.run(["pgrep", "-u", str(uid)], capture_output=True).returncode == 0


@pytest.mark.parametrize("template", ["{username}", "jupyter-{username}"])
async def test_deleted_users_account_is_not_the_next_users(policy_hub, witness, uname,
                                                           _made_names, template, caplog):
    need_root()
    alice = uname("alice")
    account = accounts.system_name(template, alice)
    _made_names.append(account)
    hub = policy_hub(system_username_template=template)
    async with client_for(hub, ADMIN_TOKEN) as api:
        await api.post(f"/users/{alice}")
        assert (await api.post(f"/users/{alice}/servers/lab")).status_code == 201
        old = pwd.getpwnam(account)
        assert account in members()
        # removing a named server leaves the account: the user's other servers use it
        r = await api.request("DELETE", f"/users/{alice}/servers/lab", json={"remove": True})
        assert r.status_code == 204
        assert account in members()
        assert (await api.post(f"/users/{alice}/server")).status_code == 201
        pid = server_row(hub, alice)["state"]["pid"]
        with caplog.at_level(logging.WARNING, logger="courtyard.spawner"):
            assert (await api.delete(f"/users/{alice}")).status_code == 204
        assert not alive(pid)  # stopped before the account was let go
        assert account not in members()
        assert f"The hub user {alice} was deleted: its system account {account} leaves" \
            in caplog.text
        assert pwd.getpwnam(account).pw_uid == old.pw_uid and Path(old.pw_dir).is_dir()

        # whoever is called alice next (signed up, created, from OAuth...) is refused
        assert (await api.post(f"/users/{alice}")).status_code == 201
        message = await refused(api, hub, alice)
        assert f"userdel -r {account}" in message
        assert f"usermod -aG {GROUP} {account}" in message
        assert not runs_as(old.pw_uid)

        # the admin's remedy: hand the account (and its files) over
        subprocess.run(["usermod", "-aG", GROUP, account], check=True)
        assert (await api.post(f"/users/{alice}/server")).status_code == 201
        assert (await api.delete(f"/users/{alice}/server")).status_code == 204
    assert uids_run(witness) == [old.pw_uid] * 3


async def test_users_deleted_at_start_release_their_account(policy_hub, witness, uname, caplog):
    """``delete_invalid_users`` deletes a user as the hub starts with the release DELETE
    /users/{name} gives: their account leaves the group, so whoever is called that next (the
    name valid again) is refused it instead of getting its files."""
    need_root()
    alice = uname("alice")
    first = policy_hub()
    async with client_for(first, ADMIN_TOKEN) as api:
        await api.post(f"/users/{alice}")
        assert (await api.post(f"/users/{alice}/server")).status_code == 201
        assert (await api.delete(f"/users/{alice}/server")).status_code == 204
    old = pwd.getpwnam(alice)
    assert alice in members()

    c = Config()  # the operator narrows the names: alice's no longer passes
    c.Authenticator.username_pattern = f"(?!{alice}$)[a-z0-9]+"
    c.Authenticator.delete_invalid_users = True
    with caplog.at_level(logging.WARNING):
        second = policy_hub(c)
    assert not stored(second, alice)
    assert alice not in members()
    assert f"The hub user {alice} was deleted: its system account {alice} leaves" in caplog.text

    third = policy_hub()  # the pattern is lifted again: a new alice gets no old account
    async with client_for(third, ADMIN_TOKEN) as api:
        assert (await api.post(f"/users/{alice}")).status_code == 201
        assert f"userdel -r {alice}" in await refused(api, third, alice)
    assert pwd.getpwnam(alice).pw_uid == old.pw_uid and Path(old.pw_dir).is_dir()
    assert uids_run(witness) == [old.pw_uid]


async def test_rename_releases_the_old_names_account(policy_hub, witness, uname):
    """The old name's account is let go; an account the admin made (allowed by name) is
    left as it is when its hub user is renamed and deleted."""
    need_root()
    alice, renamed, own = uname("alice"), uname("renamed"), uname("own")
    subprocess.run(["useradd", "--create-home", own], check=True, capture_output=True)
    mine = pwd.getpwnam(own)
    groups = os.getgrouplist(own, mine.pw_gid)
    hub = policy_hub(allowed_system_users={own})
    async with client_for(hub, ADMIN_TOKEN) as api:
        await api.post("/users", json={"usernames": [alice, own]})
        for name in (alice, own):
            assert (await api.post(f"/users/{name}/server")).status_code == 201
            assert (await api.delete(f"/users/{name}/server")).status_code == 204
        first = pwd.getpwnam(alice).pw_uid
        r = await api.patch(f"/users/{alice}", json={"name": renamed})
        assert r.status_code == 200 and r.json()["name"] == renamed
        assert alice not in members()
        # the renamed user works on, as the new name's account
        assert (await api.post(f"/users/{renamed}/server")).status_code == 201
        assert (await api.delete(f"/users/{renamed}/server")).status_code == 204
        second = pwd.getpwnam(renamed).pw_uid
        assert second != first and renamed in members()
        # and the old name does not come with the old account
        assert (await api.post(f"/users/{alice}")).status_code == 201
        assert f"userdel -r {alice}" in await refused(api, hub, alice)

        assert (await api.patch(f"/users/{own}", json={"name": f"{own}x"})).status_code == 200
        assert (await api.delete(f"/users/{own}x")).status_code == 204
    assert pwd.getpwnam(own) == mine and os.getgrouplist(own, mine.pw_gid) == groups
    assert uids_run(witness) == [first, mine.pw_uid, second]


async def _root_server(mocksu_cmd: list[str], prefix: str) -> tuple[subprocess.Popen[bytes], str]:
    """A server as an earlier version would have left it: running as root."""
    port = free_port()
    proc = subprocess.Popen(mocksu_cmd, start_new_session=True, stdout=subprocess.DEVNULL,
                            env={**os.environ,
                                 "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}{prefix}"})
    url = f"http://127.0.0.1:{port}"

    async def answers() -> bool:
        try:
            async with httpx.AsyncClient(trust_env=False) as client:
                return (await client.get(f"{url}{prefix}api")).status_code == 200
        except httpx.HTTPError:
            return False

    await wait_until(answers, what="the root server to answer")
    return proc, url


async def test_adopted_servers_are_held_to_the_policy(policy_hub: Callable[..., Hub], uname,
                                                      mocksu_cmd, caplog):
    """At hub start a server running as root, or as an account refused since, is stopped,
    its route removed and its credentials revoked; one as its own account is kept."""
    need_root()
    alice, bob, carol = uname("alice"), uname("bob"), uname("carol")
    first = policy_hub()
    async with serving(first) as api:
        for name in (alice, bob, carol):
            await api.post(f"/users/{name}")
            assert (await api.post(f"/users/{name}/server")).status_code == 201
        tokens = {n: (await server_get(first, n, "", "env"))["JUPYTERHUB_API_TOKEN"]
                  for n in (alice, bob, carol)}
    first.lifecycle._slots.clear()  # the first hub is gone; its servers run on
    pids = {n: server_row(first, n)["state"]["pid"] for n in (alice, bob, carol)}
    # alice's server as an earlier version ran it: as root
    os.killpg(pids[alice], signal.SIGKILL)
    root, url = await _root_server(mocksu_cmd, first.server_routespec(alice, ""))
    with first.session() as db:
        from courtyard.db import queries

        row = queries.get_user(db, alice).servers[0]  # type: ignore[union-attr]
        status = process_status(root.pid)
        assert status is not None
        row.url = url
        row.state = {"pid": root.pid, "pgid": root.pid, "starttime": status[1]}
        db.commit()
    # bob's account is refused since (no longer Courtyard's for a current user)
    subprocess.run(["gpasswd", "-d", bob, GROUP], check=True, capture_output=True)
    bob_uid = pwd.getpwnam(bob).pw_uid
    try:
        second = policy_hub()
        with caplog.at_level(logging.WARNING):
            async with serving(second) as api:
                await asyncio.wait_for(second.lifecycle.recovered.wait(), 30)
                assert root.wait(10) is not None
                assert not alive(pids[bob]) and alive(pids[carol])
                users = {u["name"]: u for u in (await api.get("/users")).json()}
                assert users[alice]["server"] is None and users[bob]["server"] is None
                assert users[carol]["server"] == f"/user/{carol}/"
                assert server_row(second, alice)["state"] == {}
                routes = (await api.get("/proxy")).json()
                assert f"/user/{carol}/" in routes
                assert f"/user/{alice}/" not in routes and f"/user/{bob}/" not in routes
                for name, code in ((alice, 403), (bob, 403), (carol, 200)):
                    async with client_for(second, tokens[name]) as server_api:
                        assert (await server_api.get("/user")).status_code == code
    finally:
        if root.poll() is None:
            root.kill()
    assert f"Stopping server {alice} (pid {root.pid}) found running at hub start as system " \
        "user root (uid 0)" in caplog.text
    assert f"as system user {bob} (uid {bob_uid})" in caplog.text


class RecordingSpawner(LocalProcessSpawner):
    """Records its delete_forever and user_renamed calls (the hooks of other spawners)."""

    calls: ClassVar[list[tuple[str, ...]]] = []

    async def delete_forever(self) -> None:
        self.calls.append(("delete_forever", self.user.name, self.name))
        await super().delete_forever()

    async def user_renamed(self, old_name: str) -> None:
        self.calls.append(("user_renamed", old_name, self.user.name, self.name))
        await super().user_renamed(old_name)


async def test_the_hooks_are_called_as_in_jupyterhub(spawn_hub, uname):
    """delete_forever for a removed named server (at once, or once a slow stop ends) and for
    every server of a deleted user, the default one last; user_renamed once per rename."""
    c = Config()
    c.Courtyard.spawner_class = RecordingSpawner
    c.Courtyard.slow_spawn_timeout = 0.5
    hub = spawn_hub(c)
    alice, renamed = uname("alice"), uname("renamed")
    calls = RecordingSpawner.calls
    calls.clear()
    async with client_for(hub, ADMIN_TOKEN) as api:
        await api.post(f"/users/{alice}")
        for name in ("a", "b", "c"):
            assert (await api.put(f"/users/{alice}/servers/{name}")).status_code == 201
        r = await api.request("DELETE", f"/users/{alice}/servers/a", json={"remove": True})
        assert r.status_code == 204
        assert calls == [("delete_forever", alice, "a")]
        # a stop slower than slow_spawn_timeout: 202, and the hook runs once it has stopped
        r = await api.post(f"/users/{alice}/servers/b", json={"mode": "ignore-term"})
        assert r.status_code == 201
        r = await api.request("DELETE", f"/users/{alice}/servers/b", json={"remove": True})
        assert r.status_code == 202
        await wait_until(lambda: len(calls) == 2, what="the removal after the stop")
        assert calls[1] == ("delete_forever", alice, "b")
        await wait_until(lambda: server_row(hub, alice, "b") is None, what="b's record to go")

        assert (await api.patch(f"/users/{alice}", json={"name": renamed})).status_code == 200
        assert calls[2] == ("user_renamed", alice, renamed, "")
        assert (await api.delete(f"/users/{renamed}")).status_code == 204
    assert calls[3:] == [("delete_forever", renamed, "c"), ("delete_forever", renamed, "")]


class RefusingSpawner(LocalProcessSpawner):
    """Its ``delete_forever`` fails, as releasing an account can (a locked /etc/group)."""

    async def delete_forever(self) -> None:
        raise OSError("cannot lock /etc/group")


async def test_users_deleted_at_start_get_the_hooks_api_deletion_calls(spawn_hub, uname,
                                                                       caplog):
    """As DELETE /users/{name}: ``delete_forever`` of each server, the default one last,
    then a JupyterHub plugin's ``delete_user``; should a hook fail, the user is kept (to be
    tried at the next start) and the log says why."""
    from jupyterhub.auth import Authenticator as JupyterHubAuthenticator

    alice, bob = uname("alice"), uname("bob")
    gone: set[str] = set()
    told: list[str] = []

    class Directory(JupyterHubAuthenticator):
        def add_user(self, user: Any) -> None:
            if user.name in gone:
                raise KeyError(f"{user.name} left the directory")
            super().add_user(user)

        def delete_user(self, user: Any) -> None:
            told.append(user.name)
            super().delete_user(user)

    c = Config()
    c.Courtyard.spawner_class = RecordingSpawner
    c.Courtyard.authenticator_class = Directory
    c.Authenticator.allow_all = True
    c.Authenticator.delete_invalid_users = True
    hub = spawn_hub(c)
    async with client_for(hub, ADMIN_TOKEN) as api:
        await api.post("/users", json={"usernames": [alice, bob]})
        assert (await api.post(f"/users/{alice}/servers/lab")).status_code == 201
        assert (await api.delete(f"/users/{alice}/servers/lab")).status_code == 204
    calls = RecordingSpawner.calls
    calls.clear()
    gone.update({alice, bob})

    c.Courtyard.spawner_class = RefusingSpawner
    with caplog.at_level(logging.ERROR):
        hub = spawn_hub(c)
    assert stored(hub, alice) and stored(hub, bob) and told == []
    for name in (alice, bob):
        assert f"User {name} is kept, not deleted: releasing what is theirs failed (OSError: " \
            "cannot lock /etc/group); the hub tries again at its next start" in caplog.text

    c.Courtyard.spawner_class = RecordingSpawner
    hub = spawn_hub(c)
    assert calls == [("delete_forever", alice, "lab"), ("delete_forever", alice, ""),
                     ("delete_forever", bob, "")]
    assert told == [alice, bob]
    assert not stored(hub, alice) and not stored(hub, bob)
