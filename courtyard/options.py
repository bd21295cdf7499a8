"""The hub's options: one traitlets class, the single source for config, CLI and docs.

``c.Courtyard.X`` and JupyterHub's ``c.JupyterHub.X`` set the same option.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from traitlets import (
    Any as AnyTrait,
    Bool,
    Dict,
    Float,
    Integer,
    List,
    Set,
    Unicode,
    Union,
    default,
    validate,
)
from traitlets.config import Configurable

from .errors import ConfigError

LOG_LEVEL_NAMES = ("DEBUG", "INFO", "WARN", "WARNING", "ERROR", "CRITICAL")


def _as_list(value: Any) -> Any:
    """A set or tuple of names as a (sorted, for sets) list; anything else unchanged."""
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return list(value) if isinstance(value, tuple) else value


def in_source_checkout(path: Path) -> bool:
    """Whether ``path`` is in a source tree of Courtyard (its pyproject.toml and package)."""
    return any((d / "pyproject.toml").is_file() and (d / "courtyard" / "__init__.py").is_file()
               for d in (path, *path.parents))


def default_data_dir() -> str:
    """Where the hub keeps its state unless data_files_path says: the working directory,
    as JupyterHub does, except in a source checkout of Courtyard, where a quick start must
    not write keys, databases and users' files into the repository; there it is
    $XDG_DATA_HOME/courtyard, else /var/lib/courtyard as root and ~/.local/share/courtyard
    for anyone else."""
    cwd = Path.cwd()
    if not in_source_checkout(cwd):
        return str(cwd)
    if os.environ.get("XDG_DATA_HOME"):
        return str(Path(os.environ["XDG_DATA_HOME"]) / "courtyard")
    if os.geteuid() == 0:
        return "/var/lib/courtyard"
    return str(Path.home() / ".local" / "share" / "courtyard")


class Courtyard(Configurable):
    """Hub-wide options (JupyterHub's ``c.JupyterHub.*``)."""

    ip = Unicode("127.0.0.1", help="Public IP the proxy listens on.").tag(config=True)
    port = Integer(8000, help="Public port the proxy listens on.").tag(config=True)
    bind_url = Unicode(
        "", help="Public URL the proxy binds, e.g. http://127.0.0.1:8000/; overrides ip, port "
        "and base_url."
    ).tag(config=True)
    base_url = Unicode("/", help="URL prefix of the whole site; must start and end with '/'.").tag(
        config=True
    )
    public_url = Unicode(
        "", help="Full public URL of the site when it differs from bind_url (e.g. behind a "
        "load balancer); used in full_url fields and OAuth redirects."
    ).tag(config=True)
    subdomain_host = Unicode(
        "", help="Give each user's servers their own origin: 'https://hub.example.org' (scheme, "
        "host, optional port) puts the hub there and alice's servers on "
        "https://alice.hub.example.org; needs a wildcard DNS record and TLS certificate. "
        "Without it every server shares the hub's origin (see docs/security.md)."
    ).tag(config=True)
    subdomain_hook = AnyTrait(
        "idna", help="How a user's host name is made: 'idna' (JupyterHub's default: the name, "
        "its IDNA form, or a trimmed hash) or a callable (name, domain, kind) -> host name."
    ).tag(config=True)
    proxy_api_port = Integer(0, help="Port of the proxy's REST API, on the host of its "
                             "api_url (0: the api_url's port, which is port + 1 unless "
                             "configured); --proxy-api-port.").tag(config=True)
    hub_ip = Unicode("127.0.0.1", help="IP the hub's own HTTP server (API and pages) binds.").tag(
        config=True
    )
    hub_port = Integer(8081, help="Port the hub's own HTTP server binds.").tag(config=True)
    hub_bind_url = Unicode("", help="URL the hub binds, e.g. http://127.0.0.1:8081; overrides "
                           "hub_ip and hub_port.").tag(config=True)
    hub_connect_url = Unicode(
        "", help="URL at which the proxy, servers and services reach the hub, when it differs "
        "from where it binds (e.g. it binds 0.0.0.0)."
    ).tag(config=True)
    db_url = Unicode("sqlite:///courtyard.sqlite", help="SQLAlchemy URL of the database; "
                     "sqlite:///FILE or postgresql://USER@HOST/DB. Default: courtyard.sqlite "
                     "in data_files_path.").tag(config=True)
    data_files_path = Unicode("", help="Directory for the hub's state (database, secrets, "
                              "keys, logs, the proxy's pid file, users' files); default: the "
                              "working directory, except in a source checkout of Courtyard: "
                              "then $XDG_DATA_HOME/courtyard, else /var/lib/courtyard as root "
                              "and ~/.local/share/courtyard otherwise. The hub logs it at "
                              "start.").tag(config=True)
    cookie_secret = AnyTrait(b"", help="Secret key signing cookies (bytes or hex string); "
                             "generated into cookie_secret_file when empty.").tag(config=True)
    cookie_secret_file = Unicode("courtyard_cookie_secret", help="File holding the cookie "
                                 "secret (hex); created with mode 0600 when missing.").tag(config=True)
    cookie_max_age_days = Float(14, help="Days a login cookie stays valid.").tag(config=True)
    oauth_token_expires_in = Integer(0, help="Seconds an access token issued through OAuth "
                                     "(to a server or service) is valid (0: "
                                     "cookie_max_age_days).").tag(config=True)
    oauth_require_pkce = Bool(False, help="Refuse OAuth authorization requests without a "
                              "PKCE code_challenge (S256).").tag(config=True)
    api_tokens = Dict(
        help="Tokens for users from config, {token: username}; tokens of 8 or more "
        "characters, stored hashed."
    ).tag(config=True)
    service_tokens = Dict(help="Tokens for services, {token: service name}.").tag(config=True)
    services = List(Dict(), help="Services: dicts with name, and optionally url, command, "
                    "api_token, admin, oauth_client_id, oauth_redirect_uri, oauth_no_confirm, "
                    "info, display.").tag(config=True)
    load_roles = List(Dict(), help="Roles to create or update at start: dicts with name, "
                      "description, scopes, users, groups, services.").tag(config=True)
    custom_scopes = Dict(help="Custom scopes, {'custom:NAME': {'description': ...}}.").tag(
        config=True
    )
    load_groups = Dict(help="Groups to create at start: {name: [users]} or "
                       "{name: {'users': [...], 'properties': {...}}}.").tag(config=True)
    admin_users = Set(help="Deprecated here (use c.Authenticator.admin_users); still honoured."
                      ).tag(config=True)
    allow_named_servers = Bool(False, help="Let users run named servers besides the default "
                               "one.").tag(config=True)
    named_server_limit_per_user = Union(
        [Integer(), AnyTrait()], default_value=0,
        help="Most named servers a user may have (0: no limit); int or callable(handler).",
    ).tag(config=True)
    default_server_name = Unicode("", help="Name of the server /hub/user-redirect goes to when "
                                  "named servers are on.").tag(config=True)
    concurrent_spawn_limit = Integer(100, help="Most spawns pending at once (0: no limit)."
                                     ).tag(config=True)
    active_server_limit = Integer(0, help="Most servers running or pending at once "
                                  "(0: no limit).").tag(config=True)
    spawn_queue = Bool(True, help="Spawns beyond concurrent_spawn_limit wait their turn in a "
                       "first-come queue and report their place in the progress stream; "
                       "False answers 429 with Retry-After instead, as JupyterHub does."
                       ).tag(config=True)
    spawn_throttle_retry_range = List(Integer(), [30, 60], minlen=2, maxlen=2, help="Seconds "
                                      "(low, high) a 429 tells clients to wait; random in "
                                      "between.").tag(config=True)
    slow_spawn_timeout = Float(10, help="Seconds a start request waits for the server to be "
                               "ready before answering 202 (pending) instead of 201.").tag(
        config=True)
    init_spawners_timeout = Float(0, help="Seconds the hub waits at start-up for recorded "
                                  "servers to be checked before it serves anyway. 0 (the "
                                  "default): it serves at once and checks them in the "
                                  "background, pending 'check' meanwhile (JupyterHub waits "
                                  "up to 10). -1: wait for every check, as in JupyterHub."
                                  ).tag(config=True)
    recovery_concurrency = Integer(50, help="Most servers recorded as running that are checked "
                                   "at once when the hub starts.").tag(config=True)
    api_page_default_limit = Integer(50, help="Page size for paginated API lists.").tag(
        config=True
    )
    api_page_max_limit = Integer(200, help="Largest page size a client may ask for.").tag(
        config=True
    )
    api_max_body_size = Integer(4 * 1024 * 1024, help="Largest request body, in bytes, "
                                "below /hub/api; a longer one is answered 413 before it is "
                                "read (a declared length) or as soon as it passes the limit "
                                "(chunked). 4 MiB holds a POST /users of ~100,000 names."
                                ).tag(config=True)
    form_max_body_size = Integer(256 * 1024, help="Largest request body, in bytes, anywhere "
                                 "else (the sign-in, sign-up and spawn forms); 413 past it."
                                 ).tag(config=True)
    trusted_downstream_ips = List(Unicode(), help="Addresses or networks (CIDR) of proxies "
                                  "in front of the hub's proxy, e.g. a TLS-terminating load "
                                  "balancer. The hub takes X-Forwarded-For and "
                                  "X-Forwarded-Proto only from its own proxy (loopback, or "
                                  "the hub's own address) and from these, and skips these in "
                                  "X-Forwarded-For: the client is the right-most address "
                                  "that is not one of them. The built-in proxy gets the "
                                  "list too, and keeps the forwarded headers only of "
                                  "requests from these addresses.").tag(config=True)
    authenticator_class = AnyTrait(
        "native", help="Authenticator: a short name ('native', 'pam', 'ldap', 'oidc', "
        "'github', 'shared-password', 'dummy', 'null', ...), a dotted class path or a class; "
        "JupyterHub's names are accepted. A list offers several sign-in methods at once."
    ).tag(config=True)
    spawner_class = AnyTrait(
        "local", help="Spawner: a short name ('local', 'simple', ...), a dotted class path or "
        "a class; JupyterHub's names are accepted."
    ).tag(config=True)
    proxy_class = AnyTrait(
        "builtin", help="Proxy: 'builtin' (courtyard-proxy) or 'chp' "
        "(configurable-http-proxy), a dotted class path or a class."
    ).tag(config=True)
    cleanup_servers = Bool(False, help="Stop users' servers when the hub shuts down. Off by "
                           "default: servers outlive a hub restart, the next start finds and "
                           "checks them and the live ones keep their routes (JupyterHub stops "
                           "them unless this is False).").tag(config=True)
    cleanup_proxy = Bool(False, help="Stop the proxy when the hub shuts down. Off by default, "
                         "so users' traffic keeps flowing while the hub restarts (JupyterHub "
                         "stops it); configurable-http-proxy is stopped either way unless its "
                         "keep_running is set.").tag(config=True)
    template_paths = List(Unicode(), help="Directories searched for page templates before the "
                          "built-in ones.").tag(config=True)
    extra_template_paths = List(Unicode(), help="JupyterHub's name for more template "
                                "directories: searched after template_paths and before the "
                                "built-in templates.").tag(config=True)
    template_vars = Union([Dict(), AnyTrait()], default_value={}, help="Extra variables for "
                          "page templates: a dict, or a callable of the signed-in user (or "
                          "None) returning one, as in JupyterHub.").tag(config=True)
    logo_file = Unicode("", help="Image file shown as the site's logo.").tag(config=True)
    activity_resolution = Integer(30, help="Seconds; activity updates closer together than "
                                  "this are not written to the database.").tag(config=True)
    last_activity_interval = Integer(300, help="Seconds between syncs of activity from the "
                                     "proxy and route checks.").tag(config=True)
    ssl_cert = Unicode("", help="TLS certificate for the public port.").tag(config=True)
    ssl_key = Unicode("", help="TLS key for the public port.").tag(config=True)
    shutdown_on_logout = Bool(False, help="Stop a user's servers when they log out.").tag(
        config=True
    )
    use_legacy_stopped_server_status_code = Bool(False, help="Answer 503 instead of 424 "
                                                 "when a request reaches the URL of a server "
                                                 "that is not running.").tag(config=True)
    redirect_to_server = Bool(True, help="Send a user to their server after login rather "
                              "than to the home page.").tag(config=True)
    default_url = Union([Unicode(), AnyTrait()], default_value="", help="Where /hub/ sends a "
                        "signed-in user (default: their server or the home page); or, as in "
                        "JupyterHub, a callable of the request handler (handler.current_user "
                        "has name, admin, groups) returning the URL.").tag(config=True)
    authenticate_prometheus = Bool(True, help="Require read:metrics for /hub/metrics.").tag(
        config=True
    )
    token_expires_in_max_seconds = Integer(0, help="Longest lifetime of a token made through "
                                           "the API (0: unlimited).").tag(config=True)
    debug = Bool(False, help="Log at debug level.").tag(config=True)
    log_level = Union([Integer(), Unicode()], default_value="INFO", help="Logging level: a "
                      "name (DEBUG, INFO, WARN, WARNING, ERROR, CRITICAL) or its number "
                      "(10, 20, ...), as JupyterHub takes either.").tag(config=True)

    @validate("base_url")
    def _check_base_url(self, proposal: dict[str, Any]) -> str:
        value = str(proposal["value"])
        if not value.startswith("/"):
            value = "/" + value
        if not value.endswith("/"):
            value += "/"
        return value

    @validate("log_level")
    def _check_log_level(self, proposal: dict[str, Any]) -> int | str:
        value = proposal["value"]
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 50:
            return value
        if isinstance(value, str) and value.upper() in LOG_LEVEL_NAMES:
            return value.upper()
        raise ConfigError(f"c.Courtyard.log_level = {value!r} is not a log level; use one of "
                          f"{', '.join(LOG_LEVEL_NAMES)} or a number from 0 to 50")

    @validate("load_roles")
    def _listify_roles(self, proposal: dict[str, Any]) -> list[Any]:
        """JupyterHub iterates a role's scopes and members: a set or tuple is a list."""
        return [{key: _as_list(value) if key in ("scopes", "users", "groups", "services")
                 else value for key, value in role.items()} for role in proposal["value"]]

    @validate("load_groups")
    def _listify_groups(self, proposal: dict[str, Any]) -> dict[str, Any]:
        """JupyterHub iterates a group's members: a set or tuple of names is a list."""
        groups = {}
        for name, spec in proposal["value"].items():
            if isinstance(spec, dict) and "users" in spec:
                spec = {**spec, "users": _as_list(spec["users"])}
            groups[name] = _as_list(spec)
        return groups

    @validate("default_url")
    def _check_default_url(self, proposal: dict[str, Any]) -> Any:
        if not isinstance(proposal["value"], str) and not callable(proposal["value"]):
            raise ConfigError("c.Courtyard.default_url must be a URL or a callable of the "
                              "request handler")
        return proposal["value"]

    @validate("subdomain_host")
    def _check_subdomain_host(self, proposal: dict[str, Any]) -> str:
        from .subdomains import check_subdomain_host

        return check_subdomain_host(proposal["value"])

    @validate("subdomain_hook")
    def _check_subdomain_hook(self, proposal: dict[str, Any]) -> Any:
        from .subdomains import resolve_hook

        resolve_hook(proposal["value"])
        return proposal["value"]

    @validate("port", "hub_port")
    def _check_port(self, proposal: dict[str, Any]) -> int:
        value = int(proposal["value"])
        if not 0 <= value <= 65535:
            raise ConfigError(f"c.Courtyard.{proposal['trait'].name} = {value} is not a port; "
                              "use 1-65535 (0 picks a free port)")
        return value

    @validate("api_max_body_size", "form_max_body_size")
    def _check_body_size(self, proposal: dict[str, Any]) -> int:
        if proposal["value"] < 1024:
            raise ConfigError(f"c.Courtyard.{proposal['trait'].name} = {proposal['value']} "
                              "is too small; use at least 1024 (bytes)")
        return int(proposal["value"])

    @validate("trusted_downstream_ips")
    def _check_trusted(self, proposal: dict[str, Any]) -> list[str]:
        from .web.forwarded import parse_networks

        parse_networks(proposal["value"])  # a ConfigError naming a bad entry
        return list(proposal["value"])

    @validate("api_page_default_limit", "api_page_max_limit")
    def _check_page(self, proposal: dict[str, Any]) -> int:
        if proposal["value"] < 1:
            raise ConfigError(f"c.Courtyard.{proposal['trait'].name} must be at least 1")
        return int(proposal["value"])

    @default("data_files_path")
    def _default_data(self) -> str:
        return default_data_dir()

    @default("db_url")
    def _default_db_url(self) -> str:
        """``courtyard.sqlite`` in the data directory (relative when that is the cwd)."""
        data = self.data_files_path
        if os.path.abspath(data) == os.getcwd():
            return "sqlite:///courtyard.sqlite"
        return f"sqlite:///{os.path.join(os.path.abspath(data), 'courtyard.sqlite')}"
