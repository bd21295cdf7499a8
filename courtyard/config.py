"""Loading configuration files, JupyterHub compatibility, and turning class names into classes.

A ``jupyterhub_config.py`` loads unchanged: ``c.JupyterHub.*`` is read as ``c.Courtyard.*``,
JupyterHub's class paths and short names map to Courtyard's classes, and an option Courtyard
does not know gets one warning naming it.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from traitlets import TraitError
from traitlets.config import Config, Configurable
from traitlets.config.loader import ConfigFileNotFound, PyFileConfigLoader

from .errors import ConfigError

log = logging.getLogger("courtyard.config")
C = TypeVar("C", bound=Configurable)  # a class built from the config: what build_configurable() returns

CONFIG_FILES = ("courtyard_config.py", "jupyterhub_config.py")

_NATIVE = "courtyard.auth.native:NativeAuthenticator"
_SHARED = "courtyard.auth.shared:SharedPasswordAuthenticator"
_PAM = "courtyard.auth.pam:PAMAuthenticator"
_LDAP = "courtyard.auth.ldap:LDAPAuthenticator"
_OAUTH = "courtyard.auth.oauth:GenericOAuthenticator"
_OIDC = "courtyard.auth.oauth:OIDCAuthenticator"
_GITHUB = "courtyard.auth.oauth_presets:GitHubOAuthenticator"
_GITLAB = "courtyard.auth.oauth_presets:GitLabOAuthenticator"
_GOOGLE = "courtyard.auth.oauth_presets:GoogleOAuthenticator"
_AZURE = "courtyard.auth.oauth_presets:AzureAdOAuthenticator"
# authenticators: short names, JupyterHub's entry points, and the class paths of JupyterHub,
# nativeauthenticator, ldapauthenticator and oauthenticator
AUTHENTICATOR_ALIASES = {
    "native": _NATIVE, "nativeauthenticator.NativeAuthenticator": _NATIVE,
    "nativeauthenticator.nativeauthenticator.NativeAuthenticator": _NATIVE,
    "shared-password": _SHARED, "shared": _SHARED,
    "jupyterhub.authenticators.shared.SharedPasswordAuthenticator": _SHARED,
    "jupyterhub.auth.SharedPasswordAuthenticator": _SHARED,
    "pam": _PAM, "jupyterhub.auth.PAMAuthenticator": _PAM,
    "jupyterhub.auth.LocalAuthenticator": _PAM,
    "ldap": _LDAP, "ldapauthenticator": _LDAP, "ldapauthenticator.LDAPAuthenticator": _LDAP,
    "ldapauthenticator.ldapauthenticator.LDAPAuthenticator": _LDAP,
    "oauth": _OAUTH, "generic": _OAUTH, "generic-oauth": _OAUTH,
    "oauthenticator.GenericOAuthenticator": _OAUTH,
    "oauthenticator.generic.GenericOAuthenticator": _OAUTH,
    "oidc": _OIDC, "oauthenticator.oidc.OIDCOAuthenticator": _OIDC,
    "github": _GITHUB, "oauthenticator.GitHubOAuthenticator": _GITHUB,
    "oauthenticator.github.GitHubOAuthenticator": _GITHUB,
    "gitlab": _GITLAB, "oauthenticator.GitLabOAuthenticator": _GITLAB,
    "oauthenticator.gitlab.GitLabOAuthenticator": _GITLAB,
    "google": _GOOGLE, "oauthenticator.GoogleOAuthenticator": _GOOGLE,
    "oauthenticator.google.GoogleOAuthenticator": _GOOGLE,
    "azuread": _AZURE, "oauthenticator.AzureAdOAuthenticator": _AZURE,
    "oauthenticator.azuread.AzureAdOAuthenticator": _AZURE,
}

# short name or JupyterHub class path -> "module:Class" of Courtyard's implementation
CLASS_ALIASES: dict[str, dict[str, str]] = {
    "authenticator": {
        "dummy": "courtyard.auth.dummy:DummyAuthenticator",
        "null": "courtyard.auth.dummy:NullAuthenticator",
        "jupyterhub.auth.DummyAuthenticator": "courtyard.auth.dummy:DummyAuthenticator",
        "jupyterhub.auth.NullAuthenticator": "courtyard.auth.dummy:NullAuthenticator",
        "jupyterhub.authenticators.dummy.DummyAuthenticator":
            "courtyard.auth.dummy:DummyAuthenticator",
        **AUTHENTICATOR_ALIASES,
    },
    "spawner": {
        "local": "courtyard.spawners.local:LocalProcessSpawner",
        "localprocess": "courtyard.spawners.local:LocalProcessSpawner",
        "jupyterhub.spawner.LocalProcessSpawner": "courtyard.spawners.local:LocalProcessSpawner",
        # every server as the hub's own user (root if the hub is root): only if chosen by name
        "simple": "courtyard.spawners.local:SimpleLocalProcessSpawner",
        "jupyterhub.spawner.SimpleLocalProcessSpawner":
            "courtyard.spawners.local:SimpleLocalProcessSpawner",
    },
    "proxy": {
        "builtin": "courtyard.proxy.rest:BuiltinProxy",
        "courtyard": "courtyard.proxy.rest:BuiltinProxy",
        "chp": "courtyard.proxy.rest:ConfigurableHTTPProxy",
        "configurable-http-proxy": "courtyard.proxy.rest:ConfigurableHTTPProxy",
        "jupyterhub.proxy.ConfigurableHTTPProxy": "courtyard.proxy.rest:ConfigurableHTTPProxy",
    },
}


def find_config_file(path: str | None) -> Path | None:
    """The file to load: ``path`` if given, else the first of CONFIG_FILES in the cwd."""
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {path} not found; create it with "
                              f"'courtyard generate-config -f {path}' or drop -f")
        return p
    for name in CONFIG_FILES:
        p = Path(name)
        if p.is_file():
            return p
    return None


def load_config_file(path: Path | None) -> Config:
    """Run a config file and return its Config, with ``c.JupyterHub`` folded into ``c.Courtyard``."""
    if path is None:
        return Config()
    loader = PyFileConfigLoader(path.name, str(path.parent.resolve()), log=log)
    try:
        config = loader.load_config()
    except ConfigFileNotFound:
        raise ConfigError(f"config file {path} not found") from None
    except Exception as e:
        cause = e.__cause__ or e
        raise ConfigError(f"{path}: the file raised {type(cause).__name__}: {cause}; fix it "
                          "and try again") from None
    return normalize(config)


# JupyterHub's old option names, which JupyterHub 6 still forwards to the new ones (in any
# authenticator's section): c.Authenticator.whitelist is c.Authenticator.allowed_users
RENAMED_OPTIONS = {"whitelist": "allowed_users", "blacklist": "blocked_users",
                   "group_whitelist": "allowed_groups"}
# c.JupyterHub.X, deprecated in JupyterHub 0.8 and still forwarded: c.ConfigurableHTTPProxy.Y
PROXY_OPTIONS = {"proxy_cmd": "command", "debug_proxy": "debug", "proxy_auth_token": "auth_token"}

# JupyterHub options Courtyard has no trait for, and what becomes of each: a value in the
# second item (None: any value) asks for nothing Courtyard lacks and passes silently; any
# other value gets the message as its warning. Only consulted for options no class knows.
JUPYTERHUB_ONLY: dict[str, tuple[str, tuple[Any, ...] | None]] = {
    # command-line flags and options that do nothing in JupyterHub either
    "Courtyard.answer_yes": ("", None),
    "Courtyard.generate_config": ("", None),
    "Courtyard.config_file": ("", None),
    "Courtyard.confirm_no_ssl": ("", None),  # "DEPRECATED: does nothing"
    "Courtyard.admin_access": ("", None),  # since 2.0 the admin role holds access:servers
    "Courtyard.upgrade_db": ("the hub does not migrate its database by itself; run "
                             "'courtyard upgrade-db'", (False,)),
    "Courtyard.reset_db": ("not supported; start with a new db_url instead", (False,)),
    "Courtyard.tornado_settings": ("Courtyard does not run Tornado; of these settings only "
                                   "slow_spawn_timeout is read, the rest is ignored", ({},)),
    "Courtyard.extra_handlers": ("Tornado handlers cannot run in Courtyard; run them as a "
                                 "service", ([],)),
    "Courtyard.jinja_environment_options": ("not supported; ignored", ({},)),
    "Courtyard.internal_ssl": ("TLS between the hub, the proxy and servers is not supported",
                               (False,)),
    "Courtyard.generate_certs": ("internal TLS is not supported", (False,)),
    "Courtyard.recreate_internal_certs": ("internal TLS is not supported", (False,)),
    "Courtyard.internal_certs_location": ("internal TLS is not supported", ("internal-ssl",)),
    "Courtyard.trusted_alt_names": ("internal TLS is not supported", ([],)),
    "Courtyard.external_ssl_authorities": ("internal TLS is not supported", ({},)),
    "Courtyard.cookie_host_prefix_enabled": ("the __Host- cookie prefix is not supported",
                                             (False,)),
    "Courtyard.db_kwargs": ("not supported; Courtyard sets the engine's options", ({},)),
    "Courtyard.debug_db": ("SQL statements are not logged", (False,)),
    "Courtyard.extra_log_file": ("not supported; redirect the hub's output instead", ("",)),
    "Courtyard.extra_log_handlers": ("not supported; configure logging in the config file "
                                     "instead", ([],)),
    "Courtyard.extra_user_scopes": ("not supported; give the 'user' role its scopes in "
                                    "load_roles", (set(), [])),
    "Courtyard.forwarded_host_header": ("not supported; ignored", ("",)),
    "Courtyard.hub_routespec": ("the hub's route is always the base URL", ("/",)),
    "Courtyard.hub_socket_mode": ("the hub does not listen on a Unix socket", None),
    "Courtyard.implicit_spawn_seconds": ("not supported; ignored", (0,)),
    "Courtyard.pid_file": ("not supported; ignored", ("",)),
    "Courtyard.proxy_check_interval": ("the proxy is checked every 5 seconds", (5,)),
    "Courtyard.service_check_interval": ("managed services are restarted when they exit; "
                                         "external ones are not probed", (60,)),
    "Courtyard.active_user_window": ("not supported; ignored", (1800,)),
    "Courtyard.user_redirect_hook": ("not supported; /hub/user-redirect/ goes to the user's "
                                     "default server", (None,)),
    # config tokens are always stretched and then verified fast: nothing to trust or not
    "Courtyard.trust_user_provided_tokens": ("", None),
    "Courtyard.allow_existing_invalid_named_servers": (
        "existing servers with names 6.0 refuses can be started and deleted ('allow-start')",
        ("allow-start",)),
    "Authenticator.any_allow_config": ("", None),  # only silences a JupyterHub warning
    "PAMAuthenticator.executor_threads": ("", None),  # tuning of JupyterHub's thread pool
    "PAMAuthenticator.open_sessions": ("PAM sessions are not opened", (False,)),
    "Spawner.poll_jitter": ("", None),
    "Spawner.ssl_alt_names": ("internal TLS is not supported", ([],)),
    "Spawner.ssl_alt_names_include_local": ("internal TLS is not supported", (True,)),
    "Spawner.hub_connect_url": ("use c.JupyterHub.hub_connect_url for every server", (None,)),
    "ConfigurableHTTPProxy.check_running_interval": ("the proxy is checked every 5 seconds",
                                                     (5,)),
}


def fold_deprecated_names(config: Config) -> None:
    """Forward the old names JupyterHub 6 still forwards (``whitelist``, ``proxy_auth_token``,
    ``hub_connect_ip``, ...) to the options Courtyard reads; an explicit new name wins."""
    for section in list(config.values()):
        if not isinstance(section, Config):
            continue
        for old, new in RENAMED_OPTIONS.items():
            if old in section:
                value = section.pop(old)
                if new not in section:
                    section[new] = value
    hub = config.get("Courtyard") if "Courtyard" in config else None
    if not hub:
        return
    from .options import Courtyard

    native = set(Courtyard.class_trait_names(config=True))  # those Courtyard reads itself stay
    proxy: dict[str, Any] = {new: hub.pop(old) for old, new in PROXY_OPTIONS.items()
                             if old in hub and old not in native}
    if "proxy_api_ip" in hub or ("proxy_api_port" in hub and "proxy_api_port" not in native):
        ip = hub.pop("proxy_api_ip", "") or "127.0.0.1"
        take = hub.get if "proxy_api_port" in native else hub.pop
        port = take("proxy_api_port", 0) or hub.get("port", 8000) + 1
        proxy["api_url"] = f"http://{ip}:{port}"
    for key, value in proxy.items():
        if key not in config.ConfigurableHTTPProxy:
            config.ConfigurableHTTPProxy[key] = value
    if "hub_connect_ip" in hub or "hub_connect_port" in hub:
        ip = hub.pop("hub_connect_ip", "") or hub.get("hub_ip", "127.0.0.1")
        port = hub.pop("hub_connect_port", 0) or hub.get("hub_port", 8081)
        if not hub.get("hub_connect_url"):
            hub.hub_connect_url = f"http://{ip}:{port}"
    if "tornado_settings" in hub and isinstance(hub.tornado_settings, dict):
        settings = dict(hub.tornado_settings)
        if "slow_spawn_timeout" in settings and "slow_spawn_timeout" not in hub:
            hub.slow_spawn_timeout = settings["slow_spawn_timeout"]
        settings.pop("slow_spawn_timeout", None)
        hub.tornado_settings = settings


# c.ConfigurableHTTPProxy options that mean the same for the built-in proxy, which replaces CHP
CHP_SHARED_OPTIONS = ("api_url", "auth_token", "should_start", "extra_routes", "debug")


def normalize(config: Config) -> Config:
    """Fold ``c.JupyterHub`` into ``c.Courtyard`` (explicit ``c.Courtyard`` values win), and
    let the built-in proxy follow a jupyterhub_config.py's ``c.ConfigurableHTTPProxy`` API
    settings (explicit ``c.BuiltinProxy`` values win)."""
    if "JupyterHub" in config:
        merged = Config(dict(config["JupyterHub"]))
        merged.update(config.get("Courtyard", Config()))
        config["Courtyard"] = merged
        del config["JupyterHub"]
    fold_deprecated_names(config)
    chp = config.get("ConfigurableHTTPProxy") if "ConfigurableHTTPProxy" in config else None
    if chp:
        shared = {k: chp[k] for k in CHP_SHARED_OPTIONS if k in chp}
        if shared:
            builtin = Config(shared)
            if "BuiltinProxy" in config:
                builtin.update(config["BuiltinProxy"])
            config["BuiltinProxy"] = builtin
    return config


def resolve_class(kind: str, value: object, base: type[C]) -> type[C]:
    """A class from a short name, a JupyterHub class path, a dotted path or a class."""
    cls: object
    if isinstance(value, type):
        cls = value
    elif isinstance(value, str):
        target = CLASS_ALIASES.get(kind, {}).get(value)
        if target is None:
            if value.startswith(("jupyterhub.", "nativeauthenticator", "ldapauthenticator",
                                 "oauthenticator")) or "." not in value:
                known = ", ".join(sorted(n for n in CLASS_ALIASES.get(kind, {}) if "." not in n))
                raise ConfigError(f"{kind}_class = {value!r} is not available in Courtyard; "
                                  f"use one of: {known}")
            module, _, name = value.rpartition(".")
            target = f"{module}:{name}"
        module, _, name = target.partition(":")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"{kind}_class = {value!r} cannot be loaded ({e}); check the "
                              "name or install the package that provides it") from None
    else:
        raise ConfigError(f"{kind}_class must be a name or a class, not {type(value).__name__}")
    if kind == "spawner" and isinstance(cls, type) and not issubclass(cls, base):
        from .compat.spawner import adapter_for, is_jupyterhub_spawner

        if is_jupyterhub_spawner(cls):  # JupyterHub's contract, run by Courtyard's lifecycle
            cls = adapter_for(cls)
    if kind == "authenticator" and isinstance(cls, type) and not issubclass(cls, base):
        from .compat.auth import adapt_authenticator

        adapted = adapt_authenticator(cls)  # JupyterHub's contract, or oauthenticator's mapped
        if adapted is not None:
            cls = adapted
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError(f"{kind}_class = {value!r} is not a {base.__name__} subclass")
    return cls


def unknown_options(config: Config, classes: Iterable[type[Configurable]]) -> list[str]:
    """``c.Class.option`` names in ``config`` that none of ``classes`` understands."""
    by_name: dict[str, set[str]] = {}
    for cls in classes:
        for klass in cls.mro():
            if isinstance(klass, type) and issubclass(klass, Configurable):
                names = set(cls.class_trait_names(config=True))
                by_name.setdefault(klass.__name__, set()).update(names)
    problems = []
    for section, values in config.items():
        if not isinstance(values, Config):
            continue
        known = by_name.get(section)
        shown = "JupyterHub" if section == "Courtyard" else section
        if known is None:
            problems.append(f"c.{section} ({', '.join(sorted(values))}) is not used by Courtyard")
            continue
        for key in sorted(values):
            if key not in known:
                problem = _jupyterhub_only(section, key, values[key])
                if problem is None:
                    problem = f"c.{shown}.{key} is not supported by Courtyard; it is ignored"
                if problem:
                    problems.append(problem)
    return problems


def _jupyterhub_only(section: str, key: str, value: object) -> str | None:
    """The warning for a JupyterHub option Courtyard lacks: "" for none, None if unlisted."""
    families = [family for family in ("Spawner", "Authenticator") if section.endswith(family)]
    for name in (section, *families):
        entry = JUPYTERHUB_ONLY.get(f"{name}.{key}")
        if entry is not None:
            message, inert = entry
            if inert is None or any(value == v and type(value) is type(v) for v in inert):
                return ""
            shown = "JupyterHub" if section == "Courtyard" else section
            return f"c.{shown}.{key}: {message}"
    return None


class _NotRecognized(logging.Filter):
    """Drops traitlets' "Config option X not recognized" log line, which a logging
    configurable writes at every instance (every spawn): unknown_options() reports each
    option once, and says what Courtyard does instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "not recognized by" not in str(record.msg)


_NOT_RECOGNIZED = _NotRecognized()


def build_configurable(cls: type[C], config: Config, **kwargs: Any) -> C:
    """Instantiate a configurable; a bad value becomes a one-line ConfigError naming it."""
    loggers = [logger for logger in (logging.getLogger("traitlets"), kwargs.get("log"))
               if isinstance(logger, logging.Logger)]
    for logger in loggers:
        logger.addFilter(_NOT_RECOGNIZED)
    try:
        with warnings.catch_warnings():
            # unknown options are reported once, by unknown_options()
            warnings.filterwarnings("ignore", message="Config option .* not recognized")
            return cls(config=config, **kwargs)
    except TraitError as e:
        raise ConfigError(f"{cls.__name__}: {one_line_message(e)}; fix the value in your config "
                          "file") from None
    finally:
        for logger in loggers:
            logger.removeFilter(_NOT_RECOGNIZED)


def one_line_message(e: BaseException) -> str:
    return " ".join(str(e).split())
