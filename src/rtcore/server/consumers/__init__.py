"""Consumers: server API commands read from durable sources (Centrifugo v6's ``consumers``).

An application that must not lose a real-time event writes it as a server
API command (``publish``, ``broadcast``, ``disconnect``, ...) into a durable
source, often in the same transaction as the change it announces; a consumer
reads it there and applies it through the server API's own executor
(:mod:`rtcore.server.consumers.dispatch`). Delivery is at-least-once: a
message is acknowledged at its source only after its command was applied, so
a crash between the two applies it again, and the publish ``idempotency_key``
(by default one derived from the message's identity at the source) keeps
clients from seeing it twice. Order holds per partition: an outbox
partition, a stream read by one worker, a durable with one message in flight.

* :mod:`~rtcore.server.consumers.postgres`: a PostgreSQL outbox table;
* :mod:`~rtcore.server.consumers.redis_stream`: Redis streams, consumer groups;
* :mod:`~rtcore.server.consumers.jetstream`: NATS JetStream, durable consumers;
* :mod:`~rtcore.server.consumers.metrics`: ``rtcore_consumer_*`` metrics.

``rtcore serve`` starts the enabled consumers of the ``consumers`` list after
the node and stops them first at shutdown. docs/consumers.md is the guide.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rtcore.server.consumers.base import Consumer
from rtcore.server.consumers.dispatch import COMMAND_METHODS, Dispatcher, Outcome
from rtcore.server.consumers.metrics import ConsumerCollector, ConsumerStats


if TYPE_CHECKING:
    from rtcore.config.consumers import ConsumerConfig
    from rtcore.engine.node import Node


__all__ = [
    "COMMAND_METHODS",
    "Consumer",
    "ConsumerCollector",
    "ConsumerStats",
    "Consumers",
    "Dispatcher",
    "Outcome",
    "build_consumer",
]

logger = logging.getLogger("rtcore.server.consumers")


def build_consumer(node: Node, config: ConsumerConfig) -> Consumer:
    """The consumer ``config`` describes, acting on ``node``.

    Raises:
        ImportError: the client library of its source is not installed.
        ValueError: an unknown type.
    """
    stats = ConsumerStats(config.name)
    dispatcher = Dispatcher(node, config.name, stats)
    if config.type == "postgresql":
        from rtcore.server.consumers.postgres import PostgresConsumer

        return PostgresConsumer(config.name, config.postgresql, dispatcher, stats)
    if config.type == "redis_stream":
        from rtcore.server.consumers.redis_stream import RedisStreamConsumer

        return RedisStreamConsumer(
            config.name, config.redis_stream, dispatcher, stats, node_id=_stable_node_id(node)
        )
    if config.type == "nats_jetstream":
        from rtcore.server.consumers.jetstream import JetStreamConsumer

        return JetStreamConsumer(config.name, config.nats_jetstream, dispatcher, stats)
    raise ValueError(f"unknown consumer type {config.type!r}")


def _stable_node_id(node: Node) -> str:
    """This node's name as it stays across restarts (``Node.id`` may not)."""
    name = node.config.client.node_name or socket.gethostname()
    worker = os.environ.get("RTCORE_WORKER_INDEX", "")
    return f"{name}-{worker}" if worker else name


class Consumers:
    """The enabled consumers of a configuration, started and stopped together.

    Args:
        node: the node the commands act on.
        configs: the ``consumers`` list; disabled ones are skipped.
    """

    def __init__(self, node: Node, configs: Sequence[ConsumerConfig]) -> None:
        self.consumers = [build_consumer(node, c) for c in configs if c.enabled]
        self.collector = ConsumerCollector(c.stats for c in self.consumers)

    async def start(self) -> None:
        for consumer in self.consumers:
            await consumer.start()
            logger.info("consumer %s started", consumer.name)

    async def close(self) -> None:
        for consumer in self.consumers:
            await consumer.close()
