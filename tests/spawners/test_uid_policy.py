"""Which account a server runs as (finding 1 of issue 12), its home's mode and environment.

As root, with real system users and real spawns: a hub user named after a system account
(``root``, ``daemon``, ``bin``, ``nobody``, an account below UID_MIN) or after an account
Courtyard did not create never gets a server running as it, however the name arrived
(sign-up, ``POST /users``, ``POST /users/{name}``, a rename). Every server command here is a
*witness*: before it becomes mocksu it appends its uid to a file, so "no process ever ran"
is checked, not inferred from an error message.
"""

from __future__ import annotations

import logging
import os
import pwd
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from traitlets.config import Config

from courtyard.app import Hub
from courtyard.spawners import accounts
from courtyard.spawners.base import only_system_accounts
from tests.conftest import ADMIN_TOKEN, client_for, tool_missing
from tests.spawners.conftest import ROOT, server_row, serving, uids_run

UID_MIN, UID_MAX = accounts.uid_range(accounts.login_defs())
GROUP = "courtyard-users"


def need_root() -> None:
    if not ROOT:
        tool_missing("switching users needs root (CI runs the tests as root)")


@pytest.fixture
def system_account(_made_names: list[str]) -> Callable[..., pwd.struct_passwd]:
    """``system_account(label, *useradd_args)``: a real account made by the admin (not by
    Courtyard), deleted at the end of the session."""
    import secrets

    def make(label: str, *args: str) -> pwd.struct_passwd:
        name = f"cy{secrets.token_hex(3)}{label}"[:30]
        _made_names.append(name)
        subprocess.run(["useradd", *args, name], check=True, capture_output=True)
        return pwd.getpwnam(name)
    return make


async def refused(api: httpx.AsyncClient, hub: Hub, name: str) -> str:
    """Start ``name``'s server and return the error the user gets; nothing may run."""
    r = await api.post(f"/users/{name}/server")
    assert r.status_code == 500, r.text
    body = r.json()
    assert body["status"] == 500 and body["message"].startswith("Spawn failed: refused: ")
    row = server_row(hub, name)
    assert row is not None and row["url"] is None and "pid" not in row["state"]
    return str(body["message"])


# -- finding 1: system accounts ------------------------------------------------------------------
@pytest.mark.parametrize("name", ["root", "daemon", "bin", "nobody"])
async def test_system_account_names_get_no_server(policy_hub, witness, name, caplog):
    """Created through POST /users/{name}, the way an admin approves anyone."""
    need_root()
    hub = policy_hub()
    async with client_for(hub, ADMIN_TOKEN) as api:
        assert (await api.post(f"/users/{name}")).status_code == 201
        with caplog.at_level(logging.WARNING, logger="courtyard.spawner"):
            message = await refused(api, hub, name)
    pw = pwd.getpwnam(name)
    expected = "no server ever runs as root" if pw.pw_uid == 0 else "is not a user account"
    assert expected in message
    assert f"Refused to start the server of {name} as system user {name}" in caplog.text
    assert uids_run(witness) == []
    assert not (Path(hub.options.data_files_path) / "logs" / name).exists()


async def test_names_from_bulk_create_rename_and_sign_up(policy_hub, witness, uname,
                                                         system_account):
    """POST /users, a rename (PATCH), and the native sign-up page an admin approves."""
    need_root()
    below = system_account("sys", "--system")  # uid below UID_MIN, made by useradd --system
    assert below.pw_uid < UID_MIN
    config = Config()
    config.Courtyard.authenticator_class = "native"
    config.NativeAuthenticator.enable_signup = True
    hub = policy_hub(config)
    async with client_for(hub, ADMIN_TOKEN) as api:
        r = await api.post("/users", json={"usernames": ["bin", below.pw_name]})
        assert r.status_code == 201
        assert "is not a user account" in await refused(api, hub, "bin")
        assert "is not a user account" in await refused(api, hub, below.pw_name)

        innocent = uname("x")
        assert (await api.post(f"/users/{innocent}")).status_code == 201
        assert (await api.patch(f"/users/{innocent}", json={"name": "daemon"})).status_code == 200
        assert "is not a user account" in await refused(api, hub, "daemon")

    pages = httpx.AsyncClient(transport=httpx.ASGITransport(app=hub.asgi),
                              base_url="http://127.0.0.1:8081")
    async with pages:
        form = await pages.get("/hub/signup")
        xsrf = form.text.split('name="_xsrf" value="', 1)[1].split('"', 1)[0]
        r = await pages.post("/hub/signup", data={"_xsrf": xsrf, "username": "root",
                                                  "password": "root-password-1",
                                                  "password_confirm": "root-password-1"})
        assert r.status_code == 200, r.text
    async with client_for(hub, ADMIN_TOKEN) as api:
        assert (await api.post("/users/root/approve")).status_code == 200
        assert "no server ever runs as root" in await refused(api, hub, "root")
    assert uids_run(witness) == []


