"""The JSON codec: PROTOCOL.md §2.5 golden exchange, §2.0 rules, framing, bad input."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from typing import Any

import pytest
from test_codec_common import full, sample_replies

from rtcore import protocol as P
from rtcore.protocol import messages as M
from rtcore.protocol.types import ClientInfo, PresenceStats, Publication, StreamPosition


J = P.JSON


def decode1(line: bytes | str) -> M.Command:
    (cmd,) = J.decode_commands(line)
    return cmd


def ordered_keys(data: bytes) -> list[Any]:
    """json.loads keeping key order, as nested lists of (key, value)."""
    return json.loads(data, object_pairs_hook=lambda pairs: pairs)  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------
# PROTOCOL.md §2.5: the worked JSON exchange, both directions.


class TestGoldenExchange:
    def test_client_first_frame(self) -> None:
        frame = (
            b'{"id":1,"connect":{"token":"<JWT>","name":"js"}}\n'
            b'{"id":2,"subscribe":{"channel":"chat:1","recover":true,"offset":5,'
            b'"epoch":"AbCdEfGh","flag":1}}'
        )
        assert J.decode_commands(frame) == [
            M.Command(id=1, connect=M.ConnectRequest(token="<JWT>", name="js")),
            M.Command(
                id=2,
                subscribe=M.SubscribeRequest(
                    channel="chat:1", recover=True, offset=5, epoch="AbCdEfGh", flag=1
                ),
            ),
        ]

    def test_server_replies_frame(self) -> None:
        connect = M.Reply(
            id=1, connect=M.ConnectResult(client="3f1c", version="6.9.1", ping=25, pong=True)
        )
        subscribe = M.Reply(
            id=2,
            subscribe=M.SubscribeResult(
                recoverable=True,
                epoch="AbCdEfGh",
                publications=[Publication(data=b'{"t":"hi"}', offset=6)],
                recovered=True,
                offset=5,
                positioned=True,
                was_recovering=True,
            ),
        )
        frame = J.encode_reply(connect) + J.encode_reply(subscribe)
        assert frame == (
            b'{"id":1,"connect":{"client":"3f1c","version":"6.9.1","ping":25,"pong":true}}\n'
            b'{"id":2,"subscribe":{"recoverable":true,"epoch":"AbCdEfGh","publications":'
            b'[{"data":{"t":"hi"},"offset":6}],"recovered":true,"offset":5,"positioned":true,'
            b'"was_recovering":true}}\n'
        )

    def test_publication_push(self) -> None:
        pub = Publication(data=b'{"t":"yo"}', offset=7, info=ClientInfo(user="42", client="3f1c…"))
        out = J.encode_publication("chat:1", pub)
        doc = (
            '{"push":{"channel":"chat:1","pub":{"data":{"t":"yo"},"offset":7,'
            '"info":{"user":"42","client":"3f1c…"}}}}'
        )
        assert json.loads(out) == json.loads(doc)
        # Field-number order (info before offset) and ASCII-escaped strings.
        assert out == (
            b'{"push":{"channel":"chat:1","pub":{"data":{"t":"yo"},"info":{"user":"42",'
            b'"client":"3f1c\\u2026"},"offset":7}}}\n'
        )

    def test_ping_pong(self) -> None:
        assert J.ping == b"{}\n"
        assert decode1(b"{}") == M.Command()
        assert decode1(b"{}").is_empty

    def test_publish_and_error(self) -> None:
        cmd = decode1(b'{"id":3,"publish":{"channel":"chat:1","data":{"t":"x"}}}')
        assert cmd == M.Command(id=3, publish=M.PublishRequest(channel="chat:1", data=b'{"t":"x"}'))
        reply = M.Reply(id=3, error=M.Error(code=103, message="permission denied"))
        assert (
            J.encode_reply(reply)
            == b'{"id":3,"error":{"code":103,"message":"permission denied"}}\n'
        )


# ---------------------------------------------------------------------------
# §2.0 rules: omitted zeros, always-present fields, empty results, order.


class TestEncodingRules:
    @pytest.mark.parametrize(
        ("reply", "expected"),
        [
            (M.Reply(id=3, unsubscribe=M.UnsubscribeResult()), b'{"id":3,"unsubscribe":{}}'),
            (M.Reply(id=4, publish=M.PublishResult()), b'{"id":4,"publish":{}}'),
            (M.Reply(id=5, ping=M.PingResult()), b'{"id":5,"ping":{}}'),
            (M.Reply(id=6, presence=M.PresenceResult()), b'{"id":6,"presence":{"presence":{}}}'),
            (
                M.Reply(id=7, presence_stats=PresenceStats()),
                b'{"id":7,"presence_stats":{"num_clients":0,"num_users":0}}',
            ),
            (
                M.Reply(id=8, history=M.HistoryResult()),
                b'{"id":8,"history":{"publications":[],"epoch":"","offset":0}}',
            ),
            (M.Reply(id=9, subscribe=M.SubscribeResult()), b'{"id":9,"subscribe":{}}'),
            (M.Reply(id=10, connect=M.ConnectResult()), b'{"id":10,"connect":{}}'),
            (M.Reply(id=11, rpc=M.RPCResult()), b'{"id":11,"rpc":{}}'),
            (M.Reply(id=12, refresh=M.RefreshResult()), b'{"id":12,"refresh":{}}'),
            (M.Reply(id=13, sub_refresh=M.SubRefreshResult()), b'{"id":13,"sub_refresh":{}}'),
            (M.Reply(id=14, error=M.Error()), b'{"id":14,"error":{}}'),
            (
                M.Reply(
                    id=15,
                    presence=M.PresenceResult(presence={"c1": ClientInfo(user="", client="c1")}),
                ),
                b'{"id":15,"presence":{"presence":{"c1":{"user":"","client":"c1"}}}}',
            ),
            (
                M.Reply(push=M.Push(channel="c", join=M.Join(ClientInfo(user="", client="")))),
                b'{"push":{"channel":"c","join":{"info":{"user":"","client":""}}}}',
            ),
            (
                M.Reply(push=M.Push(channel="c", pub=Publication(data=b""))),
                b'{"push":{"channel":"c","pub":{}}}',
            ),
            (
                M.Reply(push=M.Push(id=12, pub=Publication(data=b"1", offset=0, time=0))),
                b'{"push":{"id":12,"pub":{"data":1}}}',
            ),
            (
                M.Reply(push=M.Push(disconnect=M.Disconnect(code=3001, reason="shutdown"))),
                b'{"push":{"disconnect":{"code":3001,"reason":"shutdown"}}}',
            ),
            (
                M.Reply(
                    id=16,
                    connect=M.ConnectResult(
                        client="c",
                        subs={"news": M.SubscribeResult(), "$x": M.SubscribeResult(offset=2)},
                    ),
                ),
                b'{"id":16,"connect":{"client":"c","subs":{"news":{},"$x":{"offset":2}}}}',
            ),
        ],
    )
    def test_exact_bytes(self, reply: M.Reply, expected: bytes) -> None:
        assert J.encode_reply(reply) == expected + b"\n"

    def test_64_bit_integers_are_numbers(self) -> None:
        pub = Publication(data=b"0", offset=2**64 - 1, time=-(2**63))
        out = J.encode_push(M.Push(pub=pub, id=2**63 - 1))
        assert out == (
            b'{"push":{"id":9223372036854775807,"pub":{"data":0,"offset":18446744073709551615,'
            b'"time":-9223372036854775808}}}\n'
        )
        assert json.loads(out)["push"]["pub"]["offset"] == 2**64 - 1

    def test_tags_map(self) -> None:
        pub = Publication(data=b"{}", tags={"a": "1", "é": "\n"})
        assert J.encode_publication("c", pub) == (
            b'{"push":{"channel":"c","pub":{"data":{},"tags":{"a":"1","\\u00e9":"\\n"}}}}\n'
        )

    @pytest.mark.parametrize("reply", sample_replies())
    def test_keys_in_field_number_order(self, reply: M.Reply) -> None:
        from rtcore.protocol import client_pb2 as pb

        def check(pairs: Any, desc: Any) -> None:
            if (
                desc is None
                or not isinstance(pairs, list)
                or not all(isinstance(p, tuple) for p in pairs)
            ):
                return
            numbers = [desc.fields_by_name[k].number for k, _ in pairs]
            assert numbers == sorted(numbers), desc.name
            for key, value in pairs:
                fd = desc.fields_by_name[key]
                sub = fd.message_type
                if sub is not None and sub.GetOptions().map_entry:
                    inner = sub.fields_by_name["value"].message_type
                    for _, v in value:
                        check(v, inner)
                elif sub is not None and value and isinstance(value[0], list):
                    for item in value:
                        check(item, sub)
                else:
                    check(value, sub)

        check(ordered_keys(J.encode_reply(reply)), pb.Reply.DESCRIPTOR)

    def test_strings_are_ascii_escaped(self) -> None:
        out = J.encode_push_bare(
            M.Push(channel='é"\\\n\t\x00€😀\u2028', unsubscribe=M.Unsubscribe(reason="\ud800"))
        )
        assert out.isascii()
        assert json.loads(out) == {
            "channel": 'é"\\\n\t\x00€😀\u2028',
            "unsubscribe": {"reason": "\ud800"},
        }


# ---------------------------------------------------------------------------
# Raw JSON payloads.


class TestRawJson:
    @pytest.mark.parametrize(
        "data",
        [
            b'{"t": "x" ,\t"n" : [1, 2.50, 1e5, -0.0, 12345678901234567890123.5]}',
            b'"just a string"',
            b"42",
            b"12345678901234567890123456789",
            b"true",
            b"[]",
            b'{"u":"\\u00e9\\ud83d\\ude00","raw":"\xc3\xa9"}',
            b'{"lone":"\\udc00"}',
            b'{"dup":1,"dup":2}',
            b'  {"padded":true}  ',
            b'{"nested":{"data":{"data":[{"data":null}]}}}',
        ],
    )
    def test_decoded_data_is_the_exact_source_bytes(self, data: bytes) -> None:
        for frame in (
            b'{"id":1,"publish":{"channel":"c","data":' + data + b"}}",
            b'{"publish":{"data":' + data + b',"channel":"c"},"id":1}\n',
        ):
            assert decode1(frame).publish == M.PublishRequest(channel="c", data=data.strip())

    def test_every_raw_field_is_exact(self) -> None:
        d = b'{ "a" : 1.0 }'
        frame = (
            b'{"id":1,"connect":{"data":' + d + b',"subs":{"ch":{"data":' + d + b"}}},"
            b'"subscribe":{"channel":"c","data":' + d + b"},"
            b'"publish":{"data":' + d + b'},"rpc":{"method":"m","data":' + d + b"},"
            b'"send":{"data":' + d + b"}}"
        )
        cmd = decode1(frame)
        assert cmd.connect is not None and cmd.connect.data == d
        assert cmd.connect.subs["ch"].data == d
        assert cmd.subscribe is not None and cmd.subscribe.data == d
        assert cmd.publish is not None and cmd.publish.data == d
        assert cmd.rpc is not None and cmd.rpc.data == d
        assert cmd.send is not None and cmd.send.data == d

    def test_escaped_data_key_is_still_raw(self) -> None:
        cmd = decode1(b'{"id":1,"publish":{"d\\u0061ta":{"k": 1}}}')
        assert cmd.publish == M.PublishRequest(data=b'{"k": 1}')

    def test_null_data_is_absent(self) -> None:
        assert decode1(b'{"id":1,"publish":{"data":null}}').publish == M.PublishRequest()
        assert decode1(b'{"id":1,"send":{"data": null }}').send == M.SendRequest()

    def test_newlines_are_stripped_on_encode(self) -> None:
        data = b'{\n  "a": [\r\n 1,\n 2\n ],\n\t"b": "x\\ny"\n}\n'
        out = J.encode_publication("c", Publication(data=data))
        assert (
            out == b'{"push":{"channel":"c","pub":{"data":{  "a": [\r 1, 2 ],\t"b": "x\\ny"}}}}\n'
        )
        assert out.count(b"\n") == 1
        assert json.loads(out)["push"]["pub"]["data"] == json.loads(data)

    def test_decode_then_encode_keeps_payload(self) -> None:
        data = b'{"price": 12345678901234567890.123456789, "s": "\\u00e9"}'
        cmd = decode1(b'{"id":1,"publish":{"channel":"c","data":' + data + b"}}")
        assert cmd.publish is not None
        out = J.encode_publication("c", Publication(data=cmd.publish.data))
        assert data in out

    @pytest.mark.parametrize(
        "payload",
        [
            b"\x00\x01binary",
            b"\xff\xfe",
            b"{",
            b"NaN",
            b"[Infinity]",
            b"{} {}",
            b" ",
            b"'x'",
            b"\xef\xbb\xbf{}",
        ],
    )
    @pytest.mark.parametrize(
        "make",
        [
            pytest.param(lambda d: M.Reply(push=M.Push(pub=Publication(data=d))), id="pub.data"),
            pytest.param(
                lambda d: M.Reply(push=M.Push(join=M.Join(ClientInfo("u", "c", conn_info=d)))),
                id="conn_info",
            ),
            pytest.param(
                lambda d: M.Reply(push=M.Push(leave=M.Leave(ClientInfo("u", "c", chan_info=d)))),
                id="chan_info",
            ),
            pytest.param(lambda d: M.Reply(id=1, connect=M.ConnectResult(data=d)), id="connect"),
            pytest.param(
                lambda d: M.Reply(id=1, subscribe=M.SubscribeResult(data=d)), id="subscribe"
            ),
            pytest.param(lambda d: M.Reply(id=1, rpc=M.RPCResult(data=d)), id="rpc"),
            pytest.param(lambda d: M.Reply(push=M.Push(message=M.Message(data=d))), id="message"),
            pytest.param(
                lambda d: M.Reply(push=M.Push(subscribe=M.Subscribe(data=d))), id="sub-push"
            ),
            pytest.param(
                lambda d: M.Reply(push=M.Push(connect=M.Connect(data=d))), id="connect-push"
            ),
            pytest.param(
                lambda d: M.Reply(
                    id=1,
                    history=M.HistoryResult(
                        publications=[Publication(data=b"{}"), Publication(data=d)]
                    ),
                ),
                id="history",
            ),
            pytest.param(
                lambda d: M.Reply(id=1, connect=M.ConnectResult(dict=M.Dictionary(data=d))),
                id="dictionary",
            ),
        ],
    )
    def test_invalid_json_payload_is_inappropriate(self, payload: bytes, make: Any) -> None:
        with pytest.raises(P.InappropriateProtocol, match="not valid JSON"):
            J.encode_reply(make(payload))
        # The same payload is fine for Protobuf clients.
        assert P.PROTOBUF.encode_reply(make(payload))

    def test_fast_paths_raise_inappropriate(self) -> None:
        with pytest.raises(P.InappropriateProtocol):
            J.encode_publication("c", Publication(data=b"\x89PNG"))
        with pytest.raises(P.InappropriateProtocol):
            J.encode_publication("c", Publication(data=b"{}", info=ClientInfo("u", "c", b"\x00")))
        with pytest.raises(P.InappropriateProtocol):
            J.encode_join("c", ClientInfo("u", "c", chan_info=b"{oops}"))
        with pytest.raises(P.InappropriateProtocol):
            J.encode_leave("c", ClientInfo("u", "c", conn_info=b"nope"))
        assert issubclass(P.InappropriateProtocol, P.ProtocolEncodeError)

    def test_bytearray_and_memoryview_payloads(self) -> None:
        for data in (bytearray(b'{"a":1}'), memoryview(b'{"a":1}')):
            out = J.encode_publication("c", Publication(data=data))  # type: ignore[arg-type]
            assert out == b'{"push":{"channel":"c","pub":{"data":{"a":1}}}}\n'


# ---------------------------------------------------------------------------
# Integers past Python's int digit limit (sys.get_int_max_str_digits, 4300 by
# default) are valid JSON: raw payloads holding them pass byte for byte, and
# no field converts them.

HUGE = "9" * (sys.get_int_max_str_digits() + 700)


class TestHugeIntegers:
    @pytest.mark.parametrize(
        "data",
        [
            HUGE.encode(),
            b"-" + HUGE.encode(),
            b'{"n":' + HUGE.encode() + b',"deep":[[{"m":-' + HUGE.encode() + b"}]]}",
            b" [" + HUGE.encode() + b", 1.5e3, " + HUGE.encode() + b"] ",
        ],
    )
    def test_raw_fields_pass_unchanged(self, data: bytes) -> None:
        frame = b'{"id":7,"publish":{"channel":"c","data":' + data + b"}}"
        cmd = decode1(frame)
        assert cmd.id == 7
        assert cmd.publish == M.PublishRequest(channel="c", data=data.strip())
        connect = J.decode_connect_request(b'{"data":' + data + b',"subs":{"s":{"data":1}}}')
        assert connect.data == data.strip()
        out = J.encode_publication("c", Publication(data=data))
        assert data in out
        reply = J.encode_reply(M.Reply(id=1, rpc=M.RPCResult(data=data)))
        assert reply == b'{"id":1,"rpc":{"data":' + data + b"}}\n"

    def test_frame_without_raw_field_and_an_unknown_huge_key(self) -> None:
        # No "data" in the line: the one-call decoder path; unknown keys are ignored.
        cmd = decode1('{"id":3,"extra":[' + HUGE + '],"presence":{"channel":"c"}}')
        assert cmd == M.Command(id=3, presence=M.PresenceRequest(channel="c"))

    @pytest.mark.parametrize(
        ("line", "message"),
        [
            ('{"id":' + HUGE + "}", f"id: an integer of {len(HUGE)} digits is out of range"),
            (
                '{"id":1,"history":{"channel":"c","since":{"offset":-' + HUGE + "}}}",
                "history.since.offset: an integer of",
            ),
            (
                '{"id":1,"publish":{"data":1,"channel":"c","type":' + HUGE + "}}",
                "publish.type: an integer of",
            ),
            ('{"id":1,"publish":{"data":[' + HUGE + ",NaN]}}", "NaN is not valid JSON"),
            ('{"id":1,"publish":{"data":[' + HUGE + ",]}}", "invalid JSON"),
        ],
    )
    def test_typed_fields_refuse_them(self, line: str, message: str) -> None:
        with pytest.raises(P.ProtocolDecodeError, match=re.escape(message)):
            J.decode_commands(line)

    def test_limit_is_not_lifted(self) -> None:
        # The fix validates without converting; the global guard stays in place.
        J.decode_commands('{"id":1,"publish":{"data":' + HUGE + "}}")
        with pytest.raises(ValueError, match="digits"):
            int(HUGE)

    def test_server_api_publish_and_history_keep_them(self) -> None:
        import aiohttp

        import rtcore
        from rtcore.config import config_from_mapping
        from rtcore.engine.node import Node

        data = ('{"n":-' + HUGE + "}").encode()
        key = "huge-int-api-key-0123456789"
        config = config_from_mapping(
            {
                "api": {"key": key},
                "channel": {"namespaces": [{"name": "h", "history_size": 5, "history_ttl": 60}]},
            }
        )

        async def scenario() -> None:
            node = Node(config)
            server = await rtcore.serve(node, "127.0.0.1", 0)
            base = f"http://127.0.0.1:{server.port}/api"

            async def post(method: str, body: bytes) -> tuple[int, bytes]:
                async with (
                    aiohttp.ClientSession() as http,
                    http.post(f"{base}/{method}", data=body, headers={"X-API-Key": key}) as r,
                ):
                    return r.status, await r.read()

            try:
                status, body = await post("publish", b'{"channel":"h:1","data":' + data + b"}")
                assert status == 200, body
                stored = await node.history("h:1", limit=-1)
                assert [p.data for p in stored.publications] == [data]
                # Read back as raw JSON, not as base64 of "binary" data.
                status, body = await post("history", b'{"channel":"h:1","limit":-1}')
                assert status == 200 and b'"data":' + data in body, body[:200]
                # A typed field cannot hold one: a clear 400.
                status, body = await post(
                    "history", b'{"channel":"h:1","limit":' + HUGE.encode() + b"}"
                )
                assert status == 400 and f"an integer of {len(HUGE)} digits".encode() in body, body
                # NaN is no JSON: such a payload (from a Protobuf client) goes out as b64data.
                await node.publish("h:1", b"NaN")
                status, body = await post("history", b'{"channel":"h:1","limit":-1,"reverse":true}')
                assert status == 200 and b'"b64data":"TmFO"' in body, body[:200]
            finally:
                await server.close(timeout=1)
                await node.close()

        asyncio.run(scenario())

    def test_client_publish_reaches_subscribers_and_history(self) -> None:
        from protocol.helpers import Client, make_node, run, until

        data = ('{"n":' + HUGE + "}").encode()

        async def scenario() -> None:
            node = make_node(
                {
                    "client": {"allow_anonymous_connect_without_token": True},
                    "channel": {
                        "namespaces": [
                            {
                                "name": "big",
                                "allow_subscribe_for_anonymous": True,
                                "allow_subscribe_for_client": True,
                                "allow_publish_for_subscriber": True,
                                "allow_publish_for_anonymous": True,
                                "allow_history_for_subscriber": True,
                                "allow_history_for_anonymous": True,
                                "history_size": 5,
                                "history_ttl": 60,
                            }
                        ]
                    },
                }
            )
            await node.start()
            try:
                publisher, reader = Client(node), Client(node)
                for client in (publisher, reader):
                    await client.connect()
                    await client.subscribe("big:1")
                # Raw frames from here on: the harness's own json.loads would hit the limit.
                sent, seen = len(publisher.transport.frames), len(reader.transport.frames)
                publisher.send_raw(
                    b'{"id":9,"publish":{"channel":"big:1","data":' + data + b"}}\n"
                    b'{"id":10,"history":{"channel":"big:1","limit":5}}'
                )

                def output(client: Client, since: int, marker: bytes) -> bytes:
                    frames = b"".join(client.transport.frames[since:])
                    return frames if marker in frames or client.transport.closes else b""

                out = await until(lambda: output(publisher, sent, b'{"id":10,'))
                assert publisher.transport.closes == []
                assert b'{"id":9,"publish":{}}\n' in out
                assert b'{"id":10,"history":{"publications":[{"data":' + data in out
                pushed = await until(lambda: output(reader, seen, b'"pub":'))
                assert b'"pub":{"data":' + data + b"," in pushed
            finally:
                await node.close()

        run(scenario())


# ---------------------------------------------------------------------------
# Framing and tolerated variations.


class TestFraming:
    def test_one_trailing_newline(self) -> None:
        assert J.decode_commands(b"{}\n") == [M.Command()]
        assert J.decode_commands(b'{"id":1,"presence":{"channel":"a"}}\n{}\n') == [
            M.Command(id=1, presence=M.PresenceRequest("a")),
            M.Command(),
        ]

    def test_crlf_line_endings(self) -> None:
        frame = b'{"id":1,"presence":{"channel":"a"}}\r\n{"id":2,"history":{"channel":"b"}}\r\n'
        assert [c.id for c in J.decode_commands(frame)] == [1, 2]

    def test_whitespace_around_objects(self) -> None:
        frame = (
            b' \t{ "id" : 1 , "presence" : { "channel" : "a" } } \r\n  {"id":2,"send":{"data": 1 }}'
        )
        cmds = J.decode_commands(frame)
        assert cmds[0] == M.Command(id=1, presence=M.PresenceRequest("a"))
        assert cmds[1] == M.Command(id=2, send=M.SendRequest(data=b"1"))

    def test_accepts_str_bytearray_memoryview(self) -> None:
        expected = [M.Command(id=1, presence=M.PresenceRequest("é"))]
        line = '{"id":1,"presence":{"channel":"é"}}'
        assert J.decode_commands(line) == expected
        assert J.decode_commands(bytearray(line.encode())) == expected
        assert J.decode_commands(memoryview(line.encode())) == expected
        with pytest.raises(TypeError):
            J.decode_commands(12)  # type: ignore[arg-type]

    def test_null_is_absent(self) -> None:
        assert decode1(b'{"id":null,"connect":null}') == M.Command()
        assert decode1(b'{"id":1,"subscribe":null}') == M.Command(id=1)
        assert decode1(
            b'{"id":1,"connect":{"token":null,"subs":{"a":null,"b":{"offset":null}},"headers":{"h":null}}}'
        ) == M.Command(id=1, connect=M.ConnectRequest(subs={"b": M.SubscribeRequest()}))
        assert decode1(b'{"id":1,"history":{"since":null,"limit":null}}') == M.Command(
            id=1, history=M.HistoryRequest()
        )

    def test_unknown_fields_are_ignored(self) -> None:
        frame = (
            b'{"id":1,"future":{"x":[1,{"y":null}]},"subscribe":{"channel":"a","newfield":[true],'
            b'"tf":{"op":"and","nodes":[{"key":"k","cmp":"eq","val":"v","extra":1}]}},"z":"q"}'
        )
        assert decode1(frame) == M.Command(
            id=1,
            subscribe=M.SubscribeRequest(
                channel="a",
                tf=M.FilterNode(op="and", nodes=[M.FilterNode(key="k", cmp="eq", val="v")]),
            ),
        )

    def test_duplicate_keys_last_wins(self) -> None:
        assert decode1(b'{"id":1,"id":2}').id == 2
        assert decode1(b'{"id":1,"publish":{"data":1,"data":[2]}}').publish == M.PublishRequest(
            data=b"[2]"
        )

    def test_every_request_field(self) -> None:
        frame = (
            b'{"id":1,"history":{"channel":"h","limit":-1,"since":{"offset":3,"epoch":"e"},'
            b'"reverse":true}}\n'
            b'{"id":2,"sub_refresh":{"channel":"s","token":"t","type":1,"track":[{"signature":"g",'
            b'"items":[{"key":"k","version":18446744073709551615}]}],"untrack":["u"]}}\n'
            b'{"id":3,"connect":{"token":"t","headers":{"X-A":"1"},"flag":1,"dict":"d",'
            b'"profile":"p","version":"1.0","name":"js","subs":{"c":{"recover":true,"offset":4,'
            b'"epoch":"e"}}}}\n'
            b'{"id":4,"refresh":{"token":"new"}}\n'
            b'{"id":5,"rpc":{"method":"m"}}\n'
            b'{"id":6,"presence_stats":{"channel":"p"}}\n'
            b'{"id":7,"unsubscribe":{"channel":"u"}}\n'
            b'{"id":8,"ping":{}}'
        )
        assert J.decode_commands(frame) == [
            M.Command(
                id=1,
                history=M.HistoryRequest(
                    channel="h", limit=-1, since=StreamPosition(3, "e"), reverse=True
                ),
            ),
            M.Command(
                id=2,
                sub_refresh=M.SubRefreshRequest(
                    channel="s",
                    token="t",
                    type=1,
                    track=[M.TrackBatch("g", [M.KeyedItem("k", 2**64 - 1)])],
                    untrack=["u"],
                ),
            ),
            M.Command(
                id=3,
                connect=M.ConnectRequest(
                    token="t",
                    headers={"X-A": "1"},
                    flag=1,
                    dict="d",
                    profile="p",
                    version="1.0",
                    name="js",
                    subs={"c": M.SubscribeRequest(recover=True, offset=4, epoch="e")},
                ),
            ),
            M.Command(id=4, refresh=M.RefreshRequest("new")),
            M.Command(id=5, rpc=M.RPCRequest(method="m")),
            M.Command(id=6, presence_stats=M.PresenceStatsRequest("p")),
            M.Command(id=7, unsubscribe=M.UnsubscribeRequest("u")),
            M.Command(id=8, ping=M.PingRequest()),
        ]

    def test_large_batch(self) -> None:
        lines = [
            b'{"id":%d,"subscribe":{"channel":"chan:%d","recover":true,"offset":%d,"epoch":"e"}}'
            % (i, i, i * 7)
            for i in range(1, 1001)
        ]
        lines[499] = b'{"id":500,"publish":{"channel":"x","data":{"n":[1,2,3]}}}'
        frame = b"\n".join(lines) + b"\n"
        cmds = J.decode_commands(frame)
        assert len(cmds) == 1000
        assert [c.id for c in cmds] == list(range(1, 1001))
        assert cmds[999].subscribe == M.SubscribeRequest(
            channel="chan:1000", recover=True, offset=7000, epoch="e"
        )
        assert cmds[499].publish == M.PublishRequest(channel="x", data=b'{"n":[1,2,3]}')
        # Cut anywhere inside the last object: a clean error naming command 1000.
        for cut in (1, 10, len(lines[-1]) - 1):
            with pytest.raises(P.ProtocolDecodeError, match="^command 1000: invalid JSON"):
                J.decode_commands(frame[: -1 - cut])
        bad = list(lines)
        bad[700] = b'{"id":701,"subscribe":{"channel":701}}'
        with pytest.raises(
            P.ProtocolDecodeError,
            match=r"^command 701: subscribe\.channel: expected a string, got an integer$",
        ):
            J.decode_commands(b"\n".join(bad))


# ---------------------------------------------------------------------------
# Malformed input: every case gets a ProtocolDecodeError with a clear message.

MALFORMED = [
    (b"", r"^frame holds no command$"),
    (b"\n", r"^frame holds no command$"),
    (b"\r\n", r"^command 1: empty line"),
    (b"   ", r"^command 1: empty line"),
    (b"{}\n\n", r"^command 2: empty line"),
    (b"{}\n\n{}", r"^command 2: empty line"),
    (b"\n{}", r"^command 1: empty line"),
    (b"[]", r"^command 1: expected a JSON object, got an array$"),
    (b"[1, {}]", r"^command 1: expected a JSON object, got an array$"),
    (b"1", r"^command 1: expected a JSON object, got an integer$"),
    (b'"x"', r"^command 1: expected a JSON object, got a string$"),
    (b"null", r"^command 1: expected a JSON object, got null$"),
    (b"true", r"^command 1: expected a JSON object, got a boolean$"),
    (b"{", r"^command 1: invalid JSON: .* at column 2$"),
    (b'{"id":1', r"^command 1: invalid JSON"),
    (b'{"id":1}x', r"^command 1: invalid JSON: Extra data"),
    (b'{"id":1} {}', r"^command 1: invalid JSON: Extra data"),
    (b"{'id':1}", r"^command 1: invalid JSON"),
    (b'{"id":NaN}', r"^command 1: invalid JSON: NaN is not valid JSON"),
    (
        b'{"id":1,"publish":{"data":Infinity}}',
        r"^command 1: invalid JSON: Infinity is not valid JSON",
    ),
    (b'{"id":1,"publish":{"data":{bad}}}', r"^command 1: invalid JSON"),
    (b'{"id":1,"publish":{"data":}}', r"^command 1: invalid JSON"),
    (b'{"id":1,"publish":{"data":1,}}', r"^command 1: invalid JSON"),
    (b'{"id":1,"publish":{"data":"a\nb"}}', r"^command 1: invalid JSON"),
    (b'{"id":1,"publish":{"data":"tab\tin string"}}', r"^command 1: invalid JSON"),
    (b"\xff{}", r"^frame is not valid UTF-8"),
    (b'{"id":"1"}', r"^command 1: id: expected an integer, got a string$"),
    (
        b'{"id":1.0}',
        r"^command 1: id: expected an integer, got a number with a fraction or exponent$",
    ),
    (b'{"id":1e3}', r"^command 1: id: expected an integer, got a number"),
    (b'{"id":true}', r"^command 1: id: expected an integer, got a boolean$"),
    (b'{"id":-1}', r"^command 1: id: -1 is out of range for uint32$"),
    (b'{"id":4294967296}', r"^command 1: id: 4294967296 is out of range for uint32$"),
    (b'{"id":[1]}', r"^command 1: id: expected an integer, got an array$"),
    (
        b'{"id":1,"subscribe":{"channel":5}}',
        r"^command 1: subscribe\.channel: expected a string, got an integer$",
    ),
    (b'{"id":1,"subscribe":[]}', r"^command 1: subscribe: expected an object, got an array$"),
    (b'{"id":1,"subscribe":"chat"}', r"^command 1: subscribe: expected an object, got a string$"),
    (
        b'{"id":1,"subscribe":{"recover":"true"}}',
        r"^command 1: subscribe\.recover: expected a boolean",
    ),
    (
        b'{"id":1,"subscribe":{"recover":1}}',
        r"^command 1: subscribe\.recover: expected a boolean, got an integer$",
    ),
    (
        b'{"id":1,"subscribe":{"offset":-1}}',
        r"^command 1: subscribe\.offset: -1 is out of range for uint64$",
    ),
    (
        b'{"id":1,"subscribe":{"offset":18446744073709551616}}',
        r"subscribe\.offset: .* out of range for uint64",
    ),
    (
        b'{"id":1,"subscribe":{"flag":9223372036854775808}}',
        r"subscribe\.flag: .* out of range for int64",
    ),
    (b'{"id":1,"subscribe":{"type":2147483648}}', r"subscribe\.type: .* out of range for int32"),
    (
        b'{"id":1,"subscribe":{"channel":"\\ud800"}}',
        r"subscribe\.channel: string holds an unpaired surrogate",
    ),
    (
        b'{"id":1,"subscribe":{"tf":{"nodes":[{"vals":[1]}]}}}',
        r"^command 1: subscribe\.tf\.nodes\[0\]\.vals\[0\]: expected a string",
    ),
    (
        b'{"id":1,"subscribe":{"tf":{"nodes":[null]}}}',
        r"subscribe\.tf\.nodes\[0\]: null is not allowed in an array",
    ),
    (
        b'{"id":1,"connect":{"subs":[]}}',
        r"^command 1: connect\.subs: expected an object, got an array$",
    ),
    (
        b'{"id":1,"connect":{"subs":{"ch":{"offset":"5"}}}}',
        r"^command 1: connect\.subs\.ch\.offset: expected an integer, got a string$",
    ),
    (
        b'{"id":1,"connect":{"subs":{"ch":1}}}',
        r"^command 1: connect\.subs\.ch: expected an object, got an integer$",
    ),
    (
        b'{"id":1,"connect":{"headers":{"h":1}}}',
        r"^command 1: connect\.headers\.h: expected a string, got an integer$",
    ),
    (b'{"id":1,"connect":{"headers":"h"}}', r"^command 1: connect\.headers: expected an object"),
    (
        b'{"id":1,"connect":{"token":{"jwt":1}}}',
        r"^command 1: connect\.token: expected a string, got an object$",
    ),
    (b'{"id":1,"connect":{"flag":"1"}}', r"^command 1: connect\.flag: expected an integer"),
    (
        b'{"id":1,"history":{"since":{"offset":"1"}}}',
        r"^command 1: history\.since\.offset: expected an integer",
    ),
    (
        b'{"id":1,"history":{"since":{"epoch":1}}}',
        r"^command 1: history\.since\.epoch: expected a string",
    ),
    (b'{"id":1,"history":{"since":5}}', r"^command 1: history\.since: expected an object"),
    (b'{"id":1,"history":{"limit":1.5}}', r"^command 1: history\.limit: expected an integer"),
    (
        b'{"id":1,"sub_refresh":{"untrack":[1]}}',
        r"^command 1: sub_refresh\.untrack\[0\]: expected a string",
    ),
    (
        b'{"id":1,"sub_refresh":{"untrack":"u"}}',
        r"^command 1: sub_refresh\.untrack: expected an array",
    ),
    (
        b'{"id":1,"sub_refresh":{"track":[{"items":[{"version":-1}]}]}}',
        r"sub_refresh\.track\[0\]\.items\[0\]\.version: -1 is out of range",
    ),
    (
        b'{"id":1,"rpc":{"method":false}}',
        r"^command 1: rpc\.method: expected a string, got a boolean$",
    ),
    (
        b'{"id":1,"refresh":{"token":["t"]}}',
        r"^command 1: refresh\.token: expected a string, got an array$",
    ),
    (
        b'{"id":1,"presence":{"channel":{}}}',
        r"^command 1: presence\.channel: expected a string, got an object$",
    ),
    (b'{"id":1,"ping":1}', r"^command 1: ping: expected an object, got an integer$"),
    (b'{"id":1}\n{"id":"2"}', r"^command 2: id: expected an integer"),
    (b"[" * 100_000 + b"]" * 100_000, r"^command 1: JSON nested too deeply$"),
    (
        b'{"id":1,"publish":{"data":' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
        r"^command 1: JSON nested too deeply$",
    ),
]


@pytest.mark.parametrize(("frame", "message"), MALFORMED, ids=[repr(f[:40]) for f, _ in MALFORMED])
def test_malformed_frames(frame: bytes, message: str) -> None:
    with pytest.raises(P.ProtocolDecodeError, match=message):
        J.decode_commands(frame)


def test_decode_error_is_a_value_error() -> None:
    assert issubclass(P.ProtocolDecodeError, ValueError)


# ---------------------------------------------------------------------------
# Unidirectional connect requests and emulation bodies.


class TestOtherBodies:
    def test_connect_request(self) -> None:
        assert J.decode_connect_request(b"") == M.ConnectRequest()
        assert J.decode_connect_request(b"null") == M.ConnectRequest()
        assert J.decode_connect_request(b" null\n") == M.ConnectRequest()
        assert J.decode_connect_request(b"{}") == M.ConnectRequest()
        req = J.decode_connect_request(
            b'{"token":"t","data":{"a": 1},"subs":{"news":{"recover":true,"offset":3,"epoch":"e",'
            b'"data":[1]}},"name":"curl"}'
        )
        assert req == M.ConnectRequest(
            token="t",
            data=b'{"a": 1}',
            subs={"news": M.SubscribeRequest(recover=True, offset=3, epoch="e", data=b"[1]")},
            name="curl",
        )
        assert J.decode_connect_request(full_connect_json := _full_connect_json()) == full(
            M.ConnectRequest
        ), full_connect_json

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            (b"[]", r"^connect request: expected a JSON object, got an array$"),
            (b"{", r"^connect request: invalid JSON"),
            (b'{"token":1}', r"^connect request: token: expected a string"),
            (
                b'{"subs":{"c":{"offset":-2}}}',
                r"^connect request: subs\.c\.offset: -2 is out of range",
            ),
            (b"\xc3", r"^connect request is not valid UTF-8"),
        ],
    )
    def test_bad_connect_request(self, body: bytes, message: str) -> None:
        with pytest.raises(P.ProtocolDecodeError, match=message):
            J.decode_connect_request(body)

    def test_emulation_request(self) -> None:
        inner = '{"id":2,"presence":{"channel":"é"}}\n{}'
        body = json.dumps({"session": "s1", "node": "n1", "data": inner}).encode()
        req = J.decode_emulation_request(body)
        assert req == M.EmulationRequest(node="n1", session="s1", data=inner.encode())
        assert J.decode_commands(req.data) == [
            M.Command(id=2, presence=M.PresenceRequest("é")),
            M.Command(),
        ]

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            (
                b'{"session":"s","node":"n","data":{"id":1}}',
                r"^emulation request: data: expected a string holding the command frame, "
                r"got an object$",
            ),
            (b'{"session":1}', r"^emulation request: session: expected a string"),
            (b"[]", r"^emulation request: expected a JSON object"),
            (b"{", r"^emulation request: invalid JSON"),
            (b"", r"^emulation request: invalid JSON"),
        ],
    )
    def test_bad_emulation_request(self, body: bytes, message: str) -> None:
        with pytest.raises(P.ProtocolDecodeError, match=message):
            J.decode_emulation_request(body)


def _full_connect_json() -> bytes:
    from test_codec_common import dumps_raw, to_json

    return dumps_raw(to_json(full(M.ConnectRequest), raw=True)).encode()


# ---------------------------------------------------------------------------
# The official Python SDK's JSON codec as an independent peer.


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "yes", "true", "on"}


@pytest.fixture(scope="module")
def sdk() -> Any:
    try:
        from centrifuge import codecs
    except ImportError:
        if _truthy("CI"):
            pytest.fail("centrifuge-python must be installed in CI (pip install centrifuge-python)")
        pytest.skip("centrifuge-python is not installed")
    return codecs._JsonCodec


class TestPythonSdkJson:
    def test_sdk_commands_decode(self, sdk: Any) -> None:
        commands = [
            {"id": 1, "connect": {"token": "t", "name": "python", "version": "0.7.0"}},
            {
                "id": 2,
                "subscribe": {
                    "channel": "chat:index",
                    "recover": True,
                    "offset": 12,
                    "epoch": "xyz",
                    "flag": 3,
                    "positioned": True,
                    "recoverable": True,
                    "join_leave": True,
                    "data": {"hello": ["w", 1.5]},
                },
            },
            {"id": 3, "publish": {"channel": "chat:index", "data": {"input": "héllo\nworld"}}},
            {"id": 4, "rpc": {"method": "sum", "data": [1, 2]}},
            {
                "id": 5,
                "history": {
                    "channel": "c",
                    "limit": 10,
                    "since": {"offset": 3, "epoch": "e"},
                    "reverse": True,
                },
            },
            {"id": 6, "sub_refresh": {"channel": "c", "token": "st"}},
            {"send": {"data": "message"}},
            {},
        ]
        frame = sdk.encode_commands(commands)
        decoded = J.decode_commands(frame.encode())
        assert decoded == [
            M.Command(id=1, connect=M.ConnectRequest(token="t", name="python", version="0.7.0")),
            M.Command(
                id=2,
                subscribe=M.SubscribeRequest(
                    channel="chat:index",
                    recover=True,
                    offset=12,
                    epoch="xyz",
                    flag=3,
                    positioned=True,
                    recoverable=True,
                    join_leave=True,
                    data=json.dumps({"hello": ["w", 1.5]}).encode(),
                ),
            ),
            M.Command(
                id=3,
                publish=M.PublishRequest(
                    channel="chat:index", data=json.dumps({"input": "héllo\nworld"}).encode()
                ),
            ),
            M.Command(id=4, rpc=M.RPCRequest(method="sum", data=b"[1, 2]")),
            M.Command(
                id=5,
                history=M.HistoryRequest(
                    channel="c", limit=10, since=StreamPosition(3, "e"), reverse=True
                ),
            ),
            M.Command(id=6, sub_refresh=M.SubRefreshRequest(channel="c", token="st")),
            M.Command(send=M.SendRequest(data=b'"message"')),
            M.Command(),
        ]

    def test_sdk_decodes_our_replies(self, sdk: Any) -> None:
        info = ClientInfo(user="42", client="c1", conn_info=b'{"name":"Alex"}')
        frame = b"".join(
            [
                J.encode_reply(
                    M.Reply(
                        id=1,
                        connect=M.ConnectResult(
                            client="c1",
                            version="1.0",
                            ping=25,
                            pong=True,
                            subs={
                                "$personal": M.SubscribeResult(
                                    recoverable=True, epoch="e", offset=2
                                )
                            },
                        ),
                    )
                ),
                J.encode_reply(
                    M.Reply(
                        id=2,
                        subscribe=M.SubscribeResult(
                            recoverable=True, epoch="e", offset=9, positioned=True
                        ),
                    )
                ),
                J.encode_publication(
                    "chat",
                    Publication(
                        data=b'{"text":"hi\\nthere"}', offset=10, info=info, tags={"t": "1"}
                    ),
                ),
                J.encode_join("chat", info),
                J.ping,
                J.encode_reply(M.Reply(id=3, error=M.Error(code=103, message="permission denied"))),
                J.encode_reply(M.Reply(id=4, presence=M.PresenceResult({"c1": info}))),
                J.encode_reply(M.Reply(id=5, history=M.HistoryResult(epoch="e", offset=10))),
                J.encode_push(
                    M.Push(
                        channel="chat",
                        unsubscribe=M.Unsubscribe(code=2000, reason="server unsubscribe"),
                    )
                ),
            ]
        )
        replies = sdk.decode_replies(frame.decode())
        assert replies == [
            {
                "id": 1,
                "connect": {
                    "client": "c1",
                    "version": "1.0",
                    "subs": {"$personal": {"recoverable": True, "epoch": "e", "offset": 2}},
                    "ping": 25,
                    "pong": True,
                },
            },
            {
                "id": 2,
                "subscribe": {"recoverable": True, "epoch": "e", "offset": 9, "positioned": True},
            },
            {
                "push": {
                    "channel": "chat",
                    "pub": {
                        "data": {"text": "hi\nthere"},
                        "info": {"user": "42", "client": "c1", "conn_info": {"name": "Alex"}},
                        "offset": 10,
                        "tags": {"t": "1"},
                    },
                }
            },
            {
                "push": {
                    "channel": "chat",
                    "join": {"info": {"user": "42", "client": "c1", "conn_info": {"name": "Alex"}}},
                }
            },
            {},
            {"id": 3, "error": {"code": 103, "message": "permission denied"}},
            {
                "id": 4,
                "presence": {
                    "presence": {
                        "c1": {"user": "42", "client": "c1", "conn_info": {"name": "Alex"}}
                    }
                },
            },
            {"id": 5, "history": {"publications": [], "epoch": "e", "offset": 10}},
            {
                "push": {
                    "channel": "chat",
                    "unsubscribe": {"code": 2000, "reason": "server unsubscribe"},
                }
            },
        ]
