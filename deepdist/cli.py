"""The ``deepdist`` command line: ``deepdist lda`` (flat topics) and ``deepdist dnt`` (a tree of topics).

``deepdist lda --input docs.txt --topics 100 --output out/`` trains :class:`deepdist.lda.GibbsLDA`
on a text file (one document per line, tokenised like gensim's ``simple_preprocess``: lower case,
alphabetic tokens of 2-15 characters) and writes to ``--output``:

- ``topics.txt``: each topic's top words, one topic per line, largest topics first;
- ``topics.json``: the same with probabilities, plus α, β and the training history;
- ``model``: the saved :class:`~deepdist.lda.GibbsLDAModel`, one file (``GibbsLDAModel.load``).
- ``report.html``: the training dashboard as a page that opens offline, and ``report.json``, its
  metric history (:mod:`deepdist.dashboard`).

``deepdist dnt --input docs.txt --nodes 100 --output out/`` grows a :class:`deepdist.dnt.DNT` tree
of topics, from a text file tokenised as above (``--format text``, the vocabulary built on Spark),
or from a ``.dat`` file of bags of words with its ``--vocab`` file (``--format pnas``, the DNTs
paper's PNAS format, read on the driver); ``--heldout`` documents of the same format are scored
after the fit. It writes to ``--output``:

- ``tree.txt``: the tree, one node per line, indented by depth, with its top words;
- ``tree.json``: the same as nested nodes, plus the training history and the held-out scores;
- ``tree.png``: a picture of the tree;
- ``model``: the saved :class:`~deepdist.dnt.DNTModel`, one file (``DNTModel.load``).
- ``report.html`` and ``report.json``: the training dashboard and its metric history.

Over epochs (several ``--input`` files, or ``--epoch-column``): a tree per epoch, each from the
last, written as :mod:`deepdist.cli_timeline` says.

Options left unset take the estimator's defaults (``deepdist lda --help`` and ``deepdist dnt
--help`` show them)::

    deepdist dnt --format pnas --input T1_train.dat --vocab pnas_vocab.text \\
        --heldout T1_test.dat --nodes 50 --epochs 10 --output out/
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

__all__ = ["main"]


def _tokenize(line: str) -> list:
    from gensim.utils import simple_preprocess

    return simple_preprocess(line, min_len=2, max_len=15)


def _stop_words(spec: str):
    if not spec:
        return frozenset()
    if spec in ("english", "gensim"):
        from gensim.parsing.preprocessing import STOPWORDS

        return frozenset(STOPWORDS)
    with open(spec, encoding="utf-8") as f:
        return frozenset(w.strip().lower() for w in f.read().split() if w.strip())


#: ``deepdist lda`` options that are GibbsLDA parameters: flag -> (parameter, type, help). Their
#: argparse default is None, "GibbsLDA's default", shown in the help from its signature, so the
#: command line cannot drift from the estimator.
_GIBBS_OPTIONS = {
    "--topics": ("num_topics", int, "number of topics K"),
    "--epochs": ("epochs", int, "Gibbs sweeps (passes over the documents)"),
    "--alpha": ("alpha", float, "symmetric document-topic prior"),
    "--beta": ("beta", float, "symmetric topic-word prior"),
    "--optimize-alpha-every": ("optimize_alpha_every", int, "Minka updates of alpha every N jobs (0: never)"),
    "--sync-every": ("sync_every", int, "sweeps between exchanges of counts"),
    "--threads": ("threads", int, "sampling threads per task (they merge in memory; the task exchanges once)"),
    "--burn-in-sweeps": ("burn_in_sweeps", int, "first sweeps that exchange counts several times a sweep"),
    "--burn-in-syncs": ("burn_in_syncs", int, "exchanges per burn-in sweep"),
    "--sweeps-per-job": ("sweeps_per_job", int, "sweeps per Spark job (default: the whole fit in one job, "
                                                "or one sweep a job when checkpointing or optimising alpha)"),
    "--min-count": ("min_count", int, "drop words seen fewer times"),
    "--max-df": ("max_df", float, "drop words in more than this fraction of documents"),
    "--stop-words": ("stop_words", _stop_words, "'english' (gensim's list), a file of words, or '' for none"),
    "--max-vocab": ("max_vocab", int, "keep at most this many words"),
    "--hash-buckets": ("hash_buckets", int, "hash words into this many ids instead"),
    "--seed": ("seed", int, "seed of the assignments and sweeps"),
    "--checkpoint-every": ("checkpoint_every", int, "checkpoint every N jobs into OUTPUT/checkpoints"),
}


def estimator_defaults(estimator_class) -> dict:
    """An estimator's keyword-only parameter defaults, from its signature."""
    import inspect

    return {name: p.default for name, p in inspect.signature(estimator_class.__init__).parameters.items()
            if p.kind is p.KEYWORD_ONLY}


