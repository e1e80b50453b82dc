"""The WebSocket opening handshake (RFC 6455 section 4.2)."""

from __future__ import annotations

from types import ModuleType

import pytest
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import OPEN
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from rtcore.errors import HandshakeError
from rtcore.wire.deflate import DeflateOptions
from rtcore.wire.handshake import (
    WEBSOCKET_GUID,
    WebSocketAccept,
    accept_key,
    accept_websocket,
)
from rtcore.wire.http import HttpParser, Request, error_response


KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

BASE_HEADERS = [
    ("host", "server.example.com"),
    ("upgrade", "websocket"),
    ("connection", "Upgrade"),
    ("sec-websocket-key", KEY),
    ("sec-websocket-version", "13"),
]


def make_request(
    *,
    method: str = "GET",
    http_version: str = "1.1",
    drop: tuple[str, ...] = (),
    replace: dict[str, str] | None = None,
    add: list[tuple[str, str]] | None = None,
) -> Request:
    headers = [(n, (replace or {}).get(n, v)) for n, v in BASE_HEADERS if n not in drop]
    headers += add or []
    return Request(method, "/connection/websocket", headers=headers, http_version=http_version)


def rejection(request: Request, **kwargs: object) -> HandshakeError:
    with pytest.raises(HandshakeError) as info:
        accept_websocket(request, **kwargs)  # type: ignore[arg-type]
    return info.value


class TestAcceptKey:
    def test_rfc6455_example(self) -> None:
        # RFC 6455 section 1.3.
        assert WEBSOCKET_GUID == "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
        assert accept_key(KEY) == ACCEPT


class TestAccept:
    def test_exact_response(self) -> None:
        request = make_request()
        result = accept_websocket(request)
        assert result == WebSocketAccept(
            response=(
                b"HTTP/1.1 101 Switching Protocols\r\n"
                b"Upgrade: websocket\r\n"
                b"Connection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                b"\r\n"
            ),
            subprotocol=None,
            deflate=None,
            request=request,
        )

    def test_full_response_with_subprotocol_extension_and_extra_headers(self) -> None:
        request = make_request(
            add=[
                ("sec-websocket-protocol", "centrifuge-protobuf"),
                ("sec-websocket-extensions", "permessage-deflate; client_max_window_bits"),
            ]
        )
        result = accept_websocket(
            request,
            subprotocols=["centrifuge-protobuf"],
            deflate=DeflateOptions(server_no_context_takeover=True),
            extra_headers=[("Set-Cookie", "sid=1; HttpOnly"), ("X-Node", "a")],
        )
        assert result.response == (
            b"HTTP/1.1 101 Switching Protocols\r\n"
            b"Upgrade: websocket\r\n"
            b"Connection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
            b"Sec-WebSocket-Protocol: centrifuge-protobuf\r\n"
            b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n"
            b"Set-Cookie: sid=1; HttpOnly\r\n"
            b"X-Node: a\r\n"
            b"\r\n"
        )
        assert result.subprotocol == "centrifuge-protobuf"
        assert result.deflate is not None
        assert result.deflate.server_no_context_takeover is True

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("upgrade", "WebSocket"),
            ("upgrade", "h2c, websocket"),
            ("connection", "keep-alive, Upgrade"),
            ("connection", "UPGRADE"),
            ("connection", "Upgrade, keep-alive"),
        ],
    )
    def test_token_lists_any_case(self, name: str, value: str) -> None:
        accept_websocket(make_request(replace={name: value}))

    def test_tokens_on_several_lines(self) -> None:
        request = make_request(
            replace={"connection": "keep-alive"}, add=[("connection", "upgrade")]
        )
        accept_websocket(request)

    def test_http_versions_above_11(self) -> None:
        accept_websocket(make_request(http_version="1.1"))
        accept_websocket(make_request(http_version="2.0"))

    def test_deflate_not_offered_or_not_configured(self) -> None:
        offered = make_request(add=[("sec-websocket-extensions", "permessage-deflate")])
        assert accept_websocket(offered).deflate is None
        assert b"Extensions" not in accept_websocket(offered).response
        assert accept_websocket(make_request(), deflate=DeflateOptions()).deflate is None
        disabled = accept_websocket(offered, deflate=DeflateOptions(enabled=False))
        assert disabled.deflate is None

    def test_unparsable_extensions_ignored_without_deflate(self) -> None:
        request = make_request(add=[("sec-websocket-extensions", "=bad=")])
        accept_websocket(request)
        error = rejection(request, deflate=DeflateOptions())
        assert error.status == 400
        assert "Sec-WebSocket-Extensions" in error.message


