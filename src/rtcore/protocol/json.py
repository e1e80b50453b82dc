"""The JSON codec (``JsonCodec``): newline-delimited JSON objects.

Encoding follows the Centrifuge JSON protocol (PROTOCOL.md §2.0), which is not
canonical proto3-JSON:

* keys are the proto field names (snake_case), written in field-number order;
* zero values are omitted, except the always-present fields
  ``ClientInfo.user``/``client``, ``PresenceResult.presence``,
  ``PresenceStatsResult.num_clients``/``num_users`` and
  ``HistoryResult.publications``/``epoch``/``offset``; a set but empty
  result is written as ``{}`` (``{"id":3,"unsubscribe":{}}``);
* 64-bit integers are JSON numbers;
* ``bytes`` fields are embedded as raw JSON values. They must hold valid JSON
  (else ``InappropriateProtocol``) and their raw newline bytes are removed,
  since ``\\n`` delimits messages (a valid JSON text only has raw newlines as
  whitespace between tokens, so this does not change its value);
* strings are written with non-ASCII characters escaped (``\\uXXXX``), so the
  output is ASCII apart from raw-JSON payloads.

Every ``encode_*`` result except ``encode_push_bare`` ends with ``b"\\n"``: a
frame is the concatenation of encoded messages. Decoding lives in
``_json_decode``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

from rtcore.protocol import _json_decode
from rtcore.protocol.errors import (
    InappropriateProtocol,
    ProtocolDecodeError,
    ProtocolEncodeError,
    too_many_commands,
)
from rtcore.protocol.messages import (
    Command,
    Connect,
    ConnectRequest,
    ConnectResult,
    Dictionary,
    Disconnect,
    EmulationRequest,
    Error,
    HistoryResult,
    Join,
    Leave,
    Message,
    PresenceResult,
    PresenceStatsResult,
    Push,
    Refresh,
    RefreshResult,
    Reply,
    RPCResult,
    SubRefreshResult,
    Subscribe,
    SubscribeResult,
    Unsubscribe,
)
from rtcore.protocol.types import ClientInfo, Publication


__all__ = ["HugeInt", "JsonCodec", "check_json_text", "msgspec_json", "scan_json_value"]

# JSON text checks that never convert an integer past Python's digit limit
# (raw payloads pass whatever their integers); the server API uses them too.
HugeInt = _json_decode.HugeInt
check_json_text: Final = _json_decode.check_json_text
scan_json_value: Final = _json_decode.scan_json_value

_quote: Final = json.encoder.encode_basestring_ascii
try:
    from rtcore.protocol import _json_msgspec
except ImportError:  # msgspec is optional
    _json_msgspec = None  # type: ignore[assignment]

# The msgspec fast paths (rtcore.protocol._json_msgspec), None without msgspec.
msgspec_json: Final = _json_msgspec
# msgspec's check of raw payloads: what it does not accept goes to
# check_json_text, which decides and words the error.
_is_json: Final = None if msgspec_json is None else msgspec_json.is_json

_U32_MAX: Final = 0xFFFF_FFFF
_U64_MAX: Final = 0xFFFF_FFFF_FFFF_FFFF
_I64_MIN: Final = -0x8000_0000_0000_0000
_I64_MAX: Final = 0x7FFF_FFFF_FFFF_FFFF
_I32_MIN: Final = -0x8000_0000
_I32_MAX: Final = 0x7FFF_FFFF


# ---------------------------------------------------------------------------
# Scalars


def _s(v: str) -> bytes:
    # encode_basestring_ascii escapes everything outside ASCII, lone
    # surrogates included, so the result always encodes.
    return _quote(v).encode("ascii")


def _int(v: int, lo: int, hi: int, name: str) -> bytes:
    if isinstance(v, int) and lo <= v <= hi:
        return b"%d" % v
    if not isinstance(v, int):
        raise ProtocolEncodeError(f"{name}: expected an integer, got {type(v).__name__}")
    raise ProtocolEncodeError(f"{name}: {v} is out of range")


def _u32(v: int, name: str) -> bytes:
    return _int(v, 0, _U32_MAX, name)


def _u64(v: int, name: str) -> bytes:
    return _int(v, 0, _U64_MAX, name)


def _i64(v: int, name: str) -> bytes:
    return _int(v, _I64_MIN, _I64_MAX, name)


def _i32(v: int, name: str) -> bytes:
    return _int(v, _I32_MIN, _I32_MAX, name)


def _raw(v: bytes, name: str) -> bytes:
    """Check that ``v`` is one valid JSON value and strip its raw newlines."""
    if type(v) is not bytes:
        if not isinstance(v, (bytes, bytearray, memoryview)):
            raise ProtocolEncodeError(f"{name}: expected bytes, got {type(v).__name__}")
        v = bytes(v)
    if _is_json is not None and _is_json(v):
        pass  # checked in C, without decoding to str first
    else:
        try:
            check_json_text(v.decode("utf-8"))
        except (ValueError, RecursionError) as e:
            # UnicodeDecodeError and JSONDecodeError are ValueErrors.
            raise InappropriateProtocol(
                f"{name}: payload is not valid JSON and cannot be sent to a JSON client ({e})"
            ) from None
    # find, not "in": on 3.11 a bytes "in" tries the operand as an int first
    # and raises and clears a TypeError (three times the cost).
    if v.find(b"\n") >= 0:
        v = v.replace(b"\n", b"")
    return v


def _str_map(v: dict[str, str]) -> bytes:
    return b"{" + b",".join(_s(k) + b":" + _s(x) for k, x in v.items()) + b"}"


def _obj(members: list[bytes]) -> bytes:
    return b"{" + b",".join(members) + b"}"


# ---------------------------------------------------------------------------
# Messages shared by replies and pushes


def _client_info(v: ClientInfo) -> bytes:
    out = b'{"user":' + _s(v.user) + b',"client":' + _s(v.client)
    if v.conn_info:
        out += b',"conn_info":' + _raw(v.conn_info, "conn_info")
    if v.chan_info:
        out += b',"chan_info":' + _raw(v.chan_info, "chan_info")
    return out + b"}"


def _publication(v: Publication) -> bytes:
    m = []
    if v.data:
        m.append(b'"data":' + _raw(v.data, "data"))
    if v.info is not None:
        m.append(b'"info":' + _client_info(v.info))
    offset = v.offset
    if offset:
        if type(offset) is int and 0 < offset <= _U64_MAX:
            m.append(b'"offset":%d' % offset)
        else:
            m.append(b'"offset":' + _u64(offset, "offset"))
    if v.tags:
        m.append(b'"tags":' + _str_map(v.tags))
    if v.delta:
        m.append(b'"delta":true')
    if v.time:
        m.append(b'"time":' + _i64(v.time, "time"))
    if v.channel:
        m.append(b'"channel":' + _s(v.channel))
    if v.key:
        m.append(b'"key":' + _s(v.key))
    if v.removed:
        m.append(b'"removed":true')
    return _obj(m)


def _publications(v: list[Publication]) -> bytes:
    return b"[" + b",".join([_publication(p) for p in v]) + b"]"


def _subscribe_result(v: SubscribeResult) -> bytes:
    m = []
    if v.expires:
        m.append(b'"expires":true')
    if v.ttl:
        m.append(b'"ttl":' + _u32(v.ttl, "ttl"))
    if v.recoverable:
        m.append(b'"recoverable":true')
    if v.epoch:
        m.append(b'"epoch":' + _s(v.epoch))
    if v.publications:
        m.append(b'"publications":' + _publications(v.publications))
    if v.recovered:
        m.append(b'"recovered":true')
    if v.offset:
        m.append(b'"offset":' + _u64(v.offset, "offset"))
    if v.positioned:
        m.append(b'"positioned":true')
    if v.data:
        m.append(b'"data":' + _raw(v.data, "data"))
    if v.was_recovering:
        m.append(b'"was_recovering":true')
    if v.delta:
        m.append(b'"delta":true')
    if v.id:
        m.append(b'"id":' + _i64(v.id, "id"))
    if v.type:
        m.append(b'"type":' + _i32(v.type, "type"))
    if v.phase:
        m.append(b'"phase":' + _i32(v.phase, "phase"))
    if v.cursor:
        m.append(b'"cursor":' + _s(v.cursor))
    if v.state:
        m.append(b'"state":' + _publications(v.state))
    if v.publish_debounce:
        m.append(b'"publish_debounce":' + _u32(v.publish_debounce, "publish_debounce"))
    return _obj(m)


def _subs(v: dict[str, SubscribeResult]) -> bytes:
    return b"{" + b",".join(_s(k) + b":" + _subscribe_result(x) for k, x in v.items()) + b"}"


# ---------------------------------------------------------------------------
# Push bodies


def _join(v: Join) -> bytes:
    return b'{"info":' + _client_info(v.info) + b"}"


def _leave(v: Leave) -> bytes:
    return b'{"info":' + _client_info(v.info) + b"}"


def _unsubscribe(v: Unsubscribe) -> bytes:
    m = []
    if v.code:
        m.append(b'"code":' + _u32(v.code, "code"))
    if v.reason:
        m.append(b'"reason":' + _s(v.reason))
    return _obj(m)


def _message(v: Message) -> bytes:
    if v.data:
        return b'{"data":' + _raw(v.data, "data") + b"}"
    return b"{}"


def _subscribe(v: Subscribe) -> bytes:
    m = []
    if v.recoverable:
        m.append(b'"recoverable":true')
    if v.epoch:
        m.append(b'"epoch":' + _s(v.epoch))
    if v.offset:
        m.append(b'"offset":' + _u64(v.offset, "offset"))
    if v.positioned:
        m.append(b'"positioned":true')
    if v.data:
        m.append(b'"data":' + _raw(v.data, "data"))
    return _obj(m)


def _connect(v: Connect) -> bytes:
    m = []
    if v.client:
        m.append(b'"client":' + _s(v.client))
    if v.version:
        m.append(b'"version":' + _s(v.version))
    if v.data:
        m.append(b'"data":' + _raw(v.data, "data"))
    if v.subs:
        m.append(b'"subs":' + _subs(v.subs))
    if v.expires:
        m.append(b'"expires":true')
    if v.ttl:
        m.append(b'"ttl":' + _u32(v.ttl, "ttl"))
    if v.ping:
        m.append(b'"ping":' + _u32(v.ping, "ping"))
    if v.pong:
        m.append(b'"pong":true')
    if v.session:
        m.append(b'"session":' + _s(v.session))
    if v.node:
        m.append(b'"node":' + _s(v.node))
    if v.time:
        m.append(b'"time":' + _i64(v.time, "time"))
    return _obj(m)


def _disconnect(v: Disconnect) -> bytes:
    m = []
    if v.code:
        m.append(b'"code":' + _u32(v.code, "code"))
    if v.reason:
        m.append(b'"reason":' + _s(v.reason))
    if v.reconnect:
        m.append(b'"reconnect":true')
    return _obj(m)


def _refresh(v: Refresh) -> bytes:
    m = []
    if v.expires:
        m.append(b'"expires":true')
    if v.ttl:
        m.append(b'"ttl":' + _u32(v.ttl, "ttl"))
    return _obj(m)


_PUSH_BODIES: Final[tuple[tuple[str, bytes, Callable[[Any], bytes]], ...]] = (
    ("pub", b'"pub":', _publication),
    ("join", b'"join":', _join),
    ("leave", b'"leave":', _leave),
    ("unsubscribe", b'"unsubscribe":', _unsubscribe),
    ("message", b'"message":', _message),
    ("subscribe", b'"subscribe":', _subscribe),
    ("connect", b'"connect":', _connect),
    ("disconnect", b'"disconnect":', _disconnect),
    ("refresh", b'"refresh":', _refresh),
)


def _push(v: Push) -> bytes:
    m = []
    if v.id:
        m.append(b'"id":' + _i64(v.id, "id"))
    if v.channel:
        m.append(b'"channel":' + _s(v.channel))
    for name, key, encode in _PUSH_BODIES:
        body = getattr(v, name)
        if body is not None:
            m.append(key + encode(body))
    return _obj(m)


# ---------------------------------------------------------------------------
# Results


def _error(v: Error) -> bytes:
    m = []
    if v.code:
        m.append(b'"code":' + _u32(v.code, "code"))
    if v.message:
        m.append(b'"message":' + _s(v.message))
    if v.temporary:
        m.append(b'"temporary":true')
    return _obj(m)


def _dictionary(v: Dictionary) -> bytes:
    m = []
    if v.id:
        m.append(b'"id":' + _s(v.id))
    if v.data:
        m.append(b'"data":' + _raw(v.data, "data"))
    if v.data_b64:
        m.append(b'"data_b64":' + _s(v.data_b64))
    return _obj(m)


def _connect_result(v: ConnectResult) -> bytes:
    m = []
    if v.client:
        m.append(b'"client":' + _s(v.client))
    if v.version:
        m.append(b'"version":' + _s(v.version))
    if v.expires:
        m.append(b'"expires":true')
    if v.ttl:
        m.append(b'"ttl":' + _u32(v.ttl, "ttl"))
    if v.data:
        m.append(b'"data":' + _raw(v.data, "data"))
    if v.subs:
        m.append(b'"subs":' + _subs(v.subs))
    if v.ping:
        m.append(b'"ping":' + _u32(v.ping, "ping"))
    if v.pong:
        m.append(b'"pong":true')
    if v.session:
        m.append(b'"session":' + _s(v.session))
    if v.node:
        m.append(b'"node":' + _s(v.node))
    if v.time:
        m.append(b'"time":' + _i64(v.time, "time"))
    if v.flag:
        m.append(b'"flag":' + _i64(v.flag, "flag"))
    if v.dict is not None:
        m.append(b'"dict":' + _dictionary(v.dict))
    return _obj(m)


def _empty(v: object) -> bytes:
    return b"{}"


def _presence_result(v: PresenceResult) -> bytes:
    return (
        b'{"presence":{'
        + b",".join(_s(k) + b":" + _client_info(x) for k, x in v.presence.items())
        + b"}}"
    )


def _presence_stats_result(v: PresenceStatsResult) -> bytes:
    return (
        b'{"num_clients":'
        + _u32(v.num_clients, "num_clients")
        + b',"num_users":'
        + _u32(v.num_users, "num_users")
        + b"}"
    )


def _history_result(v: HistoryResult) -> bytes:
    return (
        b'{"publications":'
        + _publications(v.publications)
        + b',"epoch":'
        + _s(v.epoch)
        + b',"offset":'
        + _u64(v.offset, "offset")
        + b"}"
    )


def _rpc_result(v: RPCResult) -> bytes:
    if v.data:
        return b'{"data":' + _raw(v.data, "data") + b"}"
    return b"{}"


def _refresh_result(v: RefreshResult) -> bytes:
    m = []
    if v.client:
        m.append(b'"client":' + _s(v.client))
    if v.version:
        m.append(b'"version":' + _s(v.version))
    if v.expires:
        m.append(b'"expires":true')
    if v.ttl:
        m.append(b'"ttl":' + _u32(v.ttl, "ttl"))
    return _obj(m)


def _sub_refresh_result(v: SubRefreshResult) -> bytes:
    m = []
    if v.expires:
        m.append(b'"expires":true')
    if v.ttl:
        m.append(b'"ttl":' + _u32(v.ttl, "ttl"))
    if v.items:
        m.append(b'"items":' + _publications(v.items))
    return _obj(m)


_REPLY_FIELDS: Final[tuple[tuple[str, bytes, Callable[[Any], bytes]], ...]] = (
    ("error", b'"error":', _error),
    ("push", b'"push":', _push),
    ("connect", b'"connect":', _connect_result),
    ("subscribe", b'"subscribe":', _subscribe_result),
    ("unsubscribe", b'"unsubscribe":', _empty),
    ("publish", b'"publish":', _empty),
    ("presence", b'"presence":', _presence_result),
    ("presence_stats", b'"presence_stats":', _presence_stats_result),
    ("history", b'"history":', _history_result),
    ("ping", b'"ping":', _empty),
    ("rpc", b'"rpc":', _rpc_result),
    ("refresh", b'"refresh":', _refresh_result),
    ("sub_refresh", b'"sub_refresh":', _sub_refresh_result),
)


def _reply(v: Reply) -> bytes:
    m = []
    if v.id:
        m.append(b'"id":' + _u32(v.id, "id"))
    for name, key, encode in _REPLY_FIELDS:
        body = getattr(v, name)
        if body is not None:
            m.append(key + encode(body))
    return _obj(m)


def _wrap(what: str, e: Exception) -> ProtocolEncodeError:
    return ProtocolEncodeError(f"cannot encode {what}: {type(e).__name__}: {e}")


# Precomputed pieces of the fan-out fast paths.
_PUSH_CHANNEL: Final = b'{"push":{"channel":'
_PUSH_PUB_NO_CHANNEL: Final = b'{"push":{"pub":'
_PUB: Final = b',"pub":'
_JOIN_INFO: Final = b',"join":{"info":'
_LEAVE_INFO: Final = b',"leave":{"info":'
_PUSH_JOIN_NO_CHANNEL: Final = b'{"push":{"join":{"info":'
_PUSH_LEAVE_NO_CHANNEL: Final = b'{"push":{"leave":{"info":'
_END2: Final = b"}}\n"
_END3: Final = b"}}}\n"


class JsonCodec:
    """The JSON protocol: WebSocket text frames, one JSON object per line.

    Stateless; use the shared instance from ``get_codec("json")``.
    """

    __slots__ = ()

    name: str = "json"
    binary: bool = False
    ping: bytes = b"{}\n"
    pongs: frozenset[bytes | str] = frozenset((b"{}", b"{}\n", "{}", "{}\n"))

    def decode_commands(self, data: bytes, limit: int = 0) -> list[Command]:
        """See ``Codec.decode_commands``; also accepts ``str``."""
        if limit > 0:
            # Counting lines is one C pass; decoding them is not.
            text = bytes(data) if isinstance(data, memoryview) else data
            newline = "\n" if isinstance(text, str) else b"\n"
            lines = text.count(newline) + (not text.endswith(newline))
            if lines > limit:
                raise ProtocolDecodeError(too_many_commands(limit))
        return _json_decode.decode_command_frame(data)

    def decode_connect_request(self, data: bytes) -> ConnectRequest:
        """See ``Codec.decode_connect_request``."""
        return _json_decode.decode_connect_request(data)

    def decode_emulation_request(self, data: bytes) -> EmulationRequest:
        """See ``Codec.decode_emulation_request``."""
        return _json_decode.decode_emulation_request(data)

    def encode_reply(self, reply: Reply) -> bytes:
        """See ``Codec.encode_reply``."""
        try:
            return _reply(reply) + b"\n"
        except ProtocolEncodeError:
            raise
        except (TypeError, ValueError, AttributeError) as e:
            raise _wrap("reply", e) from e

    def encode_push(self, push: Push) -> bytes:
        """See ``Codec.encode_push``."""
        try:
            return b'{"push":' + _push(push) + b"}\n"
        except ProtocolEncodeError:
            raise
        except (TypeError, ValueError, AttributeError) as e:
            raise _wrap("push", e) from e

    def encode_push_bare(self, push: Push) -> bytes:
        """See ``Codec.encode_push_bare``."""
        try:
            return _push(push)
        except ProtocolEncodeError:
            raise
        except (TypeError, ValueError, AttributeError) as e:
            raise _wrap("push", e) from e

    def encode_publication(self, channel: str, pub: Publication) -> bytes:
        """See ``Codec.encode_publication``."""
        try:
            if channel:
                return _PUSH_CHANNEL + _s(channel) + _PUB + _publication(pub) + _END2
            return _PUSH_PUB_NO_CHANNEL + _publication(pub) + _END2
        except ProtocolEncodeError:
            raise
        except (TypeError, ValueError, AttributeError) as e:
            raise _wrap("publication", e) from e

    def encode_join(self, channel: str, info: ClientInfo) -> bytes:
        """See ``Codec.encode_join``."""
        try:
            if channel:
                return _PUSH_CHANNEL + _s(channel) + _JOIN_INFO + _client_info(info) + _END3
            return _PUSH_JOIN_NO_CHANNEL + _client_info(info) + _END3
        except ProtocolEncodeError:
            raise
        except (TypeError, ValueError, AttributeError) as e:
            raise _wrap("join", e) from e

    def encode_leave(self, channel: str, info: ClientInfo) -> bytes:
        """See ``Codec.encode_leave``."""
        try:
            if channel:
                return _PUSH_CHANNEL + _s(channel) + _LEAVE_INFO + _client_info(info) + _END3
            return _PUSH_LEAVE_NO_CHANNEL + _client_info(info) + _END3
        except ProtocolEncodeError:
            raise
        except (TypeError, ValueError, AttributeError) as e:
            raise _wrap("leave", e) from e
