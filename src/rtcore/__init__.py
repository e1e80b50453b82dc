"""rtcore: a real-time messaging server and engine for Python.

Speaks the Centrifuge client protocol v2 over WebSocket, HTTP-streaming and
SSE; hot paths (framing, fan-out) are compiled with Cython and have
pure-Python twins. This module is the public API::

    import rtcore

    node = rtcore.Node(rtcore.config_from_mapping({...}))
    server = await rtcore.serve(node, "127.0.0.1", 8000)
    await node.publish("news", b'{"text": "hi"}')

Names are imported on first use, so ``import rtcore`` stays cheap and the
sans-I/O modules (``rtcore.wire``, ``rtcore.protocol``) import no event loop.
Deeper modules are importable but may change between minor versions.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rtcore._version import __version__


if TYPE_CHECKING:
    from rtcore.config import Config, ConfigErrors, config_from_mapping, load_config
    from rtcore.engine.events import (
        ChannelEvent,
        ConnectEvent,
        Credentials,
        DisconnectEvent,
        MessageEvent,
        PublishEvent,
        RPCEvent,
        SubscribeEvent,
        SubscribeReply,
        SubscriptionGrant,
    )
    from rtcore.engine.node import Node
    from rtcore.engine.session import ClientSession, Transport
    from rtcore.errors import ConfigError, RtcoreError
    from rtcore.protocol import codes
    from rtcore.protocol.codes import ClientError, Disconnect, DisconnectError
    from rtcore.protocol.types import ClientInfo, PresenceStats, Publication, StreamPosition
    from rtcore.server.app import NodeApp, serve_node as serve
    from rtcore.server.asgi import AsgiApp
    from rtcore.transports.http_server import HttpResponseWriter, run
    from rtcore.wire.http import Request


# public name -> (module, attribute); None: the module itself
_EXPORTS: dict[str, tuple[str, str | None]] = {
    "Node": ("rtcore.engine.node", "Node"),
    "serve": ("rtcore.server.app", "serve_node"),
    "Config": ("rtcore.config", "Config"),
    "ConfigErrors": ("rtcore.config", "ConfigErrors"),
    "config_from_mapping": ("rtcore.config", "config_from_mapping"),
    "load_config": ("rtcore.config", "load_config"),
    "codes": ("rtcore.protocol.codes", None),
    "ClientError": ("rtcore.protocol.codes", "ClientError"),
    "Disconnect": ("rtcore.protocol.codes", "Disconnect"),
    "DisconnectError": ("rtcore.protocol.codes", "DisconnectError"),
    "RtcoreError": ("rtcore.errors", "RtcoreError"),
    "ConfigError": ("rtcore.errors", "ConfigError"),
    "ClientInfo": ("rtcore.protocol.types", "ClientInfo"),
    "Publication": ("rtcore.protocol.types", "Publication"),
    "PresenceStats": ("rtcore.protocol.types", "PresenceStats"),
    "StreamPosition": ("rtcore.protocol.types", "StreamPosition"),
    # mounting the application's own HTTP routes beside the protocol endpoints
    "NodeApp": ("rtcore.server.app", "NodeApp"),
    "Request": ("rtcore.wire.http", "Request"),
    "HttpResponseWriter": ("rtcore.transports.http_server", "HttpResponseWriter"),
    "run": ("rtcore.transports.http_server", "run"),
    # serving a node from an ASGI application (uvicorn, Starlette, FastAPI, Channels)
    "AsgiApp": ("rtcore.server.asgi", "AsgiApp"),
    # sessions over a connection of your own (docs/embedding.md)
    "ClientSession": ("rtcore.engine.session", "ClientSession"),
    "Transport": ("rtcore.engine.session", "Transport"),
    **{
        name: ("rtcore.engine.events", name)
        for name in (
            "Credentials",
            "SubscriptionGrant",
            "ConnectEvent",
            "SubscribeEvent",
            "SubscribeReply",
            "PublishEvent",
            "ChannelEvent",
            "RPCEvent",
            "MessageEvent",
            "DisconnectEvent",
        )
    },
}

__all__ = [
    "__version__",
    "Node",
    "serve",
    "Config",
    "ConfigErrors",
    "config_from_mapping",
    "load_config",
    "codes",
    "ClientError",
    "Disconnect",
    "DisconnectError",
    "RtcoreError",
    "ConfigError",
    "ClientInfo",
    "Publication",
    "PresenceStats",
    "StreamPosition",
    "NodeApp",
    "Request",
    "HttpResponseWriter",
    "run",
    "AsgiApp",
    "ClientSession",
    "Transport",
    "Credentials",
    "SubscriptionGrant",
    "ConnectEvent",
    "SubscribeEvent",
    "SubscribeReply",
    "PublishEvent",
    "ChannelEvent",
    "RPCEvent",
    "MessageEvent",
    "DisconnectEvent",
]


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'rtcore' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