class TestRejections:
    """Every status the handshake answers with, and what it says."""

    def test_method(self) -> None:
        error = rejection(make_request(method="POST"))
        assert error.status == 405
        assert error.headers == [("Allow", "GET")]
        assert "GET" in error.message and "'POST'" in error.message

    def test_http10(self) -> None:
        error = rejection(make_request(http_version="1.0"))
        assert (error.status, error.message) == (
            400,
            "the WebSocket handshake requires HTTP/1.1 or later, got HTTP/1.0",
        )

    @pytest.mark.parametrize(
        ("request_", "message"),
        [
            (make_request(drop=("host",)), "missing Host header"),
            (make_request(replace={"host": ""}), "empty Host header"),
            (make_request(add=[("host", "other")]), "multiple Host headers"),
            (make_request(drop=("upgrade",)), "missing Upgrade header"),
            (
                make_request(replace={"upgrade": "h2c"}),
                "the Upgrade header does not offer 'websocket': 'h2c'",
            ),
            (
                make_request(replace={"upgrade": "websocket/13"}),
                "the Upgrade header does not offer 'websocket'",
            ),
            (make_request(drop=("connection",)), "missing Connection header"),
            (
                make_request(replace={"connection": "keep-alive"}),
                "the Connection header lacks the 'upgrade' option: 'keep-alive'",
            ),
            (
                make_request(replace={"connection": "upgraded"}),
                "the Connection header lacks the 'upgrade' option",
            ),
            (make_request(drop=("sec-websocket-key",)), "missing Sec-WebSocket-Key header"),
            (
                make_request(add=[("sec-websocket-key", KEY)]),
                "multiple Sec-WebSocket-Key headers",
            ),
            (
                make_request(replace={"sec-websocket-key": "not base64!"}),
                "Sec-WebSocket-Key must be the base64 encoding of 16 bytes, got 'not base64!'",
            ),
            (
                make_request(replace={"sec-websocket-key": "c2hvcnQ="}),
                "Sec-WebSocket-Key must be the base64 encoding of 16 bytes",
            ),
            (
                make_request(replace={"sec-websocket-key": KEY[:-2]}),
                "Sec-WebSocket-Key must be the base64 encoding of 16 bytes",
            ),
            (
                make_request(replace={"sec-websocket-key": KEY + ", " + KEY}),
                "Sec-WebSocket-Key must be the base64 encoding of 16 bytes",
            ),
            (
                make_request(replace={"sec-websocket-key": "d\u00e9GhlIHNhbXBsZSBub25jZQ=="}),
                "Sec-WebSocket-Key must be the base64 encoding of 16 bytes",
            ),
            (
                make_request(add=[("origin", "https://a"), ("origin", "https://b")]),
                "multiple Origin headers",
            ),
            (
                make_request(add=[("sec-websocket-protocol", "chat, bad name")]),
                "invalid subprotocol 'bad name' in Sec-WebSocket-Protocol",
            ),
        ],
    )
    def test_bad_request(self, request_: Request, message: str) -> None:
        error = rejection(request_)
        assert error.status == 400
        assert message in error.message

    @pytest.mark.parametrize(
        ("versions", "message"),
        [
            ([], "missing Sec-WebSocket-Version header (this server speaks version 13)"),
            (["8"], "unsupported WebSocket version '8' (this server speaks version 13)"),
            (["13, 8"], "unsupported WebSocket version '13, 8'"),
            (["13", "13"], "unsupported WebSocket version '13, 13'"),
        ],
    )
    def test_version(self, versions: list[str], message: str) -> None:
        request = make_request(
            drop=("sec-websocket-version",), add=[("sec-websocket-version", v) for v in versions]
        )
        error = rejection(request)
        assert error.status == 426
        assert message in error.message
        assert error.headers == [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Version", "13"),
        ]

    def test_version_response_bytes(self) -> None:
        error = rejection(make_request(replace={"sec-websocket-version": "8"}))
        assert error_response(error) == (
            b"HTTP/1.1 426 Upgrade Required\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Upgrade: websocket\r\n"
            b"Connection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\n"
            b"Content-Length: 66\r\n"
            b"Connection: close\r\n"
            b"\r\n"
            b"unsupported WebSocket version '8' (this server speaks version 13)\n"
        )

    def test_version_checked_before_key(self) -> None:
        # An older-draft client sends no Sec-WebSocket-Key; tell it the version.
        request = make_request(drop=("sec-websocket-key",), replace={"sec-websocket-version": "8"})
        assert rejection(request).status == 426

    def test_first_fault_wins(self) -> None:
        request = make_request(method="POST", drop=("host", "sec-websocket-key"))
        assert rejection(request).status == 405

    def test_origin(self) -> None:
        allowed = {"https://app.example.com"}
        seen: list[str | None] = []

        def check(origin: str | None) -> bool:
            seen.append(origin)
            return origin in allowed

        good = make_request(add=[("origin", "https://app.example.com")])
        accept_websocket(good, check_origin=check)
        evil = make_request(add=[("origin", "https://evil.example")])
        error = rejection(evil, check_origin=check)
        assert (error.status, error.message) == (
            403,
            "origin 'https://evil.example' is not allowed",
        )
        error = rejection(make_request(), check_origin=check)
        assert (error.status, error.message) == (
            403,
            "requests without an Origin header are not allowed",
        )
        assert seen == ["https://app.example.com", "https://evil.example", None]
        # Without a check every origin passes.
        accept_websocket(evil)

    def test_long_values_are_cut_in_messages(self) -> None:
        error = rejection(make_request(replace={"upgrade": "x" * 500}))
        assert len(error.message) < 200


