"""The typed configuration model: :class:`Config` and its sections.

One tree of slotted dataclasses; every field documents its meaning and its
default. ``FIELD_DOCS``, ``HIDDEN_FIELDS`` and ``KEY_ALIASES`` describe the
sections whose classes live elsewhere (``TokenConfig``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from rtcore.auth.config import TokenConfig
from rtcore.config.consumers import ConsumerConfig, consumer_problems
from rtcore.config.fields import ConfigErrors, _duration, _err, _f, _problems_tree
from rtcore.config.maps import MapNamespaceOptions, subscription_type_problems
from rtcore.config.proxy import (
    ChannelProxyConfig,
    ClientProxyConfig,
    ProxyConfig,
    RpcConfig,
    RpcOptions,
)
from rtcore.config.transports import (
    EmulationSettings,
    HttpStreamSettings,
    SseSettings,
    UniHttpStreamSettings,
    UniSseSettings,
    UniWebSocketSettings,
)
from rtcore.errors import ConfigError


_NAME_RE = re.compile(r"^[-a-zA-Z0-9_.]{1,64}$")


@dataclass(slots=True)
class ChannelOptions(MapNamespaceOptions):
    """Options of the channels of one namespace (the default namespace has no name)."""

    presence: bool = _f(False, "Keep presence (who is subscribed) for channels.")
    join_leave: bool = _f(False, "Publish join/leave events (clients opt in with join_leave).")
    force_push_join_leave: bool = _f(False, "Send join/leave pushes to every subscriber.")
    history_size: int = _f(0, "Publications kept per channel stream (0: no history).")
    history_ttl: float = _duration(
        0.0, "How long an idle stream's publications live (0: no history)."
    )
    history_meta_ttl: float = _duration(30 * 86400.0, "How long the stream's epoch/offset live.")
    force_positioning: bool = _f(False, "Track every subscriber's position (offset + epoch).")
    allow_positioning: bool = _f(False, "Clients may ask for positioning.")
    force_recovery: bool = _f(False, "Every subscription is recoverable.")
    allow_recovery: bool = _f(False, "Clients may ask for recovery.")
    force_recovery_mode: str = _f(
        "stream", "Recovery from the whole stream (stream) or the latest publication (cache)."
    )
    allow_subscribe_for_client: bool = _f(
        False, "Authenticated clients may subscribe without a subscription token."
    )
    allow_subscribe_for_anonymous: bool = _f(
        False,
        "Anonymous clients may subscribe without a token (together with allow_subscribe_for_client).",
    )
    allow_publish_for_subscriber: bool = _f(False, "Subscribers may publish from the client.")
    allow_publish_for_client: bool = _f(
        False, "Any authenticated client may publish from the client."
    )
    allow_publish_for_anonymous: bool = _f(
        False, "Anonymous clients may publish (with one of the above)."
    )
    allow_presence_for_subscriber: bool = _f(False, "Subscribers may call presence/presence_stats.")
    allow_presence_for_client: bool = _f(False, "Any authenticated client may call presence.")
    allow_presence_for_anonymous: bool = _f(
        False, "Anonymous clients may call presence (with one of the above)."
    )
    allow_history_for_subscriber: bool = _f(False, "Subscribers may call history.")
    allow_history_for_client: bool = _f(False, "Any authenticated client may call history.")
    allow_history_for_anonymous: bool = _f(
        False, "Anonymous clients may call history (with one of the above)."
    )
    allow_user_limited_channels: bool = _f(
        False, "Channels with '#' list the users allowed in them."
    )
    subscribe_proxy_enabled: bool = _f(
        False, "The subscribe proxy decides subscriptions without a token (docs/proxy.md)."
    )
    subscribe_proxy_name: str = _f(
        "default", "Subscribe proxy: 'default' (channel.proxy.subscribe) or a proxy.named name."
    )
    publish_proxy_enabled: bool = _f(
        False, "The publish proxy decides client publications (and may replace their data)."
    )
    publish_proxy_name: str = _f(
        "default", "Publish proxy: 'default' (channel.proxy.publish) or a proxy.named name."
    )
    sub_refresh_proxy_enabled: bool = _f(
        False, "Expiring subscriptions are prolonged by the sub_refresh proxy, not by the client."
    )
    sub_refresh_proxy_name: str = _f(
        "default", "Sub_refresh proxy: 'default' (channel.proxy.sub_refresh) or a proxy.named name."
    )
    allowed_delta_types: list[str] = _f(
        [], "Delta compressions subscribers may ask for: [] or ['fossil'] (docs/protocol.md)."
    )
    delta_publish: bool = _f(
        False, "Publications are delta-compressed unless the publisher says otherwise."
    )
    allow_tags_filter: bool = _f(False, "Subscribers may filter publications by tags (tf).")
    allow_channel_compaction: bool = _f(
        False, "Subscribers that ask for it get pushes with a numeric channel id."
    )

    @property
    def history_enabled(self) -> bool:
        return self.history_size > 0 and self.history_ttl > 0

    def _problems(self, path: str) -> Iterator[ConfigError]:
        if self.history_size < 0:
            yield _err(path, "history_size", "must be >= 0")
        elif (self.history_size > 0) != (self.history_ttl > 0):
            yield _err(
                path,
                "history_size",
                "history_size and history_ttl must be set together (both > 0 enable history)",
            )
        if self.force_recovery_mode not in ("stream", "cache"):
            yield _err(path, "force_recovery_mode", "must be 'stream' or 'cache'")
        if (self.force_recovery or self.allow_recovery) and not self.history_enabled:
            yield _err(path, "force_recovery", "recovery needs history_size and history_ttl")
        if self.history_enabled and self.history_meta_ttl < self.history_ttl:
            yield _err(path, "history_meta_ttl", "must be >= history_ttl")
        yield from subscription_type_problems(self, path)
        unknown = [t for t in self.allowed_delta_types if t != "fossil"]
        if unknown:
            yield _err(
                path,
                "allowed_delta_types",
                f"unknown delta type {unknown[0]!r} (the only one is 'fossil')",
            )


@dataclass(slots=True)
class NamespaceOptions(ChannelOptions):
    """A named namespace: channels ``name:...`` get these options."""

    name: str = _f("", "Namespace name (letters, digits, -, _, .).")

    def _problems(self, path: str) -> Iterator[ConfigError]:
        if not _NAME_RE.match(self.name):
            yield _err(
                path,
                "name",
                f"invalid namespace name {self.name!r} (1-64 of letters, digits, -, _, .)",
            )
        yield from ChannelOptions._problems(self, path)


@dataclass(slots=True)
class ChannelConfig:
    """Channel naming and the namespaces."""

    without_namespace: ChannelOptions = field(
        default_factory=ChannelOptions, metadata={"doc": "Options of channels without a namespace."}
    )
    namespaces: list[NamespaceOptions] = _f([], "Named namespaces.")
    max_length: int = _f(255, "Longest channel name in bytes (longer: error 107).")
    private_prefix: str = _f("$", "Channels starting with it need a subscription token.")
    namespace_boundary: str = _f(":", "Separates namespace and channel name.")
    user_boundary: str = _f("#", "Starts the user list of a user-limited channel.")
    user_separator: str = _f(",", "Separates user ids in a user-limited channel.")
    proxy: ChannelProxyConfig = field(
        default_factory=ChannelProxyConfig,
        metadata={"doc": "Default subscribe, publish and sub_refresh proxies."},
    )

    def _problems(self, path: str) -> Iterator[ConfigError]:
        if self.max_length < 1:
            yield _err(path, "max_length", "must be >= 1")
        seen = set()
        for i, ns in enumerate(self.namespaces):
            yield from ns._problems(f"{path}.namespaces[{i}]")
            if ns.name in seen:
                yield _err(path, f"namespaces[{i}].name", f"duplicate namespace {ns.name!r}")
            seen.add(ns.name)
        for key in ("namespace_boundary", "user_boundary", "user_separator"):
            if len(getattr(self, key)) != 1:
                yield _err(path, key, "must be a single character")


#: Command kinds of client.command_rate_limit and the protocol methods each covers.
COMMAND_RATE_KINDS: dict[str, tuple[str, ...]] = {
    "subscribe": ("subscribe", "unsubscribe", "sub_refresh"),
    "publish": ("publish",),
    "history": ("history",),
    "presence": ("presence", "presence_stats"),
    "rpc": ("rpc",),
    "send": ("send",),
    "refresh": ("refresh",),
}


@dataclass(slots=True)
class CommandRateLimitConfig:
    """Per-connection token buckets, one per command kind (docs/security.md).

    A rate is commands per second (0: no limit); the burst is how many may come
    at once. publish, rpc and send carry the application's own traffic, whose
    normal rate only it knows: they are unlimited unless set.
    """

    action: str = _f(
        "error",
        "Over a limit: 'error' (the command gets error 111 'too many requests', temporary; "
        "a send is dropped) or 'disconnect' (3013 'too many requests').",
    )
    subscribe: float = _f(50.0, "subscribe, unsubscribe and sub_refresh per second.")
    subscribe_burst: int = _f(
        300, "subscribe/unsubscribe/sub_refresh burst (reconnects resubscribe all)."
    )
    publish: float = _f(0.0, "publish per second (0: no limit).")
    publish_burst: int = _f(100, "publish burst.")
    history: float = _f(50.0, "history per second.")
    history_burst: int = _f(100, "history burst.")
    presence: float = _f(50.0, "presence and presence_stats per second.")
    presence_burst: int = _f(100, "presence/presence_stats burst.")
    rpc: float = _f(0.0, "rpc per second (0: no limit).")
    rpc_burst: int = _f(100, "rpc burst.")
    send: float = _f(0.0, "send (asynchronous messages) per second (0: no limit).")
    send_burst: int = _f(100, "send burst.")
    refresh: float = _f(1.0, "refresh (connection token renewal) per second.")
    refresh_burst: int = _f(10, "refresh burst.")

    def _problems(self, path: str) -> Iterator[ConfigError]:
        if self.action not in ("error", "disconnect"):
            yield _err(path, "action", "must be 'error' or 'disconnect'")
        for kind in COMMAND_RATE_KINDS:
            if getattr(self, kind) < 0:
                yield _err(path, kind, "must be >= 0 (0: no limit)")
            if getattr(self, f"{kind}_burst") < 1:
                yield _err(path, f"{kind}_burst", "must be >= 1")


@dataclass(slots=True)
class ClientConfig:
    """Client connections: authentication, limits, timers."""

    token: TokenConfig = field(
        default_factory=TokenConfig, metadata={"doc": "Connection token keys."}
    )
    subscription_token: TokenConfig | None = field(
        default=None,
        metadata={"doc": "Separate subscription token keys (absent: the connection token keys)."},
    )
    allowed_origins: list[str] = _f(
        [], "Origins allowed for browser connections ('*': any; patterns with *)."
    )
    allow_anonymous_connect_without_token: bool = _f(
        False, "Accept connect without a token as anonymous user ''."
    )
    disallow_anonymous_connection_tokens: bool = _f(
        False, "Refuse tokens with an empty 'sub' (3507)."
    )
    ping_interval: float = _duration(25.0, "Server ping interval (0: no pings).")
    pong_timeout: float = _duration(
        8.0, "Time to answer a ping before disconnect 3012 (0: pongs not required)."
    )
    stale_close_delay: float = _duration(10.0, "Time to send connect before disconnect 3502.")
    expired_close_delay: float = _duration(
        25.0, "Grace after connection expiry before disconnect 3005."
    )
    expired_sub_close_delay: float = _duration(
        25.0, "Grace after subscription expiry before unsubscribe 2501."
    )
    channel_limit: int = _f(128, "Most channels one connection may subscribe to (0: no limit).")
    user_connection_limit: int = _f(0, "Most connections of one user on this node (0: no limit).")
    connection_limit: int = _f(0, "Most client connections on this node (0: no limit).")
    queue_max_size: int = _f(
        1 << 20, "Outgoing bytes per connection before disconnect 3008 (slow)."
    )
    max_messages_in_frame: int = _f(
        128, "Most protocol messages coalesced into one transport frame."
    )
    max_frame_size: int = _f(65536, "Most bytes coalesced into one transport frame.")
    write_delay: float = _duration(
        0.0,
        "Time a flush round waits after its first message, so that messages of several ticks "
        "share one write per connection (fewer writes, up to this much more latency); below "
        "pong_timeout, since pings wait too. 0: off.",
    )
    history_max_publication_limit: int = _f(
        300, "Cap of history limit from clients (-1/0 requests)."
    )
    recovery_max_publication_limit: int = _f(300, "Most publications one recovery may return.")
    max_commands_in_frame: int = _f(256, "Most commands in one incoming frame (more: 3501).")
    connect_rate_limit: float = _f(
        0.0, "New connections accepted per second on this node (0: no limit)."
    )
    per_ip_connection_limit: int = _f(
        0,
        "Most client connections from one IP address (IPv6: one /64) on this node; more get "
        "429 at the handshake (0: no limit). Clients behind one NAT or proxy share an address.",
    )
    per_ip_connect_rate_limit: float = _f(
        0.0,
        "New client connections per second from one IP address (IPv6: one /64); over it "
        "429 with Retry-After (0: no limit).",
    )
    per_ip_connect_burst: int = _f(
        20, "Connections one IP address may open at once before per_ip_connect_rate_limit applies."
    )
    command_rate_limit: CommandRateLimitConfig = field(
        default_factory=CommandRateLimitConfig,
        metadata={"doc": "Per-connection command rate limits by kind."},
    )
    channel_position_check_delay: float = _duration(
        40.0,
        "Positioned subscriptions that got no publication for this long have their stream "
        "position checked; one found behind is resubscribed (2500) or reconnected (3010). "
        "0: off.",
    )
    reconnect_jitter: float = _duration(
        5.0,
        "Window over which shutdown disconnects (3001) are spread, so clients reconnect spread out.",
    )
    node_name: str = _f(
        "",
        "Node id reported to emulated transports (default: hostname plus a per-process "
        "suffix; under --workers the worker index is appended).",
    )
    proxy: ClientProxyConfig = field(
        default_factory=ClientProxyConfig,
        metadata={"doc": "Connect and refresh proxies (docs/proxy.md)."},
    )

    def _problems(self, path: str) -> Iterator[ConfigError]:
        if self.ping_interval and self.pong_timeout and self.pong_timeout >= self.ping_interval:
            yield _err(path, "pong_timeout", "must be shorter than ping_interval")
        for key in ("channel_limit", "user_connection_limit", "connection_limit", "queue_max_size"):
            if getattr(self, key) < 0:
                yield _err(path, key, "must be >= 0")
        for key in ("max_messages_in_frame", "max_frame_size", "max_commands_in_frame"):
            if getattr(self, key) < 1:
                yield _err(path, key, "must be >= 1")
        if self.connect_rate_limit < 0:
            yield _err(path, "connect_rate_limit", "must be >= 0")
        if not 0 <= self.write_delay < (self.pong_timeout or float("inf")):
            yield _err(path, "write_delay", "must be >= 0 and below pong_timeout (pings wait too)")
        if self.channel_position_check_delay < 0:
            yield _err(path, "channel_position_check_delay", "must be >= 0 (0: off)")
        for key in ("per_ip_connection_limit", "per_ip_connect_rate_limit"):
            if getattr(self, key) < 0:
                yield _err(path, key, "must be >= 0 (0: no limit)")
        if self.per_ip_connect_burst < 1:
            yield _err(path, "per_ip_connect_burst", "must be >= 1")


@dataclass(slots=True)
class WebSocketSettings:
    """The WebSocket transport."""

    enabled: bool = _f(True, "Serve /connection/websocket.")
    message_size_limit: int = _f(65536, "Largest incoming message in bytes (larger: close 1009).")
    compression: bool = _f(False, "Negotiate permessage-deflate (costs CPU per connection).")
    compression_min_size: int = _f(128, "Smallest message compressed.")
    handshake_timeout: float = _duration(10.0, "Time to complete the HTTP upgrade.")
    close_timeout: float = _duration(5.0, "Wait for the peer's close frame before dropping TCP.")

    def _problems(self, path: str) -> Iterator[ConfigError]:
        if self.message_size_limit < 0:
            yield _err(path, "message_size_limit", "must be >= 0")
        if self.compression_min_size < 0:
            yield _err(path, "compression_min_size", "must be >= 0")


@dataclass(slots=True)
class HttpServerConfig:
    """The listening socket."""

    address: str = _f("127.0.0.1", "Interface to bind ('0.0.0.0' for all).")
    port: int = _f(8000, "TCP port.")
    tls_cert: str = _f(
        "", "PEM certificate chain file for TLS (wss://, https://); reloaded on SIGHUP."
    )
    tls_key: str = _f("", "PEM private key file for TLS.")
    max_body_size: int = _f(1 << 20, "Largest HTTP request body (larger: 413).")
    max_pipelined_requests: int = _f(
        32,
        "Most pipelined requests waiting on one connection; beyond it (or while the "
        "connection's unread responses exceed 1 MiB) the connection is not read.",
    )
    linger_timeout: float = _duration(
        5.0,
        "After an error response or a close frame for a protocol violation, how long input "
        "is read and discarded before the socket closes (so the peer gets the answer, not a reset).",
    )
    debug_endpoint: bool = _f(
        False,
        "Serve GET /debug/stats (asyncio tasks, open files, connections, RSS as JSON; "
        "needs the API key unless api.insecure).",
    )
    shutdown_timeout: float = _duration(
        10.0, "At shutdown, longest wait for in-flight server API requests to finish."
    )
    accept_queues: int = _f(
        1,
        "Listening sockets per process on each port (SO_REUSEPORT, Linux), each with its own "
        "kernel accept queue of up to net.core.somaxconn: more clients than that reconnecting "
        "at once then wait in the kernel instead of having their SYNs dropped. Any process of "
        "the same user can also bind a port opened this way.",
    )

    def _problems(self, path: str) -> Iterator[ConfigError]:
        if not 0 <= self.port <= 65535:
            yield _err(path, "port", "must be within 0..65535")
        if not 1 <= self.accept_queues <= 64:
            yield _err(path, "accept_queues", "must be within 1..64")
        if bool(self.tls_cert) != bool(self.tls_key):
            yield _err(path, "tls_cert", "tls_cert and tls_key go together")
        if self.max_body_size < 1:
            yield _err(path, "max_body_size", "must be >= 1")
        if self.max_pipelined_requests < 1:
            yield _err(path, "max_pipelined_requests", "must be >= 1")
        if self.linger_timeout < 0:
            yield _err(path, "linger_timeout", "must be >= 0 (0: close at once)")


@dataclass(slots=True)
class ApiConfig:
    """The server HTTP API (``POST /api/<method>``, see docs/api.md)."""

    enabled: bool = _f(True, "Serve the server API.")
    key: str = _f(
        "", "API key (X-API-Key or 'Authorization: apikey <key>'); empty: every request gets 401."
    )
    insecure: bool = _f(False, "Serve the API without a key (only behind a trusted network).")
    port: int = _f(0, "Separate internal port for /api and /metrics (0: the main http.port).")
    address: str = _f("", "Interface of the internal port (empty: http.address).")
    error_mode: str = _f(
        "default",
        "'default': errors in a 200 body; 'transport': errors as HTTP status codes.",
    )
    access_log: bool = _f(
        False,
        "Log every server API request at info level (logger rtcore.server.api.access): "
        "method, status, duration and remote address.",
    )

    def _problems(self, path: str) -> Iterator[ConfigError]:
        if not 0 <= self.port <= 65535:
            yield _err(path, "port", "must be within 0..65535 (0: serve the API on http.port)")
        if self.error_mode not in ("default", "transport"):
            yield _err(path, "error_mode", "must be 'default' or 'transport'")


@dataclass(slots=True)
class AdminConfig:
    """The admin web UI (docs/admin.md), off by default.

    Served on the internal port when api.port is set, else on http.port, at
    ``/`` (or under handler_prefix).
    """

    enabled: bool = _f(False, "Serve the admin web UI.")
    password: str = _f("", "Password to sign in to the admin UI (required unless insecure).")
    secret: str = _f(
        "", "Key that signs the admin's session tokens (HMAC-SHA256; required unless insecure)."
    )
    insecure: bool = _f(
        False, "No sign-in: whoever reaches the UI is admin (only behind a trusted network)."
    )
    external: bool = _f(False, "Serve the UI on http.port even when api.port is set.")
    handler_prefix: str = _f(
        "", "Path prefix of the UI and its endpoints, e.g. '/ops' (empty: the UI is at /)."
    )
    token_ttl: float = _duration(12 * 3600.0, "How long a sign-in lasts.")

    def _problems(self, path: str) -> Iterator[ConfigError]:
        prefix = self.handler_prefix
        if prefix and (not prefix.startswith("/") or prefix.endswith("/") or "?" in prefix):
            yield _err(
                path, "handler_prefix", "must start with '/' and not end with '/' (or be empty)"
            )
        if self.token_ttl <= 0:
            yield _err(path, "token_ttl", "must be > 0")
        if self.enabled and not self.insecure:
            for key in ("password", "secret"):
                if not getattr(self, key):
                    yield _err(
                        path,
                        key,
                        "is required when admin.enabled is true (or set admin.insecure = true)",
                    )


@dataclass(slots=True)
class MetricsConfig:
    """Prometheus metrics at ``/metrics`` (on the internal port when api.port is set)."""

    enabled: bool = _f(False, "Serve /metrics (Prometheus text format).")


@dataclass(slots=True)
class EngineConfig:
    """Broker, history and presence backend."""

    type: str = _f("memory", "'memory' (single process) or 'redis'.")
    redis_address: list[str] = _f(
        ["redis://127.0.0.1:6379/0"],
        "Redis URLs (several: sharding). With Sentinel: one URL whose credentials, database "
        "and TLS options apply to the master (its host and port are not used).",
    )
    redis_prefix: str = _f("rtcore", "Prefix of every Redis key and channel.")
    redis_sentinel_address: list[str] = _f(
        [], "Sentinels (host:port or redis:// URLs); set: find the master through Sentinel."
    )
    redis_sentinel_master_name: str = _f("", "Name of the master the Sentinels monitor.")
    redis_sentinel_user: str = _f("", "User for the Sentinels (ACL), if they need one.")
    redis_sentinel_password: str = _f("", "Password for the Sentinels (requirepass / ACL).")
    redis_sentinel_tls: bool = _f(False, "Connect to the Sentinels over TLS.")
    redis_sentinel_tls_server_ca_pem_file: str = _f(
        "", "CA bundle verifying the Sentinels (empty: the system's)."
    )
    redis_sentinel_tls_cert_pem_file: str = _f("", "Client certificate for the Sentinels.")
    redis_sentinel_tls_key_pem_file: str = _f("", "Key of the client certificate.")
    redis_sentinel_tls_insecure_skip_verify: bool = _f(
        False, "Do not verify the Sentinels' certificates (tests only)."
    )
    presence_ttl: float = _duration(
        60.0,
        "Presence entries expire unless refreshed within this time. A node refreshes its "
        "clients' entries with each ping when client.ping_interval is at most half "
        "of it, else every third of it.",
    )
    memory_max_streams: int = _f(
        100_000,
        "Memory engine: most history streams kept; a new one evicts the least recently used "
        "stream, one without publications first (docs/security.md).",
    )

    def _problems(self, path: str) -> Iterator[ConfigError]:
        if self.type not in ("memory", "redis"):
            yield _err(path, "type", "must be 'memory' or 'redis'")
        if self.presence_ttl <= 0:
            yield _err(path, "presence_ttl", "must be > 0")
        if self.memory_max_streams < 1:
            yield _err(path, "memory_max_streams", "must be >= 1")
        if self.redis_sentinel_address:
            if self.type != "redis":
                yield _err(path, "redis_sentinel_address", "needs type = 'redis'")
            if not self.redis_sentinel_master_name:
                yield _err(path, "redis_sentinel_master_name", "is required with Sentinel")
            if len(self.redis_address) > 1:
                yield _err(
                    path,
                    "redis_address",
                    "with Sentinel, at most one URL (the master's credentials and options)",
                )
        elif self.redis_sentinel_master_name:
            yield _err(path, "redis_sentinel_address", "is required with a master name")


@dataclass(slots=True)
class BrokerConfig:
    """A broker other than the engine's: publications between nodes (docs/nats.md)."""

    type: str = _f("", "Empty: the engine's own broker; 'nats': NATS core carries publications.")
    nats_url: list[str] = _f(["nats://127.0.0.1:4222"], "NATS server URLs (nats:// or tls://).")
    nats_prefix: str = _f("rtcore", "Prefix of every NATS subject.")
    nats_dial_timeout: float = _duration(1.0, "Timeout of one connection attempt.")
    nats_write_timeout: float = _duration(
        1.0, "How long a publish or subscribe waits for the server's confirmation."
    )

    def _problems(self, path: str) -> Iterator[ConfigError]:
        if self.type not in ("", "nats"):
            yield _err(path, "type", "must be empty (the engine's broker) or 'nats'")
        if self.type == "nats" and not self.nats_url:
            yield _err(path, "nats_url", "is required")
        if self.nats_dial_timeout <= 0:
            yield _err(path, "nats_dial_timeout", "must be > 0")
        if self.nats_write_timeout <= 0:
            yield _err(path, "nats_write_timeout", "must be > 0")


