"""The NATS JetStream consumer (``type = "nats_jetstream"``, ``pip install 'rtcore[nats]'``).

A durable pull consumer on an existing stream: created with explicit
acknowledgements when missing, shared by every node of the deployment (each
message goes to one of them). A message is acknowledged only after its
command was applied (or dropped as one that can never apply); one that is not
acknowledged within ``ack_wait`` is delivered again, to this node or another.
With ``max_ack_pending = 1`` (the default) the server hands out the next
message only after the previous one was acknowledged, so the stream's order
holds across nodes. A redelivered message may have been applied already: the
default idempotency key ``<stream>:<stream sequence>`` keeps it from reaching
clients twice.

The method comes from the header ``method_header`` (the message data is then
the parameters) or, in a message without that header, from the message
itself: ``{"method": "publish", "payload": {...}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from rtcore.errors import HttpError
from rtcore.server.api.rawjson import RAW, parse_json
from rtcore.server.consumers.base import Backoff, Consumer
from rtcore.server.consumers.dispatch import Outcome


try:
    import nats
    from nats import errors as nats_errors
    from nats.js import api as js_api, errors as js_errors
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "the nats_jetstream consumer needs nats-py: pip install 'rtcore[nats]'"
    ) from exc


if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient
    from nats.aio.msg import Msg

    from rtcore.config.consumers import NatsJetStreamConsumerConfig
    from rtcore.server.consumers.dispatch import Dispatcher
    from rtcore.server.consumers.metrics import ConsumerStats


__all__ = ["JetStreamConsumer"]

# Messages fetched per pull, and how long a pull waits when there are none.
_FETCH_TIMEOUT = 1.0


class JetStreamConsumer(Consumer):
    """Applies the commands of a JetStream stream through a durable consumer."""

    def __init__(
        self,
        name: str,
        config: NatsJetStreamConsumerConfig,
        dispatcher: Dispatcher,
        stats: ConsumerStats,
    ) -> None:
        super().__init__(name, dispatcher, stats)
        self.config = config
        self._nc: NatsClient | None = None

    def _run(self) -> None:
        self._spawn(self._read(), "pull")

    async def _close_source(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None:
            try:
                await nc.close()
            except Exception as exc:  # already gone: nothing to release
                self.source_failed("close", exc)

    def _consumer_config(self) -> js_api.ConsumerConfig:
        cfg = self.config
        subjects = list(cfg.subjects)
        return js_api.ConsumerConfig(
            durable_name=cfg.durable_consumer_name,
            ack_policy=js_api.AckPolicy.EXPLICIT,
            deliver_policy=js_api.DeliverPolicy.ALL,
            max_ack_pending=cfg.max_ack_pending,
            ack_wait=cfg.ack_wait,
            filter_subject=subjects[0] if len(subjects) == 1 else None,
            # Several filters need NATS 2.10.
            filter_subjects=subjects if len(subjects) > 1 else None,
        )

    async def _read(self) -> None:
        cfg = self.config
        backoff = Backoff()
        while not self.closing:
            try:
                if self._nc is None or self._nc.is_closed:
                    self._nc = await nats.connect(
                        servers=[u.strip() for u in cfg.url.split(",") if u.strip()],
                        name=f"rtcore consumer {self.name}",
                        max_reconnect_attempts=-1,
                        connect_timeout=2,
                    )
                js = self._nc.jetstream()
                try:
                    await js.consumer_info(cfg.stream_name, cfg.durable_consumer_name)
                except js_errors.NotFoundError:
                    await js.add_consumer(cfg.stream_name, self._consumer_config())
                sub = await js.pull_subscribe_bind(
                    durable=cfg.durable_consumer_name, stream=cfg.stream_name
                )
                backoff.reset()
                while not self.closing:
                    try:
                        msgs = await sub.fetch(cfg.max_ack_pending, timeout=_FETCH_TIMEOUT)
                    except (TimeoutError, nats_errors.TimeoutError):
                        continue
                    for msg in msgs:
                        await self._message(msg)
            except (nats_errors.Error, js_errors.Error, OSError) as exc:
                self.source_failed(f"stream {cfg.stream_name}", exc)
                await backoff.wait()

    async def _message(self, msg: Msg) -> None:
        meta = msg.metadata
        seq = meta.sequence.stream
        ident = f"{self.config.stream_name}#{seq}"
        header = self.config.method_header
        method: str | None = (msg.headers or {}).get(header) if header else None
        payload: Any = msg.data
        if method is None:
            method, payload = _envelope(msg.data)
        if method is None:
            where = f"header {header!r}" if header else '{"method": ..., "payload": ...}'
            outcome = self.dispatcher.reject(ident, f"no method ({where})")
        else:
            try:
                outcome = await self.apply(
                    method, payload, message_id=ident, key=f"{self.config.stream_name}:{seq}"
                )
            except asyncio.CancelledError:
                # Stopping: hand the message to another node now, not after ack_wait.
                with contextlib.suppress(Exception):
                    await msg.nak()
                raise
        if outcome is Outcome.RETRY:
            await msg.nak()  # closing: let another node (or the next run) have it now
            return
        await msg.ack()
        if meta.timestamp is not None:
            self.stats.observe_created(meta.timestamp.timestamp())


def _envelope(data: bytes) -> tuple[str | None, bytes]:
    """``(method, raw payload)`` of ``{"method": ..., "payload": {...}}``; no method if malformed."""
    try:
        value = parse_json(data.decode("utf-8"), {"payload": RAW})
    except (UnicodeDecodeError, HttpError):
        return None, b""
    if type(value) is not dict or type(value.get("method")) is not str:
        return None, b""
    payload = value.get("payload")
    return value["method"], bytes(payload) if payload is not None else b""
