"""The PostgreSQL outbox consumer (``type = "postgresql"``, ``pip install 'rtcore[postgres]'``).

The application writes a command into the outbox table in the same
transaction as its own change, so the command exists if and only if the
change committed (the transactional outbox). The table, as Centrifugo
documents it::

    CREATE TABLE rtcore_outbox (
        id BIGSERIAL PRIMARY KEY,
        method TEXT NOT NULL,                -- publish, broadcast, ...
        payload JSONB NOT NULL,              -- the method's parameters
        partition INTEGER NOT NULL DEFAULT 0,
        created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP
    );
    CREATE INDEX rtcore_outbox_partition_id ON rtcore_outbox (partition, id);

Each partition ``0 .. num_partitions-1`` has a task and a connection of its
own, so partitions proceed in parallel while each keeps its order. A batch
is one transaction: ``pg_try_advisory_xact_lock`` on the partition (so one
node of a deployment works on a partition at a time; the others skip it),
then ``SELECT ... ORDER BY id LIMIT n FOR UPDATE SKIP LOCKED``, then each
command through the dispatcher, then ``DELETE`` of the rows applied, then
``COMMIT``. A crash before the commit leaves the rows in place: they are
applied again (at-least-once), and the default idempotency key
``outbox:<table>:<id>`` keeps a publication from reaching clients twice.

A partition with nothing to do waits ``partition_poll_interval``, or less
when a ``NOTIFY`` on ``partition_notification_channel`` names it (the payload
is the partition number; anything else wakes every partition).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from rtcore.server.consumers.base import Backoff, Consumer
from rtcore.server.consumers.dispatch import Outcome


try:
    import psycopg
    from psycopg import sql
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "the postgresql consumer needs psycopg: pip install 'rtcore[postgres]'"
    ) from exc


if TYPE_CHECKING:
    from rtcore.config.consumers import PostgresConsumerConfig
    from rtcore.server.consumers.dispatch import Dispatcher
    from rtcore.server.consumers.metrics import ConsumerStats


__all__ = ["PostgresConsumer"]


class PostgresConsumer(Consumer):
    """Applies the commands of an outbox table, partition by partition, in id order."""

    def __init__(
        self,
        name: str,
        config: PostgresConsumerConfig,
        dispatcher: Dispatcher,
        stats: ConsumerStats,
    ) -> None:
        super().__init__(name, dispatcher, stats)
        self.config = config
        table = sql.Identifier(*config.outbox_table_name.split("."))
        self._table = config.outbox_table_name
        self._select = sql.SQL(
            "SELECT id, method, payload::text, extract(epoch FROM created_at)::float8 "
            "FROM {} WHERE partition = %s ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED"
        ).format(table)
        self._delete = sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(table)
        self._wake = [asyncio.Event() for _ in range(config.num_partitions)]

    async def _close_source(self) -> None:
        return  # each task closes its connections as it ends

    def _run(self) -> None:
        for partition in range(self.config.num_partitions):
            self._spawn(self._partition(partition), f"partition-{partition}")
        if self.config.partition_notification_channel:
            self._spawn(self._listen(), "listen")

    async def _connect(self, autocommit: bool) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(self.config.dsn, autocommit=autocommit)

    async def _partition(self, partition: int) -> None:
        backoff = Backoff()
        wake = self._wake[partition]
        lock_name = f"rtcore-outbox:{self._table}:{partition}"
        while not self.closing:
            try:
                async with await self._connect(autocommit=False) as conn:
                    backoff.reset()
                    while not self.closing:
                        wake.clear()
                        full = await self._batch(conn, partition, lock_name)
                        if full:
                            continue  # there may be more rows right away
                        try:
                            async with asyncio.timeout(self.config.partition_poll_interval):
                                await wake.wait()
                        except TimeoutError:
                            pass
            except (psycopg.Error, OSError) as exc:
                self.source_failed(f"partition {partition}", exc)
                await backoff.wait()

    async def _batch(self, conn: psycopg.AsyncConnection[Any], partition: int, lock: str) -> bool:
        """Apply one batch of the partition; True when it was full (more may wait)."""
        limit = self.config.partition_select_limit
        async with conn.transaction():
            cur = await conn.execute("SELECT pg_try_advisory_xact_lock(hashtext(%s))", (lock,))
            row = await cur.fetchone()
            if not row or not row[0]:
                return False  # another node works on this partition now
            cur = await conn.execute(self._select, (partition, limit))
            rows = await cur.fetchall()
            applied: list[int] = []
            for row_id, method, payload, created in rows:
                outcome = await self.apply(
                    method,
                    payload,
                    message_id=f"{self._table}#{row_id}",
                    key=f"outbox:{self._table}:{row_id}",
                )
                if outcome is Outcome.RETRY:
                    break  # closing: this row and the rest stay for the next run
                applied.append(row_id)
                if created is not None:
                    self.stats.observe_created(float(created))
            if applied:
                await conn.execute(self._delete, (applied,))
        return len(rows) == limit and len(applied) == len(rows)

    async def _listen(self) -> None:
        backoff = Backoff()
        channel = sql.Identifier(self.config.partition_notification_channel)
        while not self.closing:
            try:
                async with await self._connect(autocommit=True) as conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(channel))
                    backoff.reset()
                    # Notifications sent while we were not listening are gone.
                    self._wake_all()
                    async for notify in conn.notifies():
                        self._on_notify(notify.payload)
            except (psycopg.Error, OSError) as exc:
                self.source_failed("LISTEN", exc)
                await backoff.wait()

    def _on_notify(self, payload: str) -> None:
        text = payload.strip()
        if text.isdigit() and int(text) < len(self._wake):
            self._wake[int(text)].set()
        else:
            self._wake_all()

    def _wake_all(self) -> None:
        for event in self._wake:
            event.set()
