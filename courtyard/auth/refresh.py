"""Keeping a user's sign-in fresh: ``Authenticator.refresh_user``, run as JupyterHub runs it.

On every authenticated request of a user (token or cookie, API or page), once the
authenticator last confirmed them more than ``auth_refresh_age`` seconds ago, the hub asks
``refresh_user(user, handler)`` again. True keeps them signed in; a dict updates what the
hub keeps (``auth_state``, ``admin``, ``groups``; never the name); False or None means the
sign-in has expired: the request is unauthenticated (403 in the API) and a page signs the
browser out (:mod:`courtyard.web.refresh`). With ``refresh_pre_spawn`` a spawn always asks
first, and is refused (:class:`AuthExpired`, 403) when the answer is no.

A user is asked at most once per request, and concurrent requests of one user share one
refresh (an OAuth refresh token is often good for one use only). A refresh that failed is
not remembered as one, so the user's next request asks again. Nothing is asked, and no
database session opened, while a refresh is not due: the time of each user's last one is
in memory (after a hub restart every user is asked once). An authenticator whose
``refresh_user`` is the base one (always True) is never asked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

from ..errors import Forbidden, HTTPError
from .base import Authenticator, maybe_await

if TYPE_CHECKING:
    from sqlalchemy.orm import Session
    from starlette.requests import Request

    from ..db.models import User
    from .identity import Identity
    from .login import Hub, LoginContext  # refreshing stores what the authenticator says, as signing in does

log = logging.getLogger("courtyard.auth")

# in a request's ASGI scope: {user id: result} of the refreshes run for that request
REFRESHED = "courtyard.refreshed"


def clock() -> float:
    """Seconds on a clock that never goes back (tests move it forward)."""
    return time.monotonic()


class AuthExpired(Forbidden):
    """403: the authenticator says this user's sign-in no longer holds."""

    def __init__(self, name: str) -> None:
        super().__init__(f"The sign-in of {name} has expired; sign in again.")
        self.name = name


class RefreshFailed(HTTPError):
    """500: ``refresh_user`` raised. Nobody is let in, and nobody is signed out for it."""

    status = 500

    def __init__(self) -> None:
        super().__init__("Checking your sign-in failed because of an error in the hub's "
                         "authenticator; please try again later, or tell the hub's "
                         "administrators.")


def mark_fresh(auth: Authenticator, user_id: int) -> None:
    """The user just signed in (or was confirmed): no refresh for ``auth_refresh_age``."""
    auth.last_refresh[user_id] = clock()


def due(auth: Authenticator, user_id: int) -> bool:
    """Whether ``user_id``'s next request must ask ``refresh_user``; memory only, as it runs
    on every request."""
    age = auth.auth_refresh_age
    if age <= 0 or not auth.refreshes:
        return False
    last = auth.last_refresh.get(user_id)
    return last is None or clock() - last >= age


async def refresh_user(hub: Hub, db: Session, user: User, handler: LoginContext | None = None,
                       force: bool = False,
                       scope: MutableMapping[str, Any] | None = None) -> bool:
    """Ask the authenticator whether ``user``'s sign-in still holds, storing any update.

    Only when due, unless ``force``; at most once per request (``scope``). False: expired
    (the caller refuses the request). Raises :class:`RefreshFailed` when the hook raises.
    """
    auth = hub.authenticator
    memo: dict[int, bool] = scope.setdefault(REFRESHED, {}) if scope is not None else {}
    if user.id in memo:
        return memo[user.id]
    lock = auth.refresh_locks.get(user.id)
    if lock is None:
        lock = auth.refresh_locks[user.id] = asyncio.Lock()
    async with lock:
        if not force and not due(auth, user.id):  # checked again: another request just did
            return True
        memo[user.id] = ok = await _ask(hub, db, user, handler)
    return ok


async def _ask(hub: Hub, db: Session, user: User, handler: LoginContext | None) -> bool:
    from .login import login_user

    auth = hub.authenticator
    log.debug("Refreshing the sign-in of %s", user.name)
    try:
        result = await maybe_await(auth.refresh_user(user, handler))
    except Exception:
        log.exception("refresh_user for %s raised; the request is refused", user.name)
        raise RefreshFailed() from None
    if not result:
        auth.last_refresh.pop(user.id, None)
        log.warning("The sign-in of %s has expired (refresh_user); they must sign in again",
                    user.name)
        return False
    if isinstance(result, dict):
        # the name cannot change: a refresh that names someone else updates nobody else
        login_user(hub, db, {**result, "name": user.name})
    mark_fresh(auth, user.id)
    return True


def context(hub: Hub, request: Request, db: Session) -> LoginContext:
    """The ``handler`` an authenticator's hook gets: ``.hub``, ``.request``, ``.db``."""
    from .login import LoginContext

    return LoginContext(hub, request, db)


async def check_identity(hub: Hub, request: Request, db: Session, ident: Identity) -> bool:
    """For an API request by ``ident`` whose refresh is due: whether it still holds."""
    from ..db.models import User

    user = db.get(User, ident.id)
    if user is None:
        return False
    return await refresh_user(hub, db, user, context(hub, request, db), scope=request.scope)


async def before_spawn(hub: Hub, db: Session, owner: User, request: Request) -> None:
    """``refresh_pre_spawn``: confirm the owner's sign-in before their server starts (once
    per request), so the spawner gets fresh auth state. Raises :class:`AuthExpired` (403)."""
    auth = hub.authenticator
    if not auth.refresh_pre_spawn or not auth.refreshes:
        return
    if not await refresh_user(hub, db, owner, context(hub, request, db), force=True,
                              scope=request.scope):
        raise AuthExpired(owner.name)
