"""The server HTTP API (rtcore.server.api) against Centrifugo's contract (PROTOCOL.md §7).

Every method is driven with the unmodified ``cent`` client (sync and async)
and with raw HTTP, against a node served on a loopback port; WebSocket
clients (the ``websockets`` library speaking the JSON protocol) observe what
the API did to connections. Bad input of every kind gets its status and
message checked.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import aiohttp
import pytest
import websockets
from cent import (
    AsyncClient,
    BatchRequest,
    BoolValue,
    BroadcastRequest,
    CentApiResponseError,
    CentTransportError,
    CentUnauthorizedError,
    ChannelOptionsOverride,
    ChannelsRequest,
    Client,
    Disconnect,
    DisconnectRequest,
    HistoryRemoveRequest,
    HistoryRequest,
    InfoRequest,
    PresenceRequest,
    PresenceStatsRequest,
    PublishRequest,
    RefreshRequest,
    StreamPosition,
    SubscribeRequest,
    UnsubscribeRequest,
)

import rtcore
from rtcore.auth import make_connect_token
from rtcore.config import config_from_mapping
from rtcore.engine.node import Node
from rtcore.server.api import glob_to_regex
from rtcore.server.app import serve_node
from rtcore.server.internal import InternalApp
from rtcore.transports.http_server import Server, run as run_loop


T = TypeVar("T")

SECRET = "rtcore-api-tests-hmac-secret-0123456789abcdef"
KEY = "api-test-key-0123456789"

BASE: dict[str, Any] = {
    "api": {"key": KEY},
    "client": {"token": {"hmac_secret_key": SECRET}, "ping_interval": 0, "pong_timeout": 0},
    "channel": {
        "namespaces": [
            {
                "name": "h",
                "history_size": 20,
                "history_ttl": "5m",
                "presence": True,
                "allow_subscribe_for_client": True,
            },
            {"name": "plain", "allow_subscribe_for_client": True},
        ]
    },
}


def merged(extra: Mapping[str, Any] | None) -> dict[str, Any]:
    out = copy.deepcopy(BASE)

    def merge(base: dict[str, Any], more: Mapping[str, Any]) -> None:
        for k, v in more.items():
            if isinstance(v, Mapping) and isinstance(base.get(k), dict):
                merge(base[k], v)
            else:
                base[k] = copy.deepcopy(v)

    merge(out, extra or {})
    return out


def run(coro: Awaitable[T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, 30)

    return run_loop(bounded())  # type: ignore[no-any-return]


class WsClient:
    """A JSON-protocol client over ``websockets`` that records replies, pushes and the close."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.replies: dict[int, dict[str, Any]] = {}
        self.pushes: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.closed: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        self._next_id = 0
        self._reader = asyncio.ensure_future(self._read())
        self.client_id = ""

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                for line in frame.splitlines():
                    if not line.strip():
                        continue
                    msg = json.loads(line)
                    if "push" in msg:
                        self.pushes.put_nowait(msg["push"])
                    else:
                        self.replies[msg.get("id", 0)] = msg
        except websockets.ConnectionClosed:
            pass
        finally:
            if not self.closed.done():
                code = self.ws.close_code
                self.closed.set_result(
                    (code, self.ws.close_reason or "") if code is not None else (1006, "")
                )

    async def request(self, **command: Any) -> dict[str, Any]:
        self._next_id += 1
        cid = self._next_id
        await self.ws.send(json.dumps({"id": cid, **command}))
        for _ in range(500):
            if cid in self.replies:
                return self.replies.pop(cid)
            await asyncio.sleep(0.01)
        raise AssertionError(f"no reply to {command}")

    async def push(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next push of ``kind`` (pub, subscribe, unsubscribe, refresh, ...)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {kind} push within {timeout}s")
            push = await asyncio.wait_for(self.pushes.get(), remaining)
            if kind in push:
                return push

    async def no_push(self, delay: float = 0.3) -> None:
        await asyncio.sleep(delay)
        assert self.pushes.empty(), self.pushes.get_nowait()

    async def close_code(self, timeout: float = 5.0) -> tuple[int, str]:
        return await asyncio.wait_for(asyncio.shield(self.closed), timeout)

    async def aclose(self) -> None:
        await self.ws.close()
        self._reader.cancel()


class Served:
    def __init__(self, node: Node, server: Server) -> None:
        self.node = node
        self.server = server
        self.port = server.port
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/api"
        self._clients: list[WsClient] = []

    async def ws(self, user: str, *, info: Any = None, channels: tuple[str, ...] = ()) -> WsClient:
        ws = await websockets.connect(f"ws://127.0.0.1:{self.port}/connection/websocket")
        client = WsClient(ws)
        self._clients.append(client)
        reply = await client.request(connect={"token": make_connect_token(SECRET, user, info=info)})
        assert "connect" in reply, reply
        client.client_id = reply["connect"]["client"]
        for channel in channels:
            reply = await client.request(subscribe={"channel": channel})
            assert "subscribe" in reply, reply
        return client

    async def sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Call a blocking (cent sync) function off the loop."""
        return await asyncio.to_thread(fn, *args)

    async def post(
        self,
        path: str,
        body: bytes | str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        method: str = "POST",
        key: str | None = KEY,
    ) -> tuple[int, Mapping[str, str], bytes]:
        hdrs = dict(headers or {})
        if key is not None:
            hdrs.setdefault("X-API-Key", key)
        data = body.encode() if isinstance(body, str) else body
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, self.base + path, data=data, headers=hdrs) as resp,
        ):
            return resp.status, resp.headers, await resp.read()

    async def post_json(self, path: str, body: Any, **kwargs: Any) -> Any:
        status, _, data = await self.post(path, json.dumps(body), **kwargs)
        assert status == 200, (status, data)
        return json.loads(data)

    async def close(self) -> None:
        for client in self._clients:
            await client.aclose()


@asynccontextmanager
async def served(extra: Mapping[str, Any] | None = None) -> AsyncIterator[Served]:
    node = Node(config_from_mapping(merged(extra)))
    server = await rtcore.serve(node, "127.0.0.1", 0)
    s = Served(node, server)
    try:
        yield s
    finally:
        await s.close()
        await server.close(timeout=1)
        await node.close()


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


# -- every method through cent's sync client --------------------------------------------


def test_publish_with_history_tags_and_delivery() -> None:
    async def main() -> None:
        async with served() as s:
            ws = await s.ws("alice", channels=("h:room",))
            client = Client(s.url, KEY)
            result = await s.sync(
                client.publish,
                PublishRequest(channel="h:room", data={"text": "hi"}, tags={"k": "v"}),
            )
            assert result.offset == 1 and result.epoch
            push = await ws.push("pub")
            assert push["channel"] == "h:room"
            assert push["pub"]["data"] == {"text": "hi"}
            assert push["pub"]["tags"] == {"k": "v"}
            assert push["pub"]["offset"] == 1
            second = await s.sync(client.publish, PublishRequest(channel="h:room", data=[1, 2]))
            assert (second.offset, second.epoch) == (2, result.epoch)
            client.close()

    run(main())


def test_publish_without_history_returns_empty_result() -> None:
    async def main() -> None:
        async with served() as s:
            ws = await s.ws("alice", channels=("plain:x",))
            body = await s.post_json("/api/publish", {"channel": "plain:x", "data": "text"})
            assert body == {"result": {}}
            assert (await ws.push("pub"))["pub"]["data"] == "text"

    run(main())


def test_publish_keeps_raw_json_byte_for_byte() -> None:
    async def main() -> None:
        async with served() as s:
            raw = b'{"channel":"h:raw","data":{"n": 1.0e5, "s": "\\u00e9", "deep": [ {} ]}}'
            status, _, data = await s.post("/api/publish", raw)
            assert status == 200, data
            hist = await s.post_json("/api/history", {"channel": "h:raw", "limit": -1})
            pubs = hist["result"]["publications"]
            # Compare the stored bytes: numbers, escapes and spacing survive untouched.
            assert s.node is not None
            result = await s.node.history("h:raw", limit=-1)
            assert result.publications[0].data == b'{"n": 1.0e5, "s": "\\u00e9", "deep": [ {} ]}'
            assert pubs[0]["data"] == {"n": 100000.0, "s": "é", "deep": [{}]}

    run(main())


def test_publish_idempotency_key_and_skip_history() -> None:
    async def main() -> None:
        async with served() as s:
            client = Client(s.url, KEY)
            first = await s.sync(
                client.publish, PublishRequest(channel="h:i", data=1, idempotency_key="once")
            )
            again = await s.sync(
                client.publish, PublishRequest(channel="h:i", data=1, idempotency_key="once")
            )
            assert (again.offset, again.epoch) == (first.offset, first.epoch)
            skipped = await s.sync(
                client.publish, PublishRequest(channel="h:i", data=2, skip_history=True)
            )
            assert skipped.offset == 0 and skipped.epoch == ""
            history = await s.sync(client.history, HistoryRequest(channel="h:i", limit=-1))
            assert [p.data for p in history.publications] == [1]
            assert history.offset == first.offset
            client.close()

    run(main())


def test_publish_b64data_is_decoded() -> None:
    async def main() -> None:
        async with served() as s:
            ws = await s.ws("alice", channels=("plain:b",))
            client = Client(s.url, KEY)
            b64 = base64.b64encode(b'{"from":"b64"}').decode()
            await s.sync(client.publish, PublishRequest(channel="plain:b", data=None, b64data=b64))
            assert (await ws.push("pub"))["pub"]["data"] == {"from": "b64"}
            client.close()

    run(main())


def test_binary_history_comes_back_as_b64data() -> None:
    async def main() -> None:
        async with served() as s:
            binary = bytes(range(256))
            await s.post_json(
                "/api/publish", {"channel": "h:bin", "b64data": base64.b64encode(binary).decode()}
            )
            body = await s.post_json("/api/history", {"channel": "h:bin", "limit": 1})
            (pub,) = body["result"]["publications"]
            assert "data" not in pub
            assert base64.b64decode(pub["b64data"]) == binary

    run(main())


def test_broadcast_reports_each_channel() -> None:
    async def main() -> None:
        async with served() as s:
            a = await s.ws("alice", channels=("h:a",))
            b = await s.ws("bob", channels=("plain:b",))
            client = Client(s.url, KEY)
            result = await s.sync(
                client.broadcast,
                BroadcastRequest(channels=["h:a", "plain:b", "nope:c"], data={"x": 1}),
            )
            first, second, third = result.responses
            assert first.error is None and first.result.offset == 1
            assert second.error is None and second.result.offset == 0
            assert third.error is not None and third.error.code == 102
            assert (await a.push("pub"))["pub"]["data"] == {"x": 1}
            assert (await b.push("pub"))["pub"]["data"] == {"x": 1}
            client.close()

    run(main())


def test_subscribe_with_data_info_and_override() -> None:
    async def main() -> None:
        async with served() as s:
            ws = await s.ws("alice")
            client = Client(s.url, KEY)
            await s.sync(
                client.subscribe,
                SubscribeRequest(
                    user="alice",
                    channel="plain:srv",
                    data={"welcome": True},
                    info={"role": "admin"},
                    override=ChannelOptionsOverride(presence=BoolValue(value=True)),
                ),
            )
            push = await ws.push("subscribe")
            assert push["channel"] == "plain:srv"
            assert push["subscribe"]["data"] == {"welcome": True}
            await s.sync(client.publish, PublishRequest(channel="plain:srv", data="after"))
            assert (await ws.push("pub"))["pub"]["data"] == "after"
            # presence is off in "plain" but the override turned it on for this subscription.
            presence = await s.node.presence_manager.presence("plain:srv")
            assert json.loads(presence[ws.client_id].chan_info) == {"role": "admin"}
            client.close()

    run(main())


def test_subscribe_recover_since_and_expire_at() -> None:
    async def main() -> None:
        async with served({"client": {"expired_sub_close_delay": 0}}) as s:
            ws = await s.ws("alice")
            pos = await s.post_json("/api/publish", {"channel": "h:rec", "data": 1})
            await s.post_json("/api/publish", {"channel": "h:rec", "data": 2})
            body = await s.post_json(
                "/api/subscribe",
                {
                    "user": "alice",
                    "channel": "h:rec",
                    "override": {"force_recovery": {"value": True}},
                    "recover_since": {"offset": 1, "epoch": pos["result"]["epoch"]},
                    "expire_at": int(time.time()) + 1,
                },
            )
            assert body == {"result": {}}
            push = await ws.push("subscribe")
            assert push["subscribe"].get("recoverable") is True
            # The subscription expires one second later: server-side, so disconnect 3006.
            assert (await ws.close_code(timeout=5))[0] == 3006

    run(main())


def test_subscribe_targets_client_and_session() -> None:
    async def main() -> None:
        async with served() as s:
            one = await s.ws("alice")
            two = await s.ws("alice")
            await s.post_json(
                "/api/subscribe", {"user": "alice", "channel": "plain:c", "client": two.client_id}
            )
            assert (await two.push("subscribe"))["channel"] == "plain:c"
            await one.no_push()
            await s.post_json(
                "/api/subscribe", {"user": "alice", "channel": "plain:d", "session": one.client_id}
            )
            assert (await one.push("subscribe"))["channel"] == "plain:d"

    run(main())


def test_unsubscribe_one_channel_and_all() -> None:
    async def main() -> None:
        async with served() as s:
            ws = await s.ws("alice", channels=("plain:a", "plain:b", "h:c"))
            client = Client(s.url, KEY)
            await s.sync(client.unsubscribe, UnsubscribeRequest(user="alice", channel="plain:a"))
            push = await ws.push("unsubscribe")
            assert push["channel"] == "plain:a"
            assert push["unsubscribe"] == {"code": 2000, "reason": "server unsubscribe"}
            await s.post_json("/api/unsubscribe", {"user": "alice"})
            rest = {(await ws.push("unsubscribe"))["channel"] for _ in range(2)}
            assert rest == {"plain:b", "h:c"}
            await until(lambda: s.node.hub.num_subscriptions == 0)
            client.close()

    run(main())


def test_disconnect_default_custom_and_whitelist() -> None:
    async def main() -> None:
        async with served() as s:
            client = Client(s.url, KEY)
            a = await s.ws("alice")
            await s.sync(client.disconnect, DisconnectRequest(user="alice"))
            assert await a.close_code() == (3503, "force disconnect")
            b1 = await s.ws("bob")
            b2 = await s.ws("bob")
            await s.sync(
                client.disconnect,
                DisconnectRequest(
                    user="bob",
                    whitelist=[b2.client_id],
                    disconnect=Disconnect(code=4000, reason="bye"),
                ),
            )
            assert await b1.close_code() == (4000, "bye")
            assert not b2.closed.done()
            await s.post_json("/api/disconnect", {"user": "bob", "client": b2.client_id})
            assert (await b2.close_code())[0] == 3503
            client.close()

    run(main())


def test_refresh_pushes_and_expires() -> None:
    async def main() -> None:
        async with served() as s:
            client = Client(s.url, KEY)
            ws = await s.ws("alice")
            expire_at = int(time.time()) + 3600
            await s.sync(client.refresh, RefreshRequest(user="alice", expire_at=expire_at))
            push = await ws.push("refresh")
            assert push["refresh"]["expires"] is True
            assert 3590 <= push["refresh"]["ttl"] <= 3600
            await s.sync(client.refresh, RefreshRequest(user="alice", expired=True))
            assert (await ws.close_code())[0] == 3005
            client.close()

    run(main())


def test_presence_and_presence_stats() -> None:
    async def main() -> None:
        async with served() as s:
            one = await s.ws("alice", info={"name": "A"}, channels=("h:p",))
            two = await s.ws("alice", channels=("h:p",))
            await s.ws("bob", channels=("h:p",))
            client = Client(s.url, KEY)
            presence = await s.sync(client.presence, PresenceRequest(channel="h:p"))
            assert set(presence.presence) == {one.client_id, two.client_id} | (
                set(presence.presence) - {one.client_id, two.client_id}
            )
            assert len(presence.presence) == 3
            assert presence.presence[one.client_id].user == "alice"
            assert presence.presence[one.client_id].conn_info == {"name": "A"}
            stats = await s.sync(client.presence_stats, PresenceStatsRequest(channel="h:p"))
            assert (stats.num_clients, stats.num_users) == (3, 2)
            with pytest.raises(CentApiResponseError) as info:
                await s.sync(client.presence, PresenceRequest(channel="plain:p"))
            assert info.value.code == 108
            client.close()

    run(main())


def test_history_limit_reverse_since_and_errors() -> None:
    async def main() -> None:
        async with served() as s:
            client = Client(s.url, KEY)
            for n in range(1, 6):
                await s.sync(client.publish, PublishRequest(channel="h:hist", data={"n": n}))
            top = await s.sync(client.history, HistoryRequest(channel="h:hist"))
            assert top.publications == [] and top.offset == 5
            last_two = await s.sync(
                client.history, HistoryRequest(channel="h:hist", limit=2, reverse=True)
            )
            assert [p.data["n"] for p in last_two.publications] == [5, 4]
            since = await s.sync(
                client.history,
                HistoryRequest(
                    channel="h:hist", limit=-1, since=StreamPosition(offset=3, epoch=top.epoch)
                ),
            )
            assert [p.offset for p in since.publications] == [4, 5]
            with pytest.raises(CentApiResponseError) as info:
                await s.sync(
                    client.history,
                    HistoryRequest(
                        channel="h:hist", limit=1, since=StreamPosition(offset=1, epoch="other")
                    ),
                )
            assert info.value.code == 112
            with pytest.raises(CentApiResponseError) as info:
                await s.sync(client.history, HistoryRequest(channel="plain:x"))
            assert info.value.code == 108
            body = await s.post_json("/api/history", {"channel": "h:hist", "limit": -2})
            assert body["error"]["code"] == 107
            client.close()

    run(main())


def test_history_remove_keeps_the_position() -> None:
    async def main() -> None:
        async with served() as s:
            client = Client(s.url, KEY)
            first = await s.sync(client.publish, PublishRequest(channel="h:rm", data=1))
            await s.sync(client.history_remove, HistoryRemoveRequest(channel="h:rm"))
            after = await s.sync(client.history, HistoryRequest(channel="h:rm", limit=-1))
            assert after.publications == []
            assert (after.offset, after.epoch) == (first.offset, first.epoch)
            with pytest.raises(CentApiResponseError) as info:
                await s.sync(client.history_remove, HistoryRemoveRequest(channel="plain:rm"))
            assert info.value.code == 108
            client.close()

    run(main())


def test_channels_with_and_without_pattern() -> None:
    async def main() -> None:
        async with served() as s:
            await s.ws("alice", channels=("h:one", "plain:two"))
            await s.ws("bob", channels=("h:one",))
            client = Client(s.url, KEY)
            everything = await s.sync(client.channels, ChannelsRequest())
            assert {k: v.num_clients for k, v in everything.channels.items()} == {
                "h:one": 2,
                "plain:two": 1,
            }
            only_h = await s.sync(client.channels, ChannelsRequest(pattern="h:*"))
            assert set(only_h.channels) == {"h:one"}
            alternatives = await s.post_json("/api/channels", {"pattern": "{plain,x}:t?o"})
            assert set(alternatives["result"]["channels"]) == {"plain:two"}
            bad = await s.post_json("/api/channels", {"pattern": "[oops"})
            assert bad["error"]["code"] == 107
            client.close()

    run(main())


def test_info_describes_the_node() -> None:
    async def main() -> None:
        async with served() as s:
            await s.ws("alice", channels=("h:i",))
            client = Client(s.url, KEY)
            info = await s.sync(client.info, InfoRequest())
            (node,) = info.nodes
            assert node.uid == s.node.id and node.version == s.node.version
            assert (node.num_clients, node.num_users, node.num_channels, node.num_subs) == (
                1,
                1,
                1,
                1,
            )
            assert node.uptime >= 0
            client.close()

    run(main())


@pytest.mark.parametrize("parallel", [False, True])
def test_batch_runs_every_command(parallel: bool) -> None:
    async def main() -> None:
        async with served() as s:
            ws = await s.ws("alice", channels=("h:batch",))
            client = Client(s.url, KEY)
            result = await s.sync(
                client.batch,
                BatchRequest(
                    requests=[
                        PublishRequest(channel="h:batch", data=1),
                        PresenceStatsRequest(channel="h:batch"),
                        InfoRequest(),
                    ],
                    parallel=parallel,
                ),
            )
            publish, stats, info = result.replies
            assert publish.offset == 1
            assert stats.num_clients == 1
            assert info.nodes[0].num_clients == 1
            assert (await ws.push("pub"))["pub"]["data"] == 1
            client.close()

    run(main())


def test_batch_raw_errors_per_command() -> None:
    async def main() -> None:
        async with served() as s:
            body = await s.post_json(
                "/api/batch",
                {
                    "commands": [
                        {"publish": {"channel": "nope:x", "data": 1}},
                        {"publish": {"channel": "h:x", "data": 1}, "info": {}},
                        {"unknown_method": {}},
                        None,
                        {"history": {"channel": "h:x", "limit": -1}},
                    ]
                },
            )
            replies = body["replies"]
            assert replies[0] == {
                "error": {
                    "code": 102,
                    "message": "unknown channel: namespace 'nope' is not in channel.namespaces",
                }
            }
            assert replies[1]["error"]["code"] == 107
            assert replies[2] == {"error": {"code": 104, "message": "not found"}}
            assert replies[3]["error"]["code"] == 107
            assert replies[4]["history"]["publications"] == []

    run(main())


# -- the async cent client ----------------------------------------------------------------


def test_async_client_every_method() -> None:
    async def main() -> None:
        async with served() as s:
            ws = await s.ws("alice", channels=("h:async",))
            async with AsyncClient(s.url, KEY) as client:
                pub = await client.publish(PublishRequest(channel="h:async", data={"a": 1}))
                assert pub.offset == 1
                assert (await ws.push("pub"))["pub"]["data"] == {"a": 1}
                bc = await client.broadcast(BroadcastRequest(channels=["h:async"], data=2))
                assert bc.responses[0].result.offset == 2
                await client.subscribe(SubscribeRequest(user="alice", channel="plain:async"))
                assert (await ws.push("subscribe"))["channel"] == "plain:async"
                await client.unsubscribe(UnsubscribeRequest(user="alice", channel="plain:async"))
                assert (await ws.push("unsubscribe"))["channel"] == "plain:async"
                presence = await client.presence(PresenceRequest(channel="h:async"))
                assert list(presence.presence) == [ws.client_id]
                stats = await client.presence_stats(PresenceStatsRequest(channel="h:async"))
                assert stats.num_users == 1
                history = await client.history(HistoryRequest(channel="h:async", limit=10))
                assert [p.data for p in history.publications] == [{"a": 1}, 2]
                await client.history_remove(HistoryRemoveRequest(channel="h:async"))
                channels = await client.channels(ChannelsRequest(pattern="h:*"))
                assert set(channels.channels) == {"h:async"}
                info = await client.info(InfoRequest())
                assert info.nodes[0].num_clients == 1
                batch = await client.batch(
                    BatchRequest(requests=[InfoRequest(), InfoRequest()], parallel=True)
                )
                assert len(batch.replies) == 2
                await client.refresh(RefreshRequest(user="alice", expire_at=int(time.time()) + 60))
                assert "refresh" in await ws.push("refresh")
                with pytest.raises(CentApiResponseError) as info_err:
                    await client.publish(PublishRequest(channel="missing:ns", data=1))
                assert info_err.value.code == 102
                await client.disconnect(DisconnectRequest(user="alice"))
                assert (await ws.close_code())[0] == 3503

    run(main())


def test_cent_errors_for_bad_key_and_transport_mode() -> None:
    async def main() -> None:
        async with served() as s:
            with pytest.raises(CentUnauthorizedError):
                await s.sync(Client(s.url, "wrong").info, InfoRequest())
            async with AsyncClient(s.url, "wrong") as client:
                with pytest.raises(CentUnauthorizedError):
                    await client.info(InfoRequest())
        async with served({"api": {"error_mode": "transport"}}) as s:
            with pytest.raises(CentTransportError) as info:
                await s.sync(Client(s.url, KEY).publish, PublishRequest(channel="nope:x", data=1))
            assert info.value.status_code == 404

    run(main())


# -- raw HTTP: auth, methods, envelopes ----------------------------------------------------


def test_auth_header_forms() -> None:
    async def main() -> None:
        async with served() as s:
            ok = [
                {"X-API-Key": KEY},
                {"Authorization": f"apikey {KEY}"},
                {"Authorization": f"APIKEY {KEY}"},
            ]
            for headers in ok:
                status, _, _ = await s.post("/api/info", "{}", headers=headers, key=None)
                assert status == 200, headers
            status, _, _ = await s.post(f"/api/info?api_key={KEY}", "{}", key=None)
            assert status == 200
            bad = [{}, {"X-API-Key": "nope"}, {"Authorization": f"Bearer {KEY}"}, {"X-API-Key": ""}]
            for headers in bad:
                status, _, body = await s.post("/api/info", "{}", headers=headers, key=None)
                assert status == 401, headers
                assert b"API key" in body
            # A wrong key is refused before anything else is looked at.
            status, _, _ = await s.post("/api/unknown", "{}", key="nope")
            assert status == 401

    run(main())


def test_empty_configured_key_refuses_everything_and_insecure_allows() -> None:
    async def main() -> None:
        async with served({"api": {"key": ""}}) as s:
            for key in ("", "anything", None):
                status, _, _ = await s.post("/api/info", "{}", key=key)
                assert status == 401
        async with served({"api": {"key": "", "insecure": True}}) as s:
            status, _, body = await s.post("/api/info", "{}", key=None)
            assert status == 200 and json.loads(body)["result"]["nodes"]

    run(main())


def test_wrong_http_method_and_unknown_method() -> None:
    async def main() -> None:
        async with served() as s:
            for method in ("GET", "PUT", "DELETE"):
                status, headers, body = await s.post("/api/publish", None, method=method)
                assert status == 405, method
                assert headers["Allow"] == "POST"
                assert method.encode() in body
            status, _, body = await s.post("/api/publishh", "{}")
            assert status == 404
            assert b"unknown API method 'publishh'" in body and b"publish" in body
            status, _, _ = await s.post("/api/", "{}")
            assert status == 404

    run(main())


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/api/publish", "not json", "invalid JSON: Expecting value (line 1, column 1)"),
        ("/api/publish", '{"channel": "h:x", "data": 1', "invalid JSON"),
        ("/api/publish", '{"channel": "h:x"} extra', "invalid JSON: Extra data"),
        ("/api/publish", '{"channel": "h:x", "data": NaN}', "invalid JSON"),
        ("/api/publish", "[1, 2]", "expected an object, got an array"),
        ("/api/publish", '"text"', "expected an object, got a string"),
        ("/api/publish", '{"channel": 5, "data": 1}', "channel: expected a string, got an integer"),
        (
            "/api/publish",
            '{"channel": "h:x", "data": 1, "skip_history": "yes"}',
            "skip_history: expected true or false",
        ),
        (
            "/api/publish",
            '{"channel": "h:x", "data": 1, "tags": {"a": 1}}',
            "tags.a: expected a string, got an integer",
        ),
        ("/api/publish", '{"channel": "h:x", "data": 1, "chanel": "x"}', "chanel: unknown field"),
        (
            "/api/publish",
            '{"channel": "h:x", "data": 1, "delta": "yes"}',
            "delta: expected true or false",
        ),
        (
            "/api/broadcast",
            '{"channels": "h:x", "data": 1}',
            "channels: expected an array of strings",
        ),
        ("/api/broadcast", '{"channels": ["h:x", 2], "data": 1}', "channels[1]: expected a string"),
        (
            "/api/history",
            '{"channel": "h:x", "limit": 1.5}',
            "limit: expected an integer, got a number",
        ),
        (
            "/api/history",
            '{"channel": "h:x", "limit": 4294967296}',
            "limit: 4294967296 is out of range for int32",
        ),
        (
            "/api/history",
            '{"channel": "h:x", "since": {"offset": -1}}',
            "since.offset: -1 is out of range for uint64",
        ),
        (
            "/api/history",
            '{"channel": "h:x", "since": 3}',
            "since: expected an object, got an integer",
        ),
        (
            "/api/subscribe",
            '{"channel": "h:x", "override": {"presence": true}}',
            "override.presence: expected an object",
        ),
        (
            "/api/subscribe",
            '{"channel": "h:x", "override": {"presence": {"value": 1}}}',
            "override.presence.value",
        ),
        (
            "/api/disconnect",
            '{"user": "u", "disconnect": {"code": "x"}}',
            "disconnect.code: expected an integer",
        ),
        (
            "/api/disconnect",
            '{"user": "u", "whitelist": "c1"}',
            "whitelist: expected an array of strings",
        ),
        ("/api/refresh", '{"user": "u", "expired": 1}', "expired: expected true or false"),
        ("/api/channels", '{"pattern": ["a"]}', "pattern: expected a string, got an array"),
        ("/api/batch", '{"commands": {}}', "commands: expected an array"),
        ("/api/batch", '{"commands": [], "parallel": "yes"}', "parallel: expected true or false"),
        ("/api/batch", '{"commands": [5]}', "commands[0]: expected an object, got an integer"),
        (
            "/api/batch",
            '{"commands": [{"publish": {"channel": 1}}]}',
            "commands[0].publish.channel: expected a string",
        ),
        ("/api/batch", '{"cmds": []}', "cmds: unknown field"),
    ],
)
def test_malformed_requests_get_400_with_a_message(path: str, body: str, message: str) -> None:
    async def main() -> None:
        async with served() as s:
            status, headers, data = await s.post(path, body)
            assert status == 400, data
            assert headers["Content-Type"].startswith("text/plain")
            assert message in data.decode(), data

    run(main())


def test_non_utf8_body_is_400() -> None:
    async def main() -> None:
        async with served() as s:
            status, _, data = await s.post("/api/publish", b'{"channel": "\xff"}')
            assert status == 400 and b"not UTF-8" in data

    run(main())


def test_oversized_body_is_413() -> None:
    async def main() -> None:
        async with served({"http": {"max_body_size": 1024}}) as s:
            big = json.dumps({"channel": "h:x", "data": "x" * 4096})
            status, _, _ = await s.post("/api/publish", big)
            assert status == 413
            status, _, _ = await s.post(
                "/api/publish", json.dumps({"channel": "h:x", "data": "small"})
            )
            assert status == 200

    run(main())


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("/api/publish", {"data": 1}, 107),
        ("/api/publish", {"channel": "", "data": 1}, 107),
        ("/api/publish", {"channel": "h:x"}, 107),
        ("/api/publish", {"channel": "h:x", "b64data": "%%%"}, 107),
        ("/api/publish", {"channel": "nope:x", "data": 1}, 102),
        ("/api/publish", {"channel": "h:" + "x" * 300, "data": 1}, 107),
        ("/api/broadcast", {"data": 1}, 107),
        ("/api/broadcast", {"channels": [], "data": 1}, 107),
        ("/api/subscribe", {"user": "u"}, 107),
        ("/api/subscribe", {"user": "u", "channel": "nope:x"}, 102),
        ("/api/subscribe", {"user": "u", "channel": "h:x", "b64info": "!"}, 107),
        ("/api/unsubscribe", {"user": "u", "channel": "nope:x"}, 102),
        ("/api/disconnect", {"user": "u", "disconnect": {"code": 1000}}, 107),
        ("/api/disconnect", {"user": "u", "disconnect": {"code": 4000, "reason": "r" * 124}}, 107),
        ("/api/refresh", {"user": "u", "expire_at": -5}, 107),
        ("/api/presence", {}, 107),
        ("/api/presence", {"channel": "nope:x"}, 102),
        ("/api/presence_stats", {"channel": ""}, 107),
        ("/api/presence_stats", {"channel": "plain:x"}, 108),
        ("/api/history", {}, 107),
        (
            "/api/history",
            {"channel": "h:x", "reverse": True, "since": {"offset": 0, "epoch": ""}},
            107,
        ),
        ("/api/history_remove", {"channel": "nope:x"}, 102),
        ("/api/rpc", {}, 107),
        ("/api/rpc", {"method": "nobody"}, 104),
    ],
)
def test_errors_inside_a_200_body(path: str, body: dict[str, Any], code: int) -> None:
    async def main() -> None:
        async with served() as s:
            status, headers, data = await s.post(path, json.dumps(body))
            assert status == 200, data
            assert headers["Content-Type"] == "application/json"
            reply = json.loads(data)
            assert set(reply) == {"error"} and reply["error"]["code"] == code, reply
            assert reply["error"]["message"]

    run(main())


def test_transport_error_mode_by_header_and_config() -> None:
    async def main() -> None:
        async with served() as s:
            mode = {"X-Centrifugo-Error-Mode": "transport"}
            cases = [
                ({"channel": "nope:x", "data": 1}, 404, 102),
                ({"channel": "", "data": 1}, 400, 107),
            ]
            for body, status_code, code in cases:
                status, _, data = await s.post("/api/publish", json.dumps(body), headers=mode)
                assert status == status_code
                assert json.loads(data)["code"] == code
            status, _, data = await s.post(
                "/api/presence", json.dumps({"channel": "plain:x"}), headers=mode
            )
            assert (status, json.loads(data)["code"]) == (400, 108)
            status, _, data = await s.post(
                "/api/history",
                json.dumps({"channel": "h:x", "limit": 1, "since": {"offset": 1, "epoch": "z"}}),
                headers=mode,
            )
            assert (status, json.loads(data)["code"]) == (416, 112)
            # Success is unchanged.
            status, _, data = await s.post(
                "/api/publish", json.dumps({"channel": "h:x", "data": 1}), headers=mode
            )
            assert status == 200 and "result" in json.loads(data)
        async with served({"api": {"error_mode": "transport"}}) as s:
            status, _, data = await s.post(
                "/api/publish", json.dumps({"channel": "nope:x", "data": 1})
            )
            assert status == 404 and json.loads(data) == {
                "code": 102,
                "message": "unknown channel: namespace 'nope' is not in channel.namespaces",
            }

    run(main())


def test_legacy_single_endpoint() -> None:
    async def main() -> None:
        async with served() as s:
            ws = await s.ws("alice", channels=("h:legacy",))
            body = (
                '{"method": "publish", "params": {"channel": "h:legacy", "data": {"v": 1}}}\n'
                '{"id": 7, "method": "presence_stats", "params": {"channel": "h:legacy"}}\n'
                '{"method": "PRESENCE", "params": {"channel": "nope:x"}}\n'
                '{"method": 9}\n'
                '{"method": "no_such_method", "params": {}}\n'
                '{"method": "publish", "params": {"channel": 3}}'
            )
            status, _, data = await s.post("/api", body)
            assert status == 200, data
            replies = [json.loads(line) for line in data.decode().split("\n")]
            assert replies[0]["result"]["offset"] == 1
            assert replies[1] == {"id": 7, "result": {"num_clients": 1, "num_users": 1}}
            assert replies[2]["error"]["code"] == 102
            assert replies[3]["result"]["nodes"][0]["num_clients"] == 1
            assert replies[4]["error"]["code"] == 104
            assert replies[5]["error"]["code"] == 107
            assert "params.channel" in replies[5]["error"]["message"]
            assert (await ws.push("pub"))["pub"]["data"] == {"v": 1}
            for bad in ("", "{oops", '{"method": [1]}', "[1]"):
                status, _, _ = await s.post("/api", bad)
                assert status == 400, bad

    run(main())


def test_rpc_extension() -> None:
    async def main() -> None:
        async with served() as s:
            api = s.server.app.api  # type: ignore[attr-defined]

            async def echo(params: bytes | None) -> Any:
                return {"echo": json.loads(params) if params else None}

            api.add_rpc("echo", echo)
            body = await s.post_json("/api/rpc", {"method": "echo", "params": {"x": [1, 2]}})
            assert body == {"result": {"data": {"echo": {"x": [1, 2]}}}}

    run(main())


def test_api_on_its_own_internal_port() -> None:
    async def main() -> None:
        config = config_from_mapping(merged({"api": {"port": 1}, "metrics": {"enabled": True}}))
        node = Node(config)
        await node.start()
        public = await rtcore.serve(node, "127.0.0.1", 0)
        internal = await serve_node(node, "127.0.0.1", 0, app=InternalApp(node))
        try:
            async with aiohttp.ClientSession() as http:
                async with http.post(
                    f"http://127.0.0.1:{public.port}/api/info",
                    data="{}",
                    headers={"X-API-Key": KEY},
                ) as resp:
                    assert resp.status == 404
                async with http.get(f"http://127.0.0.1:{public.port}/metrics") as resp:
                    assert resp.status == 404
                async with http.post(
                    f"http://127.0.0.1:{internal.port}/api/info",
                    data="{}",
                    headers={"X-API-Key": KEY},
                ) as resp:
                    assert resp.status == 200
                    assert (await resp.json())["result"]["nodes"][0]["uid"] == node.id
                async with http.get(f"http://127.0.0.1:{internal.port}/metrics") as resp:
                    assert resp.status == 200
                    assert "rtcore_node_num_clients" in await resp.text()
                async with http.get(f"http://127.0.0.1:{internal.port}/health") as resp:
                    assert resp.status == 200
                async with http.get(
                    f"http://127.0.0.1:{internal.port}/connection/websocket"
                ) as resp:
                    assert resp.status == 404
        finally:
            await public.close(timeout=1)
            await internal.close(timeout=1)
            await node.close()

    run(main())


def test_api_disabled() -> None:
    async def main() -> None:
        async with served({"api": {"enabled": False}}) as s:
            status, _, _ = await s.post("/api/info", "{}")
            assert status == 404

    run(main())


def test_drain_refuses_new_requests_and_waits_for_running_ones() -> None:
    async def main() -> None:
        async with served() as s:
            api = s.server.app.api  # type: ignore[attr-defined]
            gate = asyncio.Event()

            async def slow(params: bytes | None) -> Any:
                await gate.wait()
                return "done"

            api.add_rpc("slow", slow)
            running = asyncio.ensure_future(s.post("/api/rpc", json.dumps({"method": "slow"})))
            await until(lambda: api.in_flight == 1)
            draining = asyncio.ensure_future(api.drain(5))
            await asyncio.sleep(0.05)
            assert not draining.done()
            status, headers, _ = await s.post("/api/info", "{}")
            assert status == 503 and headers["Retry-After"] == "1"
            gate.set()
            assert await draining is True
            status, _, data = await running
            assert status == 200 and json.loads(data) == {"result": {"data": "done"}}
            # A bounded wait gives up.
            api.closing = False
            gate.clear()
            running = asyncio.ensure_future(s.post("/api/rpc", json.dumps({"method": "slow"})))
            await until(lambda: api.in_flight == 1)
            assert await api.drain(0.1) is False
            gate.set()
            await running

    run(main())


def test_glob_patterns() -> None:
    cases = {
        "*": (["", "a", "a:b"], []),
        "news:*": (["news:", "news:x"], ["new:x"]),
        "a?c": (["abc", "a:c"], ["ac", "abbc"]),
        "[ab]x": (["ax", "bx"], ["cx"]),
        "[!ab]x": (["cx"], ["ax"]),
        "[a-c]1": (["b1"], ["d1"]),
        "{chat,news}:*": (["chat:1", "news:2"], ["other:1"]),
        "x\\*": (["x*"], ["xy"]),
        "a.b": (["a.b"], ["axb"]),
    }
    for pattern, (yes, no) in cases.items():
        regex = glob_to_regex(pattern)
        for text in yes:
            assert regex.fullmatch(text), (pattern, text)
        for text in no:
            assert not regex.fullmatch(text), (pattern, text)
    for bad in ("[abc", "{a,b", "trailing\\"):
        with pytest.raises(ValueError):
            glob_to_regex(bad)
