"""``courtyard-proxy``: command line compatible with configurable-http-proxy's common flags.

The master process parses options, reserves the public port, starts the workers and
serves the REST API until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import socket
import sys
import time

from ..files import write_private
from ..listener import Listener
from .api import RouteApi, close_quietly, serve_api
from .options import ProxyOptions
from .routes import RouteTable
from .server import ProxyContext, serve
from .workers import WorkerSet

log = logging.getLogger("courtyard.proxy")

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
           "warning": logging.WARNING, "error": logging.ERROR}


def setup_logging(level: str, name: str = "master") -> None:
    logging.basicConfig(
        level=_LEVELS.get(level.lower(), logging.INFO),
        format=f"%(asctime)s [courtyard-proxy {name}] %(levelname)s: %(message)s",
        stream=sys.stderr,
    )


def install_event_loop() -> None:
    """Use uvloop when it is installed: the data path is roughly twice as fast with it."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _millis(value: str) -> float:
    return int(value) / 1000.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="courtyard-proxy",
        description="HTTP and WebSocket reverse proxy with configurable-http-proxy's REST API. "
        "The API token is read from $CONFIGPROXY_AUTH_TOKEN.",
    )
    p.add_argument("--ip", default="127.0.0.1", help="public IP (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="public port (default 8000)")
    p.add_argument("--api-ip", default="127.0.0.1", help="REST API IP (default 127.0.0.1)")
    p.add_argument("--api-port", type=int, help="REST API port (default: --port + 1)")
    p.add_argument("--default-target", default="", help="target of the / route (the hub)")
    p.add_argument("--error-target", default="", help="fetch error pages from {this}/{code}")
    p.add_argument("--ssl-key", default="", help="TLS key for the public port")
    p.add_argument("--ssl-cert", default="", help="TLS certificate for the public port")
    p.add_argument("--api-ssl-key", default="", help="TLS key for the REST API")
    p.add_argument("--api-ssl-cert", default="", help="TLS certificate for the REST API")
    p.add_argument("--api-ssl-ca", default="", help="CA for REST API client certificates")
    p.add_argument("--api-ssl-request-cert", action="store_true",
                   help="ask REST API clients for a certificate")
    p.add_argument("--api-ssl-reject-unauthorized", action="store_true",
                   help="require a valid client certificate on the REST API")
    # JupyterHub passes these with internal_ssl; like in CHP they change nothing for the
    # proxy's outgoing connections, so they are accepted and ignored.
    p.add_argument("--client-ssl-request-cert", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--client-ssl-reject-unauthorized", action="store_true",
                   help=argparse.SUPPRESS)
    p.add_argument("--socket", "--api-socket", dest="unix_socket", default="",
                   help="not supported: listening on Unix sockets")
    p.add_argument("--client-ssl-key", default="", help="TLS key presented to https targets")
    p.add_argument("--client-ssl-cert", default="", help="TLS cert presented to https targets")
    p.add_argument("--client-ssl-ca", default="", help="CA bundle to verify https targets")
    p.add_argument("--insecure", action="store_true", help="do not verify https targets")
    p.add_argument("--host-routing", action="store_true",
                   help="the first path segment of a route is the request's host")
    p.add_argument("--no-x-forward", dest="x_forward", action="store_false",
                   help="do not add X-Forwarded-* headers")
    p.add_argument("--log-level", default="info", choices=sorted(_LEVELS))
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="worker processes serving the public port (default: CPUs); "
                   "0 serves it from the master process")
    p.add_argument("--timeout", type=_millis, default=0.0,
                   help="ms without traffic after which a request is dropped (0: never)")
    p.add_argument("--proxy-timeout", type=_millis, default=0.0,
                   help="ms to wait for a target's response head, then 504 (0: forever)")
    p.add_argument("--connect-timeout", type=_millis, default=10.0,
                   help="ms to wait for a connection to a target, then 504 (default 10000)")
    p.add_argument("--keep-alive-timeout", type=_millis, default=5.0,
                   help="ms an idle client connection stays open (default 5000)")
    p.add_argument("--header-timeout", type=_millis, default=20.0,
                   help="ms from a connection's (or a kept-alive request's) first byte to "
                   "its complete request head, then 408 and close (default 20000; 0: never)")
    p.add_argument("--max-headers", type=int, default=100,
                   help="most header fields in a request, then 431 (default 100)")
    p.add_argument("--trusted-downstream-ips", default="",
                   help="comma-separated addresses or CIDR networks of proxies in front of "
                   "this one: their X-Forwarded-* headers are kept and appended to; anyone "
                   "else's are replaced by what this proxy saw (default: none)")
    p.add_argument("--pid-file", default="", help="write the master's PID here")
    return p


