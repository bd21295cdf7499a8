"""``ldap``: sign in against an LDAP directory (ldapauthenticator's options, on ``ldap3``).

Two ways to find the user's DN: fill ``bind_dn_template`` (one or more templates, tried in
order), or set ``lookup_dn`` to search ``user_search_base`` for ``user_attribute`` (as
``lookup_dn_search_user``, or anonymously) and bind as the entry found. Then, optionally:
``search_filter`` must find the user, ``allowed_groups``/``admin_groups`` are group DNs
tested with ``group_search_filter``, and ``auth_state_attributes`` go into auth state.

TLS: ``tls_strategy`` is ``before_bind`` (StartTLS, the default), ``after_bind``,
``on_connect`` (LDAPS; what ``use_ssl`` means) or ``insecure``; ``tls_kwargs`` go to
``ldap3.Tls`` (e.g. ``ca_certs_file``). Certificates are verified unless you say otherwise.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import ssl
import warnings
from typing import TYPE_CHECKING, Any

from traitlets import Bool, CaselessStrEnum, Dict, Int, List, Set, Unicode, Union, default

from ..errors import ConfigError
from .base import Authenticator, AuthResult

if TYPE_CHECKING:
    from .login import AuthenticatorHub, LoginContext

try:
    with warnings.catch_warnings():  # ldap3 2.9 uses names pyasn1 has deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        import ldap3
        from ldap3.core.exceptions import LDAPBindError, LDAPException
        from ldap3.utils.conv import escape_filter_chars
        from ldap3.utils.dn import escape_rdn, parse_dn
except ImportError:  # checked at start-up, with a message saying what to install
    ldap3 = None

# ldap3 2.9 checks certificates with ssl.match_hostname, deprecated since Python 3.7 (on 3.12,
# where it is gone, ldap3 uses its own copy). The check is right; only the warning is noise,
# so it is filtered for ldap3's TLS module alone (a filter, not a change to ldap3).
warnings.filterwarnings("ignore", message="ssl.match_hostname", category=DeprecationWarning,
                        module=r"ldap3\.core\.tls")

AUTO_BIND = {"before_bind": "AUTO_BIND_TLS_BEFORE_BIND", "after_bind": "AUTO_BIND_TLS_AFTER_BIND",
             "on_connect": "AUTO_BIND_NO_TLS", "insecure": "AUTO_BIND_NO_TLS"}


class LDAPAuthenticator(Authenticator):
    """Bind to LDAP as the user; groups and attributes from the directory."""

    # -- connection --
    server_address = Union([Unicode(), List(Unicode())], default_value="",
                           help="Host name(s) of the LDAP server(s).").tag(config=True)
    server_port = Int(help="Port (default 636 with tls_strategy 'on_connect', else 389).").tag(
        config=True
    )
    use_ssl = Bool(False, help="Deprecated: same as tls_strategy = 'on_connect'.").tag(
        config=True
    )
    tls_strategy = CaselessStrEnum(
        ["before_bind", "after_bind", "on_connect", "insecure"], default_value="before_bind",
        help="When to start TLS: 'before_bind' (StartTLS), 'after_bind', 'on_connect' (LDAPS) "
        "or 'insecure' (never).",
    ).tag(config=True)
    tls_kwargs = Dict(help="Arguments for ldap3.Tls, e.g. {'ca_certs_file': '/etc/ssl/ca.pem'}.").tag(
        config=True
    )
    server_connect_timeout = Int(10, help="Seconds to wait for a connection.").tag(config=True)
    server_receive_timeout = Int(10, help="Seconds to wait for an answer.").tag(config=True)
    # -- finding the user --
    bind_dn_template = Union([List(Unicode()), Unicode()], default_value=[],
                             help="DN template(s) with {username}, e.g. "
                             "'uid={username},ou=people,dc=example,dc=org'.").tag(config=True)
    escape_userdn = Bool(False, help="Escape the DN built from a template (the username is "
                         "always escaped).").tag(config=True)
    valid_username_regex = Unicode(r"^[a-z][.a-z0-9_-]*$", help="Usernames must match this "
                                   "(a guard against LDAP injection).").tag(config=True)
    lookup_dn = Bool(False, help="Search for the user's DN instead of using the template.").tag(
        config=True
    )
    user_search_base = Unicode("", help="Where to search for users (lookup_dn, search_filter)."
                               ).tag(config=True)
    user_attribute = Unicode("uid", help="Attribute holding the login name (uid; "
                             "sAMAccountName on Active Directory).").tag(config=True)
    lookup_dn_search_filter = Unicode("({login_attr}={login})", help="Filter finding the user; "
                                      "{login_attr} and {login} are filled in.").tag(config=True)
    lookup_dn_search_user = Unicode("", help="DN to search as (empty: anonymous).").tag(
        config=True
    )
    lookup_dn_search_password = Unicode("", help="Password of lookup_dn_search_user.").tag(
        config=True
    )
    lookup_dn_user_dn_attribute = Unicode("", help="Attribute of the found entry used as the "
                                          "username with use_lookup_dn_username.").tag(config=True)
    use_lookup_dn_username = Bool(True, help="With lookup_dn, sign in under the value of "
                                  "lookup_dn_user_dn_attribute rather than the name typed.").tag(
        config=True
    )
    search_filter = Unicode("", help="Filter ({userattr}, {username}) the user must match "
                            "below user_search_base.").tag(config=True)
    attributes = List(Unicode(), help="Attributes fetched with search_filter.").tag(config=True)
    # -- groups and state --
    allowed_groups = Set(help="Group DNs whose members may sign in.").tag(config=True)
    admin_groups = Set(help="Group DNs whose members are admins.").tag(config=True)
    group_search_filter = Unicode("(|(member={userdn})(uniqueMember={userdn})(memberUid={uid}))",
                                  help="Filter matching a group entry the user belongs to.").tag(
        config=True
    )
    auth_state_attributes = List(Unicode(), help="User attributes kept in auth_state "
                                 "(user_attributes).").tag(config=True)

    @default("allow_all")
    def _default_allow_all(self) -> bool:
        # without allow lists, having a directory entry is what lets a user in
        return not (self.allowed_users or self.allowed_groups)

    @default("server_port")
    def _default_port(self) -> int:
        return 636 if self.strategy == "on_connect" else 389

    @property
    def strategy(self) -> str:
        return "on_connect" if self.use_ssl else self.tls_strategy

    # -- start-up ----------------------------------------------------------------------------
    def check_config(self, hub: AuthenticatorHub) -> None:
        super().check_config(hub)
        if ldap3 is None:
            raise ConfigError("the ldap authenticator needs ldap3: pip install ldap3")
        if not self.server_address:
            raise ConfigError("c.LDAPAuthenticator.server_address is not set")
        if not self.lookup_dn and not self.templates():
            raise ConfigError("set c.LDAPAuthenticator.bind_dn_template, or lookup_dn with "
                              "user_search_base")
        if self.lookup_dn and not self.user_search_base:
            raise ConfigError("c.LDAPAuthenticator.lookup_dn needs user_search_base")

    def templates(self) -> list[str]:
        value = self.bind_dn_template
        return [t for t in ([value] if isinstance(value, str) else value) if t]

    # -- LDAP --------------------------------------------------------------------------------
    def _server(self) -> Any:
        tls_args = {"validate": ssl.CERT_REQUIRED, **self.tls_kwargs}
        tls = ldap3.Tls(**tls_args)
        hosts = [self.server_address] if isinstance(self.server_address, str) else \
            list(self.server_address)
        servers = [ldap3.Server(h, port=self.server_port, use_ssl=self.strategy == "on_connect",
                                tls=tls, connect_timeout=self.server_connect_timeout)
                   for h in hosts]
        if len(servers) == 1:
            return servers[0]
        return ldap3.ServerPool(servers, ldap3.ROUND_ROBIN, active=True, exhaust=True)

    def connect(self, dn: str | None, password: str | None) -> Any:
        """A bound connection (raises LDAPBindError for bad credentials)."""
        return ldap3.Connection(self._server(), user=dn or None, password=password or None,
                                auto_bind=getattr(ldap3, AUTO_BIND[self.strategy]),
                                receive_timeout=self.server_receive_timeout, read_only=True,
                                raise_exceptions=False)

    def _bind(self, dn: str, password: str) -> Any | None:
        try:
            return self.connect(dn, password)
        except LDAPBindError:
            return None

    def lookup(self, username: str) -> tuple[str, str] | None:
        """(DN, username to use) of the entry for ``username``, by searching."""
        conn = self.connect(self.lookup_dn_search_user, self.lookup_dn_search_password)
        try:
            flt = self.lookup_dn_search_filter.format(login_attr=self.user_attribute,
                                                      login=escape_filter_chars(username))
            attrs = [self.lookup_dn_user_dn_attribute] if self.lookup_dn_user_dn_attribute else []
            conn.search(self.user_search_base, flt, search_scope=ldap3.SUBTREE, attributes=attrs)
            entries = [e for e in conn.response if e.get("type") == "searchResEntry"]
            if len(entries) != 1:
                if len(entries) > 1:
                    self.log.warning("LDAP: %d entries match %r; refusing", len(entries), username)
                return None
            entry = entries[0]
            name = username
            if self.use_lookup_dn_username and self.lookup_dn_user_dn_attribute:
                value = entry["attributes"].get(self.lookup_dn_user_dn_attribute)
                value = value[0] if isinstance(value, list) and value else value
                name = str(value) if value else username
            return entry["dn"], name
        finally:
            conn.unbind()

    def _in_group(self, conn: Any, group_dn: str, userdn: str, username: str) -> bool:
        flt = self.group_search_filter.format(userdn=escape_filter_chars(userdn),
                                              uid=escape_filter_chars(username))
        conn.search(group_dn, flt, search_scope=ldap3.BASE, attributes=[])
        return any(e.get("type") == "searchResEntry" for e in conn.response)

    def check_credentials(self, username: str, password: str) -> dict[str, Any] | None:
        """The whole (blocking) exchange with the directory; the model or None."""
        if self.lookup_dn:
            found = self.lookup(username)
            if found is None:
                # bind anyway, so an unknown user takes as long as a wrong password
                self._bind(f"{self.user_attribute}=courtyard-{secrets.token_hex(8)},"
                           f"{self.user_search_base}", password)
                return None
            candidates, username = [found[0]], found[1]
        else:
            candidates = [t.format(username=escape_rdn(username)) for t in self.templates()]
            if self.escape_userdn:
                candidates = [escape_filter_chars(dn) for dn in candidates]
        conn = userdn = None
        for dn in candidates:
            conn = self._bind(dn, password)
            if conn is not None:
                userdn = dn
                break
        if conn is None or userdn is None:
            return None
        try:
            return self._model(conn, userdn, username)
        finally:
            conn.unbind()

    def _model(self, conn: Any, userdn: str, username: str) -> dict[str, Any] | None:
        if self.search_filter:
            flt = self.search_filter.format(userattr=self.user_attribute,
                                            username=escape_filter_chars(username))
            conn.search(self.user_search_base, flt, search_scope=ldap3.SUBTREE,
                        attributes=self.attributes)
            if len([e for e in conn.response if e.get("type") == "searchResEntry"]) != 1:
                self.log.warning("LDAP: %s does not match search_filter", username)
                return None
        groups = [g for g in sorted(self.allowed_groups | self.admin_groups)
                  if self._in_group(conn, g, userdn, username)]
        model: dict[str, Any] = {"name": username, "ldap_groups": groups}
        if self.admin_groups:
            model["admin"] = bool(self.admin_groups & set(groups))
        if self.manage_groups:
            model["groups"] = [parse_dn(g)[0][1] for g in groups]
        attrs: dict[str, Any] = {}
        if self.auth_state_attributes:
            conn.search(userdn, "(objectClass=*)", search_scope=ldap3.BASE,
                        attributes=self.auth_state_attributes)
            if conn.entries:
                attrs = conn.entries[0].entry_attributes_as_dict
        model["auth_state"] = {"user_attributes": {k: list(v) for k, v in attrs.items()}}
        return model

    # -- the contract ------------------------------------------------------------------------
    async def authenticate(self, handler: LoginContext, data: dict[str, Any]) -> AuthResult:
        username = self.normalize_username(str(data.get("username") or ""))
        password = str(data.get("password") or "")
        if not re.fullmatch(self.valid_username_regex, username):
            self.log.warning("LDAP: %r does not match valid_username_regex", username)
            return None
        if not password.strip():
            return None  # an empty password would be an anonymous bind
        try:
            return await asyncio.to_thread(self.check_credentials, username, password)
        except (LDAPException, OSError) as e:
            self.log.error("LDAP server %s: %s", self.server_address, e)
            return None

    def check_allowed(self, username: str, model: dict[str, Any] | None = None) -> bool:
        if super().check_allowed(username, model):
            return True
        return bool(self.allowed_groups & set((model or {}).get("ldap_groups", [])))

    def is_admin(self, handler: LoginContext | None, model: dict[str, Any]) -> bool | None:
        return True if model["name"] in self.admin_users else model.get("admin")
