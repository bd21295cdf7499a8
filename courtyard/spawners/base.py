"""The Spawner contract: how the hub starts, watches and stops one user's server.

A spawner object exists per server (default or named) while the hub deals with it. The
hub sets the attributes in "set by the hub", calls the contract methods, and keeps the
dict from :meth:`Spawner.get_state` in the database so that a restarted hub can call
:meth:`Spawner.load_state` and find the server again. The options follow JupyterHub's
names, so ``c.Spawner.*`` from a ``jupyterhub_config.py`` applies unchanged.

Everything about *when* these methods run (queue, timeouts, readiness check, routes,
tokens, recovery) lives in :mod:`courtyard.lifecycle`, not here.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from traitlets import (
    Any as AnyTrait,
    Bool,
    Callable,
    Dict,
    Float,
    Integer,
    List,
    TraitError,
    Unicode,
    Union,
    default,
    observe,
    validate,
)
from traitlets.config import LoggingConfigurable

from .env import format_template, server_env
from .traits import ByteSize, Command

ProgressEvent = dict[str, Any]  # {"progress": 0-100, "message": str, "html_message"?: str}


def simple_form_value(values: Any) -> Any:
    """JupyterHub's 'simple' form reading: a one-value list is its value, 'on' is True."""
    if isinstance(values, list) and len(values) == 1:
        values = values[0]
    return True if values == "on" else values


@dataclass
class UserInfo:
    """The owner of the server, as spawners and hooks see it (``spawner.user.name``)."""

    name: str
    admin: bool = False
    groups: list[str] = field(default_factory=list)
    auth_state: dict[str, Any] | None = None

    async def get_auth_state(self) -> dict[str, Any] | None:
        """As JupyterHub's ``user.get_auth_state()``, for hooks written against it."""
        return self.auth_state


def uses_system_accounts(authenticator: object) -> bool:
    """Whether an authenticator's users are the machine's accounts (PAM, LocalAuthenticator;
    any of a MultiAuthenticator's)."""
    names = {cls.__name__ for cls in type(authenticator).__mro__}
    if names & {"LocalAuthenticator", "PAMAuthenticator"}:
        return True
    return any(uses_system_accounts(a) for a in getattr(authenticator, "authenticators", []))


def only_system_accounts(authenticator: object) -> bool:
    """Whether every user of an authenticator is a machine account that signed in with its
    own password (PAM; all of a MultiAuthenticator's), so a hub name proves the account."""
    children = getattr(authenticator, "authenticators", None)
    if children:
        return all(only_system_accounts(a) for a in children)
    return uses_system_accounts(authenticator)


@dataclass
class HubInfo:
    """Where the server finds the hub and the hub keeps its files."""

    api_url: str  # e.g. http://127.0.0.1:8081/hub/api
    base_url: str = "/"
    host: str = ""  # scheme://host of the hub's public site; "" unless public_url or
    # subdomain_host is set
    data_dir: str = "."
    system_accounts: bool = False  # the authenticator's users are system accounts (PAM)
    system_accounts_only: bool = False  # every authenticator's users are (only_system_accounts)


