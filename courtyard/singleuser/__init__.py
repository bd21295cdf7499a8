"""What runs inside a user's notebook server: ``courtyard-singleuser``.

A Jupyter Server (JupyterLab by default) configured from the environment the hub sets,
signing visitors in through the hub's OAuth provider and reporting activity back. It is
built on Jupyter Server's extension points: an :class:`~.extension.SingleUserApp`
extension, an ``IdentityProvider`` and an ``Authorizer`` (:mod:`.auth`). See
``docs/singleuser.md``.

Importing this package is cheap; Jupyter Server is imported only by :func:`main`.
"""

from __future__ import annotations

import sys
from typing import Any


def _skip_slow_format_checker() -> None:
    """Keep jsonschema from building rfc3987-syntax's Lark grammar at import (~2 s).

    jupyter_events validates event schemas with jsonschema's optional format checkers; the
    ``iri``/``iri-reference`` checker imports ``rfc3987_syntax``, which compiles a grammar at
    import time. No Jupyter Server event schema uses those formats, so the checker is left
    out (as if the optional package were not installed). ``COURTYARD_SINGLEUSER_IRI_FORMAT=1``
    keeps it.
    """
    import os

    if os.environ.get("COURTYARD_SINGLEUSER_IRI_FORMAT", "") not in ("", "0"):
        return
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]


def _import_jupyterlab_without_node() -> None:
    """Import ``jupyterlab.labapp`` without running ``node yarn.js config`` (~1 s).

    At import, JupyterLab builds a module-level helper to learn its own version, and that
    helper asks yarn for the npm registry when ``node`` is on PATH; the registry is never
    used for the version. Hiding node for the length of this one import skips the
    subprocess and changes nothing else: every later use of JupyterLab sees the full PATH.
    ``COURTYARD_SINGLEUSER_LAB_NODE=1`` turns this off.
    """
    import importlib.util
    import os

    if os.environ.get("COURTYARD_SINGLEUSER_LAB_NODE", "") not in ("", "0"):
        return
    if "jupyterlab.labapp" in sys.modules or importlib.util.find_spec("jupyterlab") is None:
        return
    path = os.environ.get("PATH", "")
    dirs = path.split(os.pathsep)
    without = [d for d in dirs if not any(os.access(os.path.join(d, name), os.X_OK)
                                          for name in ("node", "nodejs"))]
    os.environ["PATH"] = os.pathsep.join(without)
    try:
        import jupyterlab.labapp  # noqa: F401
    except Exception:  # JupyterLab broken: the server will say so when it loads it
        pass
    finally:
        os.environ["PATH"] = path


def _disable_user_config() -> None:
    """``JUPYTERHUB_DISABLE_USER_CONFIG``: no Jupyter config from the user's home.

    ``~/.jupyter`` is replaced by an empty directory and the user site's ``etc/jupyter`` is
    not read; config in the environment's prefix and in ``/etc/jupyter`` still applies.
    The user's data directory (``~/.local/share/jupyter``: JupyterLab extensions, whose
    code runs in the browser of everyone who opens the server, and kernels) and
    ``$JUPYTER_PATH`` entries in the home are left out, and so is the user's site-packages,
    as JupyterHub's ``disable_user_config`` does.
    """
    import os
    import site
    import tempfile

    home = os.path.realpath(os.path.expanduser("~"))

    def in_home(path: str) -> bool:
        real = os.path.realpath(path)
        return real == home or real.startswith(home.rstrip(os.sep) + os.sep)

    os.environ["JUPYTER_CONFIG_DIR"] = tempfile.mkdtemp(prefix="jupyter-no-user-config-")
    os.environ["JUPYTER_DATA_DIR"] = tempfile.mkdtemp(prefix="jupyter-no-user-data-")
    extra = [p for p in os.environ.get("JUPYTER_PATH", "").split(os.pathsep) if p]
    os.environ["JUPYTER_PATH"] = os.pathsep.join(p for p in extra if not in_home(p))
    user_site = site.getusersitepackages()
    site.ENABLE_USER_SITE = False
    sys.path[:] = [p for p in sys.path if p != user_site]


def main(argv: list[str] | None = None) -> None:
    """The ``courtyard-singleuser`` command (what ``c.Spawner.cmd`` runs by default)."""
    _skip_slow_format_checker()
    _import_jupyterlab_without_node()
    from .env import HubEnv, HubEnvError

    try:
        env = HubEnv.from_environ()
    except HubEnvError as e:
        print(f"courtyard-singleuser: error: {e}", file=sys.stderr)
        sys.exit(2)
    if env.disable_user_config:
        _disable_user_config()
    from .extension import SingleUserApp

    # jupyter_server leaves launch_instance unannotated
    SingleUserApp.launch_instance(argv)  # type: ignore[no-untyped-call]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .extension import SingleUserApp

    return [{"module": "courtyard.singleuser.extension", "app": SingleUserApp}]
