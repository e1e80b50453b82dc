"""Consumers against the real servers: a PostgreSQL outbox, Redis Streams, NATS JetStream.

Every source test follows one script: commands wait at the source; a consumer
applies part of them and is stopped in the middle of a batch (its node call
blocks, then the consumer is closed, as a crash would leave it: applied but
not acknowledged); more commands arrive; a new consumer takes over. Then every
channel's history must hold each publication exactly once and in order: the
redelivered ones were suppressed by their idempotency key, and nothing was
lost. The node is an in-process memory-engine node; its history is what
clients receive and recover.

PostgreSQL: ``RTCORE_TEST_POSTGRES_DSN``, or (as root) a role and database
``rtcore_test`` created through the local ``postgres`` superuser. Redis: the
server on 127.0.0.1:6379. NATS: a ``nats-server -js`` started here. Missing
services skip the tests, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rtcore.config import config_from_mapping
from rtcore.config.consumers import (
    ConsumerConfig,
    NatsJetStreamConsumerConfig,
    PostgresConsumerConfig,
    RedisStreamConsumerConfig,
)
from rtcore.engine.node import Node
from rtcore.server.consumers import Consumers, Dispatcher, Outcome
from rtcore.server.consumers.base import Consumer
from rtcore.server.consumers.metrics import ConsumerCollector, ConsumerStats


IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "yes", "true", "on"}

pytestmark = pytest.mark.redis


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what}, and CI=true requires it")
    pytest.skip(what)


def _config() -> Any:
    return config_from_mapping(
        {
            "channel": {
                "without_namespace": {"history_size": 10000, "history_ttl": "10m"},
                "namespaces": [{"name": "plain"}],
            }
        }
    )


class Gate:
    """Wraps ``node.publish``: counts calls; from call ``block_after`` on, hangs after publishing."""

    def __init__(self, node: Node, block_after: int = 0) -> None:
        self.node = node
        self.calls = 0
        self.suppressed = 0
        self.block_after = block_after
        self.blocked = asyncio.Event()
        self._publish = node.publish
        self.failures = 0  # the next calls that raise ConnectionError
        node.publish = self._wrapped  # type: ignore[method-assign]

    async def _wrapped(self, channel: str, data: bytes, **kwargs: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("engine down (test)")
        self.calls += 1
        result = await self._publish(channel, data, **kwargs)
        if result[1]:
            self.suppressed += 1
        if self.block_after and self.calls >= self.block_after:
            # Applied, and now the consumer "crashes" before acknowledging.
            self.blocked.set()
            await asyncio.Event().wait()  # until the consumer is cancelled
        return result

    def release(self) -> None:
        self.block_after = 0


async def until(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout} s")
        await asyncio.sleep(0.05)


async def seqs(node: Node, channel: str) -> list[int]:
    hr = await node.history(channel, limit=-1)
    return [json.loads(p.data)["seq"] for p in hr.publications]


def run(coro: Awaitable[None], timeout: float = 200) -> None:
    async def main() -> None:
        await asyncio.wait_for(coro, timeout)

    asyncio.run(main())


async def restart_scenario(
    node: Node,
    make: Callable[[], ConsumerConfig],
    produce: Callable[[list[tuple[str, int]]], Awaitable[None]],
    channels: list[str],
    per_channel: int,
) -> Gate:
    """Produce, consume with a crash in the middle, produce more, consume again; check."""
    first = [(ch, i) for i in range(1, per_channel + 1) for ch in channels]
    await produce(first)
    gate = Gate(node, block_after=len(first) // 2)
    consumers = Consumers(node, [make()])
    await consumers.start()
    await asyncio.wait_for(gate.blocked.wait(), 60)
    await consumers.close()  # mid-batch: applied, not acknowledged
    second = [(ch, i) for i in range(per_channel + 1, 2 * per_channel + 1) for ch in channels]
    await produce(second)
    gate.release()
    consumers = Consumers(node, [make()])
    await consumers.start()
    try:
        expected = list(range(1, 2 * per_channel + 1))

        async def complete() -> bool:
            return [await seqs(node, ch) for ch in channels] == [expected] * len(channels)

        async def any_longer() -> bool:
            return any([len(await seqs(node, ch)) > len(expected) for ch in channels])

        await until(complete, 120, "every command applied once, in order")
        await asyncio.sleep(0.3)  # anything still redelivered would show now
        assert not await any_longer()
        for ch in channels:
            assert await seqs(node, ch) == expected
        stats = consumers.consumers[0].stats
        assert stats.processed >= len(first) + len(second) - len(first) // 2
    finally:
        await consumers.close()
    # The crashed batch was applied again and suppressed, not published twice.
    assert gate.suppressed > 0
    return gate


# -- the dispatcher -------------------------------------------------------------------


def test_dispatcher_outcomes() -> None:
    async def main() -> None:
        node = Node(_config())
        await node.start()
        try:
            stats = ConsumerStats("t")
            d = Dispatcher(node, "t", stats)
            ok = await d.dispatch("publish", b'{"channel": "a", "data": {"x": 1}}', message_id="1")
            assert ok is Outcome.DONE
            assert (await node.history("a", limit=-1)).publications[0].data == b'{"x": 1}'
            # Raw JSON is kept byte for byte, as the HTTP API does.
            await d.dispatch("publish", '{"channel":"a","data":{"y" : [1,2]}}', message_id="2")
            assert (await node.history("a", limit=-1)).publications[1].data == b'{"y" : [1,2]}'
            # Never applicable: dropped.
            assert (
                await d.dispatch("history", b'{"channel": "a"}', message_id="3") is Outcome.DROPPED
            )
            assert await d.dispatch("publish", b'{"channel": ', message_id="4") is Outcome.DROPPED
            assert (
                await d.dispatch("publish", b'{"chanel": "a"}', message_id="5") is Outcome.DROPPED
            )
            unknown_ns = b'{"channel": "nope:a", "data": {}}'
            assert await d.dispatch("publish", unknown_ns, message_id="6") is Outcome.DROPPED
            assert await d.dispatch("publish", b"\xff", message_id="7") is Outcome.DROPPED
            # The engine failing: retry.
            gate = Gate(node)
            gate.failures = 1
            data = b'{"channel": "a", "data": {}}'
            assert await d.dispatch("publish", data, message_id="8") is Outcome.RETRY
            # A derived key suppresses the second delivery of the same message.
            assert (
                await d.dispatch("publish", data, message_id="9", default_key="k") is Outcome.DONE
            )
            assert (
                await d.dispatch("publish", data, message_id="9", default_key="k") is Outcome.DONE
            )
            assert gate.suppressed == 1
            # A broadcast with a temporary failure on one channel is retried whole.
            gate.failures = 1
            both = b'{"channels": ["b", "c"], "data": {}, "idempotency_key": "bc"}'
            assert await d.dispatch("broadcast", both, message_id="10") is Outcome.RETRY
            assert await d.dispatch("broadcast", both, message_id="10") is Outcome.DONE
            assert len((await node.history("b", limit=-1)).publications) == 1
            assert len((await node.history("c", limit=-1)).publications) == 1
            assert stats.processed == 5
            assert stats.errors == {"retry": 2, "dropped": 5, "source": 0}
            names = {m.name for m in ConsumerCollector([stats]).collect()}
            assert names == {
                "rtcore_consumer_processed",
                "rtcore_consumer_errors",
                "rtcore_consumer_lag_seconds",
            }
        finally:
            await node.close()

    run(main())


def test_close_cancels_again_a_task_that_lost_its_cancellation() -> None:
    """On Python 3.11 a library's ``asyncio.wait_for`` can drop a cancel (redis-py
    sends under one); a consumer must still stop when closed."""

    class Stubborn(Consumer):
        def __init__(self) -> None:
            super().__init__("stubborn", None, ConsumerStats("stubborn"))  # type: ignore[arg-type]
            self.lost = 0

        def _run(self) -> None:
            self._spawn(self._read(), "read")

        async def _read(self) -> None:
            while True:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    if self.lost == 2:
                        raise
                    self.lost += 1
                    asyncio.current_task().uncancel()  # type: ignore[union-attr]

        async def _close_source(self) -> None:
            pass

    async def main() -> None:
        consumer = Stubborn()
        await consumer.start()
        await asyncio.sleep(0)
        await consumer.close()
        assert consumer.lost == 2
        assert not consumer._tasks

    run(main(), timeout=10)


def test_consumer_config_errors() -> None:
    with pytest.raises(Exception, match=r"consumers\[0\].postgresql.outbox_table_name"):
        config_from_mapping(
            {
                "consumers": [
                    {
                        "name": "o",
                        "enabled": True,
                        "type": "postgresql",
                        "postgresql": {"dsn": "x", "outbox_table_name": "bad name; drop"},
                    }
                ]
            }
        )
    with pytest.raises(Exception, match="duplicate consumer name"):
        config_from_mapping(
            {
                "consumers": [
                    {"name": "a", "type": "redis_stream"},
                    {"name": "a", "type": "redis_stream"},
                ]
            }
        )
    with pytest.raises(Exception, match="must be one of"):
        config_from_mapping({"consumers": [{"name": "k", "type": "kafka"}]})


# -- PostgreSQL outbox -------------------------------------------------------------------

PG_ROLE = "rtcore_test"


def _provision_postgres() -> str | None:
    """A DSN for a test database, creating role and database through ``postgres`` as root."""
    runuser = shutil.which("runuser")
    psql = shutil.which("psql")
    if os.geteuid() != 0 or runuser is None or psql is None:
        return None

    def sql(statement: str, db: str = "postgres") -> str:
        done = subprocess.run(
            [runuser, "-u", "postgres", "--", psql, "-d", db, "-tAc", statement],
            capture_output=True,
            text=True,
            timeout=30,
            cwd="/",
        )
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip())
        return done.stdout.strip()

    try:
        if sql(f"SELECT 1 FROM pg_roles WHERE rolname = '{PG_ROLE}'") != "1":
            sql(f"CREATE ROLE {PG_ROLE} LOGIN PASSWORD '{PG_ROLE}'")
        if sql(f"SELECT 1 FROM pg_database WHERE datname = '{PG_ROLE}'") != "1":
            sql(f"CREATE DATABASE {PG_ROLE} OWNER {PG_ROLE}")
    except (RuntimeError, OSError, subprocess.TimeoutExpired):
        return None
    return f"postgresql://{PG_ROLE}:{PG_ROLE}@127.0.0.1:5432/{PG_ROLE}"


@pytest.fixture(scope="module")
def postgres_dsn() -> str:
    try:
        import psycopg
    except ImportError:
        _missing("psycopg is not installed (pip install 'rtcore[postgres]')")
    dsn = os.environ.get("RTCORE_TEST_POSTGRES_DSN") or _provision_postgres()
    if dsn is None:
        _missing("no PostgreSQL for the tests (set RTCORE_TEST_POSTGRES_DSN)")
    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        _missing(f"PostgreSQL at {dsn} is not reachable: {exc}")
    return str(dsn)


OUTBOX_DDL = """
CREATE TABLE {t} (
    id BIGSERIAL PRIMARY KEY,
    method TEXT NOT NULL,
    payload JSONB NOT NULL,
    partition INTEGER NOT NULL DEFAULT 0,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX {t}_partition_id ON {t} (partition, id);
CREATE FUNCTION {t}_notify() RETURNS TRIGGER AS $$
BEGIN
    PERFORM pg_notify('{t}_changed', NEW.partition::text);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER {t}_notify AFTER INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION {t}_notify();
"""


@pytest.fixture
def outbox(postgres_dsn: str) -> Iterator[str]:
    import psycopg

    table = f"outbox_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(OUTBOX_DDL.format(t=table))  # type: ignore[arg-type]
    try:
        yield table
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")  # type: ignore[arg-type]
            conn.execute(f"DROP FUNCTION IF EXISTS {table}_notify()")  # type: ignore[arg-type]


def test_postgres_outbox_restart(postgres_dsn: str, outbox: str) -> None:
    import psycopg

    partitions = 4
    channels = [f"p{i}" for i in range(partitions)]

    def make() -> ConsumerConfig:
        return ConsumerConfig(
            name="outbox",
            enabled=True,
            type="postgresql",
            postgresql=PostgresConsumerConfig(
                dsn=postgres_dsn,
                outbox_table_name=outbox,
                num_partitions=partitions,
                partition_select_limit=20,
                partition_poll_interval=5.0,  # the NOTIFY wakes it well before
                partition_notification_channel=f"{outbox}_changed",
            ),
        )

    async def produce(items: list[tuple[str, int]]) -> None:
        async with await psycopg.AsyncConnection.connect(postgres_dsn) as conn:
            for ch, seq in items:
                payload = {"channel": ch, "data": {"seq": seq}, "idempotency_key": f"{ch}-{seq}"}
                await conn.execute(
                    f"INSERT INTO {outbox} (method, payload, partition) VALUES (%s, %s, %s)",  # type: ignore[arg-type]
                    ("publish", json.dumps(payload), int(ch[1:])),
                )
            await conn.commit()

    async def main() -> None:
        node = Node(_config())
        await node.start()
        try:
            await restart_scenario(node, make, produce, channels, 40)
            async with await psycopg.AsyncConnection.connect(postgres_dsn) as conn:
                cur = await conn.execute(f"SELECT count(*) FROM {outbox}")  # type: ignore[arg-type]
                assert (await cur.fetchone()) == (0,)
        finally:
            await node.close()

    run(main())


# -- Redis Streams ------------------------------------------------------------------------


def _redis_up() -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def test_redis_stream_restart() -> None:
    if not _redis_up():
        _missing("no Redis on 127.0.0.1:6379")
    from redis.asyncio import Redis

    tag = uuid.uuid4().hex[:8]
    streams = [f"rtcore-test-cmds-{tag}-a", f"rtcore-test-cmds-{tag}-b"]
    channels = ["sa", "sb"]

    def make() -> ConsumerConfig:
        return ConsumerConfig(
            name="streams",
            enabled=True,
            type="redis_stream",
            redis_stream=RedisStreamConsumerConfig(
                address="redis://127.0.0.1:6379",
                streams=list(streams),
                consumer_group=f"rtcore-{tag}",
                visibility_timeout=0.5,
            ),
        )

    async def produce(items: list[tuple[str, int]]) -> None:
        r = Redis.from_url("redis://127.0.0.1:6379")
        try:
            for ch, seq in items:
                stream = streams[channels.index(ch)]
                payload = json.dumps({"channel": ch, "data": {"seq": seq}})
                await r.xadd(stream, {"method": "publish", "payload": payload})
        finally:
            await r.aclose()

    async def main() -> None:
        node = Node(_config())
        await node.start()
        try:
            # No idempotency key in the payloads: the entry id is the default one.
            await restart_scenario(node, make, produce, channels, 30)
            r = Redis.from_url("redis://127.0.0.1:6379")
            try:
                for stream in streams:
                    pending = await r.xpending(stream, f"rtcore-{tag}")
                    assert pending["pending"] == 0
            finally:
                await r.delete(*streams)
                await r.aclose()
        finally:
            await node.close()

    run(main())


# -- NATS JetStream ---------------------------------------------------------------------


@pytest.fixture
def jetstream_url() -> Iterator[str]:
    try:
        import nats  # noqa: F401
    except ImportError:
        _missing("nats-py is not installed (pip install 'rtcore[nats]')")
    binary = shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if os.path.exists("/usr/sbin/nats-server") else None
    )
    if binary is None:
        _missing("nats-server is not installed")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = Path(tempfile.mkdtemp(prefix="rtcore-js-"))
    with open(workdir / "nats.log", "ab") as log:
        proc = subprocess.Popen(
            [binary, "-js", "-sd", str(workdir), "-a", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                    if s.recv(4) == b"INFO":
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "nats-server did not start"
            time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        shutil.rmtree(workdir, ignore_errors=True)


def test_jetstream_restart(jetstream_url: str) -> None:
    import nats

    channels = ["ja", "jb"]

    def make() -> ConsumerConfig:
        return ConsumerConfig(
            name="js",
            enabled=True,
            type="nats_jetstream",
            nats_jetstream=NatsJetStreamConsumerConfig(
                url=jetstream_url,
                stream_name="CMDS",
                subjects=["cmds.>"],
                durable_consumer_name="rtcore",
                method_header="rtcore-method",
                max_ack_pending=1,
                ack_wait=1.0,
            ),
        )

    async def produce(items: list[tuple[str, int]]) -> None:
        nc = await nats.connect(jetstream_url)
        try:
            js = nc.jetstream()
            for ch, seq in items:
                if seq % 2:
                    # The header form: the data is the parameters.
                    data = json.dumps({"channel": ch, "data": {"seq": seq}}).encode()
                    await js.publish(f"cmds.{ch}", data, headers={"rtcore-method": "publish"})
                else:
                    # Without the header: an envelope (the consumer falls back to it).
                    envelope = {
                        "method": "publish",
                        "payload": {"channel": ch, "data": {"seq": seq}},
                    }
                    await js.publish(f"cmds.{ch}", json.dumps(envelope).encode())
        finally:
            await nc.close()

    async def main() -> None:
        nc = await nats.connect(jetstream_url)
        try:
            await nc.jetstream().add_stream(name="CMDS", subjects=["cmds.>"])
        finally:
            await nc.close()
        node = Node(_config())
        await node.start()
        try:
            await restart_scenario(node, make, produce, channels, 20)
        finally:
            await node.close()

    run(main())


# -- the outbox examples -------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_sqlalchemy_example_publishes_on_commit(postgres_dsn: str) -> None:
    import importlib.util

    import psycopg
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    spec = importlib.util.spec_from_file_location(
        "outbox_sqlalchemy", EXAMPLES / "outbox_sqlalchemy.py"
    )
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    # SQLAlchemy resolves the models' annotations through sys.modules.
    sys.modules[spec.name] = example
    spec.loader.exec_module(example)

    schema = f"ex_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")  # type: ignore[arg-type]
    url = postgres_dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(url, connect_args={"options": f"-c search_path={schema}"})
    try:
        example.create_schema(engine)

        def write() -> None:
            with Session(engine) as session, session.begin():
                example.post_message(session, "lobby", "ann", "hello")
            with pytest.raises(RuntimeError), Session(engine) as session, session.begin():
                example.post_message(session, "lobby", "bob", "rolled back")
                raise RuntimeError("fails before the commit")
            with Session(engine) as session, session.begin():
                example.post_message(session, "lobby", "cid", "again")

        async def main() -> None:
            config = config_from_mapping(
                {
                    "channel": {
                        "namespaces": [{"name": "chat", "history_size": 100, "history_ttl": "5m"}]
                    }
                }
            )
            node = Node(config)
            await node.start()
            consumers = Consumers(
                node,
                [
                    ConsumerConfig(
                        name="outbox",
                        enabled=True,
                        type="postgresql",
                        postgresql=PostgresConsumerConfig(
                            dsn=postgres_dsn,
                            outbox_table_name=f"{schema}.{example.OUTBOX_TABLE}",
                            num_partitions=example.NUM_PARTITIONS,
                            partition_poll_interval=5.0,
                            partition_notification_channel=example.NOTIFY_CHANNEL,
                        ),
                    )
                ],
            )
            await consumers.start()
            try:
                await asyncio.to_thread(write)

                async def both() -> bool:
                    hr = await node.history("chat:lobby", limit=-1)
                    return len(hr.publications) >= 2

                await until(both, 20, "the committed messages published")
                hr = await node.history("chat:lobby", limit=-1)
                authors = [json.loads(p.data)["author"] for p in hr.publications]
                assert authors == ["ann", "cid"]
            finally:
                await consumers.close()
                await node.close()

        run(main())
    finally:
        engine.dispose()
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")  # type: ignore[arg-type]


def test_django_example_compiles() -> None:
    """The Django example: imported when Django is installed, else compiled."""
    import py_compile

    files = sorted((EXAMPLES / "outbox_django").rglob("*.py"))
    assert files
    for path in files:
        py_compile.compile(str(path), doraise=True)
    try:
        import django
    except ImportError:
        return
    from django.conf import settings

    sys.path.insert(0, str(EXAMPLES / "outbox_django"))
    try:
        if not settings.configured:
            settings.configure(INSTALLED_APPS=["realtime"], DATABASES={})
        django.setup()
        import realtime.models
        import realtime.outbox

        assert realtime.models.Outbox._meta.db_table == "rtcore_outbox"
        assert callable(realtime.outbox.publish_on_commit)
    finally:
        sys.path.remove(str(EXAMPLES / "outbox_django"))


# -- rtcore serve ---------------------------------------------------------------------------


def test_rtcore_serve_runs_the_consumers(tmp_path: Path) -> None:
    """The ``consumers`` section of the config: started by ``rtcore serve``, with metrics."""
    if not _redis_up():
        _missing("no Redis on 127.0.0.1:6379")
    import aiohttp
    from redis import Redis as SyncRedis

    from tests.multinode.helpers import api, cluster

    stream = f"rtcore-test-serve-{uuid.uuid4().hex[:8]}"
    extra = f"""
[[consumers]]
name = "commands"
enabled = true
type = "redis_stream"
redis_stream.address = "redis://127.0.0.1:6379"
redis_stream.streams = ["{stream}"]
redis_stream.consumer_group = "rtcore"
"""
    r = SyncRedis(host="127.0.0.1", port=6379)
    try:
        with cluster(tmp_path, 1, extra=extra) as nodes:
            for seq in (1, 2):
                payload = json.dumps({"channel": "chat:serve", "data": {"seq": seq}})
                r.xadd(stream, {"method": "publish", "payload": payload})
            r.xadd(stream, {"method": "publish", "payload": '{"channel": ""}'})

            async def main() -> None:
                async with aiohttp.ClientSession() as http:
                    text = ""

                    async def consumed() -> bool:
                        # The bad third entry is counted after the two publications
                        # are in history: wait for its count too, not only for them.
                        nonlocal text
                        reply = await api(
                            http, nodes[0], "history", {"channel": "chat:serve", "limit": -1}
                        )
                        if len(reply["result"].get("publications", [])) != 2:
                            return False
                        async with http.get(f"{nodes[0].http}/metrics") as resp:
                            text = await resp.text()
                        # Counters start at 0.0: wait for this one to move.
                        return 'consumer="commands",kind="dropped"} 0.0' not in text

                    await until(consumed, 20, "the stream's three entries consumed")
                assert 'rtcore_consumer_processed_total{consumer="commands"} 2.0' in text
                assert (
                    'rtcore_consumer_errors_total{consumer="commands",kind="dropped"} 1.0' in text
                )

            run(main(), 60)
            assert "consumer commands started" in nodes[0].log
    finally:
        r.delete(stream)
        r.close()
