"""Configuration of the proxies to the application backend, and of client RPC.

The proxies themselves are rtcore.backends.proxy (docs/proxy.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from rtcore.config.fields import _duration, _err, _f, _problems_tree
from rtcore.errors import ConfigError


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
