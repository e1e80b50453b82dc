// The rtcore admin web UI: plain JavaScript, no dependencies.
// It talks to the admin endpoints of the page's own server (admin/auth,
// admin/session, admin/logout, admin/api/<method>); the session is an
// HttpOnly cookie. Every value that comes from the server is put in the
// page as text (textContent), never as HTML.
"use strict";

const BASE = location.pathname.replace(/[^/]*$/, "");
const POLL_MS = 3000;

const $ = (id) => document.getElementById(id);

class SignedOut extends Error {}

class ApiError extends Error {
  constructor(code, message) {
    super(`${message} (error ${code})`);
    this.code = code;
  }
}

/** An element with attributes and children (strings become text nodes). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") el.className = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) el.append(child);
  }
  return el;
}

async function post(path, body) {
  return fetch(BASE + path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
    credentials: "same-origin",
  });
}

/** Run a server API method as the signed-in admin; returns its result. */
async function call(method, params = {}) {
  const resp = await post("admin/api/" + method, params);
  if (resp.status === 401) {
    showSignIn("Your session has ended: sign in again.");
    throw new SignedOut();
  }
  const body = await resp.json().catch(() => ({ error: `HTTP ${resp.status}` }));
  if (!resp.ok) throw new Error(body.error || `HTTP ${resp.status}`);
  if (body.error) throw new ApiError(body.error.code, body.error.message);
  return body.result;
}

// -- sign-in -------------------------------------------------------------------------

function showSignIn(message = "") {
  stopPolling();
  $("app").hidden = true;
  $("signin-view").hidden = false;
  $("signin-error").textContent = message;
  $("password").value = "";
  $("password").focus();
}

function showApp() {
  $("signin-view").hidden = true;
  $("app").hidden = false;
  route();
}

async function signIn(event) {
  event.preventDefault();
  const button = event.submitter || $("signin").querySelector("button");
  button.disabled = true;
  try {
    const resp = await post("admin/auth", { password: $("password").value });
    if (resp.ok) {
      showApp();
      return;
    }
    const body = await resp.json().catch(() => ({}));
    $("signin-error").textContent =
      resp.status === 401 ? "Wrong password." : body.error || `Sign-in failed (HTTP ${resp.status}).`;
    $("password").select();
  } catch (err) {
    $("signin-error").textContent = `The server cannot be reached: ${err.message}`;
  } finally {
    button.disabled = false;
  }
}

async function signOut() {
  await post("admin/logout", {}).catch(() => null);
  showSignIn("Signed out.");
}

// -- formatting ------------------------------------------------------------------------

function duration(seconds) {
  const d = Math.floor(seconds / 86400);
  const hrs = Math.floor((seconds % 86400) / 3600);
  const min = Math.floor((seconds % 3600) / 60);
  if (d) return `${d}d ${hrs}h`;
  if (hrs) return `${hrs}h ${String(min).padStart(2, "0")}m`;
  if (min) return `${min}m ${String(seconds % 60).padStart(2, "0")}s`;
  return `${seconds}s`;
}

function payload(obj, key) {
  if (obj[key] !== undefined) return JSON.stringify(obj[key]);
  if (obj["b64" + key] !== undefined) return `base64: ${obj["b64" + key]}`;
  return "";
}

function parseJson(text, what) {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`${what} is not valid JSON: ${err.message}`);
  }
}

let toastTimer = null;
function toast(message, kind = "ok") {
  const el = $("toast");
  el.textContent = message;
  el.className = `show ${kind}`;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (el.className = ""), 3500);
}

function report(message, kind = "ok") {
  toast(message, kind);
  const list = $("results");
  list.prepend(h("li", { class: kind }, h("time", {}, new Date().toLocaleTimeString()), " ", h("span", { class: "msg" }, message)));
  while (list.children.length > 20) list.lastChild.remove();
}

function failure(err) {
  if (!(err instanceof SignedOut)) report(err.message, "error");
}

// -- views -----------------------------------------------------------------------------

