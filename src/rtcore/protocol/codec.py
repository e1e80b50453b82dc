"""The Codec seam: how protocol messages become transport frames and back.

A codec is stateless and sans-I/O: bytes in, messages out, and messages in,
bytes out. Two implementations exist, ``JsonCodec`` (``rtcore.protocol.json``)
and ``ProtobufCodec`` (``rtcore.protocol.protobuf``); ``get_codec(name)``
returns the shared instance of each and ``select_codec(...)`` picks one for a
WebSocket connection.

Framing. Every ``encode_*`` method except ``encode_push_bare`` returns one
*delimited* message: JSON is the object followed by ``b"\\n"``, Protobuf is
the message prefixed with its length as an unsigned varint. A transport frame
holding several replies and pushes is therefore simply the concatenation of
their encodings (``b"".join(items)``), in either codec. A JSON frame built that
way ends with exactly one ``\\n``, which the protocol allows (PROTOCOL.md
§1.3). A transport that needs the bare JSON line (SSE ``data:`` lines) strips
the final byte.

Encode once. ``encode_publication``, ``encode_join`` and ``encode_leave``
produce the complete delimited ``Reply{push{...}}`` for a channel; fan-out
calls them once per message per codec and writes the same ``bytes`` object
to every subscriber of that codec. They return exactly what
``encode_push(Push(channel=..., pub=...))`` returns, only faster.

Errors. ``decode_*`` raise ``ProtocolDecodeError`` for any malformed input
(the session disconnects with 3501). ``encode_*`` raise
``InappropriateProtocol`` (a ``ProtocolEncodeError``) when a payload cannot be
carried by the codec, i.e. a raw-JSON field that is not valid JSON on a JSON
connection (disconnect 3506), and ``ProtocolEncodeError`` for values of the
wrong type or out of range (a caller bug).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from rtcore.protocol.messages import Command, ConnectRequest, EmulationRequest, Push, Reply
from rtcore.protocol.types import ClientInfo, Publication


__all__ = ["Codec"]


@runtime_checkable
class Codec(Protocol):
    """Encodes server messages and decodes client messages for one wire format."""

    #: ``"json"`` or ``"protobuf"``.
    name: str
    #: True when frames must be sent as WebSocket *binary* messages (Protobuf);
    #: False for *text* messages (JSON, always valid UTF-8).
    binary: bool
    #: The server ping: an empty ``Reply``, delimited (``b"{}\\n"`` on JSON,
    #: ``b"\\x00"`` on Protobuf). On unidirectional transports use
    #: ``encode_push_bare(Push())`` instead.
    ping: bytes
    #: Whole frames that are exactly one pong (the empty command), which a
    #: session answers without decoding: every client sends one per ping.
    pongs: frozenset[bytes | str]

    def decode_commands(self, data: bytes, limit: int = 0) -> list[Command]:
        """Decode one whole transport frame into the commands it holds, in order.

        ``limit`` > 0: a frame of more commands is refused
        (``ProtocolDecodeError``) before the rest of it is decoded, so that a
        frame of thousands of tiny commands costs no more than ``limit``.

        JSON: one command object per line; lines are separated by a single
        ``\\n`` and the frame may end with one ``\\n``. Whitespace around an
        object (a ``\\r`` before the ``\\n`` included) is allowed; an empty
        line is not. Protobuf: a sequence of varint-length-prefixed
        ``Command`` messages. The empty command (``{}`` / ``b"\\x00"``) is the
        client's pong and decodes to ``Command()``.

        Unknown fields are ignored and a JSON ``null`` counts as absent. On
        JSON, raw-JSON ``bytes`` fields (``data``) hold the exact bytes of the
        value as the client sent them.

        Args:
            data: the frame payload (``bytes``, ``bytearray`` or ``memoryview``;
                ``str`` is accepted for JSON).

        Returns:
            At least one command.

        Raises:
            ProtocolDecodeError: the frame is empty or holds no command, is
                not valid UTF-8 / JSON / Protobuf, a line is not a JSON object,
                a varint or length prefix is truncated, a field has the wrong
                type (``id`` as a string, ``channel`` as a number, ...) or an
                integer is out of its field's range (``id`` above 2**32-1).
        """
        ...

    def encode_reply(self, reply: Reply) -> bytes:
        """Encode a reply (or any ``Reply``, pushes and pings included), delimited.

        Raises:
            InappropriateProtocol: a raw-JSON field is not valid JSON (JSON only).
            ProtocolEncodeError: a field has the wrong type or is out of range.
        """
        ...

    def encode_push(self, push: Push) -> bytes:
        """Encode ``Reply(push=push)``, delimited: a push on a bidirectional transport.

        Raises:
            InappropriateProtocol: a raw-JSON field is not valid JSON (JSON only).
            ProtocolEncodeError: a field has the wrong type or is out of range.
        """
        ...

    def encode_push_bare(self, push: Push) -> bytes:
        """Encode a bare ``Push`` with no Reply wrapper and no delimiter.

        For unidirectional transports, which send one Push per message
        (uni WebSocket frame, SSE ``data:`` line, uni HTTP-stream line with the
        transport's ``\\n``, uni gRPC message). ``Push()`` encodes the ping.

        Raises:
            InappropriateProtocol: a raw-JSON field is not valid JSON (JSON only).
            ProtocolEncodeError: a field has the wrong type or is out of range.
        """
        ...

    def encode_publication(self, channel: str, pub: Publication) -> bytes:
        """Encode ``Reply(push=Push(channel=channel, pub=pub))``, delimited.

        The fan-out fast path: call it once per publication per codec and
        share the result between all subscribers. Byte-for-byte equal to the
        ``encode_push`` output for the same push. An empty ``channel`` is
        omitted, as ``encode_push`` does.

        Raises:
            InappropriateProtocol: ``pub.data`` or the publisher's info is
                not valid JSON (JSON only).
            ProtocolEncodeError: a field has the wrong type or is out of range.
        """
        ...

    def encode_join(self, channel: str, info: ClientInfo) -> bytes:
        """Encode ``Reply(push=Push(channel=channel, join=Join(info)))``, delimited.

        Raises:
            InappropriateProtocol: ``conn_info``/``chan_info`` is not valid JSON (JSON only).
            ProtocolEncodeError: a field has the wrong type or is out of range.
        """
        ...

    def encode_leave(self, channel: str, info: ClientInfo) -> bytes:
        """Encode ``Reply(push=Push(channel=channel, leave=Leave(info)))``, delimited.

        Raises:
            InappropriateProtocol: ``conn_info``/``chan_info`` is not valid JSON (JSON only).
            ProtocolEncodeError: a field has the wrong type or is out of range.
        """
        ...

    def decode_connect_request(self, data: bytes) -> ConnectRequest:
        """Decode a bare ``ConnectRequest`` (no Command wrapper, no delimiter).

        What a unidirectional transport receives (uni WebSocket first message,
        uni SSE ``cf_connect``, uni HTTP-stream body, uni gRPC request). On
        JSON, an empty body or the literal ``null`` is the empty request.

        Raises:
            ProtocolDecodeError: malformed input, as for ``decode_commands``.
        """
        ...

    def decode_emulation_request(self, data: bytes) -> EmulationRequest:
        """Decode the body of ``POST /emulation``.

        The returned ``data`` is the command frame to pass to
        ``decode_commands`` of this codec: on JSON the body's ``data`` is a
        JSON *string* holding the newline-joined commands, and this returns
        its UTF-8 bytes; on Protobuf the body is a bare ``EmulationRequest``
        whose ``data`` already holds varint-delimited commands.

        Raises:
            ProtocolDecodeError: malformed input (on JSON also: ``data`` is not
                a string).
        """
        ...
