"""OpenTelemetry spans (rtcore.server.tracing) through the engine's seam (rtcore.engine.tracing).

The spans are recorded by a small tracer provider written against the
OpenTelemetry API alone (the SDK is the application's choice, not a test
dependency): it keeps each finished span with its parent, kind, attributes
and status.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import websockets
from opentelemetry import trace
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode

import rtcore
from rtcore.auth import make_connect_token
from rtcore.config import config_from_mapping
from rtcore.engine import tracing
from rtcore.engine.node import Node
from rtcore.server import tracing as server_tracing
from rtcore.transports.http_server import run as run_loop


SECRET = "rtcore-tracing-tests-hmac-secret-0123456789"
KEY = "tracing-test-key"
_ids = itertools.count(1)


@dataclass
class Recorded:
    name: str
    kind: SpanKind
    context: SpanContext
    parent: SpanContext | None
    attributes: dict[str, Any] = field(default_factory=dict)
    status: StatusCode = StatusCode.UNSET
    ended: bool = False


class RecordingSpan(trace.Span):
    def __init__(self, record: Recorded, finished: list[Recorded]) -> None:
        self.record = record
        self._finished = finished

    def end(self, end_time: int | None = None) -> None:
        self.record.ended = True
        self._finished.append(self.record)

    def get_span_context(self) -> SpanContext:
        return self.record.context

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        self.record.attributes.update(attributes)

    def set_attribute(self, key: str, value: Any) -> None:
        self.record.attributes[key] = value

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        pass

    def update_name(self, name: str) -> None:
        self.record.name = name

    def is_recording(self) -> bool:
        return not self.record.ended

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        self.record.status = status.status_code if isinstance(status, Status) else status

    def record_exception(self, exception: BaseException, *args: Any, **kwargs: Any) -> None:
        self.record.attributes["exception.type"] = type(exception).__name__


class RecordingTracer(trace.Tracer):
    def __init__(self, finished: list[Recorded]) -> None:
        self.finished = finished

    def start_span(  # type: ignore[override]
        self,
        name: str,
        context: Any = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> trace.Span:
        parent = trace.get_current_span(context).get_span_context()
        trace_id = parent.trace_id if parent.is_valid else next(_ids)
        ctx = SpanContext(trace_id, next(_ids), is_remote=False)
        record = Recorded(name, kind, ctx, parent if parent.is_valid else None)
        record.attributes.update(attributes or {})
        return RecordingSpan(record, self.finished)

    @contextmanager  # type: ignore[override]
    def start_as_current_span(
        self,
        name: str,
        context: Any = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> Iterator[trace.Span]:
        span = self.start_span(name, context, kind, attributes)
        with trace.use_span(span, end_on_exit=True) as current:
            yield current


class RecordingProvider(trace.TracerProvider):
    def __init__(self) -> None:
        self.finished: list[Recorded] = []
        self.tracers: list[tuple[str, str | None]] = []

    def get_tracer(  # type: ignore[override]
        self, name: str, version: str | None = None, *args: Any, **kwargs: Any
    ) -> trace.Tracer:
        self.tracers.append((name, version))
        return RecordingTracer(self.finished)

    def named(self, name: str) -> list[Recorded]:
        return [r for r in self.finished if r.name == name]


@pytest.fixture
def provider() -> Iterator[RecordingProvider]:
    provider = RecordingProvider()
    assert server_tracing.install(provider)
    try:
        yield provider
    finally:
        server_tracing.uninstall()


def run(coro: Any) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, 30)

    return run_loop(bounded())


def config() -> dict[str, Any]:
    return {
        "api": {"key": KEY},
        "client": {"token": {"hmac_secret_key": SECRET}, "ping_interval": 0, "pong_timeout": 0},
        "channel": {
            "namespaces": [
                {
                    "name": "t",
                    "history_size": 10,
                    "history_ttl": "1m",
                    "allow_subscribe_for_client": True,
                }
            ]
        },
    }


async def api(port: int, method: str, body: Mapping[str, Any]) -> Any:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{port}/api/{method}",
            data=json.dumps(body),
            headers={"X-API-Key": KEY},
        ) as resp,
    ):
        assert resp.status == 200
        return await resp.json()


def only(spans: Sequence[Recorded]) -> Recorded:
    assert len(spans) == 1, spans
    return spans[0]


def test_api_publish_broker_and_fanout_form_one_trace(provider: RecordingProvider) -> None:
    async def main() -> None:
        node = Node(config_from_mapping(config()))
        server = await rtcore.serve(node, "127.0.0.1", 0)
        try:
            ws = await websockets.connect(f"ws://127.0.0.1:{server.port}/connection/websocket")
            token = make_connect_token(SECRET, "alice")
            await ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
            assert "connect" in json.loads(await ws.recv())
            await ws.send(json.dumps({"id": 2, "subscribe": {"channel": "t:room"}}))
            assert "subscribe" in json.loads((await ws.recv()).splitlines()[0])
            body = await api(server.port, "publish", {"channel": "t:room", "data": {"n": 1}})
            assert body == {"result": {"offset": 1, "epoch": body["result"]["epoch"]}}
            assert '"pub"' in await ws.recv()
            await ws.send(json.dumps({"id": 3, "subscribe": {"channel": "zz:room"}}))
            assert json.loads(await ws.recv())["error"]["code"] == 102
            body = await api(server.port, "publish", {"channel": "zz:room", "data": 1})
            assert body["error"]["code"] == 102
            await ws.close()
        finally:
            await server.close(timeout=1)
            await node.close()

    run(main())
    assert provider.tracers == [("rtcore", rtcore.__version__)]
    request, refused = provider.named("rtcore.api publish")
    assert request.kind is SpanKind.SERVER and request.parent is None
    assert request.attributes == {"rtcore.api.method": "publish", "http.response.status_code": 200}
    broker = only(provider.named("rtcore.broker.publish"))
    assert broker.kind is SpanKind.PRODUCER
    assert broker.parent == request.context
    assert broker.attributes == {"rtcore.channel": "t:room"}
    fanout = only(provider.named("rtcore.fanout"))
    assert fanout.kind is SpanKind.CONSUMER
    # The memory broker delivers in the publishing task: one trace.
    assert fanout.parent == broker.context
    assert fanout.attributes == {"rtcore.channel": "t:room", "rtcore.subscribers": 1}
    # The unknown namespace never reaches the broker.
    assert refused.context.trace_id != request.context.trace_id
    connect = only(provider.named("rtcore.connect"))
    assert connect.kind is SpanKind.SERVER and connect.parent is None
    assert connect.attributes["rtcore.transport"] == "websocket"
    assert connect.status is StatusCode.UNSET
    subscribe, failed = provider.named("rtcore.subscribe")
    assert subscribe.attributes["rtcore.channel"] == "t:room"
    assert subscribe.attributes["rtcore.user"] == "alice"
    assert subscribe.attributes["rtcore.client"] == connect.attributes["rtcore.client"]
    assert subscribe.status is StatusCode.UNSET
    # A refused subscribe (error 102) ends its span as failed.
    assert failed.attributes["rtcore.channel"] == "zz:room"
    assert failed.status is StatusCode.ERROR
    assert failed.attributes["exception.type"] == "ClientError"
    assert all(r.ended for r in provider.finished)


def test_a_failing_broker_marks_its_span(provider: RecordingProvider) -> None:
    async def main() -> None:
        node = Node(config_from_mapping(config()))
        server = await rtcore.serve(node, "127.0.0.1", 0)

        async def failing(*args: Any, **kwargs: Any) -> Any:
            raise ConnectionError("broker down")

        node.broker.publish = failing  # type: ignore[method-assign]
        try:
            body = await api(server.port, "publish", {"channel": "t:x", "data": 1})
            assert body["error"]["code"] == 100
        finally:
            await server.close(timeout=1)
            await node.close()

    run(main())
    broker = only(provider.named("rtcore.broker.publish"))
    assert broker.status is StatusCode.ERROR
    assert broker.attributes["exception.type"] == "ConnectionError"
    request = only(provider.named("rtcore.api publish"))
    # The API answered (error 100 in a 200 body): the request span is not failed.
    assert request.status is StatusCode.UNSET
    assert broker.parent == request.context


def test_nothing_is_installed_without_a_configured_provider() -> None:
    assert tracing.tracer is None
    # The API's default provider is a proxy: nobody configured tracing.
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    assert server_tracing.install() is False
    assert tracing.tracer is None and not server_tracing.installed()
    assert tracing.span("rtcore.x", {}) is tracing.NO_SPAN


def test_the_global_provider_is_used_once_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    provider = RecordingProvider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    try:
        assert server_tracing.install() is True
        assert server_tracing.installed()
        with tracing.span("rtcore.test", {"k": 1}):
            pass
    finally:
        server_tracing.uninstall()
    assert tracing.tracer is None
    span = only(provider.named("rtcore.test"))
    assert span.kind is SpanKind.SERVER and span.attributes == {"k": 1}


def test_without_the_opentelemetry_api_nothing_is_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An import of a module set to None in sys.modules raises ImportError.
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    assert server_tracing.install() is False
    assert tracing.tracer is None


def test_serving_a_node_installs_the_configured_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    provider = RecordingProvider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)

    async def main() -> None:
        node = Node(config_from_mapping(config()))
        assert tracing.tracer is None
        server = await rtcore.serve(node, "127.0.0.1", 0)
        try:
            assert server_tracing.installed()
            await api(server.port, "info", {})
        finally:
            await server.close(timeout=1)
            await node.close()

    try:
        run(main())
    finally:
        server_tracing.uninstall()
    assert only(provider.named("rtcore.api info")).attributes["http.response.status_code"] == 200
