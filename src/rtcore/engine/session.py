"""One client connection's protocol state: the Centrifuge v2 session state machine.

A :class:`ClientSession` is driven by its transport (``handle_frame`` with
each inbound frame, ``transport_closed`` when the connection ends) and by the
node's timer wheel (``on_timer``). It writes through a bounded
:class:`rtcore.fanout.Writer`, so replies and pushes for one client leave in
order and are coalesced per event-loop tick. Commands are executed one after
another in arrival order; a command that has to wait (token check, broker,
history) holds back the commands behind it, never other clients.

Command handlers live in :mod:`rtcore.engine.commands`; this module holds the state,
the lifecycle and the timers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from rtcore.fanout import Subscriber, Writer
from rtcore.protocol import Command, Error, ProtocolDecodeError, Push, Reply, codes
from rtcore.protocol.codes import ClientError, Disconnect
from rtcore.protocol.errors import InappropriateProtocol
from rtcore.protocol.types import ClientInfo


if TYPE_CHECKING:
    from rtcore.config import ChannelOptions
    from rtcore.engine.node import Node
    from rtcore.engine.presence import PresenceEntry
    from rtcore.engine.ratelimit import CommandRateLimits
    from rtcore.protocol.codec import Codec


__all__ = [
    "ClientSession",
    "Transport",
    "UnidirectionalTransport",
    "SubscriptionState",
    "CONNECTING",
    "CONNECTED",
    "CLOSED",
]

logger = logging.getLogger("rtcore.engine.session")

CONNECTING = 0
CONNECTED = 1
CLOSED = 2


_dispatch: Callable[[ClientSession, Command], Awaitable[None]] | None = None


def _load_dispatch() -> Callable[[ClientSession, Command], Awaitable[None]]:
    global _dispatch
    from rtcore.engine.commands import dispatch

    _dispatch = dispatch
    return dispatch


def new_client_id() -> str:
    """A random (version 4) UUID string, without building a ``uuid.UUID``."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class Transport(Protocol):
    """What a session needs from the connection that carries it.

    It is also the writer's sink (``write_batch``, ``buffer_size``,
    ``on_slow``). Unidirectional transports are
    :class:`UnidirectionalTransport`.
    """

    #: "websocket", "http_stream", "sse", "uni_websocket", ...
    name: str
    codec: Codec
    #: True for transports without client commands (pushes only, bare Push framing).
    unidirectional: bool
    #: True for HTTP-streaming / SSE with the emulation endpoint.
    emulation: bool

    def write_batch(self, payloads: list[bytes], nbytes: int) -> None: ...

    def buffer_size(self) -> int: ...

    def on_slow(self) -> None: ...

    def close(self, disconnect: Disconnect) -> None:
        """End the connection with this disconnect advice (close frame / disconnect push)."""


class UnidirectionalTransport(Transport, Protocol):
    """A transport with ``unidirectional = True``: it carries pushes only."""

    def handle_reply(self, reply: Reply) -> None:
        """Called instead of writing a Reply: the connect result becomes a
        Connect push, an error a disconnect (see ``rtcore.transports.uni``)."""


class _EndedTransport:
    """What a closed session holds instead of its transport.

    A transport points back at its session: kept, the two would be a
    reference cycle, freed only by the cycle collector's passes (work that
    grows with the number of live connections). It answers what may still be
    asked of a closed session's transport and writes nothing.
    """

    __slots__ = ("name", "codec", "unidirectional", "emulation")

    def __init__(self, transport: Transport) -> None:
        self.name = transport.name
        self.codec = transport.codec
        self.unidirectional = transport.unidirectional
        self.emulation = transport.emulation

    def write_batch(self, payloads: list[bytes], nbytes: int) -> None:
        pass

    def buffer_size(self) -> int:
        return 0

    def on_slow(self) -> None:
        pass

    def close(self, disconnect: Disconnect) -> None:
        pass

    def handle_reply(self, reply: Reply) -> None:
        pass


@dataclass(slots=True)
class SubscriptionState:
    """What a session knows about one of its subscriptions."""

    channel: str
    options: ChannelOptions
    subscriber: Subscriber
    # Channel info from the token or the subscribe hook (ClientInfo.chan_info).
    chan_info: bytes | None = None
    # Take part in presence; publish join/leave for this client.
    presence: bool = False
    emit_join_leave: bool = False
    # Unix seconds when the subscription expires (0: never) and whether the
    # client refreshes it (sub_refresh) or it came from a connection token.
    expire_at: int = 0
    server_side: bool = False
    # Subscribe still in progress (the reply not yet sent).
    pending: bool = True
    # Stream epoch at subscribe time and the offset after which held
    # publications are delivered once the reply is out.
    epoch: str = ""
    flush_from: int = 0
    # This subscription's ClientInfo, made by ClientSession.channel_info.
    client_info: ClientInfo | None = None


