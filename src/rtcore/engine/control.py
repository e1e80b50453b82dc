"""Control messages between nodes: operations on connections wherever they are.

The server API disconnects, unsubscribes, subscribes and refreshes a user's
connections (or one client's, or one session's) on every node: the node that
gets the call publishes a control message through the broker, and every node,
this one included, applies it to its own sessions. ``/emulation`` requests
travel the same way to the one node that owns the session.

A control message is a msgpack map with its operation ``op`` and the format
version ``v``; a node ignores versions it does not know.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import msgpack

from rtcore.protocol import Push, Refresh, SubscribeRequest, codes
from rtcore.protocol.codes import ClientError, DisconnectError
from rtcore.protocol.types import StreamPosition


if TYPE_CHECKING:
    from rtcore.engine.node import Node
    from rtcore.engine.session import ClientSession


__all__ = ["CONTROL_VERSION", "ControlMessages"]

logger = logging.getLogger("rtcore.engine.control")

CONTROL_VERSION = 1


class ControlMessages:
    """A node's end of the control messages: it sends them and applies those it receives."""

    __slots__ = ("node",)

    def __init__(self, node: Node) -> None:
        self.node = node

    # -- sending -------------------------------------------------------------

    async def send(self, msg: dict[str, Any]) -> None:
        """Publish ``msg`` to every node; raises when the broker cannot publish it."""
        node = self.node
        msg["v"] = CONTROL_VERSION
        try:
            await node.broker.publish_control(msgpack.packb(msg))
        except Exception:
            node.count_broker_error("control")
            raise
        node.messages_sent["control"] += 1

    async def disconnect(
        self,
        user: str,
        *,
        code: int,
        reason: str,
        client: str,
        session: str,
        whitelist: list[str] | None,
    ) -> None:
        await self.send(
            {
                "op": "disconnect",
                "user": user,
                "client": client,
                "session": session,
                "code": code,
                "reason": reason,
                "whitelist": whitelist or [],
            }
        )

    async def unsubscribe(self, user: str, channel: str, *, client: str, session: str) -> None:
        await self.send(
            {
                "op": "unsubscribe",
                "user": user,
                "channel": channel,
                "client": client,
                "session": session,
            }
        )

    async def subscribe(
        self,
        user: str,
        channel: str,
        *,
        client: str,
        session: str,
        info: bytes | None,
        data: bytes | None,
        recover_since: StreamPosition | None,
        override: dict[str, bool] | None,
        expire_at: int,
    ) -> None:
        await self.send(
            {
                "op": "subscribe",
                "user": user,
                "channel": channel,
                "client": client,
                "session": session,
                "info": info,
                "data": data,
                "recover_since": [recover_since.offset, recover_since.epoch]
                if recover_since
                else None,
                "override": dict(override) if override else None,
                "expire_at": expire_at,
            }
        )

    async def refresh(
        self,
        user: str,
        *,
        client: str,
        session: str,
        expired: bool,
        expire_at: int | None,
        info: bytes | None,
    ) -> None:
        await self.send(
            {
                "op": "refresh",
                "user": user,
                "client": client,
                "session": session,
                "expired": expired,
                "expire_at": expire_at,
                "info": info,
            }
        )

    async def emulation(
        self, node: str, session: str, data: bytes, fmt: str, *, limited: bool
    ) -> None:
        msg: dict[str, Any] = {"op": "emulation", "node": node, "session": session, "format": fmt}
        if limited:
            msg["limited"] = True
        else:
            msg["data"] = data
        await self.send(msg)

    # -- receiving -----------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """Apply a control message from the broker; a bad one is logged and dropped."""
        try:
            msg = msgpack.unpackb(data)
            if msg.get("v") != CONTROL_VERSION:
                logger.warning("control message of unknown version %r ignored", msg.get("v"))
                return
            self.apply(msg)
        except Exception:  # noqa: BLE001
            logger.exception("bad control message")

    def apply(self, msg: dict[str, Any]) -> None:
        node = self.node
        op = msg.get("op")
        if op == "emulation":
            # Addressed to one node; every other node drops it.
            if msg.get("node") == node.id:
                handler = node.control_handlers.get("emulation")
                if handler is not None:
                    handler(msg)
            return
        user, client, session_id = (
            msg.get("user", ""),
            msg.get("client", ""),
            msg.get("session", ""),
        )
        targets = self.targets(user, client, session_id)
        if op == "disconnect":
            whitelist = set(msg.get("whitelist") or ())
            d = codes.Disconnect(int(msg["code"]), str(msg["reason"]))
            for s in targets:
                if s.client_id not in whitelist:
                    s.disconnect(d)
        elif op == "unsubscribe":
            for s in targets:
                # An empty channel unsubscribes from every channel.
                channels = [msg["channel"]] if msg["channel"] else list(s.subscriptions)
                for channel in channels:
                    node.spawn(node.unsubscribe_session(s, channel, codes.UNSUBSCRIBE_SERVER))
        elif op == "subscribe":
            for s in targets:
                req = SubscribeRequest(channel=msg["channel"])
                if msg.get("recover_since"):
                    req.recover = True
                    req.offset, req.epoch = msg["recover_since"]
                override = msg.get("override")
                node.spawn(
                    self._server_subscribe(
                        s,
                        req,
                        msg.get("info"),
                        msg.get("data"),
                        SimpleNamespace(**override) if override else None,
                        int(msg.get("expire_at") or 0),
                    )
                )
        elif op == "refresh":
            for s in targets:
                self._refresh(s, msg)
        else:
            logger.warning("unknown control operation %r", op)

    def targets(self, user: str, client: str = "", session: str = "") -> list[ClientSession]:
        """This node's sessions a message addresses: one client, or a user's (one session)."""
        hub = self.node.hub
        if client:
            s = hub.session(client)
            return [s] if s is not None and (not user or s.user == user) else []
        targets = hub.user_sessions(user)
        if session:
            targets = [s for s in targets if s.session_id == session]
        return targets

    def _refresh(self, s: ClientSession, msg: dict[str, Any]) -> None:
        if msg.get("expired"):
            s.disconnect(codes.CONNECTION_EXPIRED)
            return
        if msg.get("expire_at") is not None:
            s.expire_at = int(msg["expire_at"])
        if msg.get("info") is not None:
            s.info = msg["info"]
        wall = self.node.wall_clock()
        s.send_push(
            Push(
                refresh=Refresh(
                    expires=bool(s.expire_at),
                    ttl=max(0, int(s.expire_at - wall)) if s.expire_at else 0,
                )
            )
        )
        s.schedule_expiry_check()

    async def _server_subscribe(
        self,
        session: ClientSession,
        req: SubscribeRequest,
        info: Any,
        data: Any,
        override: Any = None,
        expire_at: int = 0,
    ) -> None:
        try:
            await self.node.subscribe_session(
                session,
                req,
                server_side=True,
                chan_info=info,
                data=data,
                override=override,
                expire_at=expire_at,
            )
        except (ClientError, DisconnectError) as exc:
            logger.info(
                "server-side subscribe of %s to %s refused: %r", session.client_id, req.channel, exc
            )
