"""Differential tests: the compiled frame core against its pure-Python twin.

Hypothesis builds frame streams (valid, corrupted, truncated), parser settings
and split points; both parsers get the same input in the same pieces, through
``feed_data`` or ``get_buffer``/``buffer_updated``, and must return the same
events from every call and end with the same ``error``, ``closed`` and
``buffered``. The module is skipped when the extension is not built; the
canary in ``test_twins.py`` turns that into a failure in CI.
"""

from __future__ import annotations

import codecs
import struct
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import rtcore._frames_py as twin
from rtcore.errors import WebSocketProtocolError


try:
    import rtcore._frames as compiled
except ImportError:  # pragma: no cover - depends on the build
    pytest.skip("rtcore._frames is not built", allow_module_level=True)


SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class ZlibDeflate:
    """Deterministic permessage-deflate stand-in shared by both parsers."""

    def decompress(self, payload: bytes, max_size: int) -> bytes:
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
    compressor = zlib.compressobj(wbits=-15)
    return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


def raw_frame(
    b0: int, payload: bytes, key: bytes | None, form: int | None = None, length: int | None = None
) -> bytes:
    """A frame from its first byte, payload, key and length encoding (7/16/64 bits)."""
    n = len(payload) if length is None else length
    mask_bit = 0x80 if key is not None else 0
    if form is None:
        form = 7 if n < 126 else 16 if n < 65536 else 64
    if form == 7 and n < 126:
        head = bytes((b0, mask_bit | n))
    elif form in (7, 16) and n < 65536:
        head = bytes((b0, mask_bit | 126)) + struct.pack("!H", n)
    else:
        head = bytes((b0, mask_bit | 127)) + struct.pack("!Q", n)
    if key is None:
        return head + payload
    return head + key + twin.apply_mask(payload, key)


# -- strategies ---------------------------------------------------------------------

# Bytes that exercise every UTF-8 byte class, plus plain ASCII runs.
_UTF8_ATOMS = st.sampled_from(
    [
        b"a",
        b"hello world ",
        b"x" * 17,
        "é".encode(),
        "€".encode(),
        "𝄞".encode(),
        b"\xc3",
        b"\xe2\x82",
        b"\xf0\x9f",
        b"\x80",
        b"\xbf",
        b"\xc0",
        b"\xc1",
        b"\xe0\x80",
        b"\xe0\xa0",
        b"\xed\xa0",
        b"\xed\x9f",
        b"\xf0\x8f",
        b"\xf0\x90",
        b"\xf4\x8f",
        b"\xf4\x90",
        b"\xf5",
        b"\xff",
        # Complete sequences just inside and just outside each boundary.
        b"\xc2\x80",
        b"\xe0\xa0\x80",
        b"\xe0\x9f\xbf",
        b"\xed\x9f\xbf",
        b"\xed\xa0\x80",
        b"\xee\x80\x80",
        b"\xf0\x90\x80\x80",
        b"\xf0\x8f\xbf\xbf",
        b"\xf4\x8f\xbf\xbf",
        b"\xf4\x90\x80\x80",
    ]
)
utf8ish = st.lists(_UTF8_ATOMS, max_size=12).map(b"".join)
payloads = st.one_of(
    st.binary(max_size=40),
    utf8ish,
    st.text(max_size=30).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.sampled_from([125, 126, 127, 300, 65535, 65536, 70001]).map(
        lambda size: bytes(i % 251 for i in range(size))
    ),
)
close_payloads = st.one_of(
    st.just(b""),
    st.binary(min_size=1, max_size=1),
    st.tuples(
        st.sampled_from(
            [0, 999, 1000, 1001, 1004, 1005, 1006, 1011, 1014, 1015, 2999, 3000, 4999, 5000]
        ),
        utf8ish,
    ).map(lambda cr: struct.pack("!H", cr[0]) + cr[1][:100]),
)
keys = st.binary(min_size=4, max_size=4)