class ClientSession:
    """A connected (or connecting) client.

    Attributes set at connect: ``user``, ``info`` (conn_info), ``expire_at``.
    """

    def __init__(
        self, node: Node, transport: Transport, *, request_info: dict[str, Any] | None = None
    ) -> None:
        self.node = node
        self.transport = transport
        self.codec = transport.codec
        # Index of the codec in node.codecs (selects the fan-out payload).
        self.codec_index = node.codec_index(self.codec)
        self.client_id = new_client_id()
        # Identifies this session for the emulation endpoint. Emulated
        # transports get a separate random id: the client id is public
        # (presence, join/leave) and must not let others send commands.
        self.session_id = new_client_id() if transport.emulation else self.client_id
        self.state = CONNECTING
        self.user = ""
        self.info: bytes | None = None
        self.meta: dict[str, Any] | None = None
        self.expire_at = 0
        self.name = ""
        self.version = ""
        # Headers, remote address, query: for hooks.
        self.request_info = request_info or {}
        cfg = node.config.client
        self.writer = Writer(
            transport,
            node.flusher,
            max_queue_size=cfg.queue_max_size,
            max_batch=cfg.max_messages_in_frame,
            max_frame_size=cfg.max_frame_size,
        )
        self.subscriptions: dict[str, SubscriptionState] = {}
        # client.command_rate_limit buckets, made at the first command after connect.
        self.rate_limits: CommandRateLimits | None = None
        # Command queue and the task draining it (only while there is work).
        # Made with the first command and dropped once drained: an empty deque
        # is 760 bytes, a tenth of an idle connection's memory.
        self._commands: deque[Command] | None = None
        self._task: asyncio.Task[None] | None = None
        # True while the node's drain scheduler holds this session for later.
        self._drain_waiting = False
        # Timers (monotonic seconds; 0 = not armed).
        now = node.timers.now()
        self._stale_at = now + cfg.stale_close_delay if cfg.stale_close_delay else 0.0
        self._next_ping_at = 0.0
        self._pong_deadline = 0.0
        self._ping_outstanding = False
        # A connect/pong deadline was seen passed once (see _overdue).
        self._deadline_passed = False
        self._expire_check_at = 0.0
        self._presence_at = 0.0
        self._schedule()
        self.disconnect_advice: Disconnect | None = None
        # Protocol bytes of the command frames received (metrics; the node
        # adds them up when the session ends).
        self.bytes_received = 0

    # -- helpers -------------------------------------------------------------

    @property
    def log_fields(self) -> dict[str, str]:
        """Fields that identify this connection in structured logs: ``client``
        (its id), ``user``, ``transport`` and ``remote`` (the peer's address)."""
        return {
            "client": self.client_id,
            "user": self.user,
            "transport": self.transport.name,
            "remote": _address(self.request_info.get("remote_address")),
        }

    @property
    def client_info(self) -> ClientInfo:
        return ClientInfo(user=self.user, client=self.client_id, conn_info=self.info)

    def channel_info(self, channel: str) -> ClientInfo:
        sub = self.subscriptions.get(channel)
        if sub is None:
            return ClientInfo(user=self.user, client=self.client_id, conn_info=self.info)
        info = sub.client_info
        # One object per subscription while user and infos stay the same: the
        # periodic presence refresh then allocates nothing that lives on (each
        # object it left behind would be walked by the next full collection).
        if (
            info is None
            or info.user is not self.user
            or info.conn_info is not self.info
            or info.chan_info is not sub.chan_info
        ):
            info = sub.client_info = ClientInfo(
                user=self.user, client=self.client_id, conn_info=self.info, chan_info=sub.chan_info
            )
        return info

    def send_reply(self, reply: Reply) -> None:
        if self.state == CLOSED:
            return
        if self.transport.unidirectional:
            # No replies on these: the transport turns the connect result into a
            # Connect push and an error into a disconnect (PROTOCOL.md §6.2, §3.3).
            cast(UnidirectionalTransport, self.transport).handle_reply(reply)
            return
        try:
            data = self.codec.encode_reply(reply)
        except InappropriateProtocol:
            logger.debug(
                "reply not encodable for %s", self.codec.name, exc_info=True, extra=self.log_fields
            )
            self.disconnect(codes.INAPPROPRIATE_PROTOCOL)
            return
        self.writer.enqueue(data)

    def send_push(self, push: Push) -> None:
        if self.state == CLOSED:
            return
        try:
            if self.transport.unidirectional:
                data = self.codec.encode_push_bare(push)
                if self.codec.name == "json":
                    data += b"\n"
            else:
                data = self.codec.encode_push(push)
        except InappropriateProtocol:
            self.disconnect(codes.INAPPROPRIATE_PROTOCOL)
            return
        self.writer.enqueue(data)

    def send_error(self, command_id: int, error: ClientError) -> None:
        self.send_reply(
            Reply(
                id=command_id,
                error=Error(code=error.code, message=error.message, temporary=error.temporary),
            )
        )

    # -- input ---------------------------------------------------------------

    def handle_frame(self, data: bytes) -> None:
        """One transport frame of client commands."""
        if self.state == CLOSED:
            return
        self.bytes_received += len(data)
        # A frame that is one pong is answered without decoding (Codec.pongs).
        if len(data) < 4 and isinstance(data, bytes | str) and data in self.codec.pongs:
            self._on_pong()
            return
        try:
            # Bounded: decoding stops past the most commands a frame may hold.
            commands = self.codec.decode_commands(
                data, self.node.config.client.max_commands_in_frame
            )
        except ProtocolDecodeError as exc:
            logger.info(
                "client %s sent a malformed frame: %s", self.client_id, exc, extra=self.log_fields
            )
            self.disconnect(codes.BAD_REQUEST)
            return
        self.handle_commands(commands)

    def handle_commands(self, commands: list[Command]) -> None:
        queue = self._commands
        for cmd in commands:
            if cmd.id == 0 and cmd.method is None:
                # The empty command is the pong (handled at once, in order of arrival).
                if not self._on_pong():
                    return
                continue
            if queue is None:
                queue = self._commands = deque()
            queue.append(cmd)
        if queue and not self._drain_waiting and (self._task is None or self._task.done()):
            self._drain_waiting = True
            self.node.drain_scheduler.add(self)

    def start_drain(self) -> None:
        """Called by the node's drain scheduler: handle the queued commands in a task."""
        self._drain_waiting = False
        if self._commands and self.state != CLOSED and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        # commands imports this module: resolved on first use.
        dispatch = _dispatch or _load_dispatch()
        queue = self._commands
        while queue and self.state != CLOSED:
            cmd = queue.popleft()
            try:
                await dispatch(self, cmd)
            except ClientError as exc:
                self.send_error(cmd.id, exc)
            except codes.DisconnectError as exc:
                self.disconnect(exc.disconnect)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a failing command must not kill the session
                logger.exception(
                    "command %s of client %s failed",
                    cmd.method,
                    self.client_id,
                    extra=self.log_fields,
                )
                self.send_error(cmd.id, codes.ERROR_INTERNAL)
        # Nothing awaited since the queue was seen empty, so this task is still
        # self._task: dropped, a finished task would keep its coroutine, frame
        # and context alive (GC-tracked) as long as the session.
        self._task = None
        self._commands = None

    def _on_pong(self) -> bool:
        if not self._ping_outstanding:
            if self.state == CONNECTED and self.node.config.client.pong_timeout:
                # A pong nobody asked for: the protocol says 3501.
                self.disconnect(codes.BAD_REQUEST)
                return False
            return True
        self._ping_outstanding = False
        self._pong_deadline = 0.0
        self._deadline_passed = False
        return True

    # -- lifecycle -----------------------------------------------------------

    def mark_connected(self) -> None:
        """Called by the connect command once the reply is queued."""
        self.state = CONNECTED
        self._stale_at = 0.0
        self._deadline_passed = False
        cfg = self.node.config.client
        now = self.node.timers.now()
        if cfg.ping_interval:
            # First ping at a random point in [interval/2, interval]: spreads
            # pings after a mass reconnect.
            self._next_ping_at = now + cfg.ping_interval * (0.5 + random.random() / 2)
        refresh = self.node.presence_refresh_interval
        if refresh:
            # With the ping when they share an interval: one wake for both.
            aligned = refresh == cfg.ping_interval
            self._presence_at = self._next_ping_at if aligned else now + refresh
        self._schedule()

    def schedule_expiry_check(self) -> None:
        """Re-arm the check of connection/subscription expiry (after connect/refresh)."""
        delay = self._expiry_delay()
        at = self.node.timers.now() + delay if delay is not None else 0.0
        if at == self._expire_check_at == 0.0:
            return  # nothing expires and nothing was armed
        self._expire_check_at = at
        self._schedule()

    def _expiry_delay(self) -> float | None:
        wall = self.node.wall_clock()
        deadlines = []
        cfg = self.node.config.client
        if self.expire_at:
            deadlines.append(self.expire_at + cfg.expired_close_delay)
        for sub in self.subscriptions.values():
            if sub.expire_at:
                deadlines.append(sub.expire_at + cfg.expired_sub_close_delay)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - wall)

    def _schedule(self) -> None:
        # The earliest armed deadline (0 means not armed); no list per call.
        when = 0.0
        for t in (
            self._stale_at,
            self._next_ping_at,
            self._pong_deadline,
            self._expire_check_at,
            self._presence_at,
        ):
            if t and (not when or t < when):
                when = t
        timers = self.node.timers
        if self.state == CLOSED or not when:
            timers.cancel(self)
        else:
            timers.schedule(self, when)

    def on_timer(self, now: float) -> None:
        """Called by the node's timer wheel at the earliest armed deadline."""
        if self.state == CLOSED:
            return
        if self._stale_at and now >= self._stale_at and self.state == CONNECTING:
            if self._overdue():
                self.disconnect(codes.STALE)
                return
        elif self._pong_deadline and now >= self._pong_deadline:
            if self._overdue():
                self.disconnect(codes.NO_PONG)
                return
        if self._next_ping_at and now >= self._next_ping_at:
            self._send_ping(now)
        if self._expire_check_at and now >= self._expire_check_at:
            self._expire_check_at = 0.0
            if not self._check_expiry():
                return
        if self._presence_at and now >= self._presence_at:
            self._presence_at = now + self.node.presence_refresh_interval
            # Batched: one presence call per tick for every session due in it.
            self.node.refresh_presence_soon(self)
        self._schedule()

    def _overdue(self) -> bool:
        """Whether a passed connect or pong deadline is confirmed: True at its second sweep.

        The wheel may sweep before the loop has read what is already waiting
        in the socket (a lagging loop runs its timers first), so a deadline
        seen passed is checked again at the next sweep, after at least one
        read of the connection's input: a pong or connect that arrived in
        time is never refused for the loop's lag. It delays a true timeout
        by at most one tick.
        """
        if self._deadline_passed:
            return True
        self._deadline_passed = True
        return False

    def _send_ping(self, now: float) -> None:
        cfg = self.node.config.client
        self._next_ping_at = now + cfg.ping_interval
        if self.transport.unidirectional:
            self.send_push(Push())
            return
        if cfg.pong_timeout:
            if self._ping_outstanding:
                # Its pong is overdue (being confirmed): a second ping would
                # get a second pong, which the protocol treats as unsolicited.
                return
            self._ping_outstanding = True
            self._pong_deadline = now + cfg.pong_timeout
        self.writer.enqueue(self.codec.ping)

    def _check_expiry(self) -> bool:
        """Apply connection/subscription expiry; False when the session ended."""
        wall = self.node.wall_clock()
        cfg = self.node.config.client
        if self.expire_at and wall >= self.expire_at + cfg.expired_close_delay:
            self.disconnect(codes.CONNECTION_EXPIRED)
            return False
        for channel, sub in list(self.subscriptions.items()):
            if sub.expire_at and wall >= sub.expire_at + cfg.expired_sub_close_delay:
                if sub.server_side:
                    self.disconnect(codes.SUBSCRIPTION_EXPIRED)
                    return False
                self.node.spawn(
                    self.node.unsubscribe_session(self, channel, codes.UNSUBSCRIBE_EXPIRED)
                )
        self.schedule_expiry_check()
        return True

    def presence_entries(self) -> list[PresenceEntry]:
        """This session's presence entries to refresh (subscriptions with presence)."""
        if self.state == CLOSED:
            return []
        return [
            (channel, self.client_id, self.channel_info(channel))
            for channel, sub in self.subscriptions.items()
            if sub.presence and not sub.pending
        ]

    def disconnect(self, disconnect: Disconnect) -> None:
        """End the session: tell the client (close code / disconnect push), clean up."""
        if self.state == CLOSED:
            return
        self.disconnect_advice = disconnect
        was_connected = self.state == CONNECTED
        self.state = CLOSED
        self.node.timers.cancel(self)
        # What is queued still goes out before the close frame.
        self.node.flusher.flush()
        self.writer.close()
        try:
            self.transport.close(disconnect)
        finally:
            self._cleanup(was_connected, disconnect)

    def transport_closed(self) -> None:
        """The connection is gone (peer closed, network error)."""
        if self.state == CLOSED:
            return
        was_connected = self.state == CONNECTED
        self.state = CLOSED
        self.node.timers.cancel(self)
        self.writer.close()
        self._cleanup(was_connected, self.disconnect_advice or codes.CONNECTION_CLOSED)

    def _cleanup(self, was_connected: bool, disconnect: Disconnect) -> None:
        if (
            self._task is not None
            and not self._task.done()
            and self._task is not asyncio.current_task()
        ):
            self._task.cancel()
        self._commands = None
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "client disconnected: %d %s",
                disconnect.code,
                disconnect.reason,
                extra={**self.log_fields, "code": disconnect.code, "reason": disconnect.reason},
            )
        self.node.session_closed(self, was_connected, disconnect)
        self.transport = _EndedTransport(self.transport)


def _address(peer: Any) -> str:
    """``host:port`` (``[v6]:port``) of a socket address; other values as text."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return "" if peer is None else str(peer)
