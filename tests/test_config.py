"""Configuration: JupyterHub compatibility, unknown options, bad values, class names."""

from __future__ import annotations

import logging

import pytest
from traitlets.config import Config

from courtyard.app import Hub
from courtyard.auth.dummy import DummyAuthenticator, NullAuthenticator
from courtyard.config import normalize, resolve_class
from courtyard.errors import ConfigError


def test_jupyterhub_section_maps_to_courtyard(tmp_path):
    f = tmp_path / "jupyterhub_config.py"
    f.write_text("c = get_config()\nc.JupyterHub.port = 9000\nc.JupyterHub.base_url = 'lab'\n"
                 "c.Courtyard.hub_port = 9001\n")
    hub = Hub.from_file(str(f))
    assert hub.options.port == 9000 and hub.options.hub_port == 9001
    assert hub.options.base_url == "/lab/"


def test_cli_overrides_beat_file(tmp_path):
    f = tmp_path / "c.py"
    f.write_text("c.JupyterHub.port = 9000\n")
    assert Hub.from_file(str(f), {"port": 9100}).options.port == 9100


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        Hub.from_file(str(tmp_path / "nope.py"))
    f = tmp_path / "broken.py"
    f.write_text("c.JupyterHub.port = 1/0\n")
    with pytest.raises(ConfigError, match="ZeroDivisionError"):
        Hub.from_file(str(f))


def test_wrong_type_is_one_line_naming_option():
    c = Config()
    c.Courtyard.port = "eighty"
    with pytest.raises(ConfigError) as e:
        Hub(c)
    assert "port" in str(e.value) and "\n" not in str(e.value)
    c.Courtyard.port = 70000
    with pytest.raises(ConfigError, match="port"):
        Hub(c)


def test_class_aliases():
    from courtyard.auth.base import Authenticator

    assert resolve_class("authenticator", "dummy", Authenticator) is DummyAuthenticator
    assert resolve_class("authenticator", "jupyterhub.auth.DummyAuthenticator",
                             Authenticator) is DummyAuthenticator
    assert resolve_class("authenticator", "null", Authenticator) is NullAuthenticator
    assert resolve_class("authenticator", NullAuthenticator, Authenticator) is \
        NullAuthenticator
    with pytest.raises(ConfigError, match="not available"):
        resolve_class("authenticator", "nonesuch", Authenticator)
    with pytest.raises(ConfigError, match="cannot be loaded"):
        resolve_class("authenticator", "mypkg.MyAuth", Authenticator)
    with pytest.raises(ConfigError, match="subclass"):
        resolve_class("authenticator", "courtyard.options.Courtyard", Authenticator)


def test_unknown_options_warned_once(tmp_path, db_url, caplog):
    c = Config()
    c.JupyterHub.bogus_option = 1
    c.KubeSpawner.image = "x"
    c.Authenticator.admin_users = {"a"}
    c.Courtyard.db_url = db_url
    c.Courtyard.data_files_path = str(tmp_path)
    hub = Hub(normalize(c))
    with caplog.at_level(logging.WARNING, logger="courtyard"):
        hub.initialize()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("bogus_option" in w for w in warnings) == 1
    assert any("c.JupyterHub.bogus_option" in w for w in warnings)
    assert any("KubeSpawner" in w for w in warnings)
    assert not any("admin_users" in w for w in warnings)


def test_bad_roles_and_tokens_stop_startup(tmp_path, db_url):
    def hub_with(**opts):
        c = Config()
        c.Courtyard.db_url = db_url
        c.Courtyard.data_files_path = str(tmp_path)
        for k, v in opts.items():
            c.Courtyard[k] = v
        Hub(c).initialize()

    with pytest.raises(ConfigError, match="load_roles"):
        hub_with(load_roles=[{"name": "r1", "scopes": ["not-a-scope"]}])
    with pytest.raises(ConfigError, match="too short"):
        hub_with(api_tokens={"short": "admin"})
    with pytest.raises(ConfigError, match="valid username"):
        hub_with(api_tokens={"long-enough-token": "bad/name"})
    with pytest.raises(ConfigError, match="name"):
        hub_with(services=[{"url": "http://x"}])
    with pytest.raises(ConfigError, match="at most 255 characters"):  # what the column holds
        hub_with(services=[{"name": "s" * 256}])


def test_cookie_secret_file_is_private(tmp_path, db_url):
    c = Config()
    c.Courtyard.db_url = db_url
    c.Courtyard.data_files_path = str(tmp_path)
    hub = Hub(c)
    hub.initialize()
    path = tmp_path / "courtyard_cookie_secret"
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(hub.cookie_secret) == 32
    hub2 = Hub(c)
    hub2.initialize()
    assert hub2.cookie_secret == hub.cookie_secret
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        Hub(c).initialize()
    path.chmod(0o600)
    path.write_text("")  # what a hub killed between creating and writing it used to leave
    with pytest.raises(ConfigError, match="does not hold a hex secret; delete it"):
        Hub(c).initialize()


def test_chp_api_settings_apply_to_the_builtin_proxy(tmp_path):
    f = tmp_path / "jupyterhub_config.py"
    f.write_text("c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:18001'\n"
                 "c.ConfigurableHTTPProxy.auth_token = 'chp-token-123'\n"
                 "c.ConfigurableHTTPProxy.command = ['configurable-http-proxy']\n"
                 "c.BuiltinProxy.auth_token = 'own-token-456'\n")
    hub = Hub.from_file(str(f))
    from courtyard.proxy.rest import BuiltinProxy

    proxy = BuiltinProxy(config=hub.config)
    assert proxy.api_url == "http://127.0.0.1:18001"
    assert proxy.auth_token == "own-token-456"  # explicit c.BuiltinProxy wins
    assert proxy.command != ["configurable-http-proxy"]  # the command stays our own


def test_where_servers_reach_the_hub(make_hub):
    """One place says where servers, services and the proxy reach the hub and its API, and
    where users reach the hub, from the hub's bind and connect options."""
    insecure = Config({"DummyAuthenticator": {"allow_insecure": True}})  # a wildcard bind
    hub = make_hub(insecure, hub_ip="0.0.0.0", hub_port=8123, base_url="/jh/")
    assert hub.hub_url == "http://127.0.0.1:8123"  # a wildcard bind is reached on loopback
    assert hub.api_url == "http://127.0.0.1:8123/jh/hub/api"
    hub = make_hub(insecure, hub_connect_url="http://10.88.0.1:8081/hub/")
    assert (hub.hub_url, hub.api_url) == ("http://10.88.0.1:8081", "http://10.88.0.1:8081/hub/api")
    hub = make_hub(insecure, hub_connect_url="http://hub.internal:8081", base_url="/jh/")
    assert hub.api_url == "http://hub.internal:8081/jh/hub/api"
    hub = make_hub(insecure, ip="127.0.0.2", port=9000, base_url="/jh/")
    assert hub.public_url == hub.public_bind_url == "http://127.0.0.2:9000/jh/"
    hub = make_hub(insecure, subdomain_host="https://example.org", base_url="/jh/")
    assert hub.public_url == "https://example.org/jh/"
