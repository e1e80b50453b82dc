"""What the nodes sharing a broker know of each other: node info and surveys.

The server API's ``info`` and ``channels`` answer for the whole cluster, as
Centrifugo's do. Two mechanisms, both carried by the broker's control
messages (so they work over Redis and NATS alike):

* **Node info.** Every node publishes its counters (clients, users,
  channels, subscriptions, uptime) every :data:`INFO_INTERVAL` seconds;
  every node keeps the latest info of each node it heard from within
  :data:`INFO_MAX_AGE` seconds. ``info`` lists them.
* **Surveys.** ``channels`` asks every node for its channels and their
  subscriber counts (a list too large to publish periodically): the asking
  node publishes a survey request, every node answers it with a reply
  addressed to the asker, and the asker waits until every node it knows of
  answered, or :data:`SURVEY_TIMEOUT` seconds.

These messages start with the byte :data:`CLUSTER_MARK` followed by a
msgpack map; the node's other control messages are msgpack maps, whose
first byte is never that one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import msgpack


if TYPE_CHECKING:
    from rtcore.engine.node import Node


__all__ = [
    "CLUSTER_MARK",
    "INFO_INTERVAL",
    "INFO_MAX_AGE",
    "SURVEY_TIMEOUT",
    "Cluster",
    "merge_channels",
]

logger = logging.getLogger("rtcore.engine.cluster")

#: First byte of a cluster message (msgpack maps start with 0x80-0x8f, 0xde or 0xdf).
CLUSTER_MARK: Final = b"\x01"
#: Seconds between two node info messages of a node (Centrifuge: 3 s).
INFO_INTERVAL: Final = 3.0
#: A node not heard from for this long is dropped from the list (Centrifuge: 7 s).
INFO_MAX_AGE: Final = 2 * INFO_INTERVAL + 1.0
#: Longest wait for the answers to a survey.
SURVEY_TIMEOUT: Final = 5.0


def merge_channels(replies: list[dict[str, int]]) -> dict[str, int]:
    """Sum the per-node channel counts of a ``channels`` survey."""
    total: dict[str, int] = {}
    for reply in replies:
        for channel, count in reply.items():
            total[channel] = total.get(channel, 0) + count
    return total


class _Survey:
    __slots__ = ("expected", "replies", "done")

    def __init__(self, expected: set[str]) -> None:
        self.expected = expected
        self.replies: dict[str, Any] = {}
        self.done = asyncio.get_running_loop().create_future()


class Cluster:
    """A node's view of the cluster (see the module docstring).

    Args:
        node: the node; its broker carries the messages.
        clock: monotonic seconds.
    """

    def __init__(self, node: Node, clock: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        self._clock = clock
        # uid -> (monotonic time heard, info)
        self._nodes: dict[str, tuple[float, dict[str, Any]]] = {}
        self._surveys: dict[int, _Survey] = {}
        self._last_survey = 0
        self._task: asyncio.Task[None] | None = None
        # Survey operations answered here: op -> function of the request's data.
        self.answers: dict[str, Callable[[Any], Any]] = {"channels": self._local_channels}

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Publish this node's info now and every INFO_INTERVAL seconds."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._publish_info())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _publish_info(self) -> None:
        while True:
            try:
                await self._send({"op": "info", "info": self.node.info()})
            except Exception as exc:  # noqa: BLE001 - the broker is down: try again later
                logger.warning("node info not published: %s", exc)
            await asyncio.sleep(INFO_INTERVAL)

    async def _send(self, msg: dict[str, Any]) -> None:
        msg["from"] = self.node.id
        await self.node.broker.publish_control(CLUSTER_MARK + msgpack.packb(msg))

    # -- receiving -----------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """A cluster message from the broker (every node gets every one)."""
        try:
            msg = msgpack.unpackb(data[1:])
            op = msg["op"]
            sender = str(msg["from"])
            if op == "info":
                self._nodes[sender] = (self._clock(), dict(msg["info"]))
            elif op == "survey":
                self._answer(sender, msg)
            elif op == "reply":
                if msg.get("to") == self.node.id:
                    self._reply(sender, msg)
            else:
                logger.warning("unknown cluster message %r ignored", op)
        except Exception:  # noqa: BLE001
            logger.exception("bad cluster message")

    def _answer(self, sender: str, msg: dict[str, Any]) -> None:
        answer = self.answers.get(str(msg.get("survey")))
        reply = {"op": "reply", "to": sender, "id": msg["id"]}
        if answer is None:
            reply["error"] = "unknown survey"
        else:
            reply["data"] = answer(msg.get("data"))
        self.node.spawn(self._send(reply))

    def _reply(self, sender: str, msg: dict[str, Any]) -> None:
        survey = self._surveys.get(int(msg["id"]))
        if survey is None:
            return  # too late: the survey timed out
        survey.replies[sender] = msg.get("data") if "error" not in msg else None
        if survey.expected <= survey.replies.keys() and not survey.done.done():
            survey.done.set_result(None)

    # -- what the API asks ---------------------------------------------------

    def nodes(self) -> list[dict[str, Any]]:
        """The info of every live node, this one first (its info is current)."""
        now = self._clock()
        me = self.node.id
        for uid, (seen, _) in list(self._nodes.items()):
            if now - seen > INFO_MAX_AGE:
                del self._nodes[uid]
        others = sorted(
            (info for uid, (_, info) in self._nodes.items() if uid != me),
            key=lambda info: str(info.get("uid", "")),
        )
        return [self.node.info(), *others]

    async def survey(self, op: str, data: Any = None, timeout: float = SURVEY_TIMEOUT) -> list[Any]:
        """Ask every node (this one included) ``op``; their answers, in no order.

        Waits until every node heard from within INFO_MAX_AGE answered or
        ``timeout`` seconds; a node that answered with an error (an old
        version that does not know ``op``) is left out. Without a cluster
        (the memory broker) only this node answers, without a message.
        """
        answer = self.answers[op]
        if not self.node.clustered:
            return [answer(data)]
        self._last_survey += 1
        sid = self._last_survey
        survey = self._surveys[sid] = _Survey({info["uid"] for info in self.nodes()})
        try:
            await self._send({"op": "survey", "survey": op, "id": sid, "data": data})
            try:
                async with asyncio.timeout(timeout):
                    await survey.done
            except TimeoutError:
                missing = survey.expected - survey.replies.keys()
                logger.warning(
                    "survey %s: no answer from %d node(s) within %.1fs: %s",
                    op,
                    len(missing),
                    timeout,
                    ", ".join(sorted(missing)),
                )
        finally:
            del self._surveys[sid]
        return [r for r in survey.replies.values() if r is not None]

    def _local_channels(self, _: Any) -> dict[str, int]:
        hub = self.node.hub
        return {channel: hub.num_subscribers(channel) for channel in hub.channels()}
