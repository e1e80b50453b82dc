"""The engine's tracing seam: spans around publish, fan-out, connect and subscribe.

:data:`tracer` is None unless ``rtcore.server.tracing`` installed one
(OpenTelemetry, when its API is installed and a tracer provider is
configured). Engine code reads it once per operation and, when it is None,
enters the shared :data:`NO_SPAN`; nothing else is built, so tracing off costs
a global lookup per publication or command, never anything per subscriber.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Final, Protocol


__all__ = ["NO_SPAN", "Tracer", "set_tracer", "span", "tracer"]

#: A span's attributes: OpenTelemetry's primitive values.
Attributes = Mapping[str, str | int | float | bool]


class Tracer(Protocol):
    """What the engine needs of a tracer."""

    def span(self, name: str, attributes: Attributes) -> AbstractContextManager[Any]:
        """A context manager around one operation: a child of the current span, if any."""


#: The installed tracer, or None (the no-op path).
tracer: Tracer | None = None

#: The context manager entered when nothing traces (shared, reusable).
NO_SPAN: Final[AbstractContextManager[None]] = nullcontext()


def set_tracer(new: Tracer | None) -> Tracer | None:
    """Install ``new`` (None: stop tracing); returns the tracer it replaces."""
    global tracer
    old, tracer = tracer, new
    return old


def span(name: str, attributes: Attributes) -> AbstractContextManager[Any]:
    """A span of the installed tracer, or :data:`NO_SPAN`.

    For code that is not on a hot path; hot paths test ``tracer`` first so
    that the attributes are not even built when nothing traces.
    """
    current = tracer
    return NO_SPAN if current is None else current.span(name, attributes)
