"""permessage-deflate (RFC 7692): negotiation, compression, limits, interop."""

from __future__ import annotations

import os
import tracemalloc
import zlib

import pytest
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate as WsPerMessageDeflate,
)
from websockets.frames import Frame, Opcode
from websockets.headers import build_extension, parse_extension

from rtcore.errors import HandshakeError, WebSocketProtocolError
from rtcore.wire.deflate import (
    DeflateOptions,
    PerMessageDeflate,
    negotiate_deflate,
    parse_extensions,
)


TAIL = b"\x00\x00\xff\xff"


def client_compress(compressor: zlib._Compress, payload: bytes) -> bytes:
    """What a zlib-based client puts in a compressed frame."""
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(TAIL)
    return data[:-4]


def client_decoder(bits: int = 15) -> zlib._Decompress:
    return zlib.decompressobj(wbits=-bits)


def client_decompress(decoder: zlib._Decompress, payload: bytes) -> bytes:
    return decoder.decompress(payload + TAIL)


def negotiate(header: str, **options: object) -> PerMessageDeflate:
    result = negotiate_deflate([header], DeflateOptions(**options))  # type: ignore[arg-type]
    assert result is not None
    value, extension = result
    assert value == extension.header_value
    return extension


# Messages that compress well and reference each other across messages.
MESSAGES = [
    b'{"channel":"news","pub":{"data":{"text":"hello world","n":1},"offset":1}}',
    b'{"channel":"news","pub":{"data":{"text":"hello world","n":2},"offset":2}}',
    b"x" * 5000,
    b"",
    os.urandom(300),
    b'{"channel":"news","pub":{"data":{"text":"hello world","n":3},"offset":3}}' * 20,
]


class TestDeflateOptions:
    def test_defaults(self) -> None:
        options = DeflateOptions()
        assert options.enabled is True
        assert options.server_no_context_takeover is False
        assert options.client_no_context_takeover is False
        assert options.server_max_window_bits == 15
        assert options.client_max_window_bits == 15
        assert options.compress_threshold == 128
        assert options.compression_level == 1
        assert options.mem_level == 8

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("enabled", 1),
            ("server_no_context_takeover", "yes"),
            ("client_no_context_takeover", None),
            ("server_max_window_bits", 7),
            ("server_max_window_bits", 16),
            ("server_max_window_bits", True),
            ("server_max_window_bits", 12.0),
            ("client_max_window_bits", 7),
            ("client_max_window_bits", 16),
            ("compress_threshold", -1),
            ("compression_level", -1),
            ("compression_level", 10),
            ("mem_level", 0),
            ("mem_level", 10),
        ],
    )
    def test_invalid_values_name_the_field(self, field: str, value: object) -> None:
        with pytest.raises(ValueError, match=field):
            DeflateOptions(**{field: value})  # type: ignore[arg-type]

    @pytest.mark.parametrize("bits", range(8, 16))
    def test_every_window_size_is_valid(self, bits: int) -> None:
        options = DeflateOptions(server_max_window_bits=bits, client_max_window_bits=bits)
        assert options.server_max_window_bits == bits

    def test_frozen(self) -> None:
        with pytest.raises(AttributeError):
            DeflateOptions().enabled = False  # type: ignore[misc]


