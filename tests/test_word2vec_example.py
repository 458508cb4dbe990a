"""The word2vec example under spark-submit, and the notebook under nbclient (slow)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from notebook_runner import run_notebook

ROOT = Path(__file__).resolve().parent.parent
SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"


def _env(**extra):
    env = dict(os.environ)
    env.update(SPARK_CONF_DIR=str(ROOT / "spark-conf"), PYSPARK_PYTHON=sys.executable,
               PYSPARK_DRIVER_PYTHON=sys.executable, **extra)
    return env


def _submit_example(tmp_path, package, name, *args):
    output = tmp_path / name
    result = subprocess.run(
        [str(SPARK_SUBMIT), "--master", "local[2]", "--py-files", package,
         # the stock daemon: the zip alone must be enough (deepdist.daemon needs an install)
         "--conf", "spark.python.daemon.module=pyspark.daemon",
         str(ROOT / "examples" / "word2vec_wikipedia.py"),
         "--max-articles", "40", "--epochs", "3", "--dim", "32", "--output", str(output), "--quiet", *args],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "analogy accuracy" in result.stdout and "held-out SGNS loss" in result.stdout
    return output, json.loads((output / "summary.json").read_text())


@pytest.mark.slow
def test_spark_submit_runs_the_example_on_a_slice(tmp_path):
    if not SPARK_SUBMIT.exists():
        pytest.skip(f"no spark-submit next to {sys.executable}")
    package = shutil.make_archive(str(tmp_path / "deepdist"), "zip", root_dir=ROOT, base_dir="deepdist")
    # one partition: with two, Downpour's update order depends on task timing, and the pair of
    # losses compared below differed by up to 2.6% between runs; one task makes both runs
    # deterministic, so the comparison can be tight (several partitions: tests/test_cluster.py)
    output, summary = _submit_example(tmp_path, package, "one-job", "--partitions", "1")
    _, synced = _submit_example(tmp_path, package, "sync", "--sync-epochs", "--partitions", "1")

    from gensim.models import KeyedVectors

    kv = KeyedVectors.load(str(output / "vectors.kv"))
    text = KeyedVectors.load_word2vec_format(str(output / "vectors.txt"))
    assert kv.vector_size == 32 and len(kv) == len(text) > 500
    assert kv.index_to_key == text.index_to_key
    assert summary["settings"]["max_articles"] == 40 and summary["corpus"]["articles"] <= 40
    assert summary["settings"]["sync_epochs"] is False and synced["settings"]["sync_epochs"] is True
    metrics, synced_metrics = summary["metrics"], synced["metrics"]
    assert metrics["heldout_loss"] < 0.8 * metrics["heldout_loss_untrained"], metrics
    # one job per epoch trains as well as one job for all epochs
    assert synced_metrics["heldout_loss"] < 0.7 * synced_metrics["heldout_loss_untrained"], synced_metrics
    assert abs(synced_metrics["heldout_loss"] / metrics["heldout_loss"] - 1) < 0.01, (synced_metrics, metrics)
    words = summary["corpus"]["words"]
    for run in (summary, synced):
        # each epoch's own record: where it ended, what it took, the learning rate the tasks applied
        epochs = run["history"]
        assert [r["epoch"] for r in epochs] == [1, 2, 3]
        assert [r["words_done"] >= k * words for k, r in enumerate(epochs, 1)] == [True] * 3
        assert epochs[-1]["words_done"] == 3 * words
        alphas = [r["alpha_mean"] for r in epochs]
        assert alphas == sorted(alphas, reverse=True) and len(set(alphas)) == 3
        assert len({r["seconds"] for r in epochs}) == 3 and len({r["bytes_pulled"] for r in epochs}) == 3


#: run in the notebook's kernel before its last cell stops Spark: the notebook's numbers, and the
#: same model trained in one Spark job (no callback) as the reference its loss must reach
_NOTEBOOK_PROBE = """
import json
reference = DistributedWord2Vec(vector_size=DIM, window=5, min_count=5, sg=1, negative=5, epochs=EPOCHS,
                                partitions=PARTITIONS, seed=SEED, spark=spark, sync_epochs=False,
                                progress=False).fit(train)
print("PROBE " + json.dumps({"summary": summary, "curve": curve, "sync_epochs": w2v.sync_epochs_,
                              "epochs": w2v.history_, "corpus_words": w2v.corpus_words_,
                              "reference_loss": loss(reference.model_)}))
"""


@pytest.mark.slow
def test_notebook_trains_as_well_as_one_job(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    notebook = nbformat.read(ROOT / "notebooks" / "word2vec_wikipedia.ipynb", as_version=4)
    notebook.cells.insert(len(notebook.cells) - 1, nbformat.v4.new_code_cell(_NOTEBOOK_PROBE))
    epochs = 3
    # one partition, so that the notebook's run and its one-job reference are deterministic (see
    # test_spark_submit_runs_the_example_on_a_slice)
    cells = run_notebook(notebook, W2V_MAX_ARTICLES="40", W2V_EPOCHS=str(epochs), W2V_DIM="32",
                         W2V_PARTITIONS="1")
    outputs = "".join(o.get("text", "") for o in cells)
    probe = json.loads(next(line for line in outputs.splitlines() if line.startswith("PROBE "))[6:])
    summary = probe["summary"]
    print("notebook:", summary, "one-job reference loss:", probe["reference_loss"], "curve:", probe["curve"])
    loss, untrained = summary["held-out SGNS loss / word"], summary["untrained held-out loss / word"]
    # the callback forces one job per epoch; that mode must train as well as one job does
    assert probe["sync_epochs"] is True
    assert loss < 0.7 * untrained, (loss, untrained)
    # as good as one job
    assert abs(loss / probe["reference_loss"] - 1) < 0.01, (loss, probe["reference_loss"])
    # the per-epoch analogy curve is computed on each epoch's vectors, and grows
    assert [epoch for epoch, _ in probe["curve"]] == list(range(1, epochs + 1))
    assert probe["curve"][-1][1] > probe["curve"][0][1] and summary["analogy accuracy"] > 0, probe["curve"]
    # the records the notebook plots are the epochs' own: progress 1/3, 2/3, 3/3, falling learning rate
    records = probe["epochs"]
    assert [r["words_done"] for r in records] == [k * probe["corpus_words"] for k in range(1, epochs + 1)]
    alphas = [r["alpha_mean"] for r in records]
    assert alphas == sorted(alphas, reverse=True) and len(set(alphas)) == epochs
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
               for cell in notebook.cells for o in cell.get("outputs", []))
