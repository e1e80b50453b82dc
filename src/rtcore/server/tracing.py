"""OpenTelemetry spans, with the ``otel`` extra (``pip install 'rtcore[otel]'``).

rtcore depends on the OpenTelemetry *API* only. The application (or
``opentelemetry-instrument rtcore serve`` from opentelemetry-distro, configured
by the ``OTEL_*`` environment variables) sets up the SDK, its exporter and the
global tracer provider. :func:`install`, called when the server edge starts a
node (``rtcore.server.app.start_node``: ``rtcore serve``, ``rtcore.serve``, the
ASGI app), then puts an OpenTelemetry tracer in the engine's seam
(:mod:`rtcore.engine.tracing`).
Without the API, or without a configured provider, nothing is installed and
the engine keeps its no-op path.

Spans (all with the ``rtcore.`` prefix):

=========================  ========  ===============================================
name                       kind      around
=========================  ========  ===============================================
``rtcore.api <method>``    server    one server API request (``rtcore.api.method``,
                                     ``http.response.status_code``)
``rtcore.connect``         server    a client's connect command (``rtcore.transport``,
                                     ``rtcore.client``)
``rtcore.subscribe``       server    a client's subscribe command (``rtcore.channel``,
                                     ``rtcore.user``)
``rtcore.publish``         server    a client's publish command
``rtcore.broker.publish``  producer  the publication into the broker (and its history)
``rtcore.fanout``          consumer  the delivery to this node's subscribers
                                     (``rtcore.subscribers``)
=========================  ========  ===============================================

A server API publish gives ``rtcore.api publish`` → ``rtcore.broker.publish``
→ ``rtcore.fanout`` when the broker delivers in the same task (the memory
engine); with Redis or NATS the fan-out runs when the broker's message
arrives, as a trace of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

from rtcore._version import __version__
from rtcore.engine import tracing


__all__ = ["OpenTelemetryTracer", "install", "installed", "uninstall"]

logger = logging.getLogger("rtcore.server.tracing")

#: Span kinds by name; every other span is a server span.
_PRODUCER = "rtcore.broker.publish"
_CONSUMER = "rtcore.fanout"


class OpenTelemetryTracer:
    """The engine's :class:`~rtcore.engine.tracing.Tracer` over an OpenTelemetry tracer."""

    def __init__(self, tracer: Any) -> None:
        from opentelemetry.trace import SpanKind

        self._tracer = tracer
        self._kinds = {_PRODUCER: SpanKind.PRODUCER, _CONSUMER: SpanKind.CONSUMER}
        self._server = SpanKind.SERVER

    def span(
        self, name: str, attributes: Mapping[str, str | int | float | bool]
    ) -> AbstractContextManager[Any]:
        """A span that is current while the block runs; an exception marks it failed."""
        kind = self._kinds.get(name, self._server)
        cm: AbstractContextManager[Any] = self._tracer.start_as_current_span(
            name, kind=kind, attributes=dict(attributes)
        )
        return cm


def _configured_provider() -> Any:
    """The global tracer provider, or None while none is configured (or no API)."""
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    provider = trace.get_tracer_provider()
    # The API's defaults: a proxy until something is set, or the explicit no-op.
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    return provider


def install(provider: Any = None) -> bool:
    """Trace with OpenTelemetry when it can; returns whether spans are now made.

    Args:
        provider: a ``TracerProvider``; None: the global one, when one is
            configured. Without the OpenTelemetry API this returns False.
    """
    if provider is None:
        provider = _configured_provider()
        if provider is None:
            return False
    tracer = provider.get_tracer("rtcore", __version__)
    if tracing.set_tracer(OpenTelemetryTracer(tracer)) is None:
        logger.info("OpenTelemetry tracing on (%s)", type(provider).__name__)
    return True


def uninstall() -> None:
    """Stop tracing: the engine goes back to its no-op path."""
    tracing.set_tracer(None)


def installed() -> bool:
    """Whether a tracer is installed."""
    return tracing.tracer is not None
