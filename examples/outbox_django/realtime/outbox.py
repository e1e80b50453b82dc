"""``publish_on_commit``: real-time events that exist if and only if the transaction commits.

Call it inside the ``transaction.atomic()`` block that makes the change::

    from django.db import transaction
    from realtime.outbox import publish_on_commit

    with transaction.atomic():
        message = Message.objects.create(room=room, author=request.user, body=body)
        publish_on_commit(f"chat:{room}", {"id": message.id, "body": body},
                          key=f"chat-message-{message.id}")

The event is a row in the same transaction: a rollback removes it with the
change, a commit makes both durable together, and rtcore publishes it even if
this process dies right after the commit or rtcore is down for a while. (The
alternative, ``transaction.on_commit(lambda: call_the_api(...))``, loses the
event when the process dies between the commit and the call, or the call fails.)
"""

from __future__ import annotations

import zlib
from typing import Any

from realtime.models import Outbox


#: Must match the consumer's ``num_partitions``.
NUM_PARTITIONS = 4


def partition_of(channel: str) -> int:
    """A channel's partition: rtcore applies one partition's commands in order."""
    return zlib.crc32(channel.encode()) % NUM_PARTITIONS


def publish_on_commit(
    channel: str, data: Any, *, key: str = "", using: str | None = None
) -> Outbox:
    """Queue a publish of ``data`` into ``channel`` in the current transaction.

    ``key`` becomes the publish idempotency key (rtcore derives one from the
    row id otherwise), so a command applied twice reaches clients once.
    """
    payload: dict[str, Any] = {"channel": channel, "data": data}
    if key:
        payload["idempotency_key"] = key
    return Outbox.objects.using(using).create(
        method="publish", payload=payload, partition=partition_of(channel)
    )


def broadcast_on_commit(channels: list[str], data: Any, *, key: str = "") -> Outbox:
    """Queue a broadcast; it goes to the partition of its first channel."""
    payload: dict[str, Any] = {"channels": channels, "data": data}
    if key:
        payload["idempotency_key"] = key
    return Outbox.objects.create(
        method="broadcast", payload=payload, partition=partition_of(channels[0])
    )


def disconnect_on_commit(user: str) -> Outbox:
    """Queue a disconnect of every connection of ``user`` (e.g. after a password change)."""
    return Outbox.objects.create(method="disconnect", payload={"user": user}, partition=0)
