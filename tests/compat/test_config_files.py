"""``jupyterhub_config.py`` files from JupyterHub's own examples and documentation load in
Courtyard, as real config files on a real hub: no error, and no warning but those naming a
feature Courtyard (or JupyterHub itself) does not have.

The configs below are the ``examples/*/jupyterhub_config.py`` files and the tutorial
snippets of https://github.com/jupyterhub/jupyterhub (6.x), Copyright (c) Jupyter
Development Team, BSD-3-Clause; comments are shortened, and lines reading files that are not
here are replaced by the values they read. Examples that import ``jupyterhub`` itself
(spawn-form, external-oauth, forced-login) are tested with the JupyterHub classes
(tests/compat/test_jupyterhub_*.py); those needing DockerSpawner belong to the remote
spawners' issue.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from courtyard.app import Hub
from courtyard.checks import check_config
from courtyard.errors import ConfigError
from tests.conftest import client_for
from tests.web.test_pages_http import site  # noqa: F401 (a fixture: a signed-in browser)

# -- examples/ ----------------------------------------------------------------------------
SERVER_API = """
c.JupyterHub.load_roles = [
    {
        "name": "launcher",
        "scopes": [
            "servers",  # manage servers
            "access:servers",  # access servers themselves
        ],
        # assign role to our 'launcher' service
        "services": ["launcher"],
    }
]

token = "0123456789abcdef0123456789abcdef"  # read from ./service-token in the example

# define our service
c.JupyterHub.services = [
    {
        "name": "launcher",
        "api_token": token,
    }
]

# ensure spawn requests return immediately,
# rather than waiting up to 10 seconds for spawn to complete
c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 0}

c.Authenticator.allowed_users = {
    'test-user',
}

c.JupyterHub.authenticator_class = 'dummy'
c.JupyterHub.spawner_class = 'simple'
c.JupyterHub.ip = '127.0.0.1'
"""

CUSTOM_SCOPES = """
import sys

c = get_config()  # noqa

c.JupyterHub.services = [
    {
        'name': 'grades',
        'url': 'http://127.0.0.1:10101',
        'command': [sys.executable, './grades.py'],
        'oauth_allowed_scopes': [
            'custom:grades:write',
            'custom:grades:read',
        ],
    },
]

c.JupyterHub.custom_scopes = {
    "custom:grades:read": {
        "description": "read-access to all grades",
    },
    "custom:grades:write": {
        "description": "Enter new grades",
        "subscopes": ["custom:grades:read"],
    },
}

c.JupyterHub.load_roles = [
    {
        "name": "user",
        # grant all users access to services
        "scopes": ["access:services", "self"],
    },
    {
        "name": "grader",
        # grant graders access to write grades
        "scopes": ["custom:grades:write"],
        "users": ["grader"],
    },
    {
        "name": "instructor",
        # grant instructors access to read, but not write grades
        "scopes": ["custom:grades:read"],
        "users": ["instructor"],
    },
]

c.JupyterHub.allowed_users = {"instructor", "grader", "student"}
c.JupyterHub.authenticator_class = 'dummy'
c.JupyterHub.spawner_class = 'simple'
c.JupyterHub.ip = '127.0.0.1'
c.JupyterHub.log_level = 10
"""

SERVICE_ANNOUNCEMENT = """
import sys

c = get_config()  # noqa

port = 9999
c.JupyterHub.services = [
    {
        'name': 'announcement',
        'url': f'http://127.0.0.1:{port}',
        'command': [
            sys.executable,
            "-m",
            "announcement",
            '--port',
            str(port),
        ],
    }
]

c.JupyterHub.template_paths = ["templates"]

c.Authenticator.allowed_users = {"announcer", "otheruser"}

c.JupyterHub.load_roles = [
    {
        "name": "announcers",
        "users": ["announcer"],
        "scopes": ["access:services!service=announcement"],
    }
]

c.JupyterHub.authenticator_class = 'dummy'
c.JupyterHub.spawner_class = 'simple'
c.JupyterHub.ip = '127.0.0.1'
"""

SERVICE_WHOAMI = """
import os
import sys

