"""Command connections to Redis: one server, several shards, or a Cluster.

Topology
    A channel lives on exactly one shard: jump consistent hash of the FNV-1a
    hash of its name (:mod:`rtcore.backends.sharding`). Its stream, meta,
    idempotency results and presence are keys there, and its pub/sub channel
    is there too. Under Redis Cluster, each channel's keys carry the channel as
    a hash tag so they share one slot, and the Cluster routes them.

Commands
    Every multi-key write is one Lua script (:mod:`rtcore.backends.redis.scripts`),
    atomic on the channel's shard: "append to history, trim, bump the offset,
    publish" happens as a single step, so every subscriber sees a channel's
    publications in offset order without gaps. Commands go over redis-py's
    asyncio connection pools (``RedisCluster`` under Cluster). On standalone
    servers, concurrent commands are automatically pipelined (one round trip
    carries everything that queued up meanwhile, packed by hiredis). No
    command is retried on a connection error, because a retry could apply a
    publish twice.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

import hiredis
from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


try:  # redis-py >= 6.4
    from redis.maint_notifications import MaintNotificationsConfig
except ImportError:  # pragma: no cover - older redis-py
    MaintNotificationsConfig = None  # type: ignore[assignment,misc]

from rtcore.backends.redis import scripts
from rtcore.backends.redis.errors import RedisEngineError, RedisUnavailableError, translate
from rtcore.backends.redis.keys import RedisKeys
from rtcore.backends.redis.sentinel import SentinelMaster, SentinelSettings
from rtcore.backends.sharding import shard_index


__all__ = [
    "DEFAULT_URL",
    "Endpoint",
    "RedisConnections",
    "RedisStore",
    "endpoint_from_url",
    "resolve_connections",
]


logger = logging.getLogger(__name__)

DEFAULT_URL: Final = "redis://127.0.0.1:6379"


# ---------------------------------------------------------------------------
# Connection settings
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how a pub/sub connection connects.

    ``locate``, when set, finds the address at each connect (the master
    behind Sentinel); ``host`` and ``port`` are then not used.
    """

    host: str
    port: int
    path: str | None = None
    ssl: ssl.SSLContext | None = None
    username: str | None = None
    password: str | None = None
    locate: Callable[[], Awaitable[tuple[str, int]]] | None = None
    label: str = ""

    @property
    def name(self) -> str:
        if self.label:
            return self.label
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


