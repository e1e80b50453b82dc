"""Redis backends: broker with history, history store and presence on Redis.

:class:`RedisBroker`, :class:`RedisHistoryStore` and :class:`RedisPresenceManager`
implement the engine seams on one Redis server, on several independent Redis
servers (shards), or on a Redis Cluster. ``docs/redis.md`` is the operator's
guide; this docstring is the reference for the formats.

Topology
    A channel lives on exactly one shard: jump consistent hash of the FNV-1a
    hash of its name (:mod:`rtcore.backends.sharding`). Its stream, meta,
    idempotency results and presence are keys there, and its pub/sub channel
    is there too. Under Redis Cluster, each channel's keys carry the channel as
    a hash tag so they share one slot, and the Cluster routes them.

Commands
    Every multi-key write is one Lua script (``_redis_scripts``), atomic on the
    channel's shard: "append to history, trim, bump the offset, publish"
    happens as a single step, so every subscriber sees a channel's
    publications in offset order without gaps. Commands go over redis-py's
    asyncio connection pools (``RedisCluster`` under Cluster). On standalone
    servers, concurrent commands are automatically pipelined (one round trip
    carries everything that queued up meanwhile, packed by hiredis). No
    command is retried on a connection error, because a retry could apply a
    publish twice.

Pub/sub
    Each shard (or Cluster primary) has one dedicated pub/sub connection,
    shared by all channels. Subscribing and unsubscribing are batched:
    everything requested during one event-loop turn goes out in one write, at
    most 512 channels per command. A reader decodes messages as they arrive
    and calls the handler synchronously, so a channel's order is the order
    Redis published in. Lost connections reconnect with jittered exponential
    backoff and resubscribe every channel. ``subscribe`` returns only when
    Redis has confirmed the subscription.

Key layout (``P`` = prefix, ``c`` = channel part, see :class:`RedisKeys`)

    =========================  ======  ==========================================
    key                        type    content
    =========================  ======  ==========================================
    ``P.stream.c``             STREAM  entry id ``<offset>-0``, field ``d`` = entry
    ``P.meta.c``               HASH    ``e`` epoch, ``s`` top offset
    ``P.result.<n>.c.<key>``   STRING  ``"<offset>:<epoch>"`` of an idempotent publish
    ``P.presence.data.c``      HASH    client id -> presence entry
    ``P.presence.expire.c``    ZSET    client id -> lease end (unix ms, server clock)
    ``P.presence.users.c``     HASH    user id -> number of live clients
    ``P.client.c``             pubsub  the channel's publications, joins, leaves
    ``P.control``              pubsub  node-to-node control messages
    =========================  ======  ==========================================

    ``<n>`` is the channel's length in characters, which keeps result keys of
    different (channel, key) pairs distinct.

Binary format, version 1
    Everything starts with the format byte ``0x01``, followed by msgpack:

    * publication body ``PUB``: ``[data: bin, info: INFO | nil, tags: map | nil,
      time: int, channel: str, delta: bool]``; the offset is not part of it;
    * ``INFO``: ``[user: str, client: str, conn_info: bin | nil, chan_info: bin | nil]``;
    * stream entry (field ``d``): ``0x01 PUB``;
    * presence entry: ``0x01 INFO``;
    * message on ``P.client.c``: ``0x01 [0, offset, epoch, PUB, PREV | nil]`` for a
      publication (offset 0 and epoch ``""`` without history; ``PREV`` is the
      previous publication, offset ``offset - 1``, only with ``use_delta``),
      ``0x01 [1, INFO]`` for a join, ``0x01 [2, INFO]`` for a leave;
    * message on ``P.control``: ``0x01`` followed by the opaque control bytes.

    Decoders ignore extra trailing array elements, so a later version can
    append fields. A message or entry with another format byte is dropped
    (and logged): a history entry that cannot be read is a gap, which clients
    already handle as "not recovered".
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import os
import random
import ssl
import string
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final, NoReturn

import hiredis
import msgpack
from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot


try:  # redis-py >= 6.4
    from redis.maint_notifications import MaintNotificationsConfig
except ImportError:  # pragma: no cover - older redis-py
    MaintNotificationsConfig = None  # type: ignore[assignment,misc]

from rtcore.backends.redis import scripts
from rtcore.backends.sharding import fnv1a_64, shard_index
from rtcore.engine.broker import (
    DEFAULT_IDEMPOTENT_TTL,
    BrokerClosedError,
    BrokerEventHandler,
    BrokerNotStartedError,
    BrokerStateError,
    PublishResult,
)
from rtcore.engine.history import DEFAULT_META_TTL, ZERO_POSITION, HistoryOptions, HistoryResult
from rtcore.engine.presence import DEFAULT_PRESENCE_TTL
from rtcore.errors import RtcoreError
from rtcore.protocol.types import ClientInfo, PresenceStats, Publication, StreamPosition


if TYPE_CHECKING:
    from rtcore.engine.broker import Broker
    from rtcore.engine.history import HistoryStore
    from rtcore.engine.presence import PresenceManager


__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_URL",
    "FORMAT_VERSION",
    "KIND_JOIN",
    "KIND_LEAVE",
    "KIND_PUBLICATION",
    "RedisBroker",
    "RedisConnections",
    "RedisEngineError",
    "RedisHistoryStore",
    "RedisKeys",
    "RedisPresenceManager",
    "RedisUnavailableError",
    "create_redis_engine",
    "decode_entry",
    "decode_message",
    "deliver_message",
    "encode_info_message",
    "encode_publication",
    "encode_publication_message",
]


logger = logging.getLogger(__name__)

DEFAULT_URL: Final = "redis://127.0.0.1:6379"
DEFAULT_PREFIX: Final = "rtcore"

#: The format byte that starts every stored entry and pub/sub message.
FORMAT_VERSION: Final = 1
_V: Final = b"\x01"

#: Kinds of channel messages (the first element of the msgpack array).
KIND_PUBLICATION: Final = 0
KIND_JOIN: Final = 1
KIND_LEAVE: Final = 2

# Message head for a publication without history: format byte, fixarray(5),
# kind 0, offset 0, epoch "".
_PUB_HEAD_NO_HISTORY: Final = b"\x01\x95\x00\x00\xa0"
_MSGPACK_NIL: Final = b"\xc0"

# Most channels in one SUBSCRIBE / UNSUBSCRIBE command.
_SUBSCRIBE_BATCH: Final = 512

_EPOCH_LETTERS: Final = string.ascii_letters


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


class RedisEngineError(RtcoreError):
    """A Redis command failed: the server answered with an error."""


class RedisUnavailableError(RedisEngineError, ConnectionError):
    """Redis could not be reached, or did not answer in time.

    The operation may or may not have been applied: a publish whose reply was
    lost can still be in history. Retry with the same idempotency key to make
    a retried publish safe.
    """


_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ClusterDownError,
    redis_errors.SlotNotCoveredError,
    redis_errors.TryAgainError,
    redis_errors.MasterDownError,
    redis_errors.ReadOnlyError,
    redis_errors.MaxConnectionsError,
    OSError,
    asyncio.TimeoutError,
)


def _translate(exc: BaseException, what: str) -> RedisEngineError:
    """The rtcore error for a failure of ``what``."""
    if isinstance(exc, RedisEngineError):
        return exc
    if isinstance(exc, _UNAVAILABLE_ERRORS):
        return RedisUnavailableError(f"{what}: Redis unavailable: {exc}")
    return RedisEngineError(f"{what}: {exc}")


# ---------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------


def _new_epoch() -> str:
    # Eight random letters from the OS, as the memory backend does.
    return "".join([_EPOCH_LETTERS[b % 52] for b in os.urandom(8)])


def _ms(seconds: float) -> int:
    """Seconds as whole milliseconds, rounded up so a TTL never ends early."""
    return max(1, math.ceil(seconds * 1000))


def _info_fields(info: ClientInfo) -> list[Any]:
    return [info.user, info.client, info.conn_info, info.chan_info]


def _info_from(obj: Sequence[Any]) -> ClientInfo:
    return ClientInfo(obj[0], obj[1], obj[2], obj[3])


def encode_publication(pub: Publication) -> bytes:
    """The msgpack body ``PUB`` of a publication (without the format byte)."""
    info = pub.info
    return msgpack.packb(  # type: ignore[no-any-return]
        [
            pub.data,
            None if info is None else [info.user, info.client, info.conn_info, info.chan_info],
            pub.tags,
            pub.time,
            pub.channel,
            pub.delta,
        ]
    )


def _publication_from(obj: Sequence[Any], offset: int) -> Publication:
    info = obj[1]
    return Publication(
        data=obj[0],
        offset=offset,
        info=None if info is None else ClientInfo(info[0], info[1], info[2], info[3]),
        tags=obj[2],
        time=obj[3],
        channel=obj[4],
        delta=obj[5],
    )


def decode_entry(entry: bytes, offset: int) -> Publication | None:
    """A stored stream entry as a publication; None if its format is unknown."""
    if not entry or entry[0] != FORMAT_VERSION:
        return None
    return _publication_from(msgpack.unpackb(memoryview(entry)[1:]), offset)


def encode_presence_entry(info: ClientInfo) -> bytes:
    return _V + msgpack.packb(_info_fields(info))  # type: ignore[no-any-return]


def encode_publication_message(body: bytes) -> bytes:
    """The channel message of a publication without history, from its body."""
    return _PUB_HEAD_NO_HISTORY + body + _MSGPACK_NIL


def encode_info_message(kind: int, info: ClientInfo) -> bytes:
    """The channel message of a join (``KIND_JOIN``) or leave (``KIND_LEAVE``)."""
    return _V + msgpack.packb([kind, _info_fields(info)])  # type: ignore[no-any-return]


def decode_message(data: bytes) -> tuple[int, Any, Any, Any] | None:
    """Decode a channel message.

    Returns ``(KIND_PUBLICATION, pub, position, prev_pub)``, or
    ``(KIND_JOIN | KIND_LEAVE, info, None, None)``, or None when the format
    byte or the kind is unknown. Raises on malformed msgpack.
    """
    if not data or data[0] != FORMAT_VERSION:
        return None
    msg = msgpack.unpackb(memoryview(data)[1:])
    kind = msg[0]
    if kind == KIND_PUBLICATION:
        offset = msg[1]
        pub = _publication_from(msg[3], offset)
        prev = None if msg[4] is None else _publication_from(msg[4], offset - 1)
        return kind, pub, StreamPosition(offset, msg[2]) if offset else ZERO_POSITION, prev
    if kind == KIND_JOIN or kind == KIND_LEAVE:
        return kind, _info_from(msg[1]), None, None
    return None


def _parse_position(cached: bytes) -> StreamPosition:
    offset, _, epoch = cached.partition(b":")
    if not offset or offset == b"0":
        return ZERO_POSITION
    return StreamPosition(int(offset), epoch.decode())


# ---------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------


class RedisKeys:
    """Key and pub/sub channel names for one prefix.

    The *channel part* ``c`` is the channel name on standalone servers. Under
    Redis Cluster it is ``{channel}``, a hash tag that puts all of a channel's
    keys (and its sharded pub/sub channel) in one slot. A channel that cannot
    be its own hash tag (it is empty or contains ``}``) gets
    ``{<16 hex digits of FNV-1a>}}channel`` instead: the hash is the tag, and
    the doubled brace keeps these names apart from the plain ones.

    Raises:
        ValueError: the prefix is empty or contains ``{`` or ``}``.
    """

    __slots__ = ("prefix", "cluster", "control")

    def __init__(self, prefix: str = DEFAULT_PREFIX, *, cluster: bool = False) -> None:
        if not prefix:
            raise ValueError("the Redis key prefix must not be empty")
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"the Redis key prefix must not contain braces: {prefix!r}")
        self.prefix = prefix
        self.cluster = cluster
        #: The pub/sub channel of control messages.
        self.control = f"{prefix}.control"

    def part(self, channel: str) -> str:
        if not self.cluster:
            return channel
        if channel and "}" not in channel:
            return "{" + channel + "}"
        return f"{{{fnv1a_64(channel.encode()):016x}}}}}" + channel

    def stream(self, channel: str) -> str:
        return f"{self.prefix}.stream.{self.part(channel)}"

    def meta(self, channel: str) -> str:
        return f"{self.prefix}.meta.{self.part(channel)}"

    def result(self, channel: str, idempotency_key: str) -> str:
        return f"{self.prefix}.result.{len(channel)}.{self.part(channel)}.{idempotency_key}"

    def presence_data(self, channel: str) -> str:
        return f"{self.prefix}.presence.data.{self.part(channel)}"

    def presence_expire(self, channel: str) -> str:
        return f"{self.prefix}.presence.expire.{self.part(channel)}"

    def presence_users(self, channel: str) -> str:
        return f"{self.prefix}.presence.users.{self.part(channel)}"

    def client(self, channel: str) -> str:
        """The pub/sub channel of ``channel``'s publications, joins and leaves."""
        return f"{self.prefix}.client.{self.part(channel)}"


