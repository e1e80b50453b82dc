"""The binary format of the Redis backends (also used by the NATS broker).

Format version 1
    Everything starts with the format byte ``0x01``, followed by msgpack:

    * publication body ``PUB``: ``[data: bin, info: INFO | nil, tags: map | nil,
      time: int, channel: str, delta: bool]``, followed by ``key: str, removed:
      bool`` for a map publication; the offset is not part of it;
    * ``INFO``: ``[user: str, client: str, conn_info: bin | nil, chan_info: bin | nil]``;
    * stream entry (field ``d``): ``0x01 PUB``;
    * presence entry: ``0x01 INFO``;
    * message on ``P.client.c``: ``0x01 [0, offset, epoch, PUB, PREV | nil]`` for a
      publication (offset 0 and epoch ``""`` without history; ``PREV`` is the
      previous publication, offset ``offset - 1``, only with ``use_delta``),
      ``0x01 [1, INFO]`` for a join, ``0x01 [2, INFO]`` for a leave;
    * message on ``P.control``: ``0x01`` followed by the opaque control bytes.

    Decoders ignore extra trailing array elements, so a later version can
    append fields. A message or entry with another format byte is dropped
    (and logged): a history entry that cannot be read is a gap, which clients
    already handle as "not recovered".

The key names (``P.client.c`` etc.) are in :mod:`rtcore.backends.redis.keys`.
"""

from __future__ import annotations

import logging
import math
import os
import string
from collections.abc import Sequence
from typing import Any, Final

import msgpack

from rtcore.engine.broker import BrokerEventHandler
from rtcore.engine.history import ZERO_POSITION
from rtcore.protocol.types import ClientInfo, Publication, StreamPosition


__all__ = [
    "FORMAT_VERSION",
    "KIND_JOIN",
    "KIND_LEAVE",
    "KIND_PUBLICATION",
    "decode_control_message",
    "decode_entry",
    "decode_message",
    "decode_presence_entry",
    "deliver_message",
    "encode_control_message",
    "encode_info_message",
    "encode_presence_entry",
    "encode_publication",
    "encode_publication_message",
    "ms",
    "new_epoch",
    "parse_position",
]


logger = logging.getLogger(__name__)

#: The format byte that starts every stored entry and pub/sub message.
FORMAT_VERSION: Final = 1
_V: Final = b"\x01"

#: Kinds of channel messages (the first element of the msgpack array).
KIND_PUBLICATION: Final = 0
KIND_JOIN: Final = 1
KIND_LEAVE: Final = 2

# Message head for a publication without history: format byte, fixarray(5),
# kind 0, offset 0, epoch "".
_PUB_HEAD_NO_HISTORY: Final = b"\x01\x95\x00\x00\xa0"
_MSGPACK_NIL: Final = b"\xc0"

_EPOCH_LETTERS: Final = string.ascii_letters


def new_epoch() -> str:
    # Eight random letters from the OS, as the memory backend does.
    return "".join([_EPOCH_LETTERS[b % 52] for b in os.urandom(8)])


def ms(seconds: float) -> int:
    """Seconds as whole milliseconds, rounded up so a TTL never ends early."""
    return max(1, math.ceil(seconds * 1000))


def _info_fields(info: ClientInfo) -> list[Any]:
    return [info.user, info.client, info.conn_info, info.chan_info]


def _info_from(obj: Sequence[Any]) -> ClientInfo:
    return ClientInfo(obj[0], obj[1], obj[2], obj[3])


def encode_publication(pub: Publication) -> bytes:
    """The msgpack body ``PUB`` of a publication (without the format byte)."""
    info = pub.info
    return msgpack.packb(  # type: ignore[no-any-return]
        [
            pub.data,
            None if info is None else [info.user, info.client, info.conn_info, info.chan_info],
            pub.tags,
            pub.time,
            pub.channel,
            pub.delta,
            *((pub.key, pub.removed) if pub.key else ()),
        ]
    )


def _publication_from(obj: Sequence[Any], offset: int) -> Publication:
    info = obj[1]
    return Publication(
        data=obj[0],
        offset=offset,
        info=None if info is None else ClientInfo(info[0], info[1], info[2], info[3]),
        tags=obj[2],
        time=obj[3],
        channel=obj[4],
        delta=obj[5],
        key=obj[6] if len(obj) > 7 else "",
        removed=bool(obj[7]) if len(obj) > 7 else False,
    )


