"""The typed configuration model.

One tree of slotted dataclasses; every field documents its meaning and its
default. :func:`config_from_mapping` builds a :class:`Config` from plain data
(a parsed TOML/YAML/JSON file, environment overrides) and reports every
invalid value as a :class:`~rtcore.errors.ConfigError` naming its key path
(``channel.namespaces[2].history_ttl``). Durations are seconds (int or float)
or strings with a unit (``"250ms"``, ``"25s"``, ``"10m"``, ``"1h"``, ``"30d"``).

The names follow Centrifugo's where a Centrifugo user would look for them.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .auth.config import TokenConfig
from .errors import ConfigError


__all__ = [
    "Config",
    "ChannelOptions",
    "NamespaceOptions",
    "ChannelConfig",
    "ClientConfig",
    "WebSocketSettings",
    "HttpServerConfig",
    "ApiConfig",
    "EngineConfig",
    "LogConfig",
    "config_from_mapping",
    "config_to_mapping",
    "parse_duration",
]

_NAME_RE = re.compile(r"^[-a-zA-Z0-9_.]{1,64}$")
_DURATION_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any, path: str = "value") -> float:
    """Seconds from a number or a string such as ``"25s"``; raises ConfigError."""
    if isinstance(value, bool):
        raise ConfigError(path, "expected a duration, got a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        m = _DURATION_RE.match(value)
        if not m:
            raise ConfigError(path, f"invalid duration {value!r} (use e.g. 500ms, 25s, 10m, 1h, 30d)")
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ConfigError(path, f"expected a duration, got {type(value).__name__}")
    if seconds < 0:
        raise ConfigError(path, "duration must not be negative")
    return seconds


# Marker in field metadata: the float field is a duration.
_DURATION = {"duration": True}


def _duration(default: float, doc: str) -> Any:
    return field(default=default, metadata={**_DURATION, "doc": doc})


def _f(default: Any, doc: str) -> Any:
    if isinstance(default, list | dict):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


@dataclass(slots=True)
class ChannelOptions:
    """Options of the channels of one namespace (the default namespace has no name)."""

    presence: bool = _f(False, "Keep presence (who is subscribed) for channels.")
    join_leave: bool = _f(False, "Publish join/leave events (clients opt in with join_leave).")
    force_push_join_leave: bool = _f(False, "Send join/leave pushes to every subscriber.")
    history_size: int = _f(0, "Publications kept per channel stream (0: no history).")
    history_ttl: float = _duration(0.0, "How long an idle stream's publications live (0: no history).")
    history_meta_ttl: float = _duration(30 * 86400.0, "How long the stream's epoch/offset live.")
    force_positioning: bool = _f(False, "Track every subscriber's position (offset + epoch).")
    allow_positioning: bool = _f(False, "Clients may ask for positioning.")
    force_recovery: bool = _f(False, "Every subscription is recoverable.")
    allow_recovery: bool = _f(False, "Clients may ask for recovery.")
    force_recovery_mode: str = _f("stream", "Recovery from the whole stream (stream) or the latest publication (cache).")
    allow_subscribe_for_client: bool = _f(False, "Authenticated clients may subscribe without a subscription token.")
    allow_subscribe_for_anonymous: bool = _f(False, "Anonymous clients may subscribe without a token.")
    allow_publish_for_subscriber: bool = _f(False, "Subscribers may publish from the client.")
    allow_publish_for_client: bool = _f(False, "Any authenticated client may publish from the client.")
    allow_publish_for_anonymous: bool = _f(False, "Anonymous clients may publish (with one of the above).")
    allow_presence_for_subscriber: bool = _f(False, "Subscribers may call presence/presence_stats.")
    allow_presence_for_client: bool = _f(False, "Any authenticated client may call presence.")
    allow_presence_for_anonymous: bool = _f(False, "Anonymous clients may call presence (with one of the above).")
    allow_history_for_subscriber: bool = _f(False, "Subscribers may call history.")
    allow_history_for_client: bool = _f(False, "Any authenticated client may call history.")
    allow_history_for_anonymous: bool = _f(False, "Anonymous clients may call history (with one of the above).")
    allow_user_limited_channels: bool = _f(False, "Channels with '#' list the users allowed in them.")

    @property
    def history_enabled(self) -> bool:
        return self.history_size > 0 and self.history_ttl > 0

    def _validate(self, path: str) -> None:
        if self.history_size < 0:
            raise ConfigError(f"{path}.history_size", "must be >= 0")
        if (self.history_size > 0) != (self.history_ttl > 0):
            raise ConfigError(
                f"{path}.history_size",
                "history_size and history_ttl must be set together (both > 0 enable history)",
            )
        if self.force_recovery_mode not in ("stream", "cache"):
            raise ConfigError(f"{path}.force_recovery_mode", "must be 'stream' or 'cache'")
        if (self.force_recovery or self.allow_recovery) and not self.history_enabled:
            raise ConfigError(f"{path}.force_recovery", "recovery needs history_size and history_ttl")
        if self.history_enabled and self.history_meta_ttl < self.history_ttl:
            raise ConfigError(f"{path}.history_meta_ttl", "must be >= history_ttl")


@dataclass(slots=True)
class NamespaceOptions(ChannelOptions):
    """A named namespace: channels ``name:...`` get these options."""

    name: str = _f("", "Namespace name (letters, digits, -, _, .).")

    def _validate(self, path: str) -> None:
        if not _NAME_RE.match(self.name):
            raise ConfigError(f"{path}.name", f"invalid namespace name {self.name!r}")
        ChannelOptions._validate(self, path)


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

    def _validate(self, path: str) -> None:
        if self.max_length < 1:
            raise ConfigError(f"{path}.max_length", "must be >= 1")
        self.without_namespace._validate(f"{path}.without_namespace")
        seen = set()
        for i, ns in enumerate(self.namespaces):
            ns._validate(f"{path}.namespaces[{i}]")
            if ns.name in seen:
                raise ConfigError(f"{path}.namespaces[{i}].name", f"duplicate namespace {ns.name!r}")
            seen.add(ns.name)
        for key in ("namespace_boundary", "user_boundary", "user_separator"):
            if len(getattr(self, key)) != 1:
                raise ConfigError(f"{path}.{key}", "must be a single character")


@dataclass(slots=True)
class ClientConfig:
    """Client connections: authentication, limits, timers."""

    token: TokenConfig = field(default_factory=TokenConfig, metadata={"doc": "Connection token keys."})
    subscription_token: TokenConfig | None = field(
        default=None,
        metadata={"doc": "Separate subscription token keys (absent: the connection token keys)."},
    )
    allowed_origins: list[str] = _f([], "Origins allowed for browser connections ('*': any; patterns with *).")
    allow_anonymous_connect_without_token: bool = _f(False, "Accept connect without a token as anonymous user ''.")
    disallow_anonymous_connection_tokens: bool = _f(False, "Refuse tokens with an empty 'sub' (3507).")
    ping_interval: float = _duration(25.0, "Server ping interval (0: no pings).")
    pong_timeout: float = _duration(8.0, "Time to answer a ping before disconnect 3012 (0: pongs not required).")
    stale_close_delay: float = _duration(10.0, "Time to send connect before disconnect 3502.")
    expired_close_delay: float = _duration(25.0, "Grace after connection expiry before disconnect 3005.")
    expired_sub_close_delay: float = _duration(25.0, "Grace after subscription expiry before unsubscribe 2501.")
    channel_limit: int = _f(128, "Most channels one connection may subscribe to (0: no limit).")
    user_connection_limit: int = _f(0, "Most connections of one user on this node (0: no limit).")
    connection_limit: int = _f(0, "Most client connections on this node (0: no limit).")
    queue_max_size: int = _f(1 << 20, "Outgoing bytes per connection before disconnect 3008 (slow).")
    max_messages_in_frame: int = _f(128, "Most protocol messages coalesced into one transport frame.")
    max_frame_size: int = _f(65536, "Most bytes coalesced into one transport frame.")
    history_max_publication_limit: int = _f(300, "Cap of history limit from clients (-1/0 requests).")
    recovery_max_publication_limit: int = _f(300, "Most publications one recovery may return.")
    max_commands_in_frame: int = _f(256, "Most commands in one incoming frame (more: 3501).")
    connect_rate_limit: float = _f(0.0, "New connections accepted per second on this node (0: no limit).")
    reconnect_jitter: float = _duration(5.0, "Window over which shutdown disconnects are spread.")
    node_name: str = _f("", "Name reported to clients for emulated transports (default: hostname).")

    def _validate(self, path: str) -> None:
        if self.ping_interval and self.pong_timeout and self.pong_timeout >= self.ping_interval:
            raise ConfigError(f"{path}.pong_timeout", "must be shorter than ping_interval")
        for key in ("channel_limit", "user_connection_limit", "connection_limit", "queue_max_size"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{path}.{key}", "must be >= 0")
        for key in ("max_messages_in_frame", "max_frame_size", "max_commands_in_frame"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{path}.{key}", "must be >= 1")
        if self.connect_rate_limit < 0:
            raise ConfigError(f"{path}.connect_rate_limit", "must be >= 0")


@dataclass(slots=True)
class WebSocketSettings:
    """The WebSocket transport."""

    enabled: bool = _f(True, "Serve /connection/websocket.")
    message_size_limit: int = _f(65536, "Largest incoming message in bytes (larger: close 1009).")
    compression: bool = _f(False, "Negotiate permessage-deflate (costs CPU per connection).")
    compression_min_size: int = _f(128, "Smallest message compressed.")
    handshake_timeout: float = _duration(10.0, "Time to complete the HTTP upgrade.")
    close_timeout: float = _duration(5.0, "Wait for the peer's close frame before dropping TCP.")

    def _validate(self, path: str) -> None:
        if self.message_size_limit < 0:
            raise ConfigError(f"{path}.message_size_limit", "must be >= 0")


@dataclass(slots=True)
class HttpServerConfig:
    """The listening socket."""

    address: str = _f("127.0.0.1", "Interface to bind ('0.0.0.0' for all).")
    port: int = _f(8000, "TCP port.")
    tls_cert: str = _f("", "PEM certificate chain file for TLS (wss://, https://).")
    tls_key: str = _f("", "PEM private key file for TLS.")
    max_body_size: int = _f(1 << 20, "Largest HTTP request body (larger: 413).")

    def _validate(self, path: str) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"{path}.port", "must be within 0..65535")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError(f"{path}.tls_cert", "tls_cert and tls_key go together")


@dataclass(slots=True)
class ApiConfig:
    """The server HTTP API (POST /api/<method>)."""

    enabled: bool = _f(True, "Serve the server API.")
    key: str = _f("", "API key (X-API-Key or 'Authorization: apikey <key>').")
    insecure: bool = _f(False, "Serve the API without a key (only behind a trusted network).")


@dataclass(slots=True)
class EngineConfig:
    """Broker, history and presence backend."""

    type: str = _f("memory", "'memory' (single process) or 'redis'.")
    redis_address: list[str] = _f(["redis://127.0.0.1:6379/0"], "Redis URLs (several: sharding).")
    redis_prefix: str = _f("rtcore", "Prefix of every Redis key and channel.")
    presence_ttl: float = _duration(60.0, "Presence entries expire unless refreshed within this time.")

    def _validate(self, path: str) -> None:
        if self.type not in ("memory", "redis"):
            raise ConfigError(f"{path}.type", "must be 'memory' or 'redis'")


@dataclass(slots=True)
class LogConfig:
    level: str = _f("info", "debug, info, warning or error.")
    format: str = _f("text", "'text' or 'json' (one JSON object per line).")

    def _validate(self, path: str) -> None:
        if self.level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"{path}.level", "must be debug, info, warning or error")
        if self.format not in ("text", "json"):
            raise ConfigError(f"{path}.format", "must be 'text' or 'json'")


@dataclass(slots=True)
class Config:
    """The whole configuration of a node / server."""

    http: HttpServerConfig = field(default_factory=HttpServerConfig, metadata={"doc": "Listening socket."})
    client: ClientConfig = field(default_factory=ClientConfig, metadata={"doc": "Client connections."})
    channel: ChannelConfig = field(default_factory=ChannelConfig, metadata={"doc": "Channels and namespaces."})
    websocket: WebSocketSettings = field(default_factory=WebSocketSettings, metadata={"doc": "WebSocket transport."})
    api: ApiConfig = field(default_factory=ApiConfig, metadata={"doc": "Server HTTP API."})
    engine: EngineConfig = field(default_factory=EngineConfig, metadata={"doc": "Engine backend."})
    log: LogConfig = field(default_factory=LogConfig, metadata={"doc": "Logging."})

    def validate(self) -> Config:
        """Check cross-field rules; raises ConfigError naming the key."""
        _validate_tree(self, "")
        return self


def _validate_tree(obj: Any, path: str) -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        sub = f"{path}.{f.name}" if path else f.name
        if dataclasses.is_dataclass(value):
            _validate_tree(value, sub)
    validate = getattr(obj, "_validate", None)
    if validate is not None:
        validate(path or type(obj).__name__)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _convert(value: Any, hint: Any, path: str, meta: Mapping[str, Any]) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ConfigError(path, f"expected a table/object, got {type(value).__name__}")
        return _build(hint, value, path)  # type: ignore[arg-type]
    if origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, str) and item is str:
            # Environment variables: comma-separated lists.
            return [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(path, f"expected a list, got {type(value).__name__}")
        return [_convert(v, item, f"{path}[{i}]", {}) for i, v in enumerate(value)]
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise ConfigError(path, "unsupported field type")  # pragma: no cover
        return _convert(value, args[0], path, meta)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.strip().lower() in ("1", "true", "yes", "on")
        raise ConfigError(path, f"expected true or false, got {value!r}")
    if hint is float:
        if meta.get("duration"):
            return parse_duration(value, path)
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ConfigError(path, f"expected a number, got {value!r}")
        try:
            return float(value)
        except ValueError:
            raise ConfigError(path, f"expected a number, got {value!r}") from None
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(path, f"expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]+\s*", value):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(path, f"expected an integer, got {value!r}")
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(path, f"expected a string, got {type(value).__name__}")
        return value
    raise ConfigError(path, f"unsupported field type {hint!r}")  # pragma: no cover


def _build(cls: type, data: Mapping[str, Any], path: str) -> Any:
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    if "section" in fields and "section" not in data:
        kwargs["section"] = path
    for key, value in data.items():
        sub = f"{path}.{key}" if path else str(key)
        f = fields.get(key)
        if f is None:
            raise ConfigError(sub, "unknown key")
        if value is None:
            continue
        kwargs[key] = _convert(value, hints[key], sub, f.metadata)
    return cls(**kwargs)


def config_from_mapping(data: Mapping[str, Any]) -> Config:
    """Build and validate a :class:`Config` from plain data."""
    if not isinstance(data, Mapping):
        raise ConfigError("(root)", "configuration must be a table/object")
    config: Config = _build(Config, data, "")
    return config.validate()


def config_to_mapping(config: Any) -> dict[str, Any]:
    """The configuration as plain data (for ``checkconfig``/debug output)."""
    return dataclasses.asdict(config)
