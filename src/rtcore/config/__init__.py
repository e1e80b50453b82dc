"""The typed configuration model and its loader.

One tree of slotted dataclasses; every field documents its meaning and its
default (``docs/config.md`` is generated from that metadata by
``tools/gen_config_docs.py``). Two entry points build a :class:`Config`:

* :func:`config_from_mapping` from plain data (a parsed file, a test's dict);
* :func:`load_config` from a TOML/YAML/JSON file, ``RTCORE_<SECTION>__<KEY>``
  environment variables and command-line overrides, in that order of
  precedence (later wins), on top of the defaults.

Every invalid value is reported as a :class:`~rtcore.errors.ConfigError`
naming its key path (``channel.namespaces[2].history_ttl``), and for values
that came from the environment or the command line, where they came from.
When several values are invalid, :class:`ConfigErrors` (a ``ConfigError``)
carries all of them. Durations are seconds (int or float) or strings with a
unit (``"250ms"``, ``"25s"``, ``"10m"``, ``"1h"``, ``"30d"``).

The names follow Centrifugo's where a Centrifugo user would look for them.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import os
import re
import ssl
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from rtcore.auth.config import TokenConfig
from rtcore.errors import ConfigError


__all__ = [
    "Config",
    "ChannelOptions",
    "NamespaceOptions",
    "ChannelConfig",
    "ClientConfig",
    "WebSocketSettings",
    "HttpServerConfig",
    "ApiConfig",
    "MetricsConfig",
    "ProxyOptions",
    "ProxyHttpOptions",
    "ClientProxyOptions",
    "ClientProxyConfig",
    "ChannelProxyConfig",
    "NamedProxy",
    "ProxyConfig",
    "RpcOptions",
    "RpcNamespace",
    "RpcConfig",
    "EngineConfig",
    "LogConfig",
    "ConfigErrors",
    "ENV_PREFIX",
    "FIELD_DOCS",
    "HIDDEN_FIELDS",
    "KEY_ALIASES",
    "config_from_mapping",
    "config_to_mapping",
    "env_var_name",
    "format_duration",
    "load_config",
    "parse_duration",
    "read_config_file",
]

#: Environment variables ``RTCORE_<SECTION>__<KEY>`` set configuration keys.
ENV_PREFIX = "RTCORE_"

_NAME_RE = re.compile(r"^[-a-zA-Z0-9_.]{1,64}$")
_DURATION_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class ConfigErrors(ConfigError):
    """Several invalid values at once; ``errors`` lists each one.

    ``path`` and ``message`` are those of the first error, so code that
    handles a single :class:`ConfigError` keeps working.
    """

    def __init__(self, errors: list[ConfigError]) -> None:
        if not errors:
            raise ValueError("ConfigErrors needs at least one error")
        first = errors[0]
        super().__init__(first.path, first.message)
        self.errors = list(errors)
        self.args = ("\n".join(str(e) for e in self.errors),)

    def __str__(self) -> str:
        return str(self.args[0])


def parse_duration(value: Any, path: str = "value") -> float:
    """Seconds from a number or a string such as ``"25s"``; raises ConfigError."""
    if isinstance(value, bool):
        raise ConfigError(path, "expected a duration, got a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        m = _DURATION_RE.match(value)
        if not m:
            raise ConfigError(
                path, f"invalid duration {value!r} (use e.g. 500ms, 25s, 10m, 1h, 30d)"
            )
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ConfigError(path, f"expected a duration, got {type(value).__name__}")
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise ConfigError(path, "duration must be a finite number")
    if seconds < 0:
        raise ConfigError(path, "duration must not be negative")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of a duration (``"25s"``, ``"30d"``, ``"250ms"``)."""
    if seconds == 0:
        return "0s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count = seconds / size
        if count >= 1 and count == int(count):
            return f"{int(count)}{unit}"
    ms = seconds * 1000
    if ms == int(ms):
        return f"{int(ms)}ms"
    return f"{seconds}s"


# Marker in field metadata: the float field is a duration.
_DURATION = {"duration": True}


def _duration(default: float, doc: str) -> Any:
    return field(default=default, metadata={**_DURATION, "doc": doc})


