"""``pam``: the machine's own accounts, checked through PAM (JupyterHub's PAMAuthenticator).

Unix groups can grant admin (``admin_groups``) and the right to sign in
(``allowed_groups``); membership is read at every login. With ``create_system_users`` the
hub makes missing Unix accounts (``add_user_cmd``) for users created by admins, before
their first server starts.
"""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import stat
import subprocess
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from traitlets import Bool, Set, Unicode

from ..db.models import User
from ..errors import ConfigError
from ..spawners.traits import Command  # a list, or one string as JupyterHub's configs write it
from .base import Authenticator, AuthResult

if TYPE_CHECKING:
    from .login import AuthenticatorHub, LoginContext


def unix_groups(username: str) -> set[str]:
    """Names of the Unix groups ``username`` belongs to (empty if there is no such user)."""
    try:
        gid = pwd.getpwnam(username).pw_gid
        gids = {gid, *os.getgrouplist(username, gid)}
    except KeyError:
        return set()
    names = set()
    for g in gids:
        try:
            names.add(grp.getgrgid(g).gr_name)
        except KeyError:
            pass
    return names


def system_user_exists(username: str) -> bool:
    try:
        pwd.getpwnam(username)
    except KeyError:
        return False
    return True


def _private_home(username: str) -> None:
    """A new account's home, 0700 (useradd makes it 0755 on Debian: others could read it)."""
    try:
        pw = pwd.getpwnam(username)
        info = os.lstat(pw.pw_dir)
    except (KeyError, OSError):
        return
    if stat.S_ISDIR(info.st_mode) and info.st_uid == pw.pw_uid:
        os.chmod(pw.pw_dir, 0o700)


class LocalAuthenticator(Authenticator):
    """Accounts of this machine: Unix groups for admin and allow lists, optional creation."""

    admin_groups = Set(help="Unix groups whose members are admins (checked at each login).").tag(
        config=True
    )
    allowed_groups = Set(help="Unix groups whose members may sign in.").tag(config=True)
    create_system_users = Bool(False, help="Create Unix accounts for hub users that lack one "
                               "(with add_user_cmd), at start and before their server starts."
                               ).tag(config=True)
    add_user_cmd = Command(["useradd", "--create-home", "-K", "HOME_MODE=0700",
                            "--shell", "/bin/bash"],
                        help="Command creating a Unix user; the name is appended. The new "
                        "home directory is made 0700 afterwards whatever the command did.").tag(
        config=True
    )

    def check_allowed(self, username: str, model: dict[str, Any] | None = None) -> bool:
        if super().check_allowed(username, model):
            return True
        groups = self.allowed_groups | self.admin_groups
        return bool(groups) and bool(groups & unix_groups(username))

    def is_admin(self, handler: LoginContext | None, model: dict[str, Any]) -> bool | None:
        if model["name"] in self.admin_users:
            return True
        if self.admin_groups:
            return bool(self.admin_groups & unix_groups(model["name"]))
        return model.get("admin")

    def add_system_user(self, username: str) -> None:
        """Create the Unix account ``username`` if it is missing."""
        if system_user_exists(username):
            return
        if not self.validate_username(username) or username.startswith("-"):
            raise ValueError(f"{username!r} cannot be a Unix account name")
        self.log.info("Creating Unix user %s", username)
        result = subprocess.run([*self.add_user_cmd, username], capture_output=True, text=True,
                                check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(self.add_user_cmd)} {username} failed: "
                               f"{result.stderr.strip()}")
        _private_home(username)

    def invalid_reason(self, user: User) -> str | None:
        """As JupyterHub's LocalAuthenticator: a hub user needs a Unix account, unless the
        hub creates it (``create_system_users``)."""
        reason = super().invalid_reason(user)
        if reason is None and not self.create_system_users and not system_user_exists(
                user.name):
            reason = "no Unix account of that name"
        return reason

    def startup(self, hub: AuthenticatorHub, db: Session) -> None:
        super().startup(hub, db)
        if self.create_system_users:
            for name in db.scalars(select(User.name)):
                try:
                    self.add_system_user(name)
                except (ValueError, RuntimeError, OSError) as e:
                    raise ConfigError(f"c.LocalAuthenticator.create_system_users: {e}") from None

    async def pre_spawn_start(self, user: Any, spawner: Any) -> None:
        if self.create_system_users:
            await asyncio.to_thread(self.add_system_user, user.name)


class PAMAuthenticator(LocalAuthenticator):
    """Checks passwords with PAM (``service``, default 'login')."""

    service = Unicode("login", help="PAM service to authenticate with (a file in /etc/pam.d)."
                      ).tag(config=True)
    encoding = Unicode("utf8", help="Encoding of usernames and passwords for PAM.").tag(
        config=True
    )
    check_account = Bool(True, help="Also run PAM's account checks (expired or locked "
                         "accounts are refused).").tag(config=True)
    pam_normalize_username = Bool(False, help="Use the name PAM reports (e.g. canonical "
                                  "case) as the username.").tag(config=True)

    def check_config(self, hub: AuthenticatorHub) -> None:
        super().check_config(hub)
        try:
            import pamela  # noqa: F401
        except ImportError:
            raise ConfigError("the pam authenticator needs pamela: pip install pamela") from None

    def _check(self, username: str, password: str) -> bool:
        import pamela

        try:
            pamela.authenticate(username, password, service=self.service, encoding=self.encoding)
            if self.check_account:
                pamela.check_account(username, service=self.service, encoding=self.encoding)
        except pamela.PAMError as e:
            self.log.warning("PAM refused %r: %s", username, e)
            return False
        return True

    async def authenticate(self, handler: LoginContext, data: dict[str, Any]) -> AuthResult:
        username = str(data.get("username") or "")
        password = str(data.get("password") or "")
        if not username or not password or "\x00" in username + password:
            return None
        if not await asyncio.to_thread(self._check, username, password):
            return None
        if self.pam_normalize_username:
            try:
                username = pwd.getpwnam(username).pw_name
            except KeyError:
                pass
        return username