@dataclass(slots=True)
class LogConfig:
    """Logging (to standard error)."""

    level: str = _f("info", "debug, info, warning or error.")
    format: str = _f("text", "'text' or 'json' (one JSON object per line).")

    def _problems(self, path: str) -> Iterator[ConfigError]:
        if self.level.lower() not in ("debug", "info", "warning", "error"):
            yield _err(path, "level", "must be debug, info, warning or error")
        if self.format not in ("text", "json"):
            yield _err(path, "format", "must be 'text' or 'json'")


@dataclass(slots=True)
class GcConfig:
    """The cycle collector of a ``rtcore serve`` process (an embedding program keeps its own)."""

    freeze: bool = _f(
        True,
        "Freeze what survives each full collection, so that the next ones walk only newer "
        "objects (closed connections are freed by reference counting, not by the collector).",
    )
    freeze_young: bool = _f(
        True,
        "With freeze: also freeze what survives each collection of the middle generation, "
        "so that no full collection walks the connections (connection setup: 11% less "
        "CPU). A cycle that becomes garbage after that waits for the next rescan.",
    )
    rescan_every: int = _f(
        16,
        "Every this many full collections (with freeze_young: every this many times "
        "the middle generation's threshold of its collections), one walks the whole heap "
        "again (0: never).",
    )

    def _problems(self, path: str) -> Iterator[ConfigError]:
        if self.rescan_every < 0:
            yield _err(path, "rescan_every", "must be >= 0 (0: never)")