def _f(default: Any, doc: str) -> Any:
    if isinstance(default, list | dict):
        # Each instance gets its own copy of a mutable default.
        return field(default_factory=partial(copy.copy, default), metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


def _err(path: str, key: str, message: str) -> ConfigError:
    return ConfigError(f"{path}.{key}" if path else key, message)


# -- proxies to the application backend (rtcore.backends.proxy, docs/proxy.md) ---------

_PROXY_NAME_RE = re.compile(r"^[-a-zA-Z0-9_.]{2,}$")
_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
#: Headers of a proxy request that rtcore writes itself: never forwarded or configured.
PROXY_RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "expect",
        "proxy-connection",
    }
)


def _header_name_problems(path: str, key: str, names: list[str]) -> Iterator[ConfigError]:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if not _HEADER_NAME_RE.match(name):
            yield _err(path, f"{key}[{i}]", f"invalid header name {name!r}")
        elif name.lower() in PROXY_RESERVED_HEADERS:
            yield _err(path, f"{key}[{i}]", f"{name} is written by rtcore and cannot be forwarded")
        elif name.lower() in seen:
            yield _err(path, f"{key}[{i}]", f"duplicate header name {name!r}")
        seen.add(name.lower())


@dataclass(slots=True)
class ProxyHttpOptions:
    """HTTP options of a proxy."""

    static_headers: dict[str, str] = _f(
        {},
        "Headers added to every request; a forwarded header of the same name replaces one.",
    )

    def _problems(self, path: str) -> Iterator[ConfigError]:
        for name, value in self.static_headers.items():
            if not _HEADER_NAME_RE.match(name):
                yield _err(path, "static_headers", f"invalid header name {name!r}")
            elif name.lower() in PROXY_RESERVED_HEADERS:
                yield _err(path, "static_headers", f"{name} is written by rtcore and cannot be set")
            elif any(c in value for c in "\r\n\0"):
                yield _err(path, "static_headers", f"the value of {name} holds CR, LF or NUL")


@dataclass(slots=True)
class ProxyOptions:
    """One backend endpoint that events are POSTed to (Centrifugo's proxy object)."""

    endpoint: str = _f("", "http:// or https:// URL of the backend handler.")
    timeout: float = _duration(
        1.0, "Time for the whole request (connect, send, response); past it the call fails."
    )
    http_headers: list[str] = _f(
        [],
        "Headers of the client's HTTP request (WebSocket upgrade, stream request) to forward, by name.",
    )
    emulated_headers: list[str] = _f(
        [],
        "Headers from the connect command's headers map (client-controlled) to forward, by name.",
    )
    binary_encoding: bool = _f(
        False, "Send payloads as base64 b64data instead of JSON data (for binary payloads)."
    )
    include_connection_meta: bool = _f(
        False, "Add the connection's meta to requests (all but connect)."
    )
    http: ProxyHttpOptions = field(
        default_factory=ProxyHttpOptions, metadata={"doc": "HTTP options (static headers)."}
    )

    def _problems(self, path: str) -> Iterator[ConfigError]:
        if self.endpoint:
            problem = _endpoint_problem(self.endpoint)
            if problem:
                yield _err(path, "endpoint", problem)
        if self.timeout <= 0:
            yield _err(path, "timeout", "must be > 0")
        yield from _header_name_problems(path, "http_headers", self.http_headers)
        yield from _header_name_problems(path, "emulated_headers", self.emulated_headers)


def _endpoint_problem(endpoint: str) -> str:
    from urllib.parse import urlsplit

    try:
        url = urlsplit(endpoint)
        port = url.port
    except ValueError as exc:
        return f"invalid URL {endpoint!r} ({exc})"
    if url.scheme == "grpc":
        return "grpc:// proxies are not supported; use an http:// or https:// endpoint"
    if url.scheme not in ("http", "https"):
        return f"must be an http:// or https:// URL, got {endpoint!r}"
    if not url.hostname:
        return f"no host in {endpoint!r}"
    if url.username is not None or url.password is not None:
        return "credentials in the URL are not supported; set an Authorization header in http.static_headers"
    if url.fragment:
        return f"a fragment ('#...') has no meaning in {endpoint!r}"
    if port == 0:
        return f"port 0 in {endpoint!r}"
    if any(c.isspace() for c in endpoint):
        return f"whitespace in {endpoint!r}"
    return ""


