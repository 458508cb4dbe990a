"""``deepdist lda`` on a plain text file: it trains and writes topics a person can read, with
the estimator's defaults for every option left unset."""

import argparse
import inspect
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from deepdist import cli
from deepdist.lda import GibbsLDA, GibbsLDAModel

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
         "--epochs", "20", "--master", "local[2]", "--output", str(out), "--num-words", "8",
         "--min-count", "2", "--max-df", "0.9", "--stop-words", "english", "--burn-in-sweeps", "5", "--burn-in-syncs", "3", "--quiet"],
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


def test_cli_lda_splits_the_counts_over_two_model_servers(tmp_path):
    rng = np.random.default_rng(1)
    corpus = tmp_path / "docs.txt"
    # two topics over 700 words each: more word rows than a shard keeps whole (one partition: on
    # so small a corpus two sample far faster than they exchange, and now and then settle on
    # different labellings of the topics)
    with open(corpus, "w") as f:
        for i in range(400):
            f.write(" ".join("ab"[i % 2] + "".join(chr(97 + w // 26 ** j % 26) for j in range(3))
                             for w in rng.integers(0, 700, 40)) + "\n")
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [sys.executable, "-m", "deepdist.cli", "lda", "--input", str(corpus), "--topics", "2", "--epochs", "30",
         "--master", "local[2]", "--partitions", "1", "--servers", "2", "--output", str(out), "--quiet"],
        capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    model = GibbsLDAModel.load(out / "model")
    assert model.num_words > 1024 and model.word_topic_.sum() == 400 * 40
    # each topic is one of the two halves of the vocabulary
    first_half = np.array([word.startswith("a") for word in model.id2word])
    share = model.word_topic_[first_half].sum(axis=0) / model.word_topic_.sum(axis=0)
    assert sorted(share.round(2).tolist()) == [0.0, 1.0], share


def _parse(*argv):
    parser = argparse.ArgumentParser()
    cli._lda_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["lda", "--input", "in.txt", "--output", "out", *argv])


def test_cli_options_left_unset_take_the_estimators_defaults():
    defaults = {name: p.default for name, p in inspect.signature(GibbsLDA.__init__).parameters.items()}
    # nothing given: the estimator is built with its own defaults, whatever they are
    options = cli.gibbs_options(_parse())
    assert options == {"progress": True}
    estimator = GibbsLDA(**options)
    for name, _, _ in cli._GIBBS_OPTIONS.values():
        assert getattr(estimator, name) == defaults[name], name
    # among them the ones that used to differ: min_count 5, max_df 0.5, sweeps_per_job 5, english stop words
    assert (estimator.min_count, estimator.max_df, estimator.sweeps_per_job, estimator.stop_words) == (1, 1.0, None, ())
    # the help names the estimator's default, read from its signature
    help_text = " ".join(_parse_help().split())
    assert f"(default {defaults['min_count']})" in help_text and f"(default {defaults['max_df']})" in help_text
    # given options reach the estimator under its parameter names
    given = cli.gibbs_options(_parse("--topics", "7", "--epochs", "9", "--stop-words", "", "--quiet"))
    assert given == {"num_topics": 7, "epochs": 9, "stop_words": frozenset(), "progress": False}


def _parse_help():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    return cli._lda_parser(sub).format_help()


def test_cli_iterations_is_a_hidden_alias_of_epochs(capsys):
    args = _parse("--iterations", "12")
    assert args.epochs == 12 and cli.gibbs_options(args)["epochs"] == 12
    assert "--iterations is renamed --epochs" in capsys.readouterr().err
    assert "--iterations" not in _parse_help()
    with pytest.raises(SystemExit):
        _parse("--epochs", "x")
