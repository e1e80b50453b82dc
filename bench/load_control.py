"""Control loop shared by the servers of the fan-out load scenario.

A server process prints ``{"listening": <port>}`` once it accepts
connections, then obeys JSON lines on stdin (one reply line on stdout each):

* ``{"stats": true}`` -> ``{"subscribers": <n>, ...}`` (plus server counters)
* ``{"publish": <count>, "rate": <per second, 0 = max>, "size": <bytes>,
  "duration": <seconds>, "window": <bytes>}`` -> publishes publications
  ``1..count`` (fewer if ``duration`` runs out) and replies
  ``{"published": <n>, "asked": <count>, "t_first": <ns>, "t_last": <ns>,
  "max_lag_ms": <ms>}``. At a fixed rate every one of the ``count``
  publications is published: a server that falls behind schedule publishes
  the late ones back to back (yielding to its event loop between two, so its
  writes drain) and ``max_lag_ms`` says how far behind it fell; only a hard
  bound of ``duration`` + max(60 s, 3 x ``duration``) stops it early. At ``rate`` 0 the
  next publication waits until the sampled per-connection backlog is at most
  ``window`` bytes, so "max" means as fast as the clients drain, not as fast
  as memory fills.
* ``{"quit": true}`` -> exits.

Publication data is JSON: ``{"t": <CLOCK_MONOTONIC ns>, "s": <seq>, "p": "<padding>"}``
of exactly ``size`` bytes (at least the size of the fields).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from procstat import raise_nofile_limit


__all__ = ["emit", "make_data", "serve_control", "raise_nofile_limit", "sampled_max"]


def make_data(seq: int, size: int) -> bytes:
    head = b'{"t":%d,"s":%d,"p":"' % (time.monotonic_ns(), seq)
    return head + b"x" * max(0, size - len(head) - 2) + b'"}'


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def _publish(
    publish: Callable[[bytes], Awaitable[None] | None],
    backlog: Callable[[], int],
    cmd: dict[str, Any],
) -> dict[str, Any]:
    count = int(cmd["publish"])
    rate = float(cmd.get("rate", 0))
    size = int(cmd.get("size", 100))
    duration = float(cmd.get("duration", 10))
    window = int(cmd.get("window", 256 * 1024))
    start = time.monotonic()
    if rate > 0:
        # ``count`` ends a fixed-rate run; the deadline only bounds a server
        # that cannot keep up at all (it used to be duration + 10%, which cut
        # slower servers' runs short after a fraction of the publications).
        deadline = start + duration + max(60.0, 3.0 * duration)
    else:
        deadline = start + duration
    t_first = t_last = 0
    published = 0
    max_lag = 0.0
    for seq in range(1, count + 1):
        if rate > 0:
            due = start + (seq - 1) / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                max_lag = max(max_lag, -delay)
                # Behind schedule: still let the loop run (write buffers drain,
                # handshakes and pongs are served) between two publications.
                await asyncio.sleep(0)
        else:
            while backlog() > window and time.monotonic() < deadline:
                await asyncio.sleep(0.0005)
        if time.monotonic() >= deadline:
            break
        data = make_data(seq, size)
        result = publish(data)
        if result is not None:
            await result
        published = seq
        t_last = time.monotonic_ns()
        if not t_first:
            t_first = t_last
        if rate <= 0:
            await asyncio.sleep(0)  # let the flush of this publication run
    await asyncio.sleep(0)
    return {
        "published": published,
        "asked": count,
        "t_first": t_first,
        "t_last": t_last,
        "max_lag_ms": round(max_lag * 1000, 1),
    }


async def serve_control(
    port: int,
    publish: Callable[[bytes], Awaitable[None] | None],
    subscribers: Callable[[], int],
    backlog: Callable[[], int],
    extra: Callable[[], dict[str, Any]] | None = None,
) -> None:
    """Announce ``port`` and run the stdin command loop until quit or EOF.

    ``extra`` adds server-specific counters to the ``stats`` reply.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    emit({"listening": port})
    while True:
        line = await reader.readline()
        if not line:
            return
        cmd = json.loads(line)
        if cmd.get("quit"):
            return
        if cmd.get("stats"):
            emit({"subscribers": subscribers(), **(extra() if extra is not None else {})})
        elif "publish" in cmd:
            emit(await _publish(publish, backlog, cmd))
        else:
            emit({"error": f"unknown command {cmd!r}"})


def sampled_max(items: list[Any], measure: Callable[[Any], int], samples: int = 64) -> int:
    """The largest ``measure(item)`` over up to ``samples`` evenly spaced items."""
    n = len(items)
    if not n:
        return 0
    step = max(1, n // samples)
    return max(measure(items[i]) for i in range(0, n, step))
