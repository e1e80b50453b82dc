"""The Redis engine behind Sentinel: failover under publish load, and stream lineage.

A master, a replica and three Sentinels run as local processes on free
loopback ports. The node publishes with history from many tasks while the
master is SIGKILLed; Sentinel promotes the replica. Publishing must resume on
the new master, the broker must be subscribed there, and a client that
recovers from the last position it received must get either every
acknowledged publication or a new epoch: never a stream that silently lacks
acknowledged publications or hands their offsets to other publications.

The lineage test promotes a replica by hand (``REPLICAOF NO ONE``), without
Sentinel, to show the hazard the epoch binding closes: without it the
promoted replica serves the old epoch although it may lack the last writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis as SyncRedis

from rtcore.backends.redis import (
    RedisConnections,
    RedisHistoryStore,
    RedisUnavailableError,
    SentinelSettings,
)
from rtcore.config import config_from_mapping
from rtcore.engine.broker import BrokerEventHandler
from rtcore.engine.history import HistoryOptions
from rtcore.protocol.types import ClientInfo, Publication, StreamPosition
from tests.backends.redis_servers import (
    HOST,
    RedisServer,
    free_port,
    redis_ping,
    require_binary,
    wait_until,
)


pytestmark = [pytest.mark.redis, pytest.mark.slow]

MASTER_NAME = "rtcore-test"


class SentinelProcess:
    """One Sentinel (``redis-server --sentinel``) watching ``master``."""

    def __init__(self, workdir: Path, master_port: int) -> None:
        self.binary = require_binary("redis-server")
        self.port = free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "sentinel.conf"
        # Sentinel rewrites its config file, so each has its own.
        self.conf.write_text(
            f"port {self.port}\n"
            f"bind {HOST}\n"
            f"dir {workdir}\n"
            f"sentinel monitor {MASTER_NAME} {HOST} {master_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
            f"sentinel failover-timeout {MASTER_NAME} 10000\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self) -> None:
        self._log = open(self.workdir / "sentinel.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [self.binary, str(self.conf), "--sentinel", "--loglevel", "notice"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        wait_until(lambda: redis_ping(self.port), 10, f"sentinel on {self.port}")

    def master_state(self) -> dict[str, Any]:
        with SyncRedis(host=HOST, port=self.port, socket_timeout=2) as r:
            return dict(r.sentinel_master(MASTER_NAME))

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if self._log is not None:
            self._log.close()


class Deployment:
    """Master, replica and three Sentinels in ``tmp``."""

    def __init__(self, tmp: Path) -> None:
        (tmp / "master").mkdir()
        (tmp / "replica").mkdir()
        self.master = RedisServer(workdir=tmp / "master")
        self.replica = RedisServer(
            workdir=tmp / "replica", extra_args=["--replicaof", HOST, str(self.master.port)]
        )
        self.sentinels = [SentinelProcess(tmp / f"sentinel{i}", self.master.port) for i in range(3)]

    def start(self) -> None:
        self.master.start()
        self.replica.start()
        wait_until(
            lambda: _info(self.replica.port).get("master_link_status") == "up", 20, "replica sync"
        )
        for sentinel in self.sentinels:
            sentinel.start()

        def sentinels_see_everyone() -> bool:
            for sentinel in self.sentinels:
                state = sentinel.master_state()
                if int(state.get("num-slaves", 0)) < 1:
                    return False
                if int(state.get("num-other-sentinels", 0)) < 2:
                    return False
            return True

        wait_until(sentinels_see_everyone, 30, "sentinels discovering the replica and each other")

    def settings(self) -> SentinelSettings:
        return SentinelSettings(tuple(s.address for s in self.sentinels), MASTER_NAME)

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for server in (self.master, self.replica):
            with contextlib.suppress(Exception):
                server.kill()


def _info(port: int) -> dict[str, Any]:
    with SyncRedis(host=HOST, port=port, socket_timeout=2) as r:
        return dict(r.info("replication"))


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    require_binary("redis-server")
    d = Deployment(tmp_path)
    try:
        d.start()
        yield d
    finally:
        d.stop()


class Recorder(BrokerEventHandler):
    """Publications the broker delivered, in order."""

    def __init__(self) -> None:
        self.pubs: list[tuple[int, str, bytes]] = []

    def on_publication(
        self, channel: str, pub: Publication, position: StreamPosition, prev: Publication | None
    ) -> None:
        self.pubs.append((position.offset, position.epoch, bytes(pub.data)))

    def on_join(self, channel: str, info: ClientInfo) -> None:
        pass

    def on_leave(self, channel: str, info: ClientInfo) -> None:
        pass

    def on_control(self, data: bytes) -> None:
        pass


def _node_config(d: Deployment, prefix: str) -> Any:
    return config_from_mapping(
        {
            "engine": {
                "type": "redis",
                "redis_prefix": prefix,
                "redis_sentinel_address": [s.address for s in d.sentinels],
                "redis_sentinel_master_name": MASTER_NAME,
            },
            "channel": {
                "without_namespace": {
                    "history_size": 100000,
                    "history_ttl": "10m",
                    "force_recovery": True,
                }
            },
        }
    )


def test_failover_under_publish_load(deployment: Deployment) -> None:
    asyncio.run(asyncio.wait_for(_failover_under_publish_load(deployment), 120))


async def _failover_under_publish_load(deployment: Deployment) -> None:
    from rtcore.server.cli.serve import _make_node

    node = _make_node(_node_config(deployment, "sentinel-failover"))
    broker = node.broker
    channel = "news"
    history = HistoryOptions(size=100000, ttl=600.0, meta_ttl=3600.0)
    recorder = Recorder()
    await broker.start(recorder)
    await broker.subscribe(channel)
    acked: dict[tuple[int, str], bytes] = {}
    failures = 0
    killed_at: float | None = None
    after_kill = 0
    stop = asyncio.Event()
    counter = 0

    async def publisher() -> None:
        nonlocal failures, after_kill, counter
        while not stop.is_set():
            counter += 1
            data = b'{"n": %d}' % counter
            try:
                result = await broker.publish(channel, Publication(data=data), history=history)
            except RedisUnavailableError:
                failures += 1
                await asyncio.sleep(0.05)
                continue
            acked[(result.position.offset, result.position.epoch)] = data
            if killed_at is not None:
                after_kill += 1
                if after_kill >= 200:
                    stop.set()
            await asyncio.sleep(0)

    try:
        tasks = [asyncio.create_task(publisher()) for _ in range(10)]
        # Load first, then the crash.
        deadline = time.monotonic() + 30
        while len(acked) < 500 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(acked) >= 500, "no publish load before the failover"
        old_epochs = {epoch for _, epoch in acked}
        assert len(old_epochs) == 1
        (old_epoch,) = old_epochs
        received_before = list(recorder.pubs)
        deployment.master.kill()
        killed_at = time.monotonic()
        try:
            await asyncio.wait_for(stop.wait(), 60)
        finally:
            stop.set()
            await asyncio.gather(*tasks)

        # Sentinel promoted the replica; every later publish went there.
        promoted = _info(deployment.replica.port)
        assert promoted["role"] == "master"
        assert failures > 0, "the master was killed under load: some publishes must have failed"
        new_epochs = {epoch for (_, epoch) in acked} - {old_epoch}
        assert len(new_epochs) == 1, "a failover starts one new epoch for the stream"
        (new_epoch,) = new_epochs
        # The broker re-subscribed on the new master: it receives new publications.
        wait_deadline = time.monotonic() + 15
        while not any(e == new_epoch for _, e, _ in recorder.pubs):
            assert time.monotonic() < wait_deadline, "no delivery after the failover"
            counter += 1
            data = b'{"n": %d}' % counter
            result = await broker.publish(channel, Publication(data=data), history=history)
            acked[(result.position.offset, result.position.epoch)] = data
            await asyncio.sleep(0.1)

        # A client that received up to its last publication before the crash
        # recovers from there.
        last_offset, last_epoch, _ = received_before[-1]
        hr = await broker.history(channel, since=StreamPosition(last_offset, last_epoch), limit=-1)
        top = hr.position
        if top.epoch == last_epoch:
            # Same epoch: every acknowledged publication after the client's
            # position is there, under its own offset, in order.
            expected = sorted(
                (off, data) for (off, epoch), data in acked.items() if epoch == last_epoch
            )
            got = [(p.offset, bytes(p.data)) for p in hr.publications]
            assert got == [(o, d) for o, d in expected if o > last_offset]
        else:
            # A new epoch: the client is told it did not recover.
            assert top.epoch == new_epoch
            assert hr.publications == []
        # Whatever the stream holds under any epoch matches what was acknowledged.
        full = await broker.history(channel, limit=-1)
        for pub in full.publications:
            key = (pub.offset, full.position.epoch)
            assert acked.get(key) == bytes(pub.data), f"offset {pub.offset} reused"
        for (offset, epoch), _data in acked.items():
            if epoch == full.position.epoch:
                assert any(p.offset == offset for p in full.publications), (
                    f"acknowledged publication {offset} missing from epoch {epoch}"
                )
    finally:
        await node.close()


def test_sentinel_config_validation() -> None:
    with pytest.raises(Exception, match="redis_sentinel_master_name"):
        config_from_mapping(
            {"engine": {"type": "redis", "redis_sentinel_address": ["127.0.0.1:26379"]}}
        )
    with pytest.raises(ValueError, match="Sentinel address"):
        SentinelSettings(("127.0.0.1:notaport",), "m")
    with pytest.raises(ValueError, match="at most one URL"):
        RedisConnections(["redis://a:1", "redis://b:2"], sentinel=SentinelSettings(("h:1",), "m"))


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    (tmp_path / "m").mkdir()
    (tmp_path / "r").mkdir()
    master = RedisServer(workdir=tmp_path / "m")
    replica = RedisServer(
        workdir=tmp_path / "r", extra_args=["--replicaof", HOST, str(master.port)]
    )
    try:
        master.start()
        replica.start()
        wait_until(lambda: _info(replica.port).get("master_link_status") == "up", 20, "sync")
        yield master, replica
    finally:
        for server in (master, replica):
            with contextlib.suppress(Exception):
                server.kill()


def test_promoted_replica_starts_a_new_epoch(pair: tuple[RedisServer, RedisServer]) -> None:
    asyncio.run(asyncio.wait_for(_promoted_replica_starts_a_new_epoch(*pair), 60))


async def _promoted_replica_starts_a_new_epoch(master: RedisServer, replica: RedisServer) -> None:
    opts = HistoryOptions(size=100, ttl=600.0, meta_ttl=3600.0)
    on_master = RedisHistoryStore(RedisConnections(master.url, lineage=True), prefix="lineage")
    try:
        for i in range(5):
            await on_master.add("ch", Publication(data=b"%d" % i), opts)
        before = (await on_master.get("ch", limit=0)).position
        assert before.offset == 5
        # Nothing changes while the master stays the same.
        assert (await on_master.get("ch", limit=0)).position == before
        with SyncRedis(host=HOST, port=master.port) as r:
            assert r.execute_command("WAIT", 1, 5000) == 1
    finally:
        await on_master.close()
    master.kill()
    with SyncRedis(host=HOST, port=replica.port) as r:
        r.execute_command("REPLICAOF", "NO", "ONE")

    # Without the binding, the promoted replica serves the old epoch: had the
    # last writes been lost, their offsets would be handed out again.
    plain = RedisHistoryStore(RedisConnections(replica.url), prefix="lineage")
    try:
        assert (await plain.get("ch", limit=0)).position == before
    finally:
        await plain.close()
    bound = RedisHistoryStore(RedisConnections(replica.url, lineage=True), prefix="lineage")
    try:
        hr = await bound.get("ch", since=before, limit=-1)
        assert hr.position.epoch != before.epoch
        assert hr.publications == []
        position = await bound.add("ch", Publication(data=b"new"), opts)
        assert position == StreamPosition(1, hr.position.epoch)
        # From now on the stream is bound to the new master: the epoch stays.
        assert (await bound.get("ch", limit=0)).position == position
    finally:
        await bound.close()
