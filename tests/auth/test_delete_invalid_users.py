"""``Authenticator.delete_invalid_users``, as in JupyterHub: as the hub starts, the users an
earlier run stored who no longer pass the authenticator's checks (a name the new
``username_pattern`` refuses, a Unix account that is gone, a JupyterHub plugin's ``add_user``
raising) are deleted when it is on, and only logged when it is off. Real hubs restarted on
one database, as an operator changing the config would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from courtyard.db import queries
from courtyard.db.models import Server, User

PATTERN = {"Authenticator.username_pattern": "[a-z]+"}


def names(hub: Any) -> list[str]:
    with hub.session() as db:
        return sorted(db.scalars(select(User.name)))


def first_run(make_hub: Callable[..., Any], *users: str) -> None:
    hub = make_hub()
    with hub.session() as db:
        for name in users:
            queries.create_user(db, name)
        db.commit()


def test_on_deletes_the_users_that_fail_the_checks(make_hub, caplog) -> None:
    first_run(make_hub, "alice", "bob-2")
    hub = make_hub({**PATTERN, "Authenticator.delete_invalid_users": True})
    assert names(hub) == ["alice"]
    assert "Deleting user bob-2 from the database: not a valid username" in caplog.text


def test_off_they_stay_and_the_log_says_how_to_delete_them(make_hub, caplog) -> None:
    first_run(make_hub, "alice", "bob-2")
    hub = make_hub(PATTERN)
    assert names(hub) == ["alice", "bob-2"]
    assert ("User bob-2 in the database: not a valid username; set "
            "c.Authenticator.delete_invalid_users = True") in caplog.text


def test_blocked_users_and_users_with_a_server_are_kept(make_hub, caplog) -> None:
    """A blocked user is left alone (JupyterHub does not check them), and so is one whose
    server the hub may still be running: deleting the row would orphan the process."""
    first_run(make_hub, "alice", "bob-2", "carol-3")
    hub = make_hub()
    with hub.session() as db:
        owner = queries.get_user(db, "carol-3")
        db.add(Server(user_id=owner.id, name="", url="http://127.0.0.1:1/user/carol-3/"))
        db.commit()
    hub = make_hub({**PATTERN, "Authenticator.delete_invalid_users": True,
                    "Authenticator.blocked_users": {"bob-2"}})
    assert names(hub) == ["alice", "bob-2", "carol-3"]
    assert ("User carol-3 in the database: not a valid username; not deleted, as a server "
            "of theirs may be running") in caplog.text


def test_pam_deletes_users_whose_unix_account_is_gone(make_hub) -> None:
    """As JupyterHub's LocalAuthenticator: a hub user needs a Unix account of that name."""
    pytest.importorskip("pamela")
    first_run(make_hub, "nobody", "no-such-unix-account-7")
    hub = make_hub({"Courtyard.authenticator_class": "pam",
                    "Authenticator.delete_invalid_users": True})
    assert names(hub) == ["nobody"]


def test_several_methods_keep_a_user_any_of_them_takes(make_hub) -> None:
    """With several sign-in methods, a user goes only when no method takes them any more: a
    password-form user is not deleted for lacking a Unix account."""
    pytest.importorskip("pamela")
    first_run(make_hub, "nobody", "no-such-unix-account", "no-such-unix-account-9")
    hub = make_hub({"Courtyard.authenticator_class": ["pam", "dummy"],
                    "Authenticator.delete_invalid_users": True,
                    "DummyAuthenticator.username_pattern": "[a-z-]+"})
    assert names(hub) == ["no-such-unix-account", "nobody"]  # the last: neither takes it


def test_jupyterhub_plugin_add_user_raising_deletes(make_hub) -> None:
    """A JupyterHub authenticator's ``add_user`` runs for each stored user at start; one it
    refuses is deleted, as JupyterHub does."""
    from jupyterhub.auth import Authenticator as JupyterHubAuthenticator

    class Directory(JupyterHubAuthenticator):
        def add_user(self, user: Any) -> None:
            if user.name.startswith("gone"):
                raise KeyError(f"{user.name} left the directory")
            super().add_user(user)

    first_run(make_hub, "alice", "gone-bob")
    hub = make_hub({"Courtyard.authenticator_class": Directory,
                    "Authenticator.delete_invalid_users": True,
                    "Authenticator.allow_all": True})
    assert names(hub) == ["alice"]


def test_jupyterhub_plugin_among_several_methods_still_learns_stored_users(make_hub) -> None:
    """A JupyterHub authenticator in a list of methods still gets ``add_user`` for each stored
    user at start (its allow list grows, as in JupyterHub); one it refuses is kept while
    another method takes them."""
    from jupyterhub.auth import Authenticator as JupyterHubAuthenticator

    class Directory(JupyterHubAuthenticator):
        def add_user(self, user: Any) -> None:
            if user.name.startswith("gone"):
                raise KeyError(f"{user.name} left the directory")
            super().add_user(user)

    first_run(make_hub, "alice", "gone-bob")
    hub = make_hub({"Courtyard.authenticator_class": [Directory, "dummy"],
                    "Authenticator.delete_invalid_users": True,
                    "Authenticator.allowed_users": {"carol"},
                    "Authenticator.allow_existing_users": True})
    assert names(hub) == ["alice", "carol", "gone-bob"]
    directory = hub.authenticator.authenticators[0]
    assert directory.allowed_users == {"alice", "carol"}