def gibbs_defaults() -> dict:
    """GibbsLDA's parameter defaults, from its signature."""
    from .lda.gibbs import GibbsLDA

    return estimator_defaults(GibbsLDA)


def _add_estimator_options(p, options: dict, defaults: dict) -> None:
    """Add ``options`` (flag -> (parameter, type, help)) to ``p``, each defaulting to None (the
    estimator's default), with that default, read from ``defaults``, in the help."""
    for flag, (name, kind, text) in options.items():
        default = defaults[name]
        shown = "none" if default in ((), None) else default
        p.add_argument(flag, dest=name, type=kind, default=None,
                       help=text if "default" in text else f"{text} (default {shown})")


def _given_options(args, options: dict) -> dict:
    """The estimator parameters among ``options`` that the command line sets (the rest keep its defaults)."""
    return {name: getattr(args, name) for name, _, _ in options.values() if getattr(args, name) is not None}


class _RenamedFlag(argparse.Action):
    """An old flag kept one release: sets the new one's value and says it is renamed."""

    def __init__(self, option_strings, dest, new_flag=None, **kwargs):
        self.new_flag = new_flag
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        sys.stderr.write(f"deepdist: {option_string} is renamed {self.new_flag}; the old name goes in the "
                         "next release\n")
        setattr(namespace, self.dest, values)


def _lda_parser(sub):
    p = sub.add_parser("lda", help="train LDA by distributed collapsed Gibbs sampling (AD-LDA)",
                       description="Train LDA by distributed collapsed Gibbs sampling on a text file "
                                   "with one document per line. Unset options take GibbsLDA's defaults.")
    p.add_argument("--input", required=True, help="text file (or directory / glob Spark reads), one document per line")
    p.add_argument("--output", required=True, help="directory for topics.txt, topics.json and model")
    _add_estimator_options(p, _GIBBS_OPTIONS, gibbs_defaults())
    p.add_argument("--iterations", dest="epochs", type=int, action=_RenamedFlag, new_flag="--epochs",
                   help=argparse.SUPPRESS)
    p.add_argument("--master", default=None, help="Spark master, e.g. spark://host:7077 (default: spark-submit's or "
                                               "spark-defaults.conf's, else local[*])")
    p.add_argument("--partitions", type=int, default=None, help="RDD partitions (shards); default Spark's")
    p.add_argument("--num-words", type=int, default=10, help="words shown per topic (default 10)")
    p.add_argument("--servers", type=int, default=1,
                   help="model servers the count table is split over by word rows (default 1)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress line, warnings only")
    return p


def gibbs_options(args) -> dict:
    """The GibbsLDA parameters the command line sets: only those given (the rest keep its defaults)."""
    options = _given_options(args, _GIBBS_OPTIONS)
    if args.checkpoint_every or args.resume:
        options.update(checkpoint_dir=os.path.join(args.output, "checkpoints"), resume=args.resume)
    return {**options, "progress": not args.quiet}


def run_lda(args) -> int:
    from .lda import GibbsLDA
    from .session import spark_session

    spark = spark_session("deepdist lda", args.master)
    try:
        sc = spark.sparkContext
        sc.setLogLevel("WARN")
        lines = sc.textFile(args.input, args.partitions) if args.partitions else sc.textFile(args.input)
        docs = lines.map(_tokenize).filter(bool)
        if args.partitions:
            docs = docs.repartition(args.partitions)
        os.makedirs(args.output, exist_ok=True)
        model = GibbsLDA(**gibbs_options(args), server_options={**report_option(args), "servers": args.servers}
                         ).fit(docs).model_
    finally:
        spark.stop()
    write_topics(model, args.output, args.num_words)
    model.save(os.path.join(args.output, "model"))
    last = model.history_[-1] if model.history_ else {}
    print(f"{model.num_topics} topics over {model.num_words} words, log-likelihood per token "
          f"{last.get('ll_per_token', float('nan')):.4f}; written to {args.output}")
    return 0


