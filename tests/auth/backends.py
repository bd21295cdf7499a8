"""Real authentication back ends on loopback: OpenLDAP slapd (with StartTLS and LDAPS),
the npm ``oidc-provider`` under Node, and Unix accounts checked through PAM.

Each is started once per test session on free ports in a temporary directory and stopped
by its PID. Under ``CI`` a missing tool fails the test instead of skipping it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.ports import free_port

HERE = Path(__file__).parent
IDP_DIR = HERE / "idp"
ROOT = HERE.parent.parent
HUB = "http://127.0.0.1:8081"
SLAPD_PATHS = ("/usr/sbin/slapd", "/usr/local/sbin/slapd")
PAM_SERVICE = "courtyard-test"
PAM_SERVICE_FILE = Path("/etc/pam.d") / PAM_SERVICE


def need(condition: object, reason: str) -> None:
    """Skip when ``condition`` is false, unless under CI, where it fails."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (required under CI)")
    pytest.skip(reason)




def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{proc.args[0]} did not listen on {port} within {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- TLS for slapd ----------------------------------------------------------------------------
def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate, server key) for 127.0.0.1 and localhost."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "courtyard test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    paths[2].chmod(0o600)
    return paths


# -- slapd --------------------------------------------------------------------------------------
@dataclass
class Directory:
    port: int
    ldaps_port: int
    ca_file: str
    base: str = "dc=example,dc=org"
    admin_dn: str = "cn=admin,dc=example,dc=org"
    admin_password: str = "adminpw"

    def user_dn(self, uid: str) -> str:
        return f"uid={uid},ou=people,{self.base}"

    def group_dn(self, cn: str) -> str:
        return f"cn={cn},ou=groups,{self.base}"


SLAPD_CONF = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {d}/slapd.pid
argsfile {d}/slapd.args
TLSCACertificateFile {ca}
TLSCertificateFile {cert}
TLSCertificateKeyFile {key}
database mdb
maxsize 104857600
suffix "dc=example,dc=org"
rootdn "cn=admin,dc=example,dc=org"
rootpw {rootpw}
directory {d}/db
access to attrs=userPassword by self write by anonymous auth by * none
access to * by * read
"""

# uid -> (password, cn); group memberships below
LDAP_USERS = {"alice": ("alicepw", "Alice Smith"), "bob": ("bobpw", "Bob Jones"),
              "carol": ("carolpw", "Carol White")}


def populate(directory: Directory) -> None:
    with warnings.catch_warnings():  # ldap3 2.9 uses names pyasn1 has deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        import ldap3

    conn = ldap3.Connection(ldap3.Server("127.0.0.1", port=directory.port),
                            directory.admin_dn, directory.admin_password, auto_bind=True)
    base = directory.base
    conn.add(base, ["dcObject", "organization"], {"o": "Example", "dc": "example"})
    conn.add(f"ou=people,{base}", ["organizationalUnit"], {"ou": "people"})
    conn.add(f"ou=groups,{base}", ["organizationalUnit"], {"ou": "groups"})
    for n, (uid, (password, cn)) in enumerate(LDAP_USERS.items()):
        dn = directory.user_dn(uid)
        conn.add(dn, ["inetOrgPerson", "posixAccount"], {
            "cn": cn, "sn": cn.split()[-1], "mail": f"{uid}@example.org",
            "uidNumber": 5000 + n, "gidNumber": 5000, "homeDirectory": f"/home/{uid}"})
        conn.extend.standard.modify_password(dn, new_password=password)
    conn.add(directory.group_dn("researchers"), ["groupOfNames"],
             {"member": [directory.user_dn("alice"), directory.user_dn("carol")]})
    conn.add(directory.group_dn("hubadmins"), ["posixGroup"],
             {"gidNumber": 6000, "memberUid": ["carol"]})
    assert conn.result["description"] == "success", conn.result
    conn.unbind()


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Directory]:
    """A real OpenLDAP server with StartTLS and LDAPS, users alice, bob, carol."""
    binary = shutil.which("slapd") or next((p for p in SLAPD_PATHS if os.path.exists(p)), None)
    need(binary, "slapd is not installed (apt-get install slapd ldap-utils)")
    d = tmp_path_factory.mktemp("slapd")
    (d / "db").mkdir()
    ca, cert, key = make_certificates(d)
    rootpw = subprocess.run(["slappasswd", "-s", "adminpw"], capture_output=True, text=True,
                            check=True).stdout.strip() if shutil.which("slappasswd") else "adminpw"
    conf = d / "slapd.conf"
    conf.write_text(SLAPD_CONF.format(d=d, ca=ca, cert=cert, key=key, rootpw=rootpw))
    port, ldaps_port = free_port(), free_port()
    urls = f"ldap://127.0.0.1:{port}/ ldaps://127.0.0.1:{ldaps_port}/"
    proc = subprocess.Popen([binary, "-f", str(conf), "-h", urls, "-d", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, proc)
        wait_for_port(ldaps_port, proc)
        directory = Directory(port, ldaps_port, str(ca))
        populate(directory)
        yield directory
    finally:
        stop(proc)


# -- the OIDC provider ---------------------------------------------------------------------------
@dataclass
class IdP:
    url: str
    client_id: str = "hub"
    client_secret: str = "hubsecret"


def _oidc_provider_installed() -> bool:
    """oidc-provider where Node finds it from idp/: the repository's node_modules (the root
    package.json, installed by CI's ``npm install``), else installed next to idp.mjs."""
    places = [IDP_DIR / "node_modules", ROOT / "node_modules"]
    if any((p / "oidc-provider").is_dir() for p in places):
        return True
    npm = shutil.which("npm")
    if npm is None:
        return False
    subprocess.run([npm, "install", "--prefix", str(IDP_DIR), "--no-save", "--no-package-lock",
                    "--no-audit", "--no-fund", "oidc-provider@8"],
                   check=False, capture_output=True, timeout=300)
    return (IDP_DIR / "node_modules" / "oidc-provider").is_dir()


