"""The JSON codec's fast paths: msgspec parses and type-checks in C.

Used for client command lines and connect requests (below), for checking raw
payloads before they are sent (:func:`is_json`) and by the server API's body
parser (:func:`decode_value`). Every function here answers only what it is
sure of; the general code decides the rest.

msgspec (optional) decodes a command line into the typed structs below in one
call: JSON syntax, field types and integer ranges are checked in C, unknown
keys are skipped, and ``data`` comes back as :class:`msgspec.Raw`, the exact
source text (integers of any length pass, nothing is converted). The structs
are then copied into the protocol's dataclasses.

The fast path answers only what it is sure of. It returns ``None`` whenever
msgspec refuses the text (bad JSON, a wrong type, a lone surrogate escape,
nulls in arrays, ...), and for texts whose answer could differ from the
general decoder's (input that is not UTF-8, which msgspec does not check
inside skipped or raw values; deep nesting, where the two would hit the
recursion limit at different depths). The general decoder in
``_json_decode`` then decodes the text, or gives the error message, as
it does without msgspec. ``tests/test_codec_json_msgspec.py`` compares the two.
"""

from __future__ import annotations

import builtins
from typing import Annotated, Any, Final

import msgspec
from msgspec import Meta, Raw, Struct

from rtcore.protocol.messages import (
    Command,
    ConnectRequest,
    FilterNode,
    HistoryRequest,
    KeyedItem,
    PingRequest,
    PresenceRequest,
    PresenceStatsRequest,
    PublishRequest,
    RefreshRequest,
    RPCRequest,
    SendRequest,
    SubRefreshRequest,
    SubscribeRequest,
    TrackBatch,
    UnsubscribeRequest,
)
from rtcore.protocol.types import StreamPosition


__all__ = [
    "decode_command_lines",
    "decode_connect_text",
    "decode_value",
    "encode_compact",
    "is_json",
]

U32 = Annotated[int, Meta(ge=0, le=0xFFFF_FFFF)]
I32 = Annotated[int, Meta(ge=-0x8000_0000, le=0x7FFF_FFFF)]
# msgspec bounds must fit in an int64: the uint64 upper bound is checked by _u64.
U64 = Annotated[int, Meta(ge=0)]
_U64_MAX: Final = 0xFFFF_FFFF_FFFF_FFFF
I64 = Annotated[int, Meta(ge=-0x8000_0000_0000_0000, le=0x7FFF_FFFF_FFFF_FFFF)]

# JSON null means absent: every field is ``T | None`` and None becomes the
# dataclass default when copied. ``data`` is Raw (msgspec keeps Raw out of
# unions), so a null ``data`` arrives as Raw(b"null").
# gc=False: structs decoded from JSON hold no cycles and live for one call.


class _Filter(Struct, gc=False):
    op: str | None = None
    key: str | None = None
    cmp: str | None = None
    val: str | None = None
    vals: list[str] | None = None
    nodes: list[_Filter] | None = None


class _Subscribe(Struct, gc=False):
    channel: str | None = None
    token: str | None = None
    recover: bool | None = None
    epoch: str | None = None
    offset: U64 | None = None
    data: Raw = Raw()
    positioned: bool | None = None
    recoverable: bool | None = None
    join_leave: bool | None = None
    delta: str | None = None
    tf: _Filter | None = None
    flag: I64 | None = None
    type: I32 | None = None
    phase: I32 | None = None
    cursor: str | None = None
    limit: I32 | None = None
    asc: bool | None = None


class _Connect(Struct, gc=False):
    token: str | None = None
    data: Raw = Raw()
    subs: builtins.dict[str, _Subscribe | None] | None = None
    name: str | None = None
    version: str | None = None
    headers: builtins.dict[str, str | None] | None = None
    flag: I64 | None = None
    dict: str | None = None
    profile: str | None = None


class _Channel(Struct, gc=False):
    channel: str | None = None


class _Publish(Struct, gc=False):
    channel: str | None = None
    data: Raw = Raw()
    type: I32 | None = None
    key: str | None = None
    removed: bool | None = None


class _Since(Struct, gc=False):
    offset: U64 | None = None
    epoch: str | None = None


