"""Codec behaviour shared by JSON and Protobuf, and the two checked against each other.

* ``client.proto`` / ``client_pb2`` against PROTOCOL.md's field tables.
* The dataclass model against the proto (names, order).
* Every message type with every field set, encoded by both codecs and decoded
  independently (``client_pb2`` for Protobuf, ``json`` for JSON) against
  expectations built generically from the dataclasses.
* Every request type decoded from independently built Protobuf and JSON.
* The fan-out fast paths against the generic encoders.
* ``get_codec`` / ``select_codec``, ``Command.method``.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import given, settings, strategies as st

from rtcore import protocol as P
from rtcore.protocol import client_pb2 as pb, messages as M
from rtcore.protocol.types import ClientInfo, PresenceStats, Publication, StreamPosition


CODECS = [pytest.param(P.JSON, id="json"), pytest.param(P.PROTOBUF, id="protobuf")]

# ---------------------------------------------------------------------------
# PROTOCOL.md §2.1-2.4 field tables: name=number, in the tables' order.

DOC_FIELDS = {
    "Command": "id=1 connect=4 subscribe=5 unsubscribe=6 publish=7 presence=8 presence_stats=9 "
    "history=10 ping=11 send=12 rpc=13 refresh=14 sub_refresh=15",
    "Reply": "id=1 error=2 push=4 connect=5 subscribe=6 unsubscribe=7 publish=8 presence=9 "
    "presence_stats=10 history=11 ping=12 rpc=13 refresh=14 sub_refresh=15",
    "Push": "id=1 channel=2 pub=4 join=5 leave=6 unsubscribe=7 message=8 subscribe=9 connect=10 "
    "disconnect=11 refresh=12",
    "Error": "code=1 message=2 temporary=3",
    "ClientInfo": "user=1 client=2 conn_info=3 chan_info=4",
    "StreamPosition": "offset=1 epoch=2",
    "Publication": "data=4 info=5 offset=6 tags=7 delta=8 time=9 channel=10 key=11 removed=12 "
    "score=13 epoch=14 prev_data=15 version=16",
    "Join": "info=1",
    "Leave": "info=1",
    "Unsubscribe": "code=2 reason=3",
    "Subscribe": "recoverable=1 epoch=4 offset=5 positioned=6 data=7",
    "Message": "data=1",
    "Connect": "client=1 version=2 data=3 subs=4 expires=5 ttl=6 ping=7 pong=8 session=9 node=10 "
    "time=11",
    "Disconnect": "code=1 reason=2 reconnect=3",
    "Refresh": "expires=1 ttl=2",
    "ConnectRequest": "token=1 data=2 subs=3 name=4 version=5 headers=6 flag=7 profile=9 dict=8",
    "ConnectResult": "client=1 version=2 expires=3 ttl=4 data=5 subs=6 ping=7 pong=8 session=9 "
    "node=10 time=11 flag=12 dict=13",
    "SubscribeRequest": "channel=1 token=2 recover=3 epoch=6 offset=7 data=8 positioned=9 "
    "recoverable=10 join_leave=11 delta=12 tf=13 flag=14 type=15 phase=16 cursor=17 limit=18 "
    "asc=19",
    "SubscribeResult": "expires=1 ttl=2 recoverable=3 epoch=6 publications=7 recovered=8 offset=9 "
    "positioned=10 data=11 was_recovering=12 delta=13 id=14 type=15 phase=16 cursor=17 state=18 "
    "publish_debounce=19",
    "UnsubscribeRequest": "channel=1",
    "UnsubscribeResult": "",
    "PublishRequest": "channel=1 data=2 type=3 key=4 removed=5",
    "PublishResult": "",
    "PresenceRequest": "channel=1",
    "PresenceResult": "presence=1",
    "PresenceStatsRequest": "channel=1",
    "PresenceStatsResult": "num_clients=1 num_users=2",
    "HistoryRequest": "channel=1 limit=7 since=8 reverse=9",
    "HistoryResult": "publications=1 epoch=2 offset=3",
    "PingRequest": "",
    "PingResult": "",
    "RPCRequest": "data=1 method=2",
    "RPCResult": "data=1",
    "SendRequest": "data=1",
    "RefreshRequest": "token=1",
    "RefreshResult": "client=1 version=2 expires=3 ttl=4",
    "SubRefreshRequest": "channel=1 token=2 type=3 track=4 untrack=5",
    "SubRefreshResult": "expires=1 ttl=2 items=3",
    "EmulationRequest": "node=1 session=2 data=3",
    "FilterNode": "op=1 key=2 cmp=3 val=4 vals=5 nodes=6",
    "Dictionary": "id=1 data=2 data_b64=3",
    "KeyedItem": "key=1 version=2",
    "TrackBatch": "signature=1 items=2",
}

# PROTOCOL.md §2.0: reserved numbers of old v1 fields.
DOC_RESERVED = {
    "Command": {2, 3},
    "Reply": {3},
    "Push": {3},
    "Publication": {1, 2, 3},
    "Unsubscribe": {1},
    "Subscribe": {2, 3},
    "SubscribeRequest": {4, 5},
    "SubscribeResult": {4, 5},
    "HistoryRequest": {2, 3, 4, 5, 6},
}

# Types that matter on the wire beyond the obvious (64-bit, zigzag, maps).
DOC_TYPES = {
    ("Publication", "score"): FieldDescriptor.TYPE_SINT64,
    ("Publication", "offset"): FieldDescriptor.TYPE_UINT64,
    ("Publication", "time"): FieldDescriptor.TYPE_INT64,
    ("Publication", "version"): FieldDescriptor.TYPE_UINT64,
    ("Push", "id"): FieldDescriptor.TYPE_INT64,
    ("Command", "id"): FieldDescriptor.TYPE_UINT32,
    ("Reply", "id"): FieldDescriptor.TYPE_UINT32,
    ("SubscribeResult", "id"): FieldDescriptor.TYPE_INT64,
    ("ConnectRequest", "flag"): FieldDescriptor.TYPE_INT64,
    ("SubscribeRequest", "flag"): FieldDescriptor.TYPE_INT64,
    ("SubscribeRequest", "type"): FieldDescriptor.TYPE_INT32,
    ("HistoryRequest", "limit"): FieldDescriptor.TYPE_INT32,
    ("SubscribeRequest", "offset"): FieldDescriptor.TYPE_UINT64,
    ("Error", "code"): FieldDescriptor.TYPE_UINT32,
    ("ClientInfo", "conn_info"): FieldDescriptor.TYPE_BYTES,
}

DOC_MAPS = {
    ("ConnectRequest", "subs"): "SubscribeRequest",
    ("ConnectRequest", "headers"): None,
    ("ConnectResult", "subs"): "SubscribeResult",
    ("Connect", "subs"): "SubscribeResult",
    ("Publication", "tags"): None,
    ("PresenceResult", "presence"): "ClientInfo",
}


def _file_proto() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(fdp)
    return fdp


class TestProtoMatchesProtocolDoc:
    def test_package(self) -> None:
        assert pb.DESCRIPTOR.package == "centrifugal.centrifuge.protocol"
        assert pb.DESCRIPTOR.syntax == "proto3" if hasattr(pb.DESCRIPTOR, "syntax") else True

    def test_every_message_and_field_number(self) -> None:
        assert set(pb.DESCRIPTOR.message_types_by_name) == set(DOC_FIELDS)
        for name, spec in DOC_FIELDS.items():
            expected = dict(item.split("=") for item in spec.split())
            desc = pb.DESCRIPTOR.message_types_by_name[name]
            actual = {f.name: str(f.number) for f in desc.fields}
            assert actual == expected, name

    def test_reserved_numbers(self) -> None:
        reserved = {
            m.name: {n for r in m.reserved_range for n in range(r.start, r.end)}
            for m in _file_proto().message_type
        }
        for name, numbers in DOC_RESERVED.items():
            assert reserved[name] == numbers, name
        assert {k for k, v in reserved.items() if v} == set(DOC_RESERVED)

    def test_wire_types(self) -> None:
        for (msg, fname), ftype in DOC_TYPES.items():
            assert pb.DESCRIPTOR.message_types_by_name[msg].fields_by_name[fname].type == ftype

    def test_maps(self) -> None:
        for (msg, fname), value_type in DOC_MAPS.items():
            fd = pb.DESCRIPTOR.message_types_by_name[msg].fields_by_name[fname]
            entry = fd.message_type
            assert entry.GetOptions().map_entry, (msg, fname)
            assert entry.fields_by_name["key"].type == FieldDescriptor.TYPE_STRING
            value = entry.fields_by_name["value"]
            if value_type is None:
                assert value.type == FieldDescriptor.TYPE_STRING
            else:
                assert value.message_type.name == value_type


# ---------------------------------------------------------------------------
# The dataclass model against the proto.

MODEL_CLASSES: list[type] = [
    getattr(M, name)
    for name in M.__all__
    if isinstance(getattr(M, name), type) and dataclasses.is_dataclass(getattr(M, name))
]


def proto_name(cls: type) -> str:
    return "PresenceStatsResult" if cls is PresenceStats else cls.__name__


def descriptor(cls: type) -> Any:
    return pb.DESCRIPTOR.message_types_by_name[proto_name(cls)]


def test_model_covers_every_proto_message() -> None:
    assert {proto_name(c) for c in MODEL_CLASSES} == set(DOC_FIELDS)


@pytest.mark.parametrize("cls", MODEL_CLASSES, ids=proto_name)
def test_model_field_names_and_order(cls: type) -> None:
    desc = descriptor(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    proto = {f.name: f.number for f in desc.fields}
    if cls is Publication:
        # The engine's Publication carries the stream fields and the map
        # fields (key, removed); the shared-poll and ordered-map fields (score,
        # epoch, version) and the broker-internal prev_data are not sent by rtcore.
        assert set(names) < set(proto)
        assert set(proto) - set(names) == {
            "score",
            "epoch",
            "prev_data",
            "version",
        }
    else:
        assert set(names) == set(proto)
    if cls not in (Publication, ClientInfo, StreamPosition, PresenceStats):
        assert [proto[n] for n in names] == sorted(proto[n] for n in names)
    assert hasattr(cls, "__slots__")


def test_field_tuples_follow_the_proto() -> None:
    command = [f.name for f in pb.Command.DESCRIPTOR.fields if f.name != "id"]
    reply = [f.name for f in pb.Reply.DESCRIPTOR.fields if f.name not in ("id", "error", "push")]
    push = [f.name for f in pb.Push.DESCRIPTOR.fields if f.name not in ("id", "channel")]
    assert list(M.REQUEST_FIELDS) == command
    assert list(M.RESULT_FIELDS) == reply
    assert list(M.PUSH_FIELDS) == push


# ---------------------------------------------------------------------------
# Generic builders: a message with every field set, and independent encoders.

RAW = b'{"k":[1,2.5,"\\u00e9 \\"q\\""],"n":null,"b":true}'
INT_VALUES = {
    FieldDescriptor.TYPE_UINT32: 4_000_000_000,
    FieldDescriptor.TYPE_INT32: -7,
    FieldDescriptor.TYPE_UINT64: 2**64 - 1,
    FieldDescriptor.TYPE_INT64: -(2**62) - 3,
    FieldDescriptor.TYPE_SINT64: -3,
}


def _unwrap_optional(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        assert len(args) == 1
        return args[0]
    return hint


def full(cls: Any, depth: int = 0) -> Any:
    """An instance of ``cls`` with every field set to a non-zero value."""
    hints = typing.get_type_hints(cls, vars(M))
    desc = descriptor(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        fd = desc.fields_by_name[f.name]
        kwargs[f.name] = _value(_unwrap_optional(hints[f.name]), fd, depth)
    return cls(**kwargs)


def _value(hint: Any, fd: Any, depth: int) -> Any:
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        if item is str:
            return [f"{fd.name}-a", f"{fd.name}-\u00fc"]
        if depth >= 2:
            return []
        return [full(item, depth + 1), full(item, depth + 1)]
    if origin is dict:
        _, value = typing.get_args(hint)
        if value is str:
            return {"k1": f"{fd.name}-1", "k\u00e9": f"{fd.name}-\u00e9"}
        return {"ch:1": full(value, depth + 1), "ch:\u00e9": full(value, depth + 1)}
    if dataclasses.is_dataclass(hint):
        return full(hint, depth + 1)
    if hint is str:
        return f"{fd.name}-\u00e9\u20ac\U0001f600"
    if hint is bool:
        return True
    if hint is bytes:
        return RAW
    if hint is int:
        return INT_VALUES[fd.type]
    raise AssertionError(f"unexpected type {hint!r} for {fd.full_name}")


def to_pb(obj: Any, msg: Any) -> Any:
    """Fill the client_pb2 message ``msg`` from the dataclass ``obj`` by descriptors."""
    msg.SetInParent()
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is None:
            continue
        fd = msg.DESCRIPTOR.fields_by_name[f.name]
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            container = getattr(msg, f.name)
            if fd.message_type.fields_by_name["value"].message_type is not None:
                for k, x in value.items():
                    to_pb(x, container[k])
            else:
                container.update(value)
        elif fd.message_type is not None:
            if isinstance(value, list):
                container = getattr(msg, f.name)
                for x in value:
                    to_pb(x, container.add())
            else:
                to_pb(value, getattr(msg, f.name))
        elif isinstance(value, list):
            getattr(msg, f.name).extend(value)
        else:
            setattr(msg, f.name, value)
    return msg


ALWAYS_PRESENT = {
    "ClientInfo": {"user", "client"},
    "PresenceResult": {"presence"},
    "PresenceStatsResult": {"num_clients", "num_users"},
    "HistoryResult": {"publications", "epoch", "offset"},
}


class Raw:
    """A raw JSON value to embed verbatim (see ``dumps_raw``)."""

    def __init__(self, data: bytes) -> None:
        self.data = data


def to_json(obj: Any, raw: bool = False) -> Any:
    """The PROTOCOL.md §2.0 JSON form of a dataclass, as Python values.

    ``bytes`` fields become the parsed JSON value, or ``Raw`` with ``raw=True``.
    """
    always = ALWAYS_PRESENT.get(proto_name(type(obj)), set())
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if not value and f.name not in always:
            continue
        out[f.name] = _json_value(value, raw)
    return out


def _json_value(value: Any, raw: bool) -> Any:
    if dataclasses.is_dataclass(value):
        return to_json(value, raw)
    if isinstance(value, list):
        return [_json_value(x, raw) for x in value]
    if isinstance(value, dict):
        return {k: _json_value(x, raw) for k, x in value.items()}
    if isinstance(value, bytes):
        return Raw(value) if raw else json.loads(value)
    return value


def dumps_raw(value: Any) -> str:
    """json.dumps that writes ``Raw`` values verbatim."""
    if isinstance(value, Raw):
        return value.data.decode()
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(k) + ":" + dumps_raw(v) for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dumps_raw(v) for v in value) + "]"
    return json.dumps(value)


def delimit(body: bytes) -> bytes:
    n = len(body)
    prefix = bytearray()
    while n > 0x7F:
        prefix.append((n & 0x7F) | 0x80)
        n >>= 7
    prefix.append(n)
    return bytes(prefix) + body


def read_delimited(frame: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(frame):
        n = shift = 0
        while True:
            b = frame[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        out.append(frame[pos : pos + n])
        pos += n
    return out


def decode_json_frame(frame: bytes) -> list[Any]:
    assert frame.endswith(b"\n") and not frame.endswith(b"\n\n")
    return [json.loads(line) for line in frame[:-1].split(b"\n")]


# ---------------------------------------------------------------------------
# Replies and pushes: every result / body with every field set.

RESULT_CLASSES = {
    name: typing.get_args(_unwrap_optional(typing.get_type_hints(M.Reply, vars(M))[name]))
    or _unwrap_optional(typing.get_type_hints(M.Reply, vars(M))[name])
    for name in M.RESULT_FIELDS
}
PUSH_CLASSES = {
    name: _unwrap_optional(typing.get_type_hints(M.Push, vars(M))[name]) for name in M.PUSH_FIELDS
}


def sample_replies() -> list[Any]:
    samples = []
    for name, cls in RESULT_CLASSES.items():
        samples.append(pytest.param(M.Reply(id=7, **{name: full(cls)}), id=f"full-{name}"))
        samples.append(pytest.param(M.Reply(id=8, **{name: cls()}), id=f"empty-{name}"))
    for name, cls in PUSH_CLASSES.items():
        body = full(cls)
        samples.append(
            pytest.param(M.Reply(push=M.Push(channel="ch", **{name: body})), id=f"push-{name}")
        )
    samples.append(pytest.param(M.Reply(push=full(M.Push)), id="push-full"))
    samples.append(pytest.param(M.Reply(id=9, error=full(M.Error)), id="error"))
    samples.append(pytest.param(M.Reply(id=9, error=M.Error(code=100)), id="error-code-only"))
    samples.append(pytest.param(M.Reply(), id="ping"))
    samples.append(pytest.param(full(M.Reply), id="reply-everything"))
    return samples


@pytest.mark.parametrize("reply", sample_replies())
def test_reply_protobuf_matches_client_pb2(reply: M.Reply) -> None:
    frame = P.PROTOBUF.encode_reply(reply)
    (body,) = read_delimited(frame)
    assert pb.Reply.FromString(body) == to_pb(reply, pb.Reply())


@pytest.mark.parametrize("reply", sample_replies())
def test_reply_json_matches_rules(reply: M.Reply) -> None:
    frame = P.JSON.encode_reply(reply)
    assert frame.count(b"\n") == 1 and frame.endswith(b"\n")
    (parsed,) = decode_json_frame(frame)
    assert parsed == to_json(reply)


@pytest.mark.parametrize("codec", CODECS)
def test_push_and_bare_push(codec: Any) -> None:
    push = M.Push(channel="news", message=M.Message(data=b'{"a":1}'))
    bare = codec.encode_push_bare(push)
    wrapped = codec.encode_push(push)
    assert wrapped == codec.encode_reply(M.Reply(push=push))
    if codec is P.JSON:
        assert bare == b'{"channel":"news","message":{"data":{"a":1}}}'
        assert wrapped == b'{"push":' + bare + b"}\n"
    else:
        assert pb.Push.FromString(bare) == to_pb(push, pb.Push())
        assert pb.Reply.FromString(read_delimited(wrapped)[0]).push == pb.Push.FromString(bare)
    # The empty Push is the unidirectional ping.
    assert codec.encode_push_bare(M.Push()) == (b"{}" if codec is P.JSON else b"")


def test_ping_constants() -> None:
    assert P.JSON.ping == b"{}\n" == P.JSON.encode_reply(M.Reply())
    assert P.PROTOBUF.ping == b"\x00" == P.PROTOBUF.encode_reply(M.Reply())
    assert P.JSON.binary is False and P.PROTOBUF.binary is True
    assert (P.JSON.name, P.PROTOBUF.name) == ("json", "protobuf")


@pytest.mark.parametrize("codec", CODECS)
def test_codecs_satisfy_the_protocol(codec: Any) -> None:
    assert isinstance(codec, P.Codec)


@pytest.mark.parametrize("codec", CODECS)
def test_frame_is_concatenation_of_encodings(codec: Any) -> None:
    info = ClientInfo(user="u", client="c")
    items = [
        codec.encode_reply(M.Reply(id=1, connect=M.ConnectResult(client="c", ping=25, pong=True))),
        codec.encode_publication("chat", Publication(data=b'{"x":1}', offset=3)),
        codec.encode_join("chat", info),
        codec.ping,
        codec.encode_reply(M.Reply(id=2, unsubscribe=M.UnsubscribeResult())),
        codec.encode_leave("chat", info),
        codec.encode_push(M.Push(channel="chat", unsubscribe=M.Unsubscribe(code=2000, reason="x"))),
    ]
    frame = b"".join(items)
    if codec is P.JSON:
        decoded = decode_json_frame(frame)
        assert [d.get("id") for d in decoded] == [1, None, None, None, 2, None, None]
        assert decoded[2] == {
            "push": {"channel": "chat", "join": {"info": {"user": "u", "client": "c"}}}
        }
        assert decoded[3] == {}
    else:
        decoded = [pb.Reply.FromString(b) for b in read_delimited(frame)]
        assert [d.id for d in decoded] == [1, 0, 0, 0, 2, 0, 0]
        assert decoded[2].push.join.info.user == "u"
        assert decoded[3] == pb.Reply()
        assert decoded[4].HasField("unsubscribe")
        assert decoded[5].push.HasField("leave")


# ---------------------------------------------------------------------------
# Commands: every request with every field set, from independent encoders.

REQUEST_CLASSES = {
    name: _unwrap_optional(typing.get_type_hints(M.Command, vars(M))[name])
    for name in M.REQUEST_FIELDS
}


def sample_commands() -> list[Any]:
    samples = []
    for n, (name, cls) in enumerate(REQUEST_CLASSES.items(), 1):
        samples.append(pytest.param(M.Command(id=n, **{name: full(cls)}), id=f"full-{name}"))
        samples.append(pytest.param(M.Command(id=100 + n, **{name: cls()}), id=f"empty-{name}"))
    samples.append(pytest.param(M.Command(), id="pong"))
    samples.append(pytest.param(M.Command(send=M.SendRequest(data=b"[1]")), id="send-no-id"))
    samples.append(pytest.param(full(M.Command), id="every-request"))
    samples.append(
        pytest.param(M.Command(id=2**32 - 1, presence=M.PresenceRequest("c")), id="max-id")
    )
    return samples


@pytest.mark.parametrize("command", sample_commands())
def test_command_from_protobuf(command: M.Command) -> None:
    frame = delimit(to_pb(command, pb.Command()).SerializeToString())
    assert P.PROTOBUF.decode_commands(frame) == [command]


@pytest.mark.parametrize("command", sample_commands())
def test_command_from_json(command: M.Command) -> None:
    line = dumps_raw(to_json(command, raw=True))
    assert P.JSON.decode_commands(line.encode()) == [command]
    # The raw-JSON fields come back as the exact bytes that were sent.
    assert P.JSON.decode_commands(line.encode() + b"\n") == [command]


@pytest.mark.parametrize("codec", CODECS)
def test_batch_of_mixed_commands(codec: Any) -> None:
    commands = [p.values[0] for p in sample_commands()]
    if codec is P.JSON:
        frame = "\n".join(dumps_raw(to_json(c, raw=True)) for c in commands).encode()
    else:
        frame = b"".join(delimit(to_pb(c, pb.Command()).SerializeToString()) for c in commands)
    assert codec.decode_commands(frame) == commands


def _frame(codec: Any, commands: list[M.Command]) -> bytes:
    if codec is P.JSON:
        return "\n".join(dumps_raw(to_json(c, raw=True)) for c in commands).encode()
    return b"".join(delimit(to_pb(c, pb.Command()).SerializeToString()) for c in commands)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("as_type", [bytes, bytearray, memoryview])
def test_a_frame_over_the_limit_is_refused_before_it_is_decoded(codec: Any, as_type: Any) -> None:
    """A frame of more than ``limit`` commands is refused as such, without decoding
    what lies past the limit (a 64 KiB Protobuf frame holds 65,536 empty commands)."""
    commands = [M.Command(id=i, rpc=M.RPCRequest(method="m")) for i in range(1, 11)]
    frame = _frame(codec, commands)
    assert codec.decode_commands(as_type(frame), 10) == commands
    assert (
        codec.decode_commands(as_type(frame + b"\n" if codec is P.JSON else frame), 10) == commands
    )
    assert codec.decode_commands(as_type(frame), 0) == commands  # 0: no limit
    # Past the limit the rest is not decoded: garbage there is not what is reported.
    garbage = b"\n{not json" if codec is P.JSON else b"\x05\xff\xff"
    with pytest.raises(P.ProtocolDecodeError, match="too many commands: more than 9 in the frame"):
        codec.decode_commands(as_type(frame + garbage), 9)
    with pytest.raises(P.ProtocolDecodeError, match="too many commands: more than 10"):
        codec.decode_commands(as_type(frame + garbage), 10)
    with pytest.raises(P.ProtocolDecodeError, match="command 11"):
        codec.decode_commands(as_type(frame + garbage), 11)


def test_a_json_str_frame_over_the_limit_is_refused() -> None:
    text = "\n".join(["{}"] * 300)
    with pytest.raises(P.ProtocolDecodeError, match="more than 256"):
        P.JSON.decode_commands(text, 256)  # type: ignore[arg-type]
    assert len(P.JSON.decode_commands(text, 300)) == 300  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# Fast paths: encode_publication / encode_join / encode_leave vs encode_push.

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
raw_json = json_values.map(
    lambda v: json.dumps(v, indent=1 if isinstance(v, (list, dict)) else None).encode()
)
client_infos = st.builds(
    ClientInfo,
    user=st.text(max_size=8),
    client=st.text(max_size=8),
    conn_info=st.none() | st.just(b"") | raw_json,
    chan_info=st.none() | st.just(b"") | raw_json,
)
publications = st.builds(
    Publication,
    data=st.just(b"") | raw_json,
    offset=st.integers(0, 2**64 - 1),
    info=st.none() | client_infos,
    tags=st.none() | st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3),
    time=st.integers(-(2**63), 2**63 - 1),
    channel=st.text(max_size=10),
    delta=st.booleans(),
)
channels = st.text(max_size=20)


@settings(max_examples=300, deadline=None)
@given(channel=channels, pub=publications)
def test_encode_publication_equals_generic_json(channel: str, pub: Publication) -> None:
    fast = P.JSON.encode_publication(channel, pub)
    assert fast == P.JSON.encode_push(M.Push(channel=channel, pub=pub))
    (line,) = decode_json_frame(fast)
    assert line == {"push": to_json(M.Push(channel=channel, pub=pub))}


@settings(max_examples=300, deadline=None)
@given(channel=channels, pub=publications)
def test_encode_publication_equals_generic_protobuf(channel: str, pub: Publication) -> None:
    fast = P.PROTOBUF.encode_publication(channel, pub)
    generic = P.PROTOBUF.encode_push(M.Push(channel=channel, pub=pub))
    if not pub.tags or len(pub.tags) < 2:
        # Map entry order is the runtime's business; with at most one entry
        # the bytes are fully determined.
        assert fast == generic
    (body,) = read_delimited(fast)
    assert pb.Reply.FromString(body) == to_pb(
        M.Reply(push=M.Push(channel=channel, pub=pub)), pb.Reply()
    )


@settings(max_examples=200, deadline=None)
@given(channel=channels, info=client_infos)
@pytest.mark.parametrize("codec", CODECS)
def test_encode_join_leave_equal_generic(codec: Any, channel: str, info: ClientInfo) -> None:
    assert codec.encode_join(channel, info) == codec.encode_push(
        M.Push(channel=channel, join=M.Join(info))
    )
    assert codec.encode_leave(channel, info) == codec.encode_push(
        M.Push(channel=channel, leave=M.Leave(info))
    )


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("size", [0, 1, 127, 128, 16383, 16384, 2_100_000])
def test_encode_publication_length_boundaries(codec: Any, size: int) -> None:
    data = b'"' + b"x" * size + b'"'
    pub = Publication(
        data=data, offset=2**35, info=ClientInfo("u" * size if size < 200 else "u", "c")
    )
    fast = codec.encode_publication("c" * (size % 300), pub)
    assert fast == codec.encode_push(M.Push(channel="c" * (size % 300), pub=pub))


# ---------------------------------------------------------------------------
# Encoding errors common to both codecs.


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(M.Reply(id=-1), id="negative-id"),
        pytest.param(M.Reply(id=2**32), id="id-too-big"),
        pytest.param(M.Reply(id=1, error=M.Error(code=-5)), id="negative-code"),
        pytest.param(M.Reply(id=1, history=M.HistoryResult(offset=-1)), id="negative-offset"),
        pytest.param(M.Reply(id=1, history=M.HistoryResult(offset=2**64)), id="offset-too-big"),
        pytest.param(M.Reply(id=1, connect=M.ConnectResult(time=2**63)), id="time-too-big"),
        pytest.param(M.Reply(id=1, connect=M.ConnectResult(ttl=1.5)), id="float-ttl"),  # type: ignore[arg-type]
        pytest.param(M.Reply(id=1, connect=M.ConnectResult(client=5)), id="int-client"),  # type: ignore[arg-type]
        pytest.param(M.Reply(id=1, rpc=M.RPCResult(data="text")), id="str-data"),  # type: ignore[arg-type]
        pytest.param(M.Reply(id=1, push=M.Push(pub="x")), id="wrong-body"),  # type: ignore[arg-type]
    ],
)
def test_encode_rejects_bad_values(codec: Any, reply: M.Reply) -> None:
    with pytest.raises(P.ProtocolEncodeError):
        codec.encode_reply(reply)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    "pub",
    [
        Publication(data=b"{}", offset=-1),
        Publication(data=b"{}", offset=2**64),
        Publication(data=b"{}", time=2**63),
        Publication(data=b"{}", offset=1.5),  # type: ignore[arg-type]
        Publication(data="{}"),  # type: ignore[arg-type]
        Publication(data=b"{}", channel=7),  # type: ignore[arg-type]
        Publication(data=b"{}", info=ClientInfo(user=5, client="c")),  # type: ignore[arg-type]
    ],
)
def test_fast_path_rejects_bad_values(codec: Any, pub: Publication) -> None:
    with pytest.raises(P.ProtocolEncodeError):
        codec.encode_publication("ch", pub)
    with pytest.raises(P.ProtocolEncodeError):
        codec.encode_push(M.Push(channel="ch", pub=pub))


@pytest.mark.parametrize("codec", CODECS)
def test_fast_path_rejects_bad_channel(codec: Any) -> None:
    with pytest.raises(P.ProtocolEncodeError):
        codec.encode_publication(b"ch", Publication(data=b"1"))  # type: ignore[arg-type]
    with pytest.raises(P.ProtocolEncodeError):
        codec.encode_join(3, ClientInfo("u", "c"))  # type: ignore[arg-type]


def test_int_enums_are_integers() -> None:
    import enum

    class Code(enum.IntEnum):
        SHUTDOWN = 3001

    push = M.Push(disconnect=M.Disconnect(code=Code.SHUTDOWN, reason="shutdown"))
    assert P.JSON.encode_push_bare(push) == b'{"disconnect":{"code":3001,"reason":"shutdown"}}'
    assert pb.Push.FromString(P.PROTOBUF.encode_push_bare(push)).disconnect.code == 3001


# ---------------------------------------------------------------------------
# Codec selection and the Command helpers.


def test_get_codec() -> None:
    assert P.get_codec("json") is P.JSON
    assert P.get_codec("protobuf") is P.PROTOBUF
    for bad in ("JSON", "proto", "", None):
        with pytest.raises(ValueError, match="unknown codec"):
            P.get_codec(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("subprotocols", "query", "expected"),
    [
        ([], {}, "json"),
        (["centrifuge-json"], {}, "json"),
        (["centrifuge-protobuf"], {}, "protobuf"),
        (["centrifuge-json", "centrifuge-protobuf"], {}, "protobuf"),
        (["Centrifuge-Protobuf"], {}, "json"),
        ([], {"format": "protobuf"}, "protobuf"),
        ([], {"cf_protocol": "protobuf"}, "protobuf"),
        ([], {"cf_protocol": "json", "format": "protobuf"}, "protobuf"),
        (["centrifuge-protobuf"], {"format": "json"}, "protobuf"),
        ([], {"format": "json"}, "json"),
        ([], {"cf_protocol_version": "v2"}, "json"),
        ([], {"format": "PROTOBUF"}, "json"),
        ([], {"format": ["json", "protobuf"]}, "protobuf"),
        ([], {"cf_protocol": ["json"]}, "json"),
        (("centrifuge-protobuf",), {}, "protobuf"),
    ],
)
def test_select_codec(subprotocols: Any, query: Any, expected: str) -> None:
    assert P.select_codec(subprotocols, query).name == expected


def test_command_method() -> None:
    assert M.Command().method is None
    assert M.Command().methods == ()
    assert M.Command().is_empty
    assert M.Command().request is None
    assert not M.Command(id=1).is_empty
    sub = M.SubscribeRequest(channel="a")
    cmd = M.Command(id=1, subscribe=sub)
    assert (cmd.method, cmd.methods, cmd.request) == ("subscribe", ("subscribe",), sub)
    assert not cmd.is_empty
    both = M.Command(id=2, sub_refresh=M.SubRefreshRequest(), connect=M.ConnectRequest())
    assert both.method == "connect"
    assert both.methods == ("connect", "sub_refresh")
    assert both.request == M.ConnectRequest()
    # Empty requests are still present.
    assert M.Command(ping=M.PingRequest()).method == "ping"
    every = full(M.Command)
    assert every.methods == M.REQUEST_FIELDS


def test_exports() -> None:
    for name in P.__all__:
        assert hasattr(P, name), name
    for name in M.__all__:
        assert name in P.__all__, name
    assert P.PresenceStatsResult is PresenceStats
    assert P.StreamPosition is StreamPosition


def test_no_asyncio_import() -> None:
    import subprocess
    import sys

    code = "import sys, rtcore.protocol; print('asyncio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
