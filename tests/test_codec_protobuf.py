"""The Protobuf codec: PROTOCOL.md §2.5b golden bytes, the generated module, framing, bad input."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FieldDescriptor
from test_codec_common import delimit, full, read_delimited, sample_replies, to_pb

from rtcore import protocol as P
from rtcore.protocol import client_pb2 as pb, messages as M
from rtcore.protocol.types import ClientInfo, Publication, StreamPosition


B = P.PROTOBUF
PROTO_DIR = Path(P.__file__).parent


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


# ---------------------------------------------------------------------------
# PROTOCOL.md §2.5b


class TestGoldenBytes:
    def test_connect_command(self) -> None:
        assert B.decode_commands(h("04 08 01 22 00")) == [
            M.Command(id=1, connect=M.ConnectRequest())
        ]

    def test_connect_reply(self) -> None:
        reply = M.Reply(id=1, connect=M.ConnectResult(client="ab", ping=25, pong=True))
        assert B.encode_reply(reply) == h("0c 08 01 2a 08 0a 02 61 62 38 19 40 01")

    def test_ping_pong(self) -> None:
        assert B.ping == h("00")
        assert B.encode_reply(M.Reply()) == h("00")
        assert B.decode_commands(h("00")) == [M.Command()]

    def test_empty_result_is_present(self) -> None:
        assert B.encode_reply(M.Reply(id=3, unsubscribe=M.UnsubscribeResult())) == h(
            "04 08 03 3a 00"
        )
        assert B.encode_reply(M.Reply(id=4, publish=M.PublishResult())) == h("04 08 04 42 00")

    def test_publication_push(self) -> None:
        pub = Publication(data=b'{"t":"yo"}', offset=7, info=ClientInfo("42", "ab"))
        # Reply{push(4){channel(2) "c", pub(4){data(4), info(5){user, client}, offset(6)}}}
        expected = h(
            "1f 22 1d 12 01 63 22 18 22 0a 7b 22 74 22 3a 22 79 6f 22 7d"
            " 2a 08 0a 02 34 32 12 02 61 62 30 07"
        )
        assert B.encode_publication("c", pub) == expected
        assert B.encode_push(M.Push(channel="c", pub=pub)) == expected

    def test_negative_time_and_zigzag_free_fields(self) -> None:
        pub = Publication(data=b"x", time=-1)
        body = read_delimited(B.encode_publication("", pub))[0]
        # time (9) is int64: -1 is ten bytes of two's complement.
        assert body == h("22 10 22 0e 22 01 78 48 ff ff ff ff ff ff ff ff ff 01")
        assert pb.Reply.FromString(body).push.pub.time == -1


# ---------------------------------------------------------------------------
# The generated module.


class TestGeneratedModule:
    def test_generated_by_pinned_protoc(self) -> None:
        src = (PROTO_DIR / "client_pb2.py").read_text()
        assert "# Protobuf Python Version: 5.26.1" in src
        assert "_POOL = _descriptor_pool.DescriptorPool()" in src
        assert (PROTO_DIR / "client_pb2.pyi").exists()

    def test_private_pool(self) -> None:
        assert pb.DESCRIPTOR.pool is not descriptor_pool.Default()
        with pytest.raises(KeyError):
            descriptor_pool.Default().FindMessageTypeByName(
                "centrifugal.centrifuge.protocol.TrackBatch"
            )

    def test_imports_with_installed_runtime(self) -> None:
        import google.protobuf

        major = int(google.protobuf.__version__.split(".")[0])
        assert major >= 5
        code = (
            "import rtcore.protocol.client_pb2 as m; print(m.Reply(id=1).SerializeToString().hex())"
        )
        for impl in ("upb", "python"):
            env = dict(os.environ, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=impl)
            out = subprocess.run(
                [sys.executable, "-W", "error", "-c", code],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            assert out.stdout.strip() == "0801", impl

    def test_coexists_with_the_python_sdk_proto(self) -> None:
        # Both register "client.proto" under the same package; ours uses a
        # private pool, so either import order works.
        try:
            import centrifuge.protocol.client_pb2  # noqa: F401
        except ImportError:
            if _truthy("CI"):
                pytest.fail("centrifuge-python must be installed in CI")
            pytest.skip("centrifuge-python is not installed")
        ours = "import rtcore.protocol.client_pb2 as ours\n"
        theirs = "import centrifuge.protocol.client_pb2 as theirs\n"
        check = "print(theirs.Command.FromString(ours.Command(id=7).SerializeToString()).id)\n"
        for code in (ours + theirs + check, theirs + ours + check):
            out = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            )
            assert out.stdout.strip() == "7"

    def test_descriptor_matches_proto_source(self) -> None:
        """client_pb2.py was regenerated after the last edit of client.proto."""
        source = (PROTO_DIR / "client.proto").read_text()
        source = re.sub(r"//[^\n]*", "", source)
        scalar = {
            "string": FieldDescriptor.TYPE_STRING,
            "bytes": FieldDescriptor.TYPE_BYTES,
            "bool": FieldDescriptor.TYPE_BOOL,
            "uint32": FieldDescriptor.TYPE_UINT32,
            "int32": FieldDescriptor.TYPE_INT32,
            "uint64": FieldDescriptor.TYPE_UINT64,
            "int64": FieldDescriptor.TYPE_INT64,
            "sint64": FieldDescriptor.TYPE_SINT64,
        }
        messages = dict(re.findall(r"message (\w+) \{([^{}]*)\}", source))
        assert set(messages) == set(pb.DESCRIPTOR.message_types_by_name)
        field_re = re.compile(r"^\s*(repeated\s+)?(map<\w+,\s*\w+>|\w+)\s+(\w+)\s*=\s*(\d+);", re.M)
        for name, body in messages.items():
            desc = pb.DESCRIPTOR.message_types_by_name[name]
            fields = field_re.findall(body)
            assert len(fields) == len(desc.fields), name
            for repeated, ftype, fname, number in fields:
                fd = desc.fields_by_name[fname]
                assert fd.number == int(number), (name, fname)
                if ftype.startswith("map<"):
                    assert fd.message_type.GetOptions().map_entry
                elif ftype in scalar:
                    assert fd.type == scalar[ftype], (name, fname)
                    assert _repeated(fd) == bool(repeated)
                else:
                    assert fd.message_type.name == ftype, (name, fname)
                    assert _repeated(fd) == bool(repeated)


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "yes", "true", "on"}


def _repeated(fd: Any) -> bool:
    # FieldDescriptor.label is gone from newer runtimes; is_repeated is newer than 5.26.
    if hasattr(fd, "is_repeated"):
        return bool(fd.is_repeated)
    return bool(fd.label == FieldDescriptor.LABEL_REPEATED)


# ---------------------------------------------------------------------------
# Decoding: framing, unknown fields, malformed input.


class TestDecoding:
    def test_batch_and_pongs(self) -> None:
        frame = (
            h("00")
            + delimit(
                pb.Command(id=5, presence=pb.PresenceRequest(channel="a")).SerializeToString()
            )
            + h("00")
        )
        assert B.decode_commands(frame) == [
            M.Command(),
            M.Command(id=5, presence=M.PresenceRequest("a")),
            M.Command(),
        ]

    def test_input_types(self) -> None:
        frame = h("04 08 01 22 00")
        expected = [M.Command(id=1, connect=M.ConnectRequest())]
        assert B.decode_commands(bytearray(frame)) == expected
        assert B.decode_commands(memoryview(frame)) == expected
        with pytest.raises(TypeError):
            B.decode_commands("0408012200")  # type: ignore[arg-type]

    def test_unknown_fields_are_ignored(self) -> None:
        sub = (
            pb.SubscribeRequest(channel="c").SerializeToString()
            + h("a0 06 01")
            + h("aa 06 02 6f 6b")
        )
        cmd = h("08 02") + h("2a") + bytes([len(sub)]) + sub + h("98 06 01") + h("f2 07 00")
        assert B.decode_commands(delimit(cmd)) == [
            M.Command(id=2, subscribe=M.SubscribeRequest(channel="c"))
        ]

    def test_non_canonical_encodings_are_accepted(self) -> None:
        # id written as an explicit zero, and as an over-long varint.
        assert B.decode_commands(delimit(h("08 00"))) == [M.Command()]
        assert B.decode_commands(delimit(h("08 81 80 80 00 22 00"))) == [
            M.Command(id=1, connect=M.ConnectRequest())
        ]
        # A repeated scalar field occurrence: last one wins.
        assert B.decode_commands(delimit(h("08 01 08 02"))) == [M.Command(id=2)]

    def test_every_request_with_every_field(self) -> None:
        commands = [
            full(M.Command),
            M.Command(id=9, history=M.HistoryRequest(since=StreamPosition(0, ""))),
        ]
        frame = b"".join(delimit(to_pb(c, pb.Command()).SerializeToString()) for c in commands)
        assert B.decode_commands(frame) == commands

    def test_large_batch(self) -> None:
        msgs = [
            delimit(
                pb.Command(
                    id=i,
                    subscribe=pb.SubscribeRequest(
                        channel=f"chan:{i}", recover=True, offset=i * 300
                    ),
                ).SerializeToString()
            )
            for i in range(1, 1001)
        ]
        msgs[499] = delimit(
            pb.Command(
                id=500, publish=pb.PublishRequest(channel="x", data=bytes(300))
            ).SerializeToString()
        )
        frame = b"".join(msgs)
        cmds = B.decode_commands(frame)
        assert [c.id for c in cmds] == list(range(1, 1001))
        assert cmds[999].subscribe == M.SubscribeRequest(
            channel="chan:1000", recover=True, offset=300_000
        )
        assert cmds[499].publish == M.PublishRequest(channel="x", data=bytes(300))
        for cut in (1, 5, len(msgs[-1]) - 1):
            with pytest.raises(P.ProtocolDecodeError, match=r"^command 1000: truncated"):
                B.decode_commands(frame[:-cut])
        bad = list(msgs)
        bad[700] = delimit(h("0a 01 41"))
        with pytest.raises(
            P.ProtocolDecodeError,
            match=r"^command 701: field Command\.id \(1\) has the wrong wire type 2$",
        ):
            B.decode_commands(b"".join(bad))

    @pytest.mark.parametrize(
        ("frame", "message"),
        [
            (b"", r"^frame holds no command$"),
            (h("80"), r"^command 1: truncated length prefix$"),
            (h("00 80 80"), r"^command 2: truncated length prefix$"),
            (
                h("ff ff ff ff ff ff ff ff ff ff 01"),
                r"^command 1: length prefix longer than 10 bytes$",
            ),
            (h("ff ff ff ff ff ff ff ff ff 7f"), r"^command 1: length prefix overflows 64 bits$"),
            (
                h("05 08 01"),
                r"^command 1: truncated message: length prefix says 5 bytes, 2 left in the frame$",
            ),
            (h("ff ff ff ff 0f 08 01"), r"^command 1: truncated message"),
            (h("01 08"), r"^command 1: invalid Protobuf message"),
            (h("02 22 05"), r"^command 1: invalid Protobuf message"),
            (h("01 07"), r"^command 1: invalid Protobuf message"),
            (h("02 0b 0c"), r"^command 1: field Command\.id \(1\) has the wrong wire type 3$"),
            (h("01 0c"), r"^command 1: invalid Protobuf message"),
            (delimit(h("2a 03 0a 01 ff")), r"^command 1: invalid Protobuf message.*UTF-8"),
            (
                delimit(h("0a 01 41")),
                r"^command 1: field Command\.id \(1\) has the wrong wire type 2$",
            ),
            (
                delimit(h("08 01 20 05")),
                r"^command 1: field Command\.connect \(4\) has the wrong wire type 0$",
            ),
            (
                delimit(h("08 01 2a 02 08 05")),
                r"^command 1: field SubscribeRequest\.channel \(1\) has the wrong wire type 0$",
            ),
            (
                delimit(h("08 01 22 0a 1a 08 0a 01 63 12 03 3a 01 78")),
                r"^command 1: field SubscribeRequest\.offset \(7\) has the wrong wire type 2$",
            ),
            (
                delimit(h("08 01 2a 04 6a 02 28 01")),
                r"^command 1: field FilterNode\.vals \(5\) has the wrong wire type 0$",
            ),
            (
                h("00 00") + delimit(h("52 02 08 01")),
                r"^command 3: field HistoryRequest\.channel \(1\) has the wrong wire type 0$",
            ),
        ],
    )
    def test_malformed_frames(self, frame: bytes, message: str) -> None:
        with pytest.raises(P.ProtocolDecodeError, match=message):
            B.decode_commands(frame)

    def test_wire_type_check_without_upb(self) -> None:
        code = (
            "from rtcore.protocol import PROTOBUF, ProtocolDecodeError\n"
            "from rtcore.protocol import protobuf\n"
            "assert not protobuf._SIZE_CHECK\n"
            "assert PROTOBUF.decode_commands(bytes.fromhex('04080122000408022a00'))[1].id == 2\n"
            "try:\n"
            "    PROTOBUF.decode_commands(bytes.fromhex('06 08 01 2a 02 08 05'))\n"
            "except ProtocolDecodeError as e:\n"
            "    print(e)\n"
        )
        env = dict(os.environ, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python")
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        assert (
            out.stdout.strip()
            == "command 1: field SubscribeRequest.channel (1) has the wrong wire type 0"
        )


class TestOtherBodies:
    def test_connect_request(self) -> None:
        assert B.decode_connect_request(b"") == M.ConnectRequest()
        req = full(M.ConnectRequest)
        assert B.decode_connect_request(to_pb(req, pb.ConnectRequest()).SerializeToString()) == req
        with pytest.raises(
            P.ProtocolDecodeError, match=r"^connect request: invalid Protobuf message"
        ):
            B.decode_connect_request(h("0a 05 61"))
        with pytest.raises(
            P.ProtocolDecodeError, match=r"^connect request: field ConnectRequest\.token"
        ):
            B.decode_connect_request(h("08 01"))

    def test_emulation_request(self) -> None:
        frame = h("04 08 01 22 00 00")
        body = pb.EmulationRequest(node="n", session="s", data=frame).SerializeToString()
        req = B.decode_emulation_request(body)
        assert req == M.EmulationRequest(node="n", session="s", data=frame)
        assert B.decode_commands(req.data) == [
            M.Command(id=1, connect=M.ConnectRequest()),
            M.Command(),
        ]
        with pytest.raises(
            P.ProtocolDecodeError, match=r"^emulation request: invalid Protobuf message"
        ):
            B.decode_emulation_request(h("1a 09 00"))
        with pytest.raises(
            P.ProtocolDecodeError, match=r"^emulation request: field EmulationRequest\.node"
        ):
            B.decode_emulation_request(h("08 01"))


# ---------------------------------------------------------------------------
# Encoding.


class TestEncoding:
    def test_bare_push_for_unidirectional_grpc(self) -> None:
        push = M.Push(connect=M.Connect(client="c", version="1", ping=25, session="s"))
        assert pb.Push.FromString(B.encode_push_bare(push)) == pb.Push(
            connect=pb.Connect(client="c", version="1", ping=25, session="s")
        )

    def test_binary_payloads(self) -> None:
        pub = Publication(data=bytes(range(256)), info=ClientInfo("u", "c", conn_info=b"\x00\xff"))
        body = read_delimited(B.encode_publication("c", pub))[0]
        decoded = pb.Reply.FromString(body).push.pub
        assert decoded.data == bytes(range(256))
        assert decoded.info.conn_info == b"\x00\xff"

    @pytest.mark.parametrize("reply", sample_replies())
    def test_python_sdk_proto_reads_our_replies(self, reply: M.Reply, sdk_pb: Any) -> None:
        # An independently generated (older) client.proto: every field it
        # knows must read back the same; newer fields are unknown to it.
        (body,) = read_delimited(B.encode_reply(reply))
        theirs = sdk_pb.Reply.FromString(body)
        ours = pb.Reply.FromString(body)
        assert theirs.id == ours.id
        assert _common_fields(theirs, ours)

    def test_large_lengths(self) -> None:
        data = bytes(300_000)
        frame = B.encode_reply(M.Reply(id=1, rpc=M.RPCResult(data=data)))
        (body,) = read_delimited(frame)
        assert len(frame) - len(body) == 3
        assert pb.Reply.FromString(body).rpc.data == data


def _common_fields(theirs: Any, ours: Any) -> bool:
    """Every field set in ``theirs`` has the same name and value in ``ours``."""
    for fd, value in theirs.ListFields():
        other = getattr(ours, fd.name)
        if fd.message_type is None:
            if (list(value) if _repeated(fd) else value) != (
                list(other) if _repeated(fd) else other
            ):
                return False
        elif fd.message_type.GetOptions().map_entry:
            if set(value) != set(other):
                return False
            if fd.message_type.fields_by_name["value"].message_type is None:
                if dict(value) != dict(other):
                    return False
            elif not all(_common_fields(value[k], other[k]) for k in value):
                return False
        elif _repeated(fd):
            if len(value) != len(other) or not all(map(_common_fields, value, other)):
                return False
        elif not _common_fields(value, other):
            return False
    return True


# ---------------------------------------------------------------------------
# The official Python SDK's Protobuf codec as an independent peer.


@pytest.fixture(scope="module")
def sdk() -> Any:
    try:
        from centrifuge import codecs
    except ImportError:
        if _truthy("CI"):
            pytest.fail("centrifuge-python must be installed in CI (pip install centrifuge-python)")
        pytest.skip("centrifuge-python is not installed")
    return codecs._ProtobufCodec


@pytest.fixture(scope="module")
def sdk_pb() -> Any:
    try:
        from centrifuge.protocol import client_pb2
    except ImportError:
        if _truthy("CI"):
            pytest.fail("centrifuge-python must be installed in CI (pip install centrifuge-python)")
        pytest.skip("centrifuge-python is not installed")
    return client_pb2


class TestPythonSdkProtobuf:
    def test_sdk_commands_decode(self, sdk: Any) -> None:
        b64 = base64.b64encode
        commands = [
            {
                "id": 1,
                "connect": {
                    "token": "t",
                    "data": b64(b"\x00\x01"),
                    "name": "python",
                    "subs": {"$p": {"recover": True, "offset": 3, "epoch": "e"}},
                },
            },
            {
                "id": 2,
                "subscribe": {
                    "channel": "c",
                    "recover": True,
                    "offset": 2**40,
                    "epoch": "e",
                    "flag": 3,
                    "data": b64(b"{}"),
                },
            },
            {"id": 3, "publish": {"channel": "c", "data": b64(b"\xff binary")}},
            {"id": 4, "rpc": {"method": "m", "data": b64(b"x")}},
            {
                "id": 5,
                "history": {
                    "channel": "c",
                    "limit": -1,
                    "since": {"offset": 1, "epoch": "e"},
                    "reverse": True,
                },
            },
            {"id": 6, "presence_stats": {"channel": "c"}},
            {"id": 7, "refresh": {"token": "r"}},
            {"send": {"data": b64(b"s")}},
            {},
        ]
        assert B.decode_commands(sdk.encode_commands(commands)) == [
            M.Command(
                id=1,
                connect=M.ConnectRequest(
                    token="t",
                    data=b"\x00\x01",
                    name="python",
                    subs={"$p": M.SubscribeRequest(recover=True, offset=3, epoch="e")},
                ),
            ),
            M.Command(
                id=2,
                subscribe=M.SubscribeRequest(
                    channel="c", recover=True, offset=2**40, epoch="e", flag=3, data=b"{}"
                ),
            ),
            M.Command(id=3, publish=M.PublishRequest(channel="c", data=b"\xff binary")),
            M.Command(id=4, rpc=M.RPCRequest(method="m", data=b"x")),
            M.Command(
                id=5,
                history=M.HistoryRequest(
                    channel="c", limit=-1, since=StreamPosition(1, "e"), reverse=True
                ),
            ),
            M.Command(id=6, presence_stats=M.PresenceStatsRequest("c")),
            M.Command(id=7, refresh=M.RefreshRequest("r")),
            M.Command(send=M.SendRequest(data=b"s")),
            M.Command(),
        ]

    def test_sdk_decodes_our_replies(self, sdk: Any) -> None:
        info = ClientInfo(user="42", client="c1", chan_info=b"\x01")
        frame = b"".join(
            [
                B.encode_reply(
                    M.Reply(
                        id=1,
                        connect=M.ConnectResult(
                            client="c1",
                            version="1",
                            ping=25,
                            pong=True,
                            subs={"$p": M.SubscribeResult(offset=2)},
                        ),
                    )
                ),
                B.encode_reply(
                    M.Reply(
                        id=2,
                        subscribe=M.SubscribeResult(
                            recoverable=True,
                            epoch="e",
                            offset=9,
                            positioned=True,
                            publications=[Publication(data=b"\x00", offset=9)],
                        ),
                    )
                ),
                B.encode_publication(
                    "chat",
                    Publication(data=b"\xfe", offset=10, info=info, tags={"k": "v"}, time=-5),
                ),
                B.encode_join("chat", info),
                B.encode_leave("chat", info),
                B.ping,
                B.encode_reply(
                    M.Reply(id=3, error=M.Error(code=109, message="token expired", temporary=True))
                ),
                B.encode_reply(M.Reply(id=4, unsubscribe=M.UnsubscribeResult())),
                B.encode_push(
                    M.Push(
                        channel="chat",
                        unsubscribe=M.Unsubscribe(code=2500, reason="insufficient state"),
                    )
                ),
            ]
        )
        info_dict = {"user": "42", "client": "c1", "chan_info": "AQ=="}
        assert sdk.decode_replies(frame) == [
            {
                "id": 1,
                "connect": {
                    "client": "c1",
                    "version": "1",
                    "subs": {"$p": {"offset": "2"}},
                    "ping": 25,
                    "pong": True,
                },
            },
            {
                "id": 2,
                "subscribe": {
                    "recoverable": True,
                    "epoch": "e",
                    "publications": [{"data": "AA==", "offset": "9"}],
                    "offset": "9",
                    "positioned": True,
                },
            },
            {
                "push": {
                    "channel": "chat",
                    "pub": {
                        "data": "/g==",
                        "info": info_dict,
                        "offset": "10",
                        "tags": {"k": "v"},
                        "time": "-5",
                    },
                }
            },
            {"push": {"channel": "chat", "join": {"info": info_dict}}},
            {"push": {"channel": "chat", "leave": {"info": info_dict}}},
            {},
            {"id": 3, "error": {"code": 109, "message": "token expired", "temporary": True}},
            {"id": 4, "unsubscribe": {}},
            {
                "push": {
                    "channel": "chat",
                    "unsubscribe": {"code": 2500, "reason": "insufficient state"},
                }
            },
        ]
