"""``deepdist dnt`` on a small tree-shaped corpus, as text and as a PNAS ``.dat`` file: it grows a
tree and writes it as text, JSON, a picture and a model that loads back; bad values are one line."""

import argparse
import json
import math
import string

import numpy as np
import pytest

from deepdist import cli
from deepdist.dnt import DNTModel, DNTTimeline
from deepdist.dnt.synthetic import synthetic_tree_corpus

#: small enough that a run takes seconds on two cores
FAST = ["--master", "local[2]", "--epochs", "4", "--nodes", "12", "--partitions", "2",
        "--batches-per-partition", "1", "--births-per-pass", "3", "--num-words", "4", "--quiet"]
HELD_OUT = 40


def word(i: int) -> str:
    """``"wab"`` for 1: letters only, since ``deepdist dnt``'s tokeniser drops digits (``w17`` would vanish)."""
    return "w" + string.ascii_lowercase[i // 26] + string.ascii_lowercase[i % 26]


@pytest.fixture(scope="module")
def counts():
    return synthetic_tree_corpus(n_docs=400, vocab_size=300, kind="counts", seed=0).counts


def write_text(path, rows):
    with open(path, "w") as f:
        for row in rows:
            f.write(" ".join(word(i) for i in np.repeat(np.arange(row.size), row)) + "\n")


def write_dat(path, rows):
    with open(path, "w") as f:
        f.write(f"{len(rows)}\n")
        for row in rows:
            ids = np.flatnonzero(row)
            f.write(" ".join([str(ids.size)] + [f"{i} {row[i]}" for i in ids]) + "\n")


def count_nodes(node) -> int:
    return 1 + sum(count_nodes(child) for child in node["children"])


def check_output(out, heldout: bool):
    for name in ("tree.txt", "tree.json", "tree.png", "model"):
        assert (out / name).is_file(), name
    model = DNTModel.load(out / "model")
    assert model.n_nodes_ >= 2
    tree = json.loads((out / "tree.json").read_text())
    assert count_nodes(tree["tree"]) == tree["n_nodes"] == model.n_nodes_
    assert len(tree["history"]) == 4 and math.isfinite(tree["elbo"])
    assert len((out / "tree.txt").read_text().splitlines()) == model.n_nodes_
    assert (out / "tree.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if heldout:
        assert math.isfinite(tree["heldout_vmf"]) and math.isfinite(tree["heldout_paper"])
    else:
        assert "heldout_vmf" not in tree
    return model


def test_cli_dnt_text(tmp_path, counts):
    write_text(tmp_path / "docs.txt", counts[:-HELD_OUT])
    write_text(tmp_path / "heldout.txt", counts[-HELD_OUT:])
    out = tmp_path / "out"
    assert cli.main(["dnt", "--input", str(tmp_path / "docs.txt"), "--heldout", str(tmp_path / "heldout.txt"),
                     "--output", str(out), *FAST]) == 0
    model = check_output(out, heldout=True)
    assert set(model.id2word) <= {word(i) for i in range(counts.shape[1])}  # the vocabulary built from the text


def test_cli_dnt_pnas(tmp_path, counts):
    (tmp_path / "vocab.txt").write_text("".join(word(i) + "\n" for i in range(counts.shape[1])))
    write_dat(tmp_path / "train.dat", counts[:-HELD_OUT])
    write_dat(tmp_path / "test.dat", counts[-HELD_OUT:])
    out = tmp_path / "out"
    assert cli.main(["dnt", "--format", "pnas", "--input", str(tmp_path / "train.dat"),
                     "--vocab", str(tmp_path / "vocab.txt"), "--heldout", str(tmp_path / "test.dat"),
                     "--output", str(out), *FAST]) == 0
    model = check_output(out, heldout=True)
    assert model.id2word == [word(i) for i in range(counts.shape[1])]  # the ids of --vocab, all of them


def _help() -> str:
    parser = argparse.ArgumentParser()
    return " ".join(cli._dnt_parser(parser.add_subparsers(dest="command")).format_help().split())


def test_cli_dnt_help_shows_the_estimators_defaults():
    defaults = cli.dnt_defaults()
    text = _help()
    assert "--nodes" in text and f"(default {defaults['max_nodes']})" in text
    assert f"passes over the documents (default {defaults['epochs']})" in text
    # nothing given: DNT keeps every default of its own
    parser = argparse.ArgumentParser()
    cli._dnt_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["dnt", "--input", "in.txt", "--output", "out"])
    assert cli.dnt_options(args) == {"progress": True}
    args = parser.parse_args(["dnt", "--input", "in.txt", "--output", "out", "--nodes", "9", "--quiet"])
    assert cli.dnt_options(args) == {"max_nodes": 9, "progress": False}


def test_cli_dnt_bad_value_is_one_error_line(tmp_path, counts, capsys):
    write_text(tmp_path / "docs.txt", counts[:50])
    with pytest.raises(SystemExit) as exit_:
        cli.main(["dnt", "--input", str(tmp_path / "docs.txt"), "--output", str(tmp_path / "out"),
                  *FAST, "--epochs", "0"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deepdist dnt: error: ") and "epochs" in err[0], err


def test_cli_dnt_pnas_without_vocab_is_refused_before_spark(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["dnt", "--format", "pnas", "--input", str(tmp_path / "x.dat"), "--output", str(tmp_path / "out")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--vocab" in err[0], err


def check_epochs(out, labels, heldout: bool):
    timeline = DNTTimeline.load(out / "model")
    assert timeline.times_ == labels
    trees = json.loads((out / "trees.json").read_text())
    assert [e["time"] for e in trees["epochs"]] == labels
    for epoch, label in zip(trees["epochs"], labels):
        assert count_nodes(epoch["tree"]) == timeline.tree_at(label).n_nodes_ >= 1
        assert epoch["tree"]["id"] == 0  # the root keeps its identity
        assert (math.isfinite(epoch["heldout_paper"]) and math.isfinite(epoch["heldout_vmf"])) if heldout \
            else "heldout_vmf" not in epoch
        for name in ("tree.txt", "tree.json", "tree.png"):
            assert (out / f"epoch_{label}" / name).is_file()
    assert (out / "evolution.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {r["time"] for r in trees["history"]} == set(labels)
    return timeline


def test_cli_dnt_one_pnas_file_per_epoch(tmp_path, counts):
    (tmp_path / "vocab.txt").write_text("".join(word(i) + "\n" for i in range(counts.shape[1])))
    inputs, held = [], []
    for e, rows in enumerate(np.array_split(np.arange(counts.shape[0]), 3), start=1):
        write_dat(tmp_path / f"T{e}_train.dat", counts[rows[:-15]])
        write_dat(tmp_path / f"T{e}_test.dat", counts[rows[-15:]])
        inputs.append(str(tmp_path / f"T{e}_train.dat"))
        held.append(str(tmp_path / f"T{e}_test.dat"))
    out = tmp_path / "out"
    assert cli.main(["dnt", "--format", "pnas", "--vocab", str(tmp_path / "vocab.txt"), "--input", *inputs,
                     "--heldout", *held, "--history", "2", "--output", str(out), *FAST]) == 0
    timeline = check_epochs(out, [1, 2, 3], heldout=True)
    assert timeline.params_["history"] == 2


def test_cli_dnt_epoch_column(tmp_path, counts):
    with open(tmp_path / "docs.tsv", "w") as f:
        for i, row in enumerate(counts[:-HELD_OUT]):
            text = " ".join(word(w) for w in np.repeat(np.arange(row.size), row))
            f.write(f"doc{i}\t{(2, 10)[i % 2]}\t{text}\n")  # numeric epochs sort as numbers: 2 before 10
    out = tmp_path / "out"
    assert cli.main(["dnt", "--input", str(tmp_path / "docs.tsv"), "--epoch-column", "1", "--smooth", "1",
                     "--output", str(out), *FAST]) == 0
    timeline = check_epochs(out, [2, 10], heldout=False)
    assert timeline.params_["smooth"] == 1  # epoch 2 refined again from epoch 10's tree: the same nodes
    assert set(timeline.nodes_at(2).tolist()) == set(timeline.nodes_at(10).tolist())


@pytest.mark.parametrize("option", ["--history", "--smooth"])
def test_cli_dnt_history_without_epochs_is_refused_before_spark(tmp_path, capsys, option):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["dnt", "--input", str(tmp_path / "x.txt"), option, "2", "--output", str(tmp_path / "out")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--epoch-column" in err[0] and option in err[0], err