async def test_existing_accounts_need_courtyard_or_the_admin(policy_hub, witness,
                                                             system_account):
    """An ordinary account (uid in range) that an admin made, not Courtyard: refused, until
    the admin hands it over (the group) or allows it (by name, or all existing ones)."""
    need_root()
    other = system_account("usr", "--create-home")
    assert UID_MIN <= other.pw_uid <= UID_MAX
    name = other.pw_name
    hub = policy_hub()
    async with client_for(hub, ADMIN_TOKEN) as api:
        await api.post(f"/users/{name}")
        assert "was not created by Courtyard" in await refused(api, hub, name)
    assert uids_run(witness) == []

    for options in ({"allowed_system_users": {name}}, {"allow_existing_system_users": True}):
        hub = policy_hub(**options)
        async with client_for(hub, ADMIN_TOKEN) as api:
            assert (await api.post(f"/users/{name}/server")).status_code == 201
            assert (await api.delete(f"/users/{name}/server")).status_code == 204
    assert uids_run(witness) == [other.pw_uid, other.pw_uid]

    subprocess.run(["groupadd", "--system", "-f", GROUP], check=True)
    subprocess.run(["usermod", "-aG", GROUP, name], check=True)  # handed over to Courtyard
    hub = policy_hub()
    async with client_for(hub, ADMIN_TOKEN) as api:
        assert (await api.post(f"/users/{name}/server")).status_code == 201
        assert (await api.delete(f"/users/{name}/server")).status_code == 204
    assert uids_run(witness) == [other.pw_uid] * 3


async def test_system_users_group_marks_the_accounts_courtyard_made(policy_hub, witness,
                                                                     uname):
    need_root()
    import grp
    import secrets

    group = f"cyteam{secrets.token_hex(3)}"
    alice = uname("alice")
    try:
        hub = policy_hub(system_users_group=group)
        async with client_for(hub, ADMIN_TOKEN) as api:
            await api.post(f"/users/{alice}")
            assert (await api.post(f"/users/{alice}/server")).status_code == 201
            assert (await api.delete(f"/users/{alice}/server")).status_code == 204
        uid = pwd.getpwnam(alice).pw_uid
        assert alice in grp.getgrnam(group).gr_mem  # made by the hub, in its group
        # a hub that marks its accounts with another group does not take this one
        hub = policy_hub(system_users_group=f"{group}x")
        async with client_for(hub, ADMIN_TOKEN) as api:
            assert "was not created by Courtyard" in await refused(api, hub, alice)
    finally:
        subprocess.run(["pkill", "-KILL", "-u", alice], capture_output=True)
        subprocess.run(["userdel", "--remove", alice], capture_output=True)
        for name in (group, f"{group}x"):
            subprocess.run(["groupdel", name], capture_output=True)
    assert uids_run(witness) == [uid]  # the one start that was allowed


async def test_allowed_by_name_runs_a_system_account_but_never_root(policy_hub, witness,
                                                                    system_account):
    need_root()
    below = system_account("svc", "--system")
    hub = policy_hub(allowed_system_users={below.pw_name, "root"})
    async with client_for(hub, ADMIN_TOKEN) as api:
        await api.post("/users", json={"usernames": [below.pw_name, "root"]})
        assert "no server ever runs as root" in await refused(api, hub, "root")
        assert (await api.post(f"/users/{below.pw_name}/server")).status_code == 201
        pid = server_row(hub, below.pw_name)["state"]["pid"]
        status = Path(f"/proc/{pid}/status").read_text()
        assert f"Uid:\t{below.pw_uid}\t" in status
        assert (await api.delete(f"/users/{below.pw_name}/server")).status_code == 204
    assert uids_run(witness) == [below.pw_uid]