const views = {
  async overview() {
    const [{ nodes }, { channels }] = await Promise.all([call("info"), call("channels")]);
    const totals = { num_clients: 0, num_users: 0, num_subs: 0, num_channels: 0 };
    const rows = nodes.map((n) => {
      for (const key of Object.keys(totals)) totals[key] += n[key] || 0;
      return h(
        "tr",
        {},
        h("td", {}, h("b", {}, n.name)),
        h("td", {}, n.version),
        h("td", {}, duration(n.uptime || 0)),
        h("td", { class: "num" }, String(n.num_clients)),
        h("td", { class: "num" }, String(n.num_users)),
        h("td", { class: "num" }, String(n.num_subs)),
        h("td", { class: "num" }, String(n.num_channels)),
      );
    });
    $("nodes").tBodies[0].replaceChildren(...rows);
    for (const el of document.querySelectorAll("[data-total]")) {
      el.textContent = String(totals[el.dataset.total]);
    }
    const busiest = byClients(channels).slice(0, 8);
    $("busiest").tBodies[0].replaceChildren(...busiest.map(channelRow));
    $("busiest-empty").hidden = busiest.length > 0;
  },

  async channels() {
    const pattern = $("channel-filter").value.trim();
    const { channels } = await call("channels", pattern ? { pattern } : {});
    const entries = byClients(channels);
    $("channels").tBodies[0].replaceChildren(...entries.map(channelRow));
    $("channel-count").textContent = String(entries.length);
    $("channels-empty").hidden = entries.length > 0;
  },

  async channel(name) {
    $("channel-title").textContent = name;
    const [presence, history, stats] = await Promise.allSettled([
      call("presence", { channel: name }),
      call("history", { channel: name, limit: 20, reverse: true }),
      call("channels", { pattern: name.replace(/[*?[\]{}\\]/g, "\\$&") }),
    ]);
    for (const r of [presence, history, stats]) {
      if (r.status === "rejected" && r.reason instanceof SignedOut) throw r.reason;
    }
    const here = stats.status === "fulfilled" ? stats.value.channels[name] : undefined;
    const count = here ? here.num_clients : 0;
    $("channel-stats").textContent = `${count} subscriber${count === 1 ? "" : "s"}`;
    renderPresence(name, presence);
    renderHistory(history);
  },

  async actions() {},
};

/** [name, {num_clients}] pairs, the most subscribed first. */
function byClients(channels) {
  return Object.entries(channels).sort((a, b) => b[1].num_clients - a[1].num_clients || a[0].localeCompare(b[0]));
}

function channelRow([name, c]) {
  return h(
    "tr",
    {},
    h("td", {}, h("a", { href: "#/channel/" + encodeURIComponent(name), class: "channel-link" }, name)),
    h("td", { class: "num" }, String(c.num_clients)),
  );
}

function unavailable(reason, what) {
  if (reason instanceof ApiError && reason.code === 108) return `${what} is not enabled for this channel.`;
  return reason.message;
}

function renderPresence(channel, result) {
  const body = $("presence").tBodies[0];
  const note = $("presence-note");
  if (result.status === "rejected") {
    body.replaceChildren();
    note.textContent = unavailable(result.reason, "Presence");
    note.hidden = false;
    return;
  }
  const clients = Object.values(result.value.presence).sort((a, b) => a.user.localeCompare(b.user) || a.client.localeCompare(b.client));
  body.replaceChildren(
    ...clients.map((c) =>
      h(
        "tr",
        {},
        h("td", {}, c.user || h("span", { class: "muted" }, "anonymous")),
        h("td", { class: "mono" }, c.client),
        h("td", { class: "mono small" }, payload(c, "conn_info")),
        h(
          "td",
          { class: "num" },
          h("button", { type: "button", class: "ghost small danger", title: "Disconnect this connection", onclick: () => disconnect(c.user, c.client) }, "Disconnect"),
        ),
      ),
    ),
  );
  note.textContent = "Nobody is here.";
  note.hidden = clients.length > 0;
}

function renderHistory(result) {
  const list = $("history");
  const note = $("history-note");
  if (result.status === "rejected") {
    list.replaceChildren();
    $("history-position").textContent = "";
    note.textContent = unavailable(result.reason, "History");
    note.hidden = false;
    return;
  }
  const { publications, offset, epoch } = result.value;
  $("history-position").textContent = epoch ? `offset ${offset || 0} · epoch ${epoch}` : "";
  list.replaceChildren(
    ...publications.map((p) =>
      h(
        "li",
        {},
        h("span", { class: "offset" }, `#${p.offset || 0}`),
        h("code", {}, payload(p, "data")),
        p.info ? h("span", { class: "muted small" }, ` from ${p.info.user || "anonymous"}`) : null,
      ),
    ),
  );
  note.textContent = "No publications in history.";
  note.hidden = publications.length > 0;
}

