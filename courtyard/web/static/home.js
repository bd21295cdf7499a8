// The home page: stop, rename and delete servers, and add named ones, through the REST API.
import { api, announce, formatTimes, showMessage } from "./api.js";

const message = document.getElementById("home-message");
const renameDialog = document.getElementById("rename-dialog");
const renameForm = document.getElementById("rename-form");
const renameInput = document.getElementById("rename-input");
const renameError = document.getElementById("rename-error");
let renaming = null;

formatTimes();

function reloadSoon(delay = 0) {
  window.setTimeout(() => window.location.reload(), delay);
}

async function stop(button) {
  button.disabled = true;
  button.textContent = "Stopping…";
  try {
    const { status } = await api(button.dataset.api, { method: "DELETE" });
    announce(status === 202 ? "The server is stopping." : "The server stopped.");
    reloadSoon(status === 202 ? 1000 : 0);
  } catch (err) {
    showMessage(message, `Could not stop the server: ${err.message}`);
    button.disabled = false;
    button.textContent = "Stop";
  }
}

async function remove(button) {
  const name = button.dataset.name;
  if (!window.confirm(`Delete the server "${name}"? Its settings are forgotten.`)) return;
  button.disabled = true;
  try {
    await api(button.dataset.api, { method: "DELETE", body: { remove: true } });
    announce(`Deleted ${name}.`);
    reloadSoon();
  } catch (err) {
    showMessage(message, `Could not delete ${name}: ${err.message}`);
    button.disabled = false;
  }
}

function openRename(button) {
  renaming = button;
  renameInput.value = button.dataset.name;
  showMessage(renameError, "");
  renameDialog.showModal();
  renameInput.select();
}

renameForm?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = renameInput.value.trim();
  if (!renaming || !name) return;
  try {
    await api(renaming.dataset.api, { method: "PATCH", body: { name } });
    renameDialog.close();
    announce(`Renamed to ${name}.`);
    reloadSoon();
  } catch (err) {
    showMessage(renameError, err.message);
    renameInput.focus();
  }
});

renameDialog?.querySelector("[data-close]")?.addEventListener("click", () => {
  renameDialog.close();
  renaming?.focus();
});

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const action = button.dataset.action;
  if (action === "stop") stop(button);
  else if (action === "delete") remove(button);
  else if (action === "rename") openRename(button);
});

const newServer = document.getElementById("new-server");
newServer?.addEventListener("submit", (event) => {
  event.preventDefault();
  const input = newServer.querySelector("input[name=name]");
  const name = input.value.trim();
  if (!input.checkValidity()) {
    input.reportValidity();
    return;
  }
  window.location.assign(newServer.dataset.spawnBase + encodeURIComponent(name));
});
