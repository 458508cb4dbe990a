"""The SparkSession that deepdist's scripts, CLI and notebooks run on.

A script started by ``spark-submit --master spark://…`` must run on that cluster, and one
started by plain ``python`` on whatever ``spark-defaults.conf`` says, else ``local[*]``.
Python's ``SparkConf()`` cannot tell: before the JVM starts it shows no master, whatever
the launcher said. So nothing here forces a master unless the caller names one: the JVM's
own launcher (``spark-submit``, which also starts the JVM behind a plain ``python``) reads
``--master``, ``spark.master`` in the defaults file and ``MASTER``, and falls back to
``local[*]`` itself.

    >>> from deepdist.session import spark_session
    >>> spark = spark_session("my-job")               # doctest: +SKIP
    >>> spark = spark_session("my-job", "local[2]")   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import re
import sys

__all__ = ["describe_master", "spark_context", "spark_session", "task_slots", "use_driver_python"]

log = logging.getLogger(__name__)


def spark_session(app_name: str, master: str | None = None):
    """The active SparkSession, or a new one on ``master`` (``None``: the launcher's, else ``local[*]``).

    In local mode with ``PYSPARK_PYTHON`` unset, Python workers run the driver's own
    interpreter (see :func:`use_driver_python`). The master that runs is logged.
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None and master and active.sparkContext.master != master:
        log.warning("a SparkSession on %s is already active; --master %s is ignored",
                    active.sparkContext.master, master)
    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    spark = builder.getOrCreate()
    use_driver_python(spark.sparkContext)
    from .executors import ensure_executors

    ensure_executors(spark.sparkContext)
    log.info("Spark: %s", describe_master(spark.sparkContext))
    return spark


def spark_context(spark=None):
    """The SparkContext of ``spark`` (a SparkSession or SparkContext), or the active one.

    Every estimator's ``spark=`` parameter goes through here, so "the Spark handle" means the same
    thing everywhere: a session, a context, or None for the active one (started if there is none).
    """
    from pyspark import SparkContext

    if spark is None:
        sc = SparkContext._active_spark_context
        if sc is None:
            from pyspark.sql import SparkSession
            sc = SparkSession.builder.getOrCreate().sparkContext
        return sc
    return getattr(spark, "sparkContext", spark)


#: ``local``, ``local[4]``, ``local[*]``, ``local[4, 2]`` (cores, task retries)
_LOCAL_MASTER = re.compile(r"local(?:\[\s*(\*|\d+)\s*(?:,\s*\d+\s*)?\])?")


def task_slots(sc) -> int:
    """How many tasks Spark runs at once: N for ``local[N]`` (all CPUs for ``local[*]``), else the
    default parallelism (the executors' cores on a cluster)."""
    match = _LOCAL_MASTER.fullmatch(sc.master.strip())
    if match:
        count = match.group(1)
        return (os.cpu_count() or 1) if count == "*" else int(count or 1)
    return max(1, sc.defaultParallelism)


def use_driver_python(sc) -> None:
    """In local mode, run Python workers with the driver's interpreter unless told otherwise.

    PySpark otherwise starts ``python3`` from the PATH, which in a virtual environment
    that was not activated lacks deepdist and its dependencies. On a cluster the
    executors' Python is the cluster's business (``PYSPARK_PYTHON``,
    ``spark.pyspark.python``): nothing changes there.
    """
    if not sc.master.startswith("local"):
        return
    if os.environ.get("PYSPARK_PYTHON") or sc.getConf().get("spark.pyspark.python", None):
        return
    if sc.pythonExec != sys.executable:
        log.debug("local mode: Python workers use %s", sys.executable)
        sc.pythonExec = sys.executable


def describe_master(sc) -> str:
    """``"spark://host:7077 (2 executors)"`` or ``"local[*] (2 cores)"``: what a run ran on."""
    master = sc.master
    if master.startswith("local"):
        return f"{master} ({sc.defaultParallelism} cores)"
    try:
        executors = sc._jsc.sc().getExecutorMemoryStatus().size() - 1  # less the driver's block manager
    except Exception:  # a gateway without that call: the master alone says enough
        return master
    return f"{master} ({executors} executors)"