class TestSubprotocols:
    OFFER = [("sec-websocket-protocol", "b, a"), ("sec-websocket-protocol", " c ,")]

    def test_client_order_by_default(self) -> None:
        request = make_request(add=self.OFFER)
        assert accept_websocket(request, subprotocols=["c", "a"]).subprotocol == "a"

    def test_server_order_option(self) -> None:
        request = make_request(add=self.OFFER)
        result = accept_websocket(request, subprotocols=["c", "a"], prefer_server_order=True)
        assert result.subprotocol == "c"
        assert b"Sec-WebSocket-Protocol: c\r\n" in result.response

    def test_no_match_means_no_header(self) -> None:
        request = make_request(add=self.OFFER)
        result = accept_websocket(request, subprotocols=["d"])
        assert result.subprotocol is None
        assert b"Sec-WebSocket-Protocol" not in result.response

    def test_not_offered(self) -> None:
        assert accept_websocket(make_request(), subprotocols=["a"]).subprotocol is None

    def test_hook_overrides(self) -> None:
        calls: list[list[str]] = []

        def select(request: Request, offered: list[str]) -> str | None:
            calls.append(offered)
            return offered[-1] if offered else None

        request = make_request(add=self.OFFER)
        result = accept_websocket(request, subprotocols=["a"], select_subprotocol=select)
        assert result.subprotocol == "c"
        assert accept_websocket(make_request(), select_subprotocol=select).subprotocol is None
        assert calls == [["b", "a", "c"], []]

    @pytest.mark.parametrize("chosen", ["d", "", 42])
    def test_hook_must_choose_an_offered_one(self, chosen: object) -> None:
        request = make_request(add=self.OFFER)
        with pytest.raises(ValueError, match="did not offer"):
            accept_websocket(request, select_subprotocol=lambda r, o: chosen)  # type: ignore[arg-type,return-value]

    def test_hook_may_refuse(self) -> None:
        def require(request: Request, offered: list[str]) -> str | None:
            if "a" not in offered:
                raise HandshakeError(400, "subprotocol 'a' is required")
            return "a"

        assert rejection(make_request(), select_subprotocol=require).message == (
            "subprotocol 'a' is required"
        )

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"subprotocols": "chat"}, "not the string"),
            ({"subprotocols": ["bad name"]}, "not a valid token"),
            ({"extra_headers": [("Sec-WebSocket-Accept", "x")]}, "must not set"),
            ({"extra_headers": [("connection", "close")]}, "must not set"),
            ({"extra_headers": [("Content-Length", "1")]}, "must not set"),
            ({"extra_headers": [("X", "a", "b")]}, "pairs"),
            ({"extra_headers": [("X", "a\r\nY: b")]}, "CR, LF or NUL"),
        ],
    )
    def test_configuration_errors(self, kwargs: dict[str, object], match: str) -> None:
        with pytest.raises(ValueError, match=match):
            accept_websocket(make_request(), **kwargs)  # type: ignore[arg-type]

    def test_configuration_checked_again_when_it_may_differ(self) -> None:
        # A configuration of tuples is checked once while the same objects
        # come back; anything else (new objects, lists) is checked every time.
        good = ("chat", "superchat")
        headers = (("X-A", "1"),)
        for _ in range(2):
            accept_websocket(make_request(), subprotocols=good, extra_headers=headers)
        with pytest.raises(ValueError, match="not a valid token"):
            accept_websocket(make_request(), subprotocols=("bad name",), extra_headers=headers)
        mutable = ["chat"]
        accept_websocket(make_request(), subprotocols=mutable)
        mutable.append("bad name")
        with pytest.raises(ValueError, match="not a valid token"):
            accept_websocket(make_request(), subprotocols=mutable)
        pairs = (["X-B", "1"],)
        accept_websocket(make_request(), extra_headers=pairs)  # type: ignore[arg-type]
        pairs[0][0] = "Upgrade"
        with pytest.raises(ValueError, match="must not set"):
            accept_websocket(make_request(), extra_headers=pairs)  # type: ignore[arg-type]


