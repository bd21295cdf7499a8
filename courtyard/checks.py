"""``courtyard check-config``: load everything a start would, and collect every problem."""

from __future__ import annotations

import os
from typing import Any

from .config import one_line_message, unknown_options
from .errors import CourtyardError


def check_config(path: str | None, overrides: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(problems, warnings) for the config at ``path``; nothing is written anywhere."""
    from .app import Hub
    from .db.session import current_revision, make_engine, shown_url

    problems: list[str] = []
    try:
        hub = Hub.from_file(path, overrides)
    except CourtyardError as e:
        return [str(e)], []
    try:
        hub.init_components()
        hub.authenticator.check_config(hub)
    except CourtyardError as e:
        problems.append(str(e))
    warnings = unknown_options(hub.config, hub.component_classes()) if not problems else []
    try:
        from .routing import proxy_class

        proxy_class(hub.options)
    except CourtyardError as e:
        problems.append(str(e))
    opts = hub.options
    for name in ("ssl_cert", "ssl_key"):
        value = getattr(opts, name)
        if value and not os.path.isfile(value):
            problems.append(f"c.JupyterHub.{name} = {value!r}: no such file")
    if bool(opts.ssl_cert) != bool(opts.ssl_key):
        problems.append("c.JupyterHub.ssl_cert and ssl_key must be set together")
    for secret in opts.api_tokens:
        if len(secret) < 8:
            problems.append("c.JupyterHub.api_tokens: tokens must be at least 8 characters")
    try:
        engine = make_engine(opts.db_url)
        if engine.url.get_backend_name() != "sqlite" or os.path.exists(
                engine.url.database or ""):
            current_revision(engine)
    except CourtyardError as e:
        problems.append(str(e))
    except Exception as e:
        problems.append(f"c.JupyterHub.db_url: cannot open {shown_url(opts.db_url)}: "
                        f"{one_line_message(e)}")
    return problems, warnings