@dataclass(slots=True)
class ClientProxyOptions(ProxyOptions):
    """A client-wide proxy (connect, refresh): a proxy object that is switched on."""

    enabled: bool = _f(False, "Use this proxy.")

    def _problems(self, path: str) -> Iterator[ConfigError]:
        yield from ProxyOptions._problems(self, path)
        if self.enabled and not self.endpoint:
            yield _err(path, "endpoint", "must be set when the proxy is enabled")


@dataclass(slots=True)
class ClientProxyConfig:
    """Client-wide proxies."""

    connect: ClientProxyOptions = field(
        default_factory=ClientProxyOptions,
        metadata={"doc": "Connect proxy: the backend authenticates connections without a token."},
    )
    refresh: ClientProxyOptions = field(
        default_factory=ClientProxyOptions,
        metadata={
            "doc": "Refresh proxy: at expiry the server asks the backend to prolong the connection."
        },
    )


@dataclass(slots=True)
class ChannelProxyConfig:
    """The default channel-wide proxies, used by namespaces whose proxy name is 'default'."""

    subscribe: ProxyOptions = field(
        default_factory=ProxyOptions, metadata={"doc": "Default subscribe proxy."}
    )
    publish: ProxyOptions = field(
        default_factory=ProxyOptions, metadata={"doc": "Default publish proxy."}
    )
    sub_refresh: ProxyOptions = field(
        default_factory=ProxyOptions, metadata={"doc": "Default sub_refresh proxy."}
    )


@dataclass(slots=True)
class NamedProxy(ProxyOptions):
    """A proxy that namespaces reference by name."""

    name: str = _f("", "Unique name (2+ of letters, digits, -, _, .); 'default' is reserved.")


@dataclass(slots=True)
class ProxyConfig:
    """Named proxies for channel and RPC namespaces, and proxy behaviour."""

    named: list[NamedProxy] = _f(
        [],
        "Proxies referenced by *_proxy_name in channel and RPC namespaces (Centrifugo's proxies).",
    )
    refresh_retry_interval: float = _duration(
        60.0,
        "After a failed refresh or sub_refresh proxy call, the connection or subscription lives on "
        "and the call is tried again after this long.",
    )

    def _problems(self, path: str) -> Iterator[ConfigError]:
        seen: set[str] = set()
        for i, proxy in enumerate(self.named):
            sub = f"{path}.named[{i}]"
            yield from _problems_tree(proxy, sub)
            if not _PROXY_NAME_RE.match(proxy.name):
                yield _err(
                    sub,
                    "name",
                    f"invalid proxy name {proxy.name!r} (2+ of letters, digits, -, _, .)",
                )
            elif proxy.name == "default":
                yield _err(sub, "name", "'default' names the default proxies; choose another name")
            elif proxy.name in seen:
                yield _err(sub, "name", f"duplicate proxy name {proxy.name!r}")
            seen.add(proxy.name)
            if not proxy.endpoint:
                yield _err(sub, "endpoint", "must be set")
        if self.refresh_retry_interval <= 0:
            yield _err(path, "refresh_retry_interval", "must be > 0")


@dataclass(slots=True)
class RpcOptions:
    """How client RPC calls of methods without an RPC namespace are handled."""

    proxy_enabled: bool = _f(False, "Send these RPC calls to the RPC proxy.")
    proxy_name: str = _f(
        "default", "The proxy: 'default' (rpc.proxy) or the name of one in proxy.named."
    )


@dataclass(slots=True)
class RpcNamespace(RpcOptions):
    """An RPC namespace: methods ``name:...``."""

    name: str = _f("", "Namespace name (2+ of letters, digits, -, _, .).")


@dataclass(slots=True)
class RpcConfig:
    """Client RPC calls and their proxy."""

    proxy: ProxyOptions = field(
        default_factory=ProxyOptions, metadata={"doc": "Default RPC proxy (proxy_name 'default')."}
    )
    without_namespace: RpcOptions = field(
        default_factory=RpcOptions,
        metadata={"doc": "Options of methods without a namespace."},
    )
    namespaces: list[RpcNamespace] = _f([], "RPC namespaces.")
    namespace_boundary: str = _f(":", "Separates the RPC namespace from the method name.")

    def _problems(self, path: str) -> Iterator[ConfigError]:
        if len(self.namespace_boundary) != 1:
            yield _err(path, "namespace_boundary", "must be a single character")
        seen: set[str] = set()
        for i, ns in enumerate(self.namespaces):
            if not _PROXY_NAME_RE.match(ns.name):
                yield _err(
                    path,
                    f"namespaces[{i}].name",
                    f"invalid RPC namespace name {ns.name!r} (2+ of letters, digits, -, _, .)",
                )
            elif ns.name in seen:
                yield _err(path, f"namespaces[{i}].name", f"duplicate RPC namespace {ns.name!r}")
            seen.add(ns.name)


