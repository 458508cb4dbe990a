"""A PySpark worker daemon that has already imported what deepdist's tasks run.

An executor starts one Python *daemon* and forks a Python worker from it for each task slot
(workers are reused between tasks while ``spark.python.worker.reuse`` is on). A fresh worker
of the stock daemon imports, in the first task it runs: gensim (1.2-1.8 s here, mostly
scipy.stats), numba and deepdist's compiled kernels (about 1.2 s, loading them from numba's
cache). A word2vec fit or a Gibbs fit on a new session pays that once per task slot, on the
clock, inside its first training job.

This module imports them once, in the daemon, before it starts serving. Forked workers share
the loaded modules (copy-on-write), so their first task starts with them in place. Every import
is best effort: a missing optional module (say gensim, on an executor that only runs LDA) is
skipped, and the daemon then behaves exactly like PySpark's own.

Use it when deepdist is installed in the executors' Python (not only shipped with
``--py-files``, which Spark adds to a *task's* path, after the daemon started)::

    spark.python.daemon.module   deepdist.daemon        # spark-defaults.conf, or --conf

The project's ``spark-conf/spark-defaults.conf`` sets it for the examples, tests and benchmarks.
"""

from __future__ import annotations

import importlib
import sys

#: Imported before serving, in this order; each one is optional.
PRELOAD = (
    "numpy",
    "gensim.models.word2vec",
    "gensim.models.word2vec_inner",
    "deepdist.worker",
    "deepdist.word2vec",
    "deepdist.lda.sampler",
    "deepdist.lda.online_steps",
)


def preload(modules=PRELOAD) -> list[str]:
    """Import ``modules`` and load deepdist's compiled kernels; return the modules that failed."""
    failed = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - an optional speed-up must never stop the daemon
            failed.append(name)
    if "deepdist.lda.sampler" in sys.modules:
        try:
            sys.modules["deepdist.lda.sampler"].load_kernels()
        except Exception:  # noqa: BLE001
            failed.append("deepdist.lda.sampler.load_kernels")
    return failed


def main() -> None:
    from pyspark import daemon

    preload()
    daemon.manager()


if __name__ == "__main__":
    main()
