// rtcore chat page: centrifuge-js over the transport picked on the login form.
"use strict";

const ROOMS = ["lobby", "random", "dev"];
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

const state = {
  client: null,
  sub: null,
  room: null,
  me: null,
  messages: new Map(), // offset -> message, for the current room
  presence: new Map(), // client id -> display name
};

function endpointFor(transport) {
  const path = { websocket: "/connection/websocket", http_stream: "/connection/http_stream", sse: "/connection/sse" }[transport];
  const base = transport === "websocket" ? location.origin.replace(/^http/, "ws") : location.origin;
  return base + path;
}

function setStatus(text, connected) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("connected", !!connected);
}

function nameOf(info) {
  return (info && info.connInfo && info.connInfo.name) || (info && info.user) || "?";
}

// -- rendering -----------------------------------------------------------------

function renderMessages() {
  const list = $("messages");
  list.replaceChildren();
  const offsets = [...state.messages.keys()].sort((a, b) => a - b);
  for (const offset of offsets) {
    const m = state.messages.get(offset);
    const li = document.createElement("li");
    li.dataset.offset = String(offset);
    if (m.user === state.me.user) li.classList.add("mine");
    if (m.history) li.classList.add("history");
    const meta = document.createElement("div");
    meta.className = "meta";
    const who = document.createElement("b");
    who.textContent = m.name;
    const when = document.createElement("span");
    when.textContent = new Date(m.ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    meta.append(who, when);
    const text = document.createElement("div");
    text.className = "text";
    text.textContent = m.text;
    li.append(meta, text);
    list.append(li);
  }
  if (!offsets.length) {
    const li = document.createElement("li");
    li.className = "notice";
    li.textContent = "No messages yet. Say hello!";
    list.append(li);
  }
  list.scrollTop = list.scrollHeight;
}

function renderPresence() {
  const names = [...new Set(state.presence.values())].sort((a, b) => a.localeCompare(b));
  const list = $("presence");
  list.replaceChildren(...names.map((n) => {
    const li = document.createElement("li");
    li.textContent = n;
    return li;
  }));
  $("online-count").textContent = `(${names.length})`;
}

function renderRooms() {
  $("rooms").replaceChildren(...ROOMS.map((room) => {
    const li = document.createElement("li");
    li.textContent = "# " + room;
    li.dataset.room = room;
    li.classList.toggle("active", room === state.room);
    li.addEventListener("click", () => joinRoom(room));
    return li;
  }));
  $("room-title").textContent = "# " + state.room;
}

function addMessage(data, offset, fromHistory) {
  if (state.messages.has(offset)) return;
  state.messages.set(offset, { ...data, history: !!fromHistory });
  renderMessages();
}

// -- rooms -----------------------------------------------------------------------

async function loadPresence(sub) {
  try {
    const result = await sub.presence();
    if (sub !== state.sub) return;
    state.presence = new Map(Object.entries(result.clients).map(([id, info]) => [id, nameOf(info)]));
    renderPresence();
  } catch (err) {
    console.warn("presence failed", err);
  }
}

async function loadHistory(sub) {
  try {
    const result = await sub.history({ limit: 50, reverse: true });
    if (sub !== state.sub) return;
    for (const pub of result.publications) addMessage(pub.data, pub.offset, true);
  } catch (err) {
    console.warn("history failed", err);
  }
}

function joinRoom(room) {
  if (state.room === room && state.sub) return;
  if (state.sub) {
    state.sub.unsubscribe();
    state.client.removeSubscription(state.sub);
  }
  state.room = room;
  state.messages = new Map();
  state.presence = new Map();
  renderRooms();
  renderMessages();
  renderPresence();
  const sub = state.client.newSubscription("room:" + room, { joinLeave: true });
  state.sub = sub;
  sub.on("publication", (ctx) => addMessage(ctx.data, ctx.offset, false));
  sub.on("join", (ctx) => {
    state.presence.set(ctx.info.client, nameOf(ctx.info));
    renderPresence();
  });
  sub.on("leave", (ctx) => {
    state.presence.delete(ctx.info.client);
    renderPresence();
  });
  sub.on("subscribed", (ctx) => {
    if (!ctx.wasRecovering || !ctx.recovered) {
      // First join, or the gap could not be recovered: show the room's history.
      if (ctx.wasRecovering) state.messages = new Map();
      loadHistory(sub);
    }
    loadPresence(sub);
  });
  sub.on("error", (ctx) => console.warn("subscription error", ctx.error));
  sub.subscribe();
}

// -- connection ------------------------------------------------------------------

function start(name, transport) {
  $("login").hidden = true;
  $("chat").hidden = false;
  state.me = { name, user: name.toLowerCase() };
  $("me").textContent = `${name} · ${transport}`;
  const client = new Centrifuge([{ transport, endpoint: endpointFor(transport) }], {
    data: { name },
    emulationEndpoint: location.origin + "/emulation",
  });
  state.client = client;
  client.on("connecting", (ctx) => setStatus(`connecting (${ctx.reason})`, false));
  client.on("connected", (ctx) => setStatus(`connected over ${ctx.transport}`, true));
  client.on("disconnected", (ctx) => {
    setStatus(`disconnected: ${ctx.reason}`, false);
    if (ctx.code === 4501) {
      $("chat").hidden = true;
      $("login").hidden = false;
      $("login-error").hidden = false;
      $("login-error").textContent = "That name is not allowed.";
    }
  });
  client.connect();
  joinRoom(ROOMS[0]);
  $("text").focus();
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = $("name").value.trim();
  if (name) start(name, $("transport").value);
});

$("composer").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("text");
  const text = input.value.trim();
  if (!text || !state.sub) return;
  input.value = "";
  try {
    await state.sub.publish({ text });
  } catch (err) {
    console.warn("publish failed", err);
    input.value = text;
  }
});

if (params.get("transport")) $("transport").value = params.get("transport");
if (params.get("name")) {
  $("name").value = params.get("name");
  start(params.get("name"), $("transport").value);
}