@pytest.fixture(scope="session")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdP]:
    """The npm oidc-provider on loopback; any login name works (see idp/idp.mjs)."""
    node = shutil.which("node")
    need(node, "node is not installed")
    need(_oidc_provider_installed(), "oidc-provider is not installed: npm install (at the "
         "repository root)")
    port = free_port()
    callbacks = ",".join(f"{HUB}/hub/{p}oauth_callback" for p in ("", "oidc/", "oauth/"))
    log = (tmp_path_factory.mktemp("idp") / "idp.log").open("w")
    proc = subprocess.Popen([node, str(IDP_DIR / "idp.mjs"), str(port), callbacks],
                            cwd=IDP_DIR, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "ACCESS_TTL": "120"})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port, proc, timeout=30)
        httpx.get(f"{url}/.well-known/openid-configuration").raise_for_status()
        yield IdP(url)
    finally:
        stop(proc)
        log.close()


# -- PAM ----------------------------------------------------------------------------------------
@dataclass
class PamUsers:
    service: str
    passwords: dict[str, str]
    admin_group: str = "cytest-admins"
    user_group: str = "cytest-users"


PAM_USERS = {"cytest-alice": "Alice-pw-1", "cytest-bob": "Bob-pw-22", "cytest-eve": "Eve-pw-333"}


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def _remove_pam_users() -> None:
    for name in PAM_USERS:
        subprocess.run(["userdel", "-r", name], capture_output=True, check=False)
    for group in ("cytest-admins", "cytest-users"):
        subprocess.run(["groupdel", group], capture_output=True, check=False)


@pytest.fixture(scope="session")
def pam_users() -> Iterator[PamUsers]:
    """Real Unix users (useradd/chpasswd) and the fast 'courtyard-test' PAM service."""
    need(hasattr(os, "geteuid") and os.geteuid() == 0, "PAM tests create Unix users: run as root")
    need(shutil.which("useradd") and shutil.which("chpasswd"), "useradd/chpasswd missing")
    try:
        import pamela  # noqa: F401
    except ImportError:
        need(False, "pamela is not installed (pip install pamela)")
    _remove_pam_users()
    PAM_SERVICE_FILE.write_text("auth required pam_unix.so nodelay\n"
                                "account required pam_unix.so\n"
                                "session required pam_unix.so\n")
    try:
        _run("groupadd", "cytest-admins")
        _run("groupadd", "cytest-users")
        for name, password in PAM_USERS.items():
            _run("useradd", "-m", "-s", "/bin/bash", name)
            subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True,
                           capture_output=True)
        _run("usermod", "-aG", "cytest-users", "cytest-alice")
        _run("usermod", "-aG", "cytest-users,cytest-admins", "cytest-bob")
        yield PamUsers(PAM_SERVICE, dict(PAM_USERS))
    finally:
        _remove_pam_users()
        PAM_SERVICE_FILE.unlink(missing_ok=True)
