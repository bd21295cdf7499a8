"""The admin shuts a hub down from the admin page: on a hub of the test's own, so no other
browser test depends on running before it."""

from __future__ import annotations

from .conftest import ADMIN_PASSWORD, WebHub, expect, screenshot, sign_in


def test_admin_shuts_the_hub_down(page, own_web_hub: WebHub) -> None:
    hub = own_web_hub
    sign_in(page, hub, hub.admin, ADMIN_PASSWORD)
    page.goto(f"{hub.url}/hub/admin#hub")
    page.get_by_role("button", name="Shut down the hub…").click()
    dialog = page.get_by_role("dialog", name="Shut down the hub?")
    expect(dialog).to_be_visible()
    dialog.get_by_label("Also stop every user's server").check()
    screenshot(page, "admin-shutdown", full_page=False)
    # cancelling does nothing
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    assert hub.proc.poll() is None
    page.get_by_role("button", name="Shut down the hub…").click()
    dialog.get_by_role("button", name="Shut down").click()
    expect(page.locator("#shutdown-status")).to_contain_text("Shutting down Hub")
    assert hub.proc.wait(30) == 0
