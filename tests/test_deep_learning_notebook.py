"""The deep-learning notebook (a PyTorch CNN on MNIST digits by Downpour SGD) under nbclient (slow)."""

import json
from pathlib import Path

import pytest
from notebook_runner import run_notebook

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_deep_learning_notebook_runs():
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    notebook = nbformat.read(ROOT / "notebooks" / "deep_learning.ipynb", as_version=4)
    outputs = run_notebook(notebook, DL_EPOCHS="2", DL_PARTITIONS="2")
    assert not [o for o in outputs if o.get("output_type") == "error"]
    pictures = [o for o in outputs if o.get("output_type") in ("display_data", "execute_result")
                and "image/png" in o.get("data", {})]
    assert len(pictures) >= 3  # the digits, the curves, the mistakes
    text = "".join(o.get("text", "") for o in outputs)
    lines = [line for line in text.splitlines() if line.startswith("RESULTS ")]
    assert len(lines) == 1, text[-2000:]
    results = json.loads(lines[0][len("RESULTS "):])
    assert results["epochs"] == 2 and len(results["deepdist"]) == 2 and len(results["torch"]) == 2
    # one push per mini-batch of every partition, every epoch
    assert results["updates"] == 2 * results["batches_per_epoch"]
    assert results["batches_per_epoch"] in (125, 126)   # 4,000 pairs in 2 partitions, batches of 32
    assert results["confusion_total"] == 1000
    # the trained module is the driver's net: scored on the driver it gives what evaluate gave
    assert results["driver_accuracy"] == pytest.approx(results["deepdist"][-1])
    assert results["deepdist"][-1] > 0.93 and results["torch"][-1] > 0.93
    assert abs(results["deepdist"][-1] - results["torch"][-1]) < 0.02
