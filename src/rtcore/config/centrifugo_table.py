"""The table of Centrifugo v6 configuration keys and their rtcore names.

:data:`KEY_MAP` lists the keys of a Centrifugo v6 configuration file
(``client.token.hmac_secret_key``, ``http_api.key``, ``admin``, ...) with the
rtcore key each becomes, or why there is none. It serves three readers:

* the loader, which names the rtcore key when a file holds a Centrifugo key
  (:func:`centrifugo_key_errors`);
* ``rtcore config import`` (:func:`import_centrifugo`), which converts a
  Centrifugo file and lists what has no equivalent;
* docs/centrifugo.md, whose key table ``tools/gen_config_docs.py`` generates
  from it.

:mod:`rtcore.config.centrifugo` reads it; this module is the data and the
conversions of single values.

Paths spell list elements ``[]``. An entry with ``subtree`` covers every key
under its path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rtcore.config.durations import format_duration


__all__ = [
    "KeyMapping",
    "KEY_MAP",
    "CENTRIFUGO_MARK",
    "NOT_IMPLEMENTED",
    "NoEquivalent",
    "duration_text",
    "parse_go_duration",
]

#: Every message about a Centrifugo key contains it (the command line adds a hint).
CENTRIFUGO_MARK = "Centrifugo"


class NoEquivalent(ValueError):
    """A value that rtcore cannot take (the message says why)."""


@dataclass(frozen=True, slots=True)
class KeyMapping:
    """One Centrifugo v6 key: its rtcore key (None: no equivalent) and a note."""

    centrifugo: str
    rtcore: str | None
    note: str = ""
    subtree: bool = False
    convert: Callable[[Any], Any] | None = field(default=None, compare=False)
    # Converted together with other keys after the walk (see _post_process).
    structural: bool = False


# -- value conversions ----------------------------------------------------------------

_GO_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_GO_PART = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(value: Any) -> float:
    """Seconds of a Go duration (``"1m30s"``, ``"720h"``) or of integer nanoseconds."""
    if isinstance(value, bool):
        raise NoEquivalent(f"expected a duration, got {value!r}")
    if isinstance(value, int | float):
        return float(value) / 1e9
    if not isinstance(value, str):
        raise NoEquivalent(f"expected a duration, got {value!r}")
    text = value.strip()
    sign = -1.0 if text.startswith("-") else 1.0
    text = text.lstrip("+-")
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    for m in _GO_PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _GO_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise NoEquivalent(f"invalid Go duration {value!r}")
    return sign * total


def duration_text(value: Any) -> str:
    """A Go duration as an rtcore duration string (negative: 0)."""
    return format_duration(max(0.0, parse_go_duration(value)))


def _negate(value: Any) -> Any:
    return not value if isinstance(value, bool) else value


def _port(value: Any) -> Any:
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if value == "":
        return 0
    return value


_LOG_LEVELS = {"trace": "debug", "warn": "warning", "fatal": "error", "none": "error"}


def _log_level(value: Any) -> Any:
    return _LOG_LEVELS.get(value, value) if isinstance(value, str) else value


def _static_headers(value: Any) -> Any:
    # Centrifugo also takes a list of {"key": ..., "value": ...}.
    if isinstance(value, list):
        return {
            str(item.get("key")): str(item.get("value"))
            for item in value
            if isinstance(item, Mapping)
        }
    return value


def _string_list(value: Any) -> Any:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def _redis_url(address: str) -> str:
    return address if "://" in address else f"redis://{address}"


def _first_redis_url(value: Any) -> Any:
    addresses = _string_list(value)
    if isinstance(addresses, list) and addresses:
        return _redis_url(str(addresses[0]))
    return value


def _pem_file(value: Any) -> Any:
    if isinstance(value, str) and "-----BEGIN" in value:
        raise NoEquivalent("rtcore reads PEM files: write the PEM to a file and give its path")
    return value


# -- the table ----------------------------------------------------------------------------

NOT_IMPLEMENTED = "not implemented in rtcore"

# Options of channels without a namespace and of every namespace, under the same names.
_CHANNEL_OPTIONS = (
    "presence",
    "join_leave",
    "force_push_join_leave",
    "history_size",
    "history_ttl",
    "history_meta_ttl",
    "force_positioning",
    "allow_positioning",
    "force_recovery",
    "allow_recovery",
    "force_recovery_mode",
    "allow_subscribe_for_anonymous",
    "allow_subscribe_for_client",
    "allow_publish_for_anonymous",
    "allow_publish_for_subscriber",
    "allow_publish_for_client",
    "allow_presence_for_anonymous",
    "allow_presence_for_subscriber",
    "allow_presence_for_client",
    "allow_history_for_anonymous",
    "allow_history_for_subscriber",
    "allow_history_for_client",
    "allow_user_limited_channels",
    "subscribe_proxy_enabled",
    "subscribe_proxy_name",
    "publish_proxy_enabled",
    "publish_proxy_name",
    "sub_refresh_proxy_enabled",
    "sub_refresh_proxy_name",
    "subscription_type",
    "map_clients_presence_channel_prefix",
    "map_users_presence_channel_prefix",
)
_CHANNEL_OPTIONS_NONE = {
    "auto_cache_recover": NOT_IMPLEMENTED,
    "allowed_delta_types": "delta compression is " + NOT_IMPLEMENTED,
    "delta_publish": "delta compression is " + NOT_IMPLEMENTED,
    "allow_tags_filter": "tags filters are " + NOT_IMPLEMENTED,
    "channel_regex": NOT_IMPLEMENTED + " (channel names are checked for length and "
    "printable characters)",
    "publication_data_format": NOT_IMPLEMENTED + " (publication data is passed as is)",
    "subscribe_stream_proxy_enabled": "subscribe streams are " + NOT_IMPLEMENTED,
    "subscribe_stream_proxy_name": "subscribe streams are " + NOT_IMPLEMENTED,
    "subscribe_stream_proxy_bidirectional": "subscribe streams are " + NOT_IMPLEMENTED,
}
# A namespace's map section, under the same names.
_MAP_OPTIONS = (
    "mode",
    "key_ttl",
    "stream_size",
    "stream_ttl",
    "meta_ttl",
    "allow_publish_for_subscriber",
    "allow_publish_for_client",
    "allow_publish_for_anonymous",
    "allow_remove_for_subscriber",
    "allow_remove_for_client",
    "allow_remove_for_anonymous",
    "default_page_size",
    "min_page_size",
    "max_page_size",
    "live_transition_max_publication_limit",
    "subscribe_catch_up_timeout",
    "client_key",
    "remove_client_on_unsubscribe",
)
_MAP_NONE = {
    "publish_proxy_enabled": "map proxies are " + NOT_IMPLEMENTED,
    "publish_proxy_name": "map proxies are " + NOT_IMPLEMENTED,
    "remove_proxy_enabled": "map proxies are " + NOT_IMPLEMENTED,
    "remove_proxy_name": "map proxies are " + NOT_IMPLEMENTED,
}
_CHANNEL_OPTIONS_NONE_TABLES = {
    "shared_poll": "shared poll subscriptions are " + NOT_IMPLEMENTED,
}

# Keys of a proxy object, under the same names.
_PROXY = (
    "endpoint",
    "timeout",
    "http_headers",
    "emulated_headers",
    "binary_encoding",
    "include_connection_meta",
)
_PROXY_NONE = {
    "grpc_metadata": "rtcore proxies are HTTP only",
}
_PROXY_NONE_TABLES = {
    "grpc": "rtcore proxies are HTTP only",
    "http.tls": "proxy TLS client settings are not configurable (https:// endpoints are "
    "verified against the system's CA certificates)",
    "http.status_to_code_transforms": NOT_IMPLEMENTED,
}

_CLIENT_SAME = (
    "allowed_origins",
    "allow_anonymous_connect_without_token",
    "disallow_anonymous_connection_tokens",
    "expired_close_delay",
    "expired_sub_close_delay",
    "stale_close_delay",
    "channel_limit",
    "queue_max_size",
    "connection_limit",
    "user_connection_limit",
    "history_max_publication_limit",
    "recovery_max_publication_limit",
    "write_delay",
)
_CLIENT_NONE = {
    "presence_update_interval": (
        "rtcore refreshes presence with each ping when client.ping_interval is at most half"
        " of engine.presence_ttl, else at a third of the TTL"
    ),
    "concurrency": "the commands of one connection run one after another",
    "channel_position_check_delay": NOT_IMPLEMENTED,
    "channel_position_max_time_lag": NOT_IMPLEMENTED,
    "connect_include_server_time": NOT_IMPLEMENTED,
    "insecure_skip_token_signature_verify": "tokens are always verified",
    "user_id_http_header": NOT_IMPLEMENTED + " (authenticate with the connect proxy or an "
    "on_connecting hook)",
    "insecure": NOT_IMPLEMENTED + " (allow_anonymous_connect_without_token and the "
    "allow_*_for_anonymous channel options open what is needed)",
}
_CLIENT_NONE_TABLES = {
    "subscribe_to_user_personal_channel": NOT_IMPLEMENTED + " (grant the channel as a "
    "server-side subscription in the connection token or from on_connecting)",
    "connect_code_to_unidirectional_disconnect": NOT_IMPLEMENTED,
}

_TOKEN = (
    "hmac_secret_key",
    "hmac_previous_secret_key",
    "hmac_previous_secret_key_valid_until",
    "rsa_public_key",
    "ecdsa_public_key",
    "audience",
    "audience_regex",
    "issuer",
    "issuer_regex",
    "user_id_claim",
)

_SECTIONS_NONE = {
    "presence_manager": "separate presence managers are not configurable: engine.type "
    "picks memory or redis",
    "map_broker": "map subscriptions are " + NOT_IMPLEMENTED,
    "controller": "nodes of one engine exchange control messages through it",
    "shared_poll": "shared poll subscriptions are " + NOT_IMPLEMENTED,
    "grpc_api": "the server API is HTTP only",
    "webtransport": NOT_IMPLEMENTED,
    "uni_grpc": NOT_IMPLEMENTED,
    "swagger": NOT_IMPLEMENTED,
    "debug": NOT_IMPLEMENTED,
    "init": NOT_IMPLEMENTED,
    "opentelemetry": "not configured in the file",
    "graphite": NOT_IMPLEMENTED + " (use the Prometheus metrics)",
    "usage_stats": "rtcore sends no usage statistics",
    "pid_file": "let the service manager track the process",
    "enable_unreleased_features": "nothing to enable",
    "http_server.tls_autocert": "ACME certificates are " + NOT_IMPLEMENTED + " (set "
    "http.tls_cert/http.tls_key; SIGHUP reloads them)",
    "http_server.tls_external": NOT_IMPLEMENTED,
    "http_server.http3": NOT_IMPLEMENTED,
    "http_server.h2c_external": NOT_IMPLEMENTED,
    "engine.redis.connect_timeout": "not configurable",
    "engine.redis.io_timeout": "not configurable",
    "engine.redis.client_name": "not configurable",
    "engine.redis.cluster_address": "not configurable in the file (the embedding API takes "
    "cluster=True: docs/redis.md)",
    "engine.redis.sentinel_client_name": "not configurable",
    "engine.redis.sentinel_tls.client_ca_pem": "not configurable",
    "engine.redis.sentinel_tls.server_name": "not configurable",
    "engine.redis.history_use_lists": "history lives in Redis streams",
    "broker.redis": "use engine.type = 'redis'",
    "broker.postgres": "a PostgreSQL broker is " + NOT_IMPLEMENTED,
    "broker.nats.tls": "use tls:// URLs in broker.nats_url",
    "broker.nats.allow_wildcards": NOT_IMPLEMENTED,
    "broker.nats.raw_mode": NOT_IMPLEMENTED,
    "consumers[].kafka": "Kafka consumers are " + NOT_IMPLEMENTED,
    "consumers[].google_pub_sub": "Google Pub/Sub consumers are " + NOT_IMPLEMENTED,
    "consumers[].aws_sqs": "AWS SQS consumers are " + NOT_IMPLEMENTED,
    "consumers[].azure_service_bus": "Azure Service Bus consumers are " + NOT_IMPLEMENTED,
    "consumers[].postgresql.partition_notification_dsn": "NOTIFY comes over the dsn connection",
    "consumers[].postgresql.tls": "put TLS options in the dsn (sslmode=...)",
    "consumers[].postgresql.use_try_lock": NOT_IMPLEMENTED,
    "consumers[].redis_stream.publication_data_mode": NOT_IMPLEMENTED,
    "consumers[].redis_stream.connect_timeout": "not configurable",
    "consumers[].redis_stream.io_timeout": "not configurable",
    "consumers[].nats_jetstream.credentials_file": "put credentials in the URL",
    "consumers[].nats_jetstream.username": "put credentials in the URL",
    "consumers[].nats_jetstream.password": "put credentials in the URL",
    "consumers[].nats_jetstream.token": "put credentials in the URL",
    "consumers[].nats_jetstream.use_existing_consumer": "the durable consumer is created if "
    "missing",
    "consumers[].nats_jetstream.deliver_policy": NOT_IMPLEMENTED,
    "consumers[].nats_jetstream.publication_data_mode": NOT_IMPLEMENTED,
    "consumers[].nats_jetstream.tls": "use tls:// URLs",
    "engine.redis.presence_hash_field_ttl": NOT_IMPLEMENTED,
    "engine.redis.presence_user_mapping": NOT_IMPLEMENTED,
    "engine.redis.tls": "use rediss:// URLs in engine.redis_address",
    "engine.redis.replica_client": NOT_IMPLEMENTED,
    "engine.redis.force_resp2": NOT_IMPLEMENTED,
    "log.file": "rtcore logs to standard error",
    "channel.publication_data_format": NOT_IMPLEMENTED + " (publication data is passed as is)",
    "channel.proxy.subscribe_stream": "subscribe streams are " + NOT_IMPLEMENTED,
    "channel.proxy.map_publish": "map subscriptions are " + NOT_IMPLEMENTED,
    "channel.proxy.map_remove": "map subscriptions are " + NOT_IMPLEMENTED,
    "channel.proxy.shared_poll_refresh": "shared poll subscriptions are " + NOT_IMPLEMENTED,
    "rpc.ping": NOT_IMPLEMENTED,
    "client.token.insecure_skip_jwks_endpoint_safety_check": NOT_IMPLEMENTED,
    "client.subscription_token.insecure_skip_jwks_endpoint_safety_check": NOT_IMPLEMENTED,
    "http_api.handler_prefix": "the server API is at /api",
    "http_api.external": "with api.port set the API is served on that port only",
    "websocket.handler_prefix": "the WebSocket endpoint is /connection/websocket",
    "websocket.compression_level": "not configurable",
    "websocket.read_buffer_size": "not configurable",
    "websocket.use_write_buffer_pool": "not configurable",
    "websocket.write_buffer_size": "not configurable",
    "websocket.write_timeout": "slow clients are disconnected by client.queue_max_size",
    "websocket.decompressed_message_size_limit": "websocket.message_size_limit bounds "
    "decompressed messages too",
    "sse.handler_prefix": "the SSE endpoint is /connection/sse",
    "sse.max_request_body_size": "not configurable",
    "http_stream.handler_prefix": "the endpoint is /connection/http_stream",
    "http_stream.max_request_body_size": "not configurable",
    "emulation.handler_prefix": "the endpoint is /emulation",
    "uni_sse.handler_prefix": "the endpoint is /connection/uni_sse",
    "uni_sse.connect_code_to_http_response": NOT_IMPLEMENTED,
    "uni_http_stream.handler_prefix": "the endpoint is /connection/uni_http_stream",
    "uni_http_stream.connect_code_to_http_response": NOT_IMPLEMENTED,
    "uni_websocket.handler_prefix": "the endpoint is /connection/uni_websocket",
    "uni_websocket.compression": "not configurable",
    "uni_websocket.compression_min_size": "not configurable",
    "uni_websocket.compression_level": "not configurable",
    "uni_websocket.read_buffer_size": "not configurable",
    "uni_websocket.use_write_buffer_pool": "not configurable",
    "uni_websocket.write_buffer_size": "not configurable",
    "uni_websocket.write_timeout": "not configurable",
    "uni_websocket.decompressed_message_size_limit": "not configurable",
    "uni_websocket.disable_closing_handshake": "not configurable",
    "uni_websocket.disable_disconnect_push": "not configurable",
    "admin.handler_prefix": "not configurable",
    "admin.web_path": "the admin UI ships with rtcore",
    "admin.web_proxy_address": "the admin UI ships with rtcore",
    "admin.external": "not configurable",
    "prometheus.handler_prefix": "metrics are at /metrics",
    "prometheus.instrument_http_handlers": NOT_IMPLEMENTED,
    "prometheus.recovered_publications_histogram": NOT_IMPLEMENTED,
    "prometheus.native_histograms": NOT_IMPLEMENTED,
    "health.enabled": "rtcore always serves /health",
    "health.handler_prefix": "the endpoint is /health",
    "node.info_metrics_aggregate_interval": NOT_IMPLEMENTED,
    "shutdown.timeout": "a shutdown takes client.reconnect_jitter plus at most "
    "http.shutdown_timeout (docs/cli.md)",
}

# The entries of _SECTIONS_NONE that are tables (an entry covers every key under it).
_TABLES_NONE = frozenset(
    {
        "broker.redis",
        "broker.postgres",
        "broker.nats.tls",
        "broker.nats.raw_mode",
        "consumers[].kafka",
        "consumers[].google_pub_sub",
        "consumers[].aws_sqs",
        "consumers[].azure_service_bus",
        "consumers[].postgresql.tls",
        "consumers[].redis_stream.publication_data_mode",
        "consumers[].nats_jetstream.tls",
        "consumers[].nats_jetstream.publication_data_mode",
        "presence_manager",
        "map_broker",
        "controller",
        "shared_poll",
        "grpc_api",
        "webtransport",
        "uni_grpc",
        "swagger",
        "debug",
        "init",
        "opentelemetry",
        "graphite",
        "usage_stats",
        "http_server.tls_autocert",
        "http_server.http3",
        "engine.redis.tls",
        "engine.redis.replica_client",
        "channel.proxy.subscribe_stream",
        "channel.proxy.map_publish",
        "channel.proxy.map_remove",
        "channel.proxy.shared_poll_refresh",
        "rpc.ping",
        "uni_sse.connect_code_to_http_response",
        "uni_http_stream.connect_code_to_http_response",
    }
)

_RENAMED: dict[str, tuple[str, str, Callable[[Any], Any] | None]] = {
    # centrifugo: (rtcore, note, conversion)
    "http_server.address": ("http.address", "", None),
    "http_server.port": ("http.port", "", _port),
    "http_server.internal_address": ("api.address", "", None),
    "http_server.internal_port": (
        "api.port",
        "the internal port serves /api, /metrics and /health",
        _port,
    ),
    "http_server.tls.cert_pem": ("http.tls_cert", "a PEM file path", _pem_file),
    "http_server.tls.key_pem": ("http.tls_key", "a PEM file path", _pem_file),
    "log.level": (
        "log.level",
        "trace becomes debug, warn warning, fatal and none error",
        _log_level,
    ),
    "engine.type": ("engine.type", "", None),
    "engine.redis.prefix": ("engine.redis_prefix", "", None),
    "engine.redis.presence_ttl": ("engine.presence_ttl", "", None),
    "client.connection_rate_limit": ("client.connect_rate_limit", "", None),
    "client.ping_interval": ("client.ping_interval", "-1 (off) becomes 0", duration_text),
    "client.pong_timeout": ("client.pong_timeout", "-1 (off) becomes 0", duration_text),
    "client.token.jwks_public_endpoint": (
        "client.token.jwks_url",
        "jwks_public_endpoint is accepted too",
        None,
    ),
    "client.subscription_token.jwks_public_endpoint": (
        "client.subscription_token.jwks_url",
        "jwks_public_endpoint is accepted too",
        None,
    ),
    "http_api.key": ("api.key", "", None),
    "http_api.insecure": ("api.insecure", "", None),
    "http_api.error_mode": ("api.error_mode", "", None),
    "http_api.disabled": ("api.enabled", "the opposite value", _negate),
    "websocket.disabled": ("websocket.enabled", "the opposite value", _negate),
    "prometheus.enabled": ("metrics.enabled", "", None),
    "node.name": ("client.node_name", "", None),
    "engine.redis.sentinel_address": ("engine.redis_sentinel_address", "", None),
    "engine.redis.sentinel_master_name": ("engine.redis_sentinel_master_name", "", None),
    "engine.redis.sentinel_user": ("engine.redis_sentinel_user", "", None),
    "engine.redis.sentinel_password": ("engine.redis_sentinel_password", "", None),
    "engine.redis.sentinel_tls.enabled": ("engine.redis_sentinel_tls", "", None),
    "engine.redis.sentinel_tls.cert_pem": (
        "engine.redis_sentinel_tls_cert_pem_file",
        "a PEM file path",
        _pem_file,
    ),
    "engine.redis.sentinel_tls.key_pem": (
        "engine.redis_sentinel_tls_key_pem_file",
        "a PEM file path",
        _pem_file,
    ),
    "engine.redis.sentinel_tls.server_ca_pem": (
        "engine.redis_sentinel_tls_server_ca_pem_file",
        "a PEM file path",
        _pem_file,
    ),
    "engine.redis.sentinel_tls.insecure_skip_verify": (
        "engine.redis_sentinel_tls_insecure_skip_verify",
        "",
        None,
    ),
    "broker.nats.url": ("broker.nats_url", "", _string_list),
    "broker.nats.prefix": ("broker.nats_prefix", "", None),
    "broker.nats.dial_timeout": ("broker.nats_dial_timeout", "", None),
    "broker.nats.write_timeout": ("broker.nats_write_timeout", "", None),
    "consumers[].redis_stream.address": (
        "consumers[].redis_stream.address",
        "the first address, as a redis:// URL",
        _first_redis_url,
    ),
    "admin.enabled": ("admin.enabled", "", None),
    "admin.password": ("admin.password", "", None),
    "admin.secret": ("admin.secret", "", None),
    "admin.insecure": ("admin.insecure", "", None),
}

_STRUCTURAL: dict[str, tuple[str | None, str]] = {
    "engine.redis.address": ("engine.redis_address", "host:port becomes redis://host:port"),
    "engine.redis.user": ("engine.redis_address", "written into each URL"),
    "engine.redis.password": ("engine.redis_address", "written into each URL"),
    "engine.redis.db": ("engine.redis_address", "written into each URL"),
    "channel.history_meta_ttl": (
        "channel.without_namespace.history_meta_ttl",
        "set on channels without a namespace and on every namespace that has none",
    ),
    "broker.enabled": ("broker.type", "with broker.type = 'nats': broker.type = 'nats'"),
    "broker.type": ("broker.type", "'nats' when broker.enabled; memory and redis are the engine's"),
    "consumers[].type": (
        "consumers[].type",
        "consumers of a type rtcore does not implement are left out",
    ),
    "client.subscription_token.enabled": (
        None,
        "rtcore verifies subscription tokens with client.subscription_token when that section "
        "is present; a disabled section is left out",
    ),
    "http_server.tls.enabled": (
        None,
        "rtcore serves TLS when http.tls_cert and http.tls_key are set; without enabled they "
        "are left out",
    ),
}


def _build_table() -> dict[str, KeyMapping]:
    table: dict[str, KeyMapping] = {}

    def same(prefix_c: str, prefix_r: str, names: tuple[str, ...]) -> None:
        for name in names:
            table[f"{prefix_c}.{name}"] = KeyMapping(f"{prefix_c}.{name}", f"{prefix_r}.{name}")

    def none(prefix: str, notes: Mapping[str, str], subtree: bool = False) -> None:
        for name, note in notes.items():
            path = f"{prefix}.{name}" if prefix else name
            table[path] = KeyMapping(path, None, note, subtree=subtree)

    def proxy(prefix_c: str, prefix_r: str, switch: bool = False) -> None:
        same(prefix_c, prefix_r, _PROXY + (("enabled",) if switch else ()))
        table[f"{prefix_c}.http.static_headers"] = KeyMapping(
            f"{prefix_c}.http.static_headers",
            f"{prefix_r}.http.static_headers",
            "a list of {key, value} objects becomes a table",
            convert=_static_headers,
        )
        none(prefix_c, _PROXY_NONE)
        none(prefix_c, _PROXY_NONE_TABLES, subtree=True)

    for scope in ("channel.without_namespace", "channel.namespaces[]"):
        same(scope, scope, _CHANNEL_OPTIONS)
        none(scope, _CHANNEL_OPTIONS_NONE)
        none(scope, _CHANNEL_OPTIONS_NONE_TABLES, subtree=True)
        same(f"{scope}.map", f"{scope}.map", _MAP_OPTIONS)
        none(f"{scope}.map", _MAP_NONE)
    same("channel.namespaces[]", "channel.namespaces[]", ("name",))
    same(
        "channel",
        "channel",
        ("max_length", "private_prefix", "namespace_boundary", "user_boundary", "user_separator"),
    )
    for kind in ("subscribe", "publish", "sub_refresh"):
        proxy(f"channel.proxy.{kind}", f"channel.proxy.{kind}")
    same("client", "client", _CLIENT_SAME)
    none("client", _CLIENT_NONE)
    none("client", _CLIENT_NONE_TABLES, subtree=True)
    same("client.token", "client.token", _TOKEN)
    same("client.subscription_token", "client.subscription_token", _TOKEN)
    for kind in ("connect", "refresh"):
        proxy(f"client.proxy.{kind}", f"client.proxy.{kind}", switch=True)
    proxy("rpc.proxy", "rpc.proxy")
    proxy("proxies[]", "proxy.named[]")
    same("proxies[]", "proxy.named[]", ("name",))
    same("rpc.without_namespace", "rpc.without_namespace", ("proxy_enabled", "proxy_name"))
    same("rpc.namespaces[]", "rpc.namespaces[]", ("name", "proxy_enabled", "proxy_name"))
    same("rpc", "rpc", ("namespace_boundary",))
    same("websocket", "websocket", ("compression", "compression_min_size", "message_size_limit"))
    same("sse", "sse", ("enabled",))
    same("http_stream", "http_stream", ("enabled",))
    same("emulation", "emulation", ("max_request_body_size",))
    same("uni_websocket", "uni_websocket", ("enabled", "message_size_limit", "join_push_messages"))
    same("uni_sse", "uni_sse", ("enabled", "max_request_body_size"))
    same("uni_http_stream", "uni_http_stream", ("enabled", "max_request_body_size"))
    same("consumers[]", "consumers[]", ("name", "enabled"))
    same(
        "consumers[].postgresql",
        "consumers[].postgresql",
        (
            "dsn",
            "outbox_table_name",
            "num_partitions",
            "partition_select_limit",
            "partition_poll_interval",
            "partition_notification_channel",
        ),
    )
    same(
        "consumers[].redis_stream",
        "consumers[].redis_stream",
        (
            "streams",
            "consumer_group",
            "visibility_timeout",
            "num_workers",
            "payload_value",
            "method_value",
        ),
    )
    same(
        "consumers[].nats_jetstream",
        "consumers[].nats_jetstream",
        (
            "url",
            "stream_name",
            "subjects",
            "durable_consumer_name",
            "method_header",
            "max_ack_pending",
        ),
    )
    for path, (target, note, convert) in _RENAMED.items():
        table[path] = KeyMapping(path, target, note, convert=convert)
    for path, (merged_into, note) in _STRUCTURAL.items():
        table[path] = KeyMapping(path, merged_into, note, structural=True)
    table["http_server.tls"] = KeyMapping(
        "http_server.tls",
        None,
        "only cert_pem and key_pem (as file paths) have an equivalent",
        subtree=True,
    )
    for path, note in _SECTIONS_NONE.items():
        table[path] = KeyMapping(path, None, note, subtree=path in _TABLES_NONE)
    return table


#: Centrifugo v6 key path (lists as ``[]``) -> its mapping.
KEY_MAP: dict[str, KeyMapping] = _build_table()
