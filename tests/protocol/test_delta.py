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
