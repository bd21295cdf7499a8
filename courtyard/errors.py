"""The exception tree. The API layer maps each to JupyterHub's ``{"status", "message"}`` body.

    CourtyardError
    ├── ConfigError          bad configuration; the CLI prints it on one line and exits
    ├── DatabaseError
    │   ├── SchemaOutdated   the database needs ``courtyard upgrade-db``
    │   └── DatabaseHeld     another live hub serves from this database
    ├── ProxyError           the proxy could not be reached or refused a change
    ├── SpawnError           a server failed to start
    │   └── SpawnTimeout
    └── HTTPError            a request failed; carries the HTTP status
        ├── BadRequest (400) ├── Forbidden (403) ├── NotFound (404) └── Conflict (409)
"""

from __future__ import annotations


class CourtyardError(Exception):
    """Base of every error Courtyard raises on purpose."""


class ConfigError(CourtyardError):
    """The configuration is wrong; the message names the option and the fix."""


class DatabaseError(CourtyardError):
    """The database cannot be used as it is."""


class SchemaOutdated(DatabaseError):
    """The database schema is older (or newer) than this version of Courtyard."""


class DatabaseHeld(DatabaseError):
    """Another live hub holds the database (``courtyard/db/lease.py``)."""


class ProxyError(CourtyardError):
    """The proxy could not be reached or refused a change."""


class SpawnError(CourtyardError):
    """A server failed to start."""

    #: what ``POST .../server`` answers when the start fails within ``slow_spawn_timeout``
    #: (a JupyterHub spawner refusing the request with a 4xx ``HTTPError`` gets that status)
    status = 500


class SpawnTimeout(SpawnError):
    """A server did not start or answer within its timeout."""


class HTTPError(CourtyardError):
    """A request failed with an HTTP status and a message for the client."""

    status = 500

    def __init__(self, message: str = "", status: int | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        self.message = message
        self.headers = headers or {}


class BadRequest(HTTPError):
    status = 400


class Forbidden(HTTPError):
    status = 403


class NotFound(HTTPError):
    status = 404


class Conflict(HTTPError):
    status = 409


def error_reason(e: BaseException) -> str:
    """What went wrong, for a log line or a progress event: our own errors by their message."""
    if isinstance(e, SpawnError | HTTPError):
        return str(e)
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
