// Shared by every page script: REST API calls with the session cookie and XSRF token,
// announcements for screen readers, and times shown relative to now.

const body = document.body;
export const hubPrefix = body.dataset.hubPrefix;
export const baseUrl = body.dataset.baseUrl;
export const xsrf = body.dataset.xsrf;
export const me = body.dataset.user;

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function apiUrl(path) {
  return `${hubPrefix}api/${path}`;
}

// One API call; resolves to {status, data}, rejects with ApiError carrying the API's message.
export async function api(path, { method = "GET", body: payload, envelope = false } = {}) {
  const headers = { "X-XSRFToken": xsrf, Accept: "application/json" };
  if (payload !== undefined) headers["Content-Type"] = "application/json";
  if (envelope) headers.Accept = "application/jupyterhub-pagination+json";
  let response;
  try {
    response = await fetch(apiUrl(path), {
      method,
      headers,
      credentials: "same-origin",
      body: payload === undefined ? undefined : JSON.stringify(payload),
    });
  } catch (err) {
    throw new ApiError(0, `The hub did not answer (${err.message}).`);
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!response.ok) {
    const message = data && typeof data === "object" && data.message
      ? data.message : `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, message);
  }
  return { status: response.status, data };
}

export function userPath(name) {
  return `users/${encodeURIComponent(name)}`;
}

export function serverPath(user, server) {
  return server
    ? `${userPath(user)}/servers/${encodeURIComponent(server)}`
    : `${userPath(user)}/server`;
}

export function serverUrl(user, server) {
  const path = `${baseUrl}user/${encodeURIComponent(user)}/`;
  return server ? `${path}${encodeURIComponent(server)}/` : path;
}

// Say something to screen reader users without moving their focus.
export function announce(text) {
  const region = document.getElementById("announcer");
  if (!region) return;
  region.textContent = "";
  window.setTimeout(() => { region.textContent = text; }, 30);
}

// Show a message in a (hidden until now) element; kind is "error" or "ok".
export function showMessage(element, text, kind = "error") {
  if (!element) return;
  element.textContent = text;
  element.classList.remove("error", "ok");
  element.classList.add("message", kind);
  element.hidden = !text;
}

const units = [
  ["year", 365 * 86400], ["month", 30 * 86400], ["week", 7 * 86400], ["day", 86400],
  ["hour", 3600], ["minute", 60], ["second", 1],
];
const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

export function timeAgo(iso) {
  if (!iso) return "never";
  const seconds = (Date.parse(iso) - Date.now()) / 1000;
  for (const [unit, size] of units) {
    if (Math.abs(seconds) >= size || unit === "second") {
      return relative.format(Math.round(seconds / size), unit);
    }
  }
  return iso;
}

// A <time> element showing "3 minutes ago", with the exact time as its tooltip.
export function timeElement(iso) {
  if (!iso) {
    const span = document.createElement("span");
    span.textContent = "never";
    return span;
  }
  const time = document.createElement("time");
  time.dateTime = iso;
  time.title = new Date(iso).toLocaleString();
  time.textContent = timeAgo(iso);
  return time;
}

export function formatTimes(root = document) {
  for (const time of root.querySelectorAll("time[data-relative]")) {
    time.title = new Date(time.dateTime).toLocaleString();
    time.textContent = timeAgo(time.dateTime);
  }
}

// Build an element: el("button", {type: "button", class: "danger"}, "Delete").
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}
