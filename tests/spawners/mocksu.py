"""A tiny real single-user server for the spawner tests (JupyterHub's mocksu.py, in spirit).

Standard library only, so Debian's /usr/bin/python3 can run it as another user. It listens
where JUPYTERHUB_SERVICE_URL says and answers, under that URL's prefix:

- ``api``    ``{"version": ...}`` (what the hub's readiness check asks for)
- ``env``    its environment, as JSON
- ``whoami`` its uid, gid, groups, cwd and pid

``MOCKSU_MODE``: ``crash`` prints a line and exits 3 before listening; ``ignore-term``
ignores SIGTERM (so stopping needs SIGKILL). ``MOCKSU_GATE``: a file path; the server
only starts listening once that file exists (a "slow" server, held by the test).
"""

import json
import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


def main() -> None:
    url = urlsplit(os.environ["JUPYTERHUB_SERVICE_URL"])
    prefix = url.path
    mode = os.environ.get("MOCKSU_MODE", "")
    print(f"mocksu: pid {os.getpid()} uid {os.getuid()} mode {mode!r}", flush=True)
    if mode == "crash":
        print("mocksu: crashing on purpose", flush=True)
        sys.exit(3)
    if mode == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    gate = os.environ.get("MOCKSU_GATE")
    while gate and not os.path.exists(gate):
        time.sleep(0.02)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path == prefix + "api":
                body = {"version": "0.0-mocksu"}
            elif path == prefix + "env":
                body = dict(os.environ)
            elif path == prefix + "whoami":
                body = {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
                        "cwd": os.getcwd(), "pid": os.getpid()}
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            print("mocksu:", format % args, flush=True)

    server = ThreadingHTTPServer((url.hostname or "127.0.0.1", url.port or 80), Handler)
    print(f"mocksu: listening on {url.geturl()}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
