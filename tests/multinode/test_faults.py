"""Failures under publish load: a node killed, Redis restarted.

* A node is SIGKILLed while a publisher sends sequence-numbered publications
  through the server API of a surviving node: its clients reconnect to
  another node and recover every publication they missed (recovered=true,
  gap-free, duplicate-free, in order); the dead node's presence entries expire
  while the live ones are kept.
* The Redis server (a private one on a free port) is restarted during the
  load. Either way every API publish succeeded or returned an error (none
  hung up), every success reached every client or (data lost) is in the new
  history, the metrics count the broker errors, and forwarding an
  ``/emulation`` request answers 503 while Redis is down. Without persistence
  the epoch changes and clients resubscribe on the not-recovered path; with
  AOF the epoch survives and clients miss nothing.
* ``/health`` does not reflect the broker (an expected failure, kept strict so
  that it is noticed when that changes).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from backends.redis_servers import RedisServer

from .helpers import (
    NodeProc,
    Publisher,
    api,
    client,
    cluster,
    metric,
    require_redis,
    run,
    subscribed,
    until,
)


pytestmark = [pytest.mark.redis, pytest.mark.timeout(240)]

RATE = 40.0  # publications per second


@pytest.mark.parametrize("stop", ["sigkill", "sigterm"])
def test_lost_node_clients_recover_on_another_node(tmp_path: Path, stop: str) -> None:
    """SIGKILL (a crash) or SIGTERM (a graceful stop: 3001 spread over
    ``client.reconnect_jitter``) of the node the clients are on."""
    require_redis()
    # Presence entries of a dead node live until their TTL: keep it short here.
    with cluster(tmp_path, 3, engine_extra='presence_ttl = "2s"') as nodes:
        a, b, c = nodes[0], nodes[1], nodes[2]

        async def main() -> None:
            channel = "chat:load"
            # A reference client on node B, three clients on node C that know every node.
            ref, _ = client(b.ws, "ref")
            await ref.connect()
            await ref.ready(timeout=10)
            _, ref_events = await subscribed(ref, channel)
            movers = []
            for i in range(3):
                mc, mev = client(
                    [c.ws, a.ws, b.ws],
                    f"mover-{i}",
                    min_reconnect_delay=0.3,
                    max_reconnect_delay=0.6,
                )
                await mc.connect()
                await mc.ready(timeout=10)
                _, sev = await subscribed(mc, channel)
                movers.append((mc, mev, sev))
            async with aiohttp.ClientSession() as http:
                stats = await api(http, a, "presence_stats", {"channel": channel})
                assert stats["result"]["num_clients"] == 4
                publisher = Publisher(http, a, channel, RATE)
                task = asyncio.ensure_future(publisher.run())
                await asyncio.sleep(1.5)
                assert publisher.ok(), "nothing published before the kill"
                killed_at = time.monotonic()
                if stop == "sigkill":
                    await asyncio.to_thread(c.kill)
                else:
                    assert await asyncio.to_thread(c.terminate) == 0
                for _, _, sev in movers:
                    await until(lambda s=sev: len(s.subscribed) >= 2, 20, "resubscribe elsewhere")
                await asyncio.sleep(1.5)
                publisher.stop.set()
                await asyncio.wait_for(task, 30)

                # Every publication went through node A.
                assert not publisher.failed(), publisher.failed()[:3]
                total = len(publisher.results)
                assert [r["offset"] for r in publisher.results] == list(range(1, total + 1))
                expected = list(range(1, total + 1))
                await until(lambda: len(ref_events.pubs) >= total, 15, "reference client")
                assert ref_events.seqs() == expected
                for mc, mev, sev in movers:
                    await until(lambda s=sev: len(s.pubs) >= total, 15, f"all {total} on a mover")
                    # Gap-free, duplicate-free, in order: exactly 1..total.
                    assert sev.seqs() == expected, sev.seqs()
                    assert [p.offset for p in sev.pubs] == expected
                    resub = sev.subscribed[1]
                    assert resub.was_recovering is True and resub.recovered is True
                    assert len(sev.subscribed) == 2  # no further resubscription
                    # It moved to a surviving node, and publications were missed meanwhile.
                    assert mc.dialed[-1] in (a.ws, b.ws), mc.dialed
                    if stop == "sigterm":
                        assert (3001, "shutdown") in mev.connecting, mev.connecting
                    assert mev.disconnects == []  # never gave up
                    missed = [
                        r for r in publisher.results if killed_at < r["done"] < sev.subscribed_at[1]
                    ]
                    assert missed, "no publication was made while the client was away"
                # The dead node's presence entries expire; the moved clients' stay.
                for _ in range(100):
                    stats = await api(http, a, "presence_stats", {"channel": channel})
                    if stats["result"]["num_clients"] == 4:
                        break
                    await asyncio.sleep(0.1)
                assert stats["result"] == {"num_clients": 4, "num_users": 4}, stats
                # Still so after more than a TTL: live entries are refreshed.
                await asyncio.sleep(3)
                stats = await api(http, b, "presence_stats", {"channel": channel})
                assert stats["result"] == {"num_clients": 4, "num_users": 4}, stats
            for mc, _, _ in movers:
                await mc.disconnect()
            await ref.disconnect()

        run(main(), timeout=150)


def _own_redis(*args: str) -> RedisServer:
    server = RedisServer(extra_args=args)
    server.start()
    return server


EMULATION_PROBE = '{"id":2,"presence":{}}'


async def _restart_under_load(
    server: RedisServer, a: NodeProc, b: NodeProc, *, expect_resubscribe: bool
) -> dict[str, Any]:
    """Clients on nodes A and B, a publisher on A's API, Redis restarted meanwhile.

    Checks what holds whether or not Redis keeps its data, and returns what
    happened for the rest: the publisher's results, what each client got, the
    moments Redis stopped and came back, the history read afterwards.
    """
    channel = "chat:restart"
    clients = []
    for node, user in ((b, "on-b"), (a, "on-a")):
        cl, _ = client(node.ws, user)
        await cl.connect()
        await cl.ready(timeout=10)
        _, sev = await subscribed(cl, channel)
        clients.append((cl, sev))
    async with aiohttp.ClientSession() as http:
        errors_before = await metric(http, a, "rtcore_broker_errors_total", 'op="publish"')
        publisher = Publisher(http, a, channel, RATE, timeout=15)
        task = asyncio.ensure_future(publisher.run())
        await asyncio.sleep(1.5)
        first = publisher.ok()
        assert first, "nothing published before the restart"
        await asyncio.to_thread(server.stop)
        stopped_at = time.monotonic()
        await asyncio.sleep(0.7)
        # While Redis is down: publishes fail, the metrics count them, and an
        # /emulation request for another node cannot be forwarded (503).
        assert publisher.failed(), "no publish failed while Redis was down"
        errors_down = await metric(http, a, "rtcore_broker_errors_total", 'op="publish"')
        assert errors_down > errors_before
        probe = {"node": b.name, "session": "s", "data": EMULATION_PROBE}
        async with http.post(f"{a.http}/emulation", json=probe) as r:
            assert r.status == 503
        await asyncio.sleep(0.8)
        await asyncio.to_thread(server.start)
        started_at = time.monotonic()
        if expect_resubscribe:
            for _, sev in clients:
                await until(lambda s=sev: len(s.subscribed) >= 2, 20, "resubscribe")
        else:
            await asyncio.sleep(1.5)
        await asyncio.sleep(1.5)
        publisher.stop.set()
        await asyncio.wait_for(task, 30)
        async with http.post(f"{a.http}/emulation", json=probe) as r:
            assert r.status == 204

        results = publisher.results
        # Every request got an answer, success or error: none hung up or was cut.
        assert not [r for r in results if "exception" in r], results
        ok = publisher.ok()
        # Redis was down from stopped_at until started_at: nothing succeeded then.
        after = [r for r in ok if r["sent"] > stopped_at]
        assert after, "no success after the restart"
        assert all(r["done"] > started_at - 0.5 for r in after)
        history = (await api(http, b, "history", {"channel": channel, "limit": -1}))["result"]
        # Every success is delivered once the publisher stopped, or (after a
        # restart without data) in the new history.
        seqs_in_history = {p["data"]["seq"] for p in history.get("publications", [])}
        for _, sev in clients:
            await until(
                lambda s=sev: {r["seq"] for r in ok} <= set(s.seqs()) | seqs_in_history,
                15,
                lambda s=sev: f"missing: {sorted({r['seq'] for r in ok} - set(s.seqs()))}",
            )
    assert a.alive and b.alive
    for cl, _ in clients:
        await cl.disconnect()
    return {
        "ok": ok,
        "results": results,
        "clients": [sev for _, sev in clients],
        "stopped_at": stopped_at,
        "started_at": started_at,
        "history": history,
    }


def test_redis_restart_without_persistence(tmp_path: Path) -> None:
    """Data lost: a new epoch, and clients resubscribe on the not-recovered path."""
    server = _own_redis()
    try:
        with cluster(tmp_path, 2, redis_url=server.url) as nodes:
            out = run(_restart_under_load(server, nodes[0], nodes[1], expect_resubscribe=True))
    finally:
        server.cleanup()
    ok = out["ok"]
    before = [r for r in ok if r["done"] < out["stopped_at"]]
    after = [r for r in ok if r["sent"] > out["stopped_at"]]
    assert before, "no success before the restart"
    old_epochs = {r["epoch"] for r in before}
    new_epochs = {r["epoch"] for r in after}
    assert len(old_epochs) == 1 and len(new_epochs) == 1 and old_epochs != new_epochs
    new_epoch = next(iter(new_epochs))
    # The stream started again from offset 1; failed publishes took no place in it.
    assert [r["offset"] for r in after] == list(range(1, len(after) + 1))
    history = out["history"]
    assert history["epoch"] == new_epoch
    assert [p["data"]["seq"] for p in history["publications"]] == [r["seq"] for r in after]
    for sev in out["clients"]:
        got = sev.seqs()
        assert got == sorted(set(got)), got  # in order, no duplicates
        # The successes before the restart were all delivered, first.
        assert got[: len(before)] == [r["seq"] for r in before]
        # Resubscribed on the not-recovered path: the epoch changed.
        resub = sev.subscribed[-1]
        assert resub.was_recovering is True and resub.recovered is False
        assert resub.stream_position.epoch == new_epoch
        # From then on everything published reached it.
        later = [r["seq"] for r in ok if r["sent"] > sev.subscribed_at[-1]]
        assert later and set(later) <= set(got)


def test_redis_restart_with_persistence(tmp_path: Path) -> None:
    """Data kept (AOF, fsync always): the epoch survives and nothing is missed."""
    server = _own_redis("--appendonly", "yes", "--appendfsync", "always")
    try:
        with cluster(tmp_path, 2, redis_url=server.url) as nodes:
            out = run(_restart_under_load(server, nodes[0], nodes[1], expect_resubscribe=False))
    finally:
        server.cleanup()
    ok = out["ok"]
    assert len({r["epoch"] for r in ok}) == 1, "the epoch changed"
    failed = {r["seq"] for r in out["results"] if not r.get("ok")}
    for sev in out["clients"]:
        got = sev.seqs()
        # Every success, once, in order; a failed publish may have been applied
        # (its reply lost), and then it is delivered too.
        assert got == sorted(set(got)), got
        assert {r["seq"] for r in ok} <= set(got)
        assert set(got) - {r["seq"] for r in ok} <= failed
        offsets = [p.offset for p in sev.pubs]
        assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), offsets
        # Any resubscription recovered.
        for ctx in sev.subscribed[1:]:
            assert ctx.was_recovering is True and ctx.recovered is True


def test_health_reports_a_broker_outage(tmp_path: Path) -> None:
    server = _own_redis()
    try:
        with cluster(tmp_path, 1, redis_url=server.url) as nodes:

            async def main() -> None:
                async with aiohttp.ClientSession() as http:
                    async with http.get(f"{nodes[0].http}/health") as r:
                        assert r.status == 200
                    await asyncio.to_thread(server.stop)
                    await asyncio.sleep(1.0)
                    async with http.get(f"{nodes[0].http}/health") as r:
                        assert r.status == 503, "healthy while Redis is down"
                        assert "broker unavailable" in (await r.json())["error"]
                    await asyncio.to_thread(server.start)
                    for _ in range(50):
                        async with http.get(f"{nodes[0].http}/health") as r:
                            if r.status == 200:
                                break
                        await asyncio.sleep(0.2)
                    assert r.status == 200, "not healthy again after Redis came back"

            run(main(), timeout=60)
    finally:
        server.cleanup()
