"""Train word2vec on a Wikipedia dump with deepdist on Spark, evaluate it, save the vectors.

With no arguments it trains on the small English dump gensim ships, on local[*]:

    python examples/word2vec_wikipedia.py

On a cluster (the dump on storage every executor can read):

    spark-submit --master spark://host:7077 --py-files deepdist.zip examples/word2vec_wikipedia.py \\
        --dump hdfs:///data/enwiki-latest-pages-articles.xml.bz2 --partitions 64 --epochs 5 --output out/

It writes OUTPUT/vectors.kv (gensim KeyedVectors.save), OUTPUT/vectors.txt (word2vec
text format) and OUTPUT/summary.json (metrics, settings, timings), and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time

log = logging.getLogger("word2vec_wikipedia")

SHIPPED_DUMP = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dump", default=None,
                        help="a *-pages-articles*.xml.bz2 dump, or a directory of text files with one article "
                             "per line (default: the English test dump shipped with gensim)")
    parser.add_argument("--master", default=None,
                        help="Spark master (default: spark-submit's, else local[*])")
    parser.add_argument("--partitions", type=int, default=None, help="training partitions (default: one per core)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--dim", type=int, default=100, help="vector size")
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--min-count", type=int, default=5)
    arch = parser.add_mutually_exclusive_group()
    arch.add_argument("--sg", dest="sg", action="store_true", default=True, help="skip-gram")
    arch.add_argument("--cbow", dest="sg", action="store_false", help="CBOW")
    parser.add_argument("--negative", type=int, default=5, help="negative samples (0 with --hs)")
    parser.add_argument("--hs", action="store_true", help="hierarchical softmax (sets --negative 0)")
    parser.add_argument("--adagrad", action="store_true", help="AdaGrad with per-row accumulators on the driver")
    parser.add_argument("--adagrad-lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--servers", type=int, default=1,
                        help="model servers: the vectors split by rows over this many (DeepDist(servers=N))")
    parser.add_argument("--output", default="word2vec-output", help="output directory")
    parser.add_argument("--max-articles", type=int, default=None, help="use only the first N articles")
    parser.add_argument("--heldout", type=float, default=0.1,
                        help="share of articles kept out of training for the held-out loss")
    parser.add_argument("--eval-articles", type=int, default=500,
                        help="held-out articles brought to the driver for the loss (a sample on big dumps)")
    parser.add_argument("--sentence-length", type=int, default=1000, help="split articles into sentences this long")
    parser.add_argument("--sync-epochs", action="store_true",
                        help="one Spark job per epoch (default: one job for all epochs when the partitions "
                             "fit on the executor cores)")
    parser.add_argument("--training-loss", action="store_true",
                        help="tasks report gensim's running training loss (a curve in report.html; a little slower)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    if args.hs:
        args.negative = 0
    return args


class SparkProgress:
    """Shows Spark's task progress on stderr while a block runs (for the parsing passes)."""

    def __init__(self, sc, label: str, enabled: bool = True):
        self.sc, self.label, self.enabled = sc, label, enabled
        self._stop = threading.Event()

    def _line(self) -> str:
        tracker = self.sc.statusTracker()
        done = total = 0
        for stage in tracker.getActiveStageIds():
            info = tracker.getStageInfo(stage)
            if info is not None:
                done, total = done + info.numCompletedTasks, total + info.numTasks
        return f"{self.label}: tasks {done}/{total} | {time.monotonic() - self._start:.1f}s"

    def _loop(self):
        while not self._stop.wait(1.0):
            sys.stderr.write("\r" + self._line().ljust(60))
            sys.stderr.flush()

    def __enter__(self):
        self._start = time.monotonic()
        if self.enabled:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self.enabled:
            self._thread.join()
            sys.stderr.write("\r" + f"{self.label}: done in {time.monotonic() - self._start:.1f}s".ljust(60) + "\n")
        return False


def spark_session(master: str | None):
    from deepdist.session import spark_session as session

    # a plain `python examples/...` outside `make` still gets the project's quiet Spark settings
    here = os.path.dirname(os.path.abspath(__file__))
    os.environ.setdefault("SPARK_CONF_DIR", os.path.join(os.path.dirname(here), "spark-conf"))
    return session("deepdist-word2vec-wikipedia", master)


