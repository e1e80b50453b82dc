"""The server API methods: each runs against the node and returns Centrifugo's result object."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from rtcore.engine.cluster import merge_channels
from rtcore.protocol.codes import ClientError
from rtcore.protocol.types import ClientInfo, Publication, StreamPosition
from rtcore.server.api.errors import (
    ERROR_INTERNAL,
    ERROR_NOT_FOUND,
    ERROR_UNRECOVERABLE_POSITION,
    ApiError,
    bad_request,
    reply_of,
)
from rtcore.server.api.map_methods import MapMethods
from rtcore.server.api.patterns import glob_to_regex
from rtcore.server.api.rawjson import Raw, dump, is_json


if TYPE_CHECKING:
    from rtcore.engine.node import Node


__all__ = ["Executor", "RpcHandler"]

logger = logging.getLogger("rtcore.server.api")

RpcHandler = Callable[[bytes | None], Awaitable[Any]]


# -- results ------------------------------------------------------------------------


def _put_bytes(out: dict[str, Any], key: str, data: bytes) -> None:
    """``key``: raw JSON when ``data`` is JSON, else ``b64<key>``: base64 (binary payloads)."""
    if is_json(data):
        out[key] = Raw(data)
    else:
        out["b64" + key] = base64.b64encode(data).decode("ascii")


def _client_info(info: ClientInfo) -> dict[str, Any]:
    out: dict[str, Any] = {"user": info.user, "client": info.client}
    if info.conn_info:
        _put_bytes(out, "conn_info", info.conn_info)
    if info.chan_info:
        _put_bytes(out, "chan_info", info.chan_info)
    return out


def _publication(pub: Publication) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _put_bytes(out, "data", pub.data)
    if pub.info is not None:
        out["info"] = _client_info(pub.info)
    if pub.offset:
        out["offset"] = pub.offset
    if pub.tags:
        out["tags"] = dict(pub.tags)
    return out


def _position(position: StreamPosition) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if position.offset:
        out["offset"] = position.offset
    if position.epoch:
        out["epoch"] = position.epoch
    return out


# -- request fields -------------------------------------------------------------------


def _channel(p: dict[str, Any]) -> str:
    channel = p.get("channel", "")
    if not channel:
        raise bad_request("channel is required")
    return str(channel)


def _decode_b64(value: str, key: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"{key} is not valid base64") from None


def _payload(p: dict[str, Any], key: str) -> bytes | None:
    """``b64<key>`` (decoded) wins over ``<key>`` (raw JSON), as in Centrifugo."""
    b64 = p.get("b64" + key)
    if b64:
        return _decode_b64(b64, "b64" + key)
    raw = p.get(key)
    return bytes(raw) if raw is not None else None


def _publication_data(p: dict[str, Any]) -> bytes:
    data = _payload(p, "data")
    if data is None:
        raise bad_request("data (or b64data) is required")
    return data


def _expire_at(p: dict[str, Any]) -> int:
    expire_at: int = p.get("expire_at", 0)
    if expire_at < 0:
        raise bad_request("expire_at must not be negative")
    return expire_at


def _stream_position(since: dict[str, Any]) -> StreamPosition:
    return StreamPosition(since.get("offset", 0), since.get("epoch", ""))


def _publish_options(p: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``Node.publish`` from publish/broadcast params."""
    return {
        "tags": p.get("tags") or None,
        "idempotency_key": p.get("idempotency_key") or None,
        "skip_history": bool(p.get("skip_history")),
        # Absent: the namespace's delta_publish decides.
        "delta": p.get("delta"),
    }


def _override(value: dict[str, Any] | None) -> dict[str, bool] | None:
    if not value:
        return None
    return {name: bool(flag.get("value", False)) for name, flag in value.items()}


def _api_error(what: str, exc: Exception) -> ApiError:
    """The error reported for a method that raised ``exc`` (not an ApiError)."""
    if isinstance(exc, ClientError):
        return ApiError(exc.code, exc.message)
    if isinstance(exc, ConnectionError):
        # The engine is unreachable (e.g. Redis down): one line, not a
        # traceback per request; /health and rtcore_engine_up say more.
        logger.warning("API %s failed: engine unavailable: %s", what, exc)
        return ERROR_INTERNAL
    logger.exception("API %s failed", what)
    return ERROR_INTERNAL


