"""CPU seconds of processes and threads, read from Linux ``/proc``, for the benchmarks' CPU splits.

``lda_vs_peers`` splits a fit's CPU between the driver, the JVM and the Python workers;
``gibbs_exchange_cost`` splits the model server's between its threads. Both read the same
``stat`` files, with the package's reader (:mod:`deepdist.procstat`), re-exported here.
"""

from __future__ import annotations

from deepdist.procstat import read_stat, thread_cpu

__all__ = ["read_stat", "thread_cpu"]