@dataclass(slots=True)
class Config:
    """The whole configuration of a node / server."""

    http: HttpServerConfig = field(
        default_factory=HttpServerConfig, metadata={"doc": "Listening socket."}
    )
    client: ClientConfig = field(
        default_factory=ClientConfig, metadata={"doc": "Client connections."}
    )
    channel: ChannelConfig = field(
        default_factory=ChannelConfig, metadata={"doc": "Channels and namespaces."}
    )
    websocket: WebSocketSettings = field(
        default_factory=WebSocketSettings, metadata={"doc": "WebSocket transport."}
    )
    api: ApiConfig = field(default_factory=ApiConfig, metadata={"doc": "Server HTTP API."})
    admin: AdminConfig = field(
        default_factory=AdminConfig, metadata={"doc": "Admin web UI (docs/admin.md)."}
    )
    metrics: MetricsConfig = field(
        default_factory=MetricsConfig, metadata={"doc": "Prometheus metrics."}
    )
    engine: EngineConfig = field(default_factory=EngineConfig, metadata={"doc": "Engine backend."})
    broker: BrokerConfig = field(
        default_factory=BrokerConfig, metadata={"doc": "Broker other than the engine's."}
    )
    log: LogConfig = field(default_factory=LogConfig, metadata={"doc": "Logging."})
    gc: GcConfig = field(default_factory=GcConfig, metadata={"doc": "Cycle collector."})
    http_stream: HttpStreamSettings = field(
        default_factory=HttpStreamSettings, metadata={"doc": "HTTP-streaming transport."}
    )
    sse: SseSettings = field(default_factory=SseSettings, metadata={"doc": "SSE transport."})
    emulation: EmulationSettings = field(
        default_factory=EmulationSettings, metadata={"doc": "Emulation endpoint."}
    )
    uni_websocket: UniWebSocketSettings = field(
        default_factory=UniWebSocketSettings, metadata={"doc": "Unidirectional WebSocket."}
    )
    uni_sse: UniSseSettings = field(
        default_factory=UniSseSettings, metadata={"doc": "Unidirectional SSE."}
    )
    uni_http_stream: UniHttpStreamSettings = field(
        default_factory=UniHttpStreamSettings, metadata={"doc": "Unidirectional HTTP streaming."}
    )
    proxy: ProxyConfig = field(
        default_factory=ProxyConfig, metadata={"doc": "Named proxies to the application backend."}
    )
    rpc: RpcConfig = field(default_factory=RpcConfig, metadata={"doc": "Client RPC."})
    consumers: list[ConsumerConfig] = _f(
        [], "Server API commands read from durable sources (docs/consumers.md)."
    )

    def validate(self) -> Config:
        """Check cross-field rules; raises ConfigError (ConfigErrors if several) naming the keys."""
        errors = list(_problems_tree(self, ""))
        if errors:
            raise errors[0] if len(errors) == 1 else ConfigErrors(errors)
        return self

    def _problems(self, path: str) -> Iterator[ConfigError]:
        if (
            self.api.port
            and self.api.port == self.http.port
            and ((self.api.address or self.http.address) == self.http.address)
        ):
            yield ConfigError(
                "api.port", "must differ from http.port (0: serve the API on http.port)"
            )
        yield from _proxy_reference_problems(self)
        yield from consumer_problems(self.consumers)
        yield from _broker_problems(self)