def summary_table(summary: dict) -> str:
    m, t = summary["metrics"], summary["timings"]
    rows = [
        ("corpus", f"{summary['corpus']['articles']:,} articles, {summary['corpus']['words']:,} words/epoch, "
                   f"vocabulary {summary['corpus']['vocabulary']:,}"),
        ("model", f"{'skip-gram' if summary['settings']['sg'] else 'CBOW'}, "
                  f"{'hier. softmax' if summary['settings']['hs'] else str(summary['settings']['negative']) + ' negatives'}, "
                  f"dim {summary['settings']['dim']}, window {summary['settings']['window']}, "
                  f"{summary['settings']['epochs']} epochs, {summary['settings']['descent']}"),
        ("analogy accuracy", f"{m['analogy']['score']:.2%} ({m['analogy']['correct']}/{m['analogy']['covered']}; "
                             f"coverage {m['analogy']['coverage']:.1%}, top 30,000 words)"),
        ("wordsim353 Spearman", f"{m['wordsim']['spearman']:.3f} (pairs out of vocabulary {m['wordsim']['oov']:.0%})"),
        ("held-out SGNS loss", "n/a (hierarchical softmax)" if m["heldout_loss"] is None
         else f"{m['heldout_loss']:.3f} per word (untrained {m['heldout_loss_untrained']:.3f})"),
        ("read + vocabulary", f"{t['read']:.1f}s + {t['vocabulary']:.1f}s"),
        ("training", f"{t['training']:.1f}s, {summary['words_per_sec']:,.0f} words/s"),
        ("traffic per epoch", f"pulled {summary['traffic']['pulled_mb']:.1f} MB, pushed "
                              f"{summary['traffic']['pushed_mb']:.1f} MB (whole matrices: "
                              f"{summary['traffic']['dense_pulled_mb']:.1f} / {summary['traffic']['dense_pushed_mb']:.1f} MB)"),
        ("saved", summary["output"]),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("py4j", "gensim"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from gensim.models import Word2Vec
    from gensim.test.utils import datapath

    from deepdist.datasets.wikipedia import read_articles, sentences, split_heldout
    from deepdist.word2vec import DistributedWord2Vec
    from deepdist.word2vec.evaluate import HeldoutSGNSLoss, analogy, wordsim

    dump = args.dump or datapath(SHIPPED_DUMP)
    spark = spark_session(args.master)
    sc = spark.sparkContext
    sc.setLogLevel("ERROR")
    started = time.perf_counter()
    with SparkProgress(sc, "parsing articles", enabled=not args.quiet):
        articles = read_articles(spark, dump, max_articles=args.max_articles)
        train_articles, heldout_articles = split_heldout(articles, args.heldout, seed=args.seed)
        train = sentences(train_articles, args.sentence_length).cache()
        n_articles = train_articles.count()
        heldout = [tokens for _, tokens in heldout_articles.take(args.eval_articles)]
    read_seconds = time.perf_counter() - started
    log.info("%d training articles, %d held-out articles for the loss", n_articles, len(heldout))

    estimator = DistributedWord2Vec(
        vector_size=args.dim, window=args.window, min_count=args.min_count, sg=int(args.sg), hs=int(args.hs),
        negative=args.negative, epochs=args.epochs, seed=args.seed, partitions=args.partitions,
        descent="adagrad" if args.adagrad else "add", adagrad_lr=args.adagrad_lr,
        sync_epochs=True if args.sync_epochs else None, progress=not args.quiet, spark=spark,
        compute_loss=args.training_loss,
        # the training dashboard as a report, next to the vectors (deepdist.dashboard)
        server_options={"report": os.path.join(args.output, "report.html"), "servers": args.servers})
    model = estimator.fit(train).model_
    wv = model.wv
    train.unpersist()

    loss = untrained_loss = None
    if not args.hs and heldout:
        counts = {w: wv.get_vecattr(w, "count") for w in wv.index_to_key}
        evaluator = HeldoutSGNSLoss(counts, heldout, window=args.window, negative=args.negative)
        untrained = Word2Vec(vector_size=args.dim, min_count=args.min_count, seed=args.seed)
        untrained.build_vocab_from_freq(counts)
        loss, untrained_loss = evaluator(model), evaluator(untrained)

    history = estimator.history_
    mean = lambda key: sum(r[key] for r in history) / len(history)  # noqa: E731
    summary = {
        "dump": dump,
        "output": os.path.abspath(args.output),
        "settings": {"master": sc.master, "partitions": args.partitions, "epochs": args.epochs, "dim": args.dim,
                     "window": args.window, "min_count": args.min_count, "sg": int(args.sg), "hs": int(args.hs),
                     "negative": args.negative, "descent": "adagrad" if args.adagrad else "add",
                     "seed": args.seed, "max_articles": args.max_articles, "heldout": args.heldout,
                     "sentence_length": args.sentence_length, "sync_epochs": estimator.sync_epochs_},
        "corpus": {"articles": n_articles, "sentences": estimator.corpus_count_,
                   "words": estimator.corpus_words_, "vocabulary": len(wv)},
        "metrics": {"analogy": analogy(wv), "wordsim": wordsim(wv), "heldout_loss": loss,
                    "heldout_loss_untrained": untrained_loss},
        "timings": {"read": read_seconds, **estimator.timings_},
        "words_per_sec": estimator.corpus_words_ * args.epochs / estimator.timings_["training"],
        "traffic": {"pulled_mb": mean("bytes_pulled") / 1e6, "pushed_mb": mean("bytes_pushed") / 1e6,
                    "dense_pulled_mb": mean("dense_bytes_pulled") / 1e6,
                    "dense_pushed_mb": mean("dense_bytes_pushed") / 1e6},
        "history": history,
    }
    os.makedirs(args.output, exist_ok=True)
    wv.save(os.path.join(args.output, "vectors.kv"))
    wv.save_word2vec_format(os.path.join(args.output, "vectors.txt"))
    with open(os.path.join(args.output, "summary.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
    print("\nword2vec on Wikipedia with deepdist\n" + summary_table(summary), flush=True)
    spark.stop()
    return summary


if __name__ == "__main__":
    main()
