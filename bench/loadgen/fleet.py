"""The orchestrator's side: client processes, /proc sampling per phase, progress bars.

* :class:`Fleet` starts the client processes (``multiprocessing``, spawn
  context: nothing of the orchestrator's state leaks into them), sends every
  one the same op and gathers the replies, and keeps the last progress
  report of each;
* :class:`Monitor` samples the server's process tree (CPU, RSS), the client
  processes' CPU and the whole machine every ``interval`` seconds into a
  timeline, and takes the figures of each named phase (start and end);
* :class:`ProgressUI` shows rich progress bars on a terminal, plain log
  lines elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from procstat import ProcTree, TreeSample, machine_busy, proc_cpu, proc_rss
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from bench.loadgen.client import WorkerSpec, worker_main


__all__ = ["Fleet", "FleetError", "Monitor", "ProgressUI"]


class FleetError(RuntimeError):
    """A client process died, failed an op or did not answer in time."""


@dataclass
class Handle:
    spec: WorkerSpec
    proc: BaseProcess
    pipe: Connection
    progress: dict[str, Any] = field(default_factory=dict)
    replies: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    dead: bool = False


class Fleet:
    """The client processes of a run."""

    def __init__(self, specs: list[WorkerSpec]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.handles: list[Handle] = []
        self.loop = asyncio.get_running_loop()
        for spec in specs:
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=worker_main,
                args=(spec, child),
                daemon=True,
                name=f"loadgen-client-{spec.index}",
            )
            proc.start()
            child.close()
            handle = Handle(spec, proc, parent)
            self.handles.append(handle)
            self.loop.add_reader(parent.fileno(), self._on_readable, handle)

    def _on_readable(self, h: Handle) -> None:
        try:
            while h.pipe.poll():
                msg = h.pipe.recv()
                if msg.get("op") == "progress":
                    h.progress = msg
                else:
                    h.replies.put_nowait(msg)
        except (EOFError, OSError):
            h.dead = True
            self.loop.remove_reader(h.pipe.fileno())
            h.replies.put_nowait({"op": "dead"})

    def pids(self) -> list[int]:
        return [h.proc.pid for h in self.handles if h.proc.pid is not None and not h.dead]

    def cpu(self) -> float:
        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                total += proc_cpu(pid)
        return total

    def rss(self) -> int:
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                total += proc_rss(pid)
        return total

    def total(self, key: str) -> int:
        return sum(int(h.progress.get(key, 0)) for h in self.handles)

    async def wait_started(self, timeout: float) -> None:
        """Every process reported once (its imports are done, its loop runs)."""
        deadline = time.monotonic() + timeout
        while any(not h.progress for h in self.handles):
            dead = [h for h in self.handles if h.dead or not h.proc.is_alive()]
            if dead:
                raise FleetError(
                    f"client process {dead[0].spec.index} exited (code {dead[0].proc.exitcode})"
                )
            if time.monotonic() > deadline:
                raise FleetError(f"client processes not started after {timeout:.0f} s")
            await asyncio.sleep(0.05)

    async def request(
        self,
        op: str,
        wait: float,
        per_worker: Callable[[WorkerSpec], dict[str, Any]] | None = None,
        **fields: Any,
    ) -> list[dict[str, Any]]:
        """Send ``op`` to every process (back to back), then gather one reply from each.

        ``wait`` bounds the whole exchange, in seconds.
        """
        for h in self.handles:
            extra = per_worker(h.spec) if per_worker is not None else {}
            try:
                h.pipe.send({"op": op, **fields, **extra})
            except (BrokenPipeError, OSError):
                raise FleetError(f"client process {h.spec.index} is gone") from None
        deadline = self.loop.time() + wait
        replies = []
        for h in self.handles:
            try:
                msg = await asyncio.wait_for(
                    h.replies.get(), max(0.01, deadline - self.loop.time())
                )
            except TimeoutError:
                raise FleetError(
                    f"client process {h.spec.index}: no answer to {op!r} in {wait:.0f} s"
                ) from None
            if msg.get("op") == "dead":
                raise FleetError(f"client process {h.spec.index} died (code {h.proc.exitcode})")
            if msg.get("op") == "error":
                raise FleetError(f"client process {h.spec.index}: {msg.get('error')}")
            if msg.get("op") != op:
                raise FleetError(f"client process {h.spec.index}: {msg.get('op')!r} for {op!r}")
            replies.append(msg)
        return replies

    async def close(self, timeout: float = 15.0) -> None:
        """Close every connection, then end the processes (terminate, kill past the timeout)."""
        alive = [h for h in self.handles if not h.dead and h.proc.is_alive()]
        if alive:
            with contextlib.suppress(FleetError, OSError):
                await asyncio.wait_for(self.request_some(alive, "close", timeout), timeout + 1)
        deadline = time.monotonic() + 3.0
        for h in self.handles:
            h.proc.join(max(0.0, deadline - time.monotonic()))
            if h.proc.is_alive():
                h.proc.terminate()
                h.proc.join(2.0)
            if h.proc.is_alive():
                h.proc.kill()
                h.proc.join(2.0)
            if not h.dead:
                self.loop.remove_reader(h.pipe.fileno())
                h.dead = True
            h.pipe.close()

    async def request_some(self, handles: list[Handle], op: str, timeout: float) -> None:
        for h in handles:
            h.pipe.send({"op": op, "timeout": timeout})
        for h in handles:
            await asyncio.wait_for(h.replies.get(), timeout)


class ProgressUI:
    """Progress bars (rich) on a terminal; one log line per phase otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.console = Console(stderr=True, log_path=False)
        self.live = enabled and self.console.is_terminal
        self.progress = Progress(
            TextColumn("{task.description:<14}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            disable=not self.live,
        )

    def __enter__(self) -> ProgressUI:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def add(self, description: str, total: float) -> TaskID:
        if not self.live:
            self.console.log(f"{description}: {total:g}")
        return self.progress.add_task(description, total=total, info="")

    def update(self, task: TaskID, completed: float, info: str = "") -> None:
        self.progress.update(task, completed=completed, info=info)

    def log(self, text: str) -> None:
        self.console.log(text)


class Monitor:
    """Timeline samples and per-phase figures of the server tree, the clients and the machine."""

    def __init__(
        self, fleet: Fleet, server_pids: list[int], ui: ProgressUI, interval: float
    ) -> None:
        self.fleet = fleet
        self.roots = list(server_pids)
        self.ui = ui
        self.interval = interval
        self.t0 = time.monotonic()
        self.timeline: list[dict[str, Any]] = []
        self.phases: list[dict[str, Any]] = []
        self.phase_name = ""
        self.watch: tuple[TaskID, Callable[[], tuple[float, str]]] | None = None
        self._task: asyncio.Task[None] | None = None

    def server(self) -> TreeSample | None:
        if not self.roots:
            return None
        samples = [ProcTree(pid).sample() for pid in self.roots]
        return TreeSample(
            sum(s.user_s for s in samples),
            sum(s.sys_s for s in samples),
            sum(s.rss for s in samples),
            sum(s.processes for s in samples),
        )

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        prev_t, prev_server, prev_clients = time.monotonic(), self.server(), self.fleet.cpu()
        while True:
            await asyncio.sleep(self.interval)
            now, server, clients = time.monotonic(), self.server(), self.fleet.cpu()
            dt = max(now - prev_t, 1e-6)
            row: dict[str, Any] = {
                "t": round(now - self.t0, 3),
                "phase": self.phase_name,
                "ready": self.fleet.total("ready"),
                "pending": self.fleet.total("pending"),
                "failed": self.fleet.total("failed"),
                "lost": self.fleet.total("lost"),
                "received": self.fleet.total("received"),
                "recovered": self.fleet.total("recovered"),
                "clients_cpu_pct": round((clients - prev_clients) / dt * 100, 1),
            }
            if server is not None and prev_server is not None:
                delta = server.cpu_s - prev_server.cpu_s
                # A restart resets the tree's CPU time: no figure for that interval.
                row["server_cpu_pct"] = round(delta / dt * 100, 1) if delta >= 0 else None
                row["server_rss"] = server.rss
                row["server_processes"] = server.processes
            self.timeline.append(row)
            prev_t, prev_server, prev_clients = now, server, clients
            if self.watch is not None:
                task, fn = self.watch
                done, info = fn()
                self.ui.update(task, done, info)

    def follow(self, description: str, total: float, fn: Callable[[], tuple[float, str]]) -> None:
        """Show a progress bar fed by ``fn() -> (completed, info)`` at every sample."""
        self.watch = (self.ui.add(description, total), fn)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[dict[str, Any]]:
        """Figures of the code run inside: wall time, server CPU and RSS, clients' CPU.

        The yielded dict is the phase record; the scenario may add to it.
        """
        self.phase_name = name
        record: dict[str, Any] = {"name": name, "start_s": round(time.monotonic() - self.t0, 3)}
        t0, s0, c0, b0 = time.monotonic(), self.server(), self.fleet.cpu(), machine_busy()
        # The machine is shared: its load when the phase starts and ends says how
        # much of the busy time was others' work.
        record["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
        try:
            yield record
        finally:
            t1, s1, c1, b1 = time.monotonic(), self.server(), self.fleet.cpu(), machine_busy()
            wall = max(t1 - t0, 1e-9)
            record["seconds"] = round(wall, 3)
            record["clients_cpu_s"] = round(c1 - c0, 3)
            record["clients_rss"] = self.fleet.rss()
            record["machine_busy_s"] = round(b1 - b0, 3)
            record["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
            record["cores"] = os.cpu_count()
            if s0 is not None and s1 is not None:
                cpu = s1.cpu_s - s0.cpu_s
                record["server"] = {
                    # None when the server restarted within the phase (its CPU time restarted).
                    "cpu_s": round(cpu, 3) if cpu >= 0 else None,
                    "user_s": round(s1.user_s - s0.user_s, 3) if cpu >= 0 else None,
                    "sys_s": round(s1.sys_s - s0.sys_s, 3) if cpu >= 0 else None,
                    "cpu_pct": round(cpu / wall * 100, 1) if cpu >= 0 else None,
                    "rss_start": s0.rss,
                    "rss_end": s1.rss,
                    "processes": s1.processes,
                }
            if self.watch is not None:
                task, fn = self.watch
                done, info = fn()
                self.ui.update(task, done, info)
                self.watch = None
            self.phases.append(record)
            self.phase_name = ""
            self.ui.log(f"phase {name}: {record['seconds']:.2f} s")
