// The admin page. Users and groups come one page at a time from the REST API (search,
// sort and paging happen in the database), so it stays fast with tens of thousands of
// users. Every change is an API call; the API's error message is shown when one fails.
import {
  announce, api, el, serverPath, serverUrl, showMessage, timeElement, userPath,
} from "./api.js";

const root = document.getElementById("admin");
const can = (what) => root.dataset[`can${what.replace(/(^|-)(\w)/g, (_m, _d, c) => c.toUpperCase())}`] === "true";
const namedServers = root.dataset.namedServers === "true";
const pageSize = Number(root.dataset.pageSize) || 50;
const message = document.getElementById("admin-message");

function fail(prefix, err) {
  showMessage(message, `${prefix}: ${err.message}`);
  announce(`${prefix}: ${err.message}`);
}

function ok(text) {
  showMessage(message, text, "ok");
  announce(text);
}

function splitNames(text) {
  return text.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean);
}

for (const button of document.querySelectorAll("dialog [data-close]")) {
  button.addEventListener("click", () => button.closest("dialog").close());
}

// -- tabs -------------------------------------------------------------------------------------
const loaders = {};
const loaded = new Set();

function showTab() {
  const wanted = (window.location.hash || "#users").slice(1);
  const panels = [...document.querySelectorAll("[data-panel]")];
  const panel = panels.find((p) => p.dataset.panel === wanted) || panels[0];
  for (const p of panels) p.hidden = p !== panel;
  for (const link of document.querySelectorAll("[data-tab]")) {
    if (link.dataset.tab === panel.dataset.panel) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (!loaded.has(panel.dataset.panel) && loaders[panel.dataset.panel]) {
    loaded.add(panel.dataset.panel);
    loaders[panel.dataset.panel]();
  }
}
window.addEventListener("hashchange", showTab);

// -- users ------------------------------------------------------------------------------------
const users = { offset: 0, total: 0, request: 0, refresh: null };
const usersBody = document.querySelector("#users-table tbody");
const usersSummary = document.getElementById("users-summary");
const searchForm = document.getElementById("user-search");
const filterInput = document.getElementById("user-filter");

function stateOf(server) {
  if (!server) return "stopped";
  if (server.pending) return server.pending;
  return server.ready ? "ready" : "stopped";
}

const STATE_LABELS = { ready: "Running", spawn: "Starting", stop: "Stopping", check: "Checking", stopped: "Stopped" };

async function serverAction(button, user, name, action) {
  button.disabled = true;
  const label = name ? `${user}'s server ${name}` : `${user}'s server`;
  try {
    const { status } = await api(serverPath(user, name), { method: action === "start" ? "POST" : "DELETE" });
    if (action === "start") ok(status === 201 ? `Started ${label}.` : `Starting ${label}…`);
    else ok(status === 204 ? `Stopped ${label}.` : `Stopping ${label}…`);
  } catch (err) {
    fail(`Could not ${action} ${label}`, err);
  }
  await loadUsers();
}

function serverControls(user, name, server) {
  const state = stateOf(server);
  const label = name ? ` ${user.name}/${name}` : ` ${user.name}'s server`;
  const hidden = (text) => el("span", { class: "visually-hidden" }, text);
  const controls = [];
  if (state === "ready") {
    // the API's url is on the server's own origin with subdomain_host
    const href = (server && server.url) || serverUrl(user.name, name);
    controls.push(el("a", { class: "button", href }, "Open", hidden(label)));
  }
  if ((state === "ready" || state === "spawn") && can("stop-servers")) {
    const stop = el("button", { type: "button", dataset: { action: "stop" } }, state === "spawn" ? "Cancel" : "Stop", hidden(label));
    stop.addEventListener("click", () => serverAction(stop, user.name, name, "stop"));
    controls.push(stop);
  }
  if (state === "stopped" && can("start-servers")) {
    const start = el("button", { type: "button", dataset: { action: "start" } }, "Start", hidden(label));
    start.addEventListener("click", () => serverAction(start, user.name, name, "start"));
    controls.push(start);
  }
  return controls;
}

function userRow(user) {
  const servers = user.servers || {};
  const defaultServer = servers[""];
  const state = stateOf(defaultServer);
  const named = Object.entries(servers).filter(([name]) => name);
  const serverCell = el("td", { "data-label": "Server" },
    el("span", { class: `badge state-${state}` }, STATE_LABELS[state] || state));
  if (named.length) {
    const list = el("ul", { class: "named-servers" }, named.map(([name, server]) => el("li", {},
      el("code", {}, name), " ",
      el("span", { class: `badge state-${stateOf(server)}` }, STATE_LABELS[stateOf(server)]), " ",
      serverControls(user, name, server))));
    serverCell.append(el("details", {}, el("summary", {}, `${named.length} named server${named.length > 1 ? "s" : ""}`), list));
  }
  const edit = el("button", { type: "button", dataset: { action: "edit" } }, "Edit",
    el("span", { class: "visually-hidden" }, ` ${user.name}`));
  edit.addEventListener("click", () => openEditUser(user, edit));
  return el("tr", { dataset: { user: user.name } },
    el("th", { scope: "row", "data-label": "Name" }, user.name),
    el("td", { "data-label": "Role" }, user.admin ? el("span", { class: "badge admin" }, "Admin") : "User"),
    serverCell,
    el("td", { "data-label": "Last activity" }, timeElement(user.last_activity)),
    el("td", { class: "actions" }, serverControls(user, "", defaultServer), can("users") ? edit : null));
}

function userQuery() {
  const data = new FormData(searchForm);
  const params = new URLSearchParams({ offset: users.offset, limit: pageSize, sort: data.get("sort") });
  if (data.get("name_filter").trim()) params.set("name_filter", data.get("name_filter").trim());
  if (data.get("state")) params.set("state", data.get("state"));
  if (namedServers) params.set("include_stopped_servers", "1");
  return params;
}

let searchTimer = null;

async function loadUsers() {
  window.clearTimeout(searchTimer); // this request reads the search box as it is now
  const request = ++users.request;
  usersBody.setAttribute("aria-busy", "true");
  let page;
  try {
    ({ data: page } = await api(`users?${userQuery()}`, { envelope: true }));
  } catch (err) {
    if (request === users.request) fail("Could not load users", err);
    return;
  } finally {
    if (request === users.request) usersBody.removeAttribute("aria-busy");
  }
  if (request !== users.request) return; // a newer search has been sent
  const { items, _pagination: p } = page;
  users.total = p.total;
  if (!items.length && p.offset > 0 && p.total > 0) {
    users.offset = Math.max(0, Math.floor((p.total - 1) / pageSize) * pageSize);
    loadUsers();
    return;
  }
  usersBody.replaceChildren(...(items.length ? items.map(userRow)
    : [el("tr", {}, el("td", { colspan: 5, class: "hint" }, "No users match."))]));
  const first = items.length ? p.offset + 1 : 0;
  const last = p.offset + items.length;
  const fmt = (n) => n.toLocaleString();
  usersSummary.textContent = `Showing ${fmt(first)}–${fmt(last)} of ${fmt(p.total)} users`;
  document.getElementById("users-page").textContent =
    `Page ${fmt(Math.floor(p.offset / pageSize) + 1)} of ${fmt(Math.max(1, Math.ceil(p.total / pageSize)))}`;
  document.getElementById("users-prev").disabled = p.offset === 0;
  document.getElementById("users-next").disabled = !p.next;
  window.clearTimeout(users.refresh);
  if (items.some((u) => Object.values(u.servers || {}).some((s) => s.pending))) {
    users.refresh = window.setTimeout(loadUsers, 1500); // follow servers that are starting or stopping
  }
}
loaders.users = loadUsers;

filterInput.addEventListener("input", () => {
  window.clearTimeout(searchTimer);
  searchTimer = window.setTimeout(() => { users.offset = 0; loadUsers(); }, 250);
});
searchForm.addEventListener("change", (event) => {
  if (event.target === filterInput) return;
  users.offset = 0;
  loadUsers();
});
searchForm.addEventListener("submit", (event) => {
  event.preventDefault();
  users.offset = 0;
  loadUsers();
});
document.getElementById("users-prev").addEventListener("click", () => {
  users.offset = Math.max(0, users.offset - pageSize);
  loadUsers();
});
document.getElementById("users-next").addEventListener("click", () => {
  users.offset += pageSize;
  loadUsers();
});

// add users
const addDialog = document.getElementById("add-users-dialog");
document.getElementById("add-users-open")?.addEventListener("click", () => {
  showMessage(document.getElementById("add-users-error"), "");
  addDialog.showModal();
});
document.getElementById("add-users-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const names = document.getElementById("add-users-names").value.split("\n").map((s) => s.trim()).filter(Boolean);
  const error = document.getElementById("add-users-error");
  if (!names.length) {
    showMessage(error, "Enter at least one name.");
    return;
  }
  try {
    const { data } = await api("users", {
      method: "POST", body: { usernames: names, admin: document.getElementById("add-users-admin").checked },
    });
    addDialog.close();
    event.target.reset();
    const skipped = names.length - data.length;
    ok(`Added ${data.length} user${data.length === 1 ? "" : "s"}${skipped ? ` (${skipped} already existed)` : ""}.`);
    loadUsers();
  } catch (err) {
    showMessage(error, err.message);
  }
});