async def test_pam_sites_run_their_users_accounts_not_system_ones(policy_hub, witness,
                                                                  system_account):
    """With PAM (users are the machine's accounts) existing accounts in range are allowed by
    default; daemon still is not."""
    need_root()
    pytest.importorskip("pamela")
    mine = system_account("pam", "--create-home")
    config = Config()
    config.Courtyard.authenticator_class = "pam"
    hub = policy_hub(config)
    async with client_for(hub, ADMIN_TOKEN) as api:
        await api.post("/users", json={"usernames": [mine.pw_name, "daemon"]})
        assert "is not a user account" in await refused(api, hub, "daemon")
        assert (await api.post(f"/users/{mine.pw_name}/server")).status_code == 201
        assert (await api.delete(f"/users/{mine.pw_name}/server")).status_code == 204
    assert uids_run(witness) == [mine.pw_uid]


def test_pam_default_only_when_every_authenticator_is_pam():
    from courtyard.auth.multi import MultiAuthenticator
    from courtyard.auth.native import NativeAuthenticator
    from courtyard.auth.pam import PAMAuthenticator

    assert only_system_accounts(PAMAuthenticator())
    assert only_system_accounts(MultiAuthenticator([PAMAuthenticator()]))
    # a sign-up page next to PAM: anyone could sign up as a colleague's login name
    assert not only_system_accounts(MultiAuthenticator([PAMAuthenticator(),
                                                        NativeAuthenticator()]))
    assert not only_system_accounts(NativeAuthenticator())


# -- the template (TLJH's scheme) ------------------------------------------------------------
async def test_template_runs_jupyter_accounts(policy_hub, witness, uname, _made_names):
    need_root()
    long_name = uname("someone-with-a-long-name")
    odd = f"{uname('o')}.x@y"
    made = {n: accounts.system_name("jupyter-{username}", n) for n in ("root", long_name, odd)}
    _made_names.extend(made.values())
    assert made["root"] == "jupyter-root"
    assert all(accounts.SYSTEM_NAME_RE.fullmatch(n) for n in made.values())
    assert made[odd] != accounts.system_name("jupyter-{username}", odd.replace(".", "-"))
    hub = policy_hub(system_username_template="jupyter-{username}")
    async with client_for(hub, ADMIN_TOKEN) as api:
        for name, account in made.items():
            assert (await api.post(f"/users/{name}")).status_code == 201
            r = await api.post(f"/users/{name}/server")
            assert r.status_code == 201, r.text
            pw = pwd.getpwnam(account)
            pid = server_row(hub, name)["state"]["pid"]
            assert f"Uid:\t{pw.pw_uid}\t" in Path(f"/proc/{pid}/status").read_text()
            environ = read_environ(pid)
            assert (environ["USER"], environ["HOME"]) == (account, pw.pw_dir)
            assert stat.S_IMODE(os.stat(pw.pw_dir).st_mode) == 0o700
            assert (await api.delete(f"/users/{name}/server")).status_code == 204
    assert 0 not in uids_run(witness) and len(uids_run(witness)) == 3


def test_template_must_name_each_user(spawn_hub):
    from courtyard.errors import ConfigError

    for template in ("jupyter", "Jupyter-{username}", "9-{username}"):
        c = Config()
        c.LocalProcessSpawner.system_username_template = template
        with pytest.raises(ConfigError, match=r"system_username_template.*must contain"):
            spawn_hub(c)


# -- finding 4: homes and environment --------------------------------------------------------
def read_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