def decode_entry(entry: bytes, offset: int) -> Publication | None:
    """A stored stream entry as a publication; None if its format is unknown."""
    if not entry or entry[0] != FORMAT_VERSION:
        return None
    return _publication_from(msgpack.unpackb(memoryview(entry)[1:]), offset)


def encode_presence_entry(info: ClientInfo) -> bytes:
    """A presence entry: ``0x01 INFO``."""
    return _V + msgpack.packb(_info_fields(info))  # type: ignore[no-any-return]


def decode_presence_entry(entry: bytes) -> ClientInfo | None:
    """A stored presence entry; None if its format is unknown."""
    if not entry or entry[0] != FORMAT_VERSION:
        return None
    return _info_from(msgpack.unpackb(memoryview(entry)[1:]))


def encode_publication_message(body: bytes) -> bytes:
    """The channel message of a publication without history, from its body."""
    return _PUB_HEAD_NO_HISTORY + body + _MSGPACK_NIL


def encode_positioned_message(body: bytes, offset: int, epoch: str) -> bytes:
    """The channel message of a publication stored at ``offset`` of ``epoch`` (no previous).

    What the publish script sends, built in Python for brokers that carry
    messages outside Redis (the NATS broker with Redis history).
    """
    position: bytes = msgpack.packb(offset) + msgpack.packb(epoch)
    return _V + b"\x95\x00" + position + body + _MSGPACK_NIL


def encode_info_message(kind: int, info: ClientInfo) -> bytes:
    """The channel message of a join (``KIND_JOIN``) or leave (``KIND_LEAVE``)."""
    return _V + msgpack.packb([kind, _info_fields(info)])  # type: ignore[no-any-return]


def decode_message(data: bytes) -> tuple[int, Any, Any, Any] | None:
    """Decode a channel message.

    Returns ``(KIND_PUBLICATION, pub, position, prev_pub)``, or
    ``(KIND_JOIN | KIND_LEAVE, info, None, None)``, or None when the format
    byte or the kind is unknown. Raises on malformed msgpack.
    """
    if not data or data[0] != FORMAT_VERSION:
        return None
    msg = msgpack.unpackb(memoryview(data)[1:])
    kind = msg[0]
    if kind == KIND_PUBLICATION:
        offset = msg[1]
        pub = _publication_from(msg[3], offset)
        prev = None if msg[4] is None else _publication_from(msg[4], offset - 1)
        return kind, pub, StreamPosition(offset, msg[2]) if offset else ZERO_POSITION, prev
    if kind == KIND_JOIN or kind == KIND_LEAVE:
        return kind, _info_from(msg[1]), None, None
    return None


def encode_control_message(data: bytes) -> bytes:
    """The message on ``P.control`` that carries the opaque control bytes ``data``."""
    return _V + data


def decode_control_message(message: bytes) -> bytes | None:
    """The control bytes of a message on ``P.control``; None if its format is unknown."""
    if not message or message[0] != FORMAT_VERSION:
        return None
    return message[1:]


def parse_position(cached: bytes) -> StreamPosition:
    """The position of a stored idempotency result ``"<offset>:<epoch>"``."""
    offset, _, epoch = cached.partition(b":")
    if not offset or offset == b"0":
        return ZERO_POSITION
    return StreamPosition(int(offset), epoch.decode())


def deliver_message(handler: BrokerEventHandler, channel: str, data: bytes) -> None:
    """Decode a channel message and hand it to ``handler``; log and drop what fails."""
    try:
        decoded = decode_message(data)
    except Exception:
        logger.exception("dropping an undecodable message in %r", channel)
        return
    if decoded is None:
        logger.warning("dropping a message in an unknown format in %r", channel)
        return
    kind, first, position, prev = decoded
    try:
        if kind == KIND_PUBLICATION:
            handler.on_publication(channel, first, position, prev)
        elif kind == KIND_JOIN:
            handler.on_join(channel, first)
        else:
            handler.on_leave(channel, first)
    except Exception:
        logger.exception("broker event handler failed on an event in %r", channel)