// edit, rename, grant admin, delete
const editDialog = document.getElementById("edit-user-dialog");
let editing = null;

function openEditUser(user, opener) {
  editing = { user, opener };
  document.getElementById("edit-user-heading").textContent = `Edit ${user.name}`;
  document.getElementById("edit-user-name").value = user.name;
  document.getElementById("edit-user-admin").checked = !!user.admin;
  showMessage(document.getElementById("edit-user-error"), "");
  editDialog.showModal();
}

document.getElementById("edit-user-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const { user } = editing;
  const body = {};
  const name = document.getElementById("edit-user-name").value.trim();
  const admin = document.getElementById("edit-user-admin").checked;
  if (name !== user.name) body.name = name;
  if (admin !== !!user.admin) body.admin = admin;
  if (!Object.keys(body).length) {
    editDialog.close();
    return;
  }
  try {
    await api(userPath(user.name), { method: "PATCH", body });
    editDialog.close();
    ok(`Saved ${name}.`);
    loadUsers();
  } catch (err) {
    showMessage(document.getElementById("edit-user-error"), err.message);
  }
});

document.getElementById("edit-user-delete")?.addEventListener("click", async () => {
  const { user } = editing;
  if (!window.confirm(`Delete the user ${user.name}? Their servers are stopped first.`)) return;
  try {
    await api(userPath(user.name), { method: "DELETE" });
    editDialog.close();
    ok(`Deleted ${user.name}.`);
    loadUsers();
  } catch (err) {
    showMessage(document.getElementById("edit-user-error"), err.message);
  }
});