# ---------------------------------------------------------------------------
# Connection settings
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Endpoint:
    """Where and how a pub/sub connection connects."""

    host: str
    port: int
    path: str | None = None
    ssl: ssl.SSLContext | None = None
    username: str | None = None
    password: str | None = None

    @property
    def name(self) -> str:
        return self.path if self.path else f"{self.host}:{self.port}"


def _ssl_context(options: dict[str, Any]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    reqs = options.get("ssl_cert_reqs", "required")
    if isinstance(reqs, str):
        reqs = {
            "none": ssl.CERT_NONE,
            "optional": ssl.CERT_OPTIONAL,
            "required": ssl.CERT_REQUIRED,
        }[reqs.lower()]
    check_hostname = options.get("ssl_check_hostname", True)
    if isinstance(check_hostname, str):
        check_hostname = check_hostname.lower() not in ("0", "false", "no", "off")
    ctx.check_hostname = bool(check_hostname) and reqs != ssl.CERT_NONE
    ctx.verify_mode = reqs
    if options.get("ssl_certfile"):
        ctx.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"))
    return ctx


def _endpoint_from_url(url: str) -> _Endpoint:
    options = parse_url(url)
    tls = None
    connection_class = options.get("connection_class")
    if connection_class is not None and connection_class.__name__ == "SSLConnection":
        tls = _ssl_context(dict(options))
    return _Endpoint(
        host=options.get("host", "127.0.0.1"),
        port=int(options.get("port", 6379)),
        path=options.get("path"),
        ssl=tls,
        username=options.get("username"),
        password=options.get("password"),
    )


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------


# hiredis packs commands in C; redis-py's own packer is pure Python.
_pack = hiredis.pack_command

# redis-py < 5.1 requires a command name for get_connection(); later
# versions deprecate passing one.
_POOL_WANTS_NAME: Final = (
    inspect.signature(BlockingConnectionPool.get_connection).parameters["command_name"].default
    is inspect.Parameter.empty
    if "command_name" in inspect.signature(BlockingConnectionPool.get_connection).parameters
    else False
)

_SCRIPTS_BY_SHA: dict[bytes, scripts.Script] = {
    s.sha.encode(): s
    for s in (
        scripts.PUBLISH_HISTORY,
        scripts.PUBLISH_IDEMPOTENT,
        scripts.HISTORY_READ,
        scripts.PRESENCE_ADD,
        scripts.PRESENCE_REMOVE,
        scripts.PRESENCE_GET,
        scripts.PRESENCE_STATS,
    )
}


class _Health:
    """The outcome of the latest command, for the ``healthy`` properties."""

    __slots__ = ("ok", "error", "error_time")

    def __init__(self) -> None:
        self.ok = True
        self.error: BaseException | None = None
        self.error_time = 0.0

    def failed(self, exc: BaseException) -> None:
        self.error = exc
        self.error_time = time.time()
        if isinstance(exc, RedisUnavailableError):
            self.ok = False


class _Batcher:
    """Sends concurrent commands to one standalone server as pipelines.

    ``call`` queues a command. Whatever queued up during one event-loop turn
    goes out as one pipeline, at most ``max_batch`` commands each, with at most
    ``max_pipelines`` pipelines in flight. A sequential caller therefore sees
    one round trip per command, and a busy node sends few, large writes.
    Commands are never retried after a connection error (a publish could be
    applied twice); a ``NOSCRIPT`` reply, which means the script did not run,
    is answered by running the script's source with ``EVAL``.
    """

    __slots__ = (
        "_client",
        "_health",
        "_queue",
        "_running",
        "_scheduled",
        "_max_batch",
        "_max_pipelines",
        "_tasks",
    )

    def __init__(
        self, client: Redis, health: _Health, *, max_batch: int = 256, max_pipelines: int = 4
    ) -> None:
        self._client = client
        self._health = health
        self._queue: deque[tuple[tuple[Any, ...], asyncio.Future[Any]]] = deque()
        self._running = 0
        self._scheduled = False
        self._max_batch = max_batch
        self._max_pipelines = max_pipelines
        self._tasks: set[asyncio.Task[None]] = set()

    def call(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._queue.append((args, fut))
        if not self._scheduled and self._running < self._max_pipelines:
            self._scheduled = True
            loop.call_soon(self._start)
        return fut

    def _start(self) -> None:
        self._scheduled = False
        queue = self._queue
        while queue and self._running < self._max_pipelines:
            n = min(len(queue), self._max_batch)
            batch = [queue.popleft() for _ in range(n)]
            # Requests whose caller gave up (cancelled) are not sent.
            batch = [item for item in batch if not item[1].done()]
            if not batch:
                continue
            self._running += 1
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        try:
            results = await self._execute([args for args, _ in batch])
            retry: list[int] = [
                i for i, r in enumerate(results) if isinstance(r, redis_errors.NoScriptError)
            ]
            if retry:
                # The server lost its script cache (a restart): run the sources.
                again = []
                for i in retry:
                    args = batch[i][0]
                    script = _SCRIPTS_BY_SHA[
                        args[1].encode() if isinstance(args[1], str) else args[1]
                    ]
                    again.append(("EVAL", script.source, *args[2:]))
                for i, result in zip(retry, await self._execute(again), strict=True):
                    results[i] = result
        except asyncio.CancelledError:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(RedisUnavailableError("the Redis client was closed"))
            raise
        except Exception as exc:
            error = _translate(exc, "Redis pipeline")
            self._health.failed(error)
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(_translate(exc, "Redis command"))
        else:
            self._health.ok = True
            for (_, fut), result in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if isinstance(result, Exception):
                    fut.set_exception(_translate(result, "Redis command"))
                else:
                    fut.set_result(result)
        finally:
            self._running -= 1
            if self._queue and not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._start)

    async def _execute(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` in one write on a pooled connection; one reply each.

        Error replies come back as exception objects in the list. A connection
        error, a timeout or a cancellation drops the connection (its replies
        are unknown) and propagates.
        """
        pool = self._client.connection_pool
        get: Callable[..., Awaitable[Any]] = pool.get_connection
        conn = await (get("PIPELINE") if _POOL_WANTS_NAME else get())
        try:
            await conn.send_packed_command([_pack(args) for args in commands], check_health=False)
            results: list[Any] = []
            for _ in commands:
                try:
                    results.append(await conn.read_response())
                except redis_errors.ResponseError as exc:
                    results.append(exc)
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            await pool.release(conn)
        return results

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        while self._queue:
            _, fut = self._queue.popleft()
            if not fut.done():
                fut.set_exception(RedisUnavailableError("the Redis client was closed"))


class RedisConnections:
    """Command connections to one Redis deployment, shared by the Redis backends.

    Args:
        urls: one URL per shard (``redis://``, ``rediss://`` or ``unix://``,
            with credentials and ``?db=`` as redis-py accepts them), or, with
            ``cluster=True``, any number of Cluster nodes to discover it from.
            Shard order matters: keep the list append-only (see
            :mod:`rtcore.backends.sharding`).
        cluster: talk to a Redis Cluster through redis-py's ``RedisCluster``.
        socket_timeout: seconds to wait for a reply before the command fails
            with :class:`RedisUnavailableError`.
        connect_timeout: seconds to wait for a TCP (and TLS) connection.
        max_connections: command connections per server.

    Backends built from the same instance share it. It closes when the last
    of them closes (or when :meth:`close` is called directly).
    """

    def __init__(
        self,
        urls: str | Sequence[str] = DEFAULT_URL,
        *,
        cluster: bool = False,
        socket_timeout: float = 5.0,
        connect_timeout: float = 3.0,
        max_connections: int = 32,
    ) -> None:
        url_list = [urls] if isinstance(urls, str) else list(urls)
        if not url_list:
            raise ValueError("at least one Redis URL is required")
        if not socket_timeout > 0 or not connect_timeout > 0:
            raise ValueError("Redis timeouts must be > 0 seconds")
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        self.urls: tuple[str, ...] = tuple(url_list)
        self.cluster = cluster
        self.connect_timeout = connect_timeout
        self.endpoints: tuple[_Endpoint, ...] = tuple(_endpoint_from_url(u) for u in url_list)
        self._health = _Health()
        self._users = 0
        self._closed = False
        no_retry = Retry(NoBackoff(), 0)
        self._clients: list[Redis] = []
        self._batchers: list[_Batcher] = []
        self._cluster: RedisCluster | None = None
        self._cluster_ready = False
        self._cluster_lock = asyncio.Lock()
        self._limit = asyncio.Semaphore(max_connections)
        if cluster:
            if any(e.path for e in self.endpoints):
                raise ValueError("Redis Cluster nodes must be TCP URLs")
            # Credentials, TLS and timeouts of the first URL apply to every node.
            first = dict(parse_url(url_list[0]))
            if first.get("db"):
                raise ValueError("Redis Cluster has only database 0")
            options: dict[str, Any] = {
                "socket_timeout": socket_timeout,
                "socket_connect_timeout": connect_timeout,
            }
            for name, value in first.items():
                if name.startswith("ssl_") or name in (
                    "username",
                    "password",
                    "socket_timeout",
                    "socket_connect_timeout",
                ):
                    options[name] = value
            if getattr(first.get("connection_class"), "__name__", "") == "SSLConnection":
                options["ssl"] = True
            self._cluster = RedisCluster(
                startup_nodes=[ClusterNode(e.host, e.port) for e in self.endpoints],
                retry=no_retry,
                max_connections=max(max_connections, 2),
                **options,
            )
        else:
            extra: dict[str, Any] = {}
            if MaintNotificationsConfig is not None:
                # Maintenance push notifications (a Redis Enterprise feature)
                # make redis-py skip its stale-connection check when it hands
                # out a pooled connection, so the first command after a Redis
                # restart would fail. rtcore does not use them.
                extra["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
            for url in url_list:
                pool = BlockingConnectionPool.from_url(
                    url,
                    **extra,
                    max_connections=max_connections,
                    timeout=connect_timeout + socket_timeout,
                    socket_timeout=socket_timeout,
                    socket_connect_timeout=connect_timeout,
                    retry=no_retry,
                )
                client = Redis(connection_pool=pool)
                self._clients.append(client)
                self._batchers.append(_Batcher(client, self._health))

    @property
    def num_shards(self) -> int:
        """Number of standalone shards (1 for a Cluster, which shards itself)."""
        return len(self._clients) or 1

    @property
    def healthy(self) -> bool:
        """False after a command failed to reach Redis, until one succeeds again."""
        return self._health.ok

    @property
    def last_error(self) -> BaseException | None:
        """The most recent command error, if any."""
        return self._health.error

    @property
    def last_error_time(self) -> float:
        """Unix time of :attr:`last_error` (0 if none)."""
        return self._health.error_time

    def acquire(self) -> None:
        """Register one more backend that uses these connections."""
        if self._closed:
            raise RedisEngineError("the Redis connections are closed")
        self._users += 1

    async def release(self) -> None:
        """Unregister a backend; closes the connections after the last one."""
        self._users -= 1
        if self._users <= 0:
            await self.close()

    async def close(self) -> None:
        """Close every connection; idempotent."""
        if self._closed:
            return
        self._closed = True
        for batcher in self._batchers:
            await batcher.close()
        for client in self._clients:
            await client.aclose()
            # A pool passed in explicitly is not closed by the client.
            await client.connection_pool.disconnect()
        if self._cluster is not None:
            await self._cluster.aclose()

    # -- routing ------------------------------------------------------------------

    def shard(self, channel: str) -> int:
        return shard_index(channel, len(self._clients)) if self._clients else 0

    async def cluster_client(self) -> RedisCluster:
        """The initialized Cluster client (Cluster mode only)."""
        assert self._cluster is not None
        if not self._cluster_ready:
            async with self._cluster_lock:
                if not self._cluster_ready:
                    try:
                        await self._cluster.initialize()
                    except Exception as exc:
                        raise self._failed(exc, "Redis Cluster discovery") from exc
                    self._cluster_ready = True
        return self._cluster

    async def refresh_cluster(self) -> RedisCluster:
        """Re-read the Cluster's slot map (after a failover or a slot migration)."""
        cluster = await self.cluster_client()
        try:
            await cluster.nodes_manager.initialize()
        except Exception as exc:
            raise self._failed(exc, "Redis Cluster discovery") from exc
        return cluster

    def _failed(self, exc: BaseException, what: str) -> RedisEngineError:
        error = _translate(exc, what)
        self._health.failed(error)
        return error

    # -- commands -----------------------------------------------------------------

    async def script(
        self, channel: str, script: scripts.Script, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        """Run ``script`` on the shard (or slot) of ``channel``."""
        if self._closed:
            raise RedisEngineError("the Redis connections are closed")
        if self._cluster is None:
            shard = shard_index(channel, len(self._clients))
            return await self._batchers[shard].call(
                ("EVALSHA", script.sha, len(keys), *keys, *args)
            )
        cluster = await self.cluster_client()
        async with self._limit:
            try:
                try:
                    result = await cluster.execute_command(
                        "EVALSHA", script.sha, len(keys), *keys, *args
                    )
                except redis_errors.NoScriptError:
                    result = await cluster.execute_command(
                        "EVAL", script.source, len(keys), *keys, *args
                    )
            except Exception as exc:
                raise self._failed(exc, f"Redis script {script.name}") from exc
        self._health.ok = True
        return result

    async def publish(self, channel: str | None, name: str, message: bytes, sharded: bool) -> None:
        """PUBLISH (or SPUBLISH) ``message`` on the pub/sub channel ``name``.

        ``channel`` chooses the shard; ``None`` means the first one.
        """
        if self._closed:
            raise RedisEngineError("the Redis connections are closed")
        command = "SPUBLISH" if sharded else "PUBLISH"
        if self._cluster is None:
            shard = 0 if channel is None else shard_index(channel, len(self._clients))
            await self._batchers[shard].call((command, name, message))
            return
        cluster = await self.cluster_client()
        async with self._limit:
            try:
                node = cluster.get_node_from_key(name)
                await cluster.execute_command(command, name, message, target_nodes=node)
            except Exception as exc:
                raise self._failed(exc, command) from exc
        self._health.ok = True

    async def server_major_version(self) -> int:
        """The major Redis version of (one node of) the deployment."""
        try:
            if self._cluster is not None:
                cluster = await self.cluster_client()
                info = await cluster.info("server", target_nodes=cluster.get_random_node())
            else:
                info = await self._clients[0].info("server")
        except Exception as exc:
            raise self._failed(exc, "INFO") from exc
        version = str(info.get("redis_version", "0"))
        try:
            return int(version.split(".", 1)[0])
        except ValueError:
            return 0

    async def command(self, channel: str, *args: Any) -> Any:
        """Run a command on the shard of ``channel`` (Cluster: routed by its first key)."""
        if self._closed:
            raise RedisEngineError("the Redis connections are closed")
        if self._cluster is None:
            return await self._batchers[shard_index(channel, len(self._clients))].call(args)
        cluster = await self.cluster_client()
        async with self._limit:
            try:
                result = await cluster.execute_command(*args)
            except Exception as exc:
                raise self._failed(exc, str(args[0])) from exc
        self._health.ok = True
        return result

    async def load_scripts(self) -> None:
        """SCRIPT LOAD every script on every reachable standalone shard.

        Best effort: a shard that is down now gets its scripts on first use
        (``NOSCRIPT`` is answered with ``EVAL``).
        """
        for i, client in enumerate(self._clients):
            try:
                for script in _SCRIPTS_BY_SHA.values():
                    await client.script_load(script.source)
            except Exception as exc:
                logger.warning("cannot load the Lua scripts on Redis shard %d: %s", i, exc)
                self._failed(exc, "SCRIPT LOAD")


def _resolve_connections(
    connections: RedisConnections | str | Sequence[str], cluster: bool
) -> RedisConnections:
    if isinstance(connections, RedisConnections):
        if cluster and not connections.cluster:
            raise ValueError("cluster=True needs RedisConnections built with cluster=True")
        conns = connections
    else:
        conns = RedisConnections(connections, cluster=cluster)
    conns.acquire()
    return conns


# ---------------------------------------------------------------------------
# History
# ---------------------------------------------------------------------------


class RedisHistoryStore:
    """:class:`~rtcore.engine.history.HistoryStore` in Redis streams.

    A channel's stream is a Redis STREAM whose entry ids are the offsets, and
    a meta hash holding the epoch and the top offset. Adds and reads are Lua
    scripts, atomic per channel. TTLs are set in milliseconds, rounded up, and
    run on the Redis server's clock: they never end early and end at most
    about a millisecond late (Redis checks expiry on access).

    Storage failures raise :class:`RedisUnavailableError` (cannot reach Redis)
    or :class:`RedisEngineError` (Redis answered with an error). When Redis
    loses its data (a restart without persistence, eviction), the next read
    or add finds no meta and starts a new epoch, so clients see the
    "not recovered" path.

    Args:
        connections: a :class:`RedisConnections`, or the URL(s) to build one.
        prefix: key prefix.
        cluster: the URLs name Redis Cluster nodes.
        meta_ttl: meta lifetime set by reads that pass no ``meta_ttl``.
    """

    def __init__(
        self,
        connections: RedisConnections | str | Sequence[str] = DEFAULT_URL,
        *,
        prefix: str = DEFAULT_PREFIX,
        cluster: bool = False,
        meta_ttl: float = DEFAULT_META_TTL,
    ) -> None:
        if not meta_ttl > 0:
            raise ValueError(f"meta_ttl must be > 0 seconds, got {meta_ttl}")
        self._conns = _resolve_connections(connections, cluster)
        self.keys = RedisKeys(prefix, cluster=self._conns.cluster)
        self._meta_ttl = meta_ttl
        self._closed = False

    @property
    def connections(self) -> RedisConnections:
        return self._conns

    async def close(self) -> None:
        """Release the connections; idempotent."""
        if not self._closed:
            self._closed = True
            await self._conns.release()

    # -- HistoryStore -------------------------------------------------------

    async def add(self, channel: str, pub: Publication, opts: HistoryOptions) -> StreamPosition:
        position, _ = await self.append(channel, pub, opts, "", "", False, None, 0.0)
        return position

    async def get(
        self,
        channel: str,
        *,
        since: StreamPosition | None = None,
        limit: int = 0,
        reverse: bool = False,
        meta_ttl: float | None = None,
    ) -> HistoryResult:
        return await self.read(channel, since, limit, reverse, meta_ttl)

    async def position(self, channel: str, *, meta_ttl: float | None = None) -> StreamPosition:
        return (await self.read(channel, None, 0, False, meta_ttl)).position

    async def remove(self, channel: str) -> None:
        if self._closed:
            raise RedisEngineError("the history store is closed")
        await self._conns.command(channel, "DEL", self.keys.stream(channel))

    # -- shared with the broker ---------------------------------------------

    async def append(
        self,
        channel: str,
        pub: Publication,
        opts: HistoryOptions,
        command: str,
        name: str,
        use_delta: bool,
        idempotency_key: str | None,
        idempotent_ttl: float,
    ) -> tuple[StreamPosition, bool]:
        """Run the publish script: append, and publish on ``name`` unless ``command`` is ""."""
        if self._closed:
            raise RedisEngineError("the history store is closed")
        keys = self.keys
        key_list = [keys.stream(channel), keys.meta(channel)]
        args: list[Any] = [
            encode_publication(pub),
            opts.size,
            _ms(opts.ttl),
            _ms(opts.meta_ttl),
            _new_epoch(),
            command,
            name,
            "1" if use_delta else "0",
        ]
        if idempotency_key:
            key_list.append(keys.result(channel, idempotency_key))
            args.append(_ms(idempotent_ttl))
        result = await self._conns.script(channel, scripts.PUBLISH_HISTORY, key_list, args)
        cached = result[2]
        if cached:
            return _parse_position(cached), True
        offset = int(result[0])
        pub.offset = offset
        return StreamPosition(offset, result[1].decode()), False

    async def read(
        self,
        channel: str,
        since: StreamPosition | None,
        limit: int,
        reverse: bool,
        meta_ttl: float | None,
    ) -> HistoryResult:
        """``HistoryStore.get`` with positional arguments."""
        if limit < -1:
            raise ValueError(f"limit must be -1, 0 or positive, got {limit}")
        if since is not None:
            if since.offset < 0:
                raise ValueError(f"since.offset must be >= 0, got {since.offset}")
            if reverse and since.offset == 0:
                raise ValueError("reverse history since offset 0 is empty by definition")
        if meta_ttl is None:
            meta_ttl = self._meta_ttl
        elif not meta_ttl > 0:
            raise ValueError(f"meta_ttl must be > 0 seconds, got {meta_ttl}")
        if self._closed:
            raise RedisEngineError("the history store is closed")
        if since is None:
            start = "+" if reverse else "-"
            expect_epoch = ""
        else:
            start = str(since.offset - 1 if reverse else since.offset + 1)
            expect_epoch = since.epoch
        keys = self.keys
        result = await self._conns.script(
            channel,
            scripts.HISTORY_READ,
            [keys.stream(channel), keys.meta(channel)],
            [_new_epoch(), _ms(meta_ttl), limit, "1" if reverse else "0", start, expect_epoch],
        )
        position = StreamPosition(int(result[0]), result[1].decode())
        if len(result) < 3:
            return HistoryResult([], position)
        pubs: list[Publication] = []
        for entry_id, fields in result[2]:
            offset = int(entry_id.partition(b"-")[0])
            entry = _field(fields, b"d")
            pub = None if entry is None else decode_entry(entry, offset)
            if pub is None:
                logger.warning(
                    "skipping history entry %d of %r in an unknown format", offset, channel
                )
                continue
            pubs.append(pub)
        return HistoryResult(pubs, position)


def _field(fields: Sequence[bytes], name: bytes) -> bytes | None:
    for i in range(0, len(fields) - 1, 2):
        if fields[i] == name:
            return fields[i + 1]
    return None


# ---------------------------------------------------------------------------
# Pub/sub connections
# ---------------------------------------------------------------------------


def _pack_command(args: Iterable[bytes]) -> bytes:
    parts = []
    n = 0
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
        n += 1
    return b"*%d\r\n" % n + b"".join(parts)


_CALL: Final = 0
_SUB: Final = 1
_UNSUB: Final = 2
_PING: Final = 3

_MESSAGE_KINDS: Final = frozenset((b"message", b"smessage"))
_SUBSCRIBED_KINDS: Final = frozenset((b"subscribe", b"ssubscribe"))
_UNSUBSCRIBED_KINDS: Final = frozenset((b"unsubscribe", b"sunsubscribe"))


class _Cmd:
    """A command written to a pub/sub connection whose replies are still due."""

    __slots__ = ("kind", "names", "pos", "fut")

    def __init__(
        self, kind: int, names: list[bytes], fut: asyncio.Future[Any] | None = None
    ) -> None:
        self.kind = kind
        self.names = names
        self.pos = 0  # replies received so far (one per channel)
        self.fut = fut


class _RespProtocol(asyncio.Protocol):
    """RESP2 over one transport; hands every parsed reply to its link."""

    def __init__(self, link: _Link) -> None:
        self.link = link
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.last_data = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop transports are not asyncio.Transport subclasses.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        self.last_data = time.monotonic()
        on_reply = self.link.on_reply
        try:
            while True:
                reply = reader.gets()
                if reply is False:
                    return
                on_reply(self, reply)
        except hiredis.ProtocolError as exc:
            logger.error("Redis pub/sub protocol error from %s: %s", self.link.endpoint.name, exc)
            if self.transport is not None:
                self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.on_connection_lost(self, exc)
        if not self.lost.done():
            self.lost.set_result(None)


class _Link:
    """One pub/sub connection to one server, kept connected, with its channels.

    ``desired`` is what should be subscribed. ``active`` is what Redis has
    confirmed *and* has no later (un)subscribe of ours pending, so a message
    is delivered only when everything this node asked for that channel has
    taken effect: a message published before an ``unsubscribe`` returned can
    never be delivered after a later ``subscribe``.
    """

    def __init__(
        self,
        router: _Router,
        endpoint: _Endpoint,
        *,
        sharded: bool,
        connect_timeout: float,
        health_interval: float,
        delay_min: float,
        delay_max: float,
    ) -> None:
        self.router = router
        self.endpoint = endpoint
        self.sharded = sharded
        self._connect_timeout = connect_timeout
        self._health_interval = health_interval
        self._delay_min = delay_min
        self._delay_max = delay_max
        self.desired: set[bytes] = set()
        self.active: set[bytes] = set()
        self._pending: dict[bytes, int] = {}
        self._queue: list[tuple[int, bytes]] = []
        self._flush_scheduled = False
        self._inflight: deque[_Cmd] = deque()
        self._proto: _RespProtocol | None = None
        self._ready = False
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.last_error: BaseException | None = None
        self.last_error_time = 0.0
        self.reconnects = 0
        if sharded:
            self._sub_word, self._unsub_word = b"SSUBSCRIBE", b"SUNSUBSCRIBE"
        else:
            self._sub_word, self._unsub_word = b"SUBSCRIBE", b"UNSUBSCRIBE"

    @property
    def connected(self) -> bool:
        return self._ready

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"rtcore-redis-pubsub-{self.endpoint.name}"
            )

    async def close(self) -> None:
        self._closing = True
        proto = self._proto
        if proto is not None and proto.transport is not None:
            proto.transport.abort()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self.desired.clear()
        self.active.clear()

    # -- channel set ------------------------------------------------------------

    def add(self, name: bytes) -> None:
        if name in self.desired:
            return
        self.desired.add(name)
        if self._ready:
            self._enqueue(_SUB, name)

    def remove(self, name: bytes) -> None:
        if name not in self.desired:
            return
        self.desired.discard(name)
        self.active.discard(name)
        if self._ready:
            self._enqueue(_UNSUB, name)

    def _enqueue(self, kind: int, name: bytes) -> None:
        self._pending[name] = self._pending.get(name, 0) + 1
        self._queue.append((kind, name))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        queue = self._queue
        if not queue:
            return
        self._queue = []
        proto = self._proto
        if proto is None or proto.transport is None:
            return  # lost meanwhile: the reconnect resubscribes what is desired
        chunks: list[bytes] = []
        i, n = 0, len(queue)
        while i < n:
            kind = queue[i][0]
            run: list[bytes] = []
            while i < n and queue[i][0] == kind:
                run.append(queue[i][1])
                i += 1
            word = self._sub_word if kind == _SUB else self._unsub_word
            for names in self._groups(run):
                chunks.append(_pack_command([word, *names]))
                self._inflight.append(_Cmd(kind, names))
        proto.transport.write(b"".join(chunks))

    def _groups(self, names: list[bytes]) -> Iterable[list[bytes]]:
        """Split into commands: at most _SUBSCRIBE_BATCH names, one slot each if sharded."""
        if self.sharded:
            by_slot: dict[int, list[bytes]] = {}
            for name in names:
                by_slot.setdefault(key_slot(name), []).append(name)
            groups: Iterable[list[bytes]] = by_slot.values()
        else:
            groups = (names,)
        for group in groups:
            for start in range(0, len(group), _SUBSCRIBE_BATCH):
                yield group[start : start + _SUBSCRIBE_BATCH]

    # -- replies ------------------------------------------------------------------

    def on_reply(self, proto: _RespProtocol, reply: Any) -> None:
        if proto is not self._proto:
            return
        if type(reply) is list and len(reply) == 3:
            kind = reply[0]
            if kind in _MESSAGE_KINDS:
                name = reply[1]
                if name in self.active:
                    self.router.deliver(name, reply[2])
                return
            if kind in _SUBSCRIBED_KINDS or kind in _UNSUBSCRIBED_KINDS:
                self._on_confirmation(reply[1], kind in _SUBSCRIBED_KINDS)
                return
        inflight = self._inflight
        head = inflight[0] if inflight else None
        if isinstance(reply, hiredis.ReplyError):
            if head is None:
                logger.warning("Redis pub/sub error from %s: %s", self.endpoint.name, reply)
                return
            inflight.popleft()
            self._on_command_error(head, reply)
            return
        if head is not None and head.kind in (_CALL, _PING):
            inflight.popleft()
            if head.fut is not None and not head.fut.done():
                head.fut.set_result(reply)
            return
        logger.debug("unexpected Redis pub/sub reply from %s: %r", self.endpoint.name, reply)

    def _on_confirmation(self, name: bytes, subscribed: bool) -> None:
        inflight = self._inflight
        head = inflight[0] if inflight else None
        if (
            head is not None
            and head.kind == (_SUB if subscribed else _UNSUB)
            and head.names[head.pos] == name
        ):
            head.pos += 1
            if head.pos == len(head.names):
                inflight.popleft()
            self._settle(name)
            return
        if not subscribed:
            # Not an answer to us: the server dropped the subscription (with
            # sharded pub/sub, the channel's slot moved to another node).
            self.active.discard(name)
            if name in self.desired:
                self.desired.discard(name)
                self.router.on_dropped(self, [name])
            return
        logger.debug("unexpected subscribe confirmation for %r", name)

    def _settle(self, name: bytes) -> None:
        """One of our commands for ``name`` took effect."""
        n = self._pending.get(name, 0) - 1
        if n > 0:
            self._pending[name] = n
            return
        self._pending.pop(name, None)
        if name in self.desired and name not in self.active:
            self.active.add(name)
            self.router.on_active(name)

    def _on_command_error(self, cmd: _Cmd, error: Exception) -> None:
        if cmd.kind == _CALL:
            if cmd.fut is not None and not cmd.fut.done():
                cmd.fut.set_result(error)
            return
        if cmd.kind == _PING:
            return
        names = cmd.names[cmd.pos :]
        for name in names:
            n = self._pending.get(name, 0) - 1
            if n > 0:
                self._pending[name] = n
            else:
                self._pending.pop(name, None)
        message = str(error)
        self._set_error(RedisEngineError(f"{self._sub_word.decode()} failed: {message}"))
        if cmd.kind != _SUB:
            return
        moved = [name for name in names if name in self.desired]
        if message.startswith(("MOVED", "ASK", "CROSSSLOT", "CLUSTERDOWN", "TRYAGAIN")):
            for name in moved:
                self.desired.discard(name)
            self.router.on_dropped(self, moved)
        else:
            logger.warning(
                "Redis %s refused %d channel(s) on %s: %s",
                self._sub_word.decode(),
                len(names),
                self.endpoint.name,
                message,
            )

    def on_connection_lost(self, proto: _RespProtocol, exc: Exception | None) -> None:
        if proto is not self._proto:
            return
        self._proto = None
        was_ready = self._ready
        self._ready = False
        self.active.clear()
        self._pending.clear()
        self._queue.clear()
        error = ConnectionError(f"connection to {self.endpoint.name} lost: {exc or 'closed'}")
        while self._inflight:
            cmd = self._inflight.popleft()
            if cmd.fut is not None and not cmd.fut.done():
                cmd.fut.set_exception(error)
        if not self._closing:
            self._set_error(error)
            if was_ready:
                logger.warning(
                    "Redis pub/sub connection to %s lost: %s",
                    self.endpoint.name,
                    exc or "closed by the server",
                )
                self.router.on_link_down(self)

    def _set_error(self, exc: BaseException) -> None:
        self.last_error = exc
        self.last_error_time = time.time()

    # -- connection ---------------------------------------------------------------

    def _call(self, proto: _RespProtocol, *args: bytes) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._inflight.append(_Cmd(_CALL, [], fut))
        assert proto.transport is not None
        proto.transport.write(_pack_command(args))
        return fut

    async def _connect(self) -> _RespProtocol:
        loop = asyncio.get_running_loop()
        ep = self.endpoint
        proto = _RespProtocol(self)
        self._proto = proto
        self._inflight.clear()
        try:
            if ep.path:
                connecting = loop.create_unix_connection(lambda: proto, ep.path, ssl=ep.ssl)
            else:
                connecting = loop.create_connection(
                    lambda: proto,
                    ep.host,
                    ep.port,
                    ssl=ep.ssl,
                    server_hostname=ep.host if ep.ssl is not None else None,
                )
            await asyncio.wait_for(connecting, self._connect_timeout)
            if ep.password is not None:
                auth = [b"AUTH"]
                if ep.username:
                    auth.append(ep.username.encode())
                auth.append(ep.password.encode())
                reply = await asyncio.wait_for(self._call(proto, *auth), self._connect_timeout)
                if isinstance(reply, Exception):
                    raise RedisEngineError(f"Redis AUTH failed on {ep.name}: {reply}")
            reply = await asyncio.wait_for(
                self._call(proto, b"CLIENT", b"SETNAME", b"rtcore-pubsub"), self._connect_timeout
            )
        except BaseException:
            self._proto = None
            if proto.transport is not None:
                proto.transport.abort()
            raise
        return proto

    async def _run(self) -> None:
        delay = self._delay_min
        ever_connected = False
        failures = 0
        while not self._closing:
            try:
                proto = await self._connect()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._set_error(exc)
                failures += 1
                # One warning per outage; the retries go to the debug log.
                log = logger.warning if failures == 1 else logger.debug
                log("cannot connect Redis pub/sub to %s: %s", self.endpoint.name, exc)
                self.router.on_link_down(self)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self._delay_max)
                continue
            if ever_connected:
                self.reconnects += 1
                logger.info("Redis pub/sub connection to %s re-established", self.endpoint.name)
            ever_connected = True
            failures = 0
            delay = self._delay_min
            self._ready = True
            for name in self.desired:
                self._enqueue(_SUB, name)
            self._flush()
            await self._supervise(proto)

    async def _supervise(self, proto: _RespProtocol) -> None:
        """Wait until the connection is lost; ping it to notice a dead peer."""
        interval = self._health_interval
        ping_sent = 0.0
        while True:
            done, _ = await asyncio.wait([proto.lost], timeout=interval)
            if done:
                return
            if ping_sent and proto.last_data < ping_sent:
                logger.warning(
                    "Redis pub/sub connection to %s did not answer a PING in %.1f s",
                    self.endpoint.name,
                    interval,
                )
                if proto.transport is not None:
                    proto.transport.abort()
                await proto.lost
                return
            if proto.transport is not None:
                ping_sent = time.monotonic()
                self._inflight.append(_Cmd(_PING, []))
                proto.transport.write(b"*1\r\n$4\r\nPING\r\n")


class _Router(ABC):
    """Places pub/sub channels on links and waits for subscriptions to take effect."""

    def __init__(
        self,
        deliver: Callable[[bytes, bytes], None],
        *,
        sharded: bool,
        connect_timeout: float,
        health_interval: float,
        delay_min: float,
        delay_max: float,
    ) -> None:
        self.deliver = deliver
        self.sharded = sharded
        self._link_options = {
            "sharded": sharded,
            "connect_timeout": connect_timeout,
            "health_interval": health_interval,
            "delay_min": delay_min,
            "delay_max": delay_max,
        }
        self._waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        self._home: dict[bytes, _Link] = {}
        self.closed = False

    def _new_link(self, endpoint: _Endpoint) -> _Link:
        link = _Link(self, endpoint, **self._link_options)  # type: ignore[arg-type]
        link.start()
        return link

    @property
    @abstractmethod
    def links(self) -> list[_Link]:
        """Every pub/sub connection of the router."""

    @abstractmethod
    def link_for(self, name: bytes) -> _Link:
        """The connection that pub/sub channel ``name`` belongs on now."""

    def is_desired(self, name: bytes) -> bool:
        return name in self._home

    @abstractmethod
    async def start(self) -> None:
        """Open the initial connections."""

    async def subscribe(self, name: bytes, timeout: float) -> None:
        link = self._home.get(name)
        if link is None:
            link = self.link_for(name)
            self._home[name] = link
            link.add(name)
        if name in link.active:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(name, [])
        waiters.append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            home = self._home.get(name)
            if home is not None and name not in home.active and waiters == [fut]:
                self.unsubscribe(name)
            error = (home or link).last_error
            raise RedisUnavailableError(
                f"Redis did not confirm the subscription to {name!r} in {timeout} s"
                + (f" (last error: {error})" if error else "")
            ) from None
        finally:
            if fut in waiters:
                waiters.remove(fut)
            if not waiters and self._waiters.get(name) is waiters:
                del self._waiters[name]

    def unsubscribe(self, name: bytes) -> None:
        link = self._home.pop(name, None)
        if link is not None:
            link.remove(name)
        for fut in self._waiters.pop(name, ()):
            if not fut.done():
                fut.set_result(None)

    def on_active(self, name: bytes) -> None:
        for fut in self._waiters.pop(name, ()):
            if not fut.done():
                fut.set_result(None)

    def on_dropped(self, link: _Link, names: list[bytes]) -> None:
        """The server dropped (or refused) subscriptions that are still wanted."""
        for name in names:
            if self._home.get(name) is link:
                link.add(name)

    @abstractmethod
    def on_link_down(self, link: _Link) -> None:
        """A link lost its connection or failed to connect."""

    @property
    def healthy(self) -> bool:
        return all(link.connected for link in self.links)

    async def close(self) -> None:
        self.closed = True
        for link in self.links:
            await link.close()
        self._home.clear()
        error = BrokerClosedError("broker is closed")
        for waiters in self._waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(error)
        self._waiters.clear()


class _ShardRouter(_Router):
    """One link per standalone shard; a channel's link is its shard's."""

    def __init__(self, conns: RedisConnections, **options: Any) -> None:
        super().__init__(**options)
        self._conns = conns
        self._links: list[_Link] = []
        self._shards: dict[bytes, int] = {}

    @property
    def links(self) -> list[_Link]:
        return self._links

    async def start(self) -> None:
        self._links = [self._new_link(endpoint) for endpoint in self._conns.endpoints]

    def place(self, name: bytes, channel: str | None) -> None:
        """Remember the shard of pub/sub channel ``name`` (``None``: the first shard)."""
        self._shards[name] = 0 if channel is None else self._conns.shard(channel)

    def link_for(self, name: bytes) -> _Link:
        return self._links[self._shards.get(name, 0)]

    def unsubscribe(self, name: bytes) -> None:
        super().unsubscribe(name)
        self._shards.pop(name, None)

    def on_link_down(self, link: _Link) -> None:
        # A shard's address never changes: the link reconnects on its own.
        return


class _ClusterRouter(_Router):
    """One link per Cluster primary that owns a subscribed channel's slot.

    When a link drops, or the server reports that a channel's slot moved, the
    router re-reads the slot map and moves channels to their new primaries.
    """

    def __init__(self, conns: RedisConnections, **options: Any) -> None:
        super().__init__(**options)
        self._conns = conns
        self._links_by_node: dict[str, _Link] = {}
        self._cluster: RedisCluster | None = None
        self._refresh_task: asyncio.Task[None] | None = None
        self._refresh_wanted = False
        self._template = conns.endpoints[0]

    @property
    def links(self) -> list[_Link]:
        return list(self._links_by_node.values())

    async def start(self) -> None:
        self._cluster = await self._conns.cluster_client()

    def link_for(self, name: bytes) -> _Link:
        assert self._cluster is not None
        try:
            node = self._cluster.get_node_from_key(name.decode())
        except redis_errors.SlotNotCoveredError:
            node = None
        if node is None:
            # The slot map is incomplete right now; park the channel on any
            # link and let the refresh move it.
            self.request_refresh()
            if self._links_by_node:
                return next(iter(self._links_by_node.values()))
            node = self._cluster.get_random_node()
        link = self._links_by_node.get(node.name)
        if link is None:
            endpoint = replace(self._template, host=node.host, port=int(node.port))
            link = self._links_by_node[node.name] = self._new_link(endpoint)
        return link

    def on_dropped(self, link: _Link, names: list[bytes]) -> None:
        self.request_refresh()

    def on_link_down(self, link: _Link) -> None:
        self.request_refresh()

    @property
    def healthy(self) -> bool:
        # A link without channels may belong to a node that left the cluster.
        return all(link.connected for link in self.links if link.desired)

    def request_refresh(self) -> None:
        self._refresh_wanted = True
        if self.closed or (self._refresh_task is not None and not self._refresh_task.done()):
            return
        self._refresh_task = asyncio.get_running_loop().create_task(self._refresh_loop())

    async def _refresh_loop(self) -> None:
        delay = float(self._link_options["delay_min"])
        delay_max = float(self._link_options["delay_max"])
        while self._refresh_wanted and not self.closed:
            self._refresh_wanted = False
            await asyncio.sleep(delay * (0.5 + random.random()))
            try:
                self._cluster = await self._conns.refresh_cluster()
            except Exception as exc:
                logger.debug("Redis Cluster slot refresh failed: %s", exc)
                self._refresh_wanted = True
                delay = min(delay * 2, delay_max)
                continue
            delay = float(self._link_options["delay_min"])
            self._rehome()
            if any(not link.connected for link in self.links if link.desired):
                # Still broken: look again later (a failover may be under way).
                self._refresh_wanted = True
                delay = min(max(delay, 0.5), delay_max)

    def _rehome(self) -> None:
        for name, old in list(self._home.items()):
            new = self.link_for(name)
            if new is old:
                if name not in old.desired:
                    old.add(name)  # dropped by the server, same node again
                continue
            old.remove(name)
            self._home[name] = new
            new.add(name)
        for node_name, link in list(self._links_by_node.items()):
            if not link.desired:
                del self._links_by_node[node_name]
                asyncio.get_running_loop().create_task(link.close())

    async def close(self) -> None:
        self.closed = True
        if self._refresh_task is not None:
            self._refresh_task.cancel()
            try:
                await self._refresh_task
            except asyncio.CancelledError:
                pass
        await super().close()


# ---------------------------------------------------------------------------
# Broker
# ---------------------------------------------------------------------------

_NEW, _STARTING, _RUNNING, _CLOSED = range(4)


class RedisBroker:
    """:class:`~rtcore.engine.broker.Broker` on Redis pub/sub, with history in Redis streams.

    Publishing with history is one Lua script on the channel's shard: it
    assigns the offset, appends, trims, sets the TTLs, records the
    idempotency result and publishes the message. Every node therefore
    receives a channel's publications in offset order with no gaps (as long as
    its pub/sub connection stays up; a reconnect can lose messages, which
    positioned subscribers detect from the offsets).

    Handler calls come from the pub/sub reader, independently of the
    publishing call (before or after ``publish`` returns).
    Control messages use the pub/sub channel ``<prefix>.control`` on the first
    shard (Cluster: on the primary that owns that name's slot), so every node
    receives each control message exactly once.

    Faults: while Redis cannot be reached, ``publish``, ``history`` and the
    other calls raise :class:`RedisUnavailableError` (nothing is queued or
    dropped silently), and ``subscribe`` raises it if Redis does not confirm
    within ``subscribe_timeout``. The pub/sub connections reconnect on their
    own, with jittered exponential backoff between ``reconnect_delay_min`` and
    ``reconnect_delay_max``, and resubscribe every channel. A silent dead
    connection is noticed by a PING every ``health_check_interval`` seconds.
    :attr:`healthy` and :attr:`last_error` report the state for metrics.

    Args:
        connections: a :class:`RedisConnections`, or the URL(s) to build one.
        prefix: key and channel prefix; nodes of one deployment must share it.
        cluster: the URLs name Redis Cluster nodes.
        meta_ttl: meta lifetime for history reads that pass no ``meta_ttl``.
        sharded_pubsub: Cluster only: use SSUBSCRIBE/SPUBLISH (Redis 7). The
            default, ``None``, uses it when the server supports it. All nodes
            of a deployment must agree.
        subscribe_timeout: seconds ``subscribe`` (and ``start``) wait for Redis.
        health_check_interval: seconds between PINGs on each pub/sub connection.
        reconnect_delay_min, reconnect_delay_max: reconnect backoff bounds.
    """

    def __init__(
        self,
        connections: RedisConnections | str | Sequence[str] = DEFAULT_URL,
        *,
        prefix: str = DEFAULT_PREFIX,
        cluster: bool = False,
        meta_ttl: float = DEFAULT_META_TTL,
        sharded_pubsub: bool | None = None,
        subscribe_timeout: float = 5.0,
        health_check_interval: float = 5.0,
        reconnect_delay_min: float = 0.05,
        reconnect_delay_max: float = 2.0,
    ) -> None:
        if not subscribe_timeout > 0 or not health_check_interval > 0:
            raise ValueError("subscribe_timeout and health_check_interval must be > 0")
        if not 0 < reconnect_delay_min <= reconnect_delay_max:
            raise ValueError("need 0 < reconnect_delay_min <= reconnect_delay_max")
        self._conns = _resolve_connections(connections, cluster)
        self._history = RedisHistoryStore(self._conns, prefix=prefix, meta_ttl=meta_ttl)
        self.keys = self._history.keys
        self._sharded_option = sharded_pubsub
        self._sharded = False
        self._subscribe_timeout = subscribe_timeout
        self._router_options = {
            "connect_timeout": self._conns.connect_timeout,
            "health_interval": health_check_interval,
            "delay_min": reconnect_delay_min,
            "delay_max": reconnect_delay_max,
        }
        self._state = _NEW
        self._handler: BrokerEventHandler | None = None
        self._router: _Router | None = None
        # Pub/sub channel name -> rtcore channel, for every wanted subscription.
        self._names: dict[bytes, str] = {}
        self._control_name = self.keys.control.encode()
        self._publish_word = "PUBLISH"

    # -- introspection ----------------------------------------------------------

    @property
    def history_store(self) -> RedisHistoryStore:
        """The paired history store (same connections and prefix)."""
        return self._history

    @property
    def connections(self) -> RedisConnections:
        return self._conns

    @property
    def sharded_pubsub(self) -> bool:
        """Whether SSUBSCRIBE/SPUBLISH are in use (known after ``start``)."""
        return self._sharded

    @property
    def pubsub_connected(self) -> bool:
        """True while started and every pub/sub connection (that has channels) is up."""
        router = self._router
        return self._state == _RUNNING and router is not None and router.healthy

    @property
    def healthy(self) -> bool:
        """True when every pub/sub connection is up and the last command reached Redis."""
        return self.pubsub_connected and self._conns.healthy

    @property
    def last_error(self) -> BaseException | None:
        """The most recent error of a command or a pub/sub connection, if any."""
        best: BaseException | None = self._conns.last_error
        best_time = self._conns.last_error_time
        if self._router is not None:
            for link in self._router.links:
                if link.last_error is not None and link.last_error_time >= best_time:
                    best, best_time = link.last_error, link.last_error_time
        return best

    @property
    def reconnects(self) -> int:
        """Pub/sub reconnections so far, over all connections."""
        return sum(link.reconnects for link in self._router.links) if self._router else 0

    @property
    def subscribed_channels(self) -> int:
        """Channels this node is subscribed to (control excluded)."""
        return len(self._names)

    # -- lifecycle --------------------------------------------------------------

    def _state_error(self) -> NoReturn:
        if self._state == _CLOSED:
            raise BrokerClosedError("broker is closed")
        raise BrokerNotStartedError("broker is not started")

    async def start(self, handler: BrokerEventHandler) -> None:
        if self._state == _CLOSED:
            raise BrokerClosedError("broker is closed")
        if self._state != _NEW:
            raise BrokerStateError("broker is already started")
        self._state = _STARTING
        try:
            if self._conns.cluster:
                if self._sharded_option is None:
                    self._sharded = await self._conns.server_major_version() >= 7
                else:
                    self._sharded = self._sharded_option
            else:
                self._sharded = False
                await self._conns.load_scripts()
            self._publish_word = "SPUBLISH" if self._sharded else "PUBLISH"
            if self._state == _CLOSED:
                raise BrokerClosedError("broker is closed")
            router: _Router
            if self._conns.cluster:
                router = _ClusterRouter(
                    self._conns,
                    deliver=self._deliver,
                    sharded=self._sharded,
                    **self._router_options,
                )
            else:
                router = _ShardRouter(
                    self._conns, deliver=self._deliver, sharded=False, **self._router_options
                )
                router.place(self._control_name, None)
            # Visible to close() from here on, which then closes it.
            self._router = router
            self._handler = handler
            await router.start()
            await router.subscribe(self._control_name, self._subscribe_timeout)
            if self._state == _CLOSED:
                raise BrokerClosedError("broker is closed")
        except BaseException as exc:
            router_left, self._router = self._router, None
            self._handler = None
            if router_left is not None:
                await router_left.close()
            if self._state == _STARTING:
                self._state = _NEW
            if isinstance(exc, Exception) and not isinstance(exc, RtcoreError):
                raise _translate(exc, "starting the Redis broker") from exc
            raise
        self._state = _RUNNING

    async def close(self) -> None:
        if self._state == _CLOSED:
            return
        self._state = _CLOSED
        self._handler = None
        router, self._router = self._router, None
        if router is not None:
            await router.close()
        self._names.clear()
        await self._history.close()
        await self._conns.release()

    # -- subscriptions ------------------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        if self._state != _RUNNING:
            self._state_error()
        router = self._router
        assert router is not None
        name = self.keys.client(channel).encode()
        self._names[name] = channel
        if isinstance(router, _ShardRouter) and not router.is_desired(name):
            router.place(name, channel)
        try:
            await router.subscribe(name, self._subscribe_timeout)
        except BaseException:
            if not router.is_desired(name):
                self._names.pop(name, None)
            raise

    async def unsubscribe(self, channel: str) -> None:
        if self._state != _RUNNING:
            self._state_error()
        assert self._router is not None
        name = self.keys.client(channel).encode()
        self._names.pop(name, None)
        self._router.unsubscribe(name)

    # -- publishing -----------------------------------------------------------------

    async def publish(
        self,
        channel: str,
        pub: Publication,
        *,
        history: HistoryOptions | None = None,
        idempotency_key: str | None = None,
        idempotent_ttl: float = DEFAULT_IDEMPOTENT_TTL,
        use_delta: bool = False,
    ) -> PublishResult:
        if self._state != _RUNNING:
            self._state_error()
        if idempotency_key and not idempotent_ttl > 0:
            raise ValueError(f"idempotent_ttl must be > 0 seconds, got {idempotent_ttl}")
        if not pub.time:
            pub.time = int(time.time() * 1000)
        name = self.keys.client(channel)
        if history is not None:
            position, suppressed = await self._history.append(
                channel,
                pub,
                history,
                self._publish_word.lower(),
                name,
                use_delta,
                idempotency_key,
                idempotent_ttl,
            )
            return PublishResult(position, suppressed)
        message = encode_publication_message(encode_publication(pub))
        if idempotency_key:
            cached = await self._conns.script(
                channel,
                scripts.PUBLISH_IDEMPOTENT,
                [self.keys.result(channel, idempotency_key)],
                [message, self._publish_word.lower(), name, _ms(idempotent_ttl)],
            )
            if cached is not None:
                return PublishResult(_parse_position(cached), True)
        else:
            await self._conns.publish(channel, name, message, self._sharded)
        pub.offset = 0
        return PublishResult(ZERO_POSITION)

    async def publish_join(self, channel: str, info: ClientInfo) -> None:
        await self._publish_info(channel, KIND_JOIN, info)

    async def publish_leave(self, channel: str, info: ClientInfo) -> None:
        await self._publish_info(channel, KIND_LEAVE, info)

    async def _publish_info(self, channel: str, kind: int, info: ClientInfo) -> None:
        if self._state != _RUNNING:
            self._state_error()
        message = encode_info_message(kind, info)
        await self._conns.publish(channel, self.keys.client(channel), message, self._sharded)

    async def publish_control(self, data: bytes) -> None:
        if self._state != _RUNNING:
            self._state_error()
        await self._conns.publish(None, self.keys.control, _V + data, self._sharded)

    # -- history --------------------------------------------------------------------

    async def history(
        self,
        channel: str,
        *,
        since: StreamPosition | None = None,
        limit: int = 0,
        reverse: bool = False,
        meta_ttl: float | None = None,
    ) -> HistoryResult:
        if self._state != _RUNNING:
            self._state_error()
        return await self._history.read(channel, since, limit, reverse, meta_ttl)

    async def remove_history(self, channel: str) -> None:
        if self._state != _RUNNING:
            self._state_error()
        await self._history.remove(channel)

    # -- delivery ---------------------------------------------------------------------

    def _deliver(self, name: bytes, data: bytes) -> None:
        handler = self._handler
        if handler is None:
            return
        if name == self._control_name:
            if not data or data[0] != FORMAT_VERSION:
                logger.warning("dropping a control message in an unknown format")
                return
            try:
                handler.on_control(data[1:])
            except Exception:
                logger.exception("broker event handler failed on a control message")
            return
        channel = self._names.get(name)
        if channel is None:
            return
        deliver_message(handler, channel, data)


def deliver_message(handler: BrokerEventHandler, channel: str, data: bytes) -> None:
    """Decode a channel message and hand it to ``handler``; log and drop what fails."""
    try:
        decoded = decode_message(data)
    except Exception:
        logger.exception("dropping an undecodable message in %r", channel)
        return
    if decoded is None:
        logger.warning("dropping a message in an unknown format in %r", channel)
        return
    kind, first, position, prev = decoded
    try:
        if kind == KIND_PUBLICATION:
            handler.on_publication(channel, first, position, prev)
        elif kind == KIND_JOIN:
            handler.on_join(channel, first)
        else:
            handler.on_leave(channel, first)
    except Exception:
        logger.exception("broker event handler failed on an event in %r", channel)


# ---------------------------------------------------------------------------
# Presence
# ---------------------------------------------------------------------------


class RedisPresenceManager:
    """:class:`~rtcore.engine.presence.PresenceManager` in Redis.

    A channel's presence is three keys on its shard: a hash of client id to
    entry, a sorted set of client id to lease end, and a hash of user id to
    that user's number of live clients (so ``stats`` is two ``HLEN``). Every
    call is one Lua script that first removes the expired entries, so results
    never include them. Lease ends are computed from the Redis server's
    ``TIME`` in milliseconds (rounded up), so nodes with skewed clocks agree
    and a lease ends at most about a millisecond late. The keys themselves
    expire ``ttl`` after the channel's latest ``add``, so an abandoned channel
    frees its memory on its own.

    Args:
        connections: a :class:`RedisConnections`, or the URL(s) to build one.
        prefix: key prefix.
        cluster: the URLs name Redis Cluster nodes.
        ttl: the presence lease in seconds.
    """

    def __init__(
        self,
        connections: RedisConnections | str | Sequence[str] = DEFAULT_URL,
        *,
        prefix: str = DEFAULT_PREFIX,
        cluster: bool = False,
        ttl: float = DEFAULT_PRESENCE_TTL,
    ) -> None:
        if not ttl > 0:
            raise ValueError(f"presence ttl must be > 0 seconds, got {ttl}")
        self._conns = _resolve_connections(connections, cluster)
        self.keys = RedisKeys(prefix, cluster=self._conns.cluster)
        self._ttl = ttl
        self._ttl_ms = _ms(ttl)
        self._closed = False

    @property
    def ttl(self) -> float:
        """The presence lease in seconds."""
        return self._ttl

    @property
    def connections(self) -> RedisConnections:
        return self._conns

    @property
    def healthy(self) -> bool:
        return self._conns.healthy

    async def close(self) -> None:
        """Release the connections; idempotent."""
        if not self._closed:
            self._closed = True
            await self._conns.release()

    def _keys(self, channel: str) -> list[str]:
        if self._closed:
            raise RedisEngineError("the presence manager is closed")
        keys = self.keys
        return [
            keys.presence_data(channel),
            keys.presence_expire(channel),
            keys.presence_users(channel),
        ]

    async def add(self, channel: str, client_id: str, info: ClientInfo) -> None:
        await self._conns.script(
            channel,
            scripts.PRESENCE_ADD,
            self._keys(channel),
            [client_id, encode_presence_entry(info), self._ttl_ms, info.user],
        )

    async def remove(self, channel: str, client_id: str, user_id: str) -> None:
        # The stored entry knows its user, so user_id is not needed here.
        await self._conns.script(channel, scripts.PRESENCE_REMOVE, self._keys(channel), [client_id])

    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        flat = await self._conns.script(channel, scripts.PRESENCE_GET, self._keys(channel), [])
        out: dict[str, ClientInfo] = {}
        for i in range(0, len(flat) - 1, 2):
            entry = flat[i + 1]
            if not entry or entry[0] != FORMAT_VERSION:
                logger.warning("skipping a presence entry in an unknown format in %r", channel)
                continue
            out[flat[i].decode()] = _info_from(msgpack.unpackb(memoryview(entry)[1:]))
        return out

    async def stats(self, channel: str) -> PresenceStats:
        clients, users = await self._conns.script(
            channel, scripts.PRESENCE_STATS, self._keys(channel), []
        )
        return PresenceStats(int(clients), int(users))


# ---------------------------------------------------------------------------
# Factory
# ---------------------------------------------------------------------------


def create_redis_engine(
    urls: list[str],
    prefix: str,
    *,
    cluster: bool = False,
    presence_ttl: float = DEFAULT_PRESENCE_TTL,
) -> tuple[RedisBroker, RedisPresenceManager]:
    """A broker and a presence manager sharing one set of Redis connections.

    ``urls`` are the shards (or, with ``cluster=True``, Cluster seed nodes).
    The connections close when both components are closed. Nothing connects
    before ``broker.start()`` and the first presence call.
    """
    conns = RedisConnections(urls, cluster=cluster)
    broker = RedisBroker(conns, prefix=prefix, cluster=cluster)
    presence = RedisPresenceManager(conns, prefix=prefix, cluster=cluster, ttl=presence_ttl)
    return broker, presence


if TYPE_CHECKING:
    _broker: type[Broker] = RedisBroker
    _history: type[HistoryStore] = RedisHistoryStore
    _presence: type[PresenceManager] = RedisPresenceManager
