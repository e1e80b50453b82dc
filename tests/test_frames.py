"""RFC 6455 frame core: exact byte vectors, every protocol error, both twins.

Every test takes the ``frames_impl`` fixture, so it runs against the compiled
``rtcore._frames`` (id ``cython``) and the pure-Python ``rtcore._frames_py``
(id ``python``). Frames are built here by hand (``raw_frame``), independently
of the encoder under test. Classes are named after the RFC 6455 section whose
rules they check.
"""

from __future__ import annotations

import gc
import struct
import zlib
from types import ModuleType

import pytest

from rtcore.errors import WebSocketProtocolError


KEY = bytes.fromhex("37fa213d")  # the masking key of RFC 6455 section 5.7


def xor(data: bytes, key: bytes) -> bytes:
    """Byte-by-byte reference masking."""
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


def raw_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    key: bytes | None = KEY,
    length: int | None = None,
    form: int | None = None,
) -> bytes:
    """A frame built by hand: any opcode, RSV bits (0x40/0x20/0x10), key or none.

    ``length`` overrides the announced payload length; ``form`` forces the
    length encoding (7, 16 or 64 bits) even when a shorter one would do.
    """
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | rsv | opcode
    mask_bit = 0x80 if key is not None else 0
    if form is None:
        form = 7 if n < 126 else 16 if n < 65536 else 64
    if form == 7:
        head = bytes((b0, mask_bit | n))
    elif form == 16:
        head = bytes((b0, mask_bit | 126)) + struct.pack("!H", n)
    else:
        head = bytes((b0, mask_bit | 127)) + struct.pack("!Q", n)
    if key is None:
        return head + payload
    return head + key + xor(payload, key)


def feed(parser, data: bytes, step: int | None = None) -> list[tuple[int, bytes]]:
    """Feed ``data`` whole or in ``step``-byte pieces; return all events."""
    if step is None:
        return parser.feed_data(data)
    events = []
    for i in range(0, len(data), step):
        events += parser.feed_data(data[i : i + step])
    return events


def feed_buffered(parser, data: bytes, step: int) -> list[tuple[int, bytes]]:
    """Feed ``data`` through get_buffer/buffer_updated, ``step`` bytes per read."""
    events = []
    for i in range(0, len(data), step):
        chunk = data[i : i + step]
        view = parser.get_buffer(len(chunk))
        assert len(view) >= len(chunk)
        view[: len(chunk)] = chunk
        events += parser.buffer_updated(len(chunk))
    return events


def expect_error(parser, code: int, reason: str) -> None:
    assert parser.closed
    assert parser.error == WebSocketProtocolError(code, reason)
    assert type(parser.error) is WebSocketProtocolError
    assert parser.buffered == 0


