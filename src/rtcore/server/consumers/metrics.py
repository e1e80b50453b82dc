"""Consumer metrics, collected when Prometheus scrapes.

=====================================  =======  =============================================
name                                   type     meaning
=====================================  =======  =============================================
rtcore_consumer_processed_total        counter  commands applied, by consumer
rtcore_consumer_errors_total{kind}     counter  ``retry``: a command the node could not apply
                                                yet (retried); ``dropped``: a message that can
                                                never apply (logged, acknowledged);
                                                ``source``: failures talking to the source
rtcore_consumer_lag_seconds            gauge    age of the latest message when it was applied
                                                (now minus its creation time at the source)
=====================================  =======  =============================================
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


__all__ = ["ConsumerCollector", "ConsumerStats"]


class ConsumerStats:
    """One consumer's counters (plain numbers; read at scrape time)."""

    __slots__ = ("name", "processed", "errors", "lag")

    def __init__(self, name: str) -> None:
        self.name = name
        self.processed = 0
        self.errors: dict[str, int] = {"retry": 0, "dropped": 0, "source": 0}
        self.lag = 0.0

    def count_error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def observe_created(self, created: float) -> None:
        """The message being applied was created at unix time ``created``."""
        self.lag = max(0.0, time.time() - created)


class ConsumerCollector(Collector):
    """The metrics of a set of consumers."""

    def __init__(self, stats: Iterable[ConsumerStats]) -> None:
        self.stats = list(stats)

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        processed = CounterMetricFamily(
            "rtcore_consumer_processed", "Commands applied by consumers.", labels=["consumer"]
        )
        errors = CounterMetricFamily(
            "rtcore_consumer_errors",
            "Consumer errors: retry (not applied yet), dropped (never applies), source.",
            labels=["consumer", "kind"],
        )
        lag = GaugeMetricFamily(
            "rtcore_consumer_lag_seconds",
            "Age of the latest message a consumer applied, when it applied it.",
            labels=["consumer"],
        )
        for s in self.stats:
            processed.add_metric([s.name], s.processed)
            for kind, count in s.errors.items():
                errors.add_metric([s.name, kind], count)
            lag.add_metric([s.name], s.lag)
        yield processed
        yield errors
        yield lag
