"""Prometheus metrics (rtcore.server.metrics): /metrics parsed with prometheus_client's parser.

Each test serves a node, scrapes, makes traffic flow (WebSocket clients of
the JSON protocol, server API calls) and checks that the values moved.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import websockets
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

import rtcore
from rtcore.auth import make_connect_token
from rtcore.config import config_from_mapping
from rtcore.engine.node import Node
from rtcore.server.loop_monitor import LoopMonitor
from rtcore.server.metrics import DeliveryLatency
from rtcore.transports.http_server import Server, run as run_loop


T = TypeVar("T")

DASHBOARD = Path(__file__).resolve().parents[1] / "docs" / "grafana" / "rtcore.json"
SECRET = "rtcore-metrics-tests-hmac-secret-0123456789"
KEY = "metrics-test-key"


def run(coro: Awaitable[T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, 30)

    return run_loop(bounded())  # type: ignore[no-any-return]


def config(**client: Any) -> dict[str, Any]:
    return {
        "api": {"key": KEY},
        "metrics": {"enabled": True},
        "client": {
            "token": {"hmac_secret_key": SECRET},
            "ping_interval": 0,
            "pong_timeout": 0,
            **client,
        },
        "channel": {
            "namespaces": [
                {
                    "name": "h",
                    "history_size": 10,
                    "history_ttl": "1m",
                    "presence": True,
                    "join_leave": True,
                    "allow_subscribe_for_client": True,
                },
                {
                    "name": "r",
                    "history_size": 10,
                    "history_ttl": "1m",
                    "force_recovery": True,
                    "allow_subscribe_for_client": True,
                },
            ]
        },
    }


class Scraper:
    def __init__(self, node: Node, server: Server) -> None:
        self.node = node
        self.server = server
        self.base = f"http://127.0.0.1:{server.port}"

    async def text(self) -> str:
        async with aiohttp.ClientSession() as http, http.get(self.base + "/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            return await resp.text()

    async def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample as ``{(name, sorted labels): value}``."""
        text = await self.text()
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    async def api(self, method: str, body: Mapping[str, Any]) -> Any:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{self.base}/api/{method}", data=json.dumps(body), headers={"X-API-Key": KEY}
            ) as resp,
        ):
            assert resp.status == 200
            return await resp.json()

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.server.port}"

    async def client(self, user: str, channel: str, **options: Any) -> Any:
        ws = await websockets.connect(f"{self.ws_base}/connection/websocket", **options)
        await ws.send(json.dumps({"id": 1, "connect": {"token": make_connect_token(SECRET, user)}}))
        assert "connect" in json.loads(await ws.recv())
        await ws.send(json.dumps({"id": 2, "subscribe": {"channel": channel}}))
        assert "subscribe" in json.loads((await ws.recv()).splitlines()[0])
        return ws


