"""JSON for the unidirectional transports: pushes without the Reply wrapper.

Unidirectional clients (PROTOCOL.md §6.2) receive bare ``Push`` objects, one
per line or event. The node encodes each publication once per codec, so this
codec is one of ``Node.codecs`` and uni subscribers share one encoding.
"""

from __future__ import annotations

from rtcore.protocol.json import JsonCodec
from rtcore.protocol.messages import Join, Leave, Push
from rtcore.protocol.types import ClientInfo, Publication


__all__ = ["UNI_JSON", "UniJsonCodec"]


class UniJsonCodec(JsonCodec):
    """JSON for unidirectional transports: pushes are bare ``Push`` objects.

    ``encode_push``, ``encode_publication``, ``encode_join`` and
    ``encode_leave`` return the bare push followed by ``\\n`` (no Reply
    wrapper), so fan-out queues the right bytes for uni subscribers and
    encodes each publication once for all of them.
    """

    __slots__ = ()

    def encode_push(self, push: Push) -> bytes:
        return self.encode_push_bare(push) + b"\n"

    def encode_publication(self, channel: str, pub: Publication) -> bytes:
        return self.encode_push_bare(Push(channel=channel, pub=pub)) + b"\n"

    def encode_join(self, channel: str, info: ClientInfo) -> bytes:
        return self.encode_push_bare(Push(channel=channel, join=Join(info=info))) + b"\n"

    def encode_leave(self, channel: str, info: ClientInfo) -> bytes:
        return self.encode_push_bare(Push(channel=channel, leave=Leave(info=info))) + b"\n"


#: The codec of every unidirectional session (one of ``Node.codecs``).
UNI_JSON = UniJsonCodec()
