"""Shared fixtures: one real SparkSession per test run.

The master is local[2,4]: two threads, and up to four attempts per task, so that
tests can inject task failures and watch Spark retry them.
"""

import os
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("SPARK_CONF_DIR", str(ROOT / "spark-conf"))
os.environ.setdefault("PYSPARK_PYTHON", os.sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", os.sys.executable)
# Python workers unpickle functions defined in test modules by reference: let them import tests/
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT / "tests"), str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])


@pytest.fixture(scope="session")
def spark():
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[2,4]").appName("deepdist-tests")
               .config("spark.ui.enabled", "false").getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def sc(spark):
    return spark.sparkContext


@pytest.fixture(autouse=True)
def no_server_thread_left():
    """Every test must stop the servers and applier threads it started."""
    yield
    names = {"deepdist-server", "deepdist-applier"}
    for thread in threading.enumerate():
        if thread.name in names and thread.is_alive():
            thread.join(timeout=5)
    left = [t.name for t in threading.enumerate() if t.name in names and t.is_alive()]
    assert not left, f"threads left running: {left}"


@pytest.fixture
def store():
    """A started ParameterStore of one int64 vector, with additive descent."""
    import numpy as np

    from deepdist.optim import add
    from deepdist.store import ParameterStore

    s = ParameterStore({"w": np.zeros(4, np.int64)})
    s.set_descent(add)
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def cluster():
    """A Spark standalone master and two 1-core workers, as processes on 127.0.0.1."""
    from deepdist.testing import LocalCluster

    with LocalCluster(workers=2, cores=1) as running:
        yield running
