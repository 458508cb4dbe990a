"""Processes and threads as Linux ``/proc`` describes them: program, parent, CPU seconds.

:class:`deepdist.testing.LocalCluster` finds the processes a Spark daemon started (to stop
them by PID) from their parents; the benchmarks split CPU time between processes and threads.
"""

from __future__ import annotations

import os

_TICK = os.sysconf("SC_CLK_TCK")


def read_stat(path: str) -> tuple[str, int, float] | None:
    """``(program, parent pid, CPU seconds in user and system mode)`` of a ``/proc/.../stat`` file,
    or None when the process or thread is gone."""
    try:
        with open(path, "rb") as f:
            stat = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the program name may hold spaces and parentheses
    return stat[stat.index("(") + 1:stat.rindex(")")], int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK


def thread_cpu(group_of) -> dict:
    """CPU seconds of this process's threads, summed by ``group_of(name)`` of each live Python
    thread's name; threads Python does not know (the JVM's, a library's) count as ``"other"``."""
    import threading

    names = {t.native_id: group_of(t.name) for t in threading.enumerate()}
    cpu: dict = {}
    for tid in os.listdir(f"/proc/{os.getpid()}/task"):
        stat = read_stat(f"/proc/{os.getpid()}/task/{tid}/stat")
        if stat is not None:
            group = names.get(int(tid), "other")
            cpu[group] = cpu.get(group, 0.0) + stat[2]
    return cpu


def descendants(pid: int) -> list[int]:
    """Every descendant of process ``pid``, deepest last."""
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = read_stat(f"/proc/{entry}/stat")
        if stat is not None:
            kids.setdefault(stat[1], []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
