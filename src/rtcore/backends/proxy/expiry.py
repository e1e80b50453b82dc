"""Server-side expiry of connections and subscriptions: when refresh and sub_refresh are asked."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from rtcore.engine.session import CLOSED


if TYPE_CHECKING:
    from rtcore.backends.proxy.hooks import ProxyHooks
    from rtcore.engine.session import ClientSession


__all__ = ["Expiry"]

logger = logging.getLogger("rtcore.backends.proxy")


class Expiry:
    """Refresh deadlines of one session: the connection's and its subscriptions'.

    A timer-wheel target: at the earliest deadline it calls the refresh or
    sub_refresh proxy, then re-arms itself.
    """

    __slots__ = ("hooks", "session", "conn_at", "subs", "busy")

    def __init__(self, hooks: ProxyHooks, session: ClientSession) -> None:
        self.hooks = hooks
        self.session = session
        # Unix seconds (0: not tracked).
        self.conn_at = 0.0
        self.subs: dict[str, float] = {}
        self.busy = False

    def schedule(self) -> None:
        timers = self.hooks.node.timers
        deadlines = [t for t in (self.conn_at, *self.subs.values()) if t]
        if not deadlines or self.session.state == CLOSED:
            timers.cancel(self)
            return
        delay = max(0.0, min(deadlines) - self.hooks.node.wall_clock())
        timers.schedule_in(self, delay)

    def on_timer(self, now: float) -> None:
        if not self.busy:
            self.busy = True
            self.hooks.node.spawn(self._run())

    async def _run(self) -> None:
        hooks, session = self.hooks, self.session
        try:
            if self.conn_at and self.conn_at <= hooks.node.wall_clock():
                try:
                    await hooks.refresh_connection(self)
                except Exception:  # noqa: BLE001 - keep the connection, try again later
                    logger.exception("refresh of %s failed", session.client_id)
                    self.conn_at = hooks.node.wall_clock() + hooks.retry_interval
            for channel, at in list(self.subs.items()):
                if session.state == CLOSED:
                    break
                if at and at <= hooks.node.wall_clock():
                    try:
                        await hooks.refresh_subscription(self, channel)
                    except Exception:  # noqa: BLE001 - keep the subscription, try again later
                        logger.exception(
                            "sub_refresh of %s in %s failed", session.client_id, channel
                        )
                        if channel in self.subs:
                            self.subs[channel] = hooks.node.wall_clock() + hooks.retry_interval
        finally:
            self.busy = False
            if session.state == CLOSED:
                hooks.forget(session)
            else:
                self.schedule()
