"""The topic-models notebook (Gibbs LDA and online LDA on Wikipedia) under nbclient (slow)."""

import json
from pathlib import Path

import pytest
from notebook_runner import run_notebook

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_topic_models_notebook_runs():
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    notebook = nbformat.read(ROOT / "notebooks" / "topic_models.ipynb", as_version=4)
    outputs = run_notebook(notebook)
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {}) for o in outputs)
    text = "".join(o.get("text", "") for o in outputs)
    assert "Gibbs LDA, largest topics:" in text and "online LDA:" in text
    lines = [line for line in text.splitlines() if line.startswith("RESULTS ")]
    assert len(lines) == 1, text[-2000:]
    results = json.loads(lines[0][len("RESULTS "):])
    assert results["num_topics"] == 20 and results["heldout_docs"] > 0
    unigram = results["baseline"]["unigram"]
    assert unigram < results["baseline"]["uniform"]
    for name in ("gibbs", "online"):
        curve = results[name]["curve"]
        assert len(curve) >= 2 and all(t > 0 for t, _ in curve)
        assert results[name]["perplexity"] < unigram, (name, results[name]["perplexity"], unigram)