@st.composite
def frames(draw: Any, masked: bool) -> bytes:
    """One frame (or one fragmented message): mostly well-formed, sometimes not."""
    kind = draw(
        st.sampled_from(
            [
                "text",
                "text",
                "binary",
                "binary",
                "fragmented",
                "fragmented",
                "compressed",
                "ping",
                "pong",
                "close",
                "weird",
            ]
        )
    )

    def key() -> bytes | None:
        # The masking the parser expects, except now and then.
        right = draw(st.integers(0, 30)) > 0
        return draw(keys) if right == masked else None

    if kind in ("text", "binary"):
        opcode = 1 if kind == "text" else 2
        form = draw(st.sampled_from([None, None, 16, 64]))
        return raw_frame(0x80 | opcode, draw(payloads), key(), form=form)
    if kind == "fragmented":
        opcode = draw(st.sampled_from([1, 2]))
        parts = draw(st.lists(payloads, min_size=1, max_size=4))
        out = b""
        for i, part in enumerate(parts):
            fin = i == len(parts) - 1
            out += raw_frame((0x80 if fin else 0) | (opcode if i == 0 else 0), part, key())
            if draw(st.booleans()):
                out += raw_frame(
                    draw(st.sampled_from([0x89, 0x8A])), draw(st.binary(max_size=10)), key()
                )
        return out
    if kind == "compressed":
        opcode = draw(st.sampled_from([1, 2]))
        packed = deflate(draw(payloads))
        if draw(st.booleans()) and packed:
            cut = draw(st.integers(0, len(packed)))
            return raw_frame(0x40 | opcode, packed[:cut], key()) + raw_frame(
                0x80, packed[cut:], key()
            )
        return raw_frame(0xC0 | opcode, packed, key())
    if kind in ("ping", "pong"):
        return raw_frame(0x89 if kind == "ping" else 0x8A, draw(st.binary(max_size=125)), key())
    if kind == "close":
        return raw_frame(0x88, draw(close_payloads), key())
    # Any first byte, any (possibly huge or too long) length, key or not.
    b0 = draw(st.integers(0, 255))
    payload = draw(st.binary(max_size=130))
    length = draw(
        st.one_of(st.none(), st.sampled_from([126, 1 << 20, 1 << 30, 1 << 63, (1 << 64) - 1]))
    )
    return raw_frame(b0, payload, draw(st.one_of(st.none(), keys)), length=length)


@st.composite
def scenarios(draw: Any) -> tuple[dict[str, Any], bytes, list[tuple[str, int]]]:
    """Parser settings, a byte stream and how to deliver it."""
    options = {
        "is_server": draw(st.booleans()),
        "max_message_size": draw(st.sampled_from([0, -1, 1, 64, 1000, 70000, 1 << 20, 1 << 20])),
        "deflate": ZlibDeflate() if draw(st.integers(0, 3)) else None,
    }
    stream = b"".join(draw(st.lists(frames(options["is_server"]), min_size=1, max_size=8)))
    if stream and not draw(st.integers(0, 3)):
        # Corrupt: flip bits, drop or insert bytes anywhere.
        for _ in range(draw(st.integers(1, 3))):
            pos = draw(st.integers(0, max(len(stream) - 1, 0)))
            action = draw(st.sampled_from(["flip", "drop", "insert"]))
            if action == "flip" and stream:
                stream = (
                    stream[:pos]
                    + bytes((stream[pos] ^ draw(st.integers(1, 255)),))
                    + stream[pos + 1 :]
                )
            elif action == "drop":
                stream = stream[:pos] + stream[pos + 1 :]
            else:
                stream = stream[:pos] + draw(st.binary(min_size=1, max_size=3)) + stream[pos:]
    if not draw(st.integers(0, 3)):
        # Truncated: the last frame (or several) incomplete.
        stream = stream[: -draw(st.integers(1, max(1, min(len(stream), 300))))]
    # Split points: small probes (1, 3, 7 bytes) as well as big reads.
    pieces: list[tuple[str, int]] = []
    left = len(stream)
    while left > 0:
        size = draw(st.one_of(st.sampled_from([1, 2, 3, 7, 64]), st.integers(1, max(left, 1))))
        size = min(size, left)
        pieces.append((draw(st.sampled_from(["feed", "buffer"])), size))
        left -= size
    return options, stream, pieces


def run(module: Any, options: dict[str, Any], stream: bytes, pieces: list[tuple[str, int]]) -> Any:
    parser = module.FrameParser(**options)
    trace = []
    pos = 0
    for how, size in pieces:
        chunk = stream[pos : pos + size]
        pos += size
        if how == "feed":
            trace.append((parser.feed_data(chunk), parser.closed, parser.buffered))
            continue
        # get_buffer() guarantees 64 KiB; larger reads take several rounds.
        for i in range(0, len(chunk), 65536):
            part = chunk[i : i + 65536]
            view = parser.get_buffer(len(part))
            view[: len(part)] = part
            trace.append((parser.buffer_updated(len(part)), parser.closed, parser.buffered))
    return trace, parser.error, parser.closed


# -- properties ----------------------------------------------------------------------


@SETTINGS
@given(scenarios())
def test_same_events_errors_and_state(scenario: Any) -> None:
    options, stream, pieces = scenario
    expected = run(twin, options, stream, pieces)
    actual = run(compiled, options, stream, pieces)
    assert actual == expected
    error = actual[1]
    if error is not None:
        assert type(error) is WebSocketProtocolError and expected[1].reason == error.reason


