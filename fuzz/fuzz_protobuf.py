"""Fuzzing of the Protobuf command decoder (``rtcore.protocol.protobuf``).

The input is a client frame of varint-delimited ``Command`` messages (or, by
the first byte, a bare ``ConnectRequest`` or ``EmulationRequest``). Decoding
may only raise :class:`~rtcore.protocol.ProtocolDecodeError`. A frame is
decoded as a session decodes it, with the default ``max_commands_in_frame``
(:data:`LIMIT`), then, every third input, with no limit: both must agree up
to the limit. Every decoded command up to the first :data:`ROUND_TRIPS` of a
frame, encoded again with the generated classes, must decode to an equal
command (nothing the decoder accepted is lost or altered on the way). The
bounds keep a 4 KiB input of thousands of empty commands from costing
thousands of decodes and round trips (the harness ran at ~1,000 inputs/s on
such inputs).

    python fuzz/fuzz_protobuf.py -atheris_runs=1000000
"""

from __future__ import annotations

from fuzzlib import Input, instrumented, main, to_protobuf


with instrumented(__name__ == "__main__"):
    from rtcore.protocol import PROTOBUF, ProtocolDecodeError, client_pb2 as pb


#: Commands a session decodes in one frame (client.max_commands_in_frame).
LIMIT = 256
#: Decoded commands of one frame that are re-encoded and compared.
ROUND_TRIPS = 64


def _delimited(body: bytes) -> bytes:
    n = len(body)
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out) + body


def TestOneInput(data: bytes) -> None:
    inp = Input(data)
    first = inp.byte()
    mode = first % 3
    # A third of the frames are also decoded without the limit.
    unbounded = first % 9 == 2
    body = inp.rest()
    try:
        if mode == 0:
            request = PROTOBUF.decode_connect_request(body)
            message = pb.ConnectRequest()
            to_protobuf(request, message)
            assert PROTOBUF.decode_connect_request(message.SerializeToString()) == request
            return
        if mode == 1:
            PROTOBUF.decode_emulation_request(body)
            return
        commands = PROTOBUF.decode_commands(body, LIMIT)
    except ProtocolDecodeError as exc:
        if unbounded:
            over = "too many commands" in str(exc)
            try:
                full = PROTOBUF.decode_commands(body)
            except ProtocolDecodeError as again:
                # The same error, or one past the limit the bounded decode stopped at.
                assert over or str(again) == str(exc), (exc, again)
            else:
                assert over and len(full) > LIMIT, (exc, len(full))
        return
    if unbounded:
        assert PROTOBUF.decode_commands(body) == commands
    for command in commands:
        command.method  # noqa: B018 - the session reads these
        command.methods  # noqa: B018
    for command in commands[:ROUND_TRIPS]:
        message = pb.Command()
        to_protobuf(command, message)
        (again,) = PROTOBUF.decode_commands(_delimited(message.SerializeToString()))
        assert again == command, (command, again)


def _seed_frame(*commands: pb.Command) -> bytes:
    return b"".join(_delimited(c.SerializeToString()) for c in commands)


def _seeds() -> list[bytes]:
    connect = pb.Command(id=1)
    connect.connect.token = "t"
    connect.connect.data = b'{"a":1}'
    connect.connect.subs["c"].offset = 3
    connect.connect.headers["x"] = "y"
    subscribe = pb.Command(id=2)
    subscribe.subscribe.channel = "chat:1"
    subscribe.subscribe.recover = True
    subscribe.subscribe.offset = 5
    subscribe.subscribe.tf.op = "and"
    subscribe.subscribe.tf.nodes.add(key="k", cmp="eq", val="v")
    history = pb.Command(id=3)
    history.history.channel = "c"
    history.history.since.offset = 2
    history.history.limit = -1
    refresh = pb.Command(id=4)
    refresh.sub_refresh.channel = "c"
    refresh.sub_refresh.track.add(signature="s").items.add(key="k", version=1)
    refresh.sub_refresh.untrack.append("x")
    publish = pb.Command(id=5)
    publish.publish.channel = "c"
    publish.publish.data = b"\x00\xff"
    request = pb.ConnectRequest(token="t", name="go")
    emulation = pb.EmulationRequest(node="n", session="s", data=b"\x00")
    return [
        b"\x02" + _seed_frame(connect, subscribe, history) + b"\x00",
        b"\x02" + _seed_frame(refresh, publish, pb.Command(id=6, ping=pb.PingRequest())),
        b"\x00" + request.SerializeToString(),
        b"\x01" + emulation.SerializeToString(),
    ]


SEEDS = _seeds()


if __name__ == "__main__":
    main(TestOneInput, SEEDS)
