"""A small OAuth-protected service, written the way JupyterHub's docs write one.

It uses ``jupyterhub.services.auth.HubOAuthenticated`` unmodified. ``GET {prefix}`` (signed
in) answers the visitor's model as the hub gave it, and the status of reading the visitor's
own user with the visitor's OAuth token. At start it writes its environment and uid to the
file named by its first argument.
"""

import json
import os
import sys
from urllib.parse import urlsplit

from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
from tornado import httpclient, ioloop, web


class WhoAmI(HubOAuthenticated, web.RequestHandler):
    @web.authenticated
    async def get(self) -> None:
        user = self.get_current_user()
        token = self.hub_auth.get_token(self)
        reply = await httpclient.AsyncHTTPClient().fetch(
            f"{self.hub_auth.api_url}/users/{user['name']}",
            headers={"Authorization": f"token {token}"}, raise_error=False)
        self.write({"user": user, "read_self": reply.code})


def main() -> None:
    env = {k: v for k, v in os.environ.items() if k.startswith(("JUPYTERHUB_", "JPY_"))}
    with open(sys.argv[1], "w") as f:
        json.dump({"env": env, "uid": os.getuid()}, f)
    prefix = os.environ["JUPYTERHUB_SERVICE_PREFIX"]
    app = web.Application([(prefix, WhoAmI), (prefix + "oauth_callback", HubOAuthCallbackHandler)],
                          cookie_secret=os.urandom(32))
    app.listen(urlsplit(os.environ["JUPYTERHUB_SERVICE_URL"]).port, "127.0.0.1")
    ioloop.IOLoop.current().start()


if __name__ == "__main__":
    main()
