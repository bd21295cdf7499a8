"""Last of the browser tests (the file name sorts last): the admin shuts the hub down."""

from __future__ import annotations

from .conftest import WebHub, expect, screenshot


def test_admin_shuts_the_hub_down(admin_page, web_hub: WebHub) -> None:
    page = admin_page
    page.goto(f"{web_hub.url}/hub/admin#hub")
    page.get_by_role("button", name="Shut down the hub…").click()
    dialog = page.get_by_role("dialog", name="Shut down the hub?")
    expect(dialog).to_be_visible()
    dialog.get_by_label("Also stop every user's server").check()
    screenshot(page, "admin-shutdown", full_page=False)
    # cancelling does nothing
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    assert web_hub.proc.poll() is None
    page.get_by_role("button", name="Shut down the hub…").click()
    dialog.get_by_role("button", name="Shut down").click()
    expect(page.locator("#shutdown-status")).to_contain_text("Shutting down Hub")
    assert web_hub.proc.wait(30) == 0