// -- actions ---------------------------------------------------------------------------

async function publish(channel, dataText) {
  const data = parseJson(dataText, "Data");
  const result = await call("publish", { channel, data });
  report(result.offset ? `Published to ${channel} at offset ${result.offset}.` : `Published to ${channel}.`);
}

async function disconnect(user, client = "", code = 3503, reason = "force disconnect") {
  const params = { user, disconnect: { code, reason } };
  if (client) params.client = client;
  await call("disconnect", params).then(
    () => report(client ? `Disconnected ${user || "anonymous"} (${client}).` : `Disconnected every connection of ${user}.`),
    failure,
  );
  refresh();
}

function onSubmit(id, action) {
  $(id).addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = event.submitter || $(id).querySelector("button[type=submit]");
    button.disabled = true;
    try {
      await action();
      refresh();
    } catch (err) {
      failure(err);
    } finally {
      button.disabled = false;
    }
  });
}

onSubmit("publish", () => publish($("publish-channel").value.trim(), $("publish-data").value));
onSubmit("channel-publish", () => publish(current.arg, $("channel-publish-data").value));
onSubmit("broadcast", async () => {
  const channels = $("broadcast-channels").value.split(/[\s,]+/).filter(Boolean);
  const data = parseJson($("broadcast-data").value, "Data");
  const { responses } = await call("broadcast", { channels, data });
  const failed = responses.map((r, i) => (r.error ? `${channels[i]}: ${r.error.message}` : null)).filter(Boolean);
  if (failed.length) report(`Broadcast failed for ${failed.join("; ")}.`, "error");
  else report(`Broadcast to ${channels.length} channel${channels.length === 1 ? "" : "s"}.`);
});
onSubmit("disconnect", () =>
  disconnect(
    $("disconnect-user").value.trim(),
    $("disconnect-client").value.trim(),
    Number($("disconnect-code").value),
    $("disconnect-reason").value,
  ),
);
$("history-remove").addEventListener("click", async () => {
  if (!confirm(`Remove the history of ${current.arg}?`)) return;
  await call("history_remove", { channel: current.arg }).then(() => report(`History of ${current.arg} removed.`), failure);
  refresh();
});

// -- routing and live updates ----------------------------------------------------------

const current = { view: "overview", arg: "" };
let pollTimer = null;
let inFlight = false;
let again = false;

function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [view, ...rest] = hash.split("/");
  current.view = views[view] ? view : "overview";
  current.arg = current.view === "channel" ? decodeURIComponent(rest.join("/")) : "";
  if (current.view === "channel" && !current.arg) current.view = "channels";
  for (const section of document.querySelectorAll(".view")) {
    section.hidden = section.id !== "view-" + current.view;
  }
  for (const link of document.querySelectorAll("#nav a")) {
    const active = link.dataset.view === current.view || (current.view === "channel" && link.dataset.view === "channels");
    link.classList.toggle("active", active);
  }
  refresh();
  startPolling();
}

async function refresh() {
  if ($("app").hidden) return;
  if (inFlight) {
    // One more round when this one ends (a filter typed while a request runs).
    again = true;
    return;
  }
  inFlight = true;
  try {
    await views[current.view](current.arg);
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    $("updated").classList.remove("stale");
  } catch (err) {
    if (!(err instanceof SignedOut)) {
      $("updated").textContent = `update failed: ${err.message}`;
      $("updated").classList.add("stale");
    }
  } finally {
    inFlight = false;
  }
  if (again) {
    again = false;
    refresh();
  }
}

function startPolling() {
  stopPolling();
  if ($("live").checked) {
    pollTimer = setInterval(() => {
      if (document.visibilityState === "visible") refresh();
    }, POLL_MS);
  }
}

function stopPolling() {
  clearInterval(pollTimer);
  pollTimer = null;
}

$("signin").addEventListener("submit", signIn);
$("signout").addEventListener("click", signOut);
$("live").addEventListener("change", startPolling);
$("channel-filter").addEventListener("input", () => refresh());
window.addEventListener("hashchange", route);

(async () => {
  try {
    const resp = await fetch(BASE + "admin/session", { credentials: "same-origin" });
    const session = await resp.json();
    if (session.authenticated) showApp();
    else showSignIn();
  } catch (err) {
    showSignIn(`The server cannot be reached: ${err.message}`);
  }
})();