class TestWithWebsocketsClient:
    """websockets' sans-I/O client as an independent peer, end to end."""

    @pytest.mark.parametrize(
        "client_deflate",
        [
            None,
            {},
            {"server_max_window_bits": 8},
            {"server_no_context_takeover": True, "client_no_context_takeover": True},
            {"client_max_window_bits": 10},
        ],
        ids=repr,
    )
    def test_handshake_and_messages(
        self, frames_impl: ModuleType, client_deflate: dict[str, object] | None
    ) -> None:
        extensions = (
            None if client_deflate is None else [ClientPerMessageDeflateFactory(**client_deflate)]  # type: ignore[arg-type]
        )
        client = ClientProtocol(
            parse_uri("ws://server.example.com/connection/websocket"),
            origin="https://app.example.com",  # type: ignore[arg-type]
            subprotocols=[Subprotocol("centrifuge-json"), Subprotocol("centrifuge-protobuf")],
            extensions=extensions,
        )
        client.send_request(client.connect())
        outgoing = b"".join(client.data_to_send())

        parser = HttpParser()
        # The first frames may arrive in the same packet as the request (the
        # client library waits for the 101, so build that frame here).
        early = frames_impl.encode_frame(frames_impl.OP_TEXT, b"early", mask=b"\x01\x02\x03\x04")
        [request] = parser.feed_data(outgoing + early)
        assert parser.upgraded
        assert parser.trailing_data == early
        result = accept_websocket(
            request,
            subprotocols=["centrifuge-protobuf"],
            check_origin=lambda origin: origin == "https://app.example.com",
            deflate=DeflateOptions(compress_threshold=16),
        )

        client.receive_data(result.response)
        [response] = client.events_received()
        assert isinstance(response, Response)
        assert client.handshake_exc is None
        assert client.state is OPEN
        assert client.subprotocol == "centrifuge-protobuf"
        assert (result.deflate is None) == (client_deflate is None)

        frame_parser = frames_impl.FrameParser(deflate=result.deflate)
        messages = [b"hello " * 40, b"x", bytes(range(256)) * 8, b"hello " * 40]
        for message in messages:
            client.send_binary(message)
        events = frame_parser.feed_data(parser.trailing_data + b"".join(client.data_to_send()))
        assert frame_parser.error is None
        assert events == [(frames_impl.OP_TEXT, b"early")] + [
            (frames_impl.OP_BINARY, m) for m in messages
        ]

        for message in messages:
            ext = result.deflate
            if ext is not None and len(message) >= ext.threshold:
                data = frames_impl.encode_frame(
                    frames_impl.OP_BINARY, ext.compress(message), rsv1=True
                )
            else:
                data = frames_impl.encode_frame(frames_impl.OP_BINARY, message)
            client.receive_data(data)
            [frame] = client.events_received()
            assert isinstance(frame, Frame)
            assert frame.opcode is Opcode.BINARY
            assert bytes(frame.data) == message
        assert client.parser_exc is None

    def test_client_checks_our_accept_value(self) -> None:
        client = ClientProtocol(parse_uri("ws://server.example.com/"))
        client.send_request(client.connect())
        [request] = HttpParser().feed_data(b"".join(client.data_to_send()))
        response = accept_websocket(request).response
        tampered = response.replace(
            accept_key(request.header("sec-websocket-key") or "").encode(), ACCEPT.encode()
        )
        client.receive_data(tampered)
        assert client.handshake_exc is not None
