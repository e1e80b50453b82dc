"""Fossil delta compression: the encoder against the SDKs' own decoders, and deltas end to end.

``rtcore.protocol.fossil.create_delta`` must produce deltas that the
official SDKs apply: centrifuge-js's ``applyDelta`` (taken from the SDK's
build at test time and run in Node) and centrifuge-python's
``centrifuge.fossil.apply_delta``. The random documents are JSON texts with
small changes (the realistic stream) plus some unrelated and binary pairs.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from rtcore.protocol.fossil import DeltaError, apply_delta, checksum, create_delta


JS_DIR = Path(__file__).parent / "js"
SDK_BUILD = JS_DIR / "node_modules" / "centrifuge" / "build" / "index.mjs"

# Loads centrifuge-js's fossil decoder out of the SDK's build (it is not
# exported) and applies every delta of the JSON lines on stdin.
JS_APPLY = r"""
import { readFileSync } from 'node:fs';
import vm from 'node:vm';
const build = readFileSync(process.argv[1], 'utf8');
const start = build.indexOf('const zValue = [');
const end = build.indexOf('/** @internal */\nclass JsonCodec');
if (start < 0 || end < start) throw new Error('fossil decoder not found in the SDK build');
const applyDelta = vm.runInNewContext(build.slice(start, end) + '\n;applyDelta;', {});
let input = '';
process.stdin.on('data', (c) => { input += c; });
process.stdin.on('end', () => {
  const out = [];
  for (const line of input.split('\n')) {
    if (!line) continue;
    const { source, delta } = JSON.parse(line);
    try {
      const target = applyDelta(Buffer.from(source, 'base64'), Buffer.from(delta, 'base64'));
      out.push(Buffer.from(target).toString('base64'));
    } catch (e) {
      out.push('error: ' + e.message);
    }
  }
  process.stdout.write(JSON.stringify(out));
});
"""


def _document(rnd: random.Random) -> dict[str, Any]:
    return {
        "id": rnd.randint(0, 10**6),
        "title": rnd.choice(["order book", "scoreboard", "Zürich ✓ 東京", "prices"]),
        "updated": rnd.random(),
        "rows": [
            {"k": i, "price": round(rnd.uniform(1, 1000), 2), "name": f"row {i} ü"}
            for i in range(rnd.randint(0, 60))
        ],
    }


def _change(rnd: random.Random, doc: dict[str, Any]) -> dict[str, Any]:
    doc = json.loads(json.dumps(doc))
    doc["updated"] = rnd.random()
    rows = doc["rows"]
    for _ in range(rnd.randint(0, 3)):
        action = rnd.random()
        if rows and action < 0.6:
            rows[rnd.randrange(len(rows))]["price"] = round(rnd.uniform(1, 1000), 2)
        elif rows and action < 0.8:
            del rows[rnd.randrange(len(rows))]
        else:
            rows.insert(rnd.randint(0, len(rows)), {"k": -1, "name": "néw ✓"})
    return doc


def _pairs(seed: int, count: int) -> list[tuple[bytes, bytes]]:
    rnd = random.Random(seed)
    pairs = []
    doc = _document(rnd)
    for n in range(count):
        new = _change(rnd, doc)
        source = json.dumps(doc, ensure_ascii=False).encode()
        target = json.dumps(new, ensure_ascii=False).encode()
        if n % 10 == 7:
            target = json.dumps(_document(rnd)).encode()  # unrelated
        elif n % 10 == 9:
            source = rnd.randbytes(rnd.randrange(200))
            target = source[:50] + rnd.randbytes(rnd.randrange(100)) + source[50:]
        pairs.append((source, target))
        doc = new
    return pairs + [(b"", b""), (b"", b"{}"), (b"{}", b""), (b"x" * 40, b"x" * 40)]


def test_delta_applies_with_own_and_python_sdk_decoder() -> None:
    from centrifuge.fossil import apply_delta as sdk_apply_delta

    for source, target in _pairs(seed=1, count=400):
        delta = create_delta(source, target)
        assert apply_delta(source, delta) == target
        assert bytes(sdk_apply_delta(source, delta)) == target
        if target.startswith(b"{"):
            delta.decode("utf-8")  # JSON clients get it inside a JSON string


def test_small_changes_give_small_deltas() -> None:
    rows = [{"k": i, "price": i * 1.5, "name": f"item {i}"} for i in range(200)]
    source = json.dumps({"rows": rows}).encode()
    rows[100]["price"] = 0.25
    target = json.dumps({"rows": rows}).encode()
    delta = create_delta(source, target)
    assert len(delta) < 40 < len(target)
    assert apply_delta(source, delta) == target


def test_copies_do_not_split_characters() -> None:
    # Changing one character among multi-byte ones: the literal part carries whole characters.
    source = ("ключ " * 20 + "значение" + " ключ" * 20).encode()
    target = ("ключ " * 20 + "знамение" + " ключ" * 20).encode()
    delta = create_delta(source, target)
    delta.decode("utf-8")
    assert apply_delta(source, delta) == target


def test_checksum_and_bad_deltas() -> None:
    assert checksum(b"") == 0
    assert checksum(b"\x00\x00\x00\x01\x02") == 1 + (2 << 24)
    delta = create_delta(b"0123456789" * 5, b"0123456789" * 4 + b"abc")
    for bad in (
        b"",
        b"3",
        delta[:-1],
        delta.replace(b"\n", b"!", 1),
        delta[: delta.rindex(b",") + 1] + b"0;",
    ):
        with pytest.raises(DeltaError):
            apply_delta(b"0123456789" * 5, bad)
    with pytest.raises(DeltaError, match="past end"):
        apply_delta(b"short", delta)


def test_delta_applies_with_centrifuge_js_decoder() -> None:
    node = shutil.which("node")
    if node is None or not SDK_BUILD.exists():
        pytest.skip("node or tests/protocol/js/node_modules (npm ci) is missing")
    pairs = _pairs(seed=2, count=300)
    deltas = [create_delta(s, t) for s, t in pairs]
    lines = "".join(
        json.dumps({"source": base64.b64encode(s).decode(), "delta": base64.b64encode(d).decode()})
        + "\n"
        for (s, _), d in zip(pairs, deltas, strict=True)
    )
    proc = subprocess.run(
        [node, "--input-type=module", "-e", JS_APPLY, str(SDK_BUILD)],
        input=lines,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout)
    assert len(results) == len(pairs)
    for (_, target), got in zip(pairs, results, strict=True):
        assert got == base64.b64encode(target).decode()


# -- the forms a delta subscriber gets ----------------------------------------------


def test_delta_forms_json_and_protobuf() -> None:
    from rtcore.protocol.delta import DeltaForms, delta_chain, json_string
    from rtcore.protocol.errors import InappropriateProtocol
    from rtcore.protocol.types import Publication

    prev = json.dumps({"rows": list(range(100)), "t": "Zürich"}).encode()
    data = json.dumps({"rows": list(range(100)), "t": "Zürich!"}, ensure_ascii=False).encode()
    pub = Publication(data=data, offset=7, tags={"a": "b"})
    forms = DeltaForms(pub, prev)
    assert forms.full(False) is pub
    full_json = forms.full(True)
    assert json.loads(full_json.data).encode() == data and not full_json.delta
    assert full_json.offset == 7 and full_json.tags == {"a": "b"}
    binary = forms.delta(False)
    assert binary.delta and apply_delta(prev, binary.data) == data
    text = forms.delta(True)
    assert text.delta and apply_delta(prev, json.loads(text.data).encode()) == data
    assert forms.delta(True) is text  # made once
    # No base, or a delta not shorter than the payload: the delta form is the full one.
    assert DeltaForms(pub, None).delta(True).delta is False
    small = Publication(data=b"{}")
    assert DeltaForms(small, b'{"x":1}').delta(False) is small
    with pytest.raises(InappropriateProtocol):
        json_string(b"\xff not json")
    chain = delta_chain([Publication(data=prev, offset=1), pub], json_codec=True)
    assert [p.delta for p in chain] == [False, True]
    assert (
        apply_delta(json.loads(chain[0].data).encode(), json.loads(chain[1].data).encode()) == data
    )


# -- delta subscriptions over a session ------------------------------------------------

DELTA_NS = {
    "history_size": 20,
    "history_ttl": 300,
    "allow_subscribe_for_client": True,
    "allowed_delta_types": ["fossil"],
}
SESSION_CONFIG = {
    "client": {"ping_interval": 0, "pong_timeout": 0},
    "channel": {
        "namespaces": [
            {"name": "d", **DELTA_NS, "force_recovery": True},
            {"name": "dp", **DELTA_NS, "force_recovery": True, "delta_publish": True},
            {"name": "nopos", **DELTA_NS},
            {"name": "off", **DELTA_NS, "allowed_delta_types": [], "force_recovery": True},
        ]
    },
}


def _docs(count: int, seed: int = 3) -> list[bytes]:
    rnd = random.Random(seed)
    doc = _document(rnd)
    out = []
    for _ in range(count):
        out.append(json.dumps(doc, ensure_ascii=False).encode())
        doc = _change(rnd, doc)
    return out


class _Receiver:
    """What an SDK does with the publications of a delta subscription."""

    def __init__(self, codec: str) -> None:
        self.codec = codec
        self.base: bytes | None = None
        self.deltas = 0

    def data(self, pub: dict[str, Any]) -> bytes:
        raw = pub["data"]
        if self.codec == "json":
            assert isinstance(raw, str), f"delta subscriptions get data as a string: {raw!r}"
            wire = raw.encode("utf-8")
        else:
            assert isinstance(raw, bytes)
            wire = raw
        if pub.get("delta"):
            assert self.base is not None
            self.deltas += 1
            self.base = apply_delta(self.base, wire)
        else:
            self.base = wire
        return self.base


def _pubs(client: Any, channel: str) -> list[dict[str, Any]]:
    """The client's publications in ``channel``, Protobuf data kept as bytes."""
    if client.codec == "json":
        return list(client.publications(channel))
    from rtcore.protocol import client_pb2 as pb

    out = []
    for frame in client.transport.frames:
        data = memoryview(frame)
        pos = 0
        while pos < len(data):
            n = shift = 0
            while True:
                b = data[pos]
                pos += 1
                n |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
            reply = pb.Reply.FromString(bytes(data[pos : pos + n]))
            pos += n
            if reply.HasField("push") and reply.push.HasField("pub"):
                if reply.push.channel == channel:
                    p = reply.push.pub
                    item: dict[str, Any] = {"data": p.data, "offset": p.offset}
                    if p.delta:
                        item["delta"] = True
                    out.append(item)
    return out