def endpoint_from_url(url: str) -> Endpoint:
    options = parse_url(url)
    tls = None
    connection_class = options.get("connection_class")
    if connection_class is not None and connection_class.__name__ == "SSLConnection":
        tls = _ssl_context(dict(options))
    return Endpoint(
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
        scripts.PRESENCE_ADD_MANY,
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


# Queued commands that start another pipeline while one is in flight.
_BURST = 32


class _Batcher:
    """Sends concurrent commands to one standalone server as pipelines.

    ``call`` queues a command. Whatever queued up during one event-loop turn
    goes out as one pipeline, at most ``max_batch`` commands each. While a
    pipeline is in flight, new commands wait for it and then go out together;
    only a burst (``_BURST`` queued) starts another pipeline beside it, up to
    ``max_pipelines``. A sequential caller therefore sees one round trip per
    command, a trickle of commands at most two, and a busy node sends few,
    large writes (a connect storm on Redis: −19% server CPU per connection
    against a new pipeline for every turn's commands).
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
        queue = self._queue
        queue.append((args, fut))
        if not self._scheduled and self._may_start(len(queue)):
            self._scheduled = True
            loop.call_soon(self._start)
        return fut

    def _may_start(self, queued: int) -> bool:
        # A pipeline's fixed cost (a pooled connection, a write, a read per
        # reply) dwarfs a command's: while one is in flight, commands wait to
        # go together when it returns, unless a burst is queued already.
        running = self._running
        return running == 0 or (running < self._max_pipelines and queued >= _BURST)

    def _start(self) -> None:
        self._scheduled = False
        queue = self._queue
        while queue and self._may_start(len(queue)):
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
            error = translate(exc, "Redis pipeline")
            self._health.failed(error)
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(translate(exc, "Redis command"))
        else:
            self._health.ok = True
            for (_, fut), result in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if isinstance(result, Exception):
                    fut.set_exception(translate(result, "Redis command"))
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
        sentinel: find the (one) master through Redis Sentinel. ``urls`` is
            then at most one URL, whose credentials, database and TLS options
            apply to the master (its host and port are not used).

        lineage: bind every stream to the master's replication id, so that
            a failover (a replica promoted) starts new epochs (docs/redis.md).
            On by default under Sentinel; turn it on for any other setup
            where a replica can take over the master's address.

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
        sentinel: SentinelSettings | None = None,
        lineage: bool | None = None,
    ) -> None:
        url_list = [urls] if isinstance(urls, str) else list(urls)
        if sentinel is not None:
            if cluster:
                raise ValueError("Redis Sentinel and Redis Cluster exclude each other")
            if len(url_list) > 1:
                raise ValueError("with Redis Sentinel, give at most one URL (the master's options)")
            url_list = url_list or [DEFAULT_URL]
        if not url_list:
            raise ValueError("at least one Redis URL is required")
        if not socket_timeout > 0 or not connect_timeout > 0:
            raise ValueError("Redis timeouts must be > 0 seconds")
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        self.urls: tuple[str, ...] = tuple(url_list)
        self.cluster = cluster
        self.connect_timeout = connect_timeout
        self.endpoints: tuple[Endpoint, ...] = tuple(endpoint_from_url(u) for u in url_list)
        self.lineage = sentinel is not None if lineage is None else lineage
        self._sentinel: SentinelMaster | None = None
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
            if sentinel is not None:
                self._sentinel = SentinelMaster(sentinel, socket_timeout, connect_timeout)
                options = _master_options(url_list[0])
                sentinel_pool = self._sentinel.pool(
                    {
                        **extra,
                        **options,
                        "socket_timeout": socket_timeout,
                        "socket_connect_timeout": connect_timeout,
                        "retry": no_retry,
                    },
                    max_connections,
                )
                client = Redis(connection_pool=sentinel_pool)
                self._clients.append(client)
                self._batchers.append(_Batcher(client, self._health))
                self.endpoints = (
                    replace(
                        self.endpoints[0],
                        locate=self._sentinel.locate,
                        label=self._sentinel.name,
                    ),
                )
                return
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
        self._check_open()
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
        if self._sentinel is not None:
            await self._sentinel.close()

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
        error = translate(exc, what)
        self._health.failed(error)
        return error

    # -- commands -----------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RedisEngineError("the Redis connections are closed")

    async def _on_cluster(self, what: str, call: Callable[[RedisCluster], Awaitable[Any]]) -> Any:
        """``call(cluster)``, within the connection limit; failures become ours."""
        cluster = await self.cluster_client()
        async with self._limit:
            try:
                result = await call(cluster)
            except Exception as exc:
                raise self._failed(exc, what) from exc
        self._health.ok = True
        return result

    async def script(
        self, channel: str, script: scripts.Script, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        """Run ``script`` on the shard (or slot) of ``channel``."""
        self._check_open()
        if self._cluster is None:
            shard = shard_index(channel, len(self._clients))
            return await self._batchers[shard].call(
                ("EVALSHA", script.sha, len(keys), *keys, *args)
            )

        async def run(cluster: RedisCluster) -> Any:
            try:
                return await cluster.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            except redis_errors.NoScriptError:
                return await cluster.execute_command("EVAL", script.source, len(keys), *keys, *args)

        return await self._on_cluster(f"Redis script {script.name}", run)

    async def publish(self, channel: str | None, name: str, message: bytes, sharded: bool) -> None:
        """PUBLISH (or SPUBLISH) ``message`` on the pub/sub channel ``name``.

        ``channel`` chooses the shard; ``None`` means the first one.
        """
        self._check_open()
        command = "SPUBLISH" if sharded else "PUBLISH"
        if self._cluster is None:
            shard = 0 if channel is None else shard_index(channel, len(self._clients))
            await self._batchers[shard].call((command, name, message))
            return
        await self._on_cluster(
            command,
            lambda cluster: cluster.execute_command(
                command, name, message, target_nodes=cluster.get_node_from_key(name)
            ),
        )

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
        self._check_open()
        if self._cluster is None:
            return await self._batchers[shard_index(channel, len(self._clients))].call(args)
        return await self._on_cluster(str(args[0]), lambda cluster: cluster.execute_command(*args))

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


def _master_options(url: str) -> dict[str, Any]:
    """redis-py connection options of ``url`` except where it points (for a Sentinel master)."""
    options = dict(parse_url(url))
    if options.pop("path", None):
        raise ValueError("with Redis Sentinel the Redis URL must be redis:// or rediss://")
    options.pop("host", None)
    options.pop("port", None)
    connection_class = options.pop("connection_class", None)
    if getattr(connection_class, "__name__", "") == "SSLConnection":
        options["ssl"] = True
    return options


def resolve_connections(
    connections: RedisConnections | str | Sequence[str], cluster: bool
) -> RedisConnections:
    """``connections`` (or new ones for those URLs), with one more user registered."""
    if isinstance(connections, RedisConnections):
        if cluster and not connections.cluster:
            raise ValueError("cluster=True needs RedisConnections built with cluster=True")
        conns = connections
    else:
        conns = RedisConnections(connections, cluster=cluster)
    conns.acquire()
    return conns


class RedisStore:
    """A store on a share of :class:`RedisConnections`, with its key names.

    The base of the history store and the presence manager: it takes a share
    of the connections (building them from URLs if given those) and gives it
    back on :meth:`close`.
    """

    def __init__(
        self, connections: RedisConnections | str | Sequence[str], prefix: str, cluster: bool
    ) -> None:
        self._conns = resolve_connections(connections, cluster)
        self.keys = RedisKeys(prefix, cluster=self._conns.cluster)
        self._closed = False

    @property
    def connections(self) -> RedisConnections:
        return self._conns

    async def close(self) -> None:
        """Release the connections; idempotent."""
        if not self._closed:
            self._closed = True
            await self._conns.release()
