"""Process and machine sampling from /proc, shared by every benchmark in bench/.

* :func:`proc_cpu` / :func:`proc_cpu_split`: user + system CPU seconds of one
  process (``/proc/PID/stat`` fields 14 and 15);
* :func:`machine_busy`: CPU seconds all cores spent not idle since boot
  (``/proc/stat``), to tell how busy the rest of the machine was;
* :class:`ProcTree`: a process and all its descendants (a ``--workers``
  supervisor and its workers), with their CPU time and resident memory summed;
* :func:`raise_nofile_limit`: soft ``RLIMIT_NOFILE`` up to the hard limit.

Linux only (every benchmark here is).
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass


__all__ = [
    "CLK_TCK",
    "PAGE_SIZE",
    "ProcTree",
    "TreeSample",
    "children_of",
    "machine_busy",
    "proc_cpu",
    "proc_cpu_split",
    "proc_rss",
    "raise_nofile_limit",
]

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def raise_nofile_limit() -> int:
    """Raise the soft open-files limit to the hard one; returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    # fields[0] is then field 3 (state), fields[1] field 4 (ppid), fields[11] field 14 (utime).
    return stat[stat.rindex(")") + 2 :].split()


def proc_cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process."""
    fields = _stat_fields(pid)
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process."""
    user, system = proc_cpu_split(pid)
    return user + system


def proc_rss(pid: int) -> int:
    """Resident set size of a process in bytes (``/proc/PID/statm``)."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE_SIZE


def machine_busy() -> float:
    """CPU seconds all cores spent not idle since boot (from /proc/stat)."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    vals = [int(x) for x in parts]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return (sum(vals[:8]) - idle) / CLK_TCK


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (every thread's ``children`` list, else a /proc scan)."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    try:
        for tid in tasks:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(x) for x in f.read().split())
        return out
    except FileNotFoundError:
        pass  # a kernel without CONFIG_PROC_CHILDREN: scan every process's parent
    except OSError:
        return out
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if int(_stat_fields(int(name))[1]) == pid:
                    out.append(int(name))
            except (OSError, ValueError, IndexError):
                continue
    return out


@dataclass(frozen=True)
class TreeSample:
    """CPU and memory of a process tree at one moment."""

    user_s: float
    sys_s: float
    rss: int
    processes: int

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


class ProcTree:
    """A process and its descendants, re-listed at every sample (workers come and go).

    The CPU time of a descendant that exited between two samples is lost (the
    kernel adds it to its parent's ``cutime`` only once the parent waited for
    it), which is why a run compares samples taken while the tree is stable.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def pids(self) -> list[int]:
        seen = [self.pid]
        i = 0
        while i < len(seen) and len(seen) < 10_000:
            seen.extend(c for c in children_of(seen[i]) if c not in seen)
            i += 1
        return seen

    def alive(self) -> bool:
        try:
            return _stat_fields(self.pid)[0] not in ("Z", "X")
        except OSError:
            return False

    def sample(self) -> TreeSample:
        user = system = 0.0
        rss = count = 0
        for pid in self.pids():
            try:
                u, s = proc_cpu_split(pid)
                r = proc_rss(pid)
            except (OSError, ValueError, IndexError):
                continue  # exited meanwhile
            user += u
            system += s
            rss += r
            count += 1
        return TreeSample(user, system, rss, count)
