"""Prometheus metrics: ``GET /metrics`` (enable with ``metrics.enabled``).

Nothing here runs on the hot path. The node keeps plain integer counters that
change once per publication, per command or per session (never per
subscriber), and plain histograms (``rtcore.engine.stats``); the server API
keeps its own (``ApiStats``). A custom collector, :class:`NodeCollector`,
reads them and the hub's sizes when Prometheus scrapes. The one measurement
taken while messages flow is the publish-to-delivery latency, recorded once
per publication by :class:`DeliveryLatency`.

Metrics (all prefixed ``rtcore_``):

=========================================  =========  ===========================================
name                                       type       meaning
=========================================  =========  ===========================================
build_info{version,frame_core,fanout}      gauge      1; which implementations are live
node_info{node}                            gauge      1; this process's node id (one per worker)
node_uptime_seconds                        gauge      seconds since the node was created
node_num_clients / _users / _channels      gauge      connected clients, distinct users, channels
node_num_subscriptions                     gauge      client subscriptions on this node
node_publications_total                    counter    publications accepted (API and clients)
node_messages_sent_total{type}             counter    messages sent to the broker: publication,
                                                      join, leave, control
node_messages_received_total{type}         counter    messages received from the broker
client_messages_sent_total                 counter    protocol messages written to clients
client_frames_sent_total                   counter    transport frames written to clients
client_write_queue_bytes                   gauge      bytes queued in client write queues now
client_slow_disconnects_total              counter    clients dropped for a full write queue (3008)
client_connects_total{transport}           counter    successful connects by transport
client_disconnects_total{transport,code}   counter    client disconnects by transport and code
client_commands_total{method,code}         counter    client commands by method and result code
                                                      (0: success, 1xx: error, 3xxx: disconnect)
client_recoveries_total{outcome}           counter    subscribes that asked for recovery:
                                                      recovered, not_recovered
client_bytes_received_total                counter    protocol bytes of client command frames
client_bytes_sent_total                    counter    protocol bytes of the frames written to
                                                      clients (no transport framing)
client_connect_refusals_total{code}        counter    of those, connections that ended after
                                                      the handshake and before a successful
                                                      connect (3000: the client went away)
http_refusals_total{reason}                counter    connections the HTTP/WebSocket core of
                                                      this process refused or dropped:
                                                      http_<status> (an error response, e.g. a
                                                      bad handshake), handshake_timeout,
                                                      close_timeout (our close frame got no
                                                      answer), handler_failed (1011)
broker_errors_total{op}                    counter    failed broker/presence operations
recovery_reads_total                       counter    history reads made for subscribes
                                                      (positioning and recovery)
recovery_reads_merged_total                counter    subscribes served by another one's
                                                      history read (single flight): reads saved
command_drains_deferred_total              counter    sessions whose commands waited for a
                                                      later loop iteration (a storm, or saturation)
broker_publish_duration_seconds            histogram  broker publish calls (node.publish)
history_read_duration_seconds              histogram  history reads of the API and clients
api_requests_total{method,status}          counter    server API requests by method and HTTP status
api_request_errors_total{method,code}      counter    errors reported in the answer, by code
api_request_duration_seconds{method}       histogram  server API request durations
delivery_latency_seconds                   histogram  publication time (``Publication.time``,
                                                      set by the broker) to its write to the
                                                      subscribers' connections, once per
                                                      publication per node
event_loop_lag_seconds                     histogram  how late a timer due every 0.1 s fired:
                                                      the event loop's delay of all it runs
                                                      (``rtcore serve``; see loop_monitor)
gc_pause_seconds{generation}               histogram  the cycle collector's collections by
                                                      generation (2: full)
=========================================  =========  ===========================================

Process metrics (``process_*``, ``python_*``) come from prometheus_client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from rtcore import fanout, frames
from rtcore._version import __version__
from rtcore.engine.stats import Histogram
from rtcore.protocol.codes import SLOW
from rtcore.server.loop_monitor import LoopMonitor, current_monitor
from rtcore.transports.http_server import live_servers


if TYPE_CHECKING:
    from rtcore.engine.node import Node
    from rtcore.server.api.endpoint import ApiStats
    from rtcore.transports.http_server import HttpResponseWriter
    from rtcore.wire.http import Request


__all__ = ["DeliveryLatency", "NodeCollector", "MetricsEndpoint", "make_registry"]


class DeliveryLatency(Histogram):
    """A latency histogram fed once per delivered publication.

    :meth:`after_flush` is called by the node when a publication has been
    queued for this node's subscribers. The writers flush in a loop callback
    scheduled for this tick; this recorder schedules its own callback after
    it, so the time measured runs from ``Publication.time`` (unix ms, set by
    the broker when the publication was accepted) to the moment the frames
    were handed to the connections. Publications of one tick share one
    callback.
    """

    __slots__ = ("_pending", "_scheduled")

    def __init__(self) -> None:
        super().__init__()
        self._pending: list[int] = []
        self._scheduled = False

    def after_flush(self, published_ms: int) -> None:
        """Record the latency of a publication once this tick's writes are done."""
        self._pending.append(published_ms)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._observe_pending)

    def _observe_pending(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        now_ms = time.time() * 1000.0
        for published in pending:
            # Clocks of different nodes may disagree slightly: never negative.
            self.observe(max(0.0, now_ms - published) / 1000.0)


class NodeCollector(Collector):
    """Reads a node's counters at scrape time (see the module doc for the metrics)."""

    def __init__(self, node: Node, api_stats: ApiStats | None = None) -> None:
        self.node = node
        self.api_stats = api_stats
        if node.delivery_latency is None:
            node.delivery_latency = DeliveryLatency()

    def describe(self) -> Iterable[Metric]:
        # Names are fixed; an empty description keeps registration from scraping.
        return []

    def collect(self) -> Iterator[Metric]:
        node = self.node
        hub = node.hub
        info = GaugeMetricFamily(
            "rtcore_build_info",
            "rtcore version and live implementations (value 1).",
            labels=["version", "frame_core", "fanout"],
        )
        info.add_metric([__version__, frames.IMPLEMENTATION, fanout.IMPLEMENTATION], 1)
        yield info
        # Tells apart the answers of the workers behind one port.
        node_info = GaugeMetricFamily(
            "rtcore_node_info", "This process's node id (value 1).", labels=["node"]
        )
        node_info.add_metric([node.id], 1)
        yield node_info
        yield GaugeMetricFamily(
            "rtcore_engine_up",
            "1 while the engine (broker, presence) can serve, 0 while it cannot.",
            value=0 if node.engine_problem() else 1,
        )
        yield GaugeMetricFamily(
            "rtcore_node_uptime_seconds",
            "Seconds since the node was created.",
            value=max(0.0, time.time() - node.started_at),
        )
        yield GaugeMetricFamily(
            "rtcore_node_num_clients", "Connected clients on this node.", value=hub.num_sessions
        )
        yield GaugeMetricFamily(
            "rtcore_node_num_users", "Distinct users connected to this node.", value=hub.num_users
        )
        yield GaugeMetricFamily(
            "rtcore_node_num_channels",
            "Channels with subscribers on this node.",
            value=hub.num_channels,
        )
        yield GaugeMetricFamily(
            "rtcore_node_num_subscriptions",
            "Client subscriptions on this node.",
            value=hub.num_subscriptions,
        )
        yield CounterMetricFamily(
            "rtcore_node_publications",
            "Publications accepted by this node (API and clients).",
            value=node.publications_in,
        )
        yield _by_label(
            "rtcore_node_messages_sent",
            "Messages this node sent to the broker, by type.",
            "type",
            node.messages_sent,
        )
        yield _by_label(
            "rtcore_node_messages_received",
            "Messages this node received from the broker, by type.",
            "type",
            node.messages_received,
        )
        messages = node.client_messages_sent
        frames_sent = node.client_frames_sent
        received = node.stats.bytes_received
        sent = node.stats.bytes_sent
        queued = 0
        for session in hub.sessions():
            writer = session.writer
            messages += writer.messages_sent
            frames_sent += writer.frames_sent
            sent += writer.bytes_sent
            queued += writer.queued_bytes
            received += session.bytes_received
        yield CounterMetricFamily(
            "rtcore_client_messages_sent",
            "Protocol messages written to client connections.",
            value=messages,
        )
        yield CounterMetricFamily(
            "rtcore_client_frames_sent",
            "Transport frames written to client connections.",
            value=frames_sent,
        )
        yield GaugeMetricFamily(
            "rtcore_client_write_queue_bytes", "Bytes waiting in client write queues.", value=queued
        )
        yield CounterMetricFamily(
            "rtcore_client_bytes_received",
            "Protocol bytes of the command frames received from clients.",
            value=received,
        )
        yield CounterMetricFamily(
            "rtcore_client_bytes_sent",
            "Protocol bytes of the frames written to clients (without transport framing).",
            value=sent,
        )
        yield CounterMetricFamily(
            "rtcore_client_slow_disconnects",
            "Clients disconnected because their write queue overflowed (3008 slow).",
            value=node.disconnects.get(SLOW.code, 0),
        )
        stats = node.stats
        yield _by_labels(
            "rtcore_client_connects",
            "Successful client connects by transport.",
            ["transport"],
            {(t,): n for t, n in sorted(stats.connects.items())},
        )
        yield _by_labels(
            "rtcore_client_disconnects",
            "Client disconnects by transport and code.",
            ["transport", "code"],
            {(t, str(code)): n for (t, code), n in sorted(stats.disconnects.items())},
        )
        yield _by_labels(
            "rtcore_client_commands",
            "Client commands by method and result code (0 success, 1xx error, 3xxx disconnect).",
            ["method", "code"],
            {(m, str(code)): n for (m, code), n in sorted(stats.commands.items())},
        )
        yield _by_labels(
            "rtcore_client_recoveries",
            "Subscribes that asked for recovery, by outcome (recovered, not_recovered).",
            ["outcome"],
            {(outcome,): n for outcome, n in stats.recoveries.items()},
        )
        yield _by_label(
            "rtcore_client_connect_refusals",
            "Connections closed after the handshake, before a successful connect, by code.",
            "code",
            {str(code): n for code, n in sorted(node.connect_refusals.items())},
        )
        yield _by_label(
            "rtcore_broker_errors",
            "Failed broker and presence operations, by operation.",
            "op",
            dict(sorted(node.broker_errors.items())),
        )
        yield CounterMetricFamily(
            "rtcore_recovery_reads",
            "History reads made for subscribes (positioning and recovery).",
            value=node.recovery_reads,
        )
        yield CounterMetricFamily(
            "rtcore_recovery_reads_merged",
            "Subscribes served by another subscribe's history read (reads saved).",
            value=node.recovery_reads_saved,
        )
        yield CounterMetricFamily(
            "rtcore_command_drains_deferred",
            "Sessions whose commands waited for a later loop iteration (more sessions "
            "had commands ready in one iteration than it starts).",
            value=node.drain_scheduler.deferred,
        )
        latency: DeliveryLatency | None = node.delivery_latency
        if latency is not None:
            yield _histogram(
                "rtcore_delivery_latency_seconds",
                "Publication time to its write to this node's subscribers (once per publication).",
                latency,
            )
        yield _histogram(
            "rtcore_broker_publish_duration_seconds",
            "Duration of broker publish calls (a publication into the broker and its history).",
            stats.broker_publish,
        )
        yield _histogram(
            "rtcore_history_read_duration_seconds",
            "Duration of history reads of the server API and of clients' history commands.",
            stats.history_read,
        )
        refusals: dict[str, int] = {}
        for server in list(live_servers):
            for reason, count in server.refusals.items():
                refusals[reason] = refusals.get(reason, 0) + count
        yield _by_label(
            "rtcore_http_refusals",
            "Connections the HTTP/WebSocket core refused or dropped, by reason.",
            "reason",
            dict(sorted(refusals.items())),
        )
        if self.api_stats is not None:
            yield from _api_metrics(self.api_stats)
        monitor = current_monitor()
        if monitor is not None:
            yield from _loop_metrics(monitor)


def _loop_metrics(monitor: LoopMonitor) -> Iterator[Metric]:
    yield _histogram(
        "rtcore_event_loop_lag_seconds",
        "How late a timer due every "
        f"{monitor.interval:g} s fired: the event loop's delay of everything it runs.",
        monitor.lag,
    )
    yield _histograms_by_label(
        "rtcore_gc_pause_seconds",
        "Duration of the cycle collector's collections, by generation (2: full).",
        "generation",
        {str(generation): hist for generation, hist in enumerate(monitor.gc_pauses)},
    )


def _api_metrics(api: ApiStats) -> Iterator[Metric]:
    yield _by_labels(
        "rtcore_api_requests",
        "Server API requests by method and HTTP status.",
        ["method", "status"],
        {(m, str(status)): n for (m, status), n in sorted(api.requests.items())},
    )
    yield _by_labels(
        "rtcore_api_request_errors",
        "Errors the server API reported in its answers, by method and error code.",
        ["method", "code"],
        {(m, str(code)): n for (m, code), n in sorted(api.errors.items())},
    )
    yield _histograms_by_label(
        "rtcore_api_request_duration_seconds",
        "Duration of server API requests by method.",
        "method",
        dict(sorted(api.durations.items())),
    )


def _histogram(name: str, doc: str, hist: Histogram) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc)
    family.add_metric([], hist.cumulative(), sum_value=hist.sum)
    return family


