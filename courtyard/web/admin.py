"""``/hub/admin``: users, groups, roles, services and the hub, for holders of ``admin-ui``.

The page is a shell; ``admin.js`` fills it from the REST API one page of users (or groups)
at a time, with the search, sort and offset done by the database behind ``GET /users``.
So the page costs the same with fifty users or fifty thousand (JupyterHub's #2926, #3228),
and every action is an API call that the API authorizes, scope by scope.
"""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..db.models import User
from .pages import holds, nav
from .render import Page, signed_in

# What the script may offer, by scope; the API still checks each call.
ACTION_SCOPES = {
    "users": "admin:users",
    "delete_users": "delete:users",
    "servers": "admin:servers",
    "start_servers": "start:servers",
    "stop_servers": "delete:servers",
    "groups": "admin:groups",
    "edit_groups": "groups",
    "list_groups": "list:groups",
    "roles": "read:roles",
    "admin_roles": "admin:roles",
    "services": "list:services",
    "shutdown": "shutdown",
}


@signed_in
async def admin_page(page: Page, user: User) -> Response:
    hub = page.hub
    if not holds(page, "admin-ui"):
        return page.error(403, "The admin page needs the admin-ui permission.")
    can = {key: holds(page, scope) for key, scope in ACTION_SCOPES.items()}
    opts = hub.options
    return page.render("admin.html", **nav(page), active="admin", can=can,
                       allow_named_servers=opts.allow_named_servers,
                       page_size=opts.api_page_default_limit,
                       max_page_size=opts.api_page_max_limit)


def routes(base_url: str) -> list[BaseRoute]:
    return [Route(f"{base_url}hub/admin", admin_page, methods=["GET"])]