// -- groups -----------------------------------------------------------------------------------
const groups = { offset: 0, current: null };
const groupsBody = document.querySelector("#groups-table tbody");
const editor = document.getElementById("group-editor");

async function loadGroups() {
  if (!groupsBody) return;
  let page;
  try {
    ({ data: page } = await api(`groups?offset=${groups.offset}&limit=${pageSize}`, { envelope: true }));
  } catch (err) {
    fail("Could not load groups", err);
    return;
  }
  const { items, _pagination: p } = page;
  groupsBody.replaceChildren(...(items.length ? items.map(groupRow)
    : [el("tr", {}, el("td", { colspan: 4, class: "hint" }, "No groups yet."))]));
  document.getElementById("groups-summary").textContent = `${p.total.toLocaleString()} group${p.total === 1 ? "" : "s"}`;
  document.getElementById("groups-page").textContent =
    `Page ${Math.floor(p.offset / pageSize) + 1} of ${Math.max(1, Math.ceil(p.total / pageSize))}`;
  document.getElementById("groups-prev").disabled = p.offset === 0;
  document.getElementById("groups-next").disabled = !p.next;
}
loaders.groups = loadGroups;

function groupRow(group) {
  const open = el("button", { type: "button" }, "Edit", el("span", { class: "visually-hidden" }, ` group ${group.name}`));
  open.addEventListener("click", () => {
    fillEditor(group);
    editor.hidden = false;
    document.getElementById("group-editor-heading").focus();
  });
  const keys = Object.keys(group.properties || {});
  return el("tr", { dataset: { group: group.name } },
    el("th", { scope: "row", "data-label": "Group" }, group.name),
    el("td", { "data-label": "Members" }, `${(group.users || []).length}`),
    el("td", { "data-label": "Properties" }, keys.length ? keys.join(", ") : el("span", { class: "hint" }, "none")),
    el("td", { class: "actions" }, open));
}

