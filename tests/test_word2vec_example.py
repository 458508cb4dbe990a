"""The word2vec example under spark-submit, and the notebook under nbclient (slow)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"


def _env(**extra):
    env = dict(os.environ)
    env.update(SPARK_CONF_DIR=str(ROOT / "spark-conf"), PYSPARK_PYTHON=sys.executable,
               PYSPARK_DRIVER_PYTHON=sys.executable, **extra)
    return env


@pytest.mark.slow
def test_spark_submit_runs_the_example_on_a_slice(tmp_path):
    if not SPARK_SUBMIT.exists():
        pytest.skip(f"no spark-submit next to {sys.executable}")
    package = shutil.make_archive(str(tmp_path / "deepdist"), "zip", root_dir=ROOT, base_dir="deepdist")
    output = tmp_path / "out"
    result = subprocess.run(
        [str(SPARK_SUBMIT), "--master", "local[2]", "--py-files", package,
         # the stock daemon: the zip alone must be enough (deepdist.daemon needs an install)
         "--conf", "spark.python.daemon.module=pyspark.daemon",
         str(ROOT / "examples" / "word2vec_wikipedia.py"),
         "--max-articles", "30", "--epochs", "2", "--dim", "32", "--output", str(output), "--quiet"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "analogy accuracy" in result.stdout and "held-out SGNS loss" in result.stdout

    from gensim.models import KeyedVectors

    kv = KeyedVectors.load(str(output / "vectors.kv"))
    text = KeyedVectors.load_word2vec_format(str(output / "vectors.txt"))
    assert kv.vector_size == 32 and len(kv) == len(text) > 500
    assert kv.index_to_key == text.index_to_key
    summary = json.loads((output / "summary.json").read_text())
    assert summary["settings"]["max_articles"] == 30 and summary["corpus"]["articles"] <= 30
    assert summary["metrics"]["heldout_loss"] < summary["metrics"]["heldout_loss_untrained"]
    assert len(summary["epochs"]) == 2


@pytest.mark.slow
def test_notebook_runs(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(ROOT / "notebooks" / "word2vec_wikipedia.ipynb", as_version=4)
    env = _env(SPARK_MASTER="local[2]", W2V_MAX_ARTICLES="30", W2V_EPOCHS="2", MPLBACKEND="Agg")
    old = dict(os.environ)
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        client = nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                                         resources={"metadata": {"path": str(ROOT / "notebooks")}})
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    outputs = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                      for o in cell.get("outputs", []))
    assert "epoch 2: analogy accuracy" in outputs
    assert "held-out SGNS loss / word" in outputs
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
               for cell in notebook.cells for o in cell.get("outputs", []))
