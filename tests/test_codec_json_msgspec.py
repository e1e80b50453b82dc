"""The JSON codec's msgspec fast path gives what the general decoder gives, errors included.

With msgspec installed, command frames, bare connect requests and raw-payload
checks go through msgspec first and through the general decoder only when
msgspec refuses the text. These tests compare both on valid and invalid
input, check that the fast path is really taken for ordinary commands, and
run the codec tests again with msgspec hidden (the fallback alone).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from rtcore.protocol import JSON, InappropriateProtocol, ProtocolDecodeError, _json_decode
from rtcore.protocol.messages import Reply, RPCResult


if os.environ.get("CI") == "true":
    # The test extra installs msgspec: under CI its absence is a failure.
    from rtcore.protocol import _json_msgspec as msgspec_path
else:
    msgspec_path = pytest.importorskip("rtcore.protocol._json_msgspec")

ROOT = Path(__file__).resolve().parent.parent


def general(frame: bytes | str) -> Any:
    try:
        return _json_decode.decode_command_frame_general(frame)
    except ProtocolDecodeError as e:
        return ("error", str(e))


def fast(frame: bytes | str) -> Any:
    try:
        return JSON.decode_commands(frame)
    except ProtocolDecodeError as e:
        return ("error", str(e))


HUGE = b"9" * 5000

COMMANDS = [
    b'{"id":1,"connect":{"token":"t","data":{"a":[1,2.5,null]},"name":"js","version":"1",'
    b'"subs":{"c":{"offset":3,"epoch":"e","recover":true},"d":null},"headers":{"a":"b","n":null},'
    b'"flag":1,"dict":"x","profile":"p"}}',
    b'{"id":2,"subscribe":{"channel":"chat:1","recover":true,"epoch":"AbCd","offset":5,'
    b'"tf":{"op":"and","nodes":[{"key":"k","cmp":"in","vals":["a","b"]}]},"flag":3,'
    b'"type":1,"phase":2,"cursor":"c","limit":-1,"asc":true,"data":[1],"positioned":true,'
    b'"recoverable":true,"join_leave":true,"delta":"fossil","token":"t"}}',
    b'{"id":3,"publish":{"channel":"c","data":"\\u00e9","type":1,"key":"k","removed":true}}',
    b'{"id":4,"history":{"channel":"c","limit":10,"since":{"offset":2,"epoch":"e"},"reverse":true}}',
    b'{"id":5,"rpc":{"method":"m","data":[' + HUGE + b"]}}",
    b'{"id":6,"sub_refresh":{"channel":"c","token":"t","type":1,"track":[{"signature":"s",'
    b'"items":[{"key":"k","version":18446744073709551615}]}],"untrack":["x"]}}',
    b'{"send":{"data":true}}',
    b'{"id":7,"presence":{"channel":"c"},"presence_stats":{"channel":"c"},"ping":{},'
    b'"refresh":{"token":"t"},"unsubscribe":{"channel":"c"}}',
    b"{}",
    b'{"id":8,"publish":{"channel":"c","data":null}}',
    b'{"id":9,"publish":{"channel":null,"data": {"x" : 1} ,"type":null}}',
    b'{"\\u0069d":10,"publish":{"\\u0064ata":[1, 2]}}',
    b'{"id":11,"publish":{"data":1},"publish":{"data":2}}',
    b'{"id":12,"publish":{"data":"\xc3\xa9 \xe2\x80\xa8"},"unknown":[' + HUGE + b", 1e400]}",
    b'{"id":13,"subscribe":{"channel":"\\ud83d\\ude00"}}',
    b' {"id":14} \r',
]

BAD = [
    b"",
    b"\n",
    b"\n\n",
    b"{}\n\n{}",
    b"   ",
    b"[]",
    b"null",
    b"{",
    b'{"id":1}x',
    b'{"id":-1}',
    b'{"id":4294967296}',
    b'{"id":1.0}',
    b'{"id":true}',
    b'{"id":"1"}',
    b'{"id":' + HUGE + b"}",
    b'{"subscribe":{"offset":18446744073709551616}}',
    b'{"subscribe":{"offset":' + HUGE + b"}}",
    b'{"history":{"since":{"offset":-1}}}',
    b'{"sub_refresh":{"track":[{"items":[{"version":18446744073709551616}]}]}}',
    b'{"subscribe":{"flag":9223372036854775808}}',
    b'{"subscribe":{"type":2147483648}}',
    b'{"publish":{"channel":"\\ud800"}}',
    b'{"publish":{"data":"\\ud800"}}',
    b'{"publish":{"data":"\xff"}}',
    b'{"x":"\xed\xa0\x80"}',
    b'{"publish":{"data":NaN}}',
    b'{"publish":{"data":[1,]}}',
    b'{"publish":{"data":"\x01"}}',
    b'{"sub_refresh":{"untrack":["a",null]}}',
    b'{"subscribe":{"tf":{"vals":[1]}}}',
    b'{"connect":{"headers":{"a":1}}}',
    b'{"connect":{"subs":{"c":{"offset":"x"}}}}',
    b'{"publish":"c"}',
    b'{"publish":{"data":' + b"[" * 300 + b"]" * 300 + b"}}",
    b'{"publish":{"data":' + b"[" * 5000 + b"]" * 5000 + b"}}",
    b'\xef\xbb\xbf{"id":1}',
    b'{"id":1}\n{"id":2}\n{"id":"x"}',
    b'{"id":1,"publish":{"data":\x0b1}}',
]


@pytest.mark.parametrize("line", COMMANDS)
def test_valid_commands_take_the_fast_path_and_agree(line: bytes) -> None:
    assert msgspec_path.decode_command_lines(line) is not None
    assert fast(line) == general(line)
    assert fast(line.decode("utf-8")) == general(line.decode("utf-8"))


def test_a_batched_frame_takes_the_fast_path_and_agrees() -> None:
    frame = b"\n".join(COMMANDS) + b"\n"
    commands = msgspec_path.decode_command_lines(frame)
    assert commands is not None and len(commands) == len(COMMANDS)
    assert commands == general(frame)


@pytest.mark.parametrize("line", BAD)
def test_bad_input_gets_the_general_decoders_answer(line: bytes) -> None:
    expected = general(line)
    assert fast(line) == expected
    assert fast(line.decode("latin-1")) == general(line.decode("latin-1"))


def test_errors_still_name_the_command_and_field() -> None:
    frame = b'{"id":1}\n{"id":2,"subscribe":{"offset":-1}}'
    assert fast(frame) == ("error", "command 2: subscribe.offset: -1 is out of range for uint64")


def test_huge_integer_in_data_passes_byte_for_byte() -> None:
    data = b'{"n":' + HUGE + b',"m":-' + HUGE + b"}"
    line = b'{"id":1,"publish":{"channel":"c","data":' + data + b"}}"
    (command,) = msgspec_path.decode_command_lines(line)
    assert command.publish.data == data
    reply = JSON.encode_reply(Reply(id=1, rpc=RPCResult(data=data)))
    assert reply == b'{"id":1,"rpc":{"data":' + data + b"}}\n"


def test_connect_request_agrees() -> None:
    for text in [*COMMANDS[:1], b"", b"null", b" null ", b"[]", b'{"token":1}', b'{"data":"\xff"}']:
        body = text
        if text.startswith(b'{"id":1,"connect":'):
            body = text[len(b'{"id":1,"connect":') : -1]
        try:
            expected: Any = _json_decode.decode_connect_request_general(body)
        except ProtocolDecodeError as e:
            expected = str(e)
        try:
            got: Any = JSON.decode_connect_request(body)
        except ProtocolDecodeError as e:
            got = str(e)
        assert got == expected, body


@pytest.mark.parametrize(
    "payload",
    [b"1", b" [1, 2] ", HUGE, b'"\\ud800"', b'"\xc3\xa9"', b"1e400", b"[" * 300 + b"]" * 300],
)
def test_raw_check_accepts_what_check_json_text_accepts(payload: bytes) -> None:
    # msgspec refuses lone surrogate escapes; check_json_text then accepts them.
    assert msgspec_path.is_json(payload) or payload.startswith(b'"\\ud')
    reply = JSON.encode_reply(Reply(id=1, rpc=RPCResult(data=payload)))
    assert reply.startswith(b'{"id":1,"rpc":{"data":')


@pytest.mark.parametrize("payload", [b" ", b"1 2", b"NaN", b'"\xff"', b"[1,]", b"{", b"\x0b1"])
def test_raw_check_refuses_what_check_json_text_refuses(payload: bytes) -> None:
    assert not msgspec_path.is_json(payload)
    with pytest.raises(InappropriateProtocol):
        JSON.encode_reply(Reply(id=1, rpc=RPCResult(data=payload)))


def _containers(inner: Any) -> Any:
    return st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner))


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    _containers,
    max_leaves=10,
)
_fields = st.sampled_from(
    [
        "id",
        "channel",
        "data",
        "offset",
        "epoch",
        "recover",
        "tf",
        "vals",
        "since",
        "subs",
        "headers",
        "track",
        "items",
        "version",
        "flag",
        "limit",
        "type",
        "x",
    ]
)


def _command_like(draw_value: Any) -> Any:
    return st.dictionaries(_fields, draw_value, max_size=5)


_commands = st.dictionaries(
    st.sampled_from(
        ["id", "connect", "subscribe", "publish", "history", "rpc", "sub_refresh", "x"]
    ),
    st.recursive(_json_values, _command_like, max_leaves=8),
    max_size=3,
)


@settings(max_examples=300, deadline=None)
@given(_commands, st.booleans())
def test_random_commands_agree(command: dict[str, Any], spaced: bool) -> None:
    separators = (", ", ": ") if spaced else (",", ":")
    line = json.dumps(command, separators=separators, ensure_ascii=spaced)
    assert fast(line) == general(line)
    assert fast(line.encode("utf-8", "surrogatepass")) == general(
        line.encode("utf-8", "surrogatepass")
    )


def test_codec_tests_pass_without_msgspec() -> None:
    """The general decoder alone (msgspec not installed) passes the codec tests."""
    code = (
        "import sys; sys.modules['msgspec'] = None\n"
        "import rtcore.protocol._json_decode as d\n"
        "assert d._json_msgspec is None\n"
        "import pytest; sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '-p', 'no:xdist',"
        " 'tests/test_codec_json.py', 'tests/test_codec_common.py']))\n"
    )
    env = dict(os.environ)
    env.pop("PYTEST_XDIST_WORKER", None)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout


def test_api_bodies_json_stringify_writes_take_msgspec() -> None:
    from rtcore.server.api import rawjson
    from rtcore.server.api.schema import BATCH_SPEC, RAW_SPECS

    body = '{"commands":[{"publish":{"channel":"c","data":{"t":"é, \\"x\\"","n":[1,2.5,null]}}}]}'
    assert msgspec_path.decode_value(body)[1] is True
    value = rawjson.parse_json(body, BATCH_SPEC)
    assert value["commands"][0]["publish"]["data"] == '{"t":"é, \\"x\\"","n":[1,2.5,null]}'.encode()
    # Python's json.dumps defaults: parsed by msgspec, checked with Python's encoder.
    spaced = json.dumps({"channel": "c", "data": {"t": 1}})
    assert msgspec_path.decode_value(spaced) == ({"channel": "c", "data": {"t": 1}}, False)
    assert rawjson.parse_json(spaced, RAW_SPECS["publish"])["data"] == b'{"t": 1}'
    # An integer past the digit limit: msgspec refuses, the walker keeps it byte for byte.
    huge = '{"channel":"c","data":[' + "9" * 5000 + "]}"
    with pytest.raises(ValueError):
        msgspec_path.decode_value(huge)
    assert (
        rawjson.parse_json(huge, RAW_SPECS["publish"])["data"] == ("[" + "9" * 5000 + "]").encode()
    )


def test_bench_codecs_runs_and_both_columns_agree() -> None:
    """bench/bench_codecs.py checks that msgspec and the general code give the same result."""
    result = subprocess.run(
        [sys.executable, "bench/bench_codecs.py", "--runs", "1", "--time", "0.0001"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("\n| ") >= 16, result.stdout
