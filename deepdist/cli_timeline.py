"""``deepdist dnt`` over epochs: a tree per epoch, each from the last (``DNT(history=...)``).

Epochs come from several ``--input`` files (one epoch each, in the order given, labelled 1, 2, …)
or, for text, from a tab-separated ``--epoch-column`` (labels sorted: numbers as numbers). It
writes to ``--output``:

- ``trees.json``: every epoch's nested tree (node ``id``: the node's identity across epochs),
  its births and merges, the held-out scores per epoch and the training history;
- ``evolution.png``: the trees side by side (:meth:`DNTTimeline.plot_evolution`);
- ``epoch_<label>/``: that epoch's ``tree.txt``, ``tree.json`` and ``tree.png``;
- ``model``: the saved :class:`~deepdist.dnt.DNTTimeline` (``DNTTimeline.load``).

Example::

    deepdist dnt --format pnas --vocab pnas_vocab.text --input T1_train.dat T2_train.dat T3_train.dat \\
        --heldout T1_test.dat T2_test.dat T3_test.dat --history 2 --nodes 100 --output out/
"""

from __future__ import annotations

import json
import logging
import os

__all__ = ["run_dnt_over_time", "split_epoch_line"]

log = logging.getLogger("deepdist.cli")


def split_epoch_line(column: int):
    """``line -> (epoch, tokens)`` for tab-separated lines whose ``column`` is the epoch (a
    number when it reads as one); a line without that column, or without a word, gives ``None``."""
    from .cli import _tokenize

    def split(line: str):
        fields = line.rstrip("\n").split("\t")
        if len(fields) <= column:
            return None
        label = fields[column].strip()
        try:
            label = int(label)
        except ValueError:
            try:
                label = float(label)
            except ValueError:
                pass
        tokens = _tokenize(" ".join(fields[:column] + fields[column + 1:]))
        return (label, tokens) if tokens else None

    return split


def _documents(args, sc, id2word):
    """``(docs for DNT.fit, held-out documents per epoch label)``."""
    from .cli import _read_bows, _read_lines, _text_documents
    from .errors import CorpusError

    heldout = {}
    if args.epoch_column is not None:
        split = split_epoch_line(args.epoch_column)
        if args.heldout:
            with open(args.heldout[0], encoding="utf-8") as f:
                for label, tokens in filter(None, map(split, f)):
                    heldout.setdefault(label, []).append(tokens)
        return _text_documents(sc, args.input[0], args.partitions, parse=split), heldout
    docs = {}
    for label, path in enumerate(args.input, start=1):
        if args.format == "pnas":
            bows = _read_bows(path, len(id2word))
            docs[label] = sc.parallelize(bows, args.partitions) if args.partitions else sc.parallelize(bows)
        else:
            docs[label] = _text_documents(sc, path, args.partitions)
    if args.heldout:
        paths = args.heldout if len(args.heldout) == len(args.input) else None
        if paths is None:
            raise CorpusError("--heldout over epochs of several --input files: give one held-out file per --input")
        for label, path in enumerate(paths, start=1):
            heldout[label] = _read_bows(path, len(id2word)) if args.format == "pnas" else _read_lines(path)
    return docs, heldout


def run_dnt_over_time(args) -> int:
    from pyspark.sql import SparkSession

    from .cli import dnt_options
    from .dnt import DNT
    from .session import spark_session

    id2word = None
    if args.format == "pnas":
        from .datasets.pnas import read_vocabulary

        id2word = read_vocabulary(args.vocab)
    options = dnt_options(args)
    options.setdefault("history", 1)
    owned = SparkSession.getActiveSession() is None  # a session someone else started is theirs to stop
    spark = spark_session("deepdist dnt", args.master)
    try:
        sc = spark.sparkContext
        sc.setLogLevel("WARN")
        docs, heldout = _documents(args, sc, id2word)
        os.makedirs(args.output, exist_ok=True)
        estimator = DNT(**options).fit(docs, id2word=id2word)
    finally:
        if owned:
            spark.stop()
    timeline = estimator.model_
    scores = {}
    for label in timeline.times_:
        if heldout.get(label):
            scores[label] = {"heldout_vmf": timeline.score(heldout[label], label, kind="vmf"),
                             "heldout_paper": timeline.score(heldout[label], label, kind="paper")}
    write_timeline(timeline, estimator.history_, scores, args.output, args.num_words)
    timeline.save(os.path.join(args.output, "model"))
    for label in timeline.times_:
        tree = timeline.tree_at(label)
        held = "".join(f", held-out {kind[8:]} {value:.6g}" for kind, value in scores.get(label, {}).items())
        print(f"epoch {label}: {tree.n_nodes_} nodes (+{len(timeline.births(label))} born, "
              f"-{len(timeline.merges(label))} merged){held}")
    print(f"{len(timeline.times_)} epochs written to {args.output}")
    return 0


def write_timeline(timeline, history, scores: dict, output: str, num_words: int) -> None:
    """``trees.json``, ``evolution.png`` and a ``epoch_<label>/`` directory per epoch."""
    from .cli import write_tree
    from .lda.gibbs_model import plain

    for label in timeline.times_:
        directory = os.path.join(output, f"epoch_{label}")
        os.makedirs(directory, exist_ok=True)
        write_tree(timeline.tree_at(label), [r for r in history if r.get("time") == label],
                   scores.get(label, {}), directory, num_words)
    trees = timeline.to_json(num_words=num_words)
    for epoch in trees["epochs"]:
        epoch.update(scores.get(epoch["time"], {}))
    with open(os.path.join(output, "trees.json"), "w", encoding="utf-8") as f:
        json.dump(plain({**trees, "history": history}), f, indent=1)
    timeline.plot_evolution(num_words=min(num_words, 2)).savefig(os.path.join(output, "evolution.png"), dpi=100)