def write_topics(model, output: str, num_words: int) -> None:
    """``topics.txt`` (one readable line per topic) and ``topics.json``."""
    topics = model.show_topics(num_words=num_words)
    share = model.topic_totals_ / max(int(model.topic_totals_.sum()), 1)
    with open(os.path.join(output, "topics.txt"), "w", encoding="utf-8") as f:
        for k, words in topics:
            f.write(f"topic {k:3d} ({share[k]:6.2%}): {' '.join(w for w, _ in words)}\n")
    with open(os.path.join(output, "topics.json"), "w", encoding="utf-8") as f:
        json.dump({"num_topics": model.num_topics, "num_words": model.num_words,
                   "alpha": model.alpha_.tolist(), "beta": model.beta,
                   "topics": [{"topic": k, "share": float(share[k]),
                               "words": [{"word": w, "p": p} for w, p in words]} for k, words in topics],
                   "history": model.history_}, f, indent=1, default=float)


#: ``deepdist dnt`` options that are DNT parameters, as ``_GIBBS_OPTIONS`` are GibbsLDA's.
_DNT_OPTIONS = {
    "--nodes": ("max_nodes", int, "most nodes the tree may grow to, DNT's max_nodes"),
    "--epochs": ("epochs", int, "passes over the documents"),
    "--alpha": ("alpha", float, "stick of stopping at a node (larger: documents go deeper)"),
    "--gamma": ("gamma", float, "sticks among siblings (larger: more, more even children)"),
    "--beta": ("beta", float, "the documents' concentration about their node's mean"),
    "--kappa0": ("kappa0", float, "the root's concentration about the data's centroid"),
    "--kappa1": ("kappa1", float, "each child's concentration about its parent's mean"),
    "--kappa2": ("kappa2", float, "over epochs: each node's concentration about its own last mean"),
    "--history": ("history", int, "over epochs: epochs of document counts a node's sticks remember (given "
                                  "epochs, default 1)"),
    "--smooth": ("smooth", int, "over epochs: passes per epoch of a backward sweep that refines each epoch's tree "
                                "with the later epochs' nodes and means (default 0: none)"),
    "--max-depth": ("max_depth", int, "most levels of the tree (the root is level 1)"),
    "--births-per-pass": ("births_per_pass", int, "nodes that may each get a child after a pass"),
    "--batches-per-partition": ("batches_per_partition", int, "batches (Spark jobs) per pass"),
    "--min-count": ("min_count", int, "drop words seen fewer times (--format text)"),
    "--max-df": ("max_df", float, "drop words in more than this fraction of documents (--format text)"),
    "--stop-words": ("stop_words", _stop_words, "'english' (gensim's list), a file of words, or '' for none "
                                                "(--format text)"),
    "--max-vocab": ("max_vocab", int, "keep at most this many words (--format text)"),
    "--seed": ("seed", int, "seed of the births"),
}
#: the options that shape a vocabulary DNT builds itself: meaningless with --format pnas's --vocab
_VOCABULARY_OPTIONS = ("min_count", "max_df", "stop_words", "max_vocab")


def dnt_defaults() -> dict:
    """DNT's parameter defaults, from its signature."""
    from .dnt.estimator import DNT

    return estimator_defaults(DNT)


def _dnt_parser(sub):
    p = sub.add_parser("dnt", help="grow a tree of topics (dependent nonparametric trees, memoized VI)",
                       description="Grow a tree of topics (a DNT) on a text file with one document per line, "
                                   "or on a .dat file of bags of words (--format pnas). Unset options take "
                                   "DNT's defaults.")
    p.add_argument("--input", required=True, nargs="+",
                   help="--format text: a text file (or directory / glob Spark reads), one document per line; "
                        "--format pnas: a .dat file. Several: one epoch each, in order (a tree per epoch)")
    p.add_argument("--epoch-column", type=int, default=None,
                   help="--format text: lines are tab-separated and this column (from 0) is the document's epoch; "
                        "the other columns are its text (a tree per epoch, epochs in sorted order)")
    p.add_argument("--output", required=True, help="directory for tree.txt, tree.json, tree.png and model")
    p.add_argument("--format", choices=("text", "pnas"), default="text",
                   help="text: one document per line (default); pnas: lines 'N id count id count ...' after an "
                        "optional document count, word ids into --vocab")
    p.add_argument("--vocab", default=None, help="--format pnas: the vocabulary, one word per line (line i is id i)")
    p.add_argument("--heldout", default=None, nargs="+",
                   help="documents in the --format of --input, scored after the fit (over epochs: one file per "
                        "--input, or one file with the --epoch-column)")
    _add_estimator_options(p, _DNT_OPTIONS, dnt_defaults())
    p.add_argument("--master", default=None, help="Spark master, e.g. spark://host:7077 (default: spark-submit's or "
                                               "spark-defaults.conf's, else local[*])")
    p.add_argument("--partitions", type=int, default=None, help="RDD partitions (shards); default Spark's")
    p.add_argument("--num-words", type=int, default=10, help="words shown per node (default 10)")
    p.add_argument("--quiet", action="store_true", help="no progress line, warnings only")
    return p


