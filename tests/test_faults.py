"""Losing an executor in the middle of a fit, on a real Spark standalone cluster.

A module-scoped :class:`~deepdist.testing.LocalCluster` (a master and two one-core workers on
127.0.0.1) runs the drills of tests/fault_jobs.py in a driver process of their own (a process
holds one SparkContext, and this test session's is a ``local`` one). Each drill fits once
undisturbed and once with worker 0's executor SIGKILLed (JVM and Python workers) from a timer
thread while a training stage has both its tasks running; the master then starts a new
executor on that worker and Spark retries the lost task. Default settings throughout; only the
data are small.

* additive ``dd.train``: every element adds 1 to a count vector; the counts must be exact;
* ``OnlineLDA``: finishes, merges every document once a pass, and its held-out perplexity is
  within 2% of the undisturbed fit's (same seed);
* ``DistributedWord2Vec``: finishes, held-out SGNS loss within 2% of the undisturbed fit's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def fault_cluster(cluster):
    """The session's cluster (tests/conftest.py): drills kill executors, which the master replaces."""
    cluster.wait_for_workers()
    return cluster


@pytest.fixture(scope="module")
def drills(fault_cluster, tmp_path_factory):
    """Run every drill in one driver process; their results by name."""
    out = tmp_path_factory.mktemp("faults") / "drills.json"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(fault_cluster.driver_env(), PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    command = [sys.executable, os.path.join(HERE, "fault_jobs.py"), "--master", fault_cluster.url,
               "--web-port", str(fault_cluster.web_port),
               "--worker-pids", ",".join(str(p.pid) for p in fault_cluster.worker_procs),
               "--drills", "additive,online,word2vec", "--output", str(out)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    results = json.loads(out.read_text()) if out.exists() else {}
    results["_log"] = result.stderr[-6000:]
    results["_returncode"] = result.returncode
    return results


def _drill(drills, name):
    assert name in drills, f"the {name} drill did not finish (exit {drills['_returncode']}):\n{drills['_log']}"
    result = drills[name]
    faulted = result["faulted"]
    # the kill landed inside a training stage
    assert faulted["pids_killed"] >= 1 and faulted["killed_in_stage"] is not None, result
    return result, faulted


def test_additive_train_keeps_exact_counts_when_an_executor_dies(drills):
    result, faulted = _drill(drills, "additive")
    assert result["undisturbed"]["exact"]
    assert faulted["exact"], result
    assert faulted["total"] == faulted["expected_total"]
    # the lost attempt had pushed (applied, then rolled back when its retry took over)
    assert faulted["updates_applied"] > result["undisturbed"]["updates_applied"], result


def test_online_lda_survives_a_lost_executor_without_double_counting(drills):
    result, faulted = _drill(drills, "online")
    base = result["undisturbed"]
    docs = faulted["docs"]
    # every pass merged each document exactly once, the lost attempt's chunks included
    assert faulted["docs_merged"] == [docs] * len(base["docs_merged"])
    assert faulted["msteps"] == base["msteps"] and faulted["chunks"] == base["chunks"]
    # a retried task neither waited out its rounds nor stalled the other task's
    assert faulted["wait_timeouts"] == 0
    assert abs(result["perplexity_ratio"] - 1) <= 0.02, result


def test_word2vec_survives_a_lost_executor_with_its_heldout_loss(drills):
    result, faulted = _drill(drills, "word2vec")
    assert abs(result["loss_ratio"] - 1) <= 0.02, result
