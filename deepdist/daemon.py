"""A PySpark worker daemon that has already imported what deepdist's tasks run.

An executor starts one Python *daemon* and forks a Python worker from it for each task slot
(workers are reused between tasks while ``spark.python.worker.reuse`` is on). A fresh worker
of the stock daemon imports, in the first task it runs: gensim (mostly scipy.stats), numba
and deepdist's compiled kernels (loaded from numba's cache). A word2vec fit or a Gibbs fit on
a new session pays that once per task slot, on the clock, inside its first training job.

This module imports them once, in the daemon, before it starts serving. Forked workers share
the loaded modules (copy-on-write), so their first task starts with them in place. Every import
is best effort: a module that fails to import (say gensim, missing on an executor that only
runs LDA) is logged as a warning and skipped, and the daemon then behaves exactly like PySpark's
own.

Use it when deepdist is installed in the executors' Python (not only shipped with
``--py-files``, which Spark adds to a *task's* path, after the daemon started)::

    spark.python.daemon.module   deepdist.daemon        # spark-defaults.conf, or --conf

The project's ``spark-conf/spark-defaults.conf`` sets it for the examples, tests and benchmarks.
"""

from __future__ import annotations

import importlib
import logging
import sys

log = logging.getLogger(__name__)

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
        except Exception as err:  # noqa: BLE001 - an optional speed-up must never stop the daemon
            _skipped(failed, name, err)
    if "deepdist.lda.sampler" in sys.modules:
        try:
            sys.modules["deepdist.lda.sampler"].load_kernels()
        except Exception as err:  # noqa: BLE001
            _skipped(failed, "deepdist.lda.sampler.load_kernels", err)
    return failed


def _skipped(failed: list, name: str, err: Exception) -> None:
    log.warning("deepdist.daemon: not preloading %s (%s: %s); tasks will import it themselves",
                name, type(err).__name__, err)
    failed.append(name)


def main() -> None:
    from pyspark import daemon

    preload()
    daemon.manager()


if __name__ == "__main__":
    main()