def _histograms_by_label(
    name: str, doc: str, label: str, hists: dict[str, Histogram]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=[label])
    for value, hist in hists.items():
        family.add_metric([value], hist.cumulative(), sum_value=hist.sum)
    return family


def _by_labels(
    name: str, doc: str, labels: list[str], values: dict[tuple[str, ...], int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in values.items():
        family.add_metric(list(key), value)
    return family


def _by_label(name: str, doc: str, label: str, values: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in values.items():
        family.add_metric([key], value)
    return family


def make_registry(
    node: Node, *, process: bool = True, api_stats: ApiStats | None = None
) -> CollectorRegistry:
    """A registry with the node's collector (and the process/platform/GC collectors).

    ``api_stats``: the server API's counts (``ServerApi.stats``), when the API is served.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node, api_stats))
    if process:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    return registry


class MetricsEndpoint:
    """The ``/metrics`` HTTP handler (Prometheus text format, OpenMetrics by ``Accept``)."""

    def __init__(
        self,
        node: Node,
        registry: CollectorRegistry | None = None,
        *,
        api_stats: ApiStats | None = None,
    ) -> None:
        self.node = node
        self.registry = (
            registry if registry is not None else make_registry(node, api_stats=api_stats)
        )

    def __call__(self, request: Request, response: HttpResponseWriter) -> None:
        if request.method not in ("GET", "HEAD"):
            response.send(
                405,
                [("Content-Type", "text/plain; charset=utf-8"), ("Allow", "GET, HEAD")],
                b"method not allowed: /metrics takes GET\n",
            )
            return
        # Prometheus text 0.0.4 by default; OpenMetrics or text 1.0.0 when asked for.
        encode, content_type = choose_encoder(request.header("accept") or "")
        body = encode(self.registry)
        headers: list[tuple[str, str]] = [("Content-Type", content_type)]
        if request.method == "HEAD":
            response.send(200, [*headers, ("Content-Length", str(len(body)))], b"")
            return
        response.send(200, headers, body)
