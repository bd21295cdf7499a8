"""LDAP against a real OpenLDAP slapd: direct bind, search then bind, TLS, groups."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from .conftest import login

KEY = "1e" * 32
ADMIN_TOKEN = "admin-token-0123456789"


def ldap_options(slapd, **extra):
    return {"Courtyard.authenticator_class": "ldap",
            "LDAPAuthenticator.server_address": "127.0.0.1",
            "LDAPAuthenticator.server_port": slapd.port,
            "LDAPAuthenticator.tls_strategy": "insecure",
            "LDAPAuthenticator.bind_dn_template": [
                f"uid={{username}},ou=staff,{slapd.base}",  # no such branch: tried first
                f"uid={{username}},ou=people,{slapd.base}"],
            **extra}


async def test_direct_bind_with_templates(browser, slapd):
    _hub, client = await browser(ldap_options(slapd))
    assert (await login(client, "alice", "wrong")).status_code == 403
    assert (await login(client, "alice", "")).status_code == 403  # no anonymous bind
    assert (await login(client, "nobody", "alicepw")).status_code == 403
    assert (await login(client, "alice)(uid=*", "alicepw")).status_code == 403
    assert (await login(client, "Alice", "alicepw")).status_code == 303
    me = await client.get("/hub/api/user", params={"_xsrf": client.cookies["_xsrf"]})
    assert me.json()["name"] == "alice"


async def test_lookup_dn_then_bind(browser, slapd):
    options = ldap_options(slapd, **{
        "LDAPAuthenticator.bind_dn_template": [],
        "LDAPAuthenticator.lookup_dn": True,
        "LDAPAuthenticator.user_search_base": f"ou=people,{slapd.base}",
        "LDAPAuthenticator.user_attribute": "uid",
        "LDAPAuthenticator.lookup_dn_search_user": slapd.admin_dn,
        "LDAPAuthenticator.lookup_dn_search_password": slapd.admin_password,
        "LDAPAuthenticator.lookup_dn_user_dn_attribute": "mail",
        "LDAPAuthenticator.use_lookup_dn_username": True})
    _hub, client = await browser(options)
    assert (await login(client, "bob", "alicepw")).status_code == 403
    assert (await login(client, "ghost", "bobpw")).status_code == 403
    assert (await login(client, "bob", "bobpw")).status_code == 303
    me = await client.get("/hub/api/user", params={"_xsrf": client.cookies["_xsrf"]})
    assert me.json()["name"] == "bob@example.org"


async def test_group_allow_list_admins_and_managed_groups(browser, slapd):
    options = ldap_options(slapd, **{
        "LDAPAuthenticator.allowed_groups": {slapd.group_dn("researchers")},
        "LDAPAuthenticator.admin_groups": {slapd.group_dn("hubadmins")},
        "Authenticator.manage_groups": True})
    _hub, client = await browser(options)
    assert (await login(client, "bob", "bobpw")).status_code == 403  # in no group
    assert (await login(client, "alice", "alicepw")).status_code == 303
    _hub, carol = await browser(options)
    assert (await login(carol, "carol", "carolpw")).status_code == 303
    me = (await carol.get("/hub/api/user", params={"_xsrf": carol.cookies["_xsrf"]})).json()
    assert me["admin"] is True  # memberUid in a posixGroup
    assert me["groups"] == ["hubadmins", "researchers"]


async def test_attributes_in_auth_state(browser, slapd, monkeypatch):
    monkeypatch.setenv("COURTYARD_CRYPT_KEY", KEY)
    options = ldap_options(slapd, **{
        "Authenticator.enable_auth_state": True,
        "LDAPAuthenticator.auth_state_attributes": ["mail", "cn"],
        "Courtyard.api_tokens": {ADMIN_TOKEN: "admin"},
        "Authenticator.admin_users": {"admin"}})
    _hub, client = await browser(options)
    assert (await login(client, "alice", "alicepw")).status_code == 303
    user = await client.get("/hub/api/users/alice",
                            headers={"Authorization": f"token {ADMIN_TOKEN}"})
    attrs = user.json()["auth_state"]["user_attributes"]
    assert attrs == {"mail": ["alice@example.org"], "cn": ["Alice Smith"]}


@pytest.mark.parametrize("strategy", ["before_bind", "on_connect"])
async def test_starttls_and_ldaps_verify_the_server(browser, slapd, strategy, tmp_path):
    port = slapd.ldaps_port if strategy == "on_connect" else slapd.port
    tls = {"LDAPAuthenticator.tls_strategy": strategy, "LDAPAuthenticator.server_port": port}
    trusted = {"LDAPAuthenticator.tls_kwargs": {"ca_certs_file": slapd.ca_file}}
    _hub, client = await browser(ldap_options(slapd, **tls, **trusted))
    assert (await login(client, "alice", "alicepw")).status_code == 303
    # a server whose certificate we cannot verify is not talked to
    from .backends import make_certificates

    other_ca = make_certificates(tmp_path)[0]
    _hub, client = await browser(ldap_options(slapd, **tls, **{
        "LDAPAuthenticator.tls_kwargs": {"ca_certs_file": str(other_ca)}}))
    assert (await login(client, "alice", "alicepw")).status_code == 403


def test_tls_checks_the_host_name_without_a_deprecation_warning(slapd):
    """ldap3 checks the certificate's name with ``ssl.match_hostname``, deprecated on this
    Python: a StartTLS bind, with every DeprecationWarning an error, still succeeds."""
    script = textwrap.dedent(f"""
        import ssl
        import courtyard.auth.ldap as ours
        ldap3 = ours.ldap3
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file={slapd.ca_file!r})
        server = ldap3.Server("localhost", port={slapd.port}, tls=tls)
        conn = ldap3.Connection(server, auto_bind=ldap3.AUTO_BIND_TLS_BEFORE_BIND)
        print(conn.tls_started)
    """)
    done = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", script],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"


def test_ldap_checks_its_options_at_start(make_hub, slapd):
    from courtyard.errors import ConfigError

    with pytest.raises(ConfigError, match="bind_dn_template"):
        make_hub({"Courtyard.authenticator_class": "ldap",
                  "LDAPAuthenticator.server_address": "127.0.0.1"})
    with pytest.raises(ConfigError, match="server_address"):
        make_hub({"Courtyard.authenticator_class": "ldap"})
