"""Errors raised by the protocol codecs."""

from __future__ import annotations

from rtcore.errors import RtcoreError


__all__ = [
    "ProtocolDecodeError",
    "ProtocolEncodeError",
    "InappropriateProtocol",
    "too_many_commands",
]


class ProtocolDecodeError(RtcoreError, ValueError):
    """A client frame that cannot be decoded into commands.

    The session answers it with disconnect 3501 (bad request). The message
    says what is wrong and where: the 1-based index of the command within the
    frame and the field path, e.g.
    ``command 2: subscribe.channel: expected a string, got a number``.
    """


def too_many_commands(limit: int) -> str:
    """The message of a frame refused for holding more than ``limit`` commands."""
    return f"too many commands: more than {limit} in the frame"


class ProtocolEncodeError(RtcoreError, ValueError):
    """A message that cannot be encoded: a value of the wrong type or out of
    its field's range (e.g. a negative ``offset``, an ``id`` above 2**32-1,
    a string that is not valid Unicode). This is a bug in the caller."""


class InappropriateProtocol(ProtocolEncodeError):
    """A payload that this client's protocol cannot carry.

    Raised by the JSON codec when a raw-JSON ``bytes`` field (``data``,
    ``conn_info``, ...) does not hold valid JSON, e.g. binary data published
    for Protobuf clients. The session disconnects such a client with 3506
    (inappropriate protocol).
    """