@dataclass(slots=True)
class ChannelOptions:
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
    history_max_publication_limit: int = _f(
        300, "Cap of history limit from clients (-1/0 requests)."
    )
    recovery_max_publication_limit: int = _f(300, "Most publications one recovery may return.")
    max_commands_in_frame: int = _f(256, "Most commands in one incoming frame (more: 3501).")
    connect_rate_limit: float = _f(
        0.0, "New connections accepted per second on this node (0: no limit)."
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
    shutdown_timeout: float = _duration(
        10.0, "At shutdown, longest wait for in-flight server API requests to finish."
    )

    def _problems(self, path: str) -> Iterator[ConfigError]:
        if not 0 <= self.port <= 65535:
            yield _err(path, "port", "must be within 0..65535")
        if bool(self.tls_cert) != bool(self.tls_key):
            yield _err(path, "tls_cert", "tls_cert and tls_key go together")
        if self.max_body_size < 1:
            yield _err(path, "max_body_size", "must be >= 1")


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

    def _problems(self, path: str) -> Iterator[ConfigError]:
        if not 0 <= self.port <= 65535:
            yield _err(path, "port", "must be within 0..65535 (0: serve the API on http.port)")
        if self.error_mode not in ("default", "transport"):
            yield _err(path, "error_mode", "must be 'default' or 'transport'")


@dataclass(slots=True)
class MetricsConfig:
    """Prometheus metrics at ``/metrics`` (on the internal port when api.port is set)."""

    enabled: bool = _f(False, "Serve /metrics (Prometheus text format).")


@dataclass(slots=True)
class EngineConfig:
    """Broker, history and presence backend."""

    type: str = _f("memory", "'memory' (single process) or 'redis'.")
    redis_address: list[str] = _f(["redis://127.0.0.1:6379/0"], "Redis URLs (several: sharding).")
    redis_prefix: str = _f("rtcore", "Prefix of every Redis key and channel.")
    presence_ttl: float = _duration(
        60.0, "Presence entries expire unless refreshed within this time."
    )

    def _problems(self, path: str) -> Iterator[ConfigError]:
        if self.type not in ("memory", "redis"):
            yield _err(path, "type", "must be 'memory' or 'redis'")
        if self.presence_ttl <= 0:
            yield _err(path, "presence_ttl", "must be > 0")


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
class HttpStreamSettings:
    """HTTP-streaming with bidirectional emulation (centrifuge-js fallback)."""

    enabled: bool = _f(True, "Serve /connection/http_stream (and /emulation).")


@dataclass(slots=True)
class SseSettings:
    """Server-Sent Events with bidirectional emulation (centrifuge-js fallback)."""

    enabled: bool = _f(True, "Serve /connection/sse (and /emulation).")


@dataclass(slots=True)
class EmulationSettings:
    """The /emulation endpoint that carries client commands of http_stream/sse sessions."""

    max_request_body_size: int = _f(65536, "Largest emulation request body (larger: 413).")
    rate_limit: float = _f(
        100.0, "Emulation requests per second per session (over it: 429 and disconnect 3013)."
    )
    burst: int = _f(200, "Emulation requests a session may send in a burst.")

    def _validate(self, path: str) -> None:
        if self.max_request_body_size < 1:
            raise ConfigError(f"{path}.max_request_body_size", "must be >= 1")
        if self.rate_limit <= 0:
            raise ConfigError(f"{path}.rate_limit", "must be > 0")
        if self.burst < 1:
            raise ConfigError(f"{path}.burst", "must be >= 1")


@dataclass(slots=True)
class UniWebSocketSettings:
    """Unidirectional WebSocket (server to client only, no SDK needed)."""

    enabled: bool = _f(False, "Serve /connection/uni_websocket.")
    join_push_messages: bool = _f(False, "Send join/leave pushes on uni_websocket.")
    message_size_limit: int = _f(65536, "Largest incoming message (the connect request) in bytes.")


@dataclass(slots=True)
class UniSseSettings:
    """Unidirectional Server-Sent Events."""

    enabled: bool = _f(False, "Serve /connection/uni_sse.")
    max_request_body_size: int = _f(65536, "Largest connect request body (POST) in bytes.")


@dataclass(slots=True)
class UniHttpStreamSettings:
    """Unidirectional HTTP streaming."""

    enabled: bool = _f(False, "Serve /connection/uni_http_stream.")
    max_request_body_size: int = _f(65536, "Largest connect request body in bytes.")


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
    metrics: MetricsConfig = field(
        default_factory=MetricsConfig, metadata={"doc": "Prometheus metrics."}
    )
    engine: EngineConfig = field(default_factory=EngineConfig, metadata={"doc": "Engine backend."})
    log: LogConfig = field(default_factory=LogConfig, metadata={"doc": "Logging."})
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


def _problems_tree(obj: Any, path: str) -> Iterator[ConfigError]:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        sub = f"{path}.{f.name}" if path else f.name
        if dataclasses.is_dataclass(value):
            yield from _problems_tree(value, sub)
    problems = getattr(obj, "_problems", None)
    if problems is not None:
        yield from problems(path)


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


# -- building from plain data -------------------------------------------------

_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


class _EnvText(str):
    """A string from an environment variable: tables and lists may be given as JSON."""

    __slots__ = ()


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "a table"
    return type(value).__name__


def _env_json(value: _EnvText, path: str, what: str) -> Any:
    try:
        return json.loads(value)
    except ValueError as exc:
        raise ConfigError(path, f"expected {what} in the environment value ({exc})") from None


def _convert(
    value: Any, hint: Any, path: str, meta: Mapping[str, Any], errors: list[ConfigError]
) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, _EnvText):
            value = _env_json(value, path, "a JSON object")
        if not isinstance(value, Mapping):
            raise ConfigError(path, f"expected a table/object, got {_kind(value)}")
        return _build(hint, value, path, errors)  # type: ignore[arg-type]
    if origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, str) and item is str:
            # Environment variables (and the lenient file form): comma-separated lists.
            return [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, _EnvText):
            value = _env_json(value, path, "a JSON array")
        if not isinstance(value, list | tuple):
            raise ConfigError(path, f"expected a list, got {_kind(value)}")
        out = []
        for i, v in enumerate(value):
            try:
                out.append(_convert(v, item, f"{path}[{i}]", {}, errors))
            except ConfigError as exc:
                errors.append(exc)
        return out
    if origin is dict:
        key_type, item = typing.get_args(hint)
        if isinstance(value, _EnvText):
            value = _env_json(value, path, "a JSON object")
        if not isinstance(value, Mapping):
            raise ConfigError(path, f"expected a table/object, got {_kind(value)}")
        table = {}
        for k, v in value.items():
            if not isinstance(k, key_type):
                raise ConfigError(path, f"expected {key_type.__name__} keys, got {k!r}")
            try:
                table[k] = _convert(v, item, f"{path}.{k}", {}, errors)
            except ConfigError as exc:
                errors.append(exc)
        return table
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise ConfigError(path, "unsupported field type")  # pragma: no cover
        return _convert(value, args[0], path, meta, errors)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in (
            "1",
            "true",
            "yes",
            "on",
            "0",
            "false",
            "no",
            "off",
        ):
            return value.strip().lower() in ("1", "true", "yes", "on")
        raise ConfigError(path, f"expected true or false, got {value!r}")
    if hint is float:
        if meta.get("duration"):
            return parse_duration(value, path)
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ConfigError(path, f"expected a number, got {value!r}")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(path, f"expected a number, got {value!r}") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise ConfigError(path, f"expected a finite number, got {value!r}")
        return number
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
            raise ConfigError(path, f"expected a string, got {_kind(value)}")
        return str(value)
    raise ConfigError(path, f"unsupported field type {hint!r}")  # pragma: no cover