class TestParseExtensions:
    def test_offers_params_and_lines(self) -> None:
        assert parse_extensions(
            [
                "permessage-deflate; client_max_window_bits, foo;a=1 ;b",
                'permessage-deflate ;server_max_window_bits = "10"',
            ]
        ) == [
            ("permessage-deflate", [("client_max_window_bits", None)]),
            ("foo", [("a", "1"), ("b", None)]),
            ("permessage-deflate", [("server_max_window_bits", "10")]),
        ]

    def test_empty_elements_are_skipped(self) -> None:
        assert parse_extensions([" , permessage-deflate,, ", ""]) == [("permessage-deflate", [])]

    def test_quoted_value_with_escape(self) -> None:
        assert parse_extensions(['x; a="b\\c"']) == [("x", [("a", "bc")])]

    @pytest.mark.parametrize(
        ("header", "what"),
        [
            ("permessage-deflate;", "expected a parameter name"),
            ("permessage-deflate; a=", "expected a parameter value"),
            ("permessage-deflate x", "expected ',' or ';'"),
            ("permessage-deflate; a b", "expected ',' or ';'"),
            ('x; a="10', "unterminated quoted string"),
            ('x; a="1 0"', "quoted value is not a token"),
            ("=x", "expected an extension name"),
            ("x; a=b=c", "expected ',' or ';'"),
        ],
    )
    def test_syntax_errors(self, header: str, what: str) -> None:
        with pytest.raises(HandshakeError) as info:
            parse_extensions([header])
        assert info.value.status == 400
        assert "Sec-WebSocket-Extensions" in info.value.message
        assert what in info.value.message

    def test_negotiate_reports_syntax_errors(self) -> None:
        with pytest.raises(HandshakeError) as info:
            negotiate_deflate(["permessage-deflate; ="], DeflateOptions())
        assert info.value.status == 400


# Offers in the shapes Autobahn|Testsuite uses in cases 12.* and 13.*: the
# default offer carries client_no_context_takeover and a valueless
# client_max_window_bits; cases add server_no_context_takeover and
# server_max_window_bits; 13.7 sends several offers in one header.
ACCEPT = "permessage-deflate; client_no_context_takeover; client_max_window_bits"
NEGOTIATION_CASES = [
    ("permessage-deflate", "permessage-deflate"),
    ("permessage-deflate; client_max_window_bits", "permessage-deflate"),
    (ACCEPT, "permessage-deflate; client_no_context_takeover"),
    (
        ACCEPT + "; server_no_context_takeover",
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
    ),
    *[
        (
            ACCEPT + f"; server_max_window_bits={bits}",
            f"permessage-deflate; client_no_context_takeover; server_max_window_bits={bits}",
        )
        for bits in range(8, 16)
    ],
    *[
        (
            ACCEPT + f"; server_no_context_takeover; server_max_window_bits={bits}",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
            f"server_max_window_bits={bits}",
        )
        for bits in (8, 15)
    ],
    *[
        (
            f"permessage-deflate; client_max_window_bits={bits}",
            "permessage-deflate" + (f"; client_max_window_bits={bits}" if bits < 15 else ""),
        )
        for bits in range(8, 16)
    ],
    # Case 13.7: three offers, the first is acceptable.
    (
        ACCEPT
        + "; server_no_context_takeover; server_max_window_bits=8, "
        + ACCEPT
        + "; server_no_context_takeover, "
        + ACCEPT,
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
        "server_max_window_bits=8",
    ),
    # Unacceptable offers are skipped in favour of the next one.
    ("permessage-deflate; server_max_window_bits=7, permessage-deflate", "permessage-deflate"),
    (
        "permessage-deflate; foo, permessage-deflate; client_no_context_takeover",
        "permessage-deflate; client_no_context_takeover",
    ),
    ("x-webkit-deflate-frame, permessage-deflate", "permessage-deflate"),
    (
        'permessage-deflate; server_max_window_bits="10"',
        "permessage-deflate; server_max_window_bits=10",
    ),
    (
        "Permessage-Deflate; Server_No_Context_Takeover",
        "permessage-deflate; server_no_context_takeover",
    ),
]


