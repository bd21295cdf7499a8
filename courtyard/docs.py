"""Documents generated from the option tables: the commented config file and docs/configuration.md."""

from __future__ import annotations

import textwrap
from typing import Any

from traitlets import HasTraits

from .auth.base import Authenticator
from .options import Courtyard


def documented_classes() -> list[type[HasTraits]]:
    """Classes whose options are documented, hub first; subsystems add theirs here."""
    classes: list[type[HasTraits]] = [Courtyard, Authenticator]
    for module, name in (("courtyard.auth.dummy", "DummyAuthenticator"),
                         ("courtyard.auth.native", "NativeAuthenticator"),
                         ("courtyard.auth.shared", "SharedPasswordAuthenticator"),
                         ("courtyard.auth.pam", "LocalAuthenticator"),
                         ("courtyard.auth.pam", "PAMAuthenticator"),
                         ("courtyard.auth.ldap", "LDAPAuthenticator"),
                         ("courtyard.auth.oauth", "OAuthenticator"),
                         ("courtyard.auth.oauth_presets", "GitHubOAuthenticator"),
                         ("courtyard.auth.oauth_presets", "GitLabOAuthenticator"),
                         ("courtyard.auth.oauth_presets", "GoogleOAuthenticator"),
                         ("courtyard.auth.oauth_presets", "AzureAdOAuthenticator"),
                         ("courtyard.spawners.base", "Spawner"),
                         ("courtyard.spawners.local", "LocalProcessSpawner"),
                         ("courtyard.spawners.local", "SimpleLocalProcessSpawner"),
                         ("courtyard.proxy.base", "Proxy"),
                         ("courtyard.proxy.rest", "ConfigurableHTTPProxy")):
        try:
            mod = __import__(module, fromlist=[name])
            classes.append(getattr(mod, name))
        except (ImportError, AttributeError):
            continue
    return classes


def _own_traits(cls: type[HasTraits]) -> dict[str, Any]:
    traits = cls.class_traits(config=True)
    parents = [b for b in cls.__bases__ if issubclass(b, HasTraits)]
    inherited: set[str] = set()
    for base in parents:
        inherited |= set(base.class_traits(config=True))
    return {k: v for k, v in sorted(traits.items()) if k not in inherited}


def _default(trait: Any) -> str:
    try:
        value = trait.default()
    except Exception:
        value = trait.default_value
    if callable(value) and not isinstance(value, type):
        return "(computed)"
    return repr(value)


def config_file_text() -> str:
    lines = ["# Configuration file for Courtyard.", "#",
             "# Every option with its help and default. c.JupyterHub.* works too.", "",
             "c = get_config()  # noqa", ""]
    for cls in documented_classes():
        traits = _own_traits(cls)
        if not traits:
            continue
        lines += ["#" + "-" * 78, f"# {cls.__name__}", "#" + "-" * 78, ""]
        for name, trait in traits.items():
            help_text = trait.help or ""
            for line in textwrap.wrap(help_text, 76):
                lines.append(f"## {line}")
            lines.append(f"#  Default: {_default(trait)}")
            lines.append(f"# c.{cls.__name__}.{name} = {_default(trait)}")
            lines.append("")
    return "\n".join(lines)


def configuration_markdown() -> str:
    lines = ["# Configuration reference", "",
             "Generated from the option tables by `python -m courtyard.docs`; do not edit by "
             "hand. Put options in `courtyard_config.py` (or pass `-f FILE`); "
             "`c.JupyterHub.X` is read as `c.Courtyard.X`, so a `jupyterhub_config.py` loads "
             "unchanged.", ""]
    for cls in documented_classes():
        traits = _own_traits(cls)
        if not traits:
            continue
        lines += [f"## `{cls.__name__}`", "", "| option | type | default | meaning |",
                  "|---|---|---|---|"]
        for name, trait in traits.items():
            help_text = (trait.help or "").replace("|", "\\|").replace("\n", " ")
            default = _default(trait).replace("|", "\\|")
            lines.append(f"| `c.{cls.__name__}.{name}` | {type(trait).__name__} | "
                         f"`{default}` | {help_text} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(configuration_markdown(), end="")
