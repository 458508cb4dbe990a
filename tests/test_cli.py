"""``deepdist lda`` on a plain text file: it trains and writes topics a person can read."""

import json
import os
import subprocess
import sys

import numpy as np

from deepdist.lda import GibbsLDAModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FRUIT = "apple pear plum fig cherry grape melon lemon".split()
TRANSPORT = "car bus train bike tram ferry truck plane".split()


def write_corpus(path, docs=200, seed=0):
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        for i in range(docs):
            words = rng.choice(FRUIT if i % 2 else TRANSPORT, 30)
            f.write("The " + " ".join(words) + ", and the 42 others.\n")


def test_cli_lda_writes_readable_topics(tmp_path):
    corpus = tmp_path / "docs.txt"
    write_corpus(corpus)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [sys.executable, "-m", "deepdist.cli", "lda", "--input", str(corpus), "--topics", "2",
         "--iterations", "20", "--master", "local[2]", "--output", str(out), "--num-words", "8",
         "--min-count", "2", "--max-df", "0.9", "--burn-in-sweeps", "5", "--burn-in-syncs", "3", "--quiet"],
        capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = (out / "topics.txt").read_text().splitlines()
    assert len(lines) == 2
    found = sorted(sorted(line.split(": ")[1].split()) for line in lines)
    assert found == sorted([sorted(FRUIT), sorted(TRANSPORT)])  # stop words and numbers are gone
    topics = json.loads((out / "topics.json").read_text())
    assert topics["num_topics"] == 2 and len(topics["topics"][0]["words"]) == 8
    model = GibbsLDAModel.load(out / "model")
    assert model.word_topic_.shape == (16, 2)
    assert "2 topics over 16 words" in result.stdout