c.JupyterHub.services = [
    {
        'name': 'whoami',
        'url': 'http://127.0.0.1:10101',
        'command': [sys.executable, './whoami.py'],
    },
    {
        'name': 'whoami-oauth',
        'url': 'http://127.0.0.1:10102',
        'command': [sys.executable, './whoami-oauth.py'],
    },
]
"""

SERVICE_WHOAMI_FLASK = """
import os
import sys

c.JupyterHub.services = [
    {
        'name': 'whoami',
        'url': 'http://127.0.0.1:10101',
        'command': ['flask', 'run', '--port=10101'],
        'environment': {
            'FLASK_APP': 'whoami-flask.py',
        }
    },
    {
        'name': 'whoami-oauth',
        'url': 'http://127.0.0.1:10201',
        'command': ['flask', 'run', '--port=10201'],
        'environment': {
            'FLASK_APP': 'whoami-oauth.py',
        }
    },
]
"""

SERVICE_NOTEBOOK_MANAGED = """
# our user list
c.Authenticator.whitelist = ['minrk', 'ellisonbg', 'willingc']

# ellisonbg and willingc have access to a shared server:

c.JupyterHub.load_groups = {'shared': ['ellisonbg', 'willingc']}

service_name = 'shared-notebook'
service_port = 9999
group_name = 'shared'

# start the notebook server as a service
c.JupyterHub.services = [
    {
        'name': service_name,
        'url': 'http://127.0.0.1:{}'.format(service_port),
        'command': ['jupyterhub-singleuser', '--group=shared', '--debug'],
    }
]
"""

SERVICE_NOTEBOOK_EXTERNAL = """
c = get_config()  # noqa

c.Authenticator.allowed_users = ['minrk', 'ellisonbg', 'willingc']

service_name = 'shared-notebook'
service_port = 9999
group_name = 'shared'

c.JupyterHub.load_groups = {group_name: ['ellisonbg', 'willingc']}

c.JupyterHub.services = [
    {
        'name': service_name,
        'url': f'http://127.0.0.1:{service_port}',
        'api_token': 'c3a29e5d386fd7c9aa1e8fe9d41c282ec8b',
    }
]

c.JupyterHub.load_roles = [
    {
        "name": "shared-notebook",
        "groups": [group_name],
        "scopes": [f"access:services!service={service_name}"],
    },
]

c.JupyterHub.authenticator_class = 'dummy'
c.JupyterHub.spawner_class = 'simple'
c.JupyterHub.ip = '127.0.0.1'
"""

CULL_IDLE = """
c.JupyterHub.services = [
    {
        'name': 'cull-idle',
        'admin': True,
        'command': 'python cull_idle_servers.py --timeout=3600'.split(),
    }
]
"""

SERVICE_FASTAPI = """
import os
import warnings

public_host = "http://127.0.0.1:8000"  # PUBLIC_HOST in the example
service_name = "fastapi"
oauth_redirect_uri = f"{public_host}/services/{service_name}/oauth_callback"

c = get_config()  # noqa
c.JupyterHub.services = [
    {
        "name": service_name,
        "url": "http://127.0.0.1:10202",
        "command": ["uvicorn", "app:app", "--port", "10202"],
        "oauth_redirect_uri": oauth_redirect_uri,
        "environment": {"PUBLIC_HOST": public_host},
    }
]

c.JupyterHub.load_roles = [
    {
        "name": "user",
        # grant all users access to services
        "scopes": ["self", "access:services"],
    },
]

c.Authenticator.allowed_users = {"test-user"}
c.JupyterHub.authenticator_class = "dummy"
c.JupyterHub.spawner_class = "simple"
"""

USER_SHARING = """
c = get_config()  # noqa

c.JupyterHub.authenticator_class = 'dummy'
c.JupyterHub.spawner_class = 'simple'

c.Authenticator.allowed_users = {"sharer", "shared-with"}

from pathlib import Path

here = Path(__file__).parent.absolute()
c.Spawner.notebook_dir = str(here)

c.JupyterHub.load_roles = [
    {
        "name": "user",
        "scopes": ["self", "shares!user"],
    },
]

c.Spawner.oauth_client_allowed_scopes = ["access:servers!server", "shares!server"]

c.Spawner.server_token_scopes = [
    "shares!server",  # manage shares
    "servers!server",  # start/stop itself
    "users:activity!server",  # report activity
]
"""

POSTGRES = """
c = get_config()  # noqa

