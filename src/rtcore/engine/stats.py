"""Plain counters of the engine that the metrics read at scrape time.

Nothing here calls Prometheus: a :class:`Histogram` is a list of bucket counts
and a sum, changed once per observation (a publication, a history read), and
``rtcore.server.metrics`` turns it into a Prometheus histogram when scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import ClassVar


__all__ = ["Histogram", "NodeStats"]


class Histogram:
    """Observations of a duration in seconds, counted in fixed buckets."""

    #: Upper bounds (seconds) of the buckets; +Inf is implied.
    BUCKETS: ClassVar[tuple[float, ...]] = (
        0.0005,
        0.001,
        0.0025,
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1.0,
        2.5,
        5.0,
    )

    __slots__ = ("counts", "sum", "count")

    def __init__(self) -> None:
        # counts[i]: observations in (BUCKETS[i-1], BUCKETS[i]]; the last one is +Inf.
        self.counts = [0] * (len(self.BUCKETS) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.BUCKETS, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, cumulative count)`` pairs as Prometheus expects, ending with +Inf."""
        out = []
        total = 0
        for bound, n in zip((*self.BUCKETS, float("inf")), self.counts, strict=True):
            total += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), total))
        return out


class NodeStats:
    """A node's counters of commands, connections, recovery and its backends' latency.

    Each changes once per command, per session, per subscribe or per
    publication (never per subscriber); live sessions' byte counts are added
    at scrape time.
    """

    __slots__ = (
        "commands",
        "connects",
        "disconnects",
        "recoveries",
        "broker_publish",
        "history_read",
        "bytes_received",
        "bytes_sent",
    )

    def __init__(self) -> None:
        #: (command method, result code) -> count; code 0 is success, 1xx a
        #: client error, 3xxx the disconnect the command caused.
        self.commands: dict[tuple[str, int], int] = {}
        #: transport name -> successful connects.
        self.connects: dict[str, int] = {}
        #: (transport name, disconnect code) -> sessions ended.
        self.disconnects: dict[tuple[str, int], int] = {}
        #: Subscribes that asked for recovery: "recovered" / "not_recovered".
        self.recoveries: dict[str, int] = {"recovered": 0, "not_recovered": 0}
        #: Broker publish calls and history reads (API, client and subscribe reads).
        self.broker_publish = Histogram()
        self.history_read = Histogram()
        #: Protocol bytes received from and sent to clients by sessions already closed.
        self.bytes_received = 0
        self.bytes_sent = 0

    def count_command(self, method: str, code: int) -> None:
        key = (method, code)
        commands = self.commands
        commands[key] = commands.get(key, 0) + 1