def parse_options(argv: list[str] | None = None) -> ProxyOptions:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.unix_socket:
        parser.error("--socket/--api-socket (Unix sockets) are not supported; use --ip/--port")
    trusted = [t.strip() for t in args.trusted_downstream_ips.split(",") if t.strip()]
    for value in trusted:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            parser.error(f"--trusted-downstream-ips: {value!r} is not an address or network")
    if args.max_headers < 1:
        parser.error("--max-headers must be at least 1")
    return ProxyOptions(
        ip=args.ip,
        port=args.port,
        api_ip=args.api_ip,
        api_port=args.api_port if args.api_port is not None else args.port + 1,
        default_target=args.default_target,
        error_target=args.error_target,
        ssl_key=args.ssl_key,
        ssl_cert=args.ssl_cert,
        api_ssl_key=args.api_ssl_key,
        api_ssl_cert=args.api_ssl_cert,
        api_ssl_ca=args.api_ssl_ca,
        api_ssl_request_cert=args.api_ssl_request_cert,
        api_ssl_reject_unauthorized=args.api_ssl_reject_unauthorized,
        client_ssl_key=args.client_ssl_key,
        client_ssl_cert=args.client_ssl_cert,
        client_ssl_ca=args.client_ssl_ca,
        insecure=args.insecure,
        host_routing=args.host_routing,
        x_forward=args.x_forward,
        log_level=args.log_level,
        workers=max(0, args.workers),
        timeout=args.timeout,
        proxy_timeout=args.proxy_timeout,
        connect_timeout=args.connect_timeout,
        keep_alive_timeout=args.keep_alive_timeout,
        header_timeout=args.header_timeout,
        max_headers=args.max_headers,
        trusted_downstream_ips=trusted,
        pid_file=args.pid_file,
    )


def reserve_port(ip: str, port: int) -> socket.socket:
    """Hold the public port for the workers' ``SO_REUSEPORT`` group.

    A plain bind first makes sure no other process (another courtyard-proxy included)
    listens there: with ``SO_REUSEPORT`` alone we would silently share its traffic.
    The reserved socket never listens, so it takes no connections itself.
    """
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((ip, port))
        port = probe.getsockname()[1]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((ip, port))
    return sock


async def run_master(options: ProxyOptions, auth_token: str) -> None:
    loop = asyncio.get_running_loop()
    table = RouteTable()
    api = RouteApi(table, auth_token, options.host_routing)
    if options.default_target:
        api.add("/", {"target": options.default_target})
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    reservation: socket.socket | None = None
    workers: WorkerSet | None = None
    public: Listener | None = None
    if options.workers:
        reservation = reserve_port(options.ip, options.port)
        options.port = reservation.getsockname()[1]
        workers = WorkerSet(options, table, api.merge_activity)
        await workers.start()

        async def publish(prefix: str, target: str | None) -> None:
            assert workers is not None
            if target is None:
                await workers.remove(prefix)
            else:
                await workers.add(prefix, target)

        api.publish = publish
    else:
        ctx = ProxyContext(options, table)
        public = await serve(ctx)
        options.port = public.sockets[0].getsockname()[1]

        def drain() -> None:
            # In-process marks land on the shared Route objects; drop the report copy.
            ctx.take_activity()
            loop.call_later(1.0, drain)

        drain()

    api_server = await serve_api(api, options.api_ip, options.api_port, options.api_ssl_context())
    api_port = api_server.sockets[0].getsockname()[1]
    if options.pid_file:
        write_private(options.pid_file, str(os.getpid()))
    log.info(
        "Proxying %s://%s:%d to %s with %d worker(s)", options.public_scheme, options.ip,
        options.port, options.default_target or "(no default)", options.workers,
    )
    api_scheme = "https" if options.api_ssl_cert else "http"
    log.info("Proxy API at %s://%s:%d/api/routes", api_scheme, options.api_ip, api_port)
    if not auth_token:
        log.warning("REST API is not authenticated: set CONFIGPROXY_AUTH_TOKEN")
    await stop.wait()
    log.info("Shutting down")
    close_quietly(api_server)
    if public is not None:
        public.close()
    if workers is not None:
        await workers.stop()
    if reservation is not None:
        reservation.close()
    if options.pid_file:
        with contextlib.suppress(OSError):
            os.unlink(options.pid_file)


def main(argv: list[str] | None = None) -> None:
    options = parse_options(argv)
    setup_logging(options.log_level)
    install_event_loop()
    token = os.environ.get("CONFIGPROXY_AUTH_TOKEN", "")
    started = time.monotonic()
    try:
        asyncio.run(run_master(options, token))
    except OSError as exc:
        log.error("Cannot start: %s", exc)
        sys.exit(1)
    log.info("Stopped after %.0f s", time.monotonic() - started)