def _reply_pubs(codec: str, pubs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Recovered publications of a reply dict; Protobuf data back to the bytes sent."""
    if codec == "json":
        return pubs
    out = []
    for p in pubs:
        data = p["data"]
        if not isinstance(data, bytes):  # the test decoder showed JSON bytes as JSON
            data = json.dumps(data, ensure_ascii=False, separators=(", ", ": ")).encode()
        out.append({**p, "data": data})
    return out


@pytest.mark.parametrize("codec", ["json", "protobuf"])
def test_first_publication_full_then_deltas_and_plain_subscribers_unchanged(codec: str) -> None:
    from .helpers import Client, connect_token, make_node, run, until

    async def main() -> None:
        node = make_node(SESSION_CONFIG)
        await node.start()
        delta_client = Client(node, codec)
        await delta_client.connect(connect_token("1"))
        res = await delta_client.subscribe("d:doc", delta="fossil")
        assert res["delta"] is True
        plain = Client(node, codec)
        await plain.connect(connect_token("2"))
        assert "delta" not in await plain.subscribe("d:doc")
        docs = _docs(12)
        for doc in docs:
            await node.publish("d:doc", doc, delta=True)
        await until(lambda: len(delta_client.publications("d:doc")) == len(docs))
        await until(lambda: len(plain.publications("d:doc")) == len(docs))
        pubs = _pubs(delta_client, "d:doc")
        receiver = _Receiver(codec)
        assert [receiver.data(p) for p in pubs] == docs
        assert "delta" not in pubs[0] and all(p.get("delta") for p in pubs[1:])
        assert [p["offset"] for p in pubs] == list(range(1, len(docs) + 1))
        assert [p["data"] for p in plain.publications("d:doc")] == [json.loads(d) for d in docs]
        # Deltas are computed once per publication and codec, not per subscriber.
        more = [Client(node, codec) for _ in range(5)]
        for n, c in enumerate(more):
            await c.connect(connect_token(f"m{n}"))
            await c.subscribe("d:doc", delta="fossil")
        before = list(node.hub.encodes)
        await node.publish("d:doc", docs[0], delta=True)
        await until(lambda: all(len(c.publications("d:doc")) == 1 for c in more))
        made = [a - b for a, b in zip(node.hub.encodes, before, strict=True)]
        index = 0 if codec == "json" else 1
        # Plain, full (on JSON a separate form) and delta: at most three per codec.
        assert made[index] == (3 if codec == "json" else 2)
        await node.close()

    run(main())


@pytest.mark.parametrize("codec", ["json", "protobuf"])
def test_delta_negotiation(codec: str) -> None:
    from .helpers import Client, connect_token, make_node, run, until

    async def main() -> None:
        node = make_node(SESSION_CONFIG)
        await node.start()
        c = Client(node, codec)
        await c.connect(connect_token("1"))
        assert "delta" not in await c.subscribe("off:x", delta="fossil")
        # Not positioned: negotiated, but every publication goes in full.
        assert (await c.subscribe("nopos:x", delta="fossil"))["delta"] is True
        for doc in _docs(4):
            await node.publish("nopos:x", doc, delta=True)
        await until(lambda: len(c.publications("nopos:x")) == 4)
        receiver = _Receiver(codec)
        assert [receiver.data(p) for p in _pubs(c, "nopos:x")] == _docs(4)
        assert receiver.deltas == 0
        # The namespace's delta_publish makes deltas the default.
        assert (await c.subscribe("dp:x", delta="fossil"))["delta"] is True
        for doc in _docs(3):
            await node.publish("dp:x", doc)
        await until(lambda: len(c.publications("dp:x")) == 3)
        receiver = _Receiver(codec)
        assert [receiver.data(p) for p in _pubs(c, "dp:x")] == _docs(3)
        assert receiver.deltas == 2
        # An unknown delta type is a bad request that ends the connection.
        assert await c.disconnected("subscribe", {"channel": "d:y", "delta": "xdelta"}) == 3501
        await node.close()

    run(main())


@pytest.mark.parametrize("codec", ["json", "protobuf"])
def test_recovery_sends_a_delta_chain_and_deltas_continue(codec: str) -> None:
    from .helpers import Client, connect_token, make_node, run, until

    async def main() -> None:
        node = make_node(SESSION_CONFIG)
        await node.start()
        docs = _docs(10, seed=5)
        first = Client(node, codec)
        await first.connect(connect_token("1"))
        res = await first.subscribe("d:rec", delta="fossil")
        epoch = res["epoch"]
        for doc in docs[:3]:
            await node.publish("d:rec", doc, delta=True)
        await until(lambda: len(first.publications("d:rec")) == 3)
        first.session.transport_closed()
        for doc in docs[3:8]:
            await node.publish("d:rec", doc, delta=True)
        again = Client(node, codec)
        await again.connect(connect_token("1"))
        res = await again.subscribe("d:rec", delta="fossil", recover=True, offset=3, epoch=epoch)
        assert res["recovered"] is True and res["delta"] is True
        recovered = _reply_pubs(codec, res["publications"])
        assert [p["offset"] for p in recovered] == [4, 5, 6, 7, 8]
        assert "delta" not in recovered[0] and all(p.get("delta") for p in recovered[1:])
        receiver = _Receiver(codec)
        assert [receiver.data(p) for p in recovered] == docs[3:8]
        # The base is the top of the stream: the next live one is a delta.
        for doc in docs[8:]:
            await node.publish("d:rec", doc, delta=True)
        await until(lambda: len(again.publications("d:rec")) == 2)
        live = _pubs(again, "d:rec")
        assert all(p.get("delta") for p in live)
        assert [receiver.data(p) for p in live] == docs[8:]
        # A publication without history (offset 0) resets the base: the next one is full.
        await node.publish("d:rec", docs[0], skip_history=True)
        await node.publish("d:rec", docs[1], delta=True)
        await until(lambda: len(again.publications("d:rec")) == 4)
        live = _pubs(again, "d:rec")[2:]
        assert "delta" not in live[0] and "delta" not in live[1]
        assert [receiver.data(p) for p in live] == [docs[0], docs[1]]
        await node.close()

    run(main())


# -- the SDKs --------------------------------------------------------------------------

# A centrifuge-js client with one subscription whose options come from the
# params; it prints JSON events and takes JSON commands on stdin:
# {"wait": n} prints "pubs" (their count) once n publications arrived, {"subscribed": n} once
# the subscription was subscribed n times, {"end": true} prints "result" and exits.
JS_SUBSCRIBER = r"""
import { createInterface } from 'node:readline';
import WebSocket from 'ws';
import { Centrifuge as CentrifugeJson } from 'centrifuge';
import { Centrifuge as CentrifugeProtobuf } from 'centrifuge/build/protobuf';

const params = JSON.parse(process.argv[1]);
const protobuf = params.protocol === 'protobuf';
const Centrifuge = protobuf ? CentrifugeProtobuf : CentrifugeJson;
const decoder = new TextDecoder();
// Protobuf int64 fields (the channel id) decode to Long objects.
const num = (v) => (v && typeof v === 'object' ? Number(v.toString()) : Number(v || 0));
const emit = (event, fields = {}) => process.stdout.write(JSON.stringify({ event, ...fields }) + '\n');
const client = new Centrifuge(params.url, {
  websocket: WebSocket, token: params.token, minReconnectDelay: 50, maxReconnectDelay: 200,
});
const sub = client.newSubscription(params.channel, params.options || {});
const pubs = [];
const subscribed = [];
sub.on('publication', (ctx) => {
  pubs.push({ data: protobuf ? JSON.parse(decoder.decode(ctx.data)) : ctx.data, offset: ctx.offset, tags: ctx.tags || {} });
});
sub.on('subscribed', (ctx) => {
  subscribed.push({ recovered: ctx.recovered, wasRecovering: ctx.wasRecovering, id: num(sub._id) });
});
sub.on('error', (ctx) => emit('sub_error', { message: String(ctx.error && ctx.error.message) }));
sub.on('unsubscribed', (ctx) => emit('unsubscribed', { code: ctx.code, reason: ctx.reason }));
client.connect();
sub.subscribe();
await sub.ready(5000);
emit('ready', { id: num(sub._id) });
const waitFor = (cond, ms, what) => new Promise((resolve, reject) => {
  const started = Date.now();
  const timer = setInterval(() => {
    if (cond()) { clearInterval(timer); resolve(); }
    else if (Date.now() - started > ms) { clearInterval(timer); reject(new Error('timed out: ' + what)); }
  }, 10);
});
for await (const line of createInterface({ input: process.stdin })) {
  const cmd = JSON.parse(line);
  try {
    if (cmd.wait !== undefined) {
      await waitFor(() => pubs.length >= cmd.wait, 10000, cmd.wait + ' publications, got ' + pubs.length);
      emit('pubs', { count: pubs.length });
    } else if (cmd.subscribed !== undefined) {
      await waitFor(() => subscribed.length >= cmd.subscribed, 10000, 'subscribed');
      emit('subscribed', { subscribed });
    } else if (cmd.end) {
      client.disconnect();
      // Exit once the (long) line is written out.
      const line = JSON.stringify({ event: 'result', pubs, subscribed, stats: sub.deltaStats() });
      process.stdout.write(line + '\n', () => process.exit(0));
    }
  } catch (e) {
    emit('error', { message: e.message });
    process.exit(1);
  }
}
"""


class JsSubscriber:
    """One centrifuge-js client running :data:`JS_SUBSCRIBER`."""

    def __init__(self, proc: Any) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, node_bin: str, params: dict[str, Any]) -> JsSubscriber:
        import asyncio

        proc = await asyncio.create_subprocess_exec(
            node_bin,
            "--input-type=module",
            "-e",
            JS_SUBSCRIBER,
            json.dumps(params),
            cwd=JS_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=1 << 24,
        )
        return cls(proc)

    async def next(self, event: str, timeout: float = 15.0) -> dict[str, Any]:
        import asyncio

        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            if not line:
                err = (await self.proc.stderr.read()).decode(errors="replace")
                raise AssertionError(f"centrifuge-js exited before {event!r}: {err[-3000:]}")
            item = json.loads(line)
            if item["event"] == "error":
                raise AssertionError(f"centrifuge-js failed: {item['message']}")
            if item["event"] == event:
                return dict(item)

    async def command(self, event: str, **cmd: Any) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        return await self.next(event)

    async def finish(self) -> dict[str, Any]:
        import asyncio

        result = await self.command("result", end=True)
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        finally:
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
        return result


def js_node_path() -> str:
    """The ``node`` binary, once Node.js and the npm packages are there (see test_sdk_js)."""
    node = shutil.which("node")
    missing = [
        p
        for p in ("centrifuge", "ws")
        if not (JS_DIR / "node_modules" / p / "package.json").exists()
    ]
    if node is None or missing:
        why = "node is not installed" if node is None else f"npm packages missing: {missing}"
        if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}:
            pytest.fail(f"centrifuge-js tests cannot run under CI: {why}")
        pytest.skip(f"{why} (npm ci in tests/protocol/js)")
    return node


@pytest.fixture
def js_node() -> str:
    return js_node_path()


SDK_CONFIG = {
    "client": {"ping_interval": 25, "pong_timeout": 8},
    "channel": {"namespaces": [{"name": "d", **DELTA_NS, "force_recovery": True}]},
}


class _DeltaCounter:
    """Counts the delta forms the hub sent (monkeypatched into rtcore.engine.hub)."""

    made = 0


def _count_deltas(monkeypatch: pytest.MonkeyPatch) -> type[_DeltaCounter]:
    import rtcore.engine.hub as hub_module
    from rtcore.protocol.delta import DeltaForms

    class Counting(DeltaForms):
        def delta(self, json_codec: bool) -> Any:
            pub = super().delta(json_codec)
            if pub.delta:
                _DeltaCounter.made += 1
            return pub

    _DeltaCounter.made = 0
    monkeypatch.setattr(hub_module, "DeltaForms", Counting)
    return _DeltaCounter


@pytest.mark.parametrize("protocol", ["json", "protobuf"])
def test_centrifuge_js_rebuilds_every_document(
    js_node: str, protocol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from .helpers import connect_token, run, serve, until

    counter = _count_deltas(monkeypatch)
    docs = _docs(30, seed=11)

    async def main() -> None:
        async with serve(SDK_CONFIG) as s:
            js = await JsSubscriber.start(
                js_node,
                {
                    "url": s.url,
                    "protocol": protocol,
                    "token": connect_token("42"),
                    "channel": "d:js",
                    "options": {"delta": "fossil"},
                },
            )
            await js.next("ready")
            for doc in docs[:10]:
                await s.node.publish("d:js", doc, delta=True)
            await js.command("pubs", wait=10)
            # A forced reconnect: what it missed comes back as a delta chain.
            await s.node.disconnect("42", code=3011, reason="force reconnect")
            await until(lambda: s.node.hub.num_subscribers("d:js") == 0, 5)
            for doc in docs[10:20]:
                await s.node.publish("d:js", doc, delta=True)
            subscribed = (await js.command("subscribed", subscribed=2))["subscribed"]
            assert subscribed[1]["recovered"] is True
            for doc in docs[20:]:
                await s.node.publish("d:js", doc, delta=True)
            await js.command("pubs", wait=30)
            result = await js.finish()
            got = result["pubs"]
        assert [p["data"] for p in got] == [json.loads(d) for d in docs]
        assert [p["offset"] for p in got] == list(range(1, 31))
        stats = result["stats"]
        # One full payload per (re)subscribe, deltas otherwise.
        assert stats["numFullPayloads"] == 2 and stats["numDeltaPayloads"] == 28
        assert stats["bytesReceived"] < stats["bytesDecoded"] / 3
        assert counter.made >= 18  # live deltas made by the hub (the recovered ones are not)

    run(main(), timeout=90)


@pytest.mark.parametrize("protobuf", [False, True], ids=["json", "protobuf"])
def test_centrifuge_python_rebuilds_every_document(protobuf: bool) -> None:
    import centrifuge

    from .helpers import connect_token, run, serve, until

    docs = _docs(30, seed=13)

    class SubEvents(centrifuge.SubscriptionEventHandler):
        def __init__(self) -> None:
            self.pubs: list[Any] = []
            self.subscribed: list[Any] = []

        async def on_subscribed(self, ctx: Any) -> None:
            self.subscribed.append(ctx)

        async def on_publication(self, ctx: Any) -> None:
            self.pubs.append(ctx.pub)

    async def main() -> None:
        async with serve(SDK_CONFIG) as s:
            client = centrifuge.Client(
                s.url,
                token=connect_token("42"),
                use_protobuf=protobuf,
                min_reconnect_delay=0.05,
                max_reconnect_delay=0.2,
            )
            events = SubEvents()
            sub = client.new_subscription("d:py", events, delta=centrifuge.DeltaType.FOSSIL)
            await client.connect()
            await sub.subscribe()
            await sub.ready(timeout=5)
            for doc in docs[:10]:
                await s.node.publish("d:py", doc, delta=True)
            await until(lambda: len(events.pubs) == 10, 5)
            await s.node.disconnect("42", code=3011, reason="force reconnect")
            await until(lambda: s.node.hub.num_subscribers("d:py") == 0, 5)
            for doc in docs[10:20]:
                await s.node.publish("d:py", doc, delta=True)
            await until(lambda: len(events.subscribed) == 2, 10)
            assert events.subscribed[1].recovered is True
            for doc in docs[20:]:
                await s.node.publish("d:py", doc, delta=True)
            await until(lambda: len(events.pubs) == 30, 10)
            await client.disconnect()
        if protobuf:
            assert [bytes(p.data) for p in events.pubs] == docs
        else:
            assert [p.data for p in events.pubs] == [json.loads(d) for d in docs]
        assert [p.offset for p in events.pubs] == list(range(1, 31))
        assert sum(1 for p in events.pubs if p.delta) == 28

    run(main(), timeout=60)


@pytest.mark.redis
@pytest.mark.parametrize("codec", ["json", "protobuf"])
def test_deltas_between_nodes_on_redis(codec: str) -> None:
    """A node that did not publish gets the previous payload from Redis and sends deltas."""
    import socket
    import uuid

    from rtcore.backends.redis import RedisBroker
    from rtcore.engine.node import Node

    from .helpers import Client, build_config, connect_token, run, until

    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            up = conn.recv(64).startswith(b"+PONG")
    except OSError:
        up = False
    if not up:
        pytest.skip("no Redis on 127.0.0.1:6379")
    prefix = f"rtcore-delta-{uuid.uuid4().hex[:10]}"
    docs = _docs(8, seed=17)

    async def main() -> None:
        nodes = [
            Node(
                build_config(SESSION_CONFIG),
                broker=RedisBroker("redis://127.0.0.1:6379", prefix=prefix),
            )
            for _ in range(2)
        ]
        for node in nodes:
            await node.start()
        try:
            c = Client(nodes[1], codec)
            await c.connect(connect_token("1"))
            await c.subscribe("d:redis", delta="fossil")
            for doc in docs:
                await nodes[0].publish("d:redis", doc, delta=True)
            await until(lambda: len(c.publications("d:redis")) == len(docs), 10)
            pubs = _pubs(c, "d:redis")
            receiver = _Receiver(codec)
            assert [receiver.data(p) for p in pubs] == docs
            assert receiver.deltas == len(docs) - 1
        finally:
            for node in nodes:
                await node.close()
            import redis

            r = redis.Redis.from_url("redis://127.0.0.1:6379")
            keys = list(r.scan_iter(match=f"{prefix}.*", count=1000))
            if keys:
                r.delete(*keys)
            r.close()

    run(main(), timeout=30)
