"""Fuzzing of permessage-deflate (``rtcore.wire.deflate``): negotiation and inflation.

Three modes, chosen by the first byte:

* negotiation: ``Sec-WebSocket-Extensions`` lines from the input go through
  ``negotiate_deflate``, which may only raise
  :class:`~rtcore.errors.HandshakeError` (400); an accepted offer's response
  value must parse again and stay within the server's options;
* inflation: input messages go through ``PerMessageDeflate.decompress`` with
  parameters and a size limit from the input; it may only raise
  :class:`~rtcore.errors.WebSocketProtocolError` 1007 or 1009, and never
  returns more than the limit;
* round trip: messages compressed by one side come back unchanged from a
  decompressor with the matching window and context takeover.

    python fuzz/fuzz_deflate.py -atheris_runs=1000000
"""

from __future__ import annotations

from fuzzlib import Input, instrumented, main


with instrumented(__name__ == "__main__"):
    from rtcore.errors import HandshakeError, WebSocketProtocolError
    from rtcore.wire.deflate import (
        DeflateOptions,
        PerMessageDeflate,
        negotiate_deflate,
        parse_extensions,
    )

_OPTIONS = (
    DeflateOptions(),
    DeflateOptions(server_no_context_takeover=True, client_no_context_takeover=True),
    DeflateOptions(server_max_window_bits=8, client_max_window_bits=9),
    DeflateOptions(server_max_window_bits=12, client_max_window_bits=12, mem_level=5),
)
_LIMITS = (0, 1, 16, 1000, 1 << 16)


def _negotiate(inp: Input) -> None:
    options = inp.pick(_OPTIONS)
    assert isinstance(options, DeflateOptions)
    lines = inp.rest().decode("latin-1").split("\n")
    try:
        negotiated = negotiate_deflate(lines, options)
    except HandshakeError as exc:
        assert exc.status == 400, exc
        return
    if negotiated is None:
        return
    header, extension = negotiated
    ((name, params),) = parse_extensions([header])
    assert name == "permessage-deflate", header
    assert extension.server_max_window_bits <= options.server_max_window_bits
    assert extension.client_max_window_bits <= options.client_max_window_bits
    assert extension.server_no_context_takeover >= options.server_no_context_takeover
    assert extension.client_no_context_takeover >= options.client_no_context_takeover


def _extension(inp: Input) -> PerMessageDeflate:
    flags = inp.byte()
    return PerMessageDeflate(
        server_no_context_takeover=bool(flags & 1),
        client_no_context_takeover=bool(flags & 2),
        server_max_window_bits=8 + (flags >> 2) % 8,
        client_max_window_bits=8 + (flags >> 5) % 8,
        compression_level=inp.byte() % 10,
        mem_level=1 + inp.byte() % 9,
    )


def _inflate(inp: Input) -> None:
    extension = _extension(inp)
    limit = int(inp.pick(_LIMITS))  # type: ignore[call-overload]
    for message in inp.split(inp.rest()):
        try:
            out = extension.decompress(message, limit)
        except WebSocketProtocolError as exc:
            assert exc.code in (1007, 1009), exc
            return
        assert not limit or len(out) <= limit, (len(out), limit)


def _round_trip(inp: Input) -> None:
    sender = _extension(inp)
    # The receiving side inflates with the sender's window and takeover.
    receiver = PerMessageDeflate(
        client_no_context_takeover=sender.server_no_context_takeover,
        client_max_window_bits=sender.server_max_window_bits,
    )
    for message in inp.split(inp.rest()):
        assert receiver.decompress(sender.compress(message), 0) == message


def TestOneInput(data: bytes) -> None:
    inp = Input(data)
    mode = inp.byte() % 3
    if mode == 0:
        _negotiate(inp)
    elif mode == 1:
        _inflate(inp)
    else:
        _round_trip(inp)


SEEDS = [
    b"\x00\x00permessage-deflate; client_max_window_bits; server_max_window_bits=10, "
    b'permessage-deflate; server_no_context_takeover\nx-webkit-deflate-frame, foo; bar="baz"',
    b"\x01\x00\x00\x00\x03\x00\x00\x00\x00\x00\x00\x00\x00J\x04\x00\xf2H\xcd\xc9\xc9\x07\x00",
    b"\x02\x07\x01\x08\x00\x03\x00\x05\x00\x09hello hello hello\x00\x00\x00\x00aaaaaaaaaaaaaaaa",
]


if __name__ == "__main__":
    main(TestOneInput, SEEDS)
