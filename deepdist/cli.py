"""The ``deepdist`` command line: ``deepdist lda --input docs.txt --topics 100 --output out/``.

``deepdist lda`` trains :class:`deepdist.lda.GibbsLDA` on a text file (one document per line,
tokenised like gensim's ``simple_preprocess``: lower case, alphabetic tokens of 2-15
characters) and writes to ``--output``:

- ``topics.txt``: each topic's top words, one topic per line, largest topics first;
- ``topics.json``: the same with probabilities, plus α, β and the training history;
- ``model``: the saved :class:`~deepdist.lda.GibbsLDAModel`, one file (``GibbsLDAModel.load``).

Options left unset take :class:`~deepdist.lda.GibbsLDA`'s defaults (``deepdist lda --help``
shows them).
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


def gibbs_defaults() -> dict:
    """GibbsLDA's parameter defaults, from its signature."""
    import inspect

    from .lda.gibbs import GibbsLDA

    return {name: p.default for name, p in inspect.signature(GibbsLDA.__init__).parameters.items()
            if p.kind is p.KEYWORD_ONLY}


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
    defaults = gibbs_defaults()
    for flag, (name, kind, text) in _GIBBS_OPTIONS.items():
        default = defaults[name]
        shown = "none" if default in ((), None) else default
        p.add_argument(flag, dest=name, type=kind, default=None,
                       help=text if "default" in text else f"{text} (default {shown})")
    p.add_argument("--iterations", dest="epochs", type=int, action=_RenamedFlag, new_flag="--epochs",
                   help=argparse.SUPPRESS)
    p.add_argument("--master", default=None, help="Spark master, e.g. spark://host:7077 (default: spark-submit's or "
                                               "spark-defaults.conf's, else local[*])")
    p.add_argument("--partitions", type=int, default=None, help="RDD partitions (shards); default Spark's")
    p.add_argument("--num-words", type=int, default=10, help="words shown per topic (default 10)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress line, warnings only")
    return p


def gibbs_options(args) -> dict:
    """The GibbsLDA parameters the command line sets: only those given (the rest keep its defaults)."""
    options = {name: getattr(args, name) for name, _, _ in _GIBBS_OPTIONS.values()
               if getattr(args, name) is not None}
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
        model = GibbsLDA(**gibbs_options(args)).fit(docs).model_
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="deepdist", description="deepdist: distributed training on Spark")
    sub = parser.add_subparsers(dest="command", required=True)
    _lda_parser(sub)
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
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover
    return 2


if __name__ == "__main__":
    sys.exit(main())
