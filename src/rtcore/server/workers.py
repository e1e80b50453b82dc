"""``rtcore serve --workers N``: N server processes on one port.

Python runs one event loop per process on one core, and each process here
may hold a limited number of open files, so a machine is used fully by
several processes. The supervisor starts N copies of ``rtcore serve`` (each
with ``--workers 1``) that bind the same address with ``SO_REUSEPORT``: the
kernel spreads new connections across them. They share channels, history and
presence through the configured broker (the Redis engine), so a publication
reaches subscribers on every worker.

The supervisor forwards SIGTERM/SIGINT to the workers (each shuts down
gracefully: 3001 spread over ``client.reconnect_jitter``), kills them on a
second signal, and restarts a worker that dies on its own (at most
``MAX_RESTARTS`` times per minute, with a growing delay). Workers run in
their own sessions, so signal only the supervisor (with systemd use
``KillMode=mixed``).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence


__all__ = ["supervise", "MAX_RESTARTS"]

logger = logging.getLogger("rtcore.server.workers")

# Restarts of crashed workers allowed per minute (all workers together).
MAX_RESTARTS = 10
_EXIT_INTERRUPTED = 130


def _worker_argv(argv: Sequence[str]) -> list[str]:
    """The worker's command line: the same ``serve`` arguments with ``--workers 1``."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--workers":
            skip = True
            continue
        if arg.startswith("--workers="):
            continue
        out.append(arg)
    return [sys.executable, "-m", "rtcore", *out, "--workers", "1", "--reuse-port"]


def supervise(argv: Sequence[str], workers: int, *, poll: float = 0.2) -> int:
    """Run ``workers`` copies of ``rtcore <argv>``; returns the exit code."""
    cmd = _worker_argv(argv)
    procs: dict[int, subprocess.Popen[bytes]] = {}
    stopping = {"signals": 0}

    def start(index: int) -> None:
        env = dict(os.environ, RTCORE_WORKER_INDEX=str(index))
        # Own session: a Ctrl-C in the terminal (SIGINT to the foreground
        # group) reaches the workers once, through the supervisor, and not
        # twice (which would mean "exit at once" to them).
        procs[index] = subprocess.Popen(cmd, env=env, start_new_session=True)
        logger.info("worker %d started (pid %d)", index, procs[index].pid, extra={"worker": index})

    def on_signal(signum: int, _frame: object) -> None:
        stopping["signals"] += 1
        for proc in procs.values():
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGKILL if stopping["signals"] > 1 else signum)
                except ProcessLookupError:
                    pass

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    restarts: deque[float] = deque()
    try:
        for i in range(workers):
            start(i)
        worst = 0
        while True:
            alive = 0
            for index, proc in list(procs.items()):
                code = proc.poll()
                if code is None:
                    alive += 1
                    continue
                if stopping["signals"]:
                    worst = max(worst, abs(code))
                    del procs[index]
                    continue
                # A worker died on its own: restart it, within bounds.
                now = time.monotonic()
                while restarts and now - restarts[0] > 60:
                    restarts.popleft()
                if len(restarts) >= MAX_RESTARTS:
                    logger.error(
                        "worker %d exited with %d; too many restarts, stopping", index, code
                    )
                    on_signal(signal.SIGTERM, None)
                    worst = max(worst, 1)
                    del procs[index]
                    continue
                restarts.append(now)
                delay = min(5.0, 0.2 * 2 ** (len(restarts) - 1))
                logger.warning("worker %d exited with %d; restarting in %.1fs", index, code, delay)
                time.sleep(delay)
                start(index)
                alive += 1
            if not procs:
                break
            time.sleep(poll)
        if stopping["signals"] > 1:
            return _EXIT_INTERRUPTED
        return 0 if worst == 0 else 1
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
