"""Micro-benchmarks of the protocol codecs.

Two ways to run it:

* ``python -m pytest bench/bench_codec.py --benchmark-only`` (pytest-benchmark);
  ``bench/`` is outside ``testpaths``, so a plain ``pytest`` never collects it.
* ``python bench/bench_codec.py`` prints a markdown table of medians per call
  (the table in docs/codecs.md).

Cases, for both codecs:

* ``encode_publication``: the fan-out fast path, one publication push
  (~100-byte JSON payload, publisher info, offset), and the same push through
  the generic ``encode_push`` for comparison;
* ``decode_commands``: a frame of 10 typical commands (subscribe with
  recovery, publish with a payload, presence, history, rpc, ...).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import timeit
from collections.abc import Callable
from typing import Any

import pytest

from rtcore.protocol import (
    JSON,
    PROTOBUF,
    ClientInfo,
    Codec,
    Publication,
    Push,
    client_pb2 as pb,
)


CHANNEL = "chat:index"
PUBLICATION = Publication(
    data=json.dumps({"input": "x" * 60, "user": "alice", "ts": 1718000000}).encode(),
    offset=123456,
    info=ClientInfo(user="42", client="0e9e4d2a-7d0b-4b7c-9d3b-6a8f1e0c5a11"),
)

_JSON_COMMANDS = [
    {
        "id": 1,
        "subscribe": {
            "channel": "chat:1",
            "recover": True,
            "offset": 5,
            "epoch": "AbCd",
            "flag": 1,
        },
    },
    {"id": 2, "subscribe": {"channel": "chat:2", "flag": 1}},
    {"id": 3, "publish": {"channel": "chat:1", "data": {"input": "hello there", "n": 1}}},
    {"id": 4, "presence": {"channel": "chat:1"}},
    {"id": 5, "presence_stats": {"channel": "chat:1"}},
    {
        "id": 6,
        "history": {"channel": "chat:1", "limit": 10, "since": {"offset": 3, "epoch": "AbCd"}},
    },
    {"id": 7, "rpc": {"method": "getUser", "data": {"id": 42}}},
    {"id": 8, "unsubscribe": {"channel": "chat:2"}},
    {"id": 9, "sub_refresh": {"channel": "chat:1", "token": "eyJhbGciOiJIUzI1NiJ9.e30.x"}},
    {},
]


def _protobuf_frame() -> bytes:
    frame = b""
    for cmd in _JSON_COMMANDS:
        m = pb.Command()
        for key, value in cmd.items():
            if key == "id":
                m.id = value
                continue
            req = getattr(m, key)
            req.SetInParent()
            for field, v in value.items():
                if field == "data":
                    req.data = json.dumps(v).encode()
                elif field == "since":
                    req.since.offset = v["offset"]
                    req.since.epoch = v["epoch"]
                else:
                    setattr(req, field, v)
        body = m.SerializeToString()
        frame += bytes([len(body)]) + body
    return frame


FRAMES: dict[str, bytes] = {
    "json": "\n".join(json.dumps(c, separators=(",", ":")) for c in _JSON_COMMANDS).encode(),
    "protobuf": _protobuf_frame(),
}
CODECS: dict[str, Codec] = {"json": JSON, "protobuf": PROTOBUF}


def cases() -> dict[str, Callable[[], Any]]:
    out: dict[str, Callable[[], Any]] = {}
    push = Push(channel=CHANNEL, pub=PUBLICATION)
    for name, codec in CODECS.items():
        frame = FRAMES[name]
        assert len(codec.decode_commands(frame)) == 10
        assert codec.encode_publication(CHANNEL, PUBLICATION) == codec.encode_push(push)
        out[f"{name} encode_publication"] = lambda c=codec: c.encode_publication(
            CHANNEL, PUBLICATION
        )
        out[f"{name} encode_push (generic)"] = lambda c=codec: c.encode_push(push)
        out[f"{name} decode_commands x10"] = lambda c=codec, f=frame: c.decode_commands(f)
    return out


@pytest.mark.parametrize("case", list(cases()))
def test_codec(benchmark: Any, case: str) -> None:
    benchmark(cases()[case])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="timing runs per case (median)")
    parser.add_argument("--number", type=int, default=20_000, help="calls per run")
    args = parser.parse_args(argv)
    import google.protobuf
    from google.protobuf.internal import api_implementation

    print(
        f"Python {platform.python_version()}, protobuf {google.protobuf.__version__} "
        f"({api_implementation.Type()}), {platform.machine()}\n"
    )
    print("| case | median per call |")
    print("|---|---|")
    for name, fn in cases().items():
        runs = timeit.repeat(fn, number=args.number, repeat=args.runs)
        per_call = statistics.median(runs) / args.number
        print(f"| {name} | {per_call * 1e6:.2f} µs |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