class _History(Struct, gc=False):
    channel: str | None = None
    limit: I32 | None = None
    since: _Since | None = None
    reverse: bool | None = None


class _Empty(Struct, gc=False):
    pass


class _Send(Struct, gc=False):
    data: Raw = Raw()


class _RPC(Struct, gc=False):
    data: Raw = Raw()
    method: str | None = None


class _Token(Struct, gc=False):
    token: str | None = None


class _Item(Struct, gc=False):
    key: str | None = None
    version: U64 | None = None


class _Track(Struct, gc=False):
    signature: str | None = None
    items: list[_Item] | None = None


class _SubRefresh(Struct, gc=False):
    channel: str | None = None
    token: str | None = None
    type: I32 | None = None
    track: list[_Track] | None = None
    untrack: list[str] | None = None


class _Command(Struct, gc=False):
    id: U32 | None = None
    connect: _Connect | None = None
    subscribe: _Subscribe | None = None
    unsubscribe: _Channel | None = None
    publish: _Publish | None = None
    presence: _Channel | None = None
    presence_stats: _Channel | None = None
    history: _History | None = None
    ping: _Empty | None = None
    send: _Send | None = None
    rpc: _RPC | None = None
    refresh: _Token | None = None
    sub_refresh: _SubRefresh | None = None


_decode_command: Final = msgspec.json.Decoder(_Command).decode
_decode_connect: Final = msgspec.json.Decoder(_Connect).decode
# Checks one JSON value without building it (Raw keeps the source text).
_decode_raw: Final = msgspec.json.Decoder(Raw).decode
_decode_any: Final = msgspec.json.Decoder().decode
encode_compact: Final = msgspec.json.Encoder().encode

# Longer texts are decoded here only if they hold at most this many "[" and
# "{" together: far below the recursion limit, so both decoders agree.
_SHORT: Final = 256
_MAX_OPENINGS: Final = 256


def _u64(v: int | None) -> int:
    if v is None:
        return 0
    if v > _U64_MAX:
        raise ValueError("out of range for uint64")
    return v


def _raw(v: Raw) -> bytes:
    data = bytes(v)
    return b"" if data == b"null" else data


def _filter(v: _Filter) -> FilterNode:
    return FilterNode(
        v.op or "",
        v.key or "",
        v.cmp or "",
        v.val or "",
        v.vals or [],
        [_filter(n) for n in v.nodes] if v.nodes else [],
    )


def _subscribe(v: _Subscribe) -> SubscribeRequest:
    return SubscribeRequest(
        v.channel or "",
        v.token or "",
        v.recover or False,
        v.epoch or "",
        _u64(v.offset),
        _raw(v.data),
        v.positioned or False,
        v.recoverable or False,
        v.join_leave or False,
        v.delta or "",
        None if v.tf is None else _filter(v.tf),
        v.flag or 0,
        v.type or 0,
        v.phase or 0,
        v.cursor or "",
        v.limit or 0,
        v.asc or False,
    )


def _connect(v: _Connect) -> ConnectRequest:
    subs = v.subs
    headers = v.headers
    return ConnectRequest(
        v.token or "",
        _raw(v.data),
        {k: _subscribe(s) for k, s in subs.items() if s is not None} if subs else {},
        v.name or "",
        v.version or "",
        {k: h for k, h in headers.items() if h is not None} if headers else {},
        v.flag or 0,
        v.dict or "",
        v.profile or "",
    )


def _history(v: _History) -> HistoryRequest:
    since = v.since
    return HistoryRequest(
        v.channel or "",
        v.limit or 0,
        None if since is None else StreamPosition(_u64(since.offset), since.epoch or ""),
        v.reverse or False,
    )


def _sub_refresh(v: _SubRefresh) -> SubRefreshRequest:
    return SubRefreshRequest(
        v.channel or "",
        v.token or "",
        v.type or 0,
        [
            TrackBatch(
                t.signature or "",
                [KeyedItem(i.key or "", _u64(i.version)) for i in t.items] if t.items else [],
            )
            for t in v.track
        ]
        if v.track
        else [],
        v.untrack or [],
    )


