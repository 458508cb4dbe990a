"""The topic-tree notebook (DNT on the PNAS titles) under nbclient (slow)."""

import json
from pathlib import Path

import pytest
from notebook_runner import run_notebook

ROOT = Path(__file__).resolve().parent.parent

# the reference point: the paper's score of the training data's centroid alone
CENTROID_ONLY = 1061


@pytest.mark.slow
def test_topic_tree_notebook_runs(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    pytest.importorskip("matplotlib")
    from deepdist.datasets.pnas import pnas_directory

    try:
        pnas_directory()
    except Exception as err:  # the data lives outside the repository
        pytest.skip(f"PNAS data not found: {err}")
    notebook = nbformat.read(ROOT / "notebooks" / "topic_tree.ipynb", as_version=4)
    results_file = tmp_path / "results.json"
    outputs = run_notebook(notebook, DNT_MAX_NODES="60", DNT_EPOCHS="8", DNT_TIME_PASSES="3",
                           DNT_NOTEBOOK_RESULTS=str(results_file))
    assert not [o for o in outputs if o.get("output_type") == "error"]
    pictures = [o for o in outputs if o.get("output_type") in ("display_data", "execute_result")
                and "image/png" in o.get("data", {})]
    assert len(pictures) >= 3  # the tree, the ELBO curve and the trees over time

    results = json.loads(results_file.read_text())
    assert results["nodes"] > 10 and results["depth"] >= 2
    assert results["passes"] == 8 and len(results["elbo"]) == 8
    held = results["heldout"]
    assert held["centroid"]["paper"] == pytest.approx(CENTROID_ONLY, abs=1)
    assert held["dnt"]["paper"] > CENTROID_ONLY
    assert held["dnt"]["vmf"] > held["centroid"]["vmf"]
    # memoized VI never lowers the bound between structure moves
    assert results["elbo_drops"] == 0
    trace = results["elbo_trace"]
    for (_, before, _), (_, after, moved) in zip(trace, trace[1:]):
        assert moved or after >= before - 1e-9 * abs(before)
    assert all(len(words) == 8 for words in results["top_words"].values())
    # the trees over time: one per epoch, the root keeping its identity, each above its epoch's centroid
    over_time = results["over_time"]
    epochs = over_time["epochs"]
    assert sorted(map(int, epochs)) == list(range(1, 11))
    assert all(r["root_id"] == 0 and r["nodes"] >= 1 for r in epochs.values())
    assert all(r["paper"] > r["centroid"] for r in epochs.values())
    assert epochs["10"]["nodes"] > epochs["1"]["nodes"]
    assert over_time["trajectory"] and over_time["trajectory"][-1] == 10