class TestNegotiation:
    @pytest.mark.parametrize(("offer", "response"), NEGOTIATION_CASES)
    def test_default_options(self, offer: str, response: str) -> None:
        result = negotiate_deflate([offer], DeflateOptions())
        assert result is not None
        assert result[0] == response

    def test_offers_on_several_header_lines(self) -> None:
        result = negotiate_deflate(
            [
                "foo",
                "permessage-deflate; server_max_window_bits=7",
                "permessage-deflate; server_max_window_bits=12",
            ],
            DeflateOptions(),
        )
        assert result is not None
        assert result[0] == "permessage-deflate; server_max_window_bits=12"

    @pytest.mark.parametrize(
        "offer",
        [
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
            "permessage-deflate; server_max_window_bits=10; Server_Max_Window_Bits=10",
            "permessage-deflate; unknown_param",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=08",
            "permessage-deflate; server_max_window_bits=ten",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=0",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover=true",
            "x-webkit-deflate-frame",
            "deflate-frame; no_context_takeover",
        ],
    )
    def test_unacceptable_offers_are_declined(self, offer: str) -> None:
        assert negotiate_deflate([offer], DeflateOptions()) is None

    def test_nothing_offered(self) -> None:
        assert negotiate_deflate([], DeflateOptions()) is None

    def test_disabled(self) -> None:
        assert negotiate_deflate(["permessage-deflate"], DeflateOptions(enabled=False)) is None

    def test_disabled_does_not_parse(self) -> None:
        assert negotiate_deflate(["=garbage="], DeflateOptions(enabled=False)) is None

    @pytest.mark.parametrize(
        ("options", "offer", "response"),
        [
            (
                {"server_no_context_takeover": True},
                "permessage-deflate",
                "permessage-deflate; server_no_context_takeover",
            ),
            (
                {"client_no_context_takeover": True},
                "permessage-deflate",
                "permessage-deflate; client_no_context_takeover",
            ),
            # The server's window limit applies when the client asks for nothing
            # or for more; a smaller request is honoured.
            (
                {"server_max_window_bits": 10},
                "permessage-deflate",
                "permessage-deflate; server_max_window_bits=10",
            ),
            (
                {"server_max_window_bits": 10},
                "permessage-deflate; server_max_window_bits=12",
                "permessage-deflate; server_max_window_bits=10",
            ),
            (
                {"server_max_window_bits": 10},
                "permessage-deflate; server_max_window_bits=9",
                "permessage-deflate; server_max_window_bits=9",
            ),
            (
                {"server_max_window_bits": 8},
                "permessage-deflate",
                "permessage-deflate; server_max_window_bits=8",
            ),
            # The client window limit needs the client's client_max_window_bits.
            (
                {"client_max_window_bits": 10},
                "permessage-deflate; client_max_window_bits",
                "permessage-deflate; client_max_window_bits=10",
            ),
            (
                {"client_max_window_bits": 10},
                "permessage-deflate; client_max_window_bits=12",
                "permessage-deflate; client_max_window_bits=10",
            ),
            (
                {"client_max_window_bits": 10},
                "permessage-deflate; client_max_window_bits=9",
                "permessage-deflate; client_max_window_bits=9",
            ),
            (
                {"client_max_window_bits": 10},
                "permessage-deflate, permessage-deflate; client_max_window_bits",
                "permessage-deflate; client_max_window_bits=10",
            ),
        ],
    )
    def test_server_options(self, options: dict[str, object], offer: str, response: str) -> None:
        result = negotiate_deflate([offer], DeflateOptions(**options))  # type: ignore[arg-type]
        assert result is not None
        assert result[0] == response

    def test_client_window_limit_without_client_support_declines(self) -> None:
        options = DeflateOptions(client_max_window_bits=12)
        assert negotiate_deflate(["permessage-deflate"], options) is None

    def test_agreed_values_reach_the_extension(self) -> None:
        ext = negotiate(
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=11; "
            "client_max_window_bits=12",
            compress_threshold=64,
            compression_level=3,
            mem_level=5,
        )
        assert ext.server_no_context_takeover is True
        assert ext.client_no_context_takeover is False
        assert ext.server_max_window_bits == 11
        assert ext.client_max_window_bits == 12
        assert ext.threshold == 64
        assert ext.compression_level == 3
        assert ext.mem_level == 5
        assert ext.response_params == (
            ("server_no_context_takeover", None),
            ("server_max_window_bits", "11"),
            ("client_max_window_bits", "12"),
        )


