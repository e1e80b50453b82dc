"""Configuration of the consumers: server API commands read from durable sources.

The consumers themselves are rtcore.server.consumers (docs/consumers.md). The
keys follow Centrifugo v6's ``consumers`` section: a list of named consumers,
each with a ``type`` and a table of that type's options.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from rtcore.config.fields import _duration, _err, _f
from rtcore.errors import ConfigError


#: The consumer types rtcore implements.
CONSUMER_TYPES = ("postgresql", "redis_stream", "nats_jetstream")

_CONSUMER_NAME_RE = re.compile(r"^[-a-zA-Z0-9_.]{1,64}$")
# A PostgreSQL identifier, optionally schema-qualified: it is written into SQL.
_SQL_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")
# A LISTEN channel is an identifier too.
_SQL_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


@dataclass(slots=True)
class PostgresConsumerConfig:
    """An outbox table in PostgreSQL (``type = "postgresql"``)."""

    dsn: str = _f("", "libpq connection string or URL, e.g. postgresql://user:pw@host:5432/db.")
    outbox_table_name: str = _f(
        "", "The outbox table (id, method, payload, partition, created_at); schema.table allowed."
    )
    num_partitions: int = _f(
        1, "Partitions 0..N-1, each read in order by its own task (parallel across partitions)."
    )
    partition_select_limit: int = _f(100, "Rows read (and locked) per batch of one partition.")
    partition_poll_interval: float = _duration(
        0.3, "How often an idle partition looks for new rows (a NOTIFY wakes it sooner)."
    )
    partition_notification_channel: str = _f(
        "", "LISTEN channel whose NOTIFY payload is a partition number (empty: polling only)."
    )

    def _problems(self, path: str) -> Iterator[ConfigError]:
        if not self.dsn:
            yield _err(path, "dsn", "is required")
        if not _SQL_NAME_RE.match(self.outbox_table_name):
            yield _err(
                path,
                "outbox_table_name",
                f"must be a table name (letters, digits, _; optionally schema.table), "
                f"got {self.outbox_table_name!r}",
            )
        if not 1 <= self.num_partitions <= 1024:
            yield _err(path, "num_partitions", "must be within 1..1024")
        if not 1 <= self.partition_select_limit <= 10000:
            yield _err(path, "partition_select_limit", "must be within 1..10000")
        if self.partition_poll_interval <= 0:
            yield _err(path, "partition_poll_interval", "must be > 0")
        channel = self.partition_notification_channel
        if channel and not _SQL_IDENT_RE.match(channel):
            yield _err(
                path,
                "partition_notification_channel",
                f"must be an identifier (letters, digits, _), got {channel!r}",
            )


@dataclass(slots=True)
class RedisStreamConsumerConfig:
    """Redis streams read through a consumer group (``type = "redis_stream"``)."""

    address: str = _f("redis://127.0.0.1:6379", "Redis URL (as engine.redis_address).")
    streams: list[str] = _f([], "Stream keys to read.")
    consumer_group: str = _f("", "Consumer group (created at the end of the stream if missing).")
    visibility_timeout: float = _duration(
        30.0, "A delivered entry not acknowledged within this time is claimed again."
    )
    num_workers: int = _f(1, "Readers per stream; entries of one stream stay in order only with 1.")
    payload_value: str = _f("payload", "Entry field holding the command's JSON parameters.")
    method_value: str = _f("method", "Entry field holding the command's method.")

    def _problems(self, path: str) -> Iterator[ConfigError]:
        if not self.address:
            yield _err(path, "address", "is required")
        if not self.streams or any(not s for s in self.streams):
            yield _err(path, "streams", "must list at least one stream, none empty")
        if not self.consumer_group:
            yield _err(path, "consumer_group", "is required")
        if self.visibility_timeout <= 0:
            yield _err(path, "visibility_timeout", "must be > 0")
        if not 1 <= self.num_workers <= 64:
            yield _err(path, "num_workers", "must be within 1..64")
        if not self.payload_value:
            yield _err(path, "payload_value", "must not be empty")
        if not self.method_value:
            yield _err(path, "method_value", "must not be empty")


@dataclass(slots=True)
class NatsJetStreamConsumerConfig:
    """A durable pull consumer on a NATS JetStream stream (``type = "nats_jetstream"``)."""

    url: str = _f("nats://127.0.0.1:4222", "NATS URL(s), comma-separated.")
    stream_name: str = _f("", "The JetStream stream (it must exist).")
    subjects: list[str] = _f([], "Subjects to consume (a filter within the stream; empty: all).")
    durable_consumer_name: str = _f(
        "", "Durable consumer; created if missing, shared by every node of the deployment."
    )
    method_header: str = _f(
        "",
        "Header holding the method (the message is then the parameters); empty: the message "
        'is {"method": ..., "payload": {...}}.',
    )
    max_ack_pending: int = _f(
        1, "Messages delivered but not yet acknowledged; 1 keeps the stream's order."
    )
    ack_wait: float = _duration(30.0, "An unacknowledged message is redelivered after this time.")

    def _problems(self, path: str) -> Iterator[ConfigError]:
        if not self.url:
            yield _err(path, "url", "is required")
        if not self.stream_name:
            yield _err(path, "stream_name", "is required")
        if not self.durable_consumer_name:
            yield _err(path, "durable_consumer_name", "is required")
        if any(not s for s in self.subjects):
            yield _err(path, "subjects", "must not contain an empty subject")
        if not 1 <= self.max_ack_pending <= 10000:
            yield _err(path, "max_ack_pending", "must be within 1..10000")
        if self.ack_wait <= 0:
            yield _err(path, "ack_wait", "must be > 0")


@dataclass(slots=True)
class ConsumerConfig:
    """One consumer: reads server API commands from a durable source (docs/consumers.md)."""

    name: str = _f("", "Unique name (letters, digits, -, _, .), used in logs and metrics.")
    enabled: bool = _f(False, "Run this consumer.")
    type: str = _f("", "'postgresql', 'redis_stream' or 'nats_jetstream'.")
    postgresql: PostgresConsumerConfig = field(
        default_factory=PostgresConsumerConfig,
        metadata={"doc": "Options of a postgresql consumer."},
    )
    redis_stream: RedisStreamConsumerConfig = field(
        default_factory=RedisStreamConsumerConfig,
        metadata={"doc": "Options of a redis_stream consumer."},
    )
    nats_jetstream: NatsJetStreamConsumerConfig = field(
        default_factory=NatsJetStreamConsumerConfig,
        metadata={"doc": "Options of a nats_jetstream consumer."},
    )

    def _problems(self, path: str) -> Iterator[ConfigError]:
        if not _CONSUMER_NAME_RE.match(self.name):
            yield _err(
                path, "name", f"invalid consumer name {self.name!r} (1-64 of letters, digits, -_.)"
            )
        if self.type not in CONSUMER_TYPES:
            yield _err(path, "type", f"must be one of {', '.join(CONSUMER_TYPES)}")
        elif self.enabled:
            # Only the options of the chosen type are checked (and used).
            yield from getattr(self, self.type)._problems(f"{path}.{self.type}")


def consumer_problems(consumers: list[ConsumerConfig]) -> Iterator[ConfigError]:
    """Problems of the ``consumers`` list: each consumer's, and duplicate names."""
    seen: set[str] = set()
    for i, consumer in enumerate(consumers):
        path = f"consumers[{i}]"
        yield from consumer._problems(path)
        if consumer.name in seen:
            yield _err(path, "name", f"duplicate consumer name {consumer.name!r}")
        seen.add(consumer.name)
