"""JSON codec with and without msgspec, per message kind, in one run.

    python bench/bench_codecs.py [--runs 7] [--time 0.2]

Each case is timed with msgspec (the installed codec) and with the general
code (the walker and converters, ``check_json_text``, the server API's
parser without msgspec), alternately in the same run, so a noisy machine
shifts both columns alike (CPU time of the process, so time spent waiting for
a core is left out); the table gives the median of ``--runs`` runs per call
and their ratio. The cases:

* client commands, one per frame: ``connect`` (centrifuge-js's first
  command), ``subscribe`` (with recovery), ``publish`` with a 100-byte and a
  2.6 KB payload and one holding a 5,000-digit integer (kept byte for byte);
  a bare connect request (uni transports);
* frames of 10 commands: 10 publishes, and a mix (subscribe, publish,
  presence, history, rpc, ...);
* encoding: a publication push (the fan-out path) with the two payloads and
  a history reply with 10 publications: the codec's writer, the payloads
  checked as JSON by msgspec or by ``check_json_text``; and the same push
  written by ``msgspec.json.encode`` from a dict, against the codec's writer
  with msgspec's check (msgspec does not write it faster: the codec keeps
  its writer, see docs/codecs.md);
* server API bodies: ``/api/publish`` and ``/api/batch`` (10 publishes) as
  JSON.stringify writes them (compact) and as Python's json.dumps writes them.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import msgspec

from rtcore.protocol import JSON, ClientInfo, Publication, _json_decode, json as json_codec
from rtcore.protocol.messages import HistoryResult, Reply
from rtcore.server.api import rawjson
from rtcore.server.api.schema import BATCH_SPEC, RAW_SPECS


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9." + "e" * 120 + ".sig_" + "s" * 38
SMALL = {"input": "x" * 60, "user": "alice", "ts": 1718000000}
BIG = {
    "items": [
        {"id": i, "name": f"item {i}", "tags": ["a", "b"], "price": i * 1.5} for i in range(40)
    ]
}
HUGE_DATA = b'{"n":' + b"9" * 5000 + b"}"

CONNECT = _dumps({"id": 1, "connect": {"token": JWT, "name": "js", "version": "5.2.0"}})
SUBSCRIBE = _dumps(
    {
        "id": 2,
        "subscribe": {
            "channel": "chat:1",
            "recover": True,
            "offset": 5,
            "epoch": "AbCd",
            "flag": 1,
        },
    }
)
PUBLISH = _dumps({"id": 3, "publish": {"channel": "chat:1", "data": SMALL}})
PUBLISH_BIG = _dumps({"id": 3, "publish": {"channel": "chat:1", "data": BIG}})
PUBLISH_HUGE = b'{"id":3,"publish":{"channel":"chat:1","data":' + HUGE_DATA + b"}}"
BARE_CONNECT = _dumps({"token": JWT, "name": "js", "version": "5.2.0", "data": {"app": "x"}})
PUBLISH_X10 = b"\n".join(
    _dumps({"id": n, "publish": {"channel": f"chat:{n}", "data": SMALL}}) for n in range(1, 11)
)
MIXED_X10 = b"\n".join(
    _dumps(c)
    for c in [
        {
            "id": 1,
            "subscribe": {"channel": "chat:1", "recover": True, "offset": 5, "epoch": "AbCd"},
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
        {"id": 9, "sub_refresh": {"channel": "chat:1", "token": JWT}},
        {},
    ]
)

INFO = ClientInfo(user="42", client="0e9e4d2a-7d0b-4b7c-9d3b-6a8f1e0c5a11")
PUB_SMALL = Publication(data=json.dumps(SMALL).encode(), offset=123456, info=INFO)
PUB_BIG = Publication(data=json.dumps(BIG).encode(), offset=123456, info=INFO)
HISTORY = Reply(
    id=7,
    history=HistoryResult(
        publications=[Publication(data=PUB_SMALL.data, offset=n) for n in range(1, 11)],
        epoch="AbCd",
        offset=10,
    ),
)

API_PUBLISH = {"channel": "chat:index", "data": SMALL}
API_BATCH = {"commands": [{"publish": {"channel": f"chat:{n}", "data": SMALL}} for n in range(10)]}


def _msgspec_push(channel: str, pub: Publication) -> bytes:
    """The push as msgspec would write it (with the codec's payload check)."""
    info = pub.info
    assert info is not None
    body = {
        "data": msgspec.Raw(json_codec._raw(pub.data, "data")),
        "info": {"user": info.user, "client": info.client},
        "offset": pub.offset,
    }
    return msgspec.json.encode({"push": {"channel": channel, "pub": body}}) + b"\n"


# name -> (with msgspec, general code, switch msgspec off while timing the latter).
Case = tuple[Callable[[], Any], Callable[[], Any], bool]


class _MsgspecOff:
    """The codec's and the API parser's msgspec paths switched off, for one timed run."""

    def __enter__(self) -> None:
        self.saved = (
            json_codec._is_json,
            _json_decode._json_msgspec,
            rawjson._compact,
        )
        json_codec._is_json = None  # type: ignore[misc]
        _json_decode._json_msgspec = None  # type: ignore[assignment]
        rawjson._compact = None  # type: ignore[misc]

    def __exit__(self, *exc: object) -> None:
        (
            json_codec._is_json,
            _json_decode._json_msgspec,
            rawjson._compact,
        ) = self.saved  # type: ignore[misc]


def _pair(fn: Callable[[], Any]) -> Case:
    return fn, fn, True


def cases() -> dict[str, Case]:
    out: dict[str, Case] = {}
    for name, frame in [
        ("connect", CONNECT),
        ("subscribe", SUBSCRIBE),
        ("publish (100 B data)", PUBLISH),
        ("publish (2.6 KB data)", PUBLISH_BIG),
        ("publish (5,000-digit integer in data)", PUBLISH_HUGE),
        ("10 publishes in one frame", PUBLISH_X10),
        ("10 mixed commands in one frame", MIXED_X10),
    ]:
        out[f"decode {name}"] = (
            lambda f=frame: JSON.decode_commands(f),
            lambda f=frame: _json_decode.decode_command_frame_general(f),
            False,
        )
    out["decode bare connect request"] = (
        lambda: JSON.decode_connect_request(BARE_CONNECT),
        lambda: _json_decode.decode_connect_request_general(BARE_CONNECT),
        False,
    )
    out["encode publication push (100 B data)"] = _pair(
        lambda: JSON.encode_publication("chat:index", PUB_SMALL)
    )
    out["encode publication push (2.6 KB data)"] = _pair(
        lambda: JSON.encode_publication("chat:index", PUB_BIG)
    )
    out["encode publication push: msgspec.json.encode of a ready dict vs the codec's writer"] = (
        lambda: _msgspec_push("chat:index", PUB_SMALL),
        lambda: JSON.encode_publication("chat:index", PUB_SMALL),
        False,
    )
    out["encode history reply (10 publications)"] = _pair(lambda: JSON.encode_reply(HISTORY))
    for name, body, spec in [
        ("/api/publish", API_PUBLISH, RAW_SPECS["publish"]),
        ("/api/batch (10 publishes)", API_BATCH, BATCH_SPEC),
    ]:
        for style, text in [
            ("compact", json.dumps(body, separators=(",", ":"))),
            ("json.dumps", json.dumps(body)),
        ]:
            out[f"API body {name}, {style}"] = _pair(
                lambda t=text, s=spec: rawjson.parse_json(t, s)
            )
    return out


def _time(fn: Callable[[], Any], number: int, msgspec_off: bool = False) -> float:
    if msgspec_off:
        with _MsgspecOff():
            return _time(fn, number)
    # CPU time of this process: time spent descheduled on a busy machine is left out.
    start = time.process_time()
    for _ in range(number):
        fn()
    return (time.process_time() - start) / number


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="timing runs per case (median)")
    parser.add_argument("--time", type=float, default=0.2, help="seconds per run and side")
    parser.add_argument("--filter", default="", help="only cases whose name contains this")
    args = parser.parse_args(argv)
    print(
        f"Python {platform.python_version()}, msgspec {msgspec.__version__}, "
        f"{platform.machine()}; medians of {args.runs} alternating runs\n"
    )
    print("| case | msgspec | general code | general / msgspec |")
    print("|---|---:|---:|---:|")
    for name, (fast, general, off) in cases().items():
        if args.filter not in name:
            continue
        with _MsgspecOff() if off else nullcontext():
            expected = general()
        assert fast() == expected, name
        once = max(_time(general, 50, off), 1e-7)
        number = max(10, min(200_000, int(args.time / once)))
        fast_runs, general_runs = [], []
        for _ in range(args.runs):
            fast_runs.append(_time(fast, number))
            general_runs.append(_time(general, number, off))
        f, g = statistics.median(fast_runs), statistics.median(general_runs)
        print(f"| {name} | {f * 1e6:.2f} µs | {g * 1e6:.2f} µs | {g / f:.1f}× |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
