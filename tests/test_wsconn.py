"""The sans-I/O WebSocket connection: ping/pong, close handshake, failures."""

from __future__ import annotations

import pytest

from rtcore import frames
from rtcore.frames import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, encode_close, encode_frame
from rtcore.wire.websocket import CLOSED, CLOSING, OPEN, WebSocketConnection


MASK = b"\x01\x02\x03\x04"


def client_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    return encode_frame(opcode, payload, fin, False, MASK)


def parse_server(data: bytes) -> list[tuple[int, bytes]]:
    parser = frames.FrameParser(is_server=False, max_message_size=0)
    return parser.feed_data(data)


def receive(conn: WebSocketConnection, data: bytes) -> list[tuple[int, bytes]]:
    """What the I/O layer does: handle events in order, answer pings, then receive_done."""
    events = conn.receive_data(data)
    for opcode, payload in events:
        if opcode == OP_PING:
            conn.pong(payload)
    conn.receive_done()
    return events


def test_events_keep_their_order_and_pings_are_answered() -> None:
    conn = WebSocketConnection()
    data = (
        client_frame(OP_TEXT, b"hi")
        + client_frame(OP_PING, b"p1")
        + client_frame(OP_BINARY, b"\x00")
    )
    assert receive(conn, data) == [(OP_TEXT, b"hi"), (OP_PING, b"p1"), (OP_BINARY, b"\x00")]
    assert parse_server(b"".join(conn.data_to_send())) == [(OP_PONG, b"p1")]
    assert conn.data_to_send() == []
    assert conn.state == OPEN


def test_ping_inside_fragmented_message_comes_first() -> None:
    conn = WebSocketConnection()
    data = (
        client_frame(OP_TEXT, b"frag1", fin=False)
        + client_frame(OP_PING, b"p")
        + client_frame(0, b"frag2")
    )
    assert conn.receive_data(data) == [(OP_PING, b"p"), (OP_TEXT, b"frag1frag2")]


def test_close_takes_effect_after_the_events_before_it() -> None:
    conn = WebSocketConnection()
    events = conn.receive_data(
        client_frame(OP_TEXT, b"m") + client_frame(OP_CLOSE, encode_close(1000))
    )
    assert events == [(OP_TEXT, b"m")]
    # The reply to "m" can still be sent before the close frame goes out.
    assert conn.send(OP_TEXT, b"reply") is True
    conn.receive_done()
    out = parse_server(b"".join(conn.data_to_send()))
    assert out == [(OP_TEXT, b"reply"), (OP_CLOSE, encode_close(1000))]
    assert conn.state == CLOSED


def test_pong_is_reported() -> None:
    conn = WebSocketConnection()
    assert receive(conn, client_frame(OP_PONG, b"x")) == [(OP_PONG, b"x")]


def test_client_initiated_close_is_echoed() -> None:
    conn = WebSocketConnection()
    receive(conn, client_frame(OP_CLOSE, encode_close(4001, "bye")))
    assert conn.state == CLOSED
    assert conn.should_close_transport
    assert conn.close_code_received == 4001
    assert conn.close_reason_received == "bye"
    assert parse_server(b"".join(conn.data_to_send())) == [(OP_CLOSE, encode_close(4001))]


def test_empty_close_gets_empty_close() -> None:
    conn = WebSocketConnection()
    receive(conn, client_frame(OP_CLOSE, b""))
    assert conn.close_code_received == 1005
    assert parse_server(b"".join(conn.data_to_send())) == [(OP_CLOSE, b"")]


def test_server_initiated_close_waits_for_peer() -> None:
    conn = WebSocketConnection()
    conn.close(3001, "shutdown")
    assert conn.state == CLOSING
    assert not conn.should_close_transport
    assert parse_server(b"".join(conn.data_to_send())) == [
        (OP_CLOSE, encode_close(3001, "shutdown"))
    ]
    # Data still arriving before the peer's close frame is delivered; we send nothing.
    assert receive(conn, client_frame(OP_TEXT, b"late")) == [(OP_TEXT, b"late")]
    assert conn.send(OP_TEXT, b"nope") is False
    receive(conn, client_frame(OP_PING, b""))
    assert conn.data_to_send() == []
    receive(conn, client_frame(OP_CLOSE, encode_close(3001)))
    assert conn.state == CLOSED and conn.should_close_transport
    assert conn.data_to_send() == []  # no second close frame


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (encode_frame(OP_TEXT, b"x"), 1002),  # unmasked client frame
        (client_frame(OP_TEXT, b"\xff"), 1007),
        (client_frame(3, b""), 1002),
        (client_frame(OP_CLOSE, b"\x03"), 1002),
    ],
)
def test_protocol_errors_fail_the_connection(data: bytes, code: int) -> None:
    conn = WebSocketConnection()
    assert receive(conn, data) == []
    assert conn.state == CLOSED and conn.should_close_transport
    assert conn.error is not None and conn.error.code == code
    out = parse_server(b"".join(conn.data_to_send()))
    assert out[0][0] == OP_CLOSE and frames.parse_close(out[0][1])[0] == code


def test_messages_before_an_error_are_kept() -> None:
    conn = WebSocketConnection()
    data = client_frame(OP_TEXT, b"ok") + client_frame(OP_TEXT, b"\xc0\xaf")
    assert receive(conn, data) == [(OP_TEXT, b"ok")]
    assert conn.error is not None and conn.error.code == 1007


def test_message_size_limit() -> None:
    conn = WebSocketConnection(max_message_size=10)
    receive(conn, client_frame(OP_BINARY, b"x" * 11))
    assert conn.error is not None and conn.error.code == 1009


def test_eof_without_close_frame() -> None:
    conn = WebSocketConnection()
    conn.receive_eof()
    assert conn.close_code_received == 1006 and conn.state == CLOSED


def test_client_side_masks_frames() -> None:
    conn = WebSocketConnection(is_server=False)
    conn.send(OP_TEXT, b"hello")
    (frame,) = conn.data_to_send()
    assert frame[1] & 0x80
    server = frames.FrameParser(is_server=True)
    assert server.feed_data(frame) == [(OP_TEXT, b"hello")]


class FakeDeflate:
    threshold = 4

    def compress(self, payload: bytes) -> bytes:
        return payload[::-1]

    def decompress(self, payload: bytes, max_size: int) -> bytes:
        return payload[::-1]


def test_compression_threshold_and_rsv1() -> None:
    conn = WebSocketConnection(deflate=FakeDeflate())
    small = conn.encode_message(OP_TEXT, b"abc")
    big = conn.encode_message(OP_TEXT, b"abcdef")
    assert small[0] & 0x40 == 0 and small[2:] == b"abc"
    assert big[0] & 0x40 and big[2:] == b"fedcba"
    frame = encode_frame(OP_TEXT, b"olleh", True, True, MASK)
    assert conn.receive_data(frame) == [(OP_TEXT, b"hello")]
