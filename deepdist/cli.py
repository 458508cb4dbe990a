"""The ``deepdist`` command line: ``deepdist lda --input docs.txt --topics 100 --output out/``.

``deepdist lda`` trains :class:`deepdist.lda.GibbsLDA` on a text file (one document per line,
tokenised like gensim's ``simple_preprocess``: lower case, alphabetic tokens of 2-15
characters) and writes to ``--output``:

- ``topics.txt``: each topic's top words, one topic per line, largest topics first;
- ``topics.json``: the same with probabilities, plus α, β and the training history;
- ``model/``: the saved :class:`~deepdist.lda.GibbsLDAModel` (``GibbsLDAModel.load``).
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


def _stop_words(spec: str | None):
    if not spec:
        return frozenset()
    if spec in ("english", "gensim"):
        from gensim.parsing.preprocessing import STOPWORDS

        return frozenset(STOPWORDS)
    with open(spec, encoding="utf-8") as f:
        return frozenset(w.strip().lower() for w in f.read().split() if w.strip())


def _lda_parser(sub):
    p = sub.add_parser("lda", help="train LDA by distributed collapsed Gibbs sampling (AD-LDA)",
                       description="Train LDA by distributed collapsed Gibbs sampling on a text file "
                                   "with one document per line.")
    p.add_argument("--input", required=True, help="text file (or directory / glob Spark reads), one document per line")
    p.add_argument("--output", required=True, help="directory for topics.txt, topics.json and model/")
    p.add_argument("--topics", type=int, default=100, help="number of topics K (default 100)")
    p.add_argument("--iterations", type=int, default=200, help="Gibbs sweeps (default 200)")
    p.add_argument("--alpha", type=float, default=0.1, help="symmetric document-topic prior (default 0.1)")
    p.add_argument("--beta", type=float, default=0.01, help="symmetric topic-word prior (default 0.01)")
    p.add_argument("--optimize-alpha-every", type=int, default=0, help="Minka updates of alpha every N jobs")
    p.add_argument("--master", default=None, help="Spark master, e.g. spark://host:7077 (default: spark-submit's or "
                                               "spark-defaults.conf's, else local[*])")
    p.add_argument("--partitions", type=int, default=None, help="RDD partitions (shards); default Spark's")
    p.add_argument("--sync-every", type=int, default=1, help="sweeps between pulls of fresh counts")
    p.add_argument("--burn-in-sweeps", type=int, default=20,
                   help="first sweeps that exchange counts several times a sweep (0: none)")
    p.add_argument("--burn-in-syncs", type=int, default=4, help="exchanges per burn-in sweep")
    p.add_argument("--sweeps-per-job", type=int, default=5, help="sweeps per Spark job (default 5)")
    p.add_argument("--min-count", type=int, default=5, help="drop words seen fewer times (default 5)")
    p.add_argument("--max-df", type=float, default=0.5, help="drop words in more than this fraction of documents")
    p.add_argument("--stop-words", default="english",
                   help="'english' (gensim's list), a file of words, or '' for none (default english)")
    p.add_argument("--max-vocab", type=int, default=None, help="keep at most this many words")
    p.add_argument("--hash-buckets", type=int, default=None, help="hash words into this many ids instead")
    p.add_argument("--num-words", type=int, default=10, help="words shown per topic (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=0, help="checkpoint every N jobs into OUTPUT/checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress line, warnings only")
    return p


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
        lda = GibbsLDA(num_topics=args.topics, alpha=args.alpha, beta=args.beta, iterations=args.iterations,
                       sync_every=args.sync_every, sweeps_per_job=args.sweeps_per_job, seed=args.seed,
                       burn_in_sweeps=args.burn_in_sweeps, burn_in_syncs=args.burn_in_syncs,
                       min_count=args.min_count, max_df=args.max_df, stop_words=_stop_words(args.stop_words),
                       max_vocab=args.max_vocab, hash_buckets=args.hash_buckets,
                       optimize_alpha_every=args.optimize_alpha_every,
                       checkpoint_dir=os.path.join(args.output, "checkpoints")
                       if args.checkpoint_every or args.resume else None,
                       checkpoint_every=args.checkpoint_every, resume=args.resume, progress=not args.quiet)
        model = lda.fit(docs)
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