class Spawner(LoggingConfigurable):
    """Base class of spawners. Subclasses implement ``start``, ``stop`` and ``poll``.

    Errors: ``start`` raises (any exception) when the server cannot be started; the hub
    then calls ``stop(now=True)``, revokes the server's credentials and reports the
    message as ``Spawn failed: ...``. ``stop`` and ``poll`` should not raise for a server
    that is already gone.
    """

    # -- the contract --------------------------------------------------------------------------
    async def prepare(self) -> None:
        """One-time work before :meth:`start` that ``start_timeout`` does not cover (e.g. the
        first build of an environment); progress events may report it. Default: nothing."""

    async def start(self) -> str:
        """Start the server; return the URL the hub and proxy reach it at (``http://ip:port``).

        Return as soon as the process runs: the hub waits for it to answer HTTP itself.
        """
        raise NotImplementedError

    async def stop(self, now: bool = False) -> None:
        """Stop the server. ``now`` skips the graceful part (used when a start failed)."""
        raise NotImplementedError

    async def poll(self) -> int | None:
        """None while the server runs, else its exit status (0 when it was never started)."""
        raise NotImplementedError

    async def wait_exit(self) -> None:
        """Return as soon as the running server exits, for spawners that can tell at once
        (the hub then calls :meth:`poll` and cleans up without waiting for
        ``poll_interval``). Default: never returns; the hub polls every ``poll_interval``."""
        await asyncio.get_running_loop().create_future()

    def get_state(self) -> dict[str, Any]:
        """What to remember in the database to find this server again after a restart."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Take back what :meth:`get_state` returned (the hub restarted)."""

    def clear_state(self) -> None:
        """Forget the server (it stopped); the next ``get_state`` describes no process."""

    async def progress(self) -> AsyncIterator[ProgressEvent]:
        """Events shown while the server starts; the hub adds the first and the last one."""
        yield {"progress": 50, "message": "Spawning server..."}

    async def read_log(self, tail: int | None = None) -> str | None:
        """The server's output (last ``tail`` lines), or None when this spawner keeps none."""
        return None

    async def delete_forever(self) -> None:
        """JupyterHub's hook: the server is deleted for good (a named server removed, or
        every server of a deleted user: the default server's spawner always, so what
        belongs to the user rather than one server is released there). Only called on a
        stopped server, before its record goes. Default: nothing."""

    async def user_renamed(self, old_name: str) -> None:
        """The owner was renamed from ``old_name`` (called once, on a spawner of their
        default server, under the new name): release what was tied to the old name, which
        someone else may now take. Default: nothing."""

    async def check_adopted(self) -> None:
        """Raise if a server a previous hub left running (state loaded, poll() says alive)
        must not go on running: the hub then stops it, removes its route and revokes its
        credentials. Default: nothing."""

    @classmethod
    def startup_warnings(cls) -> list[str]:
        """Problems worth one warning when the hub starts (e.g. users not isolated)."""
        return []

    def get_env(self) -> dict[str, str]:
        """The environment of the server: ``env_keep``, the hub's variables, ``environment``."""
        env = {k: os.environ[k] for k in self.env_keep if k in os.environ}
        env.update(server_env(self))
        for key, value in self.environment.items():
            env[key] = str(value(self) if callable(value) else value)
        return env

    def get_args(self) -> list[str]:
        """Arguments after ``cmd``; since JupyterHub 2 everything else goes through the env."""
        return (["--debug"] if self.debug else []) + [self.format_string(a) for a in self.args]

    async def get_options_form(self) -> str:
        """The HTML of the spawn form (``options_form`` may be a callable of the spawner)."""
        form = self.options_form
        if callable(form):
            form = form(self)
            if inspect.isawaitable(form):
                form = await form
        return form or ""

    def run_options_from_form(self, formdata: dict[str, list[str]]) -> dict[str, Any]:
        """Turn the form's fields into ``user_options`` with ``options_from_form``."""
        func = self.options_from_form
        if func in ("passthrough", ""):
            return dict(formdata)
        if func == "simple":
            return {key: simple_form_value(values) for key, values in formdata.items()}
        options = (func(formdata, spawner=self) if "spawner" in inspect.signature(func).parameters
                   else func(formdata))
        if not isinstance(options, dict):
            raise ValueError(f"c.Spawner.options_from_form returned {type(options).__name__}, "
                             "not a dict")
        return options

    # -- set by the hub before start() ----------------------------------------------------------
    user = AnyTrait(help="UserInfo of the owner.")
    name = Unicode("", help="Server name; '' for the default server.")
    hub = AnyTrait(help="HubInfo: the hub's API URL, base URL and data directory.")
    server_prefix = Unicode("", help="URL path of this server, e.g. /user/alice/gpu/.")
    server_host = Unicode("", help="The server's own origin with subdomain_host, e.g. "
                          "https://alice.hub.example.org; '' when servers share the hub's.")
    api_token = Unicode("", help="This launch's token (also the OAuth client secret).")
    oauth_client_id = Unicode("", help="OAuth client id, jupyterhub-user-NAME[-SERVER].")
    user_options = Dict(help="Options the user chose for this launch (API body or form).")

    @property
    def log_name(self) -> str:
        """``alice`` or ``alice/gpu``, for log messages."""
        return f"{self.user.name}/{self.name}" if self.name else self.user.name

    def format_string(self, template: str) -> str:
        """Expand ``{username}``, ``{servername}`` and ``%U`` in an option's value."""
        return format_template(template, self.user.name, self.name)

    # -- options: c.Spawner.* (JupyterHub's names) -----------------------------------------------
    cmd = Command(["courtyard-singleuser"], help="Command that starts the single-user "
                  "server; a list, or a string split like a shell would. JupyterHub's "
                  "jupyterhub-singleuser works too.").tag(config=True)
    args = List(Unicode(), help="Extra arguments after cmd ({username} and %U expand).").tag(
        config=True)
    environment = Dict(help="Extra environment variables; a value may be a callable of the "
                       "spawner. Applied last, so they override the hub's.").tag(config=True)
    env_keep = List(
        ["LANG", "LC_ALL", "JUPYTERHUB_SINGLEUSER_APP"],
        help="Variables of the hub's environment passed on to servers. Unlike JupyterHub's "
        "default, not PATH, PYTHONPATH, CONDA_* or VIRTUAL_ENV: the hub's own environment "
        "is no business of users' servers (LocalProcessSpawner gives them the system's "
        "standard PATH); add names here to pass them on.").tag(config=True)
    notebook_dir = Unicode("", help="Root directory of the server (JUPYTERHUB_ROOT_DIR); "
                           "{username} and %U expand, ~ is the user's home.").tag(config=True)
    default_url = Unicode("/lab", help="Page a server opens at (JUPYTERHUB_DEFAULT_URL); "
                          "{username} and %U expand.").tag(config=True)
    debug = Bool(False, help="Run servers with --debug and JUPYTERHUB_DEBUG=1.").tag(config=True)
    disable_user_config = Bool(False, help="Tell servers to ignore the user's own Jupyter "
                               "config (JUPYTERHUB_DISABLE_USER_CONFIG=1).").tag(config=True)
    start_timeout = Float(60, help="Seconds start() may take before the spawn fails.").tag(
        config=True)
    http_timeout = Float(30, help="Seconds a started server has to answer HTTP at "
                         "{prefix}api before the spawn fails.").tag(config=True)
    poll_interval = Float(30, help="Seconds between checks that a running server is still "
                          "alive (with 10% jitter).").tag(config=True)
    consecutive_failure_limit = Integer(0, help="Shut the hub down after this many failed "
                                        "spawns in a row (0: never).").tag(config=True)
    ip = Unicode("127.0.0.1", help="IP the server listens on.").tag(config=True)
    port = Integer(0, help="Port the server listens on (0: a free port per launch).").tag(
        config=True)
    mem_limit = ByteSize(None, allow_none=True, help="Memory limit, e.g. '2G' (bytes; passed "
                         "as MEM_LIMIT; enforced by spawners that can).").tag(config=True)
    mem_guarantee = ByteSize(None, allow_none=True, help="Memory guarantee, e.g. '1G' "
                             "(MEM_GUARANTEE).").tag(config=True)
    cpu_limit = Float(None, allow_none=True, help="CPU limit in cores (CPU_LIMIT).").tag(
        config=True)
    cpu_guarantee = Float(None, allow_none=True, help="CPU guarantee in cores "
                          "(CPU_GUARANTEE).").tag(config=True)
    pre_spawn_hook = AnyTrait(None, allow_none=True, help="Callable of the spawner run "
                              "before each start (may be async).").tag(config=True)
    post_stop_hook = AnyTrait(None, allow_none=True, help="Callable of the spawner run "
                              "after each stop (may be async).").tag(config=True)
    options_form = Union([Unicode(), Callable()], default_value="", help="HTML fields of the "
                         "spawn form, or a callable of the spawner returning them.").tag(
        config=True)
    options_from_form = Union([Callable(), Unicode()], help="Callable turning form data "
                              "{field: [values]} into user_options (may take spawner= too), "
                              "or, as in JupyterHub, 'passthrough' (the form data as it "
                              "is) or 'simple' (one-value lists unwrapped, a checked "
                              "box's 'on' made true).").tag(config=True)
    oauth_client_allowed_scopes = Union([List(Unicode()), Callable()], default_value=[],
                                        help="Extra scopes OAuth tokens issued to a server "
                                        "may carry; or a callable of the spawner returning "
                                        "them (may be async).").tag(config=True)
    server_token_scopes = Union([List(Unicode()), Callable()], default_value=[],
                                help="Scopes of the server's API token (default: the server "
                                "role: users:activity!user, access:servers!server); or a "
                                "callable of the spawner returning them (may be async)."
                                ).tag(config=True)

    profile_list = Union([List(Dict()), Callable()], default_value=[], help="Choices shown "
                         "as cards on the spawn page (KubeSpawner's): dicts with display_name, "
                         "description, slug, default and kubespawner_override (values for this "
                         "spawner's options). The choice arrives as user_options {'profile': "
                         "slug}. May be a callable of the spawner.").tag(config=True)

    @default("options_from_form")
    def _default_options_from_form(self) -> Any:
        return lambda formdata: formdata

    @validate("options_from_form")
    def _check_options_from_form(self, proposal: dict[str, Any]) -> Any:
        value = proposal["value"]
        if isinstance(value, str) and value not in ("passthrough", "simple", ""):
            raise TraitError(f"options_from_form = {value!r}: use a callable, 'passthrough' "
                             "or 'simple'")
        return value

    async def resolved_scopes(self, name: str) -> list[str]:
        """``server_token_scopes`` or ``oauth_client_allowed_scopes``, calling the callable
        JupyterHub allows in their place (with the spawner; it may be async)."""
        value = getattr(self, name)
        if callable(value):
            value = value(self)
            if inspect.isawaitable(value):
                value = await value
        if not isinstance(value, list | tuple | set) or not all(
                isinstance(scope, str) for scope in value):
            raise ValueError(f"c.Spawner.{name}: the callable must return a list of scopes")
        return list(value)

    # -- profiles (web/spawn.py renders them; a choice applies here) --------------------------
    def profiles(self) -> list[dict[str, Any]]:
        """``profile_list`` with a slug on every entry (a callable must not be async)."""
        profiles = self.profile_list
        if callable(profiles):
            profiles = profiles(self)
            if inspect.isawaitable(profiles):
                raise TypeError("c.Spawner.profile_list: an async callable is not supported")
        result = []
        for n, profile in enumerate(profiles or []):
            slug = profile.get("slug") or "".join(
                c if c.isalnum() else "-" for c in str(profile.get("display_name", n)).lower())
            result.append({**profile, "slug": slug})
        return result

    @observe("user_options")
    def _apply_profile(self, change: dict[str, Any]) -> None:
        """A chosen profile's ``kubespawner_override`` sets this spawner's options."""
        slug = (change["new"] or {}).get("profile")
        if not slug or not self.profile_list:
            return
        profile = next((p for p in self.profiles() if p["slug"] == slug), None)
        if profile is None:
            raise ValueError(f"No such profile {slug!r}; choose one of "
                             f"{', '.join(p['slug'] for p in self.profiles())}")
        for key, value in (profile.get("kubespawner_override") or {}).items():
            if self.has_trait(key):
                setattr(self, key, value)
            else:
                self.log.warning("Profile %r sets %r, which %s does not have", slug, key,
                                 type(self).__name__)
