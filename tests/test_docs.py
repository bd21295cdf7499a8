"""Generated documents stay true to the code."""

from __future__ import annotations

from pathlib import Path

from courtyard.api.openapi import document_text
from courtyard.docs import config_file_text, configuration_markdown

DOCS = Path(__file__).parent.parent / "docs"


def test_openapi_is_current():
    assert (DOCS / "openapi.json").read_text() == document_text(), \
        "docs/openapi.json is stale: python -m courtyard.api.openapi > docs/openapi.json"


def test_configuration_reference_is_current():
    assert (DOCS / "configuration.md").read_text() == configuration_markdown(), \
        "docs/configuration.md is stale: python -m courtyard.docs > docs/configuration.md"


def test_every_required_hub_option_is_documented():
    text = configuration_markdown()
    for name in ("ip", "port", "bind_url", "base_url", "hub_ip", "hub_port", "hub_bind_url",
                 "hub_connect_url", "public_url", "db_url", "cookie_secret", "cookie_secret_file",
                 "api_tokens", "services", "load_roles", "admin_users", "allow_named_servers",
                 "named_server_limit_per_user", "concurrent_spawn_limit", "active_server_limit",
                 "api_page_default_limit", "api_page_max_limit", "authenticator_class",
                 "spawner_class", "proxy_class", "cleanup_servers", "template_paths",
                 "activity_resolution", "ssl_cert", "ssl_key", "shutdown_on_logout",
                 "redirect_to_server", "default_url"):
        assert f"`c.Courtyard.{name}`" in text, name


def test_generated_config_runs(tmp_path):
    f = tmp_path / "courtyard_config.py"
    f.write_text(config_file_text())
    from courtyard.app import Hub

    Hub.from_file(str(f))  # all comments: loads as an empty config


async def test_openapi_served(api):
    r = await api.get("/openapi.json")
    assert r.status_code == 200 and r.json()["openapi"].startswith("3.")
    assert "/users/{name}" in r.json()["paths"]
