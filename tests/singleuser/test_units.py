"""The pure parts of ``courtyard-singleuser``: reading the hub's environment and deciding
whether a visitor's scopes open this server."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from courtyard.singleuser.access import covers, granted
from courtyard.singleuser.env import HubEnv, HubEnvError

ENV = {
    "JUPYTERHUB_SERVICE_URL": "http://127.0.0.1:4567/user/alice/gpu/",
    "JUPYTERHUB_SERVICE_PREFIX": "/user/alice/gpu/",
    "JUPYTERHUB_API_URL": "http://127.0.0.1:8081/hub/api",
    "JUPYTERHUB_API_TOKEN": "secret",
    "JUPYTERHUB_CLIENT_ID": "jupyterhub-user-alice-gpu",
    "JUPYTERHUB_USER": "alice",
    "JUPYTERHUB_SERVER_NAME": "gpu",
    "JUPYTERHUB_OAUTH_ACCESS_SCOPES": json.dumps(["access:servers!server=alice/gpu",
                                                  "access:servers!user=alice"]),
}


def test_env_from_hub() -> None:
    env = HubEnv.from_environ(ENV)
    assert (env.ip, env.port, env.prefix) == ("127.0.0.1", 4567, "/user/alice/gpu/")
    assert env.callback_url == "/user/alice/gpu/oauth_callback"
    assert env.authorize_url == "/hub/api/oauth2/authorize"
    assert env.token_url == "http://127.0.0.1:8081/hub/api/oauth2/token"
    assert env.activity_interval == 300 and env.cache_max_age == 60
    assert not env.allow_token_in_url and env.allow_websocket_cookie_auth and not env.secure
    public = HubEnv.from_environ({**ENV, "JUPYTERHUB_HOST": "https://hub.example",
                                  "JUPYTERHUB_BASE_URL": "/jh/",
                                  "COURTYARD_SINGLEUSER_CACHE_MAX_AGE": "900"})
    assert public.authorize_url == "https://hub.example/jh/hub/api/oauth2/authorize"
    assert public.secure and public.cache_max_age == 300  # never more than 300 s


def test_env_errors() -> None:
    with pytest.raises(HubEnvError, match="JUPYTERHUB_SERVICE_URL"):
        HubEnv.from_environ({})
    with pytest.raises(HubEnvError, match="JSON list"):
        HubEnv.from_environ({**ENV, "JUPYTERHUB_OAUTH_ACCESS_SCOPES": "access:servers"})
    with pytest.raises(HubEnvError, match="ACTIVITY_INTERVAL"):
        HubEnv.from_environ({**ENV, "JUPYTERHUB_ACTIVITY_INTERVAL": "soon"})
    default = {k: v for k, v in ENV.items() if k != "JUPYTERHUB_OAUTH_ACCESS_SCOPES"}
    assert HubEnv.from_environ(default).access_scopes == (
        "access:servers!server=alice/gpu", "access:servers!user=alice")


@pytest.mark.parametrize(("held", "needed", "ok"), [
    ("access:servers", "access:servers!server=alice/gpu", True),
    ("access:servers!user=alice", "access:servers!server=alice/gpu", True),
    ("access:servers!user=alice", "access:servers!user=alice", True),
    ("access:servers!server=alice/gpu", "access:servers!server=alice/gpu", True),
    ("access:servers!server=alice/", "access:servers!server=alice/gpu", False),
    ("access:servers!server=alice/other", "access:servers!user=alice", False),
    ("access:servers!user=bob", "access:servers!server=alice/gpu", False),
    ("access:servers!group=staff", "access:servers!server=alice/gpu", False),
    ("access:services", "access:servers!server=alice/gpu", False),
    ("access:servers!server=alice/gpu", "access:servers", False),
])
def test_access_scopes(held: str, needed: str, ok: bool) -> None:
    assert covers(held, needed) is ok


def test_granted_is_any_of() -> None:
    needed = ["access:servers!server=alice/gpu", "access:servers!user=alice"]
    assert granted(["read:users", "access:servers!server=alice/gpu"], needed) == {needed[0]}
    assert granted(["access:servers!server=alice/"], needed) == set()


def test_cli_refuses_without_hub_env() -> None:
    r = subprocess.run([sys.executable, "-m", "courtyard.singleuser"], capture_output=True,
                       text=True, env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert r.returncode == 2 and "JUPYTERHUB_SERVICE_URL" in r.stderr
