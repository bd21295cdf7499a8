// The pending page: follow the progress stream (EventSource), show each message and the
// place in the spawn queue, cancel on request, and on failure show the server's last output.
import { ApiError, announce, api, me, showMessage, xsrf } from "./api.js";

const box = document.getElementById("pending");
const title = document.getElementById("pending-title");
const lead = document.getElementById("pending-lead");
const progress = document.getElementById("progress");
const progressWrap = document.getElementById("progress-wrap");
const queue = document.getElementById("queue");
const failure = document.getElementById("failure");
const events = document.getElementById("events");
const logBox = document.getElementById("log-box");
const logText = document.getElementById("server-log");
const cancel = document.getElementById("cancel");
const retry = document.getElementById("retry");
const { progressUrl, logsUrl, serverApi, serverUrl, owner, serverName } = box.dataset;

let source = null;
let finished = false;
let cancelled = false;

function addEvent(text) {
  if (!text) return;
  const item = document.createElement("li");
  const stamp = document.createElement("span");
  stamp.className = "event-time";
  stamp.textContent = new Date().toLocaleTimeString();
  item.append(stamp, " ", text);
  events.append(item);
}

function setProgress(value) {
  if (typeof value !== "number") return;
  progress.value = value;
  progress.textContent = `${value}%`;
}

function setQueue(event) {
  if (event.queue_position) {
    queue.textContent = `You are number ${event.queue_position} of ${event.queue_length} ` +
      "waiting for a free slot. Your server starts when its turn comes.";
    queue.hidden = false;
  } else if (event.progress > 0) {
    queue.hidden = true;
  }
}

async function showLog() {
  try {
    const response = await fetch(`${logsUrl}?tail=40`, {
      headers: { "X-XSRFToken": xsrf },
      credentials: "same-origin",
    });
    if (!response.ok) return;
    const text = await response.text();
    if (text.trim()) {
      logText.textContent = text;
      logBox.hidden = false;
    }
  } catch {
    // no log to show
  }
}

function end() {
  finished = true;
  source?.close();
  cancel && (cancel.hidden = true);
  retry.hidden = false;
}

function failed(message) {
  end();
  box.dataset.state = "failed";
  title.textContent = cancelled ? "was not started" : "did not start";
  lead.textContent = cancelled ? "You cancelled the start." : "The start failed.";
  showMessage(failure, cancelled ? "The start was cancelled." : message);
  announce(cancelled ? "The start was cancelled." : `The start failed. ${message}`);
  if (!cancelled) showLog();
}

function ready(url) {
  end();
  box.dataset.state = "ready";
  setProgress(100);
  title.textContent = "is ready";
  lead.textContent = "Opening it now…";
  announce("Your server is ready. Opening it.");
  window.location.replace(serverUrl || url);
}

async function lostStream() {
  if (finished) return;
  source?.close();
  // the stream ended early or was refused: ask the API what became of the server
  try {
    const { data } = await api(`users/${encodeURIComponent(owner || me)}`);
    const server = (data.servers || {})[serverName || ""];
    if (server && server.ready) {
      ready(server.url);
      return;
    }
    if (server && server.pending) {
      window.setTimeout(follow, 1000);
      return;
    }
    failed("The server is not starting any more.");
  } catch (err) {
    failed(err instanceof ApiError ? err.message : "Lost contact with the hub.");
  }
}

function follow() {
  // EventSource cannot send headers: the XSRF token goes in the query
  source = new EventSource(`${progressUrl}?_xsrf=${encodeURIComponent(xsrf)}`);
  source.addEventListener("message", (message) => {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    setProgress(event.progress);
    setQueue(event);
    addEvent(event.message);
    if (event.ready) ready(event.url);
    else if (event.failed) failed(event.message || "The start failed.");
  });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED || !finished) lostStream();
  });
}

cancel?.addEventListener("click", async () => {
  if (finished) return;
  cancel.disabled = true;
  cancelled = true;
  lead.textContent = "Cancelling…";
  try {
    await api(serverApi.replace(/^.*\/hub\/api\//, ""), { method: "DELETE" });
    announce("Cancelling the start.");
    if (!finished) {
      window.setTimeout(() => { if (!finished) failed("The start was cancelled."); }, 3000);
    }
  } catch (err) {
    cancelled = false;
    cancel.disabled = false;
    showMessage(failure, `Could not cancel: ${err.message}`);
  }
});

const state = box.dataset.state;
if (state === "spawn" || state === "check") {
  progressWrap.hidden = false;
  follow();
} else if (state === "failed") {
  showLog();
}
