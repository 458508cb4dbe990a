"""Every entry point on a real Spark standalone cluster, launched as a user launches it.

The cluster (tests/conftest.py) is a master and two one-core workers, separate processes on
127.0.0.1. Jobs go through ``spark-submit`` (or the ``deepdist`` command) in a process of
their own, with one of two executor Pythons: the venv's, where deepdist is installed, or a
bare one that has only deepdist's dependencies and gets deepdist shipped as a zip.
Each test checks that the work ran on the cluster's executors and reached the quality the
local runs reach.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from deepdist.testing import bare_python

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
VENV_PYTHON = sys.executable


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    """An executor Python with numpy, numba, flask and gensim, but no deepdist."""
    return bare_python(str(tmp_path_factory.mktemp("bare-python")))


@pytest.fixture(scope="module")
def plain_conf(tmp_path_factory):
    """The project's spark-conf without the preloading daemon (which needs deepdist installed)."""
    conf = tmp_path_factory.mktemp("spark-conf")
    for name in os.listdir(os.path.join(ROOT, "spark-conf")):
        shutil.copy(os.path.join(ROOT, "spark-conf", name), conf / name)
    defaults = conf / "spark-defaults.conf"
    defaults.write_text("".join(line for line in defaults.read_text().splitlines(keepends=True)
                                if "daemon.module" not in line))
    return str(conf)


