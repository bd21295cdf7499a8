"""A site's templates written for JupyterHub render on Courtyard, fetched over HTTP from a
real hub process: ``extra_template_paths``, ``{% extends "templates/page.html" %}``,
JupyterHub's block names and variables, ``template_vars`` (a callable too), the
announcements, the login page's customisation points, and a broken template breaking only
its own page (the login and error pages fall back to the built-in ones)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx

from tests.hubprocess import sign_in

SITE_PAGE = """\
{% extends "templates/page.html" %}
{% block meta %}<meta name="description" content="Our hub">{% endblock %}
{% block stylesheet %}{{ super() }}<link rel="stylesheet" href="{{ static_url('site.css') }}">{% endblock %}
{% block nav_bar_left_items %}{{ super() }}<li id="help-link"><a href="{{ help_url }}">Help</a></li>
{% for service in services %}<li class="svc">{{ service.name }}:{{ service.href }}</li>{% endfor %}
{% endblock %}
{% block login_widget %}<span id="who">{{ user.name if user else "nobody" }}</span>{% endblock %}
{% block footer %}<p id="site-footer">Run by {{ org }}, prefix {{ prefix }}</p>{% endblock %}
{% block script %}<script type="module" src="{{ static_url('site.js') }}"></script>{% endblock %}
"""

SITE_HOME = """\
{% extends "page.html" %}
{% block main %}<h1 id="welcome">Welcome {{ user.name }} to {{ org }}</h1>{% endblock %}
"""

SITE_LOGIN = """\
{% extends "templates/login.html" %}
{% block login %}<p id="login-intro">Sign in with your {{ org }} account</p>{{ super() }}{% endblock %}
"""

BROKEN_TOKEN = """\
{% extends "page.html" %}
{% block main %}{{ nope( }}{% endblock %}
"""

CONFIG = """
import os
def template_vars(user):
    return {{"org": "Physics", "help_url": "/help", "announcement": "all pages",
             "announcement_login": "<b>login</b> news",
             "announcement_home": "home for " + (user.name if user else "?")}}
c.JupyterHub.extra_template_paths = [{templates!r}]
c.JupyterHub.template_vars = template_vars
c.JupyterHub.services = [{{"name": "docs", "url": "http://127.0.0.1:9"}},
                         {{"name": "secret-svc", "url": "http://127.0.0.1:9", "display": False}}]
"""


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir()
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def test_a_jupyterhub_sites_templates_render(run_hub: Any, tmp_path: Path) -> None:
    templates = write(tmp_path / "site", {"page.html": SITE_PAGE, "home.html": SITE_HOME,
                                          "login.html": SITE_LOGIN, "token.html": BROKEN_TOKEN})
    hub = run_hub(CONFIG.format(templates=str(templates)))
    with httpx.Client(follow_redirects=True, timeout=30) as browser:
        login = browser.get(f"{hub.url}/hub/login")
        assert login.status_code == 200
        assert '<p id="login-intro">Sign in with your Physics account</p>' in login.text
        assert 'name="password"' in login.text  # super(): the built-in form is kept
        assert "<b>login</b> news" in login.text  # announcement_login, as HTML
        assert "all pages" not in login.text
        assert '<span id="who">nobody</span>' in login.text
        assert '<meta name="description" content="Our hub">' in login.text
        assert "/hub/static/style.css" in login.text and "/hub/static/site.css" in login.text
        assert '<script type="module" src="/hub/static/site.js">' in login.text

        home = sign_in(hub, browser, f"{hub.url}/hub/home", "alice")
        assert home.status_code == 200
        assert str(home.url) == f"{hub.url}/hub/home"
        assert '<h1 id="welcome">Welcome alice to Physics</h1>' in home.text
        assert "home for alice" in home.text  # announcement_home, from the callable
        assert '<li id="help-link"><a href="/help">Help</a></li>' in home.text
        assert 'href="/hub/home"' in home.text  # the built-in items, kept by super()
        assert '<li class="svc">docs:/services/docs/</li>' in home.text
        assert "secret-svc" not in home.text
        assert '<span id="who">alice</span>' in home.text
        assert '<p id="site-footer">Run by Physics, prefix /</p>' in home.text

        token = browser.get(f"{hub.url}/hub/token")  # its template is broken: only it fails
        assert token.status_code == 500
        assert "template is broken" in token.text
        assert browser.get(f"{hub.url}/hub/home").status_code == 200
    log = hub.stop()
    assert "Template token.html failed: TemplateSyntaxError" in log
    assert "token.html" in log


def test_broken_site_layout_leaves_login_and_error_pages_working(run_hub: Any,
                                                                 tmp_path: Path) -> None:
    templates = write(tmp_path / "site", {
        "page.html": '{% extends "templates/page.html" %}{% block main %}{% if %}{% endblock %}',
        "error.html": '{% extends "page.html" %}{% block main %}{{ 1 / }}{% endblock %}'})
    hub = run_hub(f"c.JupyterHub.extra_template_paths = [{str(templates)!r}]\n")
    with httpx.Client(timeout=30) as browser:
        login = browser.get(f"{hub.url}/hub/login")
        assert login.status_code == 200
        assert 'name="username"' in login.text
        missing = browser.get(f"{hub.url}/hub/error/404")
        assert missing.status_code == 404
        assert "Page not found" in missing.text
        assert browser.get(f"{hub.url}/hub/nowhere").status_code == 404
    log = hub.stop()
    assert "Template login.html failed" in log
    assert "Template error.html failed" in log


def test_in_chromium_a_jupyterhub_layout_signs_in_without_csp_violations(
        run_hub: Any, tmp_path: Path, page: Any) -> None:
    from playwright.sync_api import expect

    templates = write(tmp_path / "site", {"page.html": """\
{% extends "templates/page.html" %}
{% block nav_bar_left_items %}{{ super() }}<li><a id="help" href="/help">Help</a></li>{% endblock %}
{% block footer %}<p id="site-footer">Run by {{ org }}</p>{% endblock %}
"""})
    hub = run_hub(f"""
c.JupyterHub.extra_template_paths = [{str(templates)!r}]
c.JupyterHub.template_vars = {{"org": "Physics", "announcement_login": "Maintenance at 6"}}
""")
    page.goto(f"{hub.url}/hub/login")
    expect(page.get_by_role("note")).to_have_text("Maintenance at 6")
    expect(page.locator("#site-footer")).to_have_text("Run by Physics")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("x")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{hub.url}/hub/home")
    expect(page.locator("#help")).to_be_visible()
    expect(page.get_by_role("link", name="Tokens")).to_be_visible()
    expect(page.get_by_text("Signed in as")).to_contain_text("alice")
    hub.stop()


def test_a_jupyterhub_authenticators_custom_html_replaces_the_form(run_hub: Any) -> None:
    hub = run_hub('''
from jupyterhub.auth import DummyAuthenticator

class SiteAuthenticator(DummyAuthenticator):
    custom_html = ('<form id="site-login" method="post" action="{{ authenticator_login_url }}">'
                   '<input type="hidden" name="_xsrf" value="{{ xsrf }}">'
                   '<input name="username"><button>Go</button></form>')

c.JupyterHub.authenticator_class = SiteAuthenticator
''')
    with httpx.Client(timeout=30) as browser:
        login = browser.get(f"{hub.url}/hub/login?next=/hub/token")
        assert login.status_code == 200
        assert '<form id="site-login" method="post" action="/hub/login?next=%2Fhub%2Ftoken">' \
            in login.text
        assert 'name="password"' not in login.text
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', login.text).group(1)
        r = browser.post(f"{hub.url}/hub/login?next=/hub/token",
                         data={"_xsrf": xsrf, "username": "carol"})
        assert r.status_code == 303 and r.headers["location"] == "/hub/token"