class TestPerMessageDeflate:
    def test_constructor_defaults_and_response(self) -> None:
        ext = PerMessageDeflate()
        assert ext.header_value == "permessage-deflate"
        assert ext.threshold == 128
        ext = PerMessageDeflate(client_no_context_takeover=True, server_max_window_bits=9)
        assert ext.header_value == (
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=9"
        )
        assert repr(ext) == f"PerMessageDeflate({ext.header_value!r})"

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("server_max_window_bits", 7),
            ("client_max_window_bits", 16),
            ("compression_level", 11),
            ("mem_level", 0),
            ("threshold", -5),
        ],
    )
    def test_constructor_validation(self, field: str, value: int) -> None:
        with pytest.raises(ValueError, match=field):
            PerMessageDeflate(**{field: value})  # type: ignore[arg-type]

    @pytest.mark.parametrize("server_nct", [False, True])
    @pytest.mark.parametrize("client_nct", [False, True])
    def test_round_trip_with_zlib_peer(self, server_nct: bool, client_nct: bool) -> None:
        ext = PerMessageDeflate(
            server_no_context_takeover=server_nct, client_no_context_takeover=client_nct
        )
        peer_encoder = zlib.compressobj(6, zlib.DEFLATED, -15)
        peer_decoder = client_decoder()
        for message in MESSAGES:
            if client_nct:
                peer_encoder = zlib.compressobj(6, zlib.DEFLATED, -15)
            assert ext.decompress(client_compress(peer_encoder, message), 1 << 20) == message
            if server_nct:
                peer_decoder = client_decoder()
            assert client_decompress(peer_decoder, ext.compress(message)) == message

    def test_context_takeover_shrinks_repeated_messages(self) -> None:
        message = os.urandom(200)
        ext = PerMessageDeflate()
        first = ext.compress(message)
        second = ext.compress(message)
        # The second copy is a back-reference into the first message.
        assert len(second) < 20 < len(first)

    def test_no_context_takeover_is_stateless(self) -> None:
        message = os.urandom(200)
        ext = PerMessageDeflate(server_no_context_takeover=True)
        first = ext.compress(message)
        assert ext.compress(message) == first
        # Each message decodes with a fresh decompressor.
        assert client_decompress(client_decoder(), first) == message

    def test_client_no_context_takeover_resets_the_decompressor(self) -> None:
        # A client that (wrongly) keeps its context references the previous
        # message; the server reset its window, so the reference is invalid.
        encoder = zlib.compressobj(6, zlib.DEFLATED, -15)
        message = os.urandom(200)
        first = client_compress(encoder, message)
        second = client_compress(encoder, message)
        with_takeover = PerMessageDeflate()
        assert with_takeover.decompress(first, 0) == message
        assert with_takeover.decompress(second, 0) == message
        without = PerMessageDeflate(client_no_context_takeover=True)
        assert without.decompress(first, 0) == message
        with pytest.raises(WebSocketProtocolError) as info:
            without.decompress(second, 0)
        assert info.value.code == 1007

    def test_empty_message(self) -> None:
        ext = PerMessageDeflate()
        assert ext.compress(b"") == b"\x00"
        assert ext.decompress(b"\x00", 10) == b""
        assert ext.decompress(b"", 10) == b""
        # The window survives an empty payload.
        encoder = zlib.compressobj(6, zlib.DEFLATED, -15)
        data = os.urandom(100)
        assert ext.decompress(client_compress(encoder, data), 0) == data
        assert ext.decompress(b"", 0) == b""
        assert ext.decompress(client_compress(encoder, data), 0) == data

    def test_accepts_bytearray_and_memoryview(self) -> None:
        ext = PerMessageDeflate()
        compressed = ext.compress(memoryview(b"abc" * 100))
        assert PerMessageDeflate().decompress(bytearray(compressed), 0) == b"abc" * 100

    @pytest.mark.parametrize("bits", range(9, 16))
    def test_server_window_is_honoured(self, bits: int) -> None:
        # A repeat just beyond the agreed window must not become a
        # back-reference: a decoder with exactly that window decodes it.
        block = os.urandom((1 << bits) + 50)
        ext = PerMessageDeflate(server_max_window_bits=bits)
        decoder = client_decoder(bits)
        for message in (block, block, block[:100]):
            assert client_decompress(decoder, ext.compress(message)) == message

    def test_window_bits_control(self) -> None:
        # The check above can fail: a 15-bit compressor's output breaks a
        # 9-bit decoder on the same messages.
        block = os.urandom(600)
        ext = PerMessageDeflate(server_max_window_bits=15)
        decoder = client_decoder(9)
        client_decompress(decoder, ext.compress(block))
        with pytest.raises(zlib.error, match="distance too far back"):
            client_decompress(decoder, ext.compress(block))

    def test_server_window_8_is_decodable_with_a_256_byte_window(self) -> None:
        block = os.urandom(300)
        ext = PerMessageDeflate(server_max_window_bits=8)
        decoder = client_decoder(8)
        messages = [block, block, b"a" * 5000, MESSAGES[5], block]
        for message in messages:
            assert client_decompress(decoder, ext.compress(message)) == message
        # Run-length matches still compress.
        assert len(ext.compress(b"a" * 5000)) < 100

    def test_server_window_8_uses_run_length_matches_only(self) -> None:
        # A repeat 100 bytes back fits any window, yet with an 8-bit server
        # window only distance-1 matches are allowed, so it is not shared.
        block = os.urandom(100)
        rle = PerMessageDeflate(server_max_window_bits=8).compress(block * 2)
        normal = PerMessageDeflate(server_max_window_bits=9).compress(block * 2)
        assert len(normal) < 150 < len(rle)

    def test_server_window_8_control(self) -> None:
        # The check above can fail: a 256-byte decoder rejects a reference
        # 300 bytes back into the previous message.
        block = os.urandom(300)
        encoder = zlib.compressobj(6, zlib.DEFLATED, -15)
        decoder = client_decoder(8)
        client_decompress(decoder, client_compress(encoder, block))
        with pytest.raises(zlib.error, match="distance too far back"):
            client_decompress(decoder, client_compress(encoder, block))

    @pytest.mark.parametrize("bits", [8, 9, 12])
    def test_client_window(self, bits: int) -> None:
        ext = PerMessageDeflate(client_max_window_bits=bits)
        encoder = zlib.compressobj(6, zlib.DEFLATED, -max(bits, 9))
        for message in MESSAGES:
            assert ext.decompress(client_compress(encoder, message), 0) == message

    def test_prepared_key(self) -> None:
        assert PerMessageDeflate().prepared_key is None
        a = PerMessageDeflate(server_no_context_takeover=True, server_max_window_bits=12)
        b = PerMessageDeflate(
            server_no_context_takeover=True, server_max_window_bits=12, client_max_window_bits=9
        )
        assert a.prepared_key == b.prepared_key == (12, 1, 8)
        payload = MESSAGES[5]
        a.compress(os.urandom(50))
        assert a.compress(payload) == b.compress(payload)


