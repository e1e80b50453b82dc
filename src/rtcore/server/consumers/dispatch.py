"""One consumed message becomes one server API command, run by the API's own executor.

The method and its JSON parameters are parsed and validated exactly as
``POST /api/<method>`` does (:mod:`rtcore.server.api.schema`) and run by the
same :class:`~rtcore.server.api.methods.Executor`, so a command behaves and
fails the same whichever way it arrives. What a consumer does next depends
on the outcome:

* ``DONE``: applied; the consumer acknowledges the message.
* ``DROPPED``: it can never succeed (unknown method, malformed parameters, an
  error the node reports for the command itself, such as an unknown
  namespace); logged, counted, acknowledged so it does not block the source.
* ``RETRY``: the node could not apply it now (error 100: the engine is
  unreachable); the consumer keeps the message and tries again after a
  backoff, in order.
"""

from __future__ import annotations

import enum
import logging
from typing import TYPE_CHECKING, Any, Final

from rtcore.errors import HttpError
from rtcore.server.api.errors import ApiError
from rtcore.server.api.methods import Executor
from rtcore.server.api.rawjson import parse_json
from rtcore.server.api.schema import RAW_SPECS, request_params


if TYPE_CHECKING:
    from rtcore.engine.node import Node
    from rtcore.server.consumers.metrics import ConsumerStats


__all__ = ["COMMAND_METHODS", "Dispatcher", "Outcome"]

logger = logging.getLogger("rtcore.server.consumers")

#: Methods a consumer runs: those that change state. Reads (history, presence,
#: channels, info) and rpc have nobody to answer to.
COMMAND_METHODS: Final = (
    "publish",
    "broadcast",
    "subscribe",
    "unsubscribe",
    "disconnect",
    "refresh",
    "history_remove",
)

# Error 100 ("internal"): the engine is unreachable or failed; worth retrying.
_TEMPORARY_CODES: Final = frozenset({100})


class Outcome(enum.Enum):
    DONE = "done"
    DROPPED = "dropped"
    RETRY = "retry"


class Dispatcher:
    """Runs consumed commands against a node and tells the consumer what to do next.

    Args:
        node: the node the commands act on.
        consumer: the consumer's name, for logs.
        stats: where outcomes are counted.
    """

    def __init__(self, node: Node, consumer: str, stats: ConsumerStats) -> None:
        self.executor = Executor(node)
        self.consumer = consumer
        self.stats = stats

    async def dispatch(
        self, method: str, payload: bytes | str, *, message_id: str, default_key: str = ""
    ) -> Outcome:
        """Run ``method`` with the JSON ``payload``.

        ``default_key`` becomes the ``idempotency_key`` of a publish or
        broadcast whose payload names none, so that a redelivered message is
        suppressed by the node instead of reaching clients twice.
        """
        outcome = await self._run(method, payload, message_id, default_key)
        if outcome is Outcome.DONE:
            self.stats.processed += 1
        else:
            self.stats.count_error(outcome.value)
        return outcome

    async def _run(self, method: str, payload: bytes | str, message_id: str, key: str) -> Outcome:
        method = method.strip().lower()
        if method not in COMMAND_METHODS:
            self._drop(message_id, f"method {method!r} is not one of {', '.join(COMMAND_METHODS)}")
            return Outcome.DROPPED
        try:
            text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
            value = parse_json(text, RAW_SPECS[method]) if text.strip() else {}
            params = request_params(method, value, "payload")
        except UnicodeDecodeError:
            self._drop(message_id, "payload is not UTF-8")
            return Outcome.DROPPED
        except HttpError as exc:
            self._drop(message_id, exc.message)
            return Outcome.DROPPED
        if key and method in ("publish", "broadcast") and not params.get("idempotency_key"):
            params["idempotency_key"] = key
        try:
            result = await self.executor.call(method, params)
        except ApiError as exc:
            if exc.code in _TEMPORARY_CODES:
                logger.warning(
                    "consumer %s: %s of message %s failed (%s), retrying",
                    self.consumer,
                    method,
                    message_id,
                    exc.message,
                )
                return Outcome.RETRY
            self._drop(message_id, f"{method}: error {exc.code} {exc.message}")
            return Outcome.DROPPED
        if method == "broadcast":
            return self._broadcast_outcome(result, message_id)
        return Outcome.DONE

    def _broadcast_outcome(self, result: dict[str, Any], message_id: str) -> Outcome:
        """A broadcast with any channel that failed temporarily is retried whole.

        The channels that were published keep their idempotency key, so the
        retry does not publish them again (within the key's lifetime).
        """
        errors = [r["error"] for r in result.get("responses", []) if "error" in r]
        if any(e.get("code") in _TEMPORARY_CODES for e in errors):
            logger.warning(
                "consumer %s: broadcast of message %s failed on some channels, retrying",
                self.consumer,
                message_id,
            )
            return Outcome.RETRY
        for error in errors:
            logger.error(
                "consumer %s: broadcast of message %s: error %s %s on one channel (not retried)",
                self.consumer,
                message_id,
                error.get("code"),
                error.get("message"),
            )
        return Outcome.DONE

    def _drop(self, message_id: str, why: str) -> None:
        logger.error("consumer %s: dropping message %s: %s", self.consumer, message_id, why)

    def reject(self, message_id: str, why: str) -> Outcome:
        """A message that is no command at all (no method): logged, counted, dropped."""
        self._drop(message_id, why)
        self.stats.count_error(Outcome.DROPPED.value)
        return Outcome.DROPPED