c.JupyterHub.admin_users = {'rhea'}
c.Authenticator.allowed_users = {'ganymede', 'io', 'rhea'}

import os

pg_pass = os.getenv('POSTGRES_ENV_JPY_PSQL_PASSWORD')
pg_host = os.getenv('POSTGRES_PORT_5432_TCP_ADDR')
c.JupyterHub.db_url = 'postgresql://jupyterhub:{}@{}:5432/jupyterhub'.format(
    pg_pass, pg_host
)
"""

READ_ONLY = """
c = get_config()  # noqa

c.JupyterHub.custom_scopes = {
    "custom:jupyter_server:read:*": {
        "description": "read-only access to your server",
    },
    "custom:jupyter_server:write:*": {
        "description": "access to modify files on your server. Does not include execution.",
        "subscopes": ["custom:jupyter_server:read:*"],
    },
    "custom:jupyter_server:execute:*": {
        "description": "Execute permissions on servers.",
        "subscopes": [
            "custom:jupyter_server:write:*",
            "custom:jupyter_server:read:*",
        ],
    },
}

c.JupyterHub.load_roles = [
    {
        "name": "read-only-all",
        "scopes": ["access:servers", "custom:jupyter_server:read:*"],
        "groups": ["read-only"],
    },
    {
        "name": "read-only-read-only-percy",
        "scopes": [
            "access:servers!user=percy",
            "custom:jupyter_server:read:*!user=percy",
        ],
        "users": ["vex"],
    },
    {
        "name": "admin-ui",
        "scopes": ["admin-ui", "list:users", "admin:servers"],
        "users": ["admin"],
    },
    {
        "name": "full-access",
        "scopes": ["access:servers", "custom:jupyter_server:execute:*"],
        "users": ["minrk"],
    },
    {
        "name": "user",
        "scopes": [
            "custom:jupyter_server:execute:*!user",
            "custom:jupyter_server:read:*!user",
            "self",
        ],
    },
]

c.Spawner.oauth_client_allowed_scopes = [
    "access:servers!server",
    "custom:jupyter_server:read:*!server",
    "custom:jupyter_server:execute:*!server",
]

c.Spawner.environment = {
    "JUPYTERHUB_SINGLEUSER_EXTENSION": "1",
}

from pathlib import Path

here = Path(__file__).parent.resolve()

c.Spawner.args = [
    f"--config={here}/jupyter_server_config.py",
]

c.JupyterHub.authenticator_class = 'dummy'
c.JupyterHub.spawner_class = 'simple'
c.JupyterHub.ip = '127.0.0.1'
"""

COLLABORATION_ACCOUNTS = """
c = get_config()  # noqa

c.JupyterHub.authenticator_class = "dummy"
c.JupyterHub.spawner_class = "simple"

c.JupyterHub.log_level = 10
c.JupyterHub.cleanup_servers = True

c.JupyterHub.load_roles = []

c.JupyterHub.load_groups = {
    # collaborative accounts get added to this group
    "collaborative": [],
}

# read from projects.yaml in the example
project_config = {"projects": {"vox": {"members": ["vex", "percy"]}}}

for project_name, project in project_config["projects"].items():
    members = project.get("members", [])
    c.JupyterHub.load_groups[project_name] = members
    collab_user = f"{project_name}-collab"
    c.JupyterHub.load_groups["collaborative"].append(collab_user)
    c.JupyterHub.load_roles.append(
        {
            "name": f"collab-access-{project_name}",
            "scopes": [
                "admin-ui",
                f"admin:servers!user={collab_user}",
                f"list:users!user={collab_user}",
                f"access:servers!user={collab_user}",
            ],
            "groups": [project_name],
        }
    )


c.JupyterHub.bind_url = "http://127.0.0.1:8000/rtc/"

# default to hub home instead of spawning
c.JupyterHub.default_url = "/rtc/hub/home"


def pre_spawn_hook(spawner):
    group_names = {group.name for group in spawner.user.groups}
    if "collaborative" in group_names:
        spawner.log.info(f"Enabling RTC for user {spawner.user.name}")
        spawner.args.append("--LabApp.collaborative=True")