def report_option(args) -> dict:
    """The fit's server writes its dashboard as ``report.html`` (and ``report.json``) to ``--output``."""
    return {"report": os.path.join(args.output, "report.html")}


def dnt_options(args) -> dict:
    """The DNT parameters the command line sets: only those given (the rest keep its defaults)."""
    return {**_given_options(args, _DNT_OPTIONS), "progress": not args.quiet}


def _check_dnt_args(args) -> None:
    from .errors import ConfigurationError

    if args.format == "pnas":
        if not args.vocab:
            raise ConfigurationError("--format pnas needs --vocab, the vocabulary file of the word ids")
        given = ["--" + name.replace("_", "-") for name in _VOCABULARY_OPTIONS if getattr(args, name) is not None]
        if given:
            raise ConfigurationError(f"{', '.join(given)} shape a vocabulary built from text; --format pnas "
                                     "takes the one of --vocab")
    elif args.vocab:
        raise ConfigurationError("--vocab goes with --format pnas; --format text builds the vocabulary")
    if args.partitions is not None and args.partitions < 1:
        raise ConfigurationError(f"--partitions must be >= 1, got {args.partitions}")
    if args.epoch_column is not None:
        if args.format != "text" or len(args.input) > 1:
            raise ConfigurationError("--epoch-column reads the epochs from one text --input; with --format pnas "
                                     "(or several files) give one --input per epoch instead")
        if args.epoch_column < 0:
            raise ConfigurationError(f"--epoch-column must be >= 0, got {args.epoch_column}")
    if args.history is not None and len(args.input) == 1 and args.epoch_column is None:
        raise ConfigurationError("--history fits a tree per epoch: give one --input per epoch, or --epoch-column")
    if args.smooth and len(args.input) == 1 and args.epoch_column is None:
        raise ConfigurationError("--smooth refines a tree per epoch: give one --input per epoch, or --epoch-column")
    if args.heldout and len(args.heldout) > 1 and len(args.heldout) != len(args.input):
        raise ConfigurationError(f"--heldout: give one file per --input epoch ({len(args.input)}), got "
                                 f"{len(args.heldout)}")
    if args.num_words < 1:
        raise ConfigurationError(f"--num-words must be >= 1, got {args.num_words}")


def _read_bows(path: str, vocab_size: int) -> list:
    """The non-empty documents of a ``.dat`` file as bags of words ``[(word_id, count), ...]``."""
    from .datasets.pnas import read_dat

    indptr, indices, counts, _ = read_dat(path, vocab_size)
    bows = [list(zip(indices[a:b].tolist(), counts[a:b].tolist())) for a, b in zip(indptr[:-1], indptr[1:])]
    kept = [bow for bow in bows if bow]
    if len(kept) < len(bows):
        # empty titles have no direction on the sphere: the paper's pooled test set leaves them out too
        logging.getLogger("deepdist.cli").warning("%s: %d empty documents left out", path, len(bows) - len(kept))
    return kept


def _read_lines(path: str) -> list:
    """The token lists of a local text file's non-empty documents, one a line."""
    from .errors import CorpusError

    try:
        with open(path, encoding="utf-8") as f:
            return [tokens for tokens in map(_tokenize, f) if tokens]
    except (OSError, UnicodeDecodeError) as err:
        raise CorpusError(f"{path}: cannot read the held-out documents ({err})") from err