function fillEditor(group) {
  groups.current = group;
  document.getElementById("group-editor-heading").textContent = `Group ${group.name}`;
  const members = document.getElementById("group-members");
  members.replaceChildren(...(group.users || []).map((name) => {
    const remove = el("button", { type: "button", class: "chip-remove" }, "×",
      el("span", { class: "visually-hidden" }, ` remove ${name} from ${group.name}`));
    remove.addEventListener("click", () => changeMembers("DELETE", [name]));
    return el("li", { class: "chip" }, name, remove);
  }));
  if (!(group.users || []).length) members.append(el("li", { class: "hint" }, "No members."));
  document.getElementById("group-properties-json").value = JSON.stringify(group.properties || {}, null, 2);
  showMessage(document.getElementById("group-properties-error"), "");
}

async function changeMembers(method, names) {
  const group = groups.current;
  try {
    const { data } = await api(`groups/${encodeURIComponent(group.name)}/users`, { method, body: { users: names } });
    fillEditor(data);
    ok(method === "POST" ? `Added ${names.join(", ")} to ${group.name}.` : `Removed ${names.join(", ")} from ${group.name}.`);
    loadGroups();
  } catch (err) {
    fail(`Could not change the members of ${group.name}`, err);
  }
}

document.getElementById("group-add-members")?.addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("group-new-members");
  const names = splitNames(input.value);
  if (names.length) changeMembers("POST", names).then(() => { input.value = ""; });
});

document.getElementById("group-properties")?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = document.getElementById("group-properties-error");
  let properties;
  try {
    properties = JSON.parse(document.getElementById("group-properties-json").value || "{}");
  } catch (err) {
    showMessage(error, `Not valid JSON: ${err.message}`);
    return;
  }
  if (properties === null || typeof properties !== "object" || Array.isArray(properties)) {
    showMessage(error, "Properties must be a JSON object, like {\"key\": \"value\"}.");
    return;
  }
  try {
    const { data } = await api(`groups/${encodeURIComponent(groups.current.name)}/properties`, { method: "PUT", body: properties });
    fillEditor(data);
    ok(`Saved the properties of ${data.name}.`);
    loadGroups();
  } catch (err) {
    showMessage(error, err.message);
  }
});

document.getElementById("group-delete")?.addEventListener("click", async () => {
  const group = groups.current;
  if (!window.confirm(`Delete the group ${group.name}? Its members stay.`)) return;
  try {
    await api(`groups/${encodeURIComponent(group.name)}`, { method: "DELETE" });
    editor.hidden = true;
    groups.current = null;
    ok(`Deleted the group ${group.name}.`);
    loadGroups();
  } catch (err) {
    fail(`Could not delete ${group.name}`, err);
  }
});
document.getElementById("group-close")?.addEventListener("click", () => { editor.hidden = true; groups.current = null; });

document.getElementById("new-group")?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = document.getElementById("new-group-name");
  const name = input.value.trim();
  if (!name) return;
  try {
    await api(`groups/${encodeURIComponent(name)}`, { method: "POST" });
    input.value = "";
    ok(`Created the group ${name}.`);
    loadGroups();
  } catch (err) {
    fail(`Could not create the group ${name}`, err);
  }
});
document.getElementById("groups-prev")?.addEventListener("click", () => { groups.offset = Math.max(0, groups.offset - pageSize); loadGroups(); });
document.getElementById("groups-next")?.addEventListener("click", () => { groups.offset += pageSize; loadGroups(); });

// -- roles ------------------------------------------------------------------------------------
const rolesBody = document.querySelector("#roles-table tbody");
const roleDialog = document.getElementById("role-dialog");
let editingRole = null;
const ORIGIN = { api: "this page (API)", config: "config file", builtin: "built in" };

async function loadRoles() {
  if (!rolesBody) return;
  try {
    const { data } = await api("roles");
    rolesBody.replaceChildren(...data.map(roleRow));
  } catch (err) {
    fail("Could not load roles", err);
  }
}
loaders.roles = loadRoles;

