"""A tiny real single-user server for the spawner tests (JupyterHub's mocksu.py, in spirit).

Standard library only, so Debian's /usr/bin/python3 can run it as another user, and only
its cheapest modules (socket, threading, json): ``http.server`` alone costs ~50 ms of CPU at
start, which in bench/spawn.py would measure this script rather than the hubs. It listens
where JUPYTERHUB_SERVICE_URL says and answers, under that URL's prefix:

- ``api``    ``{"version": ...}`` (what the hub's readiness check asks for)
- ``env``    its environment, as JSON
- ``whoami`` its uid, gid, groups, cwd and pid

``MOCKSU_MODE``: ``crash`` prints a line and exits 3 before listening; ``ignore-term``
ignores SIGTERM (so stopping needs SIGKILL); ``report-term`` on SIGTERM takes a moment to
shut down (as a real server saving its state does), then asks the hub's API who it is and
writes the answer's status to ``$MOCKSU_REPORT/<user>-<server>`` before exiting 0 (a server
that is stopping must still reach its hub). ``MOCKSU_GATE``: a file path; the server
only starts listening once that file exists (a "slow" server, held by the test).
"""

import json
import os
import signal
import socket
import sys
import threading
import time

REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found"}


def service_address(url: str) -> tuple[str, int, str]:
    """``(host, port, path prefix)`` of ``http://host:port/prefix/``, without urllib."""
    hostport, _, path = url.split("://", 1)[1].partition("/")
    if hostport.startswith("["):  # [::1]:port
        host, _, port = hostport[1:].partition("]")
        port = port.lstrip(":")
    else:
        host, _, port = hostport.partition(":")
    return host or "127.0.0.1", int(port or 80), "/" + path


def answer(conn: socket.socket, prefix: str) -> None:
    """One request per connection: read the head, answer, close."""
    with conn:
        conn.settimeout(30)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(65536)
            if not chunk or len(head) > 65536:
                return
            head += chunk
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        path = parts[1].split("?")[0] if len(parts) == 3 else ""
        status, body = 200, None
        if not path:
            status = 400
        elif path == prefix + "api":
            body = {"version": "0.0-mocksu"}
        elif path == prefix + "env":
            body = dict(os.environ)
        elif path == prefix + "whoami":
            body = {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
                    "cwd": os.getcwd(), "pid": os.getpid()}
        else:
            status = 404
        data = json.dumps(body if body is not None else {"status": status}).encode()
        conn.sendall(f"HTTP/1.1 {status} {REASONS[status]}\r\nContent-Type: application/json"
                     f"\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n"
                     .encode() + data)
        print(f'mocksu: "{request_line}" {status}', flush=True)


def report_and_exit(signum: int, frame: object) -> None:
    """``report-term``: shut down slowly, then tell the test what the hub answered."""
    import http.client

    time.sleep(0.5)  # the server's own shutdown work, while the hub waits for it
    host, port, prefix = service_address(os.environ["JUPYTERHUB_API_URL"] + "/")
    try:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.request("GET", prefix + "user",
                     headers={"Authorization": "token " + os.environ["JUPYTERHUB_API_TOKEN"]})
        outcome = str(conn.getresponse().status)
    except OSError as e:
        outcome = f"{type(e).__name__}: {e}"
    name = f"{os.environ['JUPYTERHUB_USER']}-{os.environ.get('JUPYTERHUB_SERVER_NAME', '')}"
    with open(os.path.join(os.environ["MOCKSU_REPORT"], name), "w") as f:
        f.write(outcome)
    print(f"mocksu: stopping; the hub answered {outcome}", flush=True)
    os._exit(0)


def main() -> None:
    host, port, prefix = service_address(os.environ["JUPYTERHUB_SERVICE_URL"])
    mode = os.environ.get("MOCKSU_MODE", "")
    print(f"mocksu: pid {os.getpid()} uid {os.getuid()} mode {mode!r}", flush=True)
    if mode == "crash":
        print("mocksu: crashing on purpose", flush=True)
        sys.exit(3)
    if mode == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if mode == "report-term":
        signal.signal(signal.SIGTERM, report_and_exit)
    gate = os.environ.get("MOCKSU_GATE")
    while gate and not os.path.exists(gate):
        time.sleep(0.02)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = socket.socket(family, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, port))
    server.listen(128)
    print(f"mocksu: listening on http://{host}:{port}{prefix}", flush=True)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=answer, args=(conn, prefix), daemon=True).start()


if __name__ == "__main__":
    main()
