// centrifuge-js map subscriptions against an rtcore node, driven by
// tests/protocol/test_sdk_js_map.py (same conventions as scenario.mjs).
//
// Usage: node map_scenario.mjs <scenario> '<params JSON>'
//   params: { url, protocol: "json" | "protobuf", token, channel, pageSize? }
//
// Every stdout line is one JSON event; a scenario ends with "result" (or
// "error"). Scenarios that need the server to act in between print an event
// and wait for a line on stdin.

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
const enc = (value) => (protobuf ? encoder.encode(JSON.stringify(value)) : value);
const dec = (data) => {
  if (data === undefined || data === null) return null;
  return protobuf ? (data.length ? JSON.parse(decoder.decode(data)) : null) : data;
};

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

function newClient() {
  const client = new Centrifuge(params.url, {
    websocket: WebSocket,
    token: params.token,
    minReconnectDelay: 50,
    maxReconnectDelay: 200,
  });
  const state = { connects: 0 };
  client.on('connected', () => { state.connects += 1; });
  return { client, state };
}

// A map subscription and what it saw: syncs (snapshots), updates, subscribed events.
function trackMap(sub) {
  const seen = { syncs: [], updates: [], subscribed: [], errors: [], mirror: new Map() };
  sub.on('subscribed', (ctx) => {
    const item = { wasRecovering: ctx.wasRecovering, recovered: ctx.recovered, recoverable: ctx.recoverable };
    seen.subscribed.push(item);
    emit('subscribed', item);
  });
  sub.on('sync', (ctx) => {
    seen.mirror = new Map(ctx.entries.map((e) => [e.key, dec(e.data)]));
    seen.syncs.push(ctx.entries.length);
    emit('sync', { size: ctx.entries.length });
  });
  sub.on('update', (ctx) => {
    const item = { key: ctx.key, data: ctx.removed ? null : dec(ctx.data), removed: !!ctx.removed, offset: ctx.offset };
    if (ctx.removed) seen.mirror.delete(ctx.key);
    else seen.mirror.set(ctx.key, item.data);
    seen.updates.push(item);
    emit('update', item);
  });
  sub.on('error', (ctx) => {
    seen.errors.push({ type: ctx.type, code: ctx.error && ctx.error.code });
  });
  return seen;
}

function mirrorObject(seen) {
  return Object.fromEntries([...seen.mirror.entries()].sort(([a], [b]) => (a < b ? -1 : 1)));
}

const scenarios = {
  // Load a paged snapshot (state, then stream catch-up), then write through
  // the subscription and see the changes come back as updates.
  async sync() {
    const { client } = newClient();
    client.connect();
    const sub = client.newMapSubscription(params.channel, { pageSize: params.pageSize || 0 });
    const seen = trackMap(sub);
    sub.subscribe();
    await sub.ready(10000);
    await waitFor(() => seen.syncs.length >= 1, 10000, 'sync');
    const snapshot = mirrorObject(seen);
    await sub.publish('mine', enc({ v: 1 }));
    await sub.publish('mine', enc({ v: 2 }));
    await sub.remove('k000');
    await waitFor(() => seen.updates.length >= 3, 10000, 'own updates');
    let refused = null;
    try {
      await client.mapPublish(params.readonly, 'x', enc({ v: 1 }));
    } catch (e) {
      refused = e.code;
    }
    emit('result', {
      snapshot,
      mirror: mirrorObject(seen),
      syncs: seen.syncs,
      updates: seen.updates,
      subscribed: seen.subscribed,
      refused,
    });
    client.disconnect();
  },

  // Subscribe; the server forces a reconnect and changes the map meanwhile;
  // the SDK recovers the missed changes as updates, without a new snapshot.
  async recovery() {
    const { client, state } = newClient();
    client.connect();
    const sub = client.newMapSubscription(params.channel, { pageSize: params.pageSize || 0 });
    const seen = trackMap(sub);
    sub.subscribe();
    await sub.ready(10000);
    await waitFor(() => seen.syncs.length >= 1, 10000, 'sync');
    emit('ready', { size: seen.mirror.size });
    await nextStdinLine(); // the server changed keys, disconnected us, changed more, let us back in
    await waitFor(() => seen.subscribed.length >= 2, 10000, 'resubscribe');
    await nextStdinLine(); // the server changed one more key
    await waitFor(() => seen.updates.length >= Number(params.expect), 10000, 'all updates');
    emit('result', {
      mirror: mirrorObject(seen),
      syncs: seen.syncs,
      updates: seen.updates,
      subscribed: seen.subscribed,
      connects: state.connects,
    });
    client.disconnect();
  },

  // The stream no longer holds what the client missed: with the default
  // strategy (from_scratch) the SDK loads a new snapshot.
  async unrecoverable() {
    const { client } = newClient();
    client.connect();
    const sub = client.newMapSubscription(params.channel, { pageSize: params.pageSize || 0 });
    const seen = trackMap(sub);
    sub.subscribe();
    await sub.ready(10000);
    await waitFor(() => seen.syncs.length >= 1, 10000, 'sync');
    emit('ready', { size: seen.mirror.size });
    await nextStdinLine(); // the server disconnected us and changed more than the stream keeps
    await waitFor(() => seen.syncs.length >= 2, 10000, 'second sync');
    emit('result', { mirror: mirrorObject(seen), syncs: seen.syncs, subscribed: seen.subscribed, errors: seen.errors });
    client.disconnect();
  },
};

