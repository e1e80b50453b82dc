"""The map methods of the server HTTP API (docs/api.md, *Map channels*), over HTTP."""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from typing import Any

import pytest
from test_api import run, served

from rtcore.backends.redis import RedisBroker
from rtcore.backends.redis.maps import RedisMapStore
from rtcore.config import config_from_mapping
from rtcore.engine.node import Node
from rtcore.protocol.codes import ClientError


MAPS = {
    "channel": {
        "namespaces": [
            {
                "name": "board",
                "subscription_type": "map",
                "allow_subscribe_for_client": True,
                "map": {"mode": "persistent", "stream_size": 10},
            },
            {"name": "s", "allow_subscribe_for_client": True},
        ]
    }
}


async def _result(s: Any, method: str, body: dict[str, Any]) -> dict[str, Any]:
    reply = await s.post_json(f"/api/{method}", body)
    assert "error" not in reply, reply
    return dict(reply["result"])


async def _error(s: Any, method: str, body: dict[str, Any]) -> int:
    reply = await s.post_json(f"/api/{method}", body)
    assert "error" in reply, reply
    return int(reply["error"]["code"])


def test_map_publish_remove_and_reads() -> None:
    async def main() -> None:
        async with served(MAPS) as s:
            ch = "board:1"
            first = await _result(s, "map_publish", {"channel": ch, "key": "a", "data": {"x": 1}})
            assert first["offset"] == 1 and len(first["epoch"]) == 8
            b64 = base64.b64encode(b"\x00\x01").decode()
            await _result(
                s, "map_publish", {"channel": ch, "key": "b", "b64data": b64, "tags": {"t": "1"}}
            )
            again = await _result(
                s, "map_publish", {"channel": ch, "key": "c", "data": 1, "idempotency_key": "i"}
            )
            dup = await _result(
                s, "map_publish", {"channel": ch, "key": "c", "data": 2, "idempotency_key": "i"}
            )
            assert dup == {**again, "suppressed": True, "suppress_reason": "idempotency"}
            body = {"channel": ch, "key": "c", "data": 3, "key_mode": "if_new"}
            exists = await _result(s, "map_publish", body)
            assert exists == {**again, "suppressed": True, "suppress_reason": "key_exists"}
            body = {"channel": ch, "key": "c", "data": 3, "key_mode": "sometimes"}
            assert await _error(s, "map_publish", body) == 107
            state = await _result(s, "map_read_state", {"channel": ch, "limit": -1})
            assert state["offset"] == 3 and "cursor" not in state
            entries = {e["key"]: e for e in state["entries"]}
            assert entries["a"]["data"] == {"x": 1} and entries["a"]["offset"] == 1
            assert entries["b"]["b64data"] == b64 and entries["b"]["tags"] == {"t": "1"}
            assert entries["c"]["data"] == 1
            one = await _result(s, "map_read_state", {"channel": ch, "key": "a"})
            assert [e["key"] for e in one["entries"]] == ["a"]
            page = await _result(s, "map_read_state", {"channel": ch, "limit": 2})
            assert len(page["entries"]) == 2 and page["cursor"]
            rest = await _result(
                s, "map_read_state", {"channel": ch, "limit": 2, "cursor": page["cursor"]}
            )
            assert [e["key"] for e in page["entries"] + rest["entries"]] == ["a", "b", "c"]
            removed = await _result(s, "map_remove", {"channel": ch, "key": "a"})
            assert removed["offset"] == 4
            missing = await _result(s, "map_remove", {"channel": ch, "key": "a"})
            assert missing["suppressed"] is True
            assert missing["suppress_reason"] == "key_not_found"
            stream = await _result(
                s,
                "map_read_stream",
                {"channel": ch, "since_offset": 2, "since_epoch": first["epoch"], "limit": -1},
            )
            assert [(e["key"], e.get("removed", False)) for e in stream["entries"]] == [
                ("c", False),
                ("a", True),
            ]
            newest = await _result(
                s, "map_read_stream", {"channel": ch, "limit": 1, "reverse": True}
            )
            assert [e["offset"] for e in newest["entries"]] == [4]
            assert await _result(s, "map_stats", {"channel": ch}) == {"num_keys": 2}
            assert await _result(s, "map_clear", {"channel": ch}) == {}
            assert await _result(s, "map_stats", {"channel": ch}) == {}
            after = await _result(s, "map_read_state", {"channel": ch, "limit": -1})
            assert after["entries"] == [] and after["epoch"] != first["epoch"]

    run(main())


def test_map_method_errors() -> None:
    async def main() -> None:
        async with served(MAPS) as s:
            assert await _error(s, "map_publish", {"channel": "board:1", "key": "a"}) == 107
            assert await _error(s, "map_publish", {"channel": "board:1", "data": 1}) == 107
            assert await _error(s, "map_publish", {"channel": "s:1", "key": "a", "data": 1}) == 107
            assert await _error(s, "map_stats", {"channel": "nope:1"}) == 102
            body = {"channel": "board:1", "revision_offset": 1, "revision_epoch": "other"}
            assert await _error(s, "map_read_state", body) == 112
            body = {"channel": "board:1", "since_offset": 1, "since_epoch": "other", "limit": -1}
            assert await _error(s, "map_read_stream", body) == 112
            status, _, data = await s.post(
                "/api/map_publish", json.dumps({"channel": "board:1", "key": "a", "score": 3})
            )
            assert status == 400 and b"score" in data

    run(main())


def test_map_publish_reaches_a_subscriber() -> None:
    async def main() -> None:
        async with served(MAPS) as s:
            await _result(s, "map_publish", {"channel": "board:2", "key": "a", "data": 1})
            ws = await s.ws("42")
            reply = await ws.request(subscribe={"channel": "board:2", "type": 1, "phase": 2})
            live = reply["subscribe"]
            assert [e["key"] for e in live["state"]] == ["a"] and "phase" not in live
            await _result(s, "map_publish", {"channel": "board:2", "key": "b", "data": 2})
            push = await ws.push("pub")
            assert push["pub"]["key"] == "b" and push["pub"]["offset"] == 2

    run(main())


def test_map_read_state_refuses_a_cursor_it_did_not_make_on_redis() -> None:
    """Redis cursors are HSCAN numbers: anything else is 107, not an internal error."""
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.5).close()
    except OSError:
        if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}:
            pytest.fail("Redis is not running on 127.0.0.1:6379")
        pytest.skip("Redis is not running on 127.0.0.1:6379")

    async def main() -> None:
        prefix = f"rtcore-test-{uuid.uuid4().hex[:12]}"
        broker = RedisBroker("redis://127.0.0.1:6379", prefix=prefix)
        node = Node(config_from_mapping(MAPS), broker=broker, map_store=RedisMapStore(broker))
        await node.start()
        try:
            with pytest.raises(ClientError) as exc:
                await node.maps.read_state("board:1", cursor="not-a-number", limit=10)
            assert exc.value.code == 107
        finally:
            await node.close()

    run(main())


def test_a_plain_publish_into_a_map_channel_is_refused() -> None:
    async def main() -> None:
        async with served(MAPS) as s:
            body = {"channel": "board:1", "data": {"x": 1}}
            assert await _error(s, "publish", body) == 107
            body = {"channels": ["board:1", "s:1"], "data": {"x": 1}}
            reply = await s.post_json("/api/broadcast", body)
            codes = [r.get("error", {}).get("code") for r in reply["result"]["responses"]]
            assert codes == [107, None]

    run(main())
