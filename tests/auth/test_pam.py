"""PAM against real Unix accounts (made with useradd/chpasswd; needs root)."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess

from .conftest import login

ADMIN_TOKEN = "admin-token-0123456789"


def pam_options(pam_users, **extra):
    return {"Courtyard.authenticator_class": "pam",
            "PAMAuthenticator.service": pam_users.service, **extra}


async def test_pam_login_through_the_form(browser, pam_users):
    _hub, client = await browser(pam_options(pam_users, **{"Authenticator.allow_all": True}))
    assert (await login(client, "cytest-alice", "wrong")).status_code == 403
    assert (await login(client, "no-such-unix-user", "wrong")).status_code == 403
    response = await login(client, "cytest-alice", pam_users.passwords["cytest-alice"])
    assert response.status_code == 303
    me = await client.get("/hub/api/user", params={"_xsrf": client.cookies["_xsrf"]})
    assert me.json()["name"] == "cytest-alice" and me.json()["admin"] is False


async def test_unix_groups_allow_and_make_admins(browser, pam_users):
    options = pam_options(pam_users, **{
        "LocalAuthenticator.allowed_groups": {pam_users.user_group},
        "LocalAuthenticator.admin_groups": {pam_users.admin_group}})
    _hub, client = await browser(options)
    # eve's password is right, but she is in neither group
    assert (await login(client, "cytest-eve", pam_users.passwords["cytest-eve"])).status_code == 403
    assert (await login(client, "cytest-bob", pam_users.passwords["cytest-bob"])).status_code == 303
    me = await client.get("/hub/api/user", params={"_xsrf": client.cookies["_xsrf"]})
    assert me.json()["admin"] is True


async def test_pam_login_service(browser, pam_users):
    """One test through the system's real 'login' service (slow on failure: pam_faildelay)."""
    _hub, client = await browser({"Courtyard.authenticator_class": "pam",
                                  "Authenticator.allowed_users": {"cytest-alice"}})
    response = await login(client, "cytest-alice", pam_users.passwords["cytest-alice"])
    assert response.status_code == 303


def test_create_system_users(make_hub, pam_users):
    name = "cytest-newbie"
    subprocess.run(["userdel", "-r", name], capture_output=True, check=False)
    try:
        make_hub(pam_options(pam_users, **{"Authenticator.allowed_users": {name},
                                           "LocalAuthenticator.create_system_users": True}))
        assert pwd.getpwnam(name).pw_dir == f"/home/{name}"
        # issue 12: other users cannot read the new home (useradd makes 0755 on Debian)
        assert stat.S_IMODE(os.stat(f"/home/{name}").st_mode) == 0o700
    finally:
        subprocess.run(["userdel", "-r", name], capture_output=True, check=False)
