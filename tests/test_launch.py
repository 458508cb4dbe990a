"""How deepdist meets its launcher: the master it runs on, where the server listens, and the
errors a misconfigured run gets (a dead server, a missing module, an executor out of memory)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from deepdist import DeepDist, SGD, ServerUnreachableError, TrainingFailedError
from deepdist.executors import failure_cause

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def _gradient(model, batch):
    return {"w": np.zeros_like(model["w"])}


def test_local_mode_binds_the_server_to_loopback_only(sc):
    with DeepDist({"w": np.zeros(3)}, spark=sc, progress=False) as dd:
        bound = dd._server.server.socket.getsockname()
        assert bound[0] == "127.0.0.1" and dd.url == f"http://127.0.0.1:{bound[1]}"
        # nothing answers on the machine's other addresses at that port
        others = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
        for address in others - {"127.0.0.1"}:
            with socket.socket() as probe:
                probe.settimeout(1)
                assert probe.connect_ex((address, bound[1])) != 0


def test_a_dead_server_fails_in_seconds_with_default_settings(sc):
    rdd = sc.parallelize(range(8), 2)
    with DeepDist({"w": np.zeros(3)}, spark=sc, progress=False) as dd:
        dd._server.stop()
        started = time.monotonic()
        with pytest.raises(ServerUnreachableError) as info:
            dd.train(rdd, _gradient, SGD())
        seconds = time.monotonic() - started
        dd._server = None
        dd.store.stop()
    assert seconds < 30, seconds
    message = str(info.value)
    assert dd.url in message and "spark.driver.host" in message and "at org.apache" not in message


def test_a_module_missing_on_executors_is_named(sc):
    def needs_a_module(model, batch):
        import deepdist_no_such_module  # noqa: F401
        return {}

    with DeepDist({"w": np.zeros(3)}, spark=sc, progress=False) as dd:
        with pytest.raises(TrainingFailedError) as info:
            dd.train(sc.parallelize(range(4), 2), needs_a_module, SGD())
    message = str(info.value)
    assert "no module 'deepdist_no_such_module'" in message and "PYSPARK_PYTHON" in message
    assert "at org.apache" not in message and "Py4J" not in message


def test_an_executor_out_of_memory_is_named(sc):
    def exhausts_memory(model, batch):
        raise MemoryError()

    with DeepDist({"w": np.zeros(3)}, spark=sc, progress=False) as dd:
        with pytest.raises(TrainingFailedError) as info:
            dd.train(sc.parallelize(range(4), 2), exhausts_memory, SGD())
    message = str(info.value)
    assert "ran out of memory" in message and "spark.executor.memory" in message


def test_lost_block_text_is_translated():
    # Spark's own words when a localCheckpoint block died with its executor (issue 23)
    text = ("An error occurred while calling z:org.apache.spark.api.python.PythonRDD.collectAndServe.\n"
            ": org.apache.spark.SparkException: Job aborted due to stage failure: Task 1 in stage 12.0 failed 4 "
            "times, most recent failure: Lost task 1.3 in stage 12.0 (TID 80) (127.0.0.1 executor 2): "
            "org.apache.spark.SparkException: [CHECKPOINT_RDD_BLOCK_ID_NOT_FOUND] Checkpoint block rdd_50_1 "
            "not found!\n\tat org.apache.spark.errors.SparkCoreErrors$.checkpointRDDBlockIdNotFoundError")
    cause = failure_cause(text)
    assert "lost with its executor" in cause and "CHECKPOINT_RDD_BLOCK_ID_NOT_FOUND" in cause
    assert "at org.apache" not in cause and "collectAndServe" not in cause


def _launch(command, conf_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MASTER")}
    env.update(SPARK_CONF_DIR=str(conf_dir), PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1")
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_scripts_run_on_the_master_their_launcher_names(tmp_path):
    """spark-submit's --master wins; without one, spark-defaults.conf's; --master on the script too."""
    conf = tmp_path / "conf"
    conf.mkdir()
    for name in os.listdir(os.path.join(ROOT, "spark-conf")):
        (conf / name).write_text(open(os.path.join(ROOT, "spark-conf", name)).read())
    script = os.path.join(ROOT, "examples", "linear_regression.py")
    small = ["--rows", "2000", "--features", "5", "--partitions", "2", "--epochs", "1"]

    submitted = _launch([os.path.join(BIN, "spark-submit"), "--master", "local[1]", script, *small,
                         "--output", "submitted.json"], conf, tmp_path)
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    assert json.loads((tmp_path / "submitted.json").read_text())["master"] == "local[1]"

    with open(conf / "spark-defaults.conf", "a") as f:
        f.write("spark.master    local[2]\n")
    defaults = _launch([sys.executable, script, *small, "--output", "defaults.json"], conf, tmp_path)
    assert defaults.returncode == 0, defaults.stderr[-3000:]
    assert json.loads((tmp_path / "defaults.json").read_text())["master"] == "local[2]"

    flag = _launch([sys.executable, script, *small, "--master", "local[1]", "--output", "flag.json"], conf, tmp_path)
    assert flag.returncode == 0, flag.stderr[-3000:]
    assert json.loads((tmp_path / "flag.json").read_text())["master"] == "local[1]"