async def test_new_home_is_private_and_environment_clean(policy_hub, uname, monkeypatch):
    need_root()
    monkeypatch.setenv("PATH", f"/root/.hub-only/bin:{os.environ['PATH']}")
    monkeypatch.setenv("PYTHONPATH", "/root/hub-modules")
    monkeypatch.setenv("PYTHONSTARTUP", "/root/startup.py")
    monkeypatch.setenv("COURTYARD_TEST_SECRET", "hub-secret")
    monkeypatch.setenv("VIRTUAL_ENV", "/root/venv")
    hub = policy_hub()
    alice = uname("alice")
    async with client_for(hub, ADMIN_TOKEN) as api:
        await api.post(f"/users/{alice}")
        assert (await api.post(f"/users/{alice}/server")).status_code == 201
        pw = pwd.getpwnam(alice)
        assert stat.S_IMODE(os.stat(pw.pw_dir).st_mode) == 0o700
        environ = read_environ(server_row(hub, alice)["state"]["pid"])
        assert (await api.delete(f"/users/{alice}/server")).status_code == 204
    assert environ["PATH"] == accounts.system_path(accounts.login_defs())
    assert not any(k.startswith("PYTHON") or k in ("VIRTUAL_ENV", "COURTYARD_TEST_SECRET")
                   for k in environ)
    assert "hub-secret" not in "".join(environ.values())
    assert (environ["HOME"], environ["USER"], environ["LOGNAME"]) == (pw.pw_dir, alice, alice)
    assert environ["JUPYTERHUB_USER"] == alice and environ["WITNESS"]
    assert "/root" not in "".join(v for k, v in environ.items() if k != "WITNESS")


async def test_env_keep_passes_on_what_the_admin_names(policy_hub, uname, monkeypatch):
    need_root()
    monkeypatch.setenv("COURTYARD_SITE", "kept")
    config = Config()
    config.Spawner.env_keep = ["COURTYARD_SITE"]
    hub = policy_hub(config)
    alice = uname("alice")
    async with client_for(hub, ADMIN_TOKEN) as api:
        await api.post(f"/users/{alice}")
        assert (await api.post(f"/users/{alice}/server")).status_code == 201
        environ = read_environ(server_row(hub, alice)["state"]["pid"])
        assert (await api.delete(f"/users/{alice}/server")).status_code == 204
    assert environ["COURTYARD_SITE"] == "kept"


# -- SimpleLocalProcessSpawner -----------------------------------------------------------------
async def test_simple_spawner_runs_as_the_hub_in_a_private_home(policy_hub, witness, uname,
                                                               tmp_path, caplog):
    config = Config()
    config.Courtyard.spawner_class = "jupyterhub.spawner.SimpleLocalProcessSpawner"
    config.SimpleLocalProcessSpawner.home_dir_template = str(tmp_path / "homes" / "{username}")
    hub = policy_hub(config)
    alice, bob = uname("alice"), uname("bob")
    taken = tmp_path / "homes" / bob  # made first by someone else (as anyone can in /tmp)
    taken.mkdir(parents=True)
    os.chown(taken, 65534, 65534)
    with caplog.at_level(logging.WARNING):
        async with serving(hub) as api:
            await api.post("/users", json={"usernames": [alice, bob]})
            assert (await api.post(f"/users/{alice}/server")).status_code == 201
            environ = read_environ(server_row(hub, alice)["state"]["pid"])
            r = await api.post(f"/users/{bob}/server")
            assert r.status_code == 500 and "not a directory of the hub's own user" in r.text
            assert (await api.delete(f"/users/{alice}/server")).status_code == 204
    home = tmp_path / "homes" / alice
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert environ["HOME"] == str(home) and environ["USER"] == alice
    assert uids_run(witness) == [os.getuid()]  # the hub's own user, root included
    warning = "SECURITY WARNING: SimpleLocalProcessSpawner with the hub running as ROOT"
    assert (warning in caplog.text) == ROOT


async def test_not_root_homes_are_private(spawn_hub, uname, monkeypatch, tmp_path):
    """Not as root, servers run as the hub's user in <data>/users/NAME, made 0700 (and
    tightened if an earlier version left it open)."""
    if ROOT:
        monkeypatch.setattr(os, "geteuid", lambda: 65534)
    hub = spawn_hub()
    alice = uname("alice")
    home = tmp_path / "users" / alice
    home.mkdir(parents=True, mode=0o755)
    home.chmod(0o755)
    async with client_for(hub, ADMIN_TOKEN) as api:
        await api.post(f"/users/{alice}")
        assert (await api.post(f"/users/{alice}/server")).status_code == 201
        assert (await api.delete(f"/users/{alice}/server")).status_code == 204
    assert stat.S_IMODE(home.stat().st_mode) == 0o700