class TestDecompressLimits:
    def test_exact_limit_passes_and_one_less_fails(self) -> None:
        payload = os.urandom(1000)
        compressed = PerMessageDeflate(server_no_context_takeover=True).compress(payload)
        assert PerMessageDeflate().decompress(compressed, 1000) == payload
        with pytest.raises(WebSocketProtocolError) as info:
            PerMessageDeflate().decompress(compressed, 999)
        assert info.value.code == 1009
        assert "999" in info.value.reason

    def test_no_limit(self) -> None:
        payload = b"z" * (3 << 20)
        compressed = PerMessageDeflate().compress(payload)
        assert PerMessageDeflate().decompress(compressed, 0) == payload
        assert PerMessageDeflate().decompress(compressed, -1) == payload

    def test_zip_bomb_is_stopped_without_allocating_it(self) -> None:
        encoder = zlib.compressobj(9, zlib.DEFLATED, -15)
        zeros = bytes(1 << 20)
        parts = [encoder.compress(zeros) for _ in range(100)]
        bomb = b"".join(parts) + encoder.flush(zlib.Z_SYNC_FLUSH)[:-4]
        assert len(bomb) < 200_000  # 100 MiB of zeros
        ext = PerMessageDeflate()
        tracemalloc.start()
        try:
            with pytest.raises(WebSocketProtocolError) as info:
                ext.decompress(bomb, 1 << 20)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert info.value.code == 1009
        # zlib stops after max_size + 1 output bytes; joining its output
        # blocks may hold them twice, never anything near 100 MiB.
        assert peak < 2 * ((1 << 20) + 1) + 3 * len(bomb) + (256 << 10)

    @pytest.mark.parametrize(
        "payload",
        [
            b"\xff\xff\xff\xff",  # invalid block type
            b"\x02\x00\x00\x00\x00\x00\xff",  # unknown garbage
            b"\x04\x00\x00\xff\xff",  # stored block with bad NLEN
        ],
    )
    def test_corrupt_data_is_1007(self, payload: bytes) -> None:
        with pytest.raises(WebSocketProtocolError) as info:
            PerMessageDeflate().decompress(payload, 1 << 20)
        assert info.value.code == 1007
        assert info.value.reason.startswith("invalid compressed data")
        assert len(info.value.reason.encode()) <= 123

    def test_final_block_then_context_continues(self) -> None:
        # RFC 7692 7.2.3.3: a peer may end a message with BFINAL set. The next
        # message may still reference the previous one.
        first = os.urandom(200)
        finished = zlib.compressobj(6, zlib.DEFLATED, -15)
        payload1 = finished.compress(first) + finished.flush(zlib.Z_FINISH)
        follow = zlib.compressobj(6, zlib.DEFLATED, -15, zdict=first)
        payload2 = client_compress(follow, first)
        assert len(payload2) < 20  # really a back-reference
        ext = PerMessageDeflate()
        assert ext.decompress(payload1, 0) == first
        assert ext.decompress(payload2, 0) == first
        # Without context takeover the next message starts from scratch.
        reset = PerMessageDeflate(client_no_context_takeover=True)
        assert reset.decompress(payload1, 0) == first
        with pytest.raises(WebSocketProtocolError) as info:
            reset.decompress(payload2, 0)
        assert info.value.code == 1007

    def test_data_after_final_block_is_1007(self) -> None:
        encoder = zlib.compressobj(6, zlib.DEFLATED, -15)
        payload = encoder.compress(b"abc") + encoder.flush(zlib.Z_FINISH) + b"junk"
        with pytest.raises(WebSocketProtocolError) as info:
            PerMessageDeflate().decompress(payload, 0)
        assert info.value.code == 1007
        assert "final deflate block" in info.value.reason


