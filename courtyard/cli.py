"""The ``courtyard`` command: serve, token, upgrade-db, generate-config, check-config.

Thin: each subcommand parses its flags and calls into the hub. Errors Courtyard expects
(bad config, old schema, unknown user) print one line naming the fix, and exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import CourtyardError

if TYPE_CHECKING:
    from .app import Hub


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--config", metavar="FILE",
                        help="config file (default: ./courtyard_config.py, else "
                        "./jupyterhub_config.py)")
    parser.add_argument("--db", dest="db_url", metavar="URL",
                        help="database URL (default: courtyard.sqlite in the data directory)")
    parser.add_argument("--debug", action="store_true", default=None, help="log at debug level")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("ip", "port", "base_url", "db_url", "debug", "hub_ip", "hub_port", "proxy_api_port")
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def _hub(args: argparse.Namespace, quiet: bool = True) -> Hub:
    """The hub for a subcommand; quiet ones log only warnings, so their output stays clean."""
    from .app import Hub

    overrides = _overrides(args)
    if quiet and not args.debug:
        overrides["log_level"] = "WARNING"
    return Hub.from_file(args.config, overrides)


# A collection every 700 new objects (CPython's default) costs a busy hub several percent
# of its CPU; after start-up, nearly every object is for good.
GC_THRESHOLDS = (20_000, 20, 20)


def cmd_serve(args: argparse.Namespace) -> int:
    gc.disable()  # start-up makes long-lived objects only: collecting meanwhile finds nothing
    hub = _hub(args, quiet=False)
    hub.init_db_anew = bool(getattr(args, "init_db", False))
    try:
        hub.initialize(serving=True)
    except BaseException:
        if hub.lease is not None:  # claimed, then start-up failed: the next hub need not wait
            hub.lease.release()
        raise
    gc.freeze()  # ... so later full collections need not walk them again
    gc.set_threshold(*GC_THRESHOLDS)
    gc.enable()
    try:
        from . import eventloop  # uvloop, with subprocesses started without fork()

        eventloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        pass
    try:
        asyncio.run(hub.serve())
    finally:
        if hub.lease is not None:
            hub.lease.release()
    if hub.lease is not None and hub.lease.lost:
        print("courtyard: error: another hub took over the database while this one stalled; "
              "this one stopped and left the servers to it", file=sys.stderr)
        return 1
    if hub.lifecycle.gave_up:
        print("courtyard: error: the hub stopped after c.Spawner.consecutive_failure_limit "
              "spawns failed in a row", file=sys.stderr)
        return 1
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from .auth.scopes import validate_scopes
    from .db import queries
    from .db.models import utcnow

    hub = _hub(args)
    hub.initialize()
    with hub.session() as db:
        name = hub.authenticator.normalize_username(args.username)
        user = queries.get_user(db, name)
        if user is None:
            raise CourtyardError(f"no user named {name!r}; create it first (e.g. add it to "
                                 "c.Authenticator.admin_users or POST /hub/api/users/NAME)")
        scopes = args.scopes or ["inherit"]
        problems = validate_scopes(scopes, hub.options.custom_scopes) if args.scopes else []
        if problems:
            raise CourtyardError("; ".join(problems))
        expires = utcnow() + timedelta(seconds=args.expires_in) if args.expires_in else None
        _, secret = queries.issue_token(db, user, note=args.note, scopes=scopes, expires_at=expires)
        db.commit()
    print(secret)
    return 0


def cmd_upgrade_db(args: argparse.Namespace) -> int:
    from .app import Hub
    from .db.session import shown_url, upgrade_db

    hub = Hub.from_file(args.config, _overrides(args))
    backup = upgrade_db(hub.options.db_url)
    if backup:
        print(f"Backed up the database to {backup}")
    print(f"Database {shown_url(hub.options.db_url)} is up to date")
    return 0


def cmd_generate_config(args: argparse.Namespace) -> int:
    from .docs import config_file_text

    path = Path(args.output)
    if path.exists() and not args.force:
        raise CourtyardError(f"{path} exists; pass --force to overwrite it")
    path.write_text(config_file_text())
    print(f"Wrote {path}")
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from .checks import check_config

    problems, warnings = check_config(args.config, _overrides(args))
    for w in warnings:
        print(f"warning: {w}")
    for p in problems:
        print(f"error: {p}")
    if problems:
        return 1
    print("Configuration OK" + (f" ({len(warnings)} warning(s))" if warnings else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="courtyard", description="Courtyard: a multi-user hub for Jupyter.")
    parser.add_argument("--version", action="version", version=f"courtyard {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str
            ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        _common(p)
        return p

    serve = add("serve", cmd_serve, "run the hub (the default command)")
    for p in (parser, serve):
        p.add_argument("--ip", help="public IP the proxy listens on (default 127.0.0.1)")
        p.add_argument("--port", type=int, help="public port (default 8000)")
        p.add_argument("--proxy-api-port", dest="proxy_api_port", type=int,
                       help="port of the proxy's REST API (default: the public port + 1)")
        p.add_argument("--hub-ip", dest="hub_ip", help="IP of the hub's own port")
        p.add_argument("--hub-port", dest="hub_port", type=int,
                       help="the hub's own port (default 8081)")
        p.add_argument("--base-url", dest="base_url", help="URL prefix of the site (default /)")
        p.add_argument("--init-db", dest="init_db", action="store_true",
                       help="make a new, empty database even where the database file is empty "
                       "but the data directory shows an earlier run (otherwise refused)")
    _common(parser)

    token = add("token", cmd_token, "print a new API token for an existing user")
    token.add_argument("username")
    token.add_argument("--note", default="command-line generated")
    token.add_argument("--expires-in", type=int, metavar="SECONDS", help="lifetime in seconds")
    token.add_argument("--scopes", nargs="+", metavar="SCOPE",
                       help="scopes (default: everything the user may do)")

    add("upgrade-db", cmd_upgrade_db, "migrate the database to this version's schema "
        "(SQLite files are backed up first)")
    gen = sub.add_parser("generate-config", help="write a commented config file",
                         description="write a commented config file with every option")
    gen.set_defaults(func=cmd_generate_config)
    gen.add_argument("-f", "--output", default="courtyard_config.py", metavar="FILE")
    gen.add_argument("--force", action="store_true", help="overwrite an existing file")
    add("check-config", cmd_check_config, "load the config and report every problem")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", cmd_serve)
    try:
        code = func(args)
    except CourtyardError as e:
        print(f"courtyard: error: {e}", file=sys.stderr)
        code = 1
    except Exception as e:
        from .db.session import database_error_line

        message = None if args.debug else database_error_line(e)
        if message is None:
            raise
        print(f"courtyard: error: {message} (--debug shows where)", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
