"""Every documented option does something: each ``.tag(config=True)`` trait of the classes in
``docs/configuration.md`` is read somewhere in ``courtyard/`` besides its definition.

A static check over the source, so an option that is documented but read nowhere (as
``manage_roles``, ``delete_invalid_users`` and ``trust_user_provided_tokens`` once were)
fails here, not in a user's deployment. "Read" means an attribute load (``x.name``), a
``getattr``/``hasattr`` with the name, a subscript or ``.get()`` with it as key, or an
``@observe`` of it: a name that only appears in a list of names forwarded elsewhere does not
count. A JupyterHub option removed for doing nothing keeps loading (``JUPYTERHUB_ONLY``).
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

from traitlets.config import Config

import courtyard
from courtyard.config import unknown_options
from courtyard.docs import _own_traits, documented_classes
from courtyard.options import Courtyard

SOURCE = Path(courtyard.__file__).parent


def _key(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def reads() -> Counter[str]:
    """How often each name is read in ``courtyard/`` (definitions are assignments to bare
    names in class bodies, so they never count)."""
    seen: Counter[str] = Counter()
    for path in SOURCE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                seen[node.attr] += 1
            elif isinstance(node, ast.Subscript) and _key(node.slice):
                seen[_key(node.slice)] += 1  # type: ignore[index]
            elif isinstance(node, ast.Call):
                func, args = node.func, node.args
                if isinstance(func, ast.Name) and func.id in ("getattr", "hasattr") \
                        and len(args) > 1 and _key(args[1]):
                    seen[_key(args[1])] += 1  # type: ignore[index]
                elif isinstance(func, ast.Attribute) and func.attr == "get" and args \
                        and _key(args[0]):
                    seen[_key(args[0])] += 1  # type: ignore[index]
                elif isinstance(func, ast.Name) and func.id == "observe":
                    seen.update(k for a in args if (k := _key(a)))
    return seen


def test_every_documented_option_is_read() -> None:
    seen = reads()
    unread = [f"c.{cls.__name__}.{name}" for cls in documented_classes()
              for name in _own_traits(cls) if not seen[name]]
    assert unread == []


def test_the_check_sees_an_unread_option() -> None:
    """The check itself works: a name defined but never read is reported."""
    assert reads()["an_option_nobody_reads"] == 0
    assert reads()["auth_refresh_age"] > 0


def test_removed_option_still_loads_silently() -> None:
    """``trust_user_provided_tokens`` did nothing (config tokens are always hashed, then
    verified fast): it is gone, and a JupyterHub config setting it loads without a word."""
    config = Config()
    config.Courtyard.trust_user_provided_tokens = True
    assert "trust_user_provided_tokens" not in Courtyard.class_trait_names(config=True)
    assert unknown_options(config, [Courtyard]) == []