def _build(cls: type, data: Mapping[str, Any], path: str, errors: list[ConfigError]) -> Any:
    """Build ``cls`` from ``data``; bad values go to ``errors`` and keep their defaults."""
    hints = _hints(cls)
    hidden = HIDDEN_FIELDS.get(cls, frozenset())
    aliases = KEY_ALIASES.get(cls, {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name not in hidden}
    kwargs: dict[str, Any] = {}
    if "section" in hidden:
        kwargs["section"] = path
    for key, value in data.items():
        sub = f"{path}.{key}" if path else str(key)
        name = aliases.get(key, key) if isinstance(key, str) else key
        if name != key and name in data:
            errors.append(ConfigError(sub, f"is another name of {name}; set only one of them"))
            continue
        f = fields.get(name) if isinstance(name, str) else None
        if f is None:
            errors.append(ConfigError(sub, "unknown key"))
            continue
        if value is None:
            continue
        try:
            kwargs[name] = _convert(value, hints[name], sub, f.metadata, errors)
        except ConfigError as exc:
            errors.append(exc)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        # A section that validates itself on construction (TokenConfig).
        errors.append(exc)
        return cls(**{k: v for k, v in kwargs.items() if k == "section"})


def _parent(path: str) -> str:
    cut = max(path.rfind("."), path.rfind("["))
    return path[:cut] if cut > 0 else ""


def _cross_field_problems(config: Config, value_errors: list[ConfigError]) -> list[ConfigError]:
    """Cross-field problems, except in sections that already have a bad value.

    A section with an invalid value was built with that key's default, so
    its cross-field checks would report noise rather than the user's mistake.
    """
    tainted = {
        _parent(e.path) or e.path for e in value_errors if not e.message.startswith("unknown key")
    }
    out = []
    for problem in _problems_tree(config, ""):
        section = _parent(problem.path) or problem.path
        if any(section == t or section.startswith((t + ".", t + "[")) for t in tainted):
            continue
        out.append(problem)
    return out


def _raise(errors: list[ConfigError]) -> None:
    if len(errors) == 1:
        raise errors[0]
    raise ConfigErrors(errors)


def config_from_mapping(data: Mapping[str, Any]) -> Config:
    """Build and validate a :class:`Config` from plain data.

    Raises:
        ConfigError: the invalid value (:class:`ConfigErrors` when several).
    """
    if not isinstance(data, Mapping):
        raise ConfigError("(root)", "configuration must be a table/object")
    errors: list[ConfigError] = []
    config: Config = _build(Config, data, "", errors)
    errors.extend(_cross_field_problems(config, errors))
    if errors:
        _raise(errors)
    return config


def config_to_mapping(config: Any) -> dict[str, Any]:
    """The configuration as plain data (for ``checkconfig``/debug output)."""
    return dataclasses.asdict(config)


# -- loading: file < environment < command line --------------------------------


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a ``.toml``, ``.yaml``/``.yml`` or ``.json`` configuration file.

    Raises:
        ConfigError: named after the file, for a missing file, an unknown
            extension, a syntax error (with its line) or a top level that is
            not a table.
    """
    p = Path(path)
    where = str(path)
    suffix = p.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml", ".json"):
        raise ConfigError(
            where, "unknown configuration format; use a .toml, .yaml, .yml or .json file"
        )
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(where, "no such file") from None
    except IsADirectoryError:
        raise ConfigError(where, "is a directory, not a configuration file") from None
    except OSError as exc:
        raise ConfigError(where, f"cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(where, f"not UTF-8 text (byte {exc.start})") from None
    data: Any
    if suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(where, f"invalid TOML: {exc}") from None
    elif suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                where, f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
            ) from None
    else:
        yaml: Any = importlib.import_module("yaml")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            problem = getattr(exc, "problem", None) or str(exc)
            at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            raise ConfigError(where, f"invalid YAML: {problem}{at}") from None
        if data is None:
            data = {}
    if not isinstance(data, dict):
        raise ConfigError(where, f"the top level must be a table/object, got {_kind(data)}")
    return data


def env_var_name(path: str) -> str:
    """The environment variable of a key path: ``client.token.hmac_secret_key`` ->
    ``RTCORE_CLIENT__TOKEN__HMAC_SECRET_KEY``."""
    return ENV_PREFIX + "__".join(part.upper() for part in path.split("."))


def _set_path(target: dict[str, Any], parts: list[str], value: Any) -> None:
    node = target
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            # A deeper key replaces a scalar set for its parent: the later source wins.
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        elif isinstance(value, Mapping):
            base[key] = {}
            _merge(base[key], value)
        else:
            base[key] = value


def _env_mapping(
    env: Mapping[str, str], sources: dict[str, str]
) -> tuple[dict[str, Any], list[ConfigError]]:
    out: dict[str, Any] = {}
    errors: list[ConfigError] = []
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :]
        if "__" not in rest:
            # RTCORE_NO_EXTENSIONS and friends are switches, not configuration keys.
            continue
        parts = [p.lower() for p in rest.split("__")]
        if any(not p for p in parts):
            errors.append(
                ConfigError(name, "malformed variable name (use RTCORE_<SECTION>__<KEY>)")
            )
            continue
        path = ".".join(parts)
        sources[path] = f"environment variable {name}"
        _set_path(out, parts, _EnvText(env[name]))
    return out, errors


def _overrides_mapping(
    overrides: Mapping[str, Any], sources: dict[str, str]
) -> tuple[dict[str, Any], list[ConfigError]]:
    out: dict[str, Any] = {}
    errors: list[ConfigError] = []
    for key, leaf in _leaves(overrides, ""):
        parts = key.split(".")
        if any(not p for p in parts):
            errors.append(ConfigError(key, "malformed key path"))
            continue
        sources[key] = "the command line"
        _set_path(out, parts, leaf)
    return out, errors


def _leaves(value: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
    for k, v in value.items():
        path = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            yield from _leaves(v, path)
        else:
            yield path, v


def _annotate(error: ConfigError, sources: Mapping[str, str]) -> ConfigError:
    path = error.path
    best = ""
    for key in sources:
        inside = path == key or path.startswith(key + ".") or path.startswith(key + "[")
        if (inside and len(key) > len(best)) or (not best and key.startswith(path + ".")):
            best = key
    if not best:
        return error
    return ConfigError(path, f"{error.message} (set by {sources[best]})")


def _check_files(config: Config) -> Iterator[ConfigError]:
    http = config.http
    if http.tls_cert and http.tls_key:
        for key in ("tls_cert", "tls_key"):
            file = getattr(http, key)
            if not os.path.isfile(file):
                yield ConfigError(f"http.{key}", f"no such file: {file}")
                return
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ctx.load_cert_chain(http.tls_cert, http.tls_key)
        except (ssl.SSLError, OSError) as exc:
            yield ConfigError(
                "http.tls_cert", f"cannot load the certificate chain and key: {exc.strerror or exc}"
            )


def load_config(
    path: str | Path | None,
    env: Mapping[str, str],
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Load the configuration: defaults < file < environment < ``overrides``.

    Args:
        path: a ``.toml``/``.yaml``/``.yml``/``.json`` file, or None for none.
        env: environment variables (pass ``os.environ``); only
            ``RTCORE_<SECTION>__<KEY>`` names (with ``__`` between levels)
            are configuration keys, e.g. ``RTCORE_HTTP__PORT=9000`` or
            ``RTCORE_CLIENT__TOKEN__HMAC_SECRET_KEY=...``. Lists of strings
            are comma-separated; tables and lists of tables are JSON.
        overrides: highest-precedence values (the command line), keyed by
            dotted path (``{"http.port": 9000}``) or nested.

    Returns:
        The validated configuration. TLS files, when configured, are checked
        to exist and to load.

    Raises:
        ConfigError: one invalid value, or :class:`ConfigErrors` with every
            invalid value; each names its key path and, for values from the
            environment or the command line, where the value came from.
    """
    data: dict[str, Any] = read_config_file(path) if path is not None else {}
    sources: dict[str, str] = {}
    env_data, errors = _env_mapping(env, sources)
    _merge(data, env_data)
    if overrides:
        cli_data, cli_errors = _overrides_mapping(overrides, sources)
        errors.extend(cli_errors)
        _merge(data, cli_data)
    config: Config = _build(Config, data, "", errors)
    errors.extend(_cross_field_problems(config, errors))
    if not errors:
        errors.extend(_check_files(config))
    if errors:
        _raise([_annotate(e, sources) for e in errors])
    return config
