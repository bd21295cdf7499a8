"""Fixtures for the template tests: hubs as real processes, and the browser tests' Chromium
(a page that fails the test on any CSP violation or script error)."""

from tests.hubprocess import run_hub
from tests.web.conftest import browser, page

__all__ = ["browser", "page", "run_hub"]
