"""The hub as a request sees it: what pages need of it, as Protocols mypy checks it against.

A page is handed the hub (``request.app.state.hub``) as :class:`Hub`, and an API endpoint as
:class:`courtyard.api.base.Hub`, which adds what only the API does. Neither names the hub's
class, so the pages import nothing above them; :func:`courtyard.web.asgi.build_app` is
where the real hub is checked against both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

from ..auth.login import Hub as LoginHub

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from ..db.models import Server, User
    from ..options import Courtyard
    from ..spawners.base import Spawner, UserInfo
    from ..spawners.progress import Event
    from ..subdomains import Origins


class Servers(Protocol):
    """What a page asks of the lifecycle: where a server stands, why it last failed, and
    starting one (with its spawner's options form first)."""

    def pending(self, user: str, server: str) -> str | None: ...
    def failure(self, user: str, server: str) -> str | None: ...
    def check_limits(self) -> None: ...
    def make_spawner(self, user: UserInfo, server: str) -> Spawner: ...
    def spawn(self, user: UserInfo, server: Server) -> object: ...  # a handle for its wait
    def progress_events(self, user: str, server: str, ready: bool
                        ) -> AsyncIterator[Event] | None: ...


class Hub(LoginHub, Protocol):
    """What a page needs of the hub: its options, database and origins, its servers (their
    state, URLs, starting and stopping them, the owner's auth state), and what signing in
    needs (:class:`courtyard.auth.login.Hub`)."""

    @property
    def options(self) -> Courtyard: ...
    @property
    def session(self) -> sessionmaker[Session]: ...
    @property
    def origins(self) -> Origins: ...
    @property
    def lifecycle(self) -> Servers: ...

    def server_routespec(self, username: str, server_name: str) -> str: ...
    def server_url(self, username: str, server_name: str) -> str: ...
    def read_auth_state(self, user: User) -> dict[str, Any] | None: ...
    async def stop_user_servers(self, user: User) -> None: ...