class Executor(MapMethods):
    """Runs API methods against a node; results are plain data, errors :class:`ApiError`."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.rpc_handlers: dict[str, RpcHandler] = {}
        # Method name -> bound method, looked up on first use.
        self._methods: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {}

    async def call(self, method: str, p: dict[str, Any]) -> dict[str, Any]:
        """Run ``method`` (one of the schema's) with validated params ``p``."""
        run = self._methods.get(method)
        if run is None:
            run = self._methods[method] = getattr(self, "_" + method)
        # The same as _guarded(method, run(p)), one coroutine fewer per call.
        try:
            return await run(p)
        except ApiError:
            raise
        except Exception as exc:
            raise _api_error(method, exc) from None

    @staticmethod
    async def _guarded(what: str, result: Awaitable[dict[str, Any]]) -> dict[str, Any]:
        """Await ``result``; whatever fails becomes an :class:`ApiError` (100 when unexpected)."""
        try:
            return await result
        except ApiError:
            raise
        except Exception as exc:
            raise _api_error(what, exc) from None

    # -- publications -----------------------------------------------------------------

    async def _publish_to(self, channel: str, data: bytes, p: dict[str, Any]) -> dict[str, Any]:
        position, _suppressed = await self.node.publish(channel, data, **_publish_options(p))
        return _position(position)

    async def _publish(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = _channel(p)
        # What _publish_to does, without its coroutine (the hot path of the API).
        position, _suppressed = await self.node.publish(
            channel, _publication_data(p), **_publish_options(p)
        )
        return _position(position)

    async def _broadcast(self, p: dict[str, Any]) -> dict[str, Any]:
        channels = p.get("channels") or []
        if not channels:
            raise bad_request("channels is required")
        data = _publication_data(p)

        async def one(channel: str) -> dict[str, Any]:
            if not channel:
                raise bad_request("channel must not be empty")
            return await self._publish_to(channel, data, p)

        replies = (
            reply_of("result", self._guarded(f"broadcast to {ch}", one(ch))) for ch in channels
        )
        return {"responses": list(await asyncio.gather(*replies))}

    # -- connections and their subscriptions -------------------------------------------

    async def _subscribe(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = _channel(p)
        since = p.get("recover_since")
        expire_at = _expire_at(p)
        await self.node.subscribe(
            p.get("user", ""),
            channel,
            client=p.get("client", ""),
            session=p.get("session", ""),
            info=_payload(p, "info"),
            data=_payload(p, "data"),
            recover_since=_stream_position(since) if since else None,
            override=_override(p.get("override")),
            expire_at=expire_at,
        )
        return {}

    async def _unsubscribe(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = p.get("channel", "")
        if channel:
            self.node._channel_options(channel)
        await self.node.unsubscribe(
            p.get("user", ""), channel, client=p.get("client", ""), session=p.get("session", "")
        )
        return {}

    async def _disconnect(self, p: dict[str, Any]) -> dict[str, Any]:
        code, reason = 3503, "force disconnect"
        d = p.get("disconnect")
        if d is not None:
            code = d.get("code", 0)
            reason = d.get("reason", "")
            if not 3000 <= code <= 4999:
                raise bad_request("disconnect.code must be within 3000..4999")
            if len(reason.encode("utf-8")) > 123:
                raise bad_request("disconnect.reason must be at most 123 bytes of UTF-8")
        await self.node.disconnect(
            p.get("user", ""),
            code=code,
            reason=reason,
            client=p.get("client", ""),
            session=p.get("session", ""),
            whitelist=p.get("whitelist") or None,
        )
        return {}

    async def _refresh(self, p: dict[str, Any]) -> dict[str, Any]:
        expire_at = _expire_at(p)
        await self.node.refresh(
            p.get("user", ""),
            client=p.get("client", ""),
            session=p.get("session", ""),
            expired=bool(p.get("expired")),
            expire_at=expire_at or None,
            info=_payload(p, "info"),
        )
        return {}

    # -- channel state ------------------------------------------------------------------

    async def _presence(self, p: dict[str, Any]) -> dict[str, Any]:
        presence = await self.node.presence(_channel(p))
        return {"presence": {cid: _client_info(info) for cid, info in presence.items()}}

    async def _presence_stats(self, p: dict[str, Any]) -> dict[str, Any]:
        stats = await self.node.presence_stats(_channel(p))
        return {"num_clients": stats.num_clients, "num_users": stats.num_users}

    async def _history(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = _channel(p)
        limit = p.get("limit", 0)
        if limit < -1:
            raise bad_request("limit must be -1 (all), 0 (position only) or positive")
        since = p.get("since")
        position = _stream_position(since) if since is not None else None
        result = await self.node.history(
            channel, limit=limit, since=position, reverse=bool(p.get("reverse"))
        )
        if position is not None and position.epoch and position.epoch != result.position.epoch:
            raise ERROR_UNRECOVERABLE_POSITION
        return {
            "publications": [_publication(pub) for pub in result.publications],
            "epoch": result.position.epoch,
            "offset": result.position.offset,
        }

    async def _history_remove(self, p: dict[str, Any]) -> dict[str, Any]:
        await self.node.history_remove(_channel(p))
        return {}

    async def _channels(self, p: dict[str, Any]) -> dict[str, Any]:
        pattern = p.get("pattern", "")
        match = None
        if pattern:
            try:
                match = glob_to_regex(pattern).fullmatch
            except ValueError as exc:
                raise bad_request(f"invalid pattern: {exc}") from None
        # Every node's channels and subscriber counts (a survey through the broker).
        channels = merge_channels(await self.node.cluster.survey("channels"))
        return {
            "channels": {
                ch: {"num_clients": n} for ch, n in channels.items() if match is None or match(ch)
            }
        }

    async def _info(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"nodes": self.node.cluster.nodes()}

    # -- rpc ------------------------------------------------------------------------------

    async def _rpc(self, p: dict[str, Any]) -> dict[str, Any]:
        method = p.get("method", "")
        if not method:
            raise bad_request("method is required")
        handler = self.rpc_handlers.get(method)
        if handler is None:
            raise ERROR_NOT_FOUND
        params = p.get("params")
        data = await handler(bytes(params) if params is not None else None)
        if data is None:
            return {}
        if isinstance(data, bytes | bytearray):
            if not is_json(bytes(data)):
                raise ERROR_INTERNAL
            return {"data": Raw(data)}
        return {"data": Raw(dump(data))}