@SETTINGS
@given(scenarios(), st.data())
def test_chunking_does_not_matter(scenario: Any, data: Any) -> None:
    options, stream, _ = scenario
    whole = compiled.FrameParser(**options)
    events = whole.feed_data(stream)
    step = data.draw(st.sampled_from([1, 3, 7, 100]))
    if len(stream) > 10_000:
        step *= 61  # keep byte-by-byte feeding to the smaller streams
    pieces = compiled.FrameParser(**options)
    got: list[tuple[int, bytes]] = []
    for i in range(0, len(stream), step):
        got += pieces.feed_data(stream[i : i + step])
    assert got == events
    assert pieces.error == whole.error and pieces.closed == whole.closed


@SETTINGS
@given(
    st.lists(st.tuples(st.sampled_from([0x1, 0x2, 0x9, 0xA]), payloads, st.booleans()), max_size=6),
    keys,
)
def test_encode_then_parse(messages: list[tuple[int, bytes, bool]], key: bytes) -> None:
    expected = []
    for impl in (compiled, twin):
        for is_server in (True, False):
            wire = b""
            expected = []
            for opcode, payload, fragment in messages:
                if opcode >= 0x8:
                    payload = payload[:125]
                if opcode == 1 and not twin.validate_utf8(payload):
                    payload = b"not utf-8 safe"
                mask = key if is_server else None
                if fragment and opcode < 0x8 and len(payload) > 1:
                    half = len(payload) // 2
                    wire += impl.encode_frame(opcode, payload[:half], fin=False, mask=mask)
                    wire += impl.encode_frame(0, payload[half:], mask=mask)
                else:
                    wire += impl.encode_frame(opcode, payload, mask=mask)
                expected.append((opcode, payload))
            for parser_impl in (compiled, twin):
                parser = parser_impl.FrameParser(is_server=is_server, max_message_size=0)
                assert parser.feed_data(wire) == expected
                assert parser.error is None
    assert compiled.encode_frame(2, b"abc", mask=key) == twin.encode_frame(2, b"abc", mask=key)


@SETTINGS
@given(st.binary(max_size=3000), keys, st.integers(0, 7))
def test_apply_mask_equal(data: bytes, key: bytes, offset: int) -> None:
    view = memoryview(data)[offset:]
    expected = twin.apply_mask(view, key)
    assert compiled.apply_mask(view, key) == expected
    buf = bytearray(data)
    compiled.mask_inplace(memoryview(buf)[offset:], key)
    assert buf == data[:offset] + expected


@SETTINGS
@given(st.lists(_UTF8_ATOMS | st.binary(max_size=4), max_size=20).map(b"".join), st.data())
def test_utf8_matches_codec(data: bytes, more: Any) -> None:
    try:
        data.decode("utf-8")
        valid = True
    except UnicodeDecodeError:
        valid = False
    assert compiled.validate_utf8(data) is valid
    assert twin.validate_utf8(data) is valid
    # Split into fragments: the incremental verdict (error at which fragment)
    # must match the incremental codec's.
    cuts = sorted(more.draw(st.lists(st.integers(0, len(data)), max_size=4)))
    parts = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    decoder = codecs.getincrementaldecoder("utf-8")()
    failed_at = None
    for i, part in enumerate(parts):
        try:
            decoder.decode(part, i == len(parts) - 1)
        except UnicodeDecodeError:
            failed_at = i
            break
    parser = compiled.FrameParser(is_server=False, max_message_size=0)
    for i, part in enumerate(parts):
        fin = i == len(parts) - 1
        b0 = (0x80 if fin else 0) | (1 if i == 0 else 0)
        events = parser.feed_data(raw_frame(b0, part, None))
        if failed_at is not None and i >= failed_at:
            assert parser.error == WebSocketProtocolError(1007, "invalid UTF-8 in text message")
            break
        assert parser.error is None
        assert events == ([(1, data)] if fin else [])
    assert (parser.error is None) is (failed_at is None)


def test_utf8_exhaustive_short_sequences() -> None:
    """Every 2-byte start, with tails, against the codec; every 2-byte prefix too."""
    tails = [b"", b"\x80", b"\xbf", b"A", b"\x80\x80", b"\xbf\xbf", b"\x80A", b"\xc0\x80"]
    decoder_factory = codecs.getincrementaldecoder("utf-8")
    mismatches = []
    for b0 in range(256):
        for b1 in range(256):
            head = bytes((b0, b1))
            for tail in tails:
                seq = head + tail
                try:
                    seq.decode("utf-8")
                    valid = True
                except UnicodeDecodeError:
                    valid = False
                if compiled.validate_utf8(seq) is not valid:
                    mismatches.append(seq)
            # Incremental: is the prefix already rejected before the message ends?
            try:
                decoder_factory().decode(head, False)
                rejected = False
            except UnicodeDecodeError:
                rejected = True
            parser = compiled.FrameParser(is_server=False)
            parser.feed_data(b"\x01\x02" + head)
            if (parser.error is not None) is not rejected:
                mismatches.append(head)
    assert mismatches == []