def value(
    samples: Mapping[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@asynccontextmanager
async def served(mapping: Mapping[str, Any]) -> AsyncIterator[Scraper]:
    node = Node(config_from_mapping(mapping))
    server = await rtcore.serve(node, "127.0.0.1", 0)
    try:
        yield Scraper(node, server)
    finally:
        await server.close(timeout=1)
        await node.close()


async def until(check: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def test_values_move_with_traffic() -> None:
    async def main() -> None:
        async with served(config()) as s:
            before = await s.scrape()
            assert value(before, "rtcore_node_num_clients") == 0
            assert value(before, "rtcore_delivery_latency_seconds_count") == 0
            assert (
                value(
                    before,
                    "rtcore_build_info",
                    version=s.node.version,
                    frame_core=_impl("frames"),
                    fanout=_impl("fanout"),
                )
                == 1
            )
            assert value(before, "rtcore_node_info", node=s.node.id) == 1

            a = await s.client("alice", "h:room")
            b = await s.client("bob", "h:room")
            for n in range(3):
                await s.api("publish", {"channel": "h:room", "data": {"n": n}})
            for ws in (a, b):
                received = 0
                while received < 3:
                    received += sum('"pub"' in line for line in (await ws.recv()).splitlines())

            async def delivered() -> bool:
                return value(await s.scrape(), "rtcore_delivery_latency_seconds_count") == 3

            await until(delivered)
            after = await s.scrape()
            assert value(after, "rtcore_node_num_clients") == 2
            assert value(after, "rtcore_node_num_users") == 2
            assert value(after, "rtcore_node_num_channels") == 1
            assert value(after, "rtcore_node_num_subscriptions") == 2
            assert value(after, "rtcore_node_publications_total") == 3
            assert value(after, "rtcore_node_messages_sent_total", type="publication") == 3
            assert value(after, "rtcore_node_messages_received_total", type="publication") == 3
            assert value(after, "rtcore_node_messages_sent_total", type="join") == 2
            # Connect and subscribe replies, join pushes and 3 publications per client.
            assert value(after, "rtcore_client_messages_sent_total") >= 2 * (2 + 3)
            assert value(after, "rtcore_client_frames_sent_total") >= 2 * 2
            # Two command frames (connect, subscribe) from each client.
            received = value(after, "rtcore_client_bytes_received_total")
            assert received > 4 * len('{"id":1,"connect":{}}')
            assert value(after, "rtcore_delivery_latency_seconds_bucket", le="+Inf") == 3
            assert 0 <= value(after, "rtcore_delivery_latency_seconds_sum") < 3 * 5.0
            assert value(after, "rtcore_node_uptime_seconds") >= value(
                before, "rtcore_node_uptime_seconds"
            )

            sent_before_close = value(after, "rtcore_client_messages_sent_total")
            await s.api("disconnect", {"user": "alice"})
            await a.wait_closed()

            async def gone() -> bool:
                return value(await s.scrape(), "rtcore_node_num_clients") == 1

            await until(gone)
            final = await s.scrape()
            assert (
                value(final, "rtcore_client_disconnects_total", transport="websocket", code="3503")
                == 1
            )
            assert value(final, "rtcore_node_messages_sent_total", type="control") == 1
            assert value(final, "rtcore_node_messages_received_total", type="control") == 1
            # Counts of closed sessions are kept.
            assert value(final, "rtcore_client_messages_sent_total") >= sent_before_close
            assert value(final, "rtcore_client_bytes_received_total") == received
            await b.close()

    run(main())


def test_bytes_sent_grow_by_the_protocol_bytes_of_each_transport() -> None:
    """One publication to clients of every kind: the counter grows by the bytes of the
    protocol messages they got, however each transport frames them (uni WebSocket sends
    each message without its newline, SSE as a data line)."""
    mapping = config()
    mapping.update(
        websocket={"compression": True, "compression_min_size": 0},
        uni_websocket={"enabled": True},
        uni_http_stream={"enabled": True},
        uni_sse={"enabled": True},
    )

    async def main() -> None:
        async with served(mapping) as s, aiohttp.ClientSession() as http:
            channel = "r:bytes"
            plain = await s.client("alice", channel, compression=None)  # written from C
            deflated = await s.client("bob", channel)  # compressed: the transport's write
            for ws, compressed in ((plain, False), (deflated, True)):
                extensions = ws.response.headers.get("Sec-WebSocket-Extensions", "")
                assert ("permessage-deflate" in extensions) is compressed
            request = json.dumps({"token": make_connect_token(SECRET, "carol", channels=[channel])})
            uni_ws = await websockets.connect(f"{s.ws_base}/connection/uni_websocket")
            await uni_ws.send(request)
            assert "connect" in json.loads(await uni_ws.recv())
            stream = await http.post(
                f"{s.base}/connection/uni_http_stream",
                data=request,
                headers={"Content-Type": "application/json"},
            )
            assert stream.status == 200
            assert "connect" in json.loads(await stream.content.readline())
            sse = await http.get(f"{s.base}/connection/uni_sse", params={"cf_connect": request})
            assert "connect" in (await _sse_data(sse)).decode()
            assert s.node.hub.num_subscribers(channel) == 5

            before = await s.scrape()
            await s.api("publish", {"channel": channel, "data": {"text": "ü" * 40}})
            got = [len((await ws.recv()).encode()) for ws in (plain, deflated)]
            got.append(len((await uni_ws.recv()).encode()) + 1)  # + its newline
            got.append(len(await stream.content.readline()))  # the JSON line itself
            got.append(len(await _sse_data(sse)) + 1)
            after = await s.scrape()
            grown = value(after, "rtcore_client_bytes_sent_total") - value(
                before, "rtcore_client_bytes_sent_total"
            )
            assert grown == sum(got) and min(got) > 40
            frames = "rtcore_client_frames_sent_total"
            assert value(after, frames) - value(before, frames) == 5

            # Counts of closed sessions are kept.
            for ws in (plain, deflated, uni_ws):
                await ws.close()
            stream.close()
            sse.close()

            async def gone() -> bool:
                return value(await s.scrape(), "rtcore_node_num_clients") == 0

            await until(gone)
            final = await s.scrape()
            sent = value(final, "rtcore_client_bytes_sent_total")
            assert sent == value(after, "rtcore_client_bytes_sent_total")

    run(main())


async def _sse_data(response: aiohttp.ClientResponse) -> bytes:
    """The data of the next Server-Sent Event (one data line per message here)."""
    for _ in range(8):
        line = (await asyncio.wait_for(response.content.readline(), 5)).rstrip(b"\r\n")
        if line.startswith(b"data: "):
            return line[len(b"data: ") :]
        assert line == b"", line
    raise AssertionError("no SSE data line")


def _impl(stem: str) -> str:
    from rtcore import fanout, frames

    return {"frames": frames.IMPLEMENTATION, "fanout": fanout.IMPLEMENTATION}[stem]


def test_slow_client_is_counted() -> None:
    async def main() -> None:
        async with served(config(queue_max_size=256)) as s:
            ws = await s.client("alice", "h:slow")
            await s.api("publish", {"channel": "h:slow", "data": "x" * 1024})

            async def slow() -> bool:
                samples = await s.scrape()
                return value(samples, "rtcore_client_slow_disconnects_total") == 1

            await until(slow)
            samples = await s.scrape()
            assert (
                value(
                    samples, "rtcore_client_disconnects_total", transport="websocket", code="3008"
                )
                == 1
            )
            await ws.wait_closed()
            assert ws.close_code == 3008

    run(main())


def test_broker_errors_are_counted() -> None:
    async def main() -> None:
        async with served(config()) as s:
            broker = s.node.broker
            real_publish = broker.publish

            async def failing(*args: Any, **kwargs: Any) -> Any:
                raise ConnectionError("broker down")

            broker.publish = failing  # type: ignore[method-assign]
            body = await s.api("publish", {"channel": "h:x", "data": 1})
            assert body == {"error": {"code": 100, "message": "internal server error"}}
            samples = await s.scrape()
            assert value(samples, "rtcore_broker_errors_total", op="publish") == 1
            assert value(samples, "rtcore_node_messages_sent_total", type="publication") == 0
            broker.publish = real_publish  # type: ignore[method-assign]
            await s.api("publish", {"channel": "h:x", "data": 1})
            samples = await s.scrape()
            assert value(samples, "rtcore_broker_errors_total", op="publish") == 1
            assert value(samples, "rtcore_node_messages_sent_total", type="publication") == 1

    run(main())


def test_api_requests_and_backend_latency() -> None:
    async def main() -> None:
        async with served(config()) as s:
            await s.api("publish", {"channel": "h:a", "data": {"n": 1}})
            body = await s.api("publish", {"channel": "nope:a", "data": 1})
            assert body["error"]["code"] == 102
            await s.api("history", {"channel": "h:a", "limit": 1})
            async with aiohttp.ClientSession() as http:
                async with http.post(s.base + "/api/publish", data="{}") as resp:
                    assert resp.status == 401
                async with http.post(
                    s.base + "/api/no_such_method", data="{}", headers={"X-API-Key": KEY}
                ) as resp:
                    assert resp.status == 404
                async with http.post(
                    s.base + "/api", data='{"method": "info"}', headers={"X-API-Key": KEY}
                ) as resp:
                    assert resp.status == 200
            samples = await s.scrape()

            def requests(method: str, status: str) -> float:
                return value(samples, "rtcore_api_requests_total", method=method, status=status)

            assert requests("publish", "200") == 2
            assert requests("publish", "401") == 1
            assert requests("history", "200") == 1
            assert requests("unknown", "404") == 1
            assert requests("legacy", "200") == 1
            assert value(samples, "rtcore_api_request_errors_total", method="publish", code="102")
            assert (
                value(samples, "rtcore_api_request_duration_seconds_count", method="publish") == 3
            )
            assert (
                value(
                    samples,
                    "rtcore_api_request_duration_seconds_bucket",
                    method="publish",
                    le="+Inf",
                )
                == 3
            )
            # One publication reached the broker, one history read was made.
            assert value(samples, "rtcore_broker_publish_duration_seconds_count") == 1
            assert value(samples, "rtcore_history_read_duration_seconds_count") == 1
            assert value(samples, "rtcore_broker_publish_duration_seconds_sum") > 0

    run(main())


def test_commands_and_connects_are_counted() -> None:
    async def main() -> None:
        async with served(config()) as s:
            ws = await s.client("alice", "h:room")
            await ws.send(json.dumps({"id": 3, "subscribe": {"channel": "nope:x"}}))
            assert json.loads(await ws.recv())["error"]["code"] == 102
            await ws.send(json.dumps({"id": 4, "history": {"channel": "h:room", "limit": 1}}))
            # Subscribers of "h" may not read history: 103.
            assert json.loads(await ws.recv())["error"]["code"] == 103
            url = f"ws://127.0.0.1:{s.server.port}/connection/websocket"
            async with websockets.connect(url) as bad:
                await bad.send(json.dumps({"id": 1, "connect": {"token": "not-a-jwt"}}))
                await bad.wait_closed()
                assert bad.close_code == 3500
            samples = await s.scrape()

            def commands(method: str, code: str) -> float:
                return value(samples, "rtcore_client_commands_total", method=method, code=code)

            assert commands("connect", "0") == 1
            assert commands("connect", "3500") == 1
            assert commands("subscribe", "0") == 1
            assert commands("subscribe", "102") == 1
            assert commands("history", "103") == 1
            assert value(samples, "rtcore_client_connects_total", transport="websocket") == 1
            await ws.close()

    run(main())


def test_recovery_outcomes_and_subscribe_reads() -> None:
    async def main() -> None:
        async with served(config()) as s:
            for n in range(2):
                position = (await s.api("publish", {"channel": "r:a", "data": {"n": n}}))["result"]
            ws = await websockets.connect(f"ws://127.0.0.1:{s.server.port}/connection/websocket")
            token = make_connect_token(SECRET, "alice")
            await ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
            assert "connect" in json.loads(await ws.recv())
            epoch = position["epoch"]
            asks = [
                ("r:a", {"recover": True, "offset": 1, "epoch": epoch}),
                ("r:b", {"recover": True, "offset": 5, "epoch": "another-epoch"}),
                ("r:c", {}),
            ]
            replies = []
            for n, (channel, recovery) in enumerate(asks, start=2):
                await ws.send(json.dumps({"id": n, "subscribe": {"channel": channel, **recovery}}))
                replies.append(json.loads((await ws.recv()).splitlines()[0])["subscribe"])
            assert replies[0].get("recovered") is True
            assert len(replies[0]["publications"]) == 1
            assert not replies[1].get("recovered")
            samples = await s.scrape()
            assert value(samples, "rtcore_client_recoveries_total", outcome="recovered") == 1
            assert value(samples, "rtcore_client_recoveries_total", outcome="not_recovered") == 1
            # Every subscribe of a recoverable channel read its history: timed.
            reads = value(samples, "rtcore_recovery_reads_total")
            assert reads >= 1
            assert value(samples, "rtcore_history_read_duration_seconds_count") == reads
            await ws.close()

    run(main())


def test_process_metrics_and_http_behaviour() -> None:
    async def main() -> None:
        async with served(config()) as s:
            samples = await s.scrape()
            assert any(name.startswith("process_") for name, _ in samples)
            async with aiohttp.ClientSession() as http:
                async with http.post(s.base + "/metrics") as resp:
                    assert resp.status == 405
                    assert resp.headers["Allow"] == "GET, HEAD"
                async with http.head(s.base + "/metrics") as resp:
                    assert resp.status == 200
                    assert int(resp.headers["Content-Length"]) > 0
            openmetrics = {"Accept": "application/openmetrics-text; version=1.0.0"}
            async with (
                aiohttp.ClientSession() as http,
                http.get(s.base + "/metrics", headers=openmetrics) as resp,
            ):
                assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
                text = await resp.text()
            families = {f.name: f for f in openmetrics_families(text)}
            assert families["rtcore_node_num_clients"].samples[0].value == 0
            assert text.rstrip().endswith("# EOF")
        disabled = config()
        disabled["metrics"] = {"enabled": False}
        async with served(disabled) as s:
            async with aiohttp.ClientSession() as http, http.get(s.base + "/metrics") as resp:
                assert resp.status == 404

    run(main())


def test_delivery_latency_histogram() -> None:
    latency = DeliveryLatency()
    for seconds in (0.0001, 0.0005, 0.003, 0.2, 7.0):
        latency.observe(seconds)
    buckets = dict(latency.cumulative())
    assert buckets["0.0005"] == 2  # le is inclusive
    assert buckets["0.005"] == 3
    assert buckets["0.25"] == 4
    assert buckets["5.0"] == 4
    assert buckets["+Inf"] == 5 == latency.count
    assert abs(latency.sum - 7.2036) < 1e-9
    counts = [n for _, n in latency.cumulative()]
    assert counts == sorted(counts)


def test_delivery_latency_recorded_after_the_tick() -> None:
    async def main() -> None:
        import time

        latency = DeliveryLatency()
        now_ms = int(time.time() * 1000)
        latency.after_flush(now_ms - 50)
        latency.after_flush(now_ms - 50)
        assert latency.count == 0  # nothing before the loop runs the callback
        await asyncio.sleep(0)
        assert latency.count == 2
        assert 0.04 <= latency.sum / 2 < 1.0
        # A clock ahead of ours never gives a negative latency.
        latency.after_flush(now_ms + 60_000)
        await asyncio.sleep(0)
        assert latency.count == 3 and latency.counts[0] == 1

    run(main())


def _exposed_names(text: str) -> set[str]:
    """Every series name a query may use: samples, and the names of families
    without samples yet (a counter's ``_total``, a histogram's parts)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_count", "_sum"))
        else:
            names.add(family.name)
    return names


def _dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            exprs.append(variable["definition"])
    return exprs


def test_grafana_dashboard_queries_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = _dashboard_queries(dashboard)
    queried = set(re.findall(r"\b((?:rtcore|process|python)_[a-z0-9_]+)\b", " ".join(exprs)))
    assert len(queried) >= 30

    async def exposed() -> set[str]:
        # rtcore serve runs a loop monitor beside the node.
        monitor = LoopMonitor()
        monitor.start()
        try:
            async with served(config()) as s:
                ws = await s.client("alice", "h:room")
                await s.api("publish", {"channel": "h:room", "data": {"n": 1}})
                await s.api("history", {"channel": "h:room", "limit": 1})
                await ws.recv()
                await ws.close()
                return _exposed_names(await s.text())
        finally:
            monitor.stop()

    missing = sorted(queried - run(exposed()))
    assert missing == [], f"the dashboard queries metrics no node exports: {missing}"


def test_grafana_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] == "rtcore" and dashboard["title"] == "rtcore"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, panel["title"]
        # No two panels overlap.
        mine = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
        assert not mine & cells, panel["title"]
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            assert expr.count("(") == expr.count(")"), expr
            assert expr.count("{") == expr.count("}"), expr
            # Every selector follows the instance variable.
            for selector in re.findall(r"\b(?:rtcore|process|python)_[a-z0-9_]+(\{[^}]*\})?", expr):
                assert 'instance=~"$instance"' in selector, expr
