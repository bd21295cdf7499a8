"""Settings shared by the master and its workers.

They travel to worker processes as JSON, so everything here is a plain value.
"""

from __future__ import annotations

import dataclasses
import json
import ssl
from dataclasses import dataclass


@dataclass(slots=True)
class ProxyOptions:
    """Every setting of one ``courtyard-proxy`` process tree. Times are in seconds."""

    ip: str = "127.0.0.1"
    port: int = 8000
    api_ip: str = "127.0.0.1"
    api_port: int = 8001
    default_target: str = ""
    error_target: str = ""
    ssl_key: str = ""
    ssl_cert: str = ""
    api_ssl_key: str = ""
    api_ssl_cert: str = ""
    api_ssl_ca: str = ""
    api_ssl_request_cert: bool = False
    api_ssl_reject_unauthorized: bool = False
    client_ssl_key: str = ""
    client_ssl_cert: str = ""
    client_ssl_ca: str = ""
    insecure: bool = False
    host_routing: bool = False
    x_forward: bool = True
    log_level: str = "info"
    workers: int = 1
    # CHP's --timeout: drop a request when neither side sent anything for this long.
    timeout: float = 0.0
    # CHP's --proxy-timeout: give up (504) when the target sends no response head in time.
    proxy_timeout: float = 0.0
    connect_timeout: float = 10.0
    # How long an idle client keep-alive connection stays open (CHP's default is 5 s).
    keep_alive_timeout: float = 5.0
    # Idle upstream connections are closed before the usual 5 s server-side timeouts
    # (Node, uvicorn) so that a reused connection is rarely one the target just closed.
    upstream_idle_timeout: float = 4.0
    max_header_size: int = 64 * 1024
    max_headers: int = 100
    # A request head must be complete this long after the connection (or, on a kept-alive
    # connection, the request) began, however slowly it trickles in: against slowloris.
    header_timeout: float = 20.0
    # Peers whose X-Forwarded-* headers are kept (and appended to); anyone else's are
    # replaced by what this proxy saw. Addresses or CIDR networks.
    trusted_downstream_ips: list[str] = dataclasses.field(default_factory=list)
    pid_file: str = ""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ProxyOptions:
        return cls(**json.loads(text))

    @property
    def public_scheme(self) -> str:
        return "https" if self.ssl_cert else "http"

    def server_ssl_context(self) -> ssl.SSLContext | None:
        """TLS context for the public port, or None when it serves plain HTTP."""
        if not self.ssl_cert:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.ssl_cert, self.ssl_key or None)
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def api_ssl_context(self) -> ssl.SSLContext | None:
        """TLS for the REST API (JupyterHub's internal_ssl), optionally with client certs."""
        if not self.api_ssl_cert:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=self.api_ssl_ca or None)
        ctx.load_cert_chain(self.api_ssl_cert, self.api_ssl_key or None)
        if self.api_ssl_reject_unauthorized:
            ctx.verify_mode = ssl.CERT_REQUIRED
        elif self.api_ssl_request_cert:
            ctx.verify_mode = ssl.CERT_OPTIONAL
        return ctx

    def client_ssl_context(self) -> ssl.SSLContext:
        """TLS context for https targets (JupyterHub's internal_ssl uses client certs)."""
        ctx = ssl.create_default_context(cafile=self.client_ssl_ca or None)
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.client_ssl_cert:
            ctx.load_cert_chain(self.client_ssl_cert, self.client_ssl_key or None)
        return ctx