def _command(v: _Command) -> Command:
    c = Command(v.id or 0)
    # The common commands first; each request field is copied only if present.
    if v.publish is not None:
        p = v.publish
        c.publish = PublishRequest(
            p.channel or "", _raw(p.data), p.type or 0, p.key or "", p.removed or False
        )
    if v.subscribe is not None:
        c.subscribe = _subscribe(v.subscribe)
    if v.unsubscribe is not None:
        c.unsubscribe = UnsubscribeRequest(v.unsubscribe.channel or "")
    if v.connect is not None:
        c.connect = _connect(v.connect)
    if v.presence is not None:
        c.presence = PresenceRequest(v.presence.channel or "")
    if v.presence_stats is not None:
        c.presence_stats = PresenceStatsRequest(v.presence_stats.channel or "")
    if v.history is not None:
        c.history = _history(v.history)
    if v.ping is not None:
        c.ping = PingRequest()
    if v.send is not None:
        c.send = SendRequest(_raw(v.send.data))
    if v.rpc is not None:
        c.rpc = RPCRequest(_raw(v.rpc.data), v.rpc.method or "")
    if v.refresh is not None:
        c.refresh = RefreshRequest(v.refresh.token or "")
    if v.sub_refresh is not None:
        c.sub_refresh = _sub_refresh(v.sub_refresh)
    return c


def _deep(line: bytes | str) -> bool:
    """Whether ``line`` may nest deeper than both decoders surely agree on."""
    if len(line) <= _SHORT:
        return False
    if isinstance(line, str):
        openings = line.count("[") + line.count("{")
    else:
        openings = line.count(b"[") + line.count(b"{")
    return openings > _MAX_OPENINGS


def _utf8(data: bytes) -> bool:
    # msgspec checks UTF-8 only in the strings it converts; the general
    # decoder checks the whole text, so non-ASCII bytes are checked here.
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# DecodeError and ValidationError are MsgspecErrors; a str holding a lone
# surrogate cannot be encoded to UTF-8 (UnicodeEncodeError, a ValueError).
_REFUSED: Final = (msgspec.MsgspecError, ValueError, RecursionError)


def decode_command_lines(frame: bytes | str) -> list[Command] | None:
    """The commands of a newline-delimited frame, or None: ask the general decoder."""
    lines: list[bytes] | list[str]
    if isinstance(frame, str):
        lines = (frame[:-1] if frame.endswith("\n") else frame).split("\n")
    else:
        if not _utf8(frame):
            return None
        lines = (frame[:-1] if frame.endswith(b"\n") else frame).split(b"\n")
    commands = []
    try:
        for line in lines:
            if _deep(line):
                return None
            commands.append(_command(_decode_command(line)))
    except _REFUSED:
        return None
    return commands


def decode_connect_text(text: bytes | str) -> ConnectRequest | None:
    """A bare connect request, or None: ask the general decoder."""
    if _deep(text) or (not isinstance(text, str) and not _utf8(text)):
        return None
    try:
        return _connect(_decode_connect(text))
    except _REFUSED:
        return None


def is_json(data: bytes | str) -> bool:
    """True if ``data`` is surely one JSON value; False means: ask ``check_json_text``.

    msgspec refuses some valid JSON (lone surrogate escapes) and may give up
    on deep nesting, so False is no verdict.
    """
    if not isinstance(data, str) and not _utf8(data):
        return False
    try:
        _decode_raw(data)
    except _REFUSED:
        return False
    return True


def decode_value(text: str) -> tuple[Any, bool]:
    """The value of ``text`` (ValueError if msgspec refuses it) and whether ``text`` is compact.

    Compact means ``encode_compact(value) == text`` (JSON.stringify and Go
    write the same for most values): then the source of every nested value
    is ``encode_compact`` of it, so raw fields can be written back byte for
    byte. msgspec refuses integers past the digit limit and lone surrogate
    escapes, which the caller's general parser accepts.
    """
    try:
        value = _decode_any(text)
    except _REFUSED as e:
        raise ValueError(str(e)) from None
    if text.startswith('{"'):
        # Python's json.dumps defaults put a space after the first key's colon.
        colon = text.find('"', 2) + 1
        if text.startswith(": ", colon):
            return value, False
    return value, encode_compact(value) == text.encode("utf-8")
