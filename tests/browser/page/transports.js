// One scenario per call of window.runScenario({transport, protocol}): connect with the
// transport forced, subscribe, publish, receive, then a forced reconnect from the
// server (publications missed meanwhile) and the recovery of what was missed.
"use strict";

const logEl = document.getElementById("log");

function log(...parts) {
  const line = parts.map((p) => (typeof p === "string" ? p : JSON.stringify(p))).join(" ");
  logEl.textContent += line + "\n";
  console.log(line);
}

function once(emitter, event, timeoutMs = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${event}`)), timeoutMs);
    emitter.once(event, (ctx) => {
      clearTimeout(timer);
      resolve(ctx);
    });
  });
}

async function waitFor(cond, what, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

window.runScenario = async function runScenario({ transport, protocol }) {
  const origin = location.origin;
  const endpoints = {
    websocket: origin.replace(/^http/, "ws") + "/connection/websocket",
    http_stream: origin + "/connection/http_stream",
    sse: origin + "/connection/sse",
  };
  const binary = protocol === "protobuf";
  const encode = (value) => (binary ? new TextEncoder().encode(JSON.stringify(value)) : value);
  const decode = (data) => (binary ? JSON.parse(new TextDecoder().decode(data)) : data);
  const user = `${transport}-${protocol}-${Math.random().toString(36).slice(2, 8)}`;
  const channel = `chat:${user}`;
  const result = { transport, protocol, user };
  const client = new Centrifuge([{ transport, endpoint: endpoints[transport] }], {
    protocol,
    data: encode({ user }),
    emulationEndpoint: origin + "/emulation",
    minReconnectDelay: 200,
    maxReconnectDelay: 1000,
  });
  client.on("error", (ctx) => log("client error", ctx.type, ctx.error && ctx.error.message));
  try {
    const connected = once(client, "connected");
    client.connect();
    const ctx = await connected;
    result.connectedTransport = ctx.transport;
    log("connected over", ctx.transport, "client", ctx.client);

    const received = [];
    const sub = client.newSubscription(channel);
    sub.on("publication", (p) => received.push(decode(p.data).n));
    const subscribed = once(sub, "subscribed");
    sub.subscribe();
    const first = await subscribed;
    result.recoverable = first.recoverable;
    await sub.publish(encode({ n: 1 }));
    await waitFor(() => received.includes(1), "publication 1");
    log("published and received n=1");

    // The server disconnects this user with 3011 (force reconnect), waits until the
    // session is gone, then publishes n=2 and n=3 into the channel.
    const connecting = once(client, "connecting");
    const resubscribed = once(sub, "subscribed");
    const reconnected = once(client, "connected");
    const resp = await fetch(origin + "/test/force-reconnect", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user, channel, publish: [{ n: 2 }, { n: 3 }] }),
    });
    if (resp.status !== 204) throw new Error(`force-reconnect answered ${resp.status}`);
    const lost = await connecting;
    result.reconnectCode = lost.code;
    log("connecting again after", lost.code, lost.reason);
    const again = await reconnected;
    result.reconnectedTransport = again.transport;
    const sctx = await resubscribed;
    result.wasRecovering = sctx.wasRecovering;
    result.recovered = sctx.recovered;
    log("resubscribed: wasRecovering", sctx.wasRecovering, "recovered", sctx.recovered);
    await waitFor(() => received.includes(3), "recovered publications");
    await sub.publish(encode({ n: 4 }));
    await waitFor(() => received.includes(4), "publication 4");
    result.received = received;
    result.ok = true;
  } catch (err) {
    result.ok = false;
    result.error = String(err && err.stack ? err.stack : err);
    log("scenario failed:", result.error);
  } finally {
    client.disconnect();
  }
  return result;
};
