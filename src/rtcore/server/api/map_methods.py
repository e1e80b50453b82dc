"""The server API methods of map channels, as Centrifugo v6 names them.

``map_publish``, ``map_remove``, ``map_read_state``, ``map_read_stream``,
``map_stats`` and ``map_clear`` (docs/api.md). Each takes the channel of a
namespace with ``subscription_type = "map"``; any other channel is 107.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from rtcore.protocol.types import Publication, StreamPosition
from rtcore.server.api.errors import bad_request
from rtcore.server.api.rawjson import Raw, is_json


if TYPE_CHECKING:
    from rtcore.engine.maps import MapUpdateResult
    from rtcore.engine.node import Node


__all__ = ["MapMethods"]


def _required(p: dict[str, Any], name: str) -> str:
    value = p.get(name, "")
    if not value:
        raise bad_request(f"{name} is required")
    return str(value)


def _since(p: dict[str, Any], name: str) -> StreamPosition | None:
    """The position in ``<name>_offset`` / ``<name>_epoch``; None when both are empty."""
    offset, epoch = p.get(name + "_offset", 0), p.get(name + "_epoch", "")
    return StreamPosition(offset, epoch) if offset or epoch else None


def _entry(pub: Publication) -> dict[str, Any]:
    """A map entry: Centrifugo's ``MapEntry``."""
    out: dict[str, Any] = {"key": pub.key}
    if pub.data:
        if is_json(pub.data):
            out["data"] = Raw(pub.data)
        else:
            out["b64data"] = base64.b64encode(pub.data).decode("ascii")
    if pub.tags:
        out["tags"] = dict(pub.tags)
    if pub.offset:
        out["offset"] = pub.offset
    if pub.removed:
        out["removed"] = True
    if pub.time:
        out["time"] = pub.time
    return out


def _position(out: dict[str, Any], position: StreamPosition) -> dict[str, Any]:
    if position.offset:
        out["offset"] = position.offset
    if position.epoch:
        out["epoch"] = position.epoch
    return out


def _update(result: MapUpdateResult) -> dict[str, Any]:
    out = _position({}, result.position)
    if result.suppressed:
        out["suppressed"] = True
        out["suppress_reason"] = result.suppress_reason
    return out


class MapMethods:
    """The map methods of the API executor (``_<method>(params)`` -> result)."""

    node: Node

    async def _map_publish(self, p: dict[str, Any]) -> dict[str, Any]:
        channel, key = _required(p, "channel"), _required(p, "key")
        b64 = p.get("b64data")
        if b64:
            try:
                data = base64.b64decode(b64, validate=True)
            except ValueError:
                raise bad_request("b64data is not valid base64") from None
        elif p.get("data") is not None:
            data = bytes(p["data"])
        else:
            raise bad_request("data (or b64data) is required")
        result = await self.node.maps.publish(
            channel,
            key,
            data,
            tags=p.get("tags") or None,
            idempotency_key=p.get("idempotency_key") or "",
            key_mode=p.get("key_mode", ""),
        )
        return _update(result)

    async def _map_remove(self, p: dict[str, Any]) -> dict[str, Any]:
        channel, key = _required(p, "channel"), _required(p, "key")
        result = await self.node.maps.remove(
            channel, key, idempotency_key=p.get("idempotency_key") or ""
        )
        return _update(result)

    async def _map_read_state(self, p: dict[str, Any]) -> dict[str, Any]:
        page = await self.node.maps.read_state(
            _required(p, "channel"),
            cursor=p.get("cursor", ""),
            limit=p.get("limit", 0),
            key=p.get("key", ""),
            revision=_since(p, "revision"),
        )
        out: dict[str, Any] = {"entries": [_entry(e) for e in page.entries]}
        _position(out, page.position)
        if page.cursor:
            out["cursor"] = page.cursor
        return out

    async def _map_read_stream(self, p: dict[str, Any]) -> dict[str, Any]:
        res = await self.node.maps.read_stream(
            _required(p, "channel"),
            since=_since(p, "since"),
            limit=p.get("limit", 0),
            reverse=bool(p.get("reverse")),
        )
        return _position({"entries": [_entry(e) for e in res.publications]}, res.position)

    async def _map_stats(self, p: dict[str, Any]) -> dict[str, Any]:
        num_keys = await self.node.maps.stats(_required(p, "channel"))
        return {"num_keys": num_keys} if num_keys else {}

    async def _map_clear(self, p: dict[str, Any]) -> dict[str, Any]:
        await self.node.maps.clear(_required(p, "channel"))
        return {}