c.Spawner.pre_spawn_hook = pre_spawn_hook
"""

# -- docs/source/tutorial/getting-started/ ------------------------------------------------
NETWORKING_BASICS = """
c.JupyterHub.ip = '192.168.1.2'
c.JupyterHub.port = 443
c.ConfigurableHTTPProxy.api_url = 'http://10.0.1.4:5432'
c.JupyterHub.hub_ip = '0.0.0.0'  # listen on all interfaces
c.JupyterHub.hub_connect_ip = '10.0.1.4'  # IP as seen on the docker network.
c.JupyterHub.hub_port = 54321
c.JupyterHub.base_url = '/jupyter/'
"""

PROXY_API_DEPRECATED = """
# ideally a private network address
c.JupyterHub.proxy_api_ip = '10.0.1.4'
c.JupyterHub.proxy_api_port = 5432
"""

AUTHENTICATORS_USERS_BASICS = """
c.JupyterHub.authenticator_class = 'dummy'
c.Authenticator.allowed_users = {'mal', 'zoe', 'inara', 'kaylee'}
# c.Authenticator.allow_all = False
c.Authenticator.allow_existing_users = False
c.Authenticator.admin_users = {'mal', 'zoe'}
c.JupyterHub.load_roles = [
  {
    "name": "teachers",
    "scopes": [
      "admin-ui",
      "list:users",
      "access:servers!group=students",
    ],
    "groups": ["teachers"],
  }
]
c.DummyAuthenticator.password = "some_password"
"""

PAM_BASICS = """
c.JupyterHub.authenticator_class = 'pam'  # JupyterHub's default
c.PAMAuthenticator.admin_groups = {'wheel'}
c.LocalAuthenticator.create_system_users = True
c.Authenticator.allow_all = True
"""

SECURITY_BASICS = """
c.JupyterHub.authenticator_class = 'dummy'
c.JupyterHub.cookie_secret_file = '{tmp}/jupyterhub_cookie_secret'
c.JupyterHub.cookie_secret = bytes.fromhex('{hex}')
c.ConfigurableHTTPProxy.api_token = 'abc123...' # any random string
"""

SERVICES_BASICS = """
import sys

c.JupyterHub.authenticator_class = 'dummy'
c.JupyterHub.services = [
    {'name': 'adding-users', 'api_token': 'super-secret-token'},
]
c.JupyterHub.services += [
    {
        'name': 'idle-culler',
        'command': [sys.executable, '-m', 'jupyterhub_idle_culler', '--timeout=3600'],
    }
]

