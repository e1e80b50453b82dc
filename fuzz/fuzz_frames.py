"""Differential fuzzing of the RFC 6455 frame parser: ``rtcore._frames`` against ``rtcore._frames_py``.

Both parsers get the same bytes in the same pieces (through ``feed_data`` or
``get_buffer``/``buffer_updated``) with the same settings, and must return
the same events from every call and end in the same state (``error``,
``closed``, ``buffered``). With permessage-deflate each parser gets its own
:class:`~rtcore.wire.deflate.PerMessageDeflate` with equal parameters. The
helpers ``parse_close``, ``validate_utf8`` and ``apply_mask`` are compared
on the same bytes. No exception may escape either parser.

    python fuzz/fuzz_frames.py -atheris_runs=1000000
"""

from __future__ import annotations

import sys
from typing import Any

from fuzzlib import Input, instrumented, main


with instrumented(__name__ == "__main__"):
    import rtcore._frames_py as twin
    from rtcore.errors import WebSocketProtocolError
    from rtcore.wire.deflate import PerMessageDeflate

    try:
        import rtcore._frames as compiled
    except ImportError:  # pragma: no cover - depends on the build
        compiled = None

# The smoke test skips this harness when the extension is not built.
AVAILABLE = compiled is not None

_LIMITS = (0, 1, 2, 125, 126, 1000, 1 << 16, 1 << 20)


def _outcome(call: Any) -> tuple[str, Any]:
    try:
        return "ok", call()
    except WebSocketProtocolError as exc:
        return "error", (exc.code, exc.reason)
    except ValueError as exc:
        return "value-error", str(exc)


def _compare_helpers(payload: bytes) -> None:
    assert _outcome(lambda: twin.parse_close(payload)) == _outcome(
        lambda: compiled.parse_close(payload)
    ), payload
    assert twin.validate_utf8(payload) == compiled.validate_utf8(payload), payload
    if len(payload) >= 4:
        key, body = payload[:4], payload[4:]
        assert twin.apply_mask(body, key) == compiled.apply_mask(body, key)


def _state(parser: Any) -> tuple[Any, bool, int]:
    error = parser.error
    return (None if error is None else (error.code, error.reason), parser.closed, parser.buffered)


def TestOneInput(data: bytes) -> None:
    if compiled is None:
        return
    inp = Input(data)
    settings = inp.byte()
    is_server = not settings & 1
    use_deflate = bool(settings & 2)
    use_buffer = bool(settings & 4)
    no_takeover = bool(settings & 8)
    bits = 8 + (settings >> 4) % 8
    limit = _LIMITS[inp.byte() % len(_LIMITS)]
    chunks = inp.split(inp.rest())
    parsers = []
    for module in (twin, compiled):
        deflate = (
            PerMessageDeflate(client_no_context_takeover=no_takeover, client_max_window_bits=bits)
            if use_deflate
            else None
        )
        parsers.append(
            module.FrameParser(max_message_size=limit, is_server=is_server, deflate=deflate)
        )
    a, b = parsers
    for chunk in chunks:
        if use_buffer:
            results = []
            for parser in parsers:
                view = parser.get_buffer(len(chunk))
                n = min(len(chunk), len(view))
                view[:n] = chunk[:n]
                events = parser.buffer_updated(n)
                if n < len(chunk):
                    events = events + parser.feed_data(chunk[n:])
                results.append(events)
            events_a, events_b = results
        else:
            events_a = a.feed_data(chunk)
            events_b = b.feed_data(chunk)
        assert events_a == events_b, (events_a, events_b)
        assert _state(a) == _state(b), (_state(a), _state(b))
        for opcode, payload in events_a:
            assert type(payload) is bytes
            if opcode == twin.OP_CLOSE:
                twin.parse_close(payload)  # the parser validated it already
    _compare_helpers(chunks[-1][:130] if chunks else b"")


SEEDS = [
    # A masked "hello" text frame, a ping, a fragmented binary message, a close.
    b"\x00\x00\x81\x85\x01\x02\x03\x04ig" + bytes((ord("l") ^ 3, ord("l") ^ 4, ord("o") ^ 1)),
    b"\x00\x00\x89\x80\x00\x00\x00\x00\x02\x80\x00\x00\x00\x00\x80\x81\x00\x00\x00\x00x",
    b"\x00\x00\x88\x82\x00\x00\x00\x00\x03\xe8",
    # Compressed (RSV1) text "a" with deflate on: 4a 04 00.
    b"\x02\x00\xc1\x83\x00\x00\x00\x00\x4a\x04\x00",
    # Unmasked server frames for a client-side parser.
    b"\x01\x05\x81\x02hi\x82\x7e\x00\x03abc",
]


if __name__ == "__main__":
    if compiled is None:
        sys.exit("rtcore._frames is not built: nothing to compare")
    main(TestOneInput, SEEDS)
