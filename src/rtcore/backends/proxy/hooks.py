"""The proxies of a node: the hooks that call them and their installation into the node."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from rtcore.backends.proxy.errors import ProxyError, ProxyResponseError
from rtcore.backends.proxy.expiry import Expiry
from rtcore.backends.proxy.http import HttpEndpoint
from rtcore.backends.proxy.request import Proxy
from rtcore.backends.proxy.response import (
    connect_answer,
    publish_answer,
    refresh_answer,
    rpc_answer,
    subscribe_answer,
)
from rtcore.engine.events import (
    ChannelEvent,
    ConnectEvent,
    Credentials,
    DisconnectEvent,
    PublishEvent,
    RPCEvent,
    SubscribeEvent,
    SubscribeReply,
)
from rtcore.engine.session import CLOSED
from rtcore.protocol import codes
from rtcore.protocol.codes import DisconnectError


if TYPE_CHECKING:
    from rtcore.config import ChannelOptions, Config, ProxyOptions, RpcOptions
    from rtcore.engine.node import Node
    from rtcore.engine.session import ClientSession


__all__ = ["HookFn", "ProxyHooks", "install_proxies", "proxies_configured"]

logger = logging.getLogger("rtcore.backends.proxy")

_T = TypeVar("_T")


# The channel proxies, as the option names spell them (``<kind>_proxy_enabled``).
_CHANNEL_KINDS = ("subscribe", "publish", "sub_refresh")


def proxies_configured(config: Config) -> bool:
    """Whether the configuration enables any proxy."""
    client = config.client.proxy
    if client.connect.enabled or client.refresh.enabled:
        return True
    channel = config.channel
    for opts in (channel.without_namespace, *channel.namespaces):
        if any(getattr(opts, f"{kind}_proxy_enabled") for kind in _CHANNEL_KINDS):
            return True
    rpc = config.rpc
    return any(o.proxy_enabled for o in (rpc.without_namespace, *rpc.namespaces))


def install_proxies(node: Node) -> ProxyHooks | None:
    """Install the configured proxies into ``node``'s hooks (idempotent).

    Hooks registered before the call become the fallback where no proxy is
    configured (other channel namespaces, RPC methods, connections with a
    token). :meth:`Node.start <rtcore.engine.node.Node.start>` calls this; call it
    yourself only to install proxies into a node you never start. Returns
    the installed :class:`ProxyHooks`, or ``None`` when no proxy is enabled.
    """
    existing = getattr(node, "proxies", None)
    if existing is not None:
        return existing  # type: ignore[no-any-return]
    if not proxies_configured(node.config):
        return None
    hooks = ProxyHooks(node)
    hooks.install()
    node.proxies = hooks
    return hooks


HookFn = Callable[..., Any]


class ProxyHooks:
    """The proxies of one node and the hooks that call them."""

    def __init__(self, node: Node) -> None:
        self.node = node
        config = node.config
        self.retry_interval = config.proxy.refresh_retry_interval
        self._endpoints: dict[str, HttpEndpoint] = {}
        client = config.client.proxy
        self.connect = self._proxy("connect", client.connect) if client.connect.enabled else None
        self.refresh = self._proxy("refresh", client.refresh) if client.refresh.enabled else None
        self._named: dict[str, Proxy] = {
            p.name: self._proxy(p.name, p) for p in config.proxy.named if p.endpoint
        }
        channel = config.channel
        self._channel_defaults: dict[str, Proxy | None] = {}
        for kind in _CHANNEL_KINDS:
            options = getattr(channel.proxy, kind)
            self._channel_defaults[kind] = (
                self._proxy("default", options) if options.endpoint else None
            )
        self._rpc_default = (
            self._proxy("default", config.rpc.proxy) if config.rpc.proxy.endpoint else None
        )
        self._rpc_namespaces = {ns.name: ns for ns in config.rpc.namespaces}
        self._rpc_boundary = config.rpc.namespace_boundary
        # id(ChannelOptions) -> kind -> proxy (None: not proxied)
        self._resolved: dict[int, dict[str, Proxy | None]] = {}
        # Emulated headers of each session, for proxies that forward them.
        self._emulated_names = {h.lower() for p in self._all_proxies() for h in p.emulated_headers}
        self._emulated: weakref.WeakKeyDictionary[ClientSession, dict[str, str]] = (
            weakref.WeakKeyDictionary()
        )
        # Connection expiry taken over at connect, armed once the session is connected.
        self._pending_expiry: weakref.WeakKeyDictionary[ClientSession, int] = (
            weakref.WeakKeyDictionary()
        )
        self._expiries: dict[ClientSession, Expiry] = {}
        self._previous: dict[str, HookFn] = {}
        self.sub_refresh_enabled = any(
            opts.sub_refresh_proxy_enabled
            for opts in (channel.without_namespace, *channel.namespaces)
        )

    def _proxy(self, name: str, options: ProxyOptions) -> Proxy:
        endpoint = self._endpoints.get(options.endpoint)
        if endpoint is None:
            endpoint = self._endpoints[options.endpoint] = HttpEndpoint(options.endpoint)
        return Proxy(name, options, endpoint)

    def _all_proxies(self) -> list[Proxy]:
        out = [p for p in (self.connect, self.refresh, self._rpc_default) if p is not None]
        out += [p for p in self._channel_defaults.values() if p is not None]
        out += list(self._named.values())
        return out

    # -- installation ---------------------------------------------------------------

    def install(self) -> None:
        config = self.node.config
        channel = config.channel
        scopes = (channel.without_namespace, *channel.namespaces)
        wanted: dict[str, HookFn] = {}
        if self.connect is not None or self.refresh is not None or self._emulated_names:
            wanted["on_connecting"] = self.on_connecting
        if any(o.subscribe_proxy_enabled or o.sub_refresh_proxy_enabled for o in scopes):
            wanted["on_subscribe"] = self.on_subscribe
        if any(o.publish_proxy_enabled for o in scopes):
            wanted["on_publish"] = self.on_publish
        rpc = config.rpc
        if any(o.proxy_enabled for o in (rpc.without_namespace, *rpc.namespaces)):
            wanted["on_rpc"] = self.on_rpc
        if self.refresh is not None or self.sub_refresh_enabled:
            wanted["on_connect"] = self.on_connect
            wanted["on_disconnect"] = self.on_disconnect
        if self.sub_refresh_enabled:
            wanted["on_unsubscribe"] = self.on_unsubscribe
        for name, fn in wanted.items():
            previous = getattr(self.node, name)
            if previous is not None:
                self._previous[name] = previous
            setattr(self.node, name, fn)

    async def close(self) -> None:
        """Stop the refresh timers and close the HTTP connections."""
        for expiry in list(self._expiries.values()):
            self.node.timers.cancel(expiry)
        self._expiries.clear()
        for endpoint in self._endpoints.values():
            await endpoint.close()

    async def _call_previous(self, name: str, event: Any) -> Any:
        fn = self._previous.get(name)
        if fn is None:
            return None
        result = fn(event)
        if inspect.isawaitable(result):
            result = await result
        return result

    # -- requests -------------------------------------------------------------------

    async def _call(
        self, proxy: Proxy, session: ClientSession, fields: dict[str, Any]
    ) -> dict[str, Any]:
        """POST ``fields`` with the session's headers; the response object (raises ProxyError)."""
        return await proxy.call(fields, proxy.headers(session, self._emulated.get(session)))

    async def _ask(
        self,
        proxy: Proxy,
        kind: str,
        session: ClientSession,
        fields: dict[str, Any],
        read: Callable[[dict[str, Any]], _T],
    ) -> _T:
        """Call ``proxy`` and ``read`` its answer; a failure is logged and becomes error 100.

        The backend's refusal (``error`` or ``disconnect``), raised by ``read``,
        goes to the client as it is.
        """
        try:
            return read(await self._call(proxy, session, fields))
        except ProxyError as exc:  # ProxyResponseError included
            self._log_failure(proxy, kind, session, exc)
            raise codes.ERROR_INTERNAL from None

    def _log_failure(self, proxy: Proxy, kind: str, session: ClientSession, exc: Exception) -> None:
        what = "malformed response from" if isinstance(exc, ProxyResponseError) else "failed:"
        logger.error(
            "%s proxy %s (%s) %s %s",
            kind,
            proxy.name,
            proxy.endpoint.url,
            what,
            exc,
            extra={**session.log_fields, "proxy": proxy.name, "event": kind},
        )

    # -- connect ----------------------------------------------------------------------

    def _capture_emulated(self, session: ClientSession, headers: dict[str, str]) -> None:
        if not self._emulated_names or not headers:
            return
        kept: dict[str, str] = {}
        for name, value in headers.items():
            lower = name.lower()
            if lower not in self._emulated_names:
                continue
            if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
                logger.info(
                    "emulated header %s holds CR, LF or NUL: connection refused",
                    name,
                    extra=session.log_fields,
                )
                raise DisconnectError(codes.BAD_REQUEST)
            kept[lower] = value
        if kept:
            self._emulated[session] = kept

    async def on_connecting(self, event: ConnectEvent) -> Credentials | None:
        session = event.client
        self._capture_emulated(session, event.headers)
        credentials: Credentials | None
        if self.connect is not None and not event.token:
            credentials = await self._connect(self.connect, event)
        else:
            credentials = await self._call_previous("on_connecting", event)
        if self.refresh is not None:
            # Server-side refresh: the client is told the connection does not
            # expire; at expire_at the refresh proxy decides.
            base = credentials if credentials is not None else event.credentials
            if base is not None and base.expire_at:
                if base.expire_at <= self.node.wall_clock():
                    raise codes.ERROR_EXPIRED
                self._pending_expiry[session] = base.expire_at
                credentials = dataclasses.replace(base, expire_at=0)
        return credentials

    async def _connect(self, proxy: Proxy, event: ConnectEvent) -> Credentials | None:
        session = event.client
        fields = proxy.fields(session, user=False)
        if event.name:
            fields["name"] = event.name
        if event.version:
            fields["version"] = event.version
        proxy.add_data(session, event.data, fields)
        credentials = await self._ask(proxy, "connect", session, fields, connect_answer)
        if (
            credentials is not None
            and credentials.expire_at
            and credentials.expire_at <= self.node.wall_clock()
        ):
            raise codes.ERROR_EXPIRED
        return credentials

    async def on_connect(self, session: ClientSession) -> None:
        expire_at = self._pending_expiry.pop(session, 0)
        if expire_at and session.state != CLOSED:
            expiry = self._expiry(session)
            expiry.conn_at = expire_at
            expiry.schedule()
        await self._call_previous("on_connect", session)

    async def on_disconnect(self, event: DisconnectEvent) -> None:
        self.forget(event.client)
        await self._call_previous("on_disconnect", event)

    def _expiry(self, session: ClientSession) -> Expiry:
        expiry = self._expiries.get(session)
        if expiry is None:
            expiry = self._expiries[session] = Expiry(self, session)
        return expiry

    def forget(self, session: ClientSession) -> None:
        """Drop a closed session's refresh deadlines."""
        expiry = self._expiries.pop(session, None)
        if expiry is not None:
            self.node.timers.cancel(expiry)

    async def refresh_connection(self, expiry: Expiry) -> None:
        """Ask the refresh proxy whether the connection lives on (at its expiry)."""
        proxy = self.refresh
        session = expiry.session
        if proxy is None:  # conn_at is only set with a refresh proxy
            expiry.conn_at = 0.0
            return
        fields = proxy.fields(session)
        try:
            answer = refresh_answer(await self._call(proxy, session, fields), with_meta=True)
        except ProxyError as exc:
            # The backend is down or confused: keep the connection and ask again later.
            self._log_failure(proxy, "refresh", session, exc)
            expiry.conn_at = self.node.wall_clock() + self.retry_interval
            return
        if session.state == CLOSED:
            return
        expired = answer.expired
        if not expired and answer.expire_at <= self.node.wall_clock():
            logger.info(
                "refresh proxy %s returned no future expire_at: connection expired",
                proxy.name,
                extra=session.log_fields,
            )
            expired = True
        if expired:
            session.disconnect(codes.CONNECTION_EXPIRED)
            return
        expiry.conn_at = answer.expire_at
        if answer.info is not None:
            session.info = answer.info
        if answer.meta is not None:
            session.meta = answer.meta

    # -- subscribe / sub_refresh --------------------------------------------------------

    def _channel_proxy(self, opts: ChannelOptions, kind: str) -> Proxy | None:
        resolved = self._resolved.get(id(opts))
        if resolved is None:
            resolved = {}
            for k in _CHANNEL_KINDS:
                proxy: Proxy | None = None
                if getattr(opts, f"{k}_proxy_enabled"):
                    name = getattr(opts, f"{k}_proxy_name")
                    proxy = self._channel_defaults[k] if name == "default" else self._named[name]
                resolved[k] = proxy
            self._resolved[id(opts)] = resolved
        return resolved[kind]

    def _options(self, channel: str) -> ChannelOptions:
        opts = self.node.channels.options(channel)
        if opts is None:  # the node checked the channel before calling the hook
            raise codes.ERROR_UNKNOWN_CHANNEL
        return opts

    async def on_subscribe(self, event: SubscribeEvent) -> Any:
        session, channel = event.client, event.channel
        opts = self._options(channel)
        proxy = self._channel_proxy(opts, "subscribe")
        result: Any
        if proxy is not None:
            result = await self._subscribe(proxy, event)
        elif "on_subscribe" in self._previous:
            result = await self._call_previous("on_subscribe", event)
        else:
            # Node.subscribe_session's rule when no hook decides.
            result = opts.allow_subscribe_for_client and (
                session.user != "" or opts.allow_subscribe_for_anonymous
            )
        if isinstance(result, SubscribeReply) and result.expire_at:
            if proxy is not None and result.expire_at <= self.node.wall_clock():
                raise codes.ERROR_EXPIRED
            if self._channel_proxy(opts, "sub_refresh") is not None and session.state != CLOSED:
                # Server-side refresh: the client is told the subscription does
                # not expire; at expire_at the sub_refresh proxy decides. The
                # node creates the subscription right after this hook returns.
                expiry = self._expiry(session)
                expiry.subs[channel] = result.expire_at
                expiry.schedule()
                result = dataclasses.replace(result, expire_at=0)
        return result

    async def _subscribe(self, proxy: Proxy, event: SubscribeEvent) -> SubscribeReply:
        session = event.client
        fields = proxy.fields(session)
        fields["channel"] = event.channel
        proxy.add_data(session, event.data, fields)
        return await self._ask(proxy, "subscribe", session, fields, subscribe_answer)

    async def on_unsubscribe(self, event: ChannelEvent) -> None:
        session, channel = event.client, event.channel
        expiry = self._expiries.get(session)
        # A new subscription to the channel may already exist (server API
        # unsubscribes run concurrently with client commands): keep its entry.
        if expiry is not None and channel not in session.subscriptions:
            expiry.subs.pop(channel, None)
        await self._call_previous("on_unsubscribe", event)

    async def refresh_subscription(self, expiry: Expiry, channel: str) -> None:
        """Ask the sub_refresh proxy whether a subscription lives on (at its expiry)."""
        session = expiry.session
        state = session.subscriptions.get(channel)
        proxy = self._channel_proxy(state.options, "sub_refresh") if state is not None else None
        if state is None or proxy is None:
            # Unsubscribed, or the subscribe failed after the hook.
            expiry.subs.pop(channel, None)
            return
        fields = proxy.fields(session)
        fields["channel"] = channel
        try:
            answer = refresh_answer(await self._call(proxy, session, fields), with_meta=False)
        except ProxyError as exc:
            self._log_failure(proxy, "sub_refresh", session, exc)
            if session.subscriptions.get(channel) is state:
                expiry.subs[channel] = self.node.wall_clock() + self.retry_interval
            return
        if session.state == CLOSED or session.subscriptions.get(channel) is not state:
            return  # disconnected or resubscribed meanwhile
        expired = answer.expired
        if not expired and answer.expire_at <= self.node.wall_clock():
            logger.info(
                "sub_refresh proxy %s returned no future expire_at for %s: subscription expired",
                proxy.name,
                channel,
                extra=session.log_fields,
            )
            expired = True
        if expired:
            expiry.subs.pop(channel, None)
            if state.server_side:
                session.disconnect(codes.SUBSCRIPTION_EXPIRED)
            else:
                await self.node.unsubscribe_session(session, channel, codes.UNSUBSCRIBE_EXPIRED)
            return
        expiry.subs[channel] = answer.expire_at
        if answer.info is not None:
            state.chan_info = answer.info

    # -- publish ---------------------------------------------------------------------

    async def on_publish(self, event: PublishEvent) -> Any:
        session, channel = event.client, event.channel
        opts = self._options(channel)
        proxy = self._channel_proxy(opts, "publish")
        if proxy is None:
            if "on_publish" in self._previous:
                return await self._call_previous("on_publish", event)
            # The namespace rule of rtcore.engine.commands._permit when no hook decides.
            state = session.subscriptions.get(channel)
            subscribed = state is not None and not state.pending
            return (
                (opts.allow_publish_for_subscriber and subscribed) or opts.allow_publish_for_client
            ) and (session.user != "" or opts.allow_publish_for_anonymous)
        fields = proxy.fields(session)
        fields["channel"] = channel
        proxy.add_data(session, event.data, fields)
        data, skip_history = await self._ask(proxy, "publish", session, fields, publish_answer)
        if data is not None:
            event.data = data
        if skip_history:
            event.skip_history = True
        return True

    # -- rpc -------------------------------------------------------------------------

    def _rpc_options(self, method: str) -> RpcOptions | None:
        if self._rpc_boundary in method:
            return self._rpc_namespaces.get(method.split(self._rpc_boundary, 1)[0])
        return self.node.config.rpc.without_namespace

    async def on_rpc(self, event: RPCEvent) -> bytes:
        session = event.client
        options = self._rpc_options(event.method)
        if options is None or not options.proxy_enabled:
            if "on_rpc" in self._previous:
                return await self._call_previous("on_rpc", event)  # type: ignore[no-any-return]
            raise codes.ERROR_METHOD_NOT_FOUND if options is None else codes.ERROR_NOT_AVAILABLE
        proxy = (
            self._rpc_default
            if options.proxy_name == "default"
            else self._named[options.proxy_name]
        )
        assert proxy is not None  # the config model checks the reference
        fields = proxy.fields(session)
        if event.method:
            fields["method"] = event.method
        proxy.add_data(session, event.data, fields)
        return await self._ask(proxy, "rpc", session, fields, rpc_answer)