def run_dnt(args) -> int:
    from pyspark.sql import SparkSession

    from .dnt import DNT
    from .session import spark_session

    _check_dnt_args(args)
    if len(args.input) > 1 or args.epoch_column is not None or args.history is not None:
        from .cli_timeline import run_dnt_over_time

        return run_dnt_over_time(args)
    (source,) = args.input
    held_path = args.heldout[0] if args.heldout else None
    id2word = heldout = None
    if args.format == "pnas":
        from .datasets.pnas import read_vocabulary

        id2word = read_vocabulary(args.vocab)
        bows = _read_bows(source, len(id2word))
        if held_path:
            heldout = _read_bows(held_path, len(id2word))
    elif held_path:
        heldout = _read_lines(held_path)
    if held_path and not heldout:
        from .errors import CorpusError

        raise CorpusError(f"{held_path}: no held-out document has a word")
    # a session someone else started (a notebook, a test) is theirs to stop
    owned = SparkSession.getActiveSession() is None
    spark = spark_session("deepdist dnt", args.master)
    try:
        sc = spark.sparkContext
        sc.setLogLevel("WARN")
        if args.format == "pnas":
            docs = sc.parallelize(bows, args.partitions) if args.partitions else sc.parallelize(bows)
        else:
            docs = _text_documents(sc, source, args.partitions)
        os.makedirs(args.output, exist_ok=True)
        estimator = DNT(**dnt_options(args), server_options=report_option(args)).fit(docs, id2word=id2word)
    finally:
        if owned:
            spark.stop()
    model = estimator.model_
    scores = {}
    if heldout:
        scores = {"heldout_vmf": model.score(heldout, kind="vmf"), "heldout_paper": model.score(heldout, kind="paper")}
    write_tree(model, estimator.history_, scores, args.output, args.num_words)
    model.save(os.path.join(args.output, "model"))
    elbo = _final_elbo(estimator.history_)
    held = "".join(f", held-out {kind[8:]} {value:.6g}" for kind, value in scores.items())
    print(f"{model.n_nodes_} nodes, depth {int(model.depth_.max())}, ELBO {elbo:.8g}{held}; "
          f"written to {args.output}")
    return 0


def _text_documents(sc, source: str, partitions, parse=None):
    """The documents of a text file (directory, glob) Spark reads, one a line: its token list, or
    what ``parse`` makes of the line; lines that give an empty one are left out."""
    lines = sc.textFile(source, partitions) if partitions else sc.textFile(source)
    docs = lines.map(parse or _tokenize).filter(bool)
    return docs.repartition(partitions) if partitions else docs


def _final_elbo(history) -> float:
    """The bound of the fitted tree: after the last pass's moves if it made any."""
    if not history:
        return float("nan")
    last = history[-1]
    return float(last.get("elbo_after_moves", last.get("elbo", float("nan"))))


def write_tree(model, history, scores: dict, output: str, num_words: int) -> None:
    """``tree.txt`` (the tree, one node a line), ``tree.json`` and ``tree.png``."""
    from .lda.gibbs_model import plain

    with open(os.path.join(output, "tree.txt"), "w", encoding="utf-8") as f:
        f.write(model.show_tree(num_words=num_words).rstrip("\n") + "\n")
    with open(os.path.join(output, "tree.json"), "w", encoding="utf-8") as f:
        json.dump(plain({"n_nodes": model.n_nodes_, "depth": int(model.depth_.max()), "n_words": model.n_words_,
                         "beta": model.beta, "elbo": _final_elbo(history), **scores,
                         "tree": model.to_json(num_words=num_words), "history": history}), f, indent=1)
    figure = model.plot_tree(num_words=min(num_words, 3))
    figure.savefig(os.path.join(output, "tree.png"), dpi=100)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="deepdist", description="deepdist: distributed training on Spark")
    sub = parser.add_subparsers(dest="command", required=True)
    _lda_parser(sub)
    _dnt_parser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    from .errors import DeepDistError

    if args.command == "lda":
        try:
            return run_lda(args)
        except DeepDistError as err:  # one actionable line, not a stack through Py4J
            parser.exit(2, f"deepdist lda: error: {err}\n")
    if args.command == "dnt":
        try:
            return run_dnt(args)
        except DeepDistError as err:
            parser.exit(2, f"deepdist dnt: error: {err}\n")
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover
    return 2


if __name__ == "__main__":
    sys.exit(main())
