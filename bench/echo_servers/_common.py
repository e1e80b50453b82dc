"""Shared bits of the echo servers: arguments, the open-files limit, loop choice."""

from __future__ import annotations

import argparse
import resource


def parse_args(
    description: str, loops: tuple[str, ...] = ("uvloop", "asyncio")
) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--loop", choices=loops, default=loops[0])
    p.add_argument(
        "--max-size", type=int, default=16 * 1024 * 1024, help="largest message accepted"
    )
    args, _ = p.parse_known_args()
    if not (args.host.startswith("127.") or args.host == "::1"):
        p.error("--host must be a loopback address")
    return args


def raise_nofile_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run(main, loop: str) -> None:  # type: ignore[no-untyped-def]
    raise_nofile_limit()
    if loop == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        import asyncio

        asyncio.run(main())