# Client configurations of websockets' own permessage-deflate implementation.
WEBSOCKETS_CLIENTS = [
    {},
    {"client_max_window_bits": None},
    {"server_no_context_takeover": True},
    {"client_no_context_takeover": True},
    {"server_no_context_takeover": True, "client_no_context_takeover": True},
    *[{"server_max_window_bits": bits} for bits in range(8, 16)],
    *[{"client_max_window_bits": bits} for bits in range(9, 16)],
    {"server_max_window_bits": 8, "client_max_window_bits": 9, "client_no_context_takeover": True},
]
SERVER_OPTIONS = [
    {},
    {"server_no_context_takeover": True, "client_no_context_takeover": True},
    {"server_max_window_bits": 10, "client_max_window_bits": 11},
    {"server_max_window_bits": 8, "compression_level": 9, "mem_level": 1},
]


class TestWebsocketsInterop:
    """websockets.extensions.permessage_deflate as an independent peer."""

    @pytest.mark.parametrize("server", SERVER_OPTIONS, ids=repr)
    @pytest.mark.parametrize("client", WEBSOCKETS_CLIENTS, ids=repr)
    def test_messages_both_ways(self, client: dict[str, object], server: dict[str, object]) -> None:
        factory = ClientPerMessageDeflateFactory(**client)  # type: ignore[arg-type]
        offer = build_extension([(factory.name, list(factory.get_request_params()))])
        result = negotiate_deflate([offer], DeflateOptions(**server))  # type: ignore[arg-type]
        if result is None:
            # Only a client window limit the client cannot accept is declined.
            assert server.get("client_max_window_bits", 15) < 15
            assert client.get("client_max_window_bits", True) is None
            return
        header, ext = result
        [(name, params)] = parse_extension(header)
        assert name == "permessage-deflate"
        peer: WsPerMessageDeflate = factory.process_response_params(params, [])
        for message in MESSAGES * 2:
            sent = peer.encode(Frame(Opcode.BINARY, message))
            assert sent.rsv1
            assert ext.decompress(bytes(sent.data), 1 << 20) == message
            frame = Frame(Opcode.BINARY, ext.compress(message), rsv1=True)
            assert bytes(peer.decode(frame, max_size=1 << 20).data) == message