def run(cluster, command, *, python, conf_dir, cwd=ROOT, timeout=900):
    """Run ``command`` (a list) as a user would, with the executors on ``python``."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYSPARK_PYTHON", "SPARK_CONF_DIR")}
    env.update(cluster.driver_env(), PYSPARK_PYTHON=python, PYSPARK_DRIVER_PYTHON=VENV_PYTHON,
               SPARK_CONF_DIR=conf_dir, PATH=BIN + os.pathsep + env.get("PATH", ""))
    started = time.monotonic()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    result.seconds = time.monotonic() - started
    return result


def submit(cluster, script, *args, python, conf_dir, py_files=None, cwd=ROOT):
    command = [os.path.join(BIN, "spark-submit"), *cluster.submit_args()]
    if py_files:
        command += ["--py-files", py_files]
    return run(cluster, command + [script, *args], python=python, conf_dir=conf_dir, cwd=cwd)


def ran_on_cluster(cluster, app_id):
    state = cluster.state()
    apps = {a["id"]: a for a in state.get("activeapps", []) + state.get("completedapps", [])}
    assert app_id in apps, f"{app_id} is not an application of {cluster.url}"
    return apps[app_id]


def test_every_entry_point_runs_on_the_executors_with_local_quality(cluster, tmp_path):
    out = tmp_path / "results.json"
    result = submit(cluster, os.path.join(ROOT, "tests", "cluster_jobs.py"), "--output", str(out),
                    python=VENV_PYTHON, conf_dir=os.path.join(ROOT, "spark-conf"))
    assert result.returncode == 0, result.stderr[-4000:]
    r = json.loads(out.read_text())
    assert r["master"] == cluster.url
    ran_on_cluster(cluster, r["app_id"])
    # the tasks ran in the executors' Python processes under the workers, not in the driver
    assert r["executors"] and all(pid != r["driver_pid"] for _, pid, _ in r["executors"])
    assert {python for _, _, python in r["executors"]} == {VENV_PYTHON}
    assert r["train"]["url"].startswith("http://127.0.0.1:")       # the cluster bind rule
    assert r["train"]["counts_exact"]
    assert r["train"]["loss"] <= 1.02 * r["train"]["optimum"], r["train"]
    assert r["gibbs"]["counts_exact"] and r["gibbs"]["recovery"] >= 0.9, r["gibbs"]
    assert r["gibbs"]["ll_per_token"][-1] > r["gibbs"]["ll_per_token"][1]
    assert r["online"]["recovery"] > 0.9, r["online"]
    assert r["online"]["perplexity"] <= 1.05 * r["online"]["reference_perplexity"], r["online"]
    dnt = r["dnt"]
    assert dnt["nodes"] > 1 and dnt["repairs"] == 0 and max(dnt["memo_errors"]) < 1e-9, dnt
    assert dnt["largest_fall"] < 1e-13 and dnt["big_matched"] >= 0.9, dnt
    # dependent trees over time: grown over the epochs, exact, and above a tree per epoch alone
    time_ = r["dnt_time"]
    assert time_["nodes"][2] > time_["nodes"][0] > 1 and time_["repairs"] == 0, time_
    assert max(time_["memo_errors"]) <= 1e-9 * 400, time_
    assert all(d >= i for d, i in zip(time_["dependent"], time_["independent"])), time_
    # model-parallel births on the executors, one structure task failing: the driver's tree
    parallel = r["dnt_parallel"]
    assert parallel["failed"] == ["failed-1"] and parallel["same_tree"] and parallel["nodes"] > 6, parallel
    assert parallel["mean_diff"] <= 1e-12 and parallel["births"] >= 6 and parallel["repairs"] == 0, parallel
    w2v = r["word2vec"]
    assert w2v["loss"] < 0.9 * w2v["untrained_loss"], w2v
    assert w2v["loss"] <= 1.1 * w2v["reference_loss"], w2v
    # DeepDist(servers=N): two server processes on the driver's host, exact counts under a retry,
    # and the same table whether its rows live on one, two or three shards
    shards = r["shards"]
    assert len(set(shards["urls"])) == 2 and all(u.startswith("http://127.0.0.1:") for u in shards["urls"]), shards
    assert shards["counts_exact"] and shards["same_tables"] and shards["table_changed"], shards
    assert shards["applied"][0] == shards["applied"][1] > 2 * 4 * 10, shards   # every push reached both
    gibbs = shards["gibbs"]   # GibbsLDA with its counts on two shards: exact, and the planted topics
    assert gibbs["counts_exact"] and gibbs["repairs"] == 0 and gibbs["recovery"] > 0.9, gibbs
    assert gibbs["applied"][0] == gibbs["applied"][1] > 0, gibbs
    # GibbsLDA(threads=2): exact, the planted topics, and one exchange a round per task, as with
    # one thread a task (the two threads' changes travel as one)
    assert gibbs["threads_counts_exact"] and gibbs["threads_recovery"] > 0.9, gibbs
    assert gibbs["threads_pushes"] == gibbs["pushes"], gibbs
    online = shards["online"]   # OnlineLDA with λ on two shards: one server's topics, to round-off
    assert online["recovery"] > 0.8 and online["applied"][0] == online["applied"][1] > 0, online
    assert online["perplexity"] == pytest.approx(online["one_server_perplexity"], rel=1e-4), online


def test_linear_regression_example_ships_deepdist_to_bare_executors(cluster, bare, plain_conf, tmp_path):
    out = tmp_path / "linear.json"
    result = submit(cluster, os.path.join(ROOT, "examples", "linear_regression.py"), "--rows", "20000",
                    "--features", "20", "--partitions", "4", "--epochs", "5", "--output", str(out),
                    python=bare, conf_dir=plain_conf)
    assert result.returncode == 0, result.stderr[-4000:]
    r = json.loads(out.read_text())
    assert r["master"] == cluster.url
    ran_on_cluster(cluster, r["app_id"])
    assert r["relative_gap"] < 0.01, r
    assert r["updates"] >= 5 * 4 * 10        # 5 epochs x 4 partitions x at least 10 batches of 500


def test_word2vec_example_readme_cluster_command(cluster, bare, plain_conf, tmp_path):
    # the README's command: zip the package, spark-submit with --py-files (the dump: gensim's)
    subprocess.run(["zip", "-qr", str(tmp_path / "deepdist.zip"), "deepdist", "-x", "*__pycache__*"],
                   cwd=ROOT, check=True)
    out = tmp_path / "w2v"
    result = submit(cluster, os.path.join(ROOT, "examples", "word2vec_wikipedia.py"), "--partitions", "2",
                    "--epochs", "2", "--dim", "32", "--max-articles", "60", "--output", str(out), "--quiet",
                    python=bare, conf_dir=plain_conf, py_files=str(tmp_path / "deepdist.zip"))
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["master"] == cluster.url
    metrics = summary["metrics"]
    assert metrics["heldout_loss"] < 0.9 * metrics["heldout_loss_untrained"], metrics
    assert (out / "vectors.kv").exists()


def test_cli_lda_on_the_cluster_with_bare_executors(cluster, bare, plain_conf, tmp_path):
    from test_cli import FRUIT, TRANSPORT, write_corpus

    corpus = tmp_path / "docs.txt"
    write_corpus(corpus)
    out = tmp_path / "out"
    result = run(cluster, [os.path.join(BIN, "deepdist"), "lda", "--master", cluster.url, "--input", str(corpus),
                           "--topics", "2", "--iterations", "20", "--output", str(out), "--min-count", "2",
                           "--max-df", "0.9", "--burn-in-sweeps", "5", "--partitions", "2", "--num-words", "8", "--quiet"],
                 python=bare, conf_dir=plain_conf)
    assert result.returncode == 0, result.stderr[-4000:]
    lines = (out / "topics.txt").read_text().splitlines()
    found = sorted(sorted(line.split(": ")[1].split()) for line in lines)
    assert found == sorted([sorted(FRUIT), sorted(TRANSPORT)])


def test_cli_dnt_over_time_on_the_cluster_with_bare_executors(cluster, bare, plain_conf, tmp_path):
    from test_cli_dnt import FAST, check_epochs, word

    from deepdist.dnt.synthetic import synthetic_tree_corpus

    counts = synthetic_tree_corpus(n_docs=400, vocab_size=300, kind="counts", seed=0).counts
    with open(tmp_path / "docs.tsv", "w") as f:
        for i, row in enumerate(counts):
            f.write(f"doc{i}\t{1990 + 10 * (3 * i // len(counts))}\t"
                    + " ".join(word(w) for w in np.repeat(np.arange(row.size), row)) + "\n")
    out = tmp_path / "out"
    options = [a for a in FAST if a not in ("--master", "local[2]")]
    result = run(cluster, [os.path.join(BIN, "deepdist"), "dnt", "--master", cluster.url, "--input",
                           str(tmp_path / "docs.tsv"), "--epoch-column", "1", "--history", "1",
                           "--output", str(out), *options], python=bare, conf_dir=plain_conf)
    assert result.returncode == 0, result.stderr[-4000:]
    timeline = check_epochs(out, [1990, 2000, 2010], heldout=False)
    assert timeline.tree_at(2010).n_nodes_ >= 2


def test_a_daemon_that_needs_deepdist_on_bare_executors_is_one_clear_error(cluster, bare, tmp_path):
    result = submit(cluster, os.path.join(ROOT, "examples", "linear_regression.py"), "--rows", "1000",
                    python=bare, conf_dir=os.path.join(ROOT, "spark-conf"))
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "spark.python.daemon.module" in output and "pyspark.daemon" in output, output[-4000:]
    assert "at org.apache" not in output and "Py4J" not in output
    assert result.seconds < 120


def test_image_classifier_example_trains_a_cnn_on_the_cluster(cluster, tmp_path):
    # the deep-learning example as a user submits it: a PyTorch module trained on the executors
    pytest.importorskip("torch")
    out = tmp_path / "cnn.json"
    result = submit(cluster, os.path.join(ROOT, "examples", "image_classifier.py"), "--epochs", "2",
                    "--partitions", "2", "--output", str(out), python=VENV_PYTHON,
                    conf_dir=os.path.join(ROOT, "spark-conf"))
    assert result.returncode == 0, result.stderr[-4000:]
    r = json.loads(out.read_text())
    assert r["master"] == cluster.url
    ran_on_cluster(cluster, r["app_id"])
    assert [h["epoch"] for h in r["history"]] == [1, 2]
    # one push per mini-batch of 32: 4,000 digits in two partitions, 125 or 126 batches an epoch
    assert 2 * 125 <= r["updates"] <= 2 * 126
    assert r["accuracy"] > 0.93, r["history"]
