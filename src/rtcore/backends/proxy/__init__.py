"""Proxies to the application backend: Centrifugo's HTTP proxy protocol.

A proxy turns a client event into an HTTP POST of Centrifugo's JSON request
to a configured backend URL and applies the backend's answer
(``{"result": ...}``, ``{"error": ...}`` or ``{"disconnect": ...}``):

* ``connect`` (``client.proxy.connect``): connections without a token; the
  result gives the user, info, data, meta, expiry and server-side
  subscriptions.
* ``refresh`` (``client.proxy.refresh``): connections that expire are
  refreshed by the server (the client is told ``expires: false``); at expiry
  the backend prolongs the connection or lets it end with disconnect 3005.
* ``subscribe``, ``publish``, ``sub_refresh`` (channel namespaces'
  ``*_proxy_enabled`` / ``*_proxy_name``) and ``rpc`` (RPC namespaces).

:func:`install_proxies` plugs the proxies into a node's hooks
(:mod:`rtcore.engine.events`); :meth:`rtcore.engine.node.Node.start` calls it when the
configuration enables a proxy, so embedders get them without code. Where a
proxy is configured it decides; elsewhere the hooks registered before the
node started keep deciding, and without such a hook the namespace options do.

Failures never hang a client: a timeout, a refused connection, a non-200
status or a malformed answer is logged and becomes error 100 (internal,
temporary) for connect/subscribe/publish/rpc; a failed refresh or
sub_refresh is tried again after ``proxy.refresh_retry_interval`` while the
connection or subscription lives on. See docs/proxy.md.

The package: :mod:`~rtcore.backends.proxy.http` is the HTTP/1.1 client
(``httptools`` parses responses, kept-alive connections are reused per
endpoint, one deadline bounds each call: connect, send and response);
:mod:`~rtcore.backends.proxy.request` builds a configured proxy's requests;
:mod:`~rtcore.backends.proxy.response` reads the backend's answer of each
kind; :mod:`~rtcore.backends.proxy.hooks` holds :class:`ProxyHooks` and
:func:`install_proxies`; :mod:`~rtcore.backends.proxy.expiry` asks refresh and
sub_refresh when a connection or subscription expires.
"""

from __future__ import annotations

import logging

from rtcore.backends.proxy.errors import (
    ProxyError,
    ProxyResponseError,
    ProxyStatusError,
    ProxyTimeout,
    ProxyUnavailable,
)
from rtcore.backends.proxy.hooks import (
    HookFn as HookFn,
    ProxyHooks,
    install_proxies,
    proxies_configured,
)
from rtcore.backends.proxy.http import (
    IDLE_TIMEOUT as IDLE_TIMEOUT,
    MAX_IDLE_CONNECTIONS as MAX_IDLE_CONNECTIONS,
    MAX_RESPONSE_SIZE as MAX_RESPONSE_SIZE,
    HttpEndpoint,
)


__all__ = [
    "HttpEndpoint",
    "ProxyError",
    "ProxyHooks",
    "ProxyResponseError",
    "ProxyStatusError",
    "ProxyTimeout",
    "ProxyUnavailable",
    "install_proxies",
    "proxies_configured",
]

# The logger of every module of the package.
logger = logging.getLogger("rtcore.backends.proxy")
