"""The Centrifuge client protocol v2: message model and the JSON / Protobuf codecs.

Sans-I/O: nothing here touches sockets or asyncio. ``get_codec(name)`` returns
the shared codec for ``"json"`` or ``"protobuf"``; ``select_codec(...)`` picks
one for a WebSocket connection from its handshake. See ``codec.Codec`` for
the contract and ``docs/codecs.md`` for the wire rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from rtcore.protocol.codec import Codec
from rtcore.protocol.errors import InappropriateProtocol, ProtocolDecodeError, ProtocolEncodeError
from rtcore.protocol.json import JsonCodec
from rtcore.protocol.messages import (
    PUSH_FIELDS,
    REQUEST_FIELDS,
    RESULT_FIELDS,
    ClientInfo,
    Command,
    Connect,
    ConnectRequest,
    ConnectResult,
    Dictionary,
    Disconnect,
    EmulationRequest,
    Error,
    FilterNode,
    HistoryRequest,
    HistoryResult,
    Join,
    KeyedItem,
    Leave,
    Message,
    PingRequest,
    PingResult,
    PresenceRequest,
    PresenceResult,
    PresenceStatsRequest,
    PresenceStatsResult,
    Publication,
    PublishRequest,
    PublishResult,
    Push,
    PushBody,
    Refresh,
    RefreshRequest,
    RefreshResult,
    Reply,
    Request,
    Result,
    RPCRequest,
    RPCResult,
    SendRequest,
    StreamPosition,
    SubRefreshRequest,
    SubRefreshResult,
    Subscribe,
    SubscribeRequest,
    SubscribeResult,
    TrackBatch,
    Unsubscribe,
    UnsubscribeRequest,
    UnsubscribeResult,
)
from rtcore.protocol.protobuf import ProtobufCodec


__all__ = [
    # Codecs.
    "Codec",
    "JsonCodec",
    "ProtobufCodec",
    "JSON",
    "PROTOBUF",
    "get_codec",
    "select_codec",
    "SUBPROTOCOL_JSON",
    "SUBPROTOCOL_PROTOBUF",
    # Errors.
    "ProtocolDecodeError",
    "ProtocolEncodeError",
    "InappropriateProtocol",
    # Messages.
    "REQUEST_FIELDS",
    "RESULT_FIELDS",
    "PUSH_FIELDS",
    "Request",
    "Result",
    "PushBody",
    "ClientInfo",
    "Publication",
    "StreamPosition",
    "Command",
    "Reply",
    "Push",
    "Error",
    "ConnectRequest",
    "SubscribeRequest",
    "UnsubscribeRequest",
    "PublishRequest",
    "PresenceRequest",
    "PresenceStatsRequest",
    "HistoryRequest",
    "PingRequest",
    "SendRequest",
    "RPCRequest",
    "RefreshRequest",
    "SubRefreshRequest",
    "ConnectResult",
    "SubscribeResult",
    "UnsubscribeResult",
    "PublishResult",
    "PresenceResult",
    "PresenceStatsResult",
    "HistoryResult",
    "PingResult",
    "RPCResult",
    "RefreshResult",
    "SubRefreshResult",
    "Join",
    "Leave",
    "Unsubscribe",
    "Message",
    "Subscribe",
    "Connect",
    "Disconnect",
    "Refresh",
    "EmulationRequest",
    "FilterNode",
    "Dictionary",
    "KeyedItem",
    "TrackBatch",
]

#: The shared, stateless codec instances.
JSON: Final = JsonCodec()
PROTOBUF: Final = ProtobufCodec()

#: WebSocket subprotocols offered by the server (PROTOCOL.md §1.2).
SUBPROTOCOL_JSON: Final = "centrifuge-json"
SUBPROTOCOL_PROTOBUF: Final = "centrifuge-protobuf"

_CODECS: Final[Mapping[str, Codec]] = {"json": JSON, "protobuf": PROTOBUF}

# Query parameters that switch a WebSocket connection to Protobuf.
_FORMAT_PARAMS: Final = ("format", "cf_protocol")


def get_codec(name: str) -> Codec:
    """Return the shared codec named ``"json"`` or ``"protobuf"``.

    Raises:
        ValueError: any other name.
    """
    try:
        return _CODECS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown codec {name!r}: expected 'json' or 'protobuf'") from None


def select_codec(
    subprotocols: Iterable[str],
    query_params: Mapping[str, str] | Mapping[str, Sequence[str]],
) -> Codec:
    """Pick the codec of a WebSocket connection (PROTOCOL.md §1.2).

    Protobuf when the client requested the ``centrifuge-protobuf`` subprotocol
    or the query has ``format=protobuf`` or ``cf_protocol=protobuf``; JSON
    otherwise. Either signal is enough and nothing forces JSON back.
    ``cf_protocol_version`` is ignored. Comparisons are exact (subprotocol
    tokens and these values are case-sensitive).

    The server should echo ``centrifuge-protobuf`` in the handshake response
    when it was requested (``SUBPROTOCOL_PROTOBUF``), and may echo
    ``centrifuge-json`` when that was requested.

    Args:
        subprotocols: the tokens of the client's ``Sec-WebSocket-Protocol``
            header(s), already split on commas and stripped.
        query_params: the request's query, either one value per name (as from
            ``dict(parse_qsl(...))``) or a sequence of values per name (as
            from ``parse_qs(...)``).
    """
    if SUBPROTOCOL_PROTOBUF in subprotocols:
        return PROTOBUF
    for name in _FORMAT_PARAMS:
        value = query_params.get(name)
        if value is None:
            continue
        if isinstance(value, str):
            if value == "protobuf":
                return PROTOBUF
        elif "protobuf" in value:
            return PROTOBUF
    return JSON
