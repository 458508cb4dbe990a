"""CPU seconds of processes and threads, read from Linux ``/proc``, for the benchmarks' CPU splits.

``lda_vs_peers`` splits a fit's CPU between the driver, the JVM and the Python workers;
``gibbs_exchange_cost`` splits the model server's between its threads. Both read the same
``stat`` files.
"""

from __future__ import annotations

import os

_TICK = os.sysconf("SC_CLK_TCK")


def read_stat(path: str):
    """``(program, parent pid, CPU seconds in user and system mode)`` of a ``/proc/.../stat`` file,
    or None when the process or thread is gone."""
    try:
        with open(path) as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the program name may hold spaces and parentheses
    return stat[stat.index("(") + 1:stat.rindex(")")], int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK
