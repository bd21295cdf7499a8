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
from typing import Any

from traitlets import TraitError
from traitlets.config import Config, Configurable
from traitlets.config.loader import ConfigFileNotFound, PyFileConfigLoader

from .errors import ConfigError

log = logging.getLogger("courtyard.config")

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


def register_alias(kind: str, target: str, *names: str) -> None:
    """Let a component module add its short names (used by later subsystems)."""
    for name in names:
        CLASS_ALIASES[kind][name] = target


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
    chp = config.get("ConfigurableHTTPProxy") if "ConfigurableHTTPProxy" in config else None
    if chp:
        shared = {k: chp[k] for k in CHP_SHARED_OPTIONS if k in chp}
        if shared:
            builtin = Config(shared)
            if "BuiltinProxy" in config:
                builtin.update(config["BuiltinProxy"])
            config["BuiltinProxy"] = builtin
    return config


def resolve_class(kind: str, value: Any, base: type) -> type:
    """A class from a short name, a JupyterHub class path, a dotted path or a class."""
    if isinstance(value, type):
        cls = value
    elif isinstance(value, str):
        target = CLASS_ALIASES.get(kind, {}).get(value)
        if target is None:
            if value.startswith(("jupyterhub.", "nativeauthenticator", "ldapauthenticator",
                                 "oauthenticator", "batchspawner", "kubespawner")) or "." not in value:
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
                problems.append(f"c.{shown}.{key} is not supported by Courtyard; it is ignored")
    return problems


def build(cls: type[Configurable], config: Config, **kwargs: Any) -> Any:
    """Instantiate a configurable; a bad value becomes a one-line ConfigError naming it."""
    try:
        with warnings.catch_warnings():
            # unknown options are reported once, by unknown_options()
            warnings.filterwarnings("ignore", message="Config option .* not recognized")
            return cls(config=config, **kwargs)
    except TraitError as e:
        raise ConfigError(f"{cls.__name__}: {one_line(e)}; fix the value in your config "
                          "file") from None


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split())
