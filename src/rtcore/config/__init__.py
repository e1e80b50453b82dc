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
carries all of them; an error about a value in a file is a
:class:`LocatedConfigError` with the file's line. An unknown key comes with a
"did you mean", and a key of a Centrifugo v6 configuration with its rtcore
name. Durations are seconds (int or float) or strings with a unit
(``"250ms"``, ``"25s"``, ``"10m"``, ``"1h"``, ``"30d"``). Values have the
type of their key: ``"8000"`` for a port or ``"yes"`` for a switch is an
error in a file (environment variables are text and are converted).

The names follow Centrifugo's where a Centrifugo user would look for them.

The package: :mod:`~rtcore.config.model` (the sections and :class:`Config`)
and :mod:`~rtcore.config.proxy` (proxy and RPC sections) hold the model,
:mod:`~rtcore.config.durations` parses and spells durations,
:mod:`~rtcore.config.fields` is what sections are built from,
:mod:`~rtcore.config.loading` builds a :class:`Config` from data, files, the
environment and flags, :mod:`~rtcore.config.reading` parses their text
(refusing nesting, integers and YAML aliases the parsers choke on),
:mod:`~rtcore.config.positions` finds the line of a
key in a file, :mod:`~rtcore.config.hints` explains unknown keys,
:mod:`~rtcore.config.keys` walks every key of the model,
:mod:`~rtcore.config.documents` writes configuration files (TOML, YAML,
JSON) and :mod:`~rtcore.config.centrifugo` (with its table in
:mod:`~rtcore.config.centrifugo_table`) reads Centrifugo v6 configurations.
Import from ``rtcore.config``.
"""

from __future__ import annotations

from rtcore.config.durations import format_duration, parse_duration
from rtcore.config.fields import ConfigErrors, LocatedConfigError
from rtcore.config.loading import (
    ENV_PREFIX,
    config_from_mapping,
    config_to_mapping,
    env_var_name,
    load_config,
    read_config_file,
)
from rtcore.config.model import (
    FIELD_DOCS,
    HIDDEN_FIELDS,
    KEY_ALIASES,
    ApiConfig,
    ChannelConfig,
    ChannelOptions,
    ClientConfig,
    Config,
    EngineConfig,
    GcConfig,
    HttpServerConfig,
    LogConfig,
    MetricsConfig,
    NamespaceOptions,
    WebSocketSettings,
)
from rtcore.config.proxy import (
    PROXY_RESERVED_HEADERS,
    ChannelProxyConfig,
    ClientProxyConfig,
    ClientProxyOptions,
    NamedProxy,
    ProxyConfig,
    ProxyHttpOptions,
    ProxyOptions,
    RpcConfig,
    RpcNamespace,
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
    "GcConfig",
    "LogConfig",
    "HttpStreamSettings",
    "SseSettings",
    "EmulationSettings",
    "UniWebSocketSettings",
    "UniSseSettings",
    "UniHttpStreamSettings",
    "ConfigErrors",
    "LocatedConfigError",
    "ENV_PREFIX",
    "FIELD_DOCS",
    "HIDDEN_FIELDS",
    "KEY_ALIASES",
    "PROXY_RESERVED_HEADERS",
    "config_from_mapping",
    "config_to_mapping",
    "env_var_name",
    "format_duration",
    "load_config",
    "parse_duration",
    "read_config_file",
]
