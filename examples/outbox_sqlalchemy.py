"""Publish on transaction commit with SQLAlchemy: the transactional outbox.

The application writes its change and the real-time command in one
transaction. The command is a row of the outbox table, so it exists if and
only if the change committed; rtcore's postgresql consumer reads the table
and publishes (docs/consumers.md). Nothing is published for a rolled-back
transaction, and nothing committed is lost when rtcore or the network is down
for a while: the rows wait.

Run it against a PostgreSQL database (psycopg 3 is SQLAlchemy's driver here)::

    pip install 'rtcore[postgres]' SQLAlchemy
    python examples/outbox_sqlalchemy.py postgresql+psycopg://user:pw@127.0.0.1/app

and let ``rtcore serve`` consume the table with::

    [[consumers]]
    name = "outbox"
    enabled = true
    type = "postgresql"
    postgresql.dsn = "postgresql://user:pw@127.0.0.1/app"
    postgresql.outbox_table_name = "rtcore_outbox"
    postgresql.num_partitions = 4
    postgresql.partition_notification_channel = "rtcore_outbox_changed"
"""

from __future__ import annotations

import json
import sys
import zlib
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Integer, String, Text, create_engine, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column


OUTBOX_TABLE = "rtcore_outbox"
NOTIFY_CHANNEL = "rtcore_outbox_changed"
NUM_PARTITIONS = 4


class Base(DeclarativeBase):
    pass


class Outbox(Base):
    """The outbox table as rtcore's postgresql consumer reads it."""

    __tablename__ = OUTBOX_TABLE

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    method: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    partition: Mapped[int] = mapped_column(Integer, default=0, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Message(Base):
    """The application's own data: chat messages."""

    __tablename__ = "chat_message"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    room: Mapped[str] = mapped_column(String(200))
    author: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)


# Wakes the consumer at once instead of at its next poll (the payload is the partition).
NOTIFY_TRIGGER = f"""
CREATE OR REPLACE FUNCTION {OUTBOX_TABLE}_notify() RETURNS TRIGGER AS $$
BEGIN
    PERFORM pg_notify('{NOTIFY_CHANNEL}', NEW.partition::text);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE OR REPLACE TRIGGER {OUTBOX_TABLE}_notify AFTER INSERT ON {OUTBOX_TABLE}
    FOR EACH ROW EXECUTE FUNCTION {OUTBOX_TABLE}_notify();
"""


def create_schema(engine: Any) -> None:
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(text(NOTIFY_TRIGGER))


def partition_of(channel: str) -> int:
    """A channel's partition: its commands are published in the order they were written."""
    return zlib.crc32(channel.encode()) % NUM_PARTITIONS


def publish_on_commit(session: Session, channel: str, data: Any, key: str = "") -> None:
    """Publish ``data`` into ``channel`` if and when ``session``'s transaction commits.

    ``key`` becomes the publish idempotency key (the consumer derives one from
    the row id otherwise), so a command applied twice reaches clients once.
    """
    payload: dict[str, Any] = {"channel": channel, "data": data}
    if key:
        payload["idempotency_key"] = key
    session.add(Outbox(method="publish", payload=payload, partition=partition_of(channel)))


def post_message(session: Session, room: str, author: str, body: str) -> Message:
    """Store a message and announce it to the room's subscribers, atomically."""
    message = Message(room=room, author=author, body=body)
    session.add(message)
    session.flush()  # assigns message.id
    publish_on_commit(
        session,
        f"chat:{room}",
        {"id": message.id, "author": author, "body": body},
        key=f"chat-message-{message.id}",
    )
    return message


def main(url: str) -> None:
    engine = create_engine(url)
    create_schema(engine)
    with Session(engine) as session, session.begin():
        post_message(session, "lobby", "ann", "hello")
    # A failed transaction publishes nothing.
    try:
        with Session(engine) as session, session.begin():
            post_message(session, "lobby", "bob", "never seen")
            raise RuntimeError("the application fails before the commit")
    except RuntimeError:
        pass
    with Session(engine) as session:
        rows = session.query(Outbox).order_by(Outbox.id).all()
        for row in rows:
            print(row.id, row.method, json.dumps(row.payload), "partition", row.partition)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/outbox_sqlalchemy.py postgresql+psycopg://...")
    main(sys.argv[1])