def _broker_problems(config: Config) -> Iterator[ConfigError]:
    """NATS carries no history: channels with history need the Redis engine to keep it."""
    if config.broker.type != "nats" or config.engine.type == "redis":
        return
    channel = config.channel
    scopes: list[tuple[str, ChannelOptions]] = [
        ("channel.without_namespace", channel.without_namespace)
    ]
    scopes += [(f"channel.namespaces[{i}]", ns) for i, ns in enumerate(channel.namespaces)]
    for path, opts in scopes:
        if opts.history_enabled:
            yield _err(
                path,
                "history_size",
                "history with broker.type = 'nats' needs engine.type = 'redis' to keep it "
                "(NATS keeps no history and the memory engine's is per process)",
            )


def _proxy_reference_problems(config: Config) -> Iterator[ConfigError]:
    """Every enabled proxy of a channel or RPC namespace must name a configured proxy."""
    named = {p.name for p in config.proxy.named}
    channel = config.channel
    defaults = {
        "subscribe": channel.proxy.subscribe,
        "publish": channel.proxy.publish,
        "sub_refresh": channel.proxy.sub_refresh,
    }
    scopes: list[tuple[str, ChannelOptions]] = [
        ("channel.without_namespace", channel.without_namespace)
    ]
    scopes += [(f"channel.namespaces[{i}]", ns) for i, ns in enumerate(channel.namespaces)]
    for path, opts in scopes:
        for kind, default in defaults.items():
            if not getattr(opts, f"{kind}_proxy_enabled"):
                continue
            name = getattr(opts, f"{kind}_proxy_name")
            key = f"{kind}_proxy_name"
            if name == "default":
                if not default.endpoint:
                    yield _err(
                        path, key, f"'default' needs channel.proxy.{kind}.endpoint to be set"
                    )
            elif name not in named:
                yield _err(path, key, f"no proxy named {name!r} in proxy.named")
    rpc = config.rpc
    rpc_scopes: list[tuple[str, RpcOptions]] = [("rpc.without_namespace", rpc.without_namespace)]
    rpc_scopes += [(f"rpc.namespaces[{i}]", ns) for i, ns in enumerate(rpc.namespaces)]
    for path, ropts in rpc_scopes:
        if not ropts.proxy_enabled:
            continue
        if ropts.proxy_name == "default":
            if not rpc.proxy.endpoint:
                yield _err(path, "proxy_name", "'default' needs rpc.proxy.endpoint to be set")
        elif ropts.proxy_name not in named:
            yield _err(path, "proxy_name", f"no proxy named {ropts.proxy_name!r} in proxy.named")


