// The token page: request tokens (the API validates scopes and expiry), list and revoke
// them, and list and revoke what OAuth clients (servers, services) were given.
import { announce, api, el, me, showMessage, timeElement, userPath } from "./api.js";

const form = document.getElementById("token-form");
const formError = document.getElementById("token-error");
const newToken = document.getElementById("new-token");
const newTokenValue = document.getElementById("new-token-value");
const tokensBody = document.querySelector("#tokens tbody");
const appsBody = document.querySelector("#apps tbody");
const listMessage = document.getElementById("tokens-message");

const HUB_CLIENT = "JupyterHub";

function scopeList(scopes) {
  if (!scopes.length) return el("span", { class: "hint" }, "identify only");
  return el("ul", { class: "scope-list" }, scopes.map((s) => el("li", {}, el("code", {}, s))));
}

function emptyRow(columns, text) {
  return el("tr", {}, el("td", { colspan: columns, class: "hint" }, text));
}

async function revoke(token, label, button) {
  if (!window.confirm(`Revoke ${label}? Programs using it stop working.`)) return;
  button.disabled = true;
  try {
    await api(`${userPath(me)}/tokens/${token.id}`, { method: "DELETE" });
    announce(`Revoked ${label}.`);
    showMessage(listMessage, `Revoked ${label}.`, "ok");
    await load();
  } catch (err) {
    button.disabled = false;
    showMessage(listMessage, `Could not revoke ${label}: ${err.message}`);
  }
}

function tokenRow(token) {
  const label = token.note ? `the token “${token.note}”` : `token ${token.id}`;
  const button = el("button", { type: "button", class: "danger" }, "Revoke",
    el("span", { class: "visually-hidden" }, ` ${label}`));
  button.addEventListener("click", () => revoke(token, label, button));
  return el("tr", { dataset: { tokenId: token.id } },
    el("th", { scope: "row", "data-label": "Note" }, token.note || el("span", { class: "hint" }, "(no note)")),
    el("td", { "data-label": "Permissions" }, scopeList(token.scopes)),
    el("td", { "data-label": "Last used" }, timeElement(token.last_activity)),
    el("td", { "data-label": "Created" }, timeElement(token.created)),
    el("td", { "data-label": "Expires" }, token.expires_at ? timeElement(token.expires_at) : "never"),
    el("td", { class: "actions" }, button));
}

function appRow(client, tokens) {
  const scopes = [...new Set(tokens.flatMap((t) => t.scopes))].sort();
  const used = tokens.map((t) => t.last_activity).filter(Boolean).sort().pop();
  const first = tokens.map((t) => t.created).filter(Boolean).sort()[0];
  const label = `access of ${client}`;
  const button = el("button", { type: "button", class: "danger" }, "Revoke",
    el("span", { class: "visually-hidden" }, ` ${label}`));
  button.addEventListener("click", () => revoke(tokens[0], label, button));
  return el("tr", {},
    el("th", { scope: "row", "data-label": "Application" }, client),
    el("td", { "data-label": "Permissions" }, scopeList(scopes)),
    el("td", { "data-label": "Last used" }, timeElement(used)),
    el("td", { "data-label": "First authorized" }, timeElement(first)),
    el("td", { class: "actions" }, button));
}

async function load() {
  let tokens;
  try {
    ({ data: { api_tokens: tokens } } = await api(`${userPath(me)}/tokens`));
  } catch (err) {
    showMessage(listMessage, `Could not load your tokens: ${err.message}`);
    return;
  }
  tokens.sort((a, b) => (b.last_activity || b.created || "").localeCompare(a.last_activity || a.created || ""));
  const own = tokens.filter((t) => t.oauth_client === HUB_CLIENT);
  const byClient = new Map();
  for (const token of tokens.filter((t) => t.oauth_client !== HUB_CLIENT)) {
    if (!byClient.has(token.oauth_client)) byClient.set(token.oauth_client, []);
    byClient.get(token.oauth_client).push(token);
  }
  tokensBody.replaceChildren(...(own.length ? own.map(tokenRow) : [emptyRow(6, "You have no API tokens.")]));
  appsBody.replaceChildren(...(byClient.size
    ? [...byClient].map(([client, list]) => appRow(client, list))
    : [emptyRow(5, "No applications are authorized.")]));
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  showMessage(formError, "");
  const data = new FormData(form);
  const body = { note: data.get("note").trim() || "Requested via token page" };
  const expires = data.get("expires_in");
  body.expires_in = expires ? Number(expires) : null;
  const scopes = data.get("scopes").split(/[\s,]+/).filter(Boolean);
  if (scopes.length) body.scopes = scopes;
  const submit = form.querySelector("button[type=submit]");
  submit.disabled = true;
  try {
    const { data: token } = await api(`${userPath(me)}/tokens`, { method: "POST", body });
    newTokenValue.value = token.token;
    newToken.hidden = false;
    document.getElementById("new-token-title").focus();
    form.reset();
    announce("Your new token is shown once below.");
    await load();
  } catch (err) {
    showMessage(formError, `The token was not created: ${err.message}`);
    newToken.hidden = true;
  } finally {
    submit.disabled = false;
  }
});

document.getElementById("copy-token").addEventListener("click", async () => {
  newTokenValue.select();
  try {
    await navigator.clipboard.writeText(newTokenValue.value);
    announce("Copied.");
  } catch {
    announce("Press Ctrl+C (or Cmd+C) to copy the selected token.");
  }
});

load();