c.JupyterHub.load_roles = [
    {
        "name": "list-and-cull", # name the role
        "services": [
            "idle-culler", # assign the service to this role
        ],
        "scopes": [
            # declare what permissions the service should have
            "list:users", # list users
            "read:users:activity", # read user last-activity
            "admin:servers", # start/stop servers
        ],
    }
]
"""

# name -> (config, the warnings it may give: each names what Courtyard does not do)
CONFIGS: dict[str, tuple[str, list[str]]] = {
    "examples/server-api": (SERVER_API, []),
    # JupyterHub warns about c.JupyterHub.allowed_users too (not one of its options), and
    # refuses oauth_allowed_scopes ("No such service field"); Courtyard starts
    "examples/custom-scopes": (CUSTOM_SCOPES, [
        "c.JupyterHub.allowed_users is not supported",
        "c.JupyterHub.services[0]: key(s) oauth_allowed_scopes not supported"]),
    "examples/service-announcement": (SERVICE_ANNOUNCEMENT, []),
    "examples/service-whoami": (SERVICE_WHOAMI, []),
    "examples/service-whoami-flask": (SERVICE_WHOAMI_FLASK, []),
    "examples/service-notebook/managed": (SERVICE_NOTEBOOK_MANAGED, []),
    "examples/service-notebook/external": (SERVICE_NOTEBOOK_EXTERNAL, []),
    "examples/cull-idle": (CULL_IDLE, []),
    "examples/service-fastapi": (SERVICE_FASTAPI, []),
    "examples/user-sharing": (USER_SHARING, []),
    "examples/postgres": (POSTGRES, []),
    "examples/read-only": (READ_ONLY, []),
    "examples/collaboration-accounts": (COLLABORATION_ACCOUNTS, []),
    "docs/networking-basics": (NETWORKING_BASICS, []),
    "docs/networking-basics/proxy_api_ip": (PROXY_API_DEPRECATED, []),
    "docs/authenticators-users-basics": (AUTHENTICATORS_USERS_BASICS, []),
    "docs/authenticators-users-basics/pam": (PAM_BASICS, []),
    # the docs' own typo (JupyterHub's option is auth_token): JupyterHub warns too
    "docs/security-basics": (SECURITY_BASICS, ["c.ConfigurableHTTPProxy.api_token is not"]),
    "docs/services-basics": (SERVICES_BASICS, []),
}

# said of every hub without subdomain_host, whatever its config: not about the config file
GENERAL_NOTICES = ("subdomain_host is not set",)


def load(tmp_path: Path, db_url: str, source: str) -> tuple[Hub, list[str], list[str]]:
    """Write ``source`` as a jupyterhub_config.py and start a hub from it (on the test's
    database): ``(hub, check-config warnings, warnings logged at start-up)``."""
    path = tmp_path / "jupyterhub_config.py"
    path.write_text(source.replace("{tmp}", str(tmp_path)).replace("{hex}", "ab" * 32))
    overrides = {"db_url": db_url, "data_files_path": str(tmp_path)}
    problems, checked = check_config(str(path), overrides)
    assert problems == []
    logged: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                logged.append(record.getMessage())

    collect = Collect()
    logging.getLogger().addHandler(collect)
    try:
        hub = Hub.from_file(str(path), overrides)
        hub.initialize()
    finally:
        logging.getLogger().removeHandler(collect)
        logging.getLogger("courtyard").setLevel(logging.INFO)  # as other tests expect
    return hub, checked, [m for m in logged if not any(n in m for n in GENERAL_NOTICES)]


@pytest.mark.parametrize("name", list(CONFIGS))
async def test_jupyterhub_config_loads(name, tmp_path, db_url, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths in the configs (templates, scripts)
    source, expected = CONFIGS[name]
    hub, checked, logged = load(tmp_path, db_url, source)
    try:
        assert set(checked) <= set(logged)  # courtyard check-config says it beforehand
        assert len(logged) == len(expected) and all(
            any(e in w for w in logged) for e in expected), logged
        async with client_for(hub) as anonymous:
            url = f"http://127.0.0.1:8081{hub.options.base_url}hub/api/"
            assert (await anonymous.get(url)).status_code == 200
    finally:
        hub.session.kw["bind"].dispose()


async def test_examples_mean_what_they_say(tmp_path, db_url, new_db_url):
    """What the examples configure reaches the hub: the deprecated names JupyterHub 6 still
    forwards included."""
    hub, _, _ = load(tmp_path, db_url, SERVER_API)
    assert hub.options.slow_spawn_timeout == 0  # from tornado_settings
    async with client_for(hub, "0123456789abcdef0123456789abcdef") as launcher:
        me = (await launcher.get("/user")).json()
        assert me["kind"] == "service" and me["name"] == "launcher"
        assert (await launcher.get("/users/test-user")).status_code == 200
    hub.session.kw["bind"].dispose()

    hub, _, _ = load(tmp_path, new_db_url(), SERVICE_NOTEBOOK_MANAGED)
    assert hub.authenticator.allowed_users == {"minrk", "ellisonbg", "willingc"}  # whitelist
    hub.session.kw["bind"].dispose()

    hub, _, _ = load(tmp_path, new_db_url(), NETWORKING_BASICS)
    assert hub.options.hub_connect_url == "http://10.0.1.4:54321"
    assert hub.options.base_url == "/jupyter/"
    assert hub.config.BuiltinProxy.api_url == "http://10.0.1.4:5432"
    hub.session.kw["bind"].dispose()

    hub, _, _ = load(tmp_path, new_db_url(), PROXY_API_DEPRECATED)
    assert hub.config.ConfigurableHTTPProxy.api_url == "http://10.0.1.4:5432"
    assert hub.config.BuiltinProxy.api_url == "http://10.0.1.4:5432"
    hub.session.kw["bind"].dispose()


@pytest.mark.parametrize(("value", "level"), [
    (10, logging.DEBUG), ("10", None), ("DEBUG", logging.DEBUG), ("warn", logging.WARNING),
    (40, logging.ERROR), ("loud", None), (True, None), (99, None)])
def test_log_level_takes_names_and_numbers(tmp_path, db_url, value, level):
    """``c.JupyterHub.log_level = 10`` (JupyterHub's own examples) is a level, as in
    JupyterHub; anything else is a one-line error naming the option."""
    source = f"c.JupyterHub.log_level = {value!r}\nc.JupyterHub.authenticator_class = 'dummy'\n"
    if level is None:
        (tmp_path / "jupyterhub_config.py").write_text(source)
        with pytest.raises(ConfigError, match=r"log_level = .* is not a log level") as e:
            Hub.from_file(str(tmp_path / "jupyterhub_config.py"))
        assert "\n" not in str(e.value)
        return
    hub, _, logged = load(tmp_path, db_url, source)
    try:
        assert logged == []
        hub.init_logging()
        assert logging.getLogger("courtyard").getEffectiveLevel() == level
    finally:
        logging.getLogger("courtyard").setLevel(logging.INFO)
        hub.session.kw["bind"].dispose()


ADMIN_BY_GROUP = """
c.JupyterHub.authenticator_class = 'dummy'
c.Authenticator.admin_users = {'admin'}
c.JupyterHub.api_tokens = {'admin-token-0123': 'admin', 'carol-token-0123': 'carol'}
c.JupyterHub.load_groups = {'g-admins': ['carol']}
c.JupyterHub.load_roles = [{'name': 'admin', 'groups': ['g-admins']}]
"""


async def test_load_roles_adding_admin_members_keeps_its_scopes(tmp_path, db_url):
    """Naming the admin role in load_roles only to give it more members keeps its scopes,
    as in JupyterHub: the admin's own token, and the group's members, list users."""
    hub, _, logged = load(tmp_path, db_url, ADMIN_BY_GROUP)
    try:
        assert logged == []
        for token in ("admin-token-0123", "carol-token-0123"):
            async with client_for(hub, token) as client:
                r = await client.get("/users")
                assert r.status_code == 200, r.text
                assert {u["name"] for u in r.json()} == {"admin", "carol"}
        async with client_for(hub, "carol-token-0123") as carol:
            assert (await carol.get("/user")).json()["admin"] is False  # the role, not the flag
    finally:
        hub.session.kw["bind"].dispose()


async def test_unsupported_jupyterhub_options_say_so(tmp_path, db_url):
    """JupyterHub options Courtyard lacks: silent when they ask for nothing (their
    default, or options JupyterHub itself ignores), else one warning saying what happens."""
    source = """
c.JupyterHub.authenticator_class = 'dummy'
c.JupyterHub.confirm_no_ssl = True
c.JupyterHub.admin_access = True
c.JupyterHub.upgrade_db = False
c.JupyterHub.tornado_settings = {'slow_spawn_timeout': 3, 'headers': {'X-Frame-Options': 'x'}}
c.JupyterHub.extra_handlers = [(r'/custom', object)]
c.JupyterHub.internal_ssl = True
c.Authenticator.any_allow_config = True
c.Spawner.poll_jitter = 0.2
c.Authenticator.blacklist = {'mallory'}
c.JupyterHub.debug_proxy = True
c.JupyterHub.proxy_auth_token = 'proxy-secret-token'
"""
    hub, checked, logged = load(tmp_path, db_url, source)
    try:
        assert sorted(logged) == sorted(checked) == [
            "c.JupyterHub.extra_handlers: Tornado handlers cannot run in Courtyard; run them "
            "as a service",
            "c.JupyterHub.internal_ssl: TLS between the hub, the proxy and servers is not "
            "supported",
            "c.JupyterHub.tornado_settings: Courtyard does not run Tornado; of these settings "
            "only slow_spawn_timeout is read, the rest is ignored"]
        assert hub.options.slow_spawn_timeout == 3
        assert hub.authenticator.blocked_users == {"mallory"}
        assert hub.config.BuiltinProxy.debug is True
        assert hub.config.BuiltinProxy.auth_token == "proxy-secret-token"
    finally:
        hub.session.kw["bind"].dispose()


def test_explicit_new_names_win(tmp_path):
    """An old name never overrides the new one set beside it."""
    path = tmp_path / "jupyterhub_config.py"
    path.write_text("c.Authenticator.whitelist = {'old'}\n"
                    "c.Authenticator.allowed_users = {'new'}\n"
                    "c.JupyterHub.tornado_settings = {'slow_spawn_timeout': 1}\n"
                    "c.JupyterHub.slow_spawn_timeout = 7\n"
                    "c.JupyterHub.hub_connect_ip = '10.0.0.1'\n"
                    "c.JupyterHub.hub_connect_url = 'http://hub:8081'\n")
    hub = Hub.from_file(str(path))
    assert hub.options.slow_spawn_timeout == 7
    assert hub.options.hub_connect_url == "http://hub:8081"
    assert hub.config.Authenticator.allowed_users == {"new"}


def test_every_jupyterhub_only_option_is_documented():
    """docs/compatibility.md says what becomes of each JupyterHub option Courtyard lacks."""
    from courtyard.config import JUPYTERHUB_ONLY

    text = (Path(__file__).parents[2] / "docs" / "compatibility.md").read_text()
    missing = [name for name in JUPYTERHUB_ONLY if f"`{name.split('.')[1]}`" not in text
               and f".{name.split('.')[1]}`" not in text]
    assert missing == []


# -- values of the types JupyterHub's traits take --------------------------------------------
async def test_scope_options_may_be_callables(spawn_hub, uname):
    """``server_token_scopes`` and ``oauth_client_allowed_scopes`` may be callables of the
    spawner (async too), as in JupyterHub; a real server gets the scopes they return."""
    from traitlets.config import Config

    from tests.spawners.conftest import server_get

    async def token_scopes(spawner):
        return ["users:activity!user", "access:servers!server", "read:users:name!user"]

    c = Config()
    c.Spawner.server_token_scopes = token_scopes
    c.Spawner.oauth_client_allowed_scopes = lambda spawner: [f"read:users!user={spawner.user.name}"]
    hub = spawn_hub(c)
    alice = uname("alice")
    async with client_for(hub, "admin-secret-token") as api:
        await api.post(f"/users/{alice}")
        assert (await api.post(f"/users/{alice}/server")).status_code == 201
    env = await server_get(hub, alice, "", "env")
    async with client_for(hub, env["JUPYTERHUB_API_TOKEN"]) as server_api:
        scopes = (await server_api.get("/user")).json()["scopes"]
    assert f"read:users:name!user={alice}" in scopes
    assert json.loads(env["JUPYTERHUB_OAUTH_CLIENT_ALLOWED_SCOPES"]) == [f"read:users!user={alice}"]


def test_options_from_form_by_name(tmp_path, db_url):
    """``c.Spawner.options_from_form = 'simple'`` / ``'passthrough'`` (JupyterHub 5.3+)."""
    from courtyard.spawners.base import UserInfo

    for mode, expected in [("simple", {"image": "lab", "gpu": True, "pick": ["a", "b"]}),
                           ("passthrough", {"image": ["lab"], "gpu": ["on"],
                                            "pick": ["a", "b"]})]:
        source = (f"c.Spawner.options_from_form = {mode!r}\n"
                  "c.JupyterHub.authenticator_class = 'dummy'\n")
        hub, _, logged = load(tmp_path, db_url, source)
        assert logged == []
        spawner = hub.lifecycle.make_spawner(UserInfo("alice"), "")
        form = {"image": ["lab"], "gpu": ["on"], "pick": ["a", "b"]}
        assert spawner.run_options_from_form(form) == expected
        hub.session.kw["bind"].dispose()
    (tmp_path / "jupyterhub_config.py").write_text("c.Spawner.options_from_form = 'magic'\n")
    hub = Hub.from_file(str(tmp_path / "jupyterhub_config.py"))
    with pytest.raises(ConfigError, match="options_from_form = 'magic'"):
        hub.init_components()


def test_commands_may_be_strings(tmp_path):
    """Command options take one string as JupyterHub's ``Command`` traits do (split as a
    shell would), the deprecated ``c.JupyterHub.proxy_cmd`` included."""
    from courtyard.auth.pam import LocalAuthenticator
    from courtyard.config import build_configurable
    from courtyard.proxy.rest import ConfigurableHTTPProxy

    path = tmp_path / "jupyterhub_config.py"
    path.write_text("c.JupyterHub.proxy_cmd = '/opt/chp --log-level=debug'\n"
                    "c.LocalAuthenticator.add_user_cmd = 'adduser -q --gecos \"\"'\n")
    hub = Hub.from_file(str(path))
    assert build_configurable(ConfigurableHTTPProxy, hub.config).command == [
        "/opt/chp", "--log-level=debug"]
    assert build_configurable(LocalAuthenticator, hub.config).add_user_cmd == [
        "adduser", "-q", "--gecos", ""]


async def test_default_url_may_be_a_callable(site):  # noqa: F811 (the fixture)
    """``c.JupyterHub.default_url`` may be a callable of the request handler, as in
    JupyterHub's documented example (admins to the admin page, others home)."""

    def default_url(handler):
        user = handler.current_user
        return "/hub/admin" if user and user.admin else "/hub/token"

    _hub, alice = await site(default_url=default_url)  # alice is an admin
    assert (await alice.get("/hub/")).headers["location"] == "/hub/admin"
    _hub, alice = await site(default_url=default_url, **{"Authenticator.admin_users": set()})
    assert (await alice.get("/hub/")).headers["location"] == "/hub/token"