# -- documentation of fields defined outside this module ----------------------

#: Field docs of sections whose classes live elsewhere (``TokenConfig``).
FIELD_DOCS: dict[type, dict[str, str]] = {
    TokenConfig: {
        "hmac_secret_key": "HMAC secret; enables HS256/HS384/HS512 tokens.",
        "hmac_previous_secret_key": "Previous HMAC secret, still accepted during a rotation.",
        "hmac_previous_secret_key_valid_until": "Unix seconds after which the previous secret stops working (0: no deadline).",
        "rsa_public_key": "PEM RSA public key; enables RS256/RS384/RS512.",
        "ecdsa_public_key": "PEM ECDSA public key (P-256/P-384/P-521); enables the ES algorithm of its curve.",
        "jwks_url": "JWKS endpoint (alias: jwks_public_endpoint); may hold {{name}} placeholders; not with static keys.",
        "jwks_cache_ttl": "Seconds a fetched key set is trusted.",
        "jwks_refetch_interval": "Minimum seconds between two fetches of one endpoint.",
        "jwks_timeout": "Timeout in seconds of one JWKS request (two attempts are made).",
        "audience": "Required 'aud' value.",
        "audience_regex": "Python regex an 'aud' element must match (not with audience).",
        "issuer": "Required 'iss' value.",
        "issuer_regex": "Python regex 'iss' must match (not with issuer).",
        "user_id_claim": "Claim holding the user id (dotted path for nested claims).",
    },
}

#: Init fields that are not configuration keys (set by the loader itself).
HIDDEN_FIELDS: dict[type, frozenset[str]] = {TokenConfig: frozenset({"section"})}

#: Alternative key names accepted in files and the environment: alias -> key.
KEY_ALIASES: dict[type, dict[str, str]] = {TokenConfig: {"jwks_public_endpoint": "jwks_url"}}