class FakeDeflate:
    """A permessage-deflate stand-in: raw inflate with RFC 7692's tail, limit checked."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, int]] = []

    def decompress(self, payload: bytes, max_size: int) -> bytes:
        self.calls.append((payload, max_size))
        inflater = zlib.decompressobj(-15)
        try:
            data = inflater.decompress(
                payload + b"\x00\x00\xff\xff", max_size + 1 if max_size else 0
            )
        except zlib.error:
            raise WebSocketProtocolError(1007, "corrupt compressed data") from None
        if max_size and (len(data) > max_size or inflater.unconsumed_tail):
            raise WebSocketProtocolError(1009, "message too big after decompression")
        return data


def deflate(data: bytes) -> bytes:
    """Compress ``data`` as one permessage-deflate message (tail stripped)."""
    compressor = zlib.compressobj(wbits=-15)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


# -- RFC 6455 section 5.7: examples ------------------------------------------------


class TestSection57Examples:
    """5.7. Examples: the exact bytes from the RFC, parsed and encoded."""

    def test_unmasked_text(self, frames_impl: ModuleType) -> None:
        wire = bytes.fromhex("810548656c6c6f")
        assert frames_impl.encode_frame(frames_impl.OP_TEXT, b"Hello") == wire
        parser = frames_impl.FrameParser(is_server=False)
        assert parser.feed_data(wire) == [(1, b"Hello")]
        assert parser.buffered == 0 and not parser.closed and parser.error is None

    def test_masked_text(self, frames_impl: ModuleType) -> None:
        wire = bytes.fromhex("818537fa213d7f9f4d5158")
        assert frames_impl.encode_frame(1, b"Hello", mask=KEY) == wire
        assert frames_impl.FrameParser().feed_data(wire) == [(1, b"Hello")]

    def test_fragmented_unmasked_text(self, frames_impl: ModuleType) -> None:
        first, last = bytes.fromhex("010348656c"), bytes.fromhex("80026c6f")
        assert frames_impl.encode_frame(1, b"Hel", fin=False) == first
        assert frames_impl.encode_frame(0, b"lo") == last
        parser = frames_impl.FrameParser(is_server=False)
        assert parser.feed_data(first) == []
        assert parser.feed_data(last) == [(1, b"Hello")]

    def test_ping_and_pong(self, frames_impl: ModuleType) -> None:
        ping = bytes.fromhex("890548656c6c6f")
        pong = bytes.fromhex("8a8537fa213d7f9f4d5158")
        assert frames_impl.encode_frame(frames_impl.OP_PING, b"Hello") == ping
        assert frames_impl.encode_frame(frames_impl.OP_PONG, b"Hello", mask=KEY) == pong
        assert frames_impl.FrameParser(is_server=False).feed_data(ping) == [(9, b"Hello")]
        assert frames_impl.FrameParser().feed_data(pong) == [(10, b"Hello")]

    def test_256_byte_binary(self, frames_impl: ModuleType) -> None:
        payload = bytes(range(256))
        wire = bytes.fromhex("827e0100") + payload
        assert frames_impl.frame_header(2, 256) == bytes.fromhex("827e0100")
        assert frames_impl.encode_frame(2, payload) == wire
        assert frames_impl.FrameParser(is_server=False).feed_data(wire) == [(2, payload)]

    def test_64k_binary(self, frames_impl: ModuleType) -> None:
        payload = bytes(range(256)) * 256
        header = bytes.fromhex("827f0000000000010000")
        assert frames_impl.frame_header(2, 65536) == header
        assert frames_impl.encode_frame(2, payload) == header + payload
        parser = frames_impl.FrameParser(is_server=False)
        assert parser.feed_data(header + payload) == [(2, payload)]

    def test_constants(self, frames_impl: ModuleType) -> None:
        f = frames_impl
        assert (f.OP_CONT, f.OP_TEXT, f.OP_BINARY) == (0, 1, 2)
        assert (f.OP_CLOSE, f.OP_PING, f.OP_PONG) == (8, 9, 10)
        assert (f.CLOSE_NORMAL, f.CLOSE_PROTOCOL_ERROR, f.CLOSE_INVALID_DATA) == (1000, 1002, 1007)
        assert (f.CLOSE_NO_STATUS, f.CLOSE_ABNORMAL, f.CLOSE_MESSAGE_TOO_BIG) == (1005, 1006, 1009)
        assert (f.CLOSE_GOING_AWAY, f.CLOSE_UNSUPPORTED_DATA, f.CLOSE_POLICY_VIOLATION) == (
            1001,
            1003,
            1008,
        )
        assert (f.CLOSE_MANDATORY_EXTENSION, f.CLOSE_INTERNAL_ERROR) == (1010, 1011)


# -- RFC 6455 section 5.2: base framing ---------------------------------------------


LENGTHS = [0, 1, 125, 126, 127, 65535, 65536, 70000]
HEADERS = {
    0: "8200",
    1: "8201",
    125: "827d",
    126: "827e007e",
    127: "827e007f",
    65535: "827effff",
    65536: "827f0000000000010000",
    70000: "827f0000000000011170",
}


class TestSection52Lengths:
    """5.2. Payload length: 7-bit, 16-bit and 64-bit forms at their boundaries."""

    @pytest.mark.parametrize("n", LENGTHS)
    def test_header_bytes(self, frames_impl: ModuleType, n: int) -> None:
        assert frames_impl.frame_header(2, n).hex() == HEADERS[n]
        frame = frames_impl.encode_frame(2, bytes(n))
        assert frame[: len(HEADERS[n]) // 2].hex() == HEADERS[n]
        assert len(frame) == len(HEADERS[n]) // 2 + n

    @pytest.mark.parametrize("n", LENGTHS)
    def test_masked_header_bytes(self, frames_impl: ModuleType, n: int) -> None:
        payload = bytes(i & 0xFF for i in range(n))
        frame = frames_impl.encode_frame(2, payload, mask=KEY)
        assert frame == raw_frame(2, payload, key=KEY)
        head = bytes.fromhex(HEADERS[n])
        assert frame[:2] == bytes((head[0], head[1] | 0x80)) and frame[2 : len(head)] == head[2:]

    @pytest.mark.parametrize("n", LENGTHS)
    @pytest.mark.parametrize("is_server", [True, False], ids=["client-frames", "server-frames"])
    def test_parse(self, frames_impl: ModuleType, n: int, is_server: bool) -> None:
        payload = bytes((i * 7) & 0xFF for i in range(n))
        wire = raw_frame(2, payload, key=KEY if is_server else None)
        parser = frames_impl.FrameParser(is_server=is_server)
        assert parser.feed_data(wire[:-1] if n else wire[:1]) == []
        assert parser.buffered == (len(wire) - 1 if n else 1)
        rest = wire[-1:] if n else wire[1:]
        assert parser.feed_data(rest) == [(2, payload)]
        assert parser.buffered == 0

    @pytest.mark.parametrize("form", [16, 64])
    def test_non_minimal_length_is_accepted(self, frames_impl: ModuleType, form: int) -> None:
        wire = raw_frame(1, b"abc", form=form)
        assert frames_impl.FrameParser().feed_data(wire) == [(1, b"abc")]

    def test_frame_header_flags(self, frames_impl: ModuleType) -> None:
        assert frames_impl.frame_header(1, 3, fin=False) == b"\x01\x03"
        assert frames_impl.frame_header(1, 3, rsv1=True) == b"\xc1\x03"
        assert frames_impl.frame_header(0, 3, False, True) == b"\x40\x03"

    @pytest.mark.parametrize("opcode", [-1, 16, 255])
    def test_frame_header_bad_opcode(self, frames_impl: ModuleType, opcode: int) -> None:
        with pytest.raises(ValueError, match="opcode out of range"):
            frames_impl.frame_header(opcode, 0)

    @pytest.mark.parametrize("length", [-1, 1 << 63, 1 << 64])
    def test_frame_header_bad_length(self, frames_impl: ModuleType, length: int) -> None:
        with pytest.raises(ValueError):
            frames_impl.frame_header(2, length)

    def test_frame_header_largest_length(self, frames_impl: ModuleType) -> None:
        assert frames_impl.frame_header(2, (1 << 63) - 1) == b"\x82\x7f" + b"\x7f" + b"\xff" * 7


class TestSection52Errors:
    """5.2. Base framing: every violation, with its close code and reason."""

    @pytest.mark.parametrize("rsv", [0x20, 0x10, 0x30], ids=["rsv2", "rsv3", "rsv2+3"])
    def test_rsv2_rsv3(self, frames_impl: ModuleType, rsv: int) -> None:
        parser = frames_impl.FrameParser(deflate=FakeDeflate())
        assert parser.feed_data(raw_frame(2, b"x", rsv=rsv)) == []
        expect_error(parser, 1002, "reserved bits RSV2/RSV3 set")

    @pytest.mark.parametrize("opcode", [1, 2])
    def test_rsv1_without_extension(self, frames_impl: ModuleType, opcode: int) -> None:
        parser = frames_impl.FrameParser()
        parser.feed_data(raw_frame(opcode, b"x", rsv=0x40))
        expect_error(parser, 1002, "RSV1 set without a negotiated extension")

    @pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 11, 12, 13, 14, 15])
    def test_reserved_opcodes(self, frames_impl: ModuleType, opcode: int) -> None:
        parser = frames_impl.FrameParser()
        assert parser.feed_data(raw_frame(opcode, b"")) == []
        expect_error(parser, 1002, f"reserved opcode {opcode}")

    @pytest.mark.parametrize("opcode", [8, 9, 10])
    def test_fragmented_control_frame(self, frames_impl: ModuleType, opcode: int) -> None:
        parser = frames_impl.FrameParser()
        parser.feed_data(raw_frame(opcode, b"", fin=False))
        expect_error(parser, 1002, "fragmented control frame")

    @pytest.mark.parametrize("opcode", [8, 9, 10])
    @pytest.mark.parametrize("n", [126, 127, 65536])
    def test_control_frame_too_long(self, frames_impl: ModuleType, opcode: int, n: int) -> None:
        parser = frames_impl.FrameParser()
        # Rejected from the first two bytes: the length form alone is enough.
        parser.feed_data(raw_frame(opcode, bytes(n))[:2])
        expect_error(parser, 1002, "control frame too long")

    def test_control_frame_of_125_bytes(self, frames_impl: ModuleType) -> None:
        parser = frames_impl.FrameParser()
        assert parser.feed_data(raw_frame(9, b"p" * 125)) == [(9, b"p" * 125)]

    @pytest.mark.parametrize("deflate", [None, FakeDeflate()], ids=["no-deflate", "deflate"])
    def test_rsv1_on_control_frame(self, frames_impl: ModuleType, deflate) -> None:
        parser = frames_impl.FrameParser(deflate=deflate)
        parser.feed_data(raw_frame(9, b"", rsv=0x40))
        expect_error(parser, 1002, "RSV1 set on a control frame")

    def test_continuation_without_start(self, frames_impl: ModuleType) -> None:
        parser = frames_impl.FrameParser()
        parser.feed_data(raw_frame(0, b"x"))
        expect_error(parser, 1002, "continuation frame without a message to continue")

    def test_continuation_after_finished_message(self, frames_impl: ModuleType) -> None:
        parser = frames_impl.FrameParser()
        wire = raw_frame(1, b"a", fin=False) + raw_frame(0, b"b") + raw_frame(0, b"c")
        assert parser.feed_data(wire) == [(1, b"ab")]
        expect_error(parser, 1002, "continuation frame without a message to continue")

    @pytest.mark.parametrize("opcode", [1, 2])
    def test_new_data_frame_inside_fragmented_message(
        self, frames_impl: ModuleType, opcode: int
    ) -> None:
        parser = frames_impl.FrameParser()
        parser.feed_data(raw_frame(2, b"part", fin=False))
        assert parser.feed_data(raw_frame(opcode, b"x")) == []
        expect_error(parser, 1002, "new data frame inside a fragmented message")

    def test_rsv1_on_continuation(self, frames_impl: ModuleType) -> None:
        parser = frames_impl.FrameParser(deflate=FakeDeflate())
        parser.feed_data(raw_frame(2, b"part", fin=False, rsv=0x40))
        parser.feed_data(raw_frame(0, b"x", rsv=0x40))
        expect_error(parser, 1002, "RSV1 set on a continuation frame")

    def test_unmasked_client_frame(self, frames_impl: ModuleType) -> None:
        parser = frames_impl.FrameParser(is_server=True)
        parser.feed_data(raw_frame(1, b"hi", key=None))
        expect_error(parser, 1002, "client frame is not masked")

    def test_masked_server_frame(self, frames_impl: ModuleType) -> None:
        parser = frames_impl.FrameParser(is_server=False)
        parser.feed_data(raw_frame(1, b"hi", key=KEY))
        expect_error(parser, 1002, "server frame is masked")

    @pytest.mark.parametrize("length", [1 << 63, (1 << 64) - 1])
    def test_64bit_length_msb(self, frames_impl: ModuleType, length: int) -> None:
        parser = frames_impl.FrameParser(max_message_size=0)
        wire = bytes((0x82, 0xFF)) + struct.pack("!Q", length)
        assert parser.feed_data(wire[:9]) == []
        assert not parser.closed and parser.buffered == 9
        parser.feed_data(wire[9:])
        expect_error(parser, 1002, "frame length has the most significant bit set")

    def test_header_errors_need_no_payload(self, frames_impl: ModuleType) -> None:
        parser = frames_impl.FrameParser()
        parser.feed_data(b"\x83")
        assert not parser.closed and parser.buffered == 1
        parser.feed_data(b"\x80")
        expect_error(parser, 1002, "reserved opcode 3")


class TestMessageSizeLimit:
    """10.4. Implementation-specific limits: 1009 as soon as a header says too much."""

    def test_single_frame_over_limit(self, frames_impl: ModuleType) -> None:
        parser = frames_impl.FrameParser(max_message_size=1000)
        wire = raw_frame(2, bytes(1001))
        assert parser.feed_data(wire[:4]) == []  # 2 + 2 length bytes; no key, no payload
        expect_error(parser, 1009, "message exceeds the 1000-byte limit")

    def test_limit_is_inclusive(self, frames_impl: ModuleType) -> None:
        parser = frames_impl.FrameParser(max_message_size=1000)
        assert parser.feed_data(raw_frame(2, bytes(1000))) == [(2, bytes(1000))]

    def test_one_gigabyte_header_with_small_limit(self, frames_impl: ModuleType) -> None:
        parser = frames_impl.FrameParser(max_message_size=65536)
        header = bytes((0x82, 0xFF)) + struct.pack("!Q", 1 << 30)
        assert parser.feed_data(header) == []
        expect_error(parser, 1009, "message exceeds the 65536-byte limit")

    def test_accumulated_fragments_over_limit(self, frames_impl: ModuleType) -> None:
        parser = frames_impl.FrameParser(max_message_size=10)
        assert parser.feed_data(raw_frame(1, b"123456", fin=False)) == []
        assert parser.feed_data(raw_frame(0, b"7890", fin=False)) == []
        assert parser.feed_data(raw_frame(0, b"x")[:2]) == []
        expect_error(parser, 1009, "message exceeds the 10-byte limit")

    def test_accumulated_fragments_at_limit(self, frames_impl: ModuleType) -> None:
        parser = frames_impl.FrameParser(max_message_size=10)
        wire = raw_frame(1, b"123456", fin=False) + raw_frame(0, b"7890")
        assert parser.feed_data(wire) == [(1, b"1234567890")]
        # The count starts again with the next message.
        assert parser.feed_data(raw_frame(2, bytes(10))) == [(2, bytes(10))]

    def test_control_frames_do_not_count(self, frames_impl: ModuleType) -> None:
        parser = frames_impl.FrameParser(max_message_size=4)
        wire = raw_frame(2, b"ab", fin=False) + raw_frame(9, b"0123456789") + raw_frame(0, b"cd")
        assert parser.feed_data(wire) == [(9, b"0123456789"), (2, b"abcd")]

    @pytest.mark.parametrize("limit", [0, -1])
    def test_no_limit(self, frames_impl: ModuleType, limit: int) -> None:
        parser = frames_impl.FrameParser(max_message_size=limit)
        assert parser.max_message_size == 0
        payload = bytes(range(256)) * 8192  # 2 MiB
        assert feed(parser, raw_frame(2, payload), 300_000) == [(2, payload)]

    def test_attributes(self, frames_impl: ModuleType) -> None:
        parser = frames_impl.FrameParser(max_message_size=123, is_server=False)
        assert parser.max_message_size == 123 and not parser.is_server
        default = frames_impl.FrameParser()
        assert default.max_message_size == 1 << 20 and default.is_server
        assert default.error is None and not default.closed and default.buffered == 0

    def test_keyword_only(self, frames_impl: ModuleType) -> None:
        with pytest.raises(TypeError):
            frames_impl.FrameParser(100)  # type: ignore[misc]
        with pytest.raises(TypeError):
            frames_impl.FrameParser(max_size=100)  # type: ignore[call-arg]


# -- RFC 6455 section 5.4/5.5: fragmentation and control frames ------------------------


class TestSection54Fragmentation:
    """5.4. Fragmentation: reassembly, interleaved control frames, any chunking."""

    def stream(self) -> tuple[bytes, list[tuple[int, bytes]]]:
        text = "fragmented ünïcödé message €𝄞".encode()
        wire = (
            raw_frame(1, b"single")
            + raw_frame(2, b"", fin=True)
            + raw_frame(1, text[:13], fin=False)
            + raw_frame(9, b"ping in the middle")
            + raw_frame(0, text[13:20], fin=False)  # splits a multi-byte character
            + raw_frame(10, b"")
            + raw_frame(0, b"", fin=False)
            + raw_frame(0, text[20:])
            + raw_frame(2, bytes(300), key=bytes(4))
            + raw_frame(2, bytes(range(256)) * 300)
            + raw_frame(8, b"\x03\xe8bye")
        )
        events = [
            (1, b"single"),
            (2, b""),
            (9, b"ping in the middle"),
            (10, b""),
            (1, text),
            (2, bytes(300)),
            (2, bytes(range(256)) * 300),
            (8, b"\x03\xe8bye"),
        ]
        return wire, events

    def test_whole(self, frames_impl: ModuleType) -> None:
        wire, events = self.stream()
        parser = frames_impl.FrameParser()
        assert parser.feed_data(wire) == events
        assert parser.closed and parser.error is None

    @pytest.mark.parametrize("step", [1, 2, 3, 7, 125, 4096])
    def test_chunked_feed_data(self, frames_impl: ModuleType, step: int) -> None:
        wire, events = self.stream()
        assert feed(frames_impl.FrameParser(), wire, step) == events

    @pytest.mark.parametrize("step", [1, 3, 7, 1000, 65536])
    def test_chunked_buffered(self, frames_impl: ModuleType, step: int) -> None:
        wire, events = self.stream()
        assert feed_buffered(frames_impl.FrameParser(), wire, step) == events

    def test_input_types(self, frames_impl: ModuleType) -> None:
        wire, events = self.stream()
        for data in (bytearray(wire), memoryview(wire), memoryview(bytearray(wire))):
            assert frames_impl.FrameParser().feed_data(data) == events

    def test_events_are_bytes(self, frames_impl: ModuleType) -> None:
        wire, _ = self.stream()
        for opcode, payload in frames_impl.FrameParser().feed_data(wire):
            assert type(opcode) is int and type(payload) is bytes

    def test_empty_input(self, frames_impl: ModuleType) -> None:
        parser = frames_impl.FrameParser()
        assert parser.feed_data(b"") == []
        assert parser.feed_data(memoryview(b"")) == []
        assert parser.buffered == 0 and not parser.closed

    def test_buffered_counts_partial_frames(self, frames_impl: ModuleType) -> None:
        parser = frames_impl.FrameParser()
        wire = raw_frame(1, b"a") + raw_frame(2, b"0123456789")
        assert parser.feed_data(wire[:-3]) == [(1, b"a")]
        assert parser.buffered == len(raw_frame(2, b"0123456789")) - 3
        assert parser.feed_data(wire[-3:]) == [(2, b"0123456789")]
        assert parser.buffered == 0


class TestSection55ControlFrames:
    """5.5. Control frames and 5.5.1 Close: after a close, input is ignored."""

    def test_data_after_close_is_ignored(self, frames_impl: ModuleType) -> None:
        parser = frames_impl.FrameParser()
        trailing = raw_frame(1, b"late") + raw_frame(9, b"")
        events = parser.feed_data(raw_frame(1, b"on time") + raw_frame(8, b"") + trailing)
        assert events == [(1, b"on time"), (8, b"")]
        assert parser.closed and parser.error is None
        assert parser.buffered == len(trailing)
        assert parser.feed_data(raw_frame(1, b"later")) == []
        view = parser.get_buffer(-1)
        view[:3] = b"abc"
        assert parser.buffer_updated(3) == []
        assert parser.buffered == len(trailing)

    def test_close_abandons_fragmented_message(self, frames_impl: ModuleType) -> None:
        parser = frames_impl.FrameParser()
        wire = raw_frame(1, b"part", fin=False) + raw_frame(8, b"\x03\xe9")
        assert parser.feed_data(wire) == [(8, b"\x03\xe9")]

    @pytest.mark.parametrize(
        "payload",
        [b"", b"\x03\xe8", b"\x03\xe8normal", b"\x0f\xa0", b"\x13\x87", b"\x03\xe9" + "€".encode()],
        ids=["empty", "1000", "1000+reason", "4000", "4999", "utf8-reason"],
    )
    def test_valid_close_frames(self, frames_impl: ModuleType, payload: bytes) -> None:
        parser = frames_impl.FrameParser()
        assert parser.feed_data(raw_frame(8, payload)) == [(8, payload)]
        assert parser.closed and parser.error is None

    def test_one_byte_close_payload(self, frames_impl: ModuleType) -> None:
        parser = frames_impl.FrameParser()
        parser.feed_data(raw_frame(8, b"\x03"))
        expect_error(parser, 1002, "close frame with a 1-byte payload")

    @pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
    def test_invalid_close_code(self, frames_impl: ModuleType, code: int) -> None:
        parser = frames_impl.FrameParser()
        parser.feed_data(raw_frame(8, struct.pack("!H", code) + b"why"))
        expect_error(parser, 1002, f"invalid close code {code}")

    @pytest.mark.parametrize("reason", [b"\xff", b"ok\xc3", b"\xed\xa0\x80", b"\xc0\x80"])
    def test_invalid_close_reason(self, frames_impl: ModuleType, reason: bytes) -> None:
        parser = frames_impl.FrameParser()
        assert parser.feed_data(raw_frame(2, b"x") + raw_frame(8, b"\x03\xe8" + reason)) == [
            (2, b"x")
        ]
        expect_error(parser, 1007, "close reason is not valid UTF-8")

    def test_ping_pong_payloads(self, frames_impl: ModuleType) -> None:
        parser = frames_impl.FrameParser(is_server=False)
        wire = raw_frame(9, b"\x00\xff", key=None) + raw_frame(10, b"pong", key=None)
        assert parser.feed_data(wire) == [(9, b"\x00\xff"), (10, b"pong")]


class TestSection8Utf8:
    """8.1. Handling errors in UTF-8-encoded data: 1007, fragmented or not."""

    INVALID = [
        b"\xff",
        b"\x80",
        b"\xc0\x80",  # overlong NUL
        b"\xc1\xbf",
        b"\xe0\x80\x80",  # overlong 3-byte
        b"\xe0\x9f\xbf",
        b"\xed\xa0\x80",  # surrogate U+D800
        b"\xed\xbf\xbf",  # surrogate U+DFFF
        b"\xf0\x80\x80\x80",  # overlong 4-byte
        b"\xf0\x8f\xbf\xbf",
        b"\xf4\x90\x80\x80",  # U+110000
        b"\xf5\x80\x80\x80",
        b"\xf8\x88\x80\x80\x80",
        b"\xc3\x28",  # bad continuation
        b"\xe2\x82\x28",
        b"ab\xe2\x28\xa1cd",
    ]
    TRUNCATED = [b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98", b"abc\xf4"]
    VALID = [
        b"",
        b"plain ascii" * 10,
        "é€𝄞".encode(),
        b"\x7f\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\xef\xbf\xbf",
        b"\xf0\x90\x80\x80\xf4\x8f\xbf\xbf",
        ("x" * 37 + "ü" + "y" * 64 + "€").encode(),
    ]

    @pytest.mark.parametrize("data", VALID)
    def test_validate_valid(self, frames_impl: ModuleType, data: bytes) -> None:
        assert frames_impl.validate_utf8(data) is True
        assert frames_impl.validate_utf8(bytearray(data)) is True
        assert frames_impl.validate_utf8(memoryview(data)) is True

    @pytest.mark.parametrize("data", INVALID + TRUNCATED)
    def test_validate_invalid(self, frames_impl: ModuleType, data: bytes) -> None:
        assert frames_impl.validate_utf8(data) is False
        # The ASCII fast path must not skip the bad bytes wherever they sit.
        for pad in (1, 7, 8, 15, 16, 33):
            assert frames_impl.validate_utf8(b"a" * pad + data) is False
            if data not in self.TRUNCATED:
                assert frames_impl.validate_utf8(b"a" * pad + data + b"b" * pad) is False

    @pytest.mark.parametrize("data", VALID)
    def test_text_frame_valid(self, frames_impl: ModuleType, data: bytes) -> None:
        assert frames_impl.FrameParser().feed_data(raw_frame(1, data)) == [(1, data)]

    @pytest.mark.parametrize("data", INVALID + TRUNCATED)
    def test_text_frame_invalid(self, frames_impl: ModuleType, data: bytes) -> None:
        parser = frames_impl.FrameParser()
        assert parser.feed_data(raw_frame(2, data) + raw_frame(1, data)) == [(2, data)]
        expect_error(parser, 1007, "invalid UTF-8 in text message")

    @pytest.mark.parametrize("data", INVALID)
    def test_fragmented_invalid_fails_at_that_fragment(
        self, frames_impl: ModuleType, data: bytes
    ) -> None:
        parser = frames_impl.FrameParser()
        assert parser.feed_data(raw_frame(1, b"ok so far", fin=False)) == []
        assert not parser.closed
        assert parser.feed_data(raw_frame(0, b"x" + data + b"y", fin=False)) == []
        expect_error(parser, 1007, "invalid UTF-8 in text message")

    @pytest.mark.parametrize("data", VALID[2:])
    def test_fragmented_valid_split_anywhere(self, frames_impl: ModuleType, data: bytes) -> None:
        for cut in range(len(data) + 1):
            parser = frames_impl.FrameParser()
            wire = raw_frame(1, data[:cut], fin=False) + raw_frame(0, data[cut:])
            assert parser.feed_data(wire) == [(1, data)], cut

    @pytest.mark.parametrize("data", TRUNCATED)
    def test_incomplete_at_message_end(self, frames_impl: ModuleType, data: bytes) -> None:
        parser = frames_impl.FrameParser()
        # Not an error while the message goes on...
        assert parser.feed_data(raw_frame(1, data, fin=False)) == []
        assert not parser.closed
        # ...but it is when the message ends inside the sequence.
        assert parser.feed_data(raw_frame(0, b"")) == []
        expect_error(parser, 1007, "invalid UTF-8 in text message")

    def test_pending_surrogate_prefix(self, frames_impl: ModuleType) -> None:
        # Like Python's incremental decoder, a fragment ending in ED A0..BF is
        # not rejected yet: control frames still get through...
        parser = frames_impl.FrameParser()
        wire = raw_frame(1, b"ok\xed\xa0", fin=False) + raw_frame(0, b"", fin=False)
        wire += raw_frame(9, b"ping") + raw_frame(8, b"\x03\xe8")
        assert parser.feed_data(wire) == [(9, b"ping"), (8, b"\x03\xe8")]
        assert parser.error is None
        # ...but any further byte of the message, or its end, is an error.
        for last in (raw_frame(0, b"\x80"), raw_frame(0, b"a", fin=False), raw_frame(0, b"")):
            parser = frames_impl.FrameParser()
            assert parser.feed_data(raw_frame(1, b"\xed", fin=False)) == []
            assert parser.feed_data(raw_frame(0, b"\xbf", fin=False)) == []
            assert parser.error is None
            parser.feed_data(last)
            expect_error(parser, 1007, "invalid UTF-8 in text message")

    def test_binary_is_not_validated(self, frames_impl: ModuleType) -> None:
        parser = frames_impl.FrameParser()
        wire = raw_frame(2, b"\xff", fin=False) + raw_frame(0, b"\xc0")
        assert parser.feed_data(wire) == [(2, b"\xff\xc0")]


# -- after an error ---------------------------------------------------------------------


class TestFailure:
    """7.1.7. Fail the WebSocket Connection: the parser stops and keeps the error."""

    def test_events_before_the_error_are_returned(self, frames_impl: ModuleType) -> None:
        parser = frames_impl.FrameParser()
        wire = raw_frame(1, b"a") + raw_frame(9, b"p") + raw_frame(4, b"") + raw_frame(1, b"b")
        assert parser.feed_data(wire) == [(1, b"a"), (9, b"p")]
        expect_error(parser, 1002, "reserved opcode 4")

    def test_input_after_error_is_ignored(self, frames_impl: ModuleType) -> None:
        parser = frames_impl.FrameParser()
        parser.feed_data(raw_frame(1, b"\xff"))
        error = parser.error
        assert parser.feed_data(raw_frame(1, b"fine")) == []
        view = parser.get_buffer(-1)
        frame = raw_frame(1, b"fine")
        view[: len(frame)] = frame
        assert parser.buffer_updated(len(frame)) == []
        assert parser.error is error
        expect_error(parser, 1007, "invalid UTF-8 in text message")

    def test_error_str(self, frames_impl: ModuleType) -> None:
        parser = frames_impl.FrameParser()
        parser.feed_data(raw_frame(1, b"x", key=None))
        assert str(parser.error) == "1002: client frame is not masked"
        assert parser.error.code == 1002 and parser.error.reason == "client frame is not masked"


# -- BufferedProtocol path -----------------------------------------------------------------


class TestBufferedProtocol:
    """get_buffer/buffer_updated, the asyncio.BufferedProtocol pair."""

    def test_roundtrip(self, frames_impl: ModuleType) -> None:
        parser = frames_impl.FrameParser()
        view = parser.get_buffer(-1)
        assert isinstance(view, memoryview) and not view.readonly and len(view) >= 65536
        frame = raw_frame(1, b"hello")
        view[: len(frame)] = frame
        assert parser.buffer_updated(len(frame)) == [(1, b"hello")]

    def test_partial_frames_across_reads(self, frames_impl: ModuleType) -> None:
        payload = bytes(range(256)) * 64
        wire = raw_frame(2, payload) * 3
        parser = frames_impl.FrameParser()
        assert feed_buffered(parser, wire, 5000) == [(2, payload)] * 3
        assert parser.buffered == 0

    def test_large_frame_grows_the_buffer(self, frames_impl: ModuleType) -> None:
        payload = bytes(range(251)) * 4200  # ~1 MiB, not a multiple of 8
        parser = frames_impl.FrameParser(max_message_size=0)
        assert feed_buffered(parser, raw_frame(2, payload), 65536) == [(2, payload)]

    def test_zero_bytes(self, frames_impl: ModuleType) -> None:
        parser = frames_impl.FrameParser()
        parser.get_buffer(-1)
        assert parser.buffer_updated(0) == []

    def test_mixed_with_feed_data(self, frames_impl: ModuleType) -> None:
        wire = raw_frame(1, b"one") + raw_frame(1, b"two")
        parser = frames_impl.FrameParser()
        assert parser.feed_data(wire[:4]) == []
        view = parser.get_buffer(100)
        view[: len(wire) - 4] = wire[4:]
        assert parser.buffer_updated(len(wire) - 4) == [(1, b"one"), (1, b"two")]

    def test_buffer_updated_without_get_buffer(self, frames_impl: ModuleType) -> None:
        parser = frames_impl.FrameParser()
        with pytest.raises(ValueError, match="buffer_updated without a matching get_buffer"):
            parser.buffer_updated(1)

    @pytest.mark.parametrize("extra", [1, 1 << 20])
    def test_buffer_updated_too_many_bytes(self, frames_impl: ModuleType, extra: int) -> None:
        parser = frames_impl.FrameParser()
        view = parser.get_buffer(-1)
        with pytest.raises(ValueError, match="buffer_updated without a matching get_buffer"):
            parser.buffer_updated(len(view) + extra)

    def test_buffer_updated_negative(self, frames_impl: ModuleType) -> None:
        parser = frames_impl.FrameParser()
        parser.get_buffer(-1)
        with pytest.raises(ValueError, match="buffer_updated without a matching get_buffer"):
            parser.buffer_updated(-1)


# -- RFC 6455 section 5.3: masking -----------------------------------------------------------


MASK_KEYS = [bytes(4), b"\xff\xff\xff\xff", KEY, b"\x01\x02\x03\x04"]


class TestSection53Masking:
    """5.3. Client-to-server masking: every length 0..70 at every start offset."""

    @pytest.mark.parametrize("key", MASK_KEYS, ids=lambda k: k.hex())
    def test_apply_mask_lengths(self, frames_impl: ModuleType, key: bytes) -> None:
        source = bytes((i * 31 + 7) & 0xFF for i in range(80))
        for offset in range(8):
            for n in range(71):
                data = source[offset : offset + n]
                expected = xor(data, key)
                assert frames_impl.apply_mask(data, key) == expected, (offset, n)
                view = memoryview(bytearray(source))[offset : offset + n]
                assert frames_impl.apply_mask(view, key) == expected, (offset, n)

    @pytest.mark.parametrize("key", MASK_KEYS, ids=lambda k: k.hex())
    def test_mask_inplace_lengths(self, frames_impl: ModuleType, key: bytes) -> None:
        source = bytes((i * 13 + 5) & 0xFF for i in range(90))
        for offset in range(8):
            for n in range(71):
                buf = bytearray(source)
                frames_impl.mask_inplace(memoryview(buf)[offset : offset + n], key)
                expected = source[:offset] + xor(source[offset : offset + n], key)
                assert buf == expected + source[offset + n :], (offset, n)

    def test_mask_inplace_bytearray(self, frames_impl: ModuleType) -> None:
        buf = bytearray(b"Hello")
        frames_impl.mask_inplace(buf, KEY)
        assert buf == bytes.fromhex("7f9f4d5158")
        frames_impl.mask_inplace(buf, bytearray(KEY))
        assert buf == b"Hello"

    def test_apply_mask_return_type_and_involution(self, frames_impl: ModuleType) -> None:
        data = bytes(range(256)) * 5
        masked = frames_impl.apply_mask(bytearray(data), memoryview(KEY))
        assert type(masked) is bytes
        assert frames_impl.apply_mask(masked, KEY) == data
        assert frames_impl.apply_mask(b"", KEY) == b""

    def test_large(self, frames_impl: ModuleType) -> None:
        data = bytes(range(256)) * 4099
        assert frames_impl.apply_mask(data, KEY) == xor(data, KEY)

    def test_non_contiguous(self, frames_impl: ModuleType) -> None:
        source = bytearray(range(40))
        view = memoryview(source)[::2]
        assert frames_impl.apply_mask(view, KEY) == xor(bytes(view), KEY)
        frames_impl.mask_inplace(view, KEY)
        assert bytes(source[::2]) == xor(bytes(range(0, 40, 2)), KEY)
        assert bytes(source[1::2]) == bytes(range(1, 40, 2))

    @pytest.mark.parametrize("key", [b"", b"abc", b"abcde"])
    def test_bad_key(self, frames_impl: ModuleType, key: bytes) -> None:
        with pytest.raises(ValueError, match="mask must be 4 bytes"):
            frames_impl.apply_mask(b"data", key)
        with pytest.raises(ValueError, match="mask must be 4 bytes"):
            frames_impl.mask_inplace(bytearray(b"data"), key)
        with pytest.raises(ValueError, match="mask must be 4 bytes"):
            frames_impl.encode_frame(1, b"data", mask=key)

    @pytest.mark.parametrize("buf", [b"data", memoryview(b"data")], ids=["bytes", "readonly-view"])
    def test_mask_inplace_readonly(self, frames_impl: ModuleType, buf) -> None:
        with pytest.raises(TypeError, match="writable"):
            frames_impl.mask_inplace(buf, KEY)

    def test_encode_frame_masked_roundtrip(self, frames_impl: ModuleType) -> None:
        for n in range(71):
            payload = bytes(range(n))
            frame = frames_impl.encode_frame(2, payload, mask=KEY)
            assert frame == raw_frame(2, payload, key=KEY)
            assert frames_impl.FrameParser().feed_data(frame) == [(2, payload)]


class TestEncodeFrame:
    """5.2 from the sending side: flags, control-frame rules, payload types."""

    def test_flags(self, frames_impl: ModuleType) -> None:
        assert frames_impl.encode_frame(2, b"z", fin=False) == b"\x02\x01z"
        assert frames_impl.encode_frame(1, b"z", True, True) == b"\xc1\x01z"
        assert frames_impl.encode_frame(0, b"", fin=True) == b"\x80\x00"

    def test_payload_types(self, frames_impl: ModuleType) -> None:
        for payload in (bytearray(b"abc"), memoryview(b"abc")):
            assert frames_impl.encode_frame(1, payload) == b"\x81\x03abc"
            assert frames_impl.encode_frame(1, payload, mask=KEY) == raw_frame(1, b"abc")

    @pytest.mark.parametrize("opcode", [8, 9, 10, 11, 15])
    def test_control_frame_rules(self, frames_impl: ModuleType, opcode: int) -> None:
        with pytest.raises(ValueError, match="control frames"):
            frames_impl.encode_frame(opcode, bytes(126))
        with pytest.raises(ValueError, match="control frames"):
            frames_impl.encode_frame(opcode, b"", fin=False)
        assert len(frames_impl.encode_frame(opcode, bytes(125))) == 127

    @pytest.mark.parametrize("opcode", [-1, 16])
    def test_opcode_range(self, frames_impl: ModuleType, opcode: int) -> None:
        with pytest.raises(ValueError, match="opcode out of range"):
            frames_impl.encode_frame(opcode, b"")


# -- close payloads ------------------------------------------------------------------------------


class TestSection7Close:
    """7.4. Status codes and 5.5.1: encoding and parsing close payloads."""

    def test_encode(self, frames_impl: ModuleType) -> None:
        assert frames_impl.encode_close() == b"\x03\xe8"
        assert frames_impl.encode_close(1001, "bye") == b"\x03\xe9bye"
        assert frames_impl.encode_close(4000, "€") == b"\x0f\xa0\xe2\x82\xac"

    @pytest.mark.parametrize(
        ("reason", "kept"),
        [
            ("a" * 200, "a" * 123),
            ("é" * 100, "é" * 61),  # 2-byte characters: 122 bytes fit
            ("a" + "€" * 50, "a" + "€" * 40),  # 3-byte: 121 bytes
            ("aa" + "€" * 50, "aa" + "€" * 40),  # 122 bytes
            ("aaa" + "€" * 50, "aaa" + "€" * 40),  # exactly 123 bytes
            ("𝄞" * 40, "𝄞" * 30),  # 4-byte: 120 bytes
            ("x" * 123, "x" * 123),
        ],
    )
    def test_reason_cut_at_character_boundary(
        self, frames_impl: ModuleType, reason: str, kept: str
    ) -> None:
        payload = frames_impl.encode_close(1000, reason)
        assert len(payload) <= 125
        assert payload == b"\x03\xe8" + kept.encode()
        assert frames_impl.parse_close(payload) == (1000, kept)

    @pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 2000, 2999, 5000])
    def test_encode_invalid_code(self, frames_impl: ModuleType, code: int) -> None:
        with pytest.raises(ValueError, match=f"invalid close code {code}"):
            frames_impl.encode_close(code)

    def test_parse(self, frames_impl: ModuleType) -> None:
        assert frames_impl.parse_close(b"") == (1005, "")
        assert frames_impl.parse_close(b"\x03\xe8") == (1000, "")
        assert frames_impl.parse_close(bytearray(b"\x0b\xb8ok")) == (3000, "ok")
        assert frames_impl.parse_close(memoryview(b"x\x03\xf3\xc3\xbc")[1:]) == (1011, "ü")

    def test_parse_roundtrip(self, frames_impl: ModuleType) -> None:
        for code in (1000, 1001, 1002, 1003, 1007, 1011, 1012, 1014, 3000, 4999):
            for reason in ("", "why", "ünïcode"):
                payload = frames_impl.encode_close(code, reason)
                assert frames_impl.parse_close(payload) == (code, reason)
                assert frames_impl.parse_close(memoryview(payload)) == (code, reason)

    def test_parse_errors(self, frames_impl: ModuleType) -> None:
        with pytest.raises(WebSocketProtocolError) as info:
            frames_impl.parse_close(b"\x03")
        assert info.value == WebSocketProtocolError(1002, "close frame with a 1-byte payload")
        with pytest.raises(WebSocketProtocolError) as info:
            frames_impl.parse_close(b"\x03\xed")
        assert info.value == WebSocketProtocolError(1002, "invalid close code 1005")
        with pytest.raises(WebSocketProtocolError) as info:
            frames_impl.parse_close(b"\x03\xe8\xc3")
        assert info.value == WebSocketProtocolError(1007, "close reason is not valid UTF-8")

    def test_is_valid_close_code(self, frames_impl: ModuleType) -> None:
        valid = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
        valid |= set(range(3000, 5000))
        for code in range(-2, 5010):
            assert frames_impl.is_valid_close_code(code) is (code in valid), code
        assert frames_impl.is_valid_close_code(1 << 70) is False
        assert frames_impl.is_valid_close_code(-(1 << 70)) is False


# -- permessage-deflate ---------------------------------------------------------------------------


class TestPermessageDeflate:
    """RFC 7692: RSV1 marks a compressed message; the extension inflates it."""

    def test_single_frame(self, frames_impl: ModuleType) -> None:
        inflater = FakeDeflate()
        parser = frames_impl.FrameParser(deflate=inflater, max_message_size=5000)
        text = "compressed ✓ ".encode() * 100
        assert parser.feed_data(raw_frame(1, deflate(text), rsv=0x40)) == [(1, text)]
        assert inflater.calls == [(deflate(text), 5000)]

    def test_fragmented(self, frames_impl: ModuleType) -> None:
        inflater = FakeDeflate()
        parser = frames_impl.FrameParser(deflate=inflater, max_message_size=0)
        data = bytes(range(256)) * 50
        packed = deflate(data)
        wire = (
            raw_frame(2, packed[:10], fin=False, rsv=0x40)
            + raw_frame(9, b"ping")
            + raw_frame(0, packed[10:20], fin=False)
            + raw_frame(0, packed[20:])
        )
        assert feed(parser, wire, 7) == [(9, b"ping"), (2, data)]
        assert inflater.calls == [(packed, 0)]

    def test_uncompressed_frames_bypass_the_extension(self, frames_impl: ModuleType) -> None:
        inflater = FakeDeflate()
        parser = frames_impl.FrameParser(deflate=inflater)
        wire = raw_frame(1, b"plain") + raw_frame(2, b"a", fin=False) + raw_frame(0, b"b")
        assert parser.feed_data(wire) == [(1, b"plain"), (2, b"ab")]
        assert inflater.calls == []

    def test_invalid_utf8_after_decompression(self, frames_impl: ModuleType) -> None:
        parser = frames_impl.FrameParser(deflate=FakeDeflate())
        bad = deflate(b"ok \xed\xa0\x80")
        # Compressed bytes are not UTF-8 checked before inflation, even fragmented.
        wire = raw_frame(1, bad[:3], fin=False, rsv=0x40) + raw_frame(0, bad[3:])
        assert parser.feed_data(raw_frame(2, b"first") + wire) == [(2, b"first")]
        expect_error(parser, 1007, "invalid UTF-8 in text message")

    def test_decompressor_errors_fail_the_parser(self, frames_impl: ModuleType) -> None:
        parser = frames_impl.FrameParser(deflate=FakeDeflate(), max_message_size=100)
        parser.feed_data(raw_frame(2, deflate(bytes(101)), rsv=0x40))
        expect_error(parser, 1009, "message too big after decompression")
        parser = frames_impl.FrameParser(deflate=FakeDeflate())
        parser.feed_data(raw_frame(2, b"\xff\xff\xff", rsv=0x40))
        expect_error(parser, 1007, "corrupt compressed data")

    def test_other_decompressor_exceptions_propagate(self, frames_impl: ModuleType) -> None:
        class Broken:
            def decompress(self, payload: bytes, max_size: int) -> bytes:
                raise RuntimeError("boom")

        parser = frames_impl.FrameParser(deflate=Broken())
        with pytest.raises(RuntimeError, match="boom"):
            parser.feed_data(raw_frame(2, b"x", rsv=0x40) + raw_frame(1, b"next"))
        # The frame was consumed; parsing resumes with the following input.
        assert not parser.closed and parser.error is None
        assert parser.feed_data(raw_frame(2, b"after")) == [(1, b"next"), (2, b"after")]


# -- compiled-only: the C read buffer ------------------------------------------------------------


class TestCompiledBuffer:
    """Guarantees of the compiled parser's own buffer (the twin uses a bytearray)."""

    @pytest.fixture
    def compiled(self, frames_impl: ModuleType) -> ModuleType:
        if not hasattr(frames_impl, "_live_allocations"):
            pytest.skip("the twin has no C buffer")
        return frames_impl

    def test_get_buffer_honours_sizehint(self, compiled: ModuleType) -> None:
        parser = compiled.FrameParser()
        assert len(parser.get_buffer(-1)) >= 65536
        assert len(parser.get_buffer(3 << 20)) >= 3 << 20

    def test_room_for_the_rest_of_a_frame(self, compiled: ModuleType) -> None:
        parser = compiled.FrameParser(max_message_size=1 << 20, is_server=False)
        payload = bytes(range(256)) * 1200  # 300 KiB
        wire = raw_frame(2, payload, key=None)
        assert parser.feed_data(wire[:1000]) == []
        # The header announced the frame: one read can take all the rest of it.
        view = parser.get_buffer(-1)
        assert len(view) >= len(wire) - 1000
        view[: len(wire) - 1000] = wire[1000:]
        assert parser.buffer_updated(len(wire) - 1000) == [(2, payload)]

    def test_room_for_a_frame_is_bounded(self, compiled: ModuleType) -> None:
        # Without a message size limit, a header alone announcing 1 TiB gets
        # at most 4 MiB of room (more only as the data arrives).
        parser = compiled.FrameParser(max_message_size=0, is_server=False)
        assert parser.feed_data(raw_frame(2, length=1 << 40, key=None)) == []
        assert 65536 <= len(parser.get_buffer(-1)) <= 4 << 20
        # A limit below the announced size ends the parse before any room is made.
        limited = compiled.FrameParser(max_message_size=100_000, is_server=False)
        assert limited.feed_data(raw_frame(2, length=1 << 30, key=None)) == []
        assert limited.error is not None and limited.error.code == 1009
        assert len(limited.get_buffer(-1)) < 1 << 20

    def test_read_ahead_follows_the_reads(self, compiled: ModuleType) -> None:
        parser = compiled.FrameParser(is_server=False)
        frame = raw_frame(2, bytes(1000), key=None)
        wire = frame * 6000  # ~6 MB of small frames
        pos = 0
        sizes = []
        for _ in range(8):  # reads that fill the whole view: the offer doubles
            view = parser.get_buffer(-1)
            sizes.append(len(view))
            view[:] = wire[pos : pos + len(view)]
            pos += len(view)
            parser.buffer_updated(len(view))
        assert sizes[0] == 65536
        assert max(sizes) >= 1 << 20 and max(sizes) <= 4 << 20
        # Finish the frame cut short, then small whole reads: the offer shrinks back.
        rest = len(frame) - pos % len(frame)
        parser.feed_data(wire[pos : pos + rest])
        assert parser.buffered == 0
        for _ in range(8):
            view = parser.get_buffer(-1)
            view[: len(frame)] = frame
            assert parser.buffer_updated(len(frame)) == [(2, bytes(1000))]
        assert len(parser.get_buffer(-1)) == 65536

    def test_read_ahead_kept_after_the_tail_of_a_frame(self, compiled: ModuleType) -> None:
        # One 64 KiB message at a time: the first read fills the 64 KiB view
        # and leaves the frame's last bytes for a second, tiny read. That tiny
        # read must not shrink the read-ahead again, or every message would
        # take two reads.
        parser = compiled.FrameParser(is_server=False)
        payload = bytes(range(256)) * 256
        frame = raw_frame(2, payload, key=None)
        reads = []
        for _ in range(3):
            pos = 0
            while pos < len(frame):
                view = parser.get_buffer(65536)
                n = min(len(view), len(frame) - pos)
                view[:n] = frame[pos : pos + n]
                pos += n
                events = parser.buffer_updated(n)
            assert events == [(2, payload)]
            reads.append(n == len(frame))
        assert reads == [False, True, True]

    def test_stale_view_is_released(self, compiled: ModuleType) -> None:
        parser = compiled.FrameParser()
        old = parser.get_buffer(-1)
        parser.buffer_updated(0)
        parser.get_buffer(-1)
        with pytest.raises(ValueError):
            old[0] = 1
        parser.feed_data(b"")  # empty input leaves the outstanding view alone
        view = parser.get_buffer(-1)
        parser.feed_data(raw_frame(1, b"x"))
        with pytest.raises(ValueError):
            view[0] = 1
        with pytest.raises(ValueError, match="without a matching get_buffer"):
            parser.buffer_updated(1)

    def test_buffer_updated_twice(self, compiled: ModuleType) -> None:
        parser = compiled.FrameParser()
        view = parser.get_buffer(-1)
        frame = raw_frame(1, b"once")
        view[: len(frame)] = frame
        assert parser.buffer_updated(len(frame)) == [(1, b"once")]
        with pytest.raises(ValueError, match="without a matching get_buffer"):
            parser.buffer_updated(len(frame))

    def test_feed_data_from_its_own_view(self, compiled: ModuleType) -> None:
        parser = compiled.FrameParser()
        wire = raw_frame(1, b"partial") + raw_frame(2, bytes(200_000))
        parser.feed_data(wire[:5])
        view = parser.get_buffer(-1)
        view[:100] = wire[5:105]
        # Feeding a slice of the parser's own free space (instead of
        # buffer_updated) must copy it before the buffer grows and moves.
        assert parser.feed_data(view[:100]) == [(1, b"partial")]
        assert parser.feed_data(wire[105:]) == [(2, bytes(200_000))]

    def test_no_leaks(self, compiled: ModuleType) -> None:
        gc.collect()
        before = compiled._live_allocations()
        parsers = []
        for i in range(20):
            parser = compiled.FrameParser(max_message_size=0)
            parser.feed_data(raw_frame(1, b"frag", fin=False))  # reassembly buffer
            parser.get_buffer(1 << 20)
            if i % 2:
                parser.feed_data(raw_frame(4, b""))  # failed parser
            parsers.append(parser)
        assert compiled._live_allocations() >= before + 20
        big = compiled.FrameParser(max_message_size=0)
        big.feed_data(raw_frame(2, bytes(8 << 20), fin=False) + raw_frame(0, b"end"))
        # An empty, oversized read buffer is given back and a small one taken.
        assert len(big.get_buffer(-1)) < 1 << 20
        del parsers, parser, big
        gc.collect()
        assert compiled._live_allocations() == before
