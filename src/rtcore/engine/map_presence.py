"""Map presence: a namespace's subscribers kept as keys of map channels.

A namespace with ``map_clients_presence_channel_prefix = P`` keeps each
subscriber of its channel ``C`` as key *client id* (with the client's
``ClientInfo``) of the map channel ``P + C``, whose namespace has
``subscription_type = "map_clients"``; ``map_users_presence_channel_prefix``
keeps the subscribers' user ids as keys of a ``"map_users"`` channel.
Clients watch them with centrifuge-js ``newMapClientsSubscription`` /
``newMapUsersSubscription``.

A key is written when the subscription starts (only if new: a quick
resubscribe publishes nothing), its expiry is pushed back at every presence
refresh of the session (``engine.presence_ttl / 3``), and the client key is
removed when the subscription ends. User keys are never removed: they
expire (``map.key_ttl``), so a user's reconnect within it is no change, as
in Centrifugo.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from rtcore.protocol.codes import ClientError


if TYPE_CHECKING:
    from rtcore.config import ChannelOptions
    from rtcore.engine.node import Node
    from rtcore.engine.session import ClientSession, SubscriptionState


__all__ = ["MapPresence"]

logger = logging.getLogger("rtcore.engine.map_presence")


def has_map_presence(opts: ChannelOptions) -> bool:
    return bool(opts.map_clients_presence_channel_prefix or opts.map_users_presence_channel_prefix)


def has_map_cleanup(opts: ChannelOptions) -> bool:
    """Something to remove when a subscription of the namespace ends."""
    return bool(opts.map_clients_presence_channel_prefix) or (
        opts.map.remove_client_on_unsubscribe and opts.subscription_type != "stream"
    )


class MapPresence:
    """Writes the map presence keys of a node's sessions."""

    __slots__ = ("node",)

    def __init__(self, node: Node) -> None:
        self.node = node

    async def join(self, session: ClientSession, channel: str, opts: ChannelOptions) -> None:
        """The session subscribed to ``channel``: add its keys (if new)."""
        maps = self.node.maps
        try:
            if opts.map_clients_presence_channel_prefix:
                await maps.publish(
                    opts.map_clients_presence_channel_prefix + channel,
                    session.client_id,
                    b"",
                    info=session.channel_info(channel),
                    key_mode="if_new",
                    refresh_ttl=True,
                )
            if opts.map_users_presence_channel_prefix and session.user:
                await maps.publish(
                    opts.map_users_presence_channel_prefix + channel,
                    session.user,
                    b"",
                    key_mode="if_new",
                    refresh_ttl=True,
                )
            maps.start_sweep()
        except ClientError as exc:
            # The prefix names no map_clients / map_users namespace: a configuration error.
            logger.warning("map presence of %s not kept: %s", channel, exc.message)
        except Exception as exc:  # noqa: BLE001 - presence is refreshed later
            self.node.count_broker_error("map_presence")
            logger.warning("map presence of %s not written: %s", channel, exc)

    def refresh(self, sessions: list[ClientSession]) -> None:
        """The periodic presence refresh of ``sessions``: push their keys' expiry back."""
        for session in sessions:
            for channel, state in list(session.subscriptions.items()):
                if not state.pending and has_map_presence(state.options):
                    self.node.spawn(self.join(session, channel, state.options))

    async def leave(self, session: ClientSession, state: SubscriptionState) -> None:
        """A subscription ended: remove the client key (user keys expire), and with
        ``map.remove_client_on_unsubscribe`` the key named by the client id."""
        if state.pending:
            return
        opts = state.options
        channels = []
        if opts.map_clients_presence_channel_prefix:
            channels.append(opts.map_clients_presence_channel_prefix + state.channel)
        if opts.map.remove_client_on_unsubscribe and opts.subscription_type != "stream":
            channels.append(state.channel)
        for channel in channels:
            try:
                await self.node.maps.remove(channel, session.client_id)
            except ClientError:
                pass  # a misconfigured prefix, logged at join
            except Exception as exc:  # noqa: BLE001 - keys with a TTL expire anyway
                self.node.count_broker_error("map_presence")
                logger.warning(
                    "client key of %s not removed from %s: %s", state.channel, channel, exc
                )