SETS_AND_TUPLES = """
c.JupyterHub.authenticator_class = 'dummy'
c.JupyterHub.api_tokens = {'admin-token-0123': 'admin'}
c.Authenticator.admin_users = ['admin']
c.Authenticator.allowed_users = ('alice', 'bob')
c.JupyterHub.load_groups = {'g1': {'alice', 'bob'}, 'g2': ('carol',),
                            'g3': {'users': {'dave'}, 'properties': {'k': 1}}}
c.JupyterHub.load_roles = [{'name': 'readers', 'scopes': {'read:users'}, 'users': {'alice'},
                            'groups': ('g2',)}]
c.JupyterHub.services = [{'name': 's1', 'api_token': 'service-token-0123',
                          'oauth_client_allowed_scopes': ('read:users',)}]
c.JupyterHub.spawn_throttle_retry_range = (10, 20)
c.Spawner.args = ('--debug',)
c.Spawner.mem_limit = '1G'
c.Spawner.start_timeout = 60.5
"""


async def test_sets_and_tuples_where_jupyterhub_iterates(tmp_path, db_url):
    """Members and scopes given as sets or tuples, which JupyterHub only iterates."""
    hub, _, logged = load(tmp_path, db_url, SETS_AND_TUPLES)
    try:
        assert logged == []
        async with client_for(hub, "admin-token-0123") as api:
            groups = {g["name"]: g for g in (await api.get("/groups")).json()}
            assert groups["g1"]["users"] == ["alice", "bob"]
            assert groups["g2"]["users"] == ["carol"] and groups["g2"]["roles"] == ["readers"]
            assert groups["g3"]["users"] == ["dave"] and groups["g3"]["properties"] == {"k": 1}
            assert "readers" in (await api.get("/users/alice")).json()["roles"]
        async with client_for(hub, "service-token-0123") as service:
            assert (await service.get("/user")).json()["name"] == "s1"
        assert hub.options.spawn_throttle_retry_range == [10, 20]
    finally:
        hub.session.kw["bind"].dispose()


async def test_init_spawners_timeout_minus_one_waits_for_every_check(spawn_hub, uname):
    """``init_spawners_timeout = -1`` (JupyterHub: wait forever) checks every recorded
    server before the hub serves."""
    alice = uname("alice")
    first = spawn_hub()
    async with client_for(first, "admin-secret-token") as api:
        await api.post(f"/users/{alice}")
        assert (await api.post(f"/users/{alice}/server")).status_code == 201
    first.lifecycle._slots.clear()  # as if that hub had exited, leaving the server running
    second = spawn_hub(init_spawners_timeout=-1)
    await second.lifecycle.recovery.start()
    assert second.lifecycle.pending(alice, "") is None  # checked, not pending "check"
    await asyncio.wait_for(second.lifecycle.recovered.wait(), 30)
