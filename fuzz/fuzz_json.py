"""Fuzzing of the JSON command decoder (``rtcore.protocol.json`` / ``_json_decode``).

The input is a client frame (or, by the first byte, a bare connect request or
an ``/emulation`` body). Decoding may only raise
:class:`~rtcore.protocol.ProtocolDecodeError`. A decoded frame must also hold
up: every raw-JSON ``data`` field is the exact text the client sent and is
valid JSON for the encoder (sending it back to a JSON client cannot fail),
and the commands, encoded as Protobuf and decoded by the Protobuf codec,
come back equal (the two decoders agree on what a command means). With
msgspec installed, its fast path and the general decoder give the same
commands, or the same error message.

    python fuzz/fuzz_json.py -atheris_runs=1000000
"""

from __future__ import annotations

from typing import Any

from fuzzlib import Input, instrumented, main, to_protobuf


with instrumented(__name__ == "__main__"):
    from rtcore.protocol import JSON, PROTOBUF, ProtocolDecodeError, _json_decode, client_pb2 as pb
    from rtcore.protocol.messages import Reply, RPCResult


def _raw_fields(command: Any) -> list[bytes]:
    out = []
    for name in ("connect", "subscribe", "publish", "rpc", "send"):
        request = getattr(command, name)
        if request is not None and request.data:
            out.append(request.data)
    if command.connect is not None:
        out.extend(sub.data for sub in command.connect.subs.values() if sub.data)
    return out


def _check_raw(raw: bytes, text: bytes) -> None:
    assert raw in text, (raw, text)
    encoded = JSON.encode_reply(Reply(id=1, rpc=RPCResult(data=raw)))
    assert encoded == b'{"id":1,"rpc":{"data":' + raw.replace(b"\n", b"") + b"}}\n"


def _same_through_protobuf(command: Any) -> None:
    message = pb.Command()
    to_protobuf(command, message)
    body = message.SerializeToString()
    (again,) = PROTOBUF.decode_commands(_varint(len(body)) + body)
    assert again == command, (command, again)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _outcome(decode: Any, text: Any) -> Any:
    try:
        return decode(text)
    except ProtocolDecodeError as e:
        return str(e)


def _same_as_general(text: Any, mode: int) -> None:
    if _json_decode._json_msgspec is None:
        return
    if mode == 0:
        fast = _outcome(JSON.decode_connect_request, text)
        general = _outcome(_json_decode.decode_connect_request_general, text)
    else:
        fast = _outcome(JSON.decode_commands, text)
        general = _outcome(_json_decode.decode_command_frame_general, text)
    assert fast == general, (fast, general)


def TestOneInput(data: bytes) -> None:
    inp = Input(data)
    mode = inp.byte() % 4
    text = inp.rest()
    if mode != 1:
        _same_as_general(text if mode != 3 else text.decode("latin-1"), mode)
    try:
        if mode == 0:
            request = JSON.decode_connect_request(text)
            if request.data:
                _check_raw(request.data, text)
            return
        if mode == 1:
            JSON.decode_emulation_request(text)
            return
        frame = text if mode == 2 else text.decode("latin-1")
        commands = JSON.decode_commands(frame)
    except ProtocolDecodeError:
        return
    # With a session's limit: the same commands, or refused for their count.
    limit = len(text) % 7 + 1
    try:
        assert JSON.decode_commands(frame, limit) == commands
    except ProtocolDecodeError as exc:
        assert len(commands) > limit and "too many commands" in str(exc), (exc, len(commands))
    # A str frame's raw fields are its UTF-8 text.
    source = text if mode == 2 else text.decode("latin-1").encode()
    for command in commands:
        command.method  # noqa: B018 - the session reads these
        command.methods  # noqa: B018
        for raw in _raw_fields(command):
            _check_raw(raw, source)
        _same_through_protobuf(command)


SEEDS = [
    # A str frame with non-ASCII text in data (its raw field is the UTF-8 text).
    b"\x03" + b'{"id":2,"subscribe":{"channel":"c","data":"0\xd0\xa19"}}\n{}',
    b"\x02"
    + b'{"id":1,"connect":{"token":"t","data":{"a":[1,2.5,null]},"subs":{"c":{"offset":3}}}}\n'
    b'{"id":2,"subscribe":{"channel":"chat:1","recover":true,"epoch":"AbCd","offset":5,'
    b'"tf":{"op":"and","nodes":[{"key":"k","cmp":"eq","val":"v"}]}}}\n'
    b'{"id":3,"publish":{"channel":"c","data":"\\u00e9"}}\n{}',
    b"\x02"
    + b'{"id":4,"history":{"channel":"c","limit":10,"since":{"offset":2,"epoch":"e"},"reverse":true}}'
    + b'\n{"id":5,"rpc":{"method":"m","data":['
    + b"9" * 5000
    + b"]}}",
    b"\x02"
    + b'{"id":6,"sub_refresh":{"channel":"c","token":"t","track":[{"signature":"s",'
    + b'"items":[{"key":"k","version":1}]}],"untrack":["x"]}}\n{"send":{"data":true}}',
    b'\x00{"token":"t","data":{"x":1},"name":"js","headers":{"a":"b"}}',
    b'\x01{"node":"n","session":"s","data":"{\\"id\\":1}"}',
]


if __name__ == "__main__":
    main(TestOneInput, SEEDS)
