// centrifuge-js scenarios against an rtcore node, driven by tests/protocol/test_sdk_js.py.
//
// Usage: node scenario.mjs <scenario> '<params JSON>'
//   params: { url, protocol: "json" | "protobuf", token, refreshToken?, channel? }
//
// Every line written to stdout is one JSON object: {"event": ..., ...}. A
// scenario ends with {"event": "result", ...} (or {"event": "error", ...}) and
// exits. Scenarios that need the server to act in between print an event and
// wait for a line on stdin (any text) before going on.

import { createInterface } from 'node:readline';
import WebSocket from 'ws';
import { Centrifuge as CentrifugeJson } from 'centrifuge';
import { Centrifuge as CentrifugeProtobuf } from 'centrifuge/build/protobuf';

const [scenario, rawParams] = process.argv.slice(2);
const params = JSON.parse(rawParams || '{}');
const protobuf = params.protocol === 'protobuf';
const Centrifuge = protobuf ? CentrifugeProtobuf : CentrifugeJson;

const encoder = new TextEncoder();
const decoder = new TextDecoder();
// Protobuf connections carry bytes; JSON connections carry JSON values.
const enc = (value) => (protobuf ? encoder.encode(JSON.stringify(value)) : value);
const dec = (data) => (protobuf ? JSON.parse(decoder.decode(data)) : data);

function emit(event, fields = {}) {
  process.stdout.write(JSON.stringify({ event, ...fields }) + '\n');
}

const stdinLines = [];
const stdinWaiters = [];
createInterface({ input: process.stdin }).on('line', (line) => {
  const waiter = stdinWaiters.shift();
  if (waiter) waiter(line);
  else stdinLines.push(line);
});
function nextStdinLine() {
  if (stdinLines.length) return Promise.resolve(stdinLines.shift());
  return new Promise((resolve) => stdinWaiters.push(resolve));
}

function waitFor(predicate, timeoutMs, what) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const timer = setInterval(() => {
      if (predicate()) {
        clearInterval(timer);
        resolve();
      } else if (Date.now() - started > timeoutMs) {
        clearInterval(timer);
        reject(new Error(`timed out waiting for ${what}`));
      }
    }, 10);
  });
}

function newClient(options = {}) {
  const client = new Centrifuge(params.url, {
    websocket: WebSocket,
    token: params.token,
    minReconnectDelay: 50,
    maxReconnectDelay: 200,
    ...options,
  });
  const state = { connects: 0, disconnects: [] };
  client.on('connected', () => { state.connects += 1; });
  client.on('disconnected', (ctx) => { state.disconnects.push({ code: ctx.code, reason: ctx.reason }); });
  return { client, state };
}

function track(sub) {
  const seen = { pubs: [], subscribed: [] };
  sub.on('publication', (ctx) => {
    seen.pubs.push({ data: dec(ctx.data), offset: ctx.offset, user: ctx.info ? ctx.info.user : null });
    emit('pub', { data: dec(ctx.data), offset: ctx.offset });
  });
  sub.on('subscribed', (ctx) => {
    const item = { wasRecovering: ctx.wasRecovering, recovered: ctx.recovered, recoverable: ctx.recoverable };
    seen.subscribed.push(item);
    emit('subscribed', item);
  });
  return seen;
}

const scenarios = {
  // Connect with a JWT, subscribe, publish and receive the publication back.
  async basic() {
    const { client } = newClient();
    client.connect();
    await client.ready(5000);
    const sub = client.newSubscription(params.channel);
    const seen = track(sub);
    sub.subscribe();
    await sub.ready(5000);
    await sub.publish(enc({ text: 'hello' }));
    await waitFor(() => seen.pubs.length >= 1, 5000, 'own publication');
    emit('result', { pubs: seen.pubs, subscribed: seen.subscribed });
    client.disconnect();
  },

  // presence, presenceStats and history of a channel.
  async channel_ops() {
    const { client } = newClient();
    client.connect();
    const sub = client.newSubscription(params.channel);
    sub.subscribe();
    await sub.ready(5000);
    for (let n = 1; n <= 5; n++) await sub.publish(enc({ n }));
    const presence = await sub.presence();
    const stats = await sub.presenceStats();
    const all = await sub.history({ limit: -1 });
    const newest = await sub.history({ limit: 2, reverse: true });
    const since = await sub.history({ limit: -1, since: { offset: 3, epoch: all.epoch } });
    emit('result', {
      presenceUsers: Object.values(presence.clients).map((c) => c.user),
      stats: { numClients: stats.numClients, numUsers: stats.numUsers },
      history: all.publications.map((p) => dec(p.data).n),
      offset: all.offset,
      epoch: all.epoch,
      newest: newest.publications.map((p) => p.offset),
      since: since.publications.map((p) => p.offset),
    });
    client.disconnect();
  },

  // Subscribe; the server forces a reconnect and publishes meanwhile; the SDK recovers.
  async recovery() {
    const { client, state } = newClient();
    client.connect();
    const sub = client.newSubscription(params.channel);
    const seen = track(sub);
    sub.subscribe();
    await sub.ready(5000);
    emit('ready');
    await nextStdinLine(); // the server published, disconnected us, published again, let us back in
    await waitFor(() => seen.subscribed.length >= 2, 10000, 'resubscribe');
    await nextStdinLine(); // the server published once more
    await waitFor(() => seen.pubs.length >= Number(params.expect), 5000, 'all publications');
    emit('result', { pubs: seen.pubs, subscribed: seen.subscribed, connects: state.connects });
    client.disconnect();
  },

  // A short-lived connection token, refreshed through getToken before it expires.
  async refresh() {
    let calls = 0;
    const { client, state } = newClient({
      getToken: async () => {
        calls += 1;
        return params.refreshToken;
      },
    });
    client.connect();
    await client.ready(5000);
    await waitFor(() => calls >= 1, 10000, 'getToken');
    emit('refreshing');
    await nextStdinLine(); // the server saw the refresh
    emit('result', { getTokenCalls: calls, connects: state.connects, disconnects: state.disconnects });
    client.disconnect();
  },

  // RPC answered by the node's on_rpc hook.
  async rpc() {
    const { client } = newClient();
    client.connect();
    await client.ready(5000);
    const result = await client.rpc('sum', enc([1, 2, 3]));
    emit('result', { data: dec(result.data) });
    client.disconnect();
  },

  // A bad token: the connection ends with 3500 and the SDK does not retry.
  async bad_token() {
    const { client, state } = newClient();
    client.connect();
    await waitFor(() => state.disconnects.length >= 1, 5000, 'disconnect');
    await new Promise((resolve) => setTimeout(resolve, 300));
    emit('result', { disconnects: state.disconnects, connects: state.connects, state: client.state });
  },
};

const run = scenarios[scenario];
if (!run) {
  emit('error', { message: `unknown scenario ${scenario}` });
  process.exit(2);
}
const watchdog = setTimeout(() => {
  emit('error', { message: 'scenario timed out' });
  process.exit(3);
}, 30000);
try {
  await run();
  clearTimeout(watchdog);
  process.exit(0);
} catch (err) {
  emit('error', { message: String(err && err.stack ? err.stack : err) });
  process.exit(1);
}
