"""A running process measured from ``/proc`` (Linux): resident memory, threads, CPU time.

Read by pid, so the benchmark measures the worker, a baseline or a sandbox from outside
without their help; a process that is gone reads as 0 (or None for CPU time).
"""

from __future__ import annotations

import re
from pathlib import Path


def rss_bytes(pid: int) -> int:
    """The resident set size of a process (VmRSS), 0 when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) * 1024 if found else 0


def process_threads(pid: int) -> int:
    """How many threads a process has now (0 when it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"^Threads:\s+(\d+)", status, re.MULTILINE)
    return int(found.group(1)) if found else 0


def process_cpu_seconds(pid: int) -> float | None:
    """CPU time a process's threads have run so far, in nanosecond resolution; None when it
    is gone (a reading of 0 would turn the difference to an earlier reading negative).

    It is the sum of each thread's ``/proc/<pid>/task/<tid>/schedstat`` run time, not
    ``/proc/<pid>/stat``'s utime + stime: those count in clock ticks (10 ms), coarser than a
    short baseline's whole window. A thread that exits takes its time with it; the
    processes measured here keep theirs (consumer, producer and pool threads) for the run.
    """
    total_ns = 0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return None
    # The state follows the command name, which may hold spaces and parentheses.
    if stat[stat.rindex(")") + 2] in "ZX":
        return None  # exited, not yet reaped: its threads' times are gone
    for task in tasks:
        try:
            total_ns += int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            continue  # the thread exited between the listing and the read
    return total_ns / 1e9 if tasks else None