// Map presence: a watcher follows the clients and the users of a channel
// while another connection subscribes to it and leaves again.
scenarios.presence = async function presence() {
  const watcher = newClient().client;
  watcher.connect();
  const clients = watcher.newMapClientsSubscription(params.clients);
  const users = watcher.newMapUsersSubscription(params.users);
  const seenClients = trackMap(clients);
  const seenUsers = trackMap(users);
  const infos = [];
  clients.on('update', (ctx) => infos.push(ctx.info ? ctx.info.user : null));
  clients.subscribe();
  users.subscribe();
  await waitFor(() => seenClients.syncs.length >= 1 && seenUsers.syncs.length >= 1, 10000, 'syncs');
  const other = new Centrifuge(params.url, { websocket: WebSocket, token: params.token2 });
  other.connect();
  const sub = other.newSubscription(params.channel);
  sub.subscribe();
  await sub.ready(10000);
  await waitFor(() => seenClients.updates.length >= 1 && seenUsers.updates.length >= 1, 10000, 'joins');
  sub.unsubscribe();
  await waitFor(() => seenClients.updates.length >= 2, 10000, 'leave');
  emit('result', {
    clientSyncs: seenClients.syncs,
    clientUpdates: seenClients.updates.map((u) => ({ key: u.key, removed: u.removed })),
    infos,
    userUpdates: seenUsers.updates.map((u) => ({ key: u.key, removed: u.removed })),
    otherClient: other._client,
    clientsMirror: mirrorObject(seenClients),
    usersMirror: Object.keys(mirrorObject(seenUsers)),
  });
  other.disconnect();
  watcher.disconnect();
};

// Fossil deltas per key: the server changes a few big values a little; the
// SDK rebuilds every one of them from its previous value.
scenarios.delta = async function delta() {
  const { client } = newClient();
  client.connect();
  const sub = client.newMapSubscription(params.channel, { delta: 'fossil', pageSize: params.pageSize || 0 });
  const seen = trackMap(sub);
  sub.subscribe();
  await sub.ready(10000);
  await waitFor(() => seen.syncs.length >= 1, 10000, 'sync');
  emit('ready', { size: seen.mirror.size });
  await nextStdinLine(); // the server changed keys
  await waitFor(() => seen.updates.length >= Number(params.expect), 10000, 'all updates');
  emit('result', { mirror: mirrorObject(seen), stats: sub.deltaStats(), updates: seen.updates.length });
  client.disconnect();
};

const run = scenarios[scenario];
if (!run) {
  emit('error', { message: `unknown scenario ${scenario}` });
  process.exit(2);
}
run().then(
  () => setTimeout(() => process.exit(0), 50),
  (e) => {
    emit('error', { message: String(e && e.stack ? e.stack : e) });
    process.exit(1);
  },
);
