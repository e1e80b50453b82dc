"""rtcore server process of the fan-out load scenario (started by ``fanout_load.py``).

Runs a :class:`rtcore.engine.node.Node` on the given loopback port with one channel
namespace-free configuration: anonymous clients may connect without a token
and subscribe (``--auth anonymous``), or clients connect with an HS256 token
minted by the orchestrator with :func:`rtcore.auth.make_connect_token`
(``--auth token``; the secret comes in ``RTCORE_BENCH_SECRET``). Publications
go through ``node.publish`` on command from stdin (see ``load_control.py``).
``--write-delay SECONDS`` gives the sessions a flusher whose rounds wait
that long after their first message (client message batching).
Whether the compiled modules or the pure-Python twins are used is decided by
``RTCORE_NO_EXTENSIONS`` in this process's environment; the first line it
prints names the implementation.

``--engine redis`` gives the node the Redis broker and presence manager of
:func:`rtcore.backends.redis.create_redis_engine` (``--redis-url`` once per
shard, keys under ``--redis-prefix``): ``node.publish`` then goes through
Redis PUBLISH and comes back through the node's subscription, as between
the workers of ``rtcore serve --workers N``. With ``--reuse-port`` several of
these processes share one port (SO_REUSEPORT); only the one told to publish
publishes, the others deliver what arrives from Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

import rtcore


sys.path.insert(0, str(Path(__file__).resolve().parent))

from load_control import emit, raise_nofile_limit, sampled_max, serve_control  # noqa: E402

import rtcore.fanout  # noqa: E402
import rtcore.frames  # noqa: E402
from rtcore.auth.config import TokenConfig  # noqa: E402
from rtcore.config import ChannelConfig, ChannelOptions, ClientConfig, Config  # noqa: E402
from rtcore.engine.node import Node  # noqa: E402
from rtcore.transports.http_server import run  # noqa: E402


def build_config(args: argparse.Namespace) -> Config:
    token = (
        TokenConfig(hmac_secret_key=os.environ["RTCORE_BENCH_SECRET"])
        if args.auth == "token"
        else TokenConfig()
    )
    return Config(
        client=ClientConfig(
            token=token,
            allow_anonymous_connect_without_token=args.auth == "anonymous",
            queue_max_size=args.queue_max_size,
            # Many connections per second from the load clients.
            stale_close_delay=60.0,
        ),
        channel=ChannelConfig(
            without_namespace=ChannelOptions(
                allow_subscribe_for_client=True, allow_subscribe_for_anonymous=True
            )
        ),
    )


async def main(args: argparse.Namespace) -> None:
    raise_nofile_limit()
    if args.engine == "redis":
        from rtcore.backends.redis import create_redis_engine

        broker, presence = create_redis_engine(args.redis_url, args.redis_prefix)
        node = Node(build_config(args), broker=broker, presence_manager=presence)
    else:
        node = Node(build_config(args))
    server = await rtcore.serve(node, args.host, args.port, reuse_port=args.reuse_port)
    if args.write_delay:
        # Client message batching: every session created from now on queues
        # into a flusher whose rounds wait this long (the node itself has no
        # setting for it yet).
        node.flusher = rtcore.fanout.Flusher(asyncio.get_running_loop(), delay=args.write_delay)
    channel = args.channel

    def subscribers() -> int:
        return node.hub.num_subscribers(channel)

    subs_cache: list = []

    def backlog() -> int:
        if len(subs_cache) != subscribers():
            subs_cache[:] = node.hub.subscribers(channel)

        def pending(sub) -> int:
            writer = sub.writer
            sink = writer.sink
            return writer.queued_bytes + (sink.buffer_size() if sink is not None else 0)

        return sampled_max(subs_cache, pending)

    async def publish(data: bytes) -> None:
        await node.publish(channel, data)

    try:
        await serve_control(
            args.port,
            publish,
            subscribers,
            backlog,
            lambda: {"disconnects": {str(k): v for k, v in node.disconnects.items()}},
        )
    finally:
        await node.close()
        close = getattr(server, "close", None)
        if close is not None:
            result = close()
            if hasattr(result, "__await__"):
                await result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--channel", default="bench")
    p.add_argument("--auth", choices=["anonymous", "token"], default="anonymous")
    p.add_argument("--queue-max-size", type=int, default=1 << 20)
    p.add_argument(
        "--write-delay",
        type=float,
        default=0.0,
        help="seconds a flush round waits after its first message (client message batching)",
    )
    p.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    p.add_argument("--engine", choices=["memory", "redis"], default="memory")
    p.add_argument("--redis-url", action="append", help="Redis shard URL (repeat per shard)")
    p.add_argument("--redis-prefix", default="rtbench")
    p.add_argument("--reuse-port", action="store_true", help="share the port (SO_REUSEPORT)")
    args = p.parse_args(argv)
    if args.redis_url is None:
        args.redis_url = ["redis://127.0.0.1:6379/0"]
    if not args.host.startswith("127."):
        p.error("--host must be a loopback address")
    return args


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    arguments = parse_args()
    emit(
        {
            "implementation": {
                "fanout": rtcore.fanout.IMPLEMENTATION,
                "frames": rtcore.frames.IMPLEMENTATION,
            }
        }
    )
    run(main(arguments), use_uvloop=arguments.loop == "uvloop")
