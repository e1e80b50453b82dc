"""permessage-deflate (RFC 7692): negotiation and per-message (de)compression.

Sans-I/O: :func:`negotiate_deflate` turns the client's
``Sec-WebSocket-Extensions`` header lines into the response header value and a
:class:`PerMessageDeflate` object; that object compresses outgoing messages
and inflates incoming ones. The frame parser (``rtcore.frames``) calls
:meth:`PerMessageDeflate.decompress` on each whole reassembled message whose
first frame had RSV1 set; the writer calls :meth:`PerMessageDeflate.compress`
on messages of at least :attr:`PerMessageDeflate.threshold` bytes and sends
the result with RSV1 set.

A 256-byte server window (``server_max_window_bits=8``). zlib cannot build a
raw deflate compressor with an 8-bit window (``compressobj(wbits=-8)`` raises,
see https://github.com/madler/zlib/issues/171), which is why websockets and
aiohttp decline an offer that asks for it. rtcore accepts it instead: when the
agreed server window is 8 bits, the compressor runs with zlib's ``Z_RLE``
strategy, which the zlib manual defines as limiting match distances to one.
Every back-reference then points one byte back, so the stream is valid for a
decoder with any window size, 256 bytes included. Run-length coding plus
Huffman coding still saves roughly 20-45% on typical JSON, against nothing
when the offer is declined, and the client keeps compressing its own messages
with the window it chose.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rtcore.errors import HandshakeError, WebSocketProtocolError


__all__ = [
    "EXTENSION_NAME",
    "DeflateOptions",
    "PerMessageDeflate",
    "negotiate_deflate",
    "parse_extensions",
]

# The extension token (RFC 7692 section 6).
EXTENSION_NAME = "permessage-deflate"

# The empty stored block that ends every sync-flushed message (RFC 7692 7.2.1).
_TAIL = b"\x00\x00\xff\xff"

_CLOSE_INVALID_DATA = 1007
_CLOSE_MESSAGE_TOO_BIG = 1009

# RFC 7692 section 7.1.2: decimal 8 to 15, no leading zero.
_WINDOW_BITS = {str(bits): bits for bits in range(8, 16)}

_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


@dataclass(frozen=True, slots=True)
class DeflateOptions:
    """What the server accepts and asks for in permessage-deflate.

    The window sizes are limits: the server never uses a larger window than
    ``server_max_window_bits`` (a client may ask for a smaller one and gets
    it), and asks clients to stay within ``client_max_window_bits``.

    Memory per connection with context takeover, from zlib's formulas: the
    compressor holds ``2**(server_max_window_bits + 2) + 2**(mem_level + 9)``
    bytes (256 KiB with the defaults), the decompressor about
    ``2**client_max_window_bits`` bytes plus 7 KiB. Without context takeover
    the state lives only while a message is (de)compressed. Servers with many
    connections should lower the window sizes and ``mem_level`` (for example
    12 / 12 / 5: about 32 KiB per compressor) or turn context takeover off.
    """

    # Offer permessage-deflate at all; False: always decline. Default: True.
    enabled: bool = True
    # Compress each message independently (the server forgets its window
    # after each message). Required for sharing one compressed frame between
    # connections in fan-out. Default: False.
    server_no_context_takeover: bool = False
    # Ask clients to compress each message independently, so the server can
    # drop their decompressor between messages. Default: False.
    client_no_context_takeover: bool = False
    # Largest LZ77 window the server compresses with, 8 to 15 bits. At 8 the
    # compressor uses run-length matches only (see the module docstring).
    # Default: 15.
    server_max_window_bits: int = 15
    # Largest window clients may compress with, 8 to 15 bits. Below 15, an
    # offer from a client that cannot be limited (no client_max_window_bits
    # parameter) is declined. zlib-based clients cannot compress with 8 and
    # may fail the connection if told to: use 9 or more. Default: 15.
    client_max_window_bits: int = 15
    # Messages shorter than this many bytes are sent uncompressed (deflate
    # costs more than it saves on tiny payloads). Default: 128.
    compress_threshold: int = 128
    # zlib level, 0 to 9. 1 keeps almost all of the ratio on small real-time
    # messages at 1.5-2.5x the speed of zlib's default 6, and the server
    # compresses every outgoing message. Default: 1.
    compression_level: int = 1
    # zlib memLevel, 1 to 9: memory for the compressor's hash table. Default: 8.
    mem_level: int = 8

    def __post_init__(self) -> None:
        for name in ("enabled", "server_no_context_takeover", "client_no_context_takeover"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        _check_int("server_max_window_bits", self.server_max_window_bits, 8, 15)
        _check_int("client_max_window_bits", self.client_max_window_bits, 8, 15)
        _check_int("compress_threshold", self.compress_threshold, 0, None)
        _check_int("compression_level", self.compression_level, 0, 9)
        _check_int("mem_level", self.mem_level, 1, 9)


def _check_int(name: str, value: object, low: int, high: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bounds}, got {value}")


class PerMessageDeflate:
    """A negotiated permessage-deflate extension (the server's side).

    Build it with :func:`negotiate_deflate`; the constructor takes the agreed
    parameters directly (tests and clients may use it). One instance belongs
    to one connection: with context takeover it carries the LZ77 window from
    message to message. After :meth:`decompress` raises, the connection must
    be failed and the instance dropped.

    Args:
        server_no_context_takeover: reset the compressor after each message.
        client_no_context_takeover: the client resets its compressor after each
            message, so the decompressor is reset too.
        server_max_window_bits: window of the server's compressor, 8 to 15.
        client_max_window_bits: window the client compresses with, 8 to 15.
        compression_level: zlib level, 0 to 9.
        mem_level: zlib memLevel, 1 to 9.
        threshold: messages shorter than this are best sent uncompressed.
        response_params: the parameters of the ``Sec-WebSocket-Extensions``
            response; by default, the ones that differ from RFC 7692's
            defaults.

    Raises:
        ValueError: a parameter is out of range.
    """

    def __init__(
        self,
        *,
        server_no_context_takeover: bool = False,
        client_no_context_takeover: bool = False,
        server_max_window_bits: int = 15,
        client_max_window_bits: int = 15,
        compression_level: int = 1,
        mem_level: int = 8,
        threshold: int = 128,
        response_params: Sequence[tuple[str, str | None]] | None = None,
    ) -> None:
        _check_int("server_max_window_bits", server_max_window_bits, 8, 15)
        _check_int("client_max_window_bits", client_max_window_bits, 8, 15)
        _check_int("compression_level", compression_level, 0, 9)
        _check_int("mem_level", mem_level, 1, 9)
        _check_int("threshold", threshold, 0, None)
        # Agreed parameters.
        self.server_no_context_takeover = bool(server_no_context_takeover)
        self.client_no_context_takeover = bool(client_no_context_takeover)
        self.server_max_window_bits = server_max_window_bits
        self.client_max_window_bits = client_max_window_bits
        self.compression_level = compression_level
        self.mem_level = mem_level
        # Messages shorter than this many bytes should go uncompressed.
        self.threshold = threshold
        if response_params is None:
            params: list[tuple[str, str | None]] = []
            if server_no_context_takeover:
                params.append(("server_no_context_takeover", None))
            if client_no_context_takeover:
                params.append(("client_no_context_takeover", None))
            if server_max_window_bits < 15:
                params.append(("server_max_window_bits", str(server_max_window_bits)))
            if client_max_window_bits < 15:
                params.append(("client_max_window_bits", str(client_max_window_bits)))
            response_params = params
        # Parameters of the Sec-WebSocket-Extensions response, in order.
        self.response_params: tuple[tuple[str, str | None], ...] = tuple(response_params)

        # zlib cannot compress with an 8-bit window; Z_RLE output is valid for
        # any window (match distance 1), so compress with 9 bits and Z_RLE.
        if server_max_window_bits == 8:
            self._wbits = -9
            self._strategy = zlib.Z_RLE
        else:
            self._wbits = -server_max_window_bits
            self._strategy = zlib.Z_DEFAULT_STRATEGY
        # The compressor and decompressor; created on first use, kept between
        # messages only with context takeover.
        self._encoder: zlib._Compress | None = None
        self._decoder: zlib._Decompress | None = None

    def __repr__(self) -> str:
        return f"PerMessageDeflate({self.header_value!r})"

    @property
    def header_value(self) -> str:
        """The ``Sec-WebSocket-Extensions`` response value."""
        parts = [EXTENSION_NAME]
        for name, value in self.response_params:
            parts.append(name if value is None else f"{name}={value}")
        return "; ".join(parts)

    @property
    def prepared_key(self) -> tuple[int, int, int] | None:
        """Key under which compressed messages can be shared, or ``None``.

        Without server context takeover, :meth:`compress` is a pure function
        of the payload and of this key (window bits, level, memLevel), so a
        fan-out may compress a publication once and send the same bytes to
        every connection with an equal key. ``None`` with context takeover:
        each connection must compress its own copy.
        """
        if not self.server_no_context_takeover:
            return None
        return (self.server_max_window_bits, self.compression_level, self.mem_level)

    def compress(self, payload: bytes | bytearray | memoryview) -> bytes:
        """Compress one whole message (RFC 7692 section 7.2.1).

        Returns the frame payload to send with RSV1 set: the deflate data,
        sync-flushed, without the trailing ``00 00 ff ff``.
        """
        encoder = self._encoder
        if encoder is None:
            encoder = zlib.compressobj(
                self.compression_level, zlib.DEFLATED, self._wbits, self.mem_level, self._strategy
            )
        data = encoder.compress(payload) + encoder.flush(zlib.Z_SYNC_FLUSH)
        # Keep the encoder only with context takeover; otherwise free its
        # memory between messages.
        self._encoder = None if self.server_no_context_takeover else encoder
        # A sync flush always ends with the empty stored block.
        if not data.endswith(_TAIL):
            raise RuntimeError("zlib sync flush did not end with 00 00 ff ff")
        return data[:-4]

    def decompress(self, payload: bytes | bytearray | memoryview, max_size: int) -> bytes:
        """Inflate one whole message (RFC 7692 section 7.2.2).

        Args:
            payload: the reassembled payload of a message whose first frame
                had RSV1 set.
            max_size: largest accepted result in bytes; ``<= 0``: no limit.
                zlib stops after ``max_size + 1`` output bytes, so a small
                payload that would inflate to gigabytes costs at most about
                twice ``max_size`` (zlib's output blocks plus their join).

        Raises:
            WebSocketProtocolError: 1009 when the message inflates to more
                than ``max_size`` bytes; 1007 when the data is not valid
                deflate data for the agreed window.
        """
        if not payload:
            # No deflate block at all: an empty message. Leave the window as is.
            return b""
        decoder = self._decoder
        if decoder is None:
            decoder = zlib.decompressobj(wbits=-self.client_max_window_bits)
        data = bytes(payload) + _TAIL
        try:
            if max_size > 0:
                # max_size + 1 tells "exactly max_size" from "more": when less
                # comes out, zlib consumed all input and holds nothing back.
                message = decoder.decompress(data, max_size + 1)
                if len(message) > max_size:
                    raise WebSocketProtocolError(
                        _CLOSE_MESSAGE_TOO_BIG,
                        f"decompressed message exceeds the {max_size}-byte limit",
                    )
            else:
                message = decoder.decompress(data)
        except zlib.error as exc:
            raise WebSocketProtocolError(
                _CLOSE_INVALID_DATA, f"invalid compressed data: {str(exc)[:80]}"
            ) from None
        if decoder.eof:
            # The peer ended the deflate stream with a BFINAL block (RFC 7692
            # section 7.2.3.3). Nothing may follow it but our appended tail.
            if decoder.unused_data != _TAIL:
                raise WebSocketProtocolError(
                    _CLOSE_INVALID_DATA, "data after the final deflate block"
                )
            # A finished zlib stream cannot continue: the next message needs a
            # new decompressor. With context takeover it starts from this
            # message's tail as its window; a reference further back fails
            # cleanly with 1007 instead of producing wrong data.
            if self.client_no_context_takeover or not message:
                self._decoder = None
            else:
                window = message[-(1 << self.client_max_window_bits) :]
                self._decoder = zlib.decompressobj(wbits=-self.client_max_window_bits, zdict=window)
            return message
        self._decoder = None if self.client_no_context_takeover else decoder
        return message


def _skip_ows(value: str, pos: int) -> int:
    n = len(value)
    while pos < n and value[pos] in " \t":
        pos += 1
    return pos


def _token(value: str, pos: int, what: str) -> tuple[str, int]:
    match = _TOKEN_RE.match(value, pos)
    if match is None:
        raise _syntax_error(value, pos, f"expected {what}")
    return match.group(), match.end()


def _quoted(value: str, pos: int) -> tuple[str, int]:
    # RFC 9110 section 5.6.4; pos is at the opening quote.
    out: list[str] = []
    pos += 1
    n = len(value)
    while pos < n:
        ch = value[pos]
        if ch == '"':
            return "".join(out), pos + 1
        if ch == "\\":
            pos += 1
            if pos == n:
                break
            ch = value[pos]
        if ch in "\r\n\x00":
            raise _syntax_error(value, pos, "control character in a quoted string")
        out.append(ch)
        pos += 1
    raise _syntax_error(value, pos, "unterminated quoted string")


def _syntax_error(value: str, pos: int, what: str) -> HandshakeError:
    shown = value if len(value) <= 120 else value[:120] + "..."
    return HandshakeError(
        400, f"malformed Sec-WebSocket-Extensions header: {what} at position {pos} in {shown!r}"
    )


def parse_extensions(values: Iterable[str]) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """Parse ``Sec-WebSocket-Extensions`` header lines (RFC 6455 section 9.1).

    Every line may hold several comma-separated offers; each offer is a token
    followed by ``;``-separated parameters with an optional token or
    quoted-string value. Quoted values are unescaped and, as RFC 6455
    requires, must then be tokens.

    Returns:
        ``[(extension name, [(param name, value or None), ...]), ...]`` in
        order, names as received.

    Raises:
        HandshakeError: 400 on a syntax error.
    """
    offers: list[tuple[str, list[tuple[str, str | None]]]] = []
    for value in values:
        pos = 0
        n = len(value)
        while True:
            # Skip empty list elements (RFC 9110 section 5.6.1).
            pos = _skip_ows(value, pos)
            while pos < n and value[pos] == ",":
                pos = _skip_ows(value, pos + 1)
            if pos == n:
                break
            name, pos = _token(value, pos, "an extension name")
            params: list[tuple[str, str | None]] = []
            pos = _skip_ows(value, pos)
            while pos < n and value[pos] == ";":
                pos = _skip_ows(value, pos + 1)
                pname, pos = _token(value, pos, "a parameter name")
                pos = _skip_ows(value, pos)
                pvalue: str | None = None
                if pos < n and value[pos] == "=":
                    pos = _skip_ows(value, pos + 1)
                    if pos < n and value[pos] == '"':
                        start = pos
                        pvalue, pos = _quoted(value, pos)
                        if not _TOKEN_RE.fullmatch(pvalue):
                            raise _syntax_error(value, start, "quoted value is not a token")
                    else:
                        pvalue, pos = _token(value, pos, "a parameter value")
                    pos = _skip_ows(value, pos)
                params.append((pname, pvalue))
            if pos < n and value[pos] != ",":
                raise _syntax_error(value, pos, "expected ',' or ';'")
            offers.append((name, params))
    return offers


def _accept_offer(
    params: list[tuple[str, str | None]], options: DeflateOptions
) -> PerMessageDeflate | None:
    """The extension for one offer, or ``None`` when it is unacceptable.

    RFC 7692 section 7.1: an offer with an unknown parameter, a repeated
    parameter or an invalid value is declined (the next offer is tried).
    """
    seen: set[str] = set()
    server_nct = client_nct = False
    server_bits: int | None = None
    # None: not offered; 0: offered without a value; 8..15: offered limit.
    client_bits: int | None = None
    for raw_name, value in params:
        name = raw_name.lower()
        if name in seen:
            return None
        seen.add(name)
        if name == "server_no_context_takeover" or name == "client_no_context_takeover":
            if value is not None:
                return None
            if name == "server_no_context_takeover":
                server_nct = True
            else:
                client_nct = True
        elif name == "server_max_window_bits":
            if value is None or value not in _WINDOW_BITS:
                return None
            server_bits = _WINDOW_BITS[value]
        elif name == "client_max_window_bits":
            if value is None:
                client_bits = 0
            elif value in _WINDOW_BITS:
                client_bits = _WINDOW_BITS[value]
            else:
                return None
        else:
            return None

    response: list[tuple[str, str | None]] = []
    # The server may always refuse to keep context; it must when asked.
    use_server_nct = server_nct or options.server_no_context_takeover
    if use_server_nct:
        response.append(("server_no_context_takeover", None))
    # The client announced it will not keep context, or the server asks it not
    # to: echo the parameter and reset the decompressor per message.
    use_client_nct = client_nct or options.client_no_context_takeover
    if use_client_nct:
        response.append(("client_no_context_takeover", None))
    # A requested server window must be honoured (same or smaller value).
    agreed_server_bits = options.server_max_window_bits
    if server_bits is not None:
        agreed_server_bits = min(server_bits, agreed_server_bits)
    if server_bits is not None or agreed_server_bits < 15:
        response.append(("server_max_window_bits", str(agreed_server_bits)))
    # The client window can only be limited when the client said it supports
    # the parameter; when the server wants a limit and cannot set it, decline.
    if client_bits is None:
        if options.client_max_window_bits < 15:
            return None
        agreed_client_bits = 15
    else:
        agreed_client_bits = options.client_max_window_bits
        if client_bits:
            agreed_client_bits = min(client_bits, agreed_client_bits)
        if agreed_client_bits < 15:
            response.append(("client_max_window_bits", str(agreed_client_bits)))
    return PerMessageDeflate(
        server_no_context_takeover=use_server_nct,
        client_no_context_takeover=use_client_nct,
        server_max_window_bits=agreed_server_bits,
        client_max_window_bits=agreed_client_bits,
        compression_level=options.compression_level,
        mem_level=options.mem_level,
        threshold=options.compress_threshold,
        response_params=response,
    )


def negotiate_deflate(
    offer_values: list[str], options: DeflateOptions
) -> tuple[str, PerMessageDeflate] | None:
    """Accept the first acceptable permessage-deflate offer.

    Args:
        offer_values: every ``Sec-WebSocket-Extensions`` request header line,
            in order (``request.header_values("sec-websocket-extensions")``).
        options: what the server accepts.

    Returns:
        ``(response header value, extension)``, or ``None`` when compression
        is disabled or no offer is acceptable; the connection then proceeds
        uncompressed and the response carries no ``Sec-WebSocket-Extensions``.

    Raises:
        HandshakeError: 400 when a header line is syntactically malformed
            (only parsed when ``options.enabled``).
    """
    if not options.enabled or not offer_values:
        return None
    for name, params in parse_extensions(offer_values):
        if name.lower() != EXTENSION_NAME:
            continue
        extension = _accept_offer(params, options)
        if extension is not None:
            return extension.header_value, extension
    return None