function roleRow(role) {
  const members = [...role.users.map((u) => `user ${u}`), ...role.groups.map((g) => `group ${g}`),
    ...role.services.map((s) => `service ${s}`)];
  const editable = role.managed_by === "api" && can("admin-roles");
  const actions = el("td", { class: "actions" });
  if (editable) {
    const edit = el("button", { type: "button" }, "Edit", el("span", { class: "visually-hidden" }, ` role ${role.name}`));
    edit.addEventListener("click", () => openRole(role));
    actions.append(edit);
  } else {
    actions.append(el("span", { class: "hint" }, "read-only"));
  }
  return el("tr", { dataset: { role: role.name } },
    el("th", { scope: "row", "data-label": "Role" }, role.name,
      role.description ? el("div", { class: "hint" }, role.description) : null),
    el("td", { "data-label": "Scopes" }, el("ul", { class: "scope-list" }, role.scopes.map((s) => el("li", {}, el("code", {}, s))))),
    el("td", { "data-label": "Members" }, members.length > 6 ? `${members.slice(0, 6).join(", ")} and ${members.length - 6} more` : members.join(", ") || "none"),
    el("td", { "data-label": "Defined by" }, ORIGIN[role.managed_by] || role.managed_by || ""),
    actions);
}

function openRole(role) {
  editingRole = role;
  document.getElementById("role-heading").textContent = role ? `Edit role ${role.name}` : "New role";
  const name = document.getElementById("role-name");
  name.value = role ? role.name : "";
  name.readOnly = !!role;
  document.getElementById("role-description").value = role ? role.description || "" : "";
  document.getElementById("role-scopes").value = role ? role.scopes.join("\n") : "";
  document.getElementById("role-users").value = role ? role.users.join(" ") : "";
  document.getElementById("role-groups").value = role ? role.groups.join(" ") : "";
  document.getElementById("role-delete").hidden = !role;
  showMessage(document.getElementById("role-error"), "");
  roleDialog.showModal();
}
document.getElementById("new-role")?.addEventListener("click", () => openRole(null));

document.getElementById("role-form")?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = document.getElementById("role-name").value.trim();
  const body = {
    description: document.getElementById("role-description").value.trim(),
    scopes: document.getElementById("role-scopes").value.split("\n").map((s) => s.trim()).filter(Boolean),
    users: splitNames(document.getElementById("role-users").value),
    groups: splitNames(document.getElementById("role-groups").value),
  };
  try {
    if (editingRole) await api(`roles/${encodeURIComponent(name)}`, { method: "PATCH", body });
    else await api(`roles/${encodeURIComponent(name)}`, { method: "POST", body: { name, ...body } });
    roleDialog.close();
    ok(`Saved the role ${name}.`);
    loadRoles();
  } catch (err) {
    showMessage(document.getElementById("role-error"), err.message);
  }
});

document.getElementById("role-delete")?.addEventListener("click", async () => {
  if (!editingRole || !window.confirm(`Delete the role ${editingRole.name}?`)) return;
  try {
    await api(`roles/${encodeURIComponent(editingRole.name)}`, { method: "DELETE" });
    roleDialog.close();
    ok(`Deleted the role ${editingRole.name}.`);
    loadRoles();
  } catch (err) {
    showMessage(document.getElementById("role-error"), err.message);
  }
});

// -- services ---------------------------------------------------------------------------------
async function loadServices() {
  const body = document.querySelector("#services-table tbody");
  if (!body) return;
  try {
    const { data } = await api("services");
    const rows = Object.values(data).sort((a, b) => a.name.localeCompare(b.name)).map((s) =>
      el("tr", {},
        el("th", { scope: "row", "data-label": "Service" }, s.name),
        el("td", { "data-label": "Address" }, s.prefix ? el("a", { href: s.prefix }, s.prefix) : (s.url || "API only")),
        el("td", { "data-label": "Kind" }, s.pid ? `managed (pid ${s.pid})` : (s.command && s.command.length ? "managed" : "external")),
        el("td", { "data-label": "Admin" }, s.admin ? "yes" : "no")));
    body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 4, class: "hint" }, "No services."))]));
  } catch (err) {
    fail("Could not load services", err);
  }
}
loaders.services = loadServices;

// -- shutdown ---------------------------------------------------------------------------------
const shutdownDialog = document.getElementById("shutdown-dialog");
document.getElementById("shutdown-open")?.addEventListener("click", () => shutdownDialog.showModal());
document.getElementById("shutdown-form")?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const status = document.getElementById("shutdown-status");
  try {
    const { data } = await api("shutdown", {
      method: "POST",
      body: {
        servers: document.getElementById("shutdown-servers").checked,
        proxy: document.getElementById("shutdown-proxy").checked,
      },
    });
    shutdownDialog.close();
    showMessage(status, `${data.message}. Start it again to use this page.`, "ok");
    announce(data.message);
  } catch (err) {
    shutdownDialog.close();
    showMessage(status, `The hub did not shut down: ${err.message}`);
  }
});

showTab();
