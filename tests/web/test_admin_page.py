"""The admin page in a real browser, on a hub with 50,000 users more than the tests make.

The list of users must come one page at a time from the API (never all of them), be
searchable and sortable by the database, and every action must go through the REST API
and show the API's message when it fails.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

from .conftest import BULK_USERS, WebHub, expect, screenshot, sign_up


def test_first_page_of_50000_users_only(admin_page, web_hub: WebHub) -> None:
    # one page of them is fetched and shown, never the whole list (how long that takes is
    # measured by bench/timings.py, not asserted here)
    page = admin_page
    with web_hub.api() as api:
        r = api.get("/users", params={"limit": 50, "sort": "name"},
                    headers={"Accept": "application/jupyterhub-pagination+json"})
    assert r.status_code == 200
    assert r.json()["_pagination"]["total"] >= BULK_USERS
    assert len(r.json()["items"]) == 50

    requests: list[str] = []
    page.on("request", lambda req: requests.append(req.url) if "/hub/api/users" in req.url
            else None)
    response = page.goto(f"{web_hub.url}/hub/admin")
    assert response.status == 200
    rows = page.locator("#users-table tbody tr")
    expect(rows).to_have_count(50)
    expect(page.locator("#users-summary")).to_contain_text(re.compile(r"Showing 1–50 of 50,\d{3} users"))
    # only one page was asked for: never the whole list
    user_lists = [u for u in requests if urlsplit(u).path.endswith("/hub/api/users")]
    assert user_lists
    for url in user_lists:
        assert parse_qs(urlsplit(url).query)["limit"] == ["50"], url
    screenshot(page, "admin-users", full_page=False)

    # find one user among them all
    page.get_by_label("Search by name").fill("user049999")
    expect(rows).to_have_count(1)
    expect(rows.first.get_by_role("rowheader")).to_have_text("user049999")
    expect(page.locator("#users-summary")).to_have_text("Showing 1–1 of 1 users")
    screenshot(page, "admin-search", full_page=False)

    # sort and page through a search
    page.get_by_label("Search by name").fill("user0499")
    page.get_by_label("Sort by").select_option("-name")
    expect(rows.first.get_by_role("rowheader")).to_have_text("user049999")
    expect(page.locator("#users-summary")).to_have_text("Showing 1–50 of 100 users")
    page.get_by_role("button", name="Next page").click()
    expect(page.locator("#users-summary")).to_have_text("Showing 51–100 of 100 users")
    expect(rows.first.get_by_role("rowheader")).to_have_text("user049949")
    expect(page.get_by_role("button", name="Next page")).to_be_disabled()


def test_add_edit_and_delete_users(admin_page, web_hub: WebHub) -> None:
    page = admin_page
    batch = web_hub.name("batch")
    first, second = f"{batch}a", f"{batch}b"
    web_hub.names += [first, second]
    page.goto(f"{web_hub.url}/hub/admin")
    page.get_by_role("button", name="Add users").click()
    dialog = page.get_by_role("dialog", name="Add users")
    dialog.get_by_label("Names, one per line").fill(f"{first}\n{second}\n")
    dialog.get_by_role("button", name="Add users").click()
    expect(page.locator("#admin-message")).to_have_text("Added 2 users.")
    # adding them again: the API's refusal is shown in the dialog
    page.get_by_role("button", name="Add users").click()
    dialog.get_by_label("Names, one per line").fill(f"{first}\n")
    dialog.get_by_role("button", name="Add users").click()
    expect(dialog.get_by_role("alert")).to_contain_text("already exist")
    dialog.get_by_role("button", name="Cancel").click()

    page.get_by_label("Search by name").fill(batch)
    rows = page.locator("#users-table tbody tr")
    expect(rows).to_have_count(2)
    # rename the first and make it an admin
    page.get_by_role("button", name=f"Edit {first}").click()
    edit = page.get_by_role("dialog", name=f"Edit {first}")
    renamed = web_hub.name("ren")
    edit.get_by_label("Name").fill(renamed)
    edit.get_by_label("Administrator").check()
    edit.get_by_role("button", name="Save").click()
    expect(page.locator("#admin-message")).to_have_text(f"Saved {renamed}.")
    page.get_by_label("Search by name").fill(renamed)
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Admin")
    # delete the second (the confirmation is accepted by the fixture)
    page.get_by_label("Search by name").fill(second)
    expect(rows).to_have_count(1)
    page.get_by_role("button", name=f"Edit {second}").click()
    page.get_by_role("dialog", name=f"Edit {second}").get_by_role(
        "button", name="Delete user").click()
    expect(page.locator("#admin-message")).to_have_text(f"Deleted {second}.")
    expect(page.locator("#users-table tbody")).to_contain_text("No users match")


def test_start_and_stop_someone_elses_server(admin_page, web_hub: WebHub) -> None:
    page = admin_page
    owner = web_hub.name("owned")
    with web_hub.api() as api:
        assert api.post(f"/users/{owner}").status_code == 201
        r = api.post(f"/users/{owner}/server", json={"profile": "standard"})
        assert r.status_code == 201, r.text  # "standard" is ready at once
    web_hub.wait_server(owner)
    page.goto(f"{web_hub.url}/hub/admin")
    page.get_by_label("Search by name").fill(owner)
    row = page.locator(f"#users-table tr[data-user='{owner}']")
    expect(row.locator(".badge").first).to_have_text("Running")
    expect(row.get_by_role("link", name=f"Open {owner}'s server")).to_have_attribute(
        "href", f"/user/{owner}/")
    row.get_by_role("button", name=f"Stop {owner}'s server").click()
    expect(row.locator(".badge").first).to_have_text("Stopped", timeout=20_000)
    web_hub.wait_server(owner, ready=False)
    # and start it again from here
    row.get_by_role("button", name=f"Start {owner}'s server").click()
    expect(row.locator(".badge").first).to_have_text("Running", timeout=20_000)
    web_hub.stop_server(owner)


def test_groups_members_and_properties(admin_page, web_hub: WebHub) -> None:
    page = admin_page
    group = f"team-{web_hub.name('g')}"
    page.goto(f"{web_hub.url}/hub/admin#groups")
    page.get_by_label("New group name").fill(group)
    page.get_by_role("button", name="Create group").click()
    expect(page.locator("#admin-message")).to_have_text(f"Created the group {group}.")
    page.get_by_role("button", name=f"Edit group {group}").click()
    editor = page.locator("#group-editor")
    editor.get_by_label("Add members").fill("user000001, user000002")
    editor.get_by_role("button", name="Add", exact=True).click()
    expect(editor.locator("#group-members")).to_contain_text("user000002")
    editor.get_by_label("Add members").fill("no-such-person")
    editor.get_by_role("button", name="Add", exact=True).click()
    expect(page.locator("#admin-message")).to_contain_text("no-such-person")
    editor.get_by_role("button", name="remove user000001").click()
    expect(editor.locator("#group-members")).not_to_contain_text("user000001")
    # the JSON editor refuses what is not a JSON object
    properties = editor.get_by_label("Properties (a JSON object)")
    properties.fill("{not json")
    editor.get_by_role("button", name="Save properties").click()
    expect(editor.get_by_role("alert")).to_contain_text("Not valid JSON")
    properties.fill("[1, 2]")
    editor.get_by_role("button", name="Save properties").click()
    expect(editor.get_by_role("alert")).to_contain_text("must be a JSON object")
    properties.fill('{"course": "physics-101", "gpu": true}')
    editor.get_by_role("button", name="Save properties").click()
    expect(page.locator("#admin-message")).to_have_text(f"Saved the properties of {group}.")
    row = page.locator(f"#groups-table tr[data-group='{group}']")
    expect(row).to_contain_text("course, gpu")
    screenshot(page, "admin-groups")
    with web_hub.api() as api:
        model = api.get(f"/groups/{group}").json()
    assert model["users"] == ["user000002"]
    assert model["properties"] == {"course": "physics-101", "gpu": True}
    editor.get_by_role("button", name="Delete group").click()
    expect(page.locator("#admin-message")).to_have_text(f"Deleted the group {group}.")
    expect(row).to_have_count(0)


def test_roles(admin_page, web_hub: WebHub) -> None:
    page = admin_page
    role = f"graders-{web_hub.name('r')}"
    member = web_hub.name("grader")
    with web_hub.api() as api:
        api.post(f"/users/{member}")
    page.goto(f"{web_hub.url}/hub/admin#roles")
    builtin = page.locator("#roles-table tr[data-role='admin']")
    expect(builtin).to_contain_text("read-only")
    expect(builtin).to_contain_text("admin-ui")
    page.get_by_role("button", name="New role").click()
    dialog = page.get_by_role("dialog", name="New role")
    dialog.get_by_label("Name").fill(role)
    dialog.get_by_label("Description").fill("May read users' names and activity")
    dialog.get_by_label("Scopes, one per line").fill("read:users:name\nno-such:scope")
    dialog.get_by_label("Users (separated by spaces or commas)").fill(member)
    dialog.get_by_role("button", name="Save role").click()
    expect(dialog.get_by_role("alert")).to_contain_text("no-such:scope")
    dialog.get_by_label("Scopes, one per line").fill("read:users:name\nread:users:activity")
    dialog.get_by_role("button", name="Save role").click()
    row = page.locator(f"#roles-table tr[data-role='{role}']")
    expect(row).to_contain_text("read:users:activity")
    expect(row).to_contain_text(f"user {member}")
    screenshot(page, "admin-roles", full_page=False)
    # the member now holds the role's scopes
    with web_hub.api() as api:
        assert role in api.get(f"/users/{member}").json()["roles"]
    row.get_by_role("button", name=f"Edit role {role}").click()
    page.get_by_role("dialog", name=f"Edit role {role}").get_by_role(
        "button", name="Delete role").click()
    expect(row).to_have_count(0)


def test_services_are_listed(admin_page, web_hub: WebHub) -> None:
    page = admin_page
    page.goto(f"{web_hub.url}/hub/admin#services")
    table = page.locator("#services-table")
    expect(table.locator("tr", has_text="culler")).to_contain_text("API only")
    expect(table.locator("tr", has_text="docs")).to_contain_text("/services/docs/")
    screenshot(page, "admin-services", full_page=False)


def test_admin_page_on_a_phone(phone, web_hub: WebHub) -> None:
    from .conftest import ADMIN_PASSWORD, sign_in

    sign_in(phone, web_hub, web_hub.admin, ADMIN_PASSWORD)
    phone.goto(f"{web_hub.url}/hub/admin")
    expect(phone.locator("#users-table tbody tr")).to_have_count(50)
    overflow = phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the admin page is {overflow}px wider than the phone"
    screenshot(phone, "admin-phone", full_page=False)


def test_not_for_users_without_admin_ui(page, web_hub: WebHub) -> None:
    sign_up(page, web_hub, web_hub.name("plain"))
    response = page.goto(f"{web_hub.url}/hub/admin")
    assert response.status == 403
    expect(page.get_by_role("alert")).to_contain_text("admin-ui")
