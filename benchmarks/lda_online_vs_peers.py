"""Online variational LDA side by side: gensim LdaModel, LdaMulticore(workers=2), Spark MLlib, deepdist.

Every tool trains on the same documents with the same number of passes and the same chunk
(mini-batch) size, in one process and one run, on two corpora:

- ``synthetic``: 20,000 documents of Poisson(100) tokens drawn from LDA (V=5000, 50 true
  topics, α=0.1, β=0.01; ``deepdist.lda.synthetic``), 10% held out; K=50.
- ``wiki``: the articles of gensim's Wikipedia test dump, tokenised by ``WikiCorpus`` rules,
  without gensim's STOPWORDS, vocabulary by :func:`deepdist.vocabulary.build_vocabulary`
  (gensim's ``Dictionary(docs).filter_extremes(3, 0.5, None)``, ids included);
  every 10th article held out; K=20.

For each tool the table gives:

- train wall seconds. Spark session start, RDD / DataFrame build and caching are excluded.
  deepdist's time includes starting its server and its reachability check.
- held-out perplexity by document completion (``deepdist.lda.evaluate``): θ is folded in by EM
  on the first half of each held-out document, with the tool's topics and α fixed, and the
  second half is scored. The same evaluator serves all tools.
- gensim's own held-out bound (``LdaModel.log_perplexity``) as exp(−bound) for gensim-type
  models, and topic recovery on the synthetic corpus (mean best cosine with the true topics).

Online VB depends on the order of the documents (on the 96 wiki articles, gensim's own held-out
perplexity moves by ~5% from one order to another), so each seed shuffles the training documents,
the same way for every tool, and seeds the tools; the table shows means over seeds.

The ratio lines compare deepdist with each peer: speed-up = peer seconds / deepdist seconds,
and perplexity ratio = deepdist / peer. On local[2] deepdist blends one M-step per round of
2 chunks (one per partition), as LdaMulticore(workers=2) does; single-process LdaModel blends
one per chunk. Fewer, larger M-steps give lower perplexity after the same passes, so the line
marked "same M-step schedule" is the like-for-like comparison. The traffic line gives the bytes deepdist pushed per
chunk against a dense K × V float32 matrix (what gensim's distributed mode and LdaMulticore
pickle per chunk).

Spark MLlib runs ``pyspark.ml.clustering.LDA(optimizer="online", learningOffset=10)``. Its default
offset of 1024 leaves the topics near useless on these corpora (see BASELINES.md). It runs with
``subsamplingRate = chunksize / documents`` and ``maxIter = passes / subsamplingRate``, so it
sees the same number of documents per step and in total.

    python benchmarks/lda_online_vs_peers.py                       # the full run (~20 min)
    python benchmarks/lda_online_vs_peers.py --docs 2000 --passes 2 --corpora synthetic   # quick
"""

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("SPARK_CONF_DIR", str(ROOT / "spark-conf"))
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)

from deepdist.lda.evaluate import completion_perplexity  # noqa: E402
from deepdist.lda.online import OnlineLDA  # noqa: E402
from deepdist.lda.synthetic import synthetic_lda_corpus, topic_recovery  # noqa: E402
from deepdist.vocabulary import build_vocabulary  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpora", nargs="+", default=["synthetic", "wiki"], choices=["synthetic", "wiki"])
    p.add_argument("--docs", type=int, default=20000, help="synthetic documents")
    p.add_argument("--vocab", type=int, default=5000)
    p.add_argument("--doc-length", type=float, default=100)
    p.add_argument("--topics", type=int, default=50, help="K on the synthetic corpus (= true topics)")
    p.add_argument("--wiki-topics", type=int, default=20)
    p.add_argument("--passes", type=int, default=5, help="passes on the synthetic corpus")
    p.add_argument("--chunksize", type=int, default=2000, help="chunk size on the synthetic corpus")
    p.add_argument("--wiki-passes", type=int, default=10)
    p.add_argument("--wiki-chunksize", type=int, default=10)
    p.add_argument("--partitions", type=int, default=2, help="RDD partitions of the deepdist input")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1],
                   help="synthetic corpus: one run per seed (document order and random state); means shown")
    p.add_argument("--wiki-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    p.add_argument("--max-staleness", type=int, default=2, help="deepdist's OnlineLDA max_staleness")
    p.add_argument("--tools", nargs="+", default=["gensim", "multicore", "mllib", "deepdist"],
                   choices=["gensim", "multicore", "mllib", "deepdist"])
    return p.parse_args(argv)


# -- corpora ---------------------------------------------------------------------------------------
def _bow(ids):
    words, counts = np.unique(ids, return_counts=True)
    return [(int(w), int(c)) for w, c in zip(words, counts)]


def synthetic_corpus(args):
    docs, topic_word = synthetic_lda_corpus(args.docs, args.vocab, args.topics, args.doc_length,
                                            alpha=0.1, beta=0.01, seed=2026, poisson_lengths=True)
    cut = int(0.9 * len(docs))
    return {"name": "synthetic", "id2word": {i: str(i) for i in range(args.vocab)},
            "train": [_bow(d) for d in docs[:cut]], "held_out": [np.asarray(d) for d in docs[cut:]],
            "true_topics": topic_word, "topics": args.topics, "passes": args.passes,
            "chunksize": args.chunksize}


def wiki_tokens():
    from gensim.corpora.wikicorpus import WikiCorpus
    from gensim.parsing.preprocessing import STOPWORDS
    from gensim.test.utils import datapath

    path = datapath("enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
    wiki = WikiCorpus(path, dictionary={}, processes=1)
    return [[t for t in tokens if t not in STOPWORDS] for tokens in wiki.get_texts()]


def wiki_corpus(args, sc, texts):
    train_texts = [t for i, t in enumerate(texts) if i % 10 != 9]
    held_texts = [t for i, t in enumerate(texts) if i % 10 == 9]
    dictionary = build_vocabulary(sc.parallelize(train_texts, 2), min_df=3, max_df=0.5).to_dictionary(order="first_seen")
    held_out = [np.array([dictionary.token2id[t] for t in text if t in dictionary.token2id])
                for text in held_texts]
    return {"name": "wiki", "id2word": dictionary, "train": [dictionary.doc2bow(t) for t in train_texts],
            "held_out": held_out, "true_topics": None, "topics": args.wiki_topics,
            "passes": args.wiki_passes, "chunksize": args.wiki_chunksize}


# -- tools -------------------------------------------------------------------------------------------
def run_gensim(corpus, seed, multicore):
    from gensim.models import LdaModel, LdaMulticore

    options = dict(num_topics=corpus["topics"], id2word=corpus["id2word"], passes=corpus["passes"],
                   chunksize=corpus["chunksize"], random_state=seed, eval_every=None)
    started = time.perf_counter()
    if multicore:
        model = LdaMulticore(corpus["train"], workers=2, **options)
    else:
        model = LdaModel(corpus["train"], **options)
    return model, time.perf_counter() - started, {}


def mllib_frame(spark, corpus):
    from pyspark.ml.linalg import Vectors

    num_terms = len(corpus["id2word"])
    rows = [(i, Vectors.sparse(num_terms, [w for w, _ in doc], [float(c) for _, c in doc]))
            for i, doc in enumerate(corpus["train"])]
    frame = spark.createDataFrame(rows, ["id", "features"]).cache()
    frame.count()
    return frame


def run_mllib(frame, corpus, seed):
    from pyspark.ml.clustering import LDA

    rate = min(1.0, corpus["chunksize"] / len(corpus["train"]))
    iterations = max(1, round(corpus["passes"] / rate))
    started = time.perf_counter()
    model = LDA(k=corpus["topics"], maxIter=iterations, optimizer="online", learningOffset=10.0,
                subsamplingRate=rate, seed=seed).fit(frame)
    topics = model.topicsMatrix().toArray().T  # (K, V) variational λ
    alpha = model.estimatedDocConcentration().toArray()
    seconds = time.perf_counter() - started
    return (topics, alpha), seconds, {"maxIter": iterations, "subsamplingRate": round(rate, 4)}


def run_deepdist(rdd, corpus, seed, max_staleness=2):
    lda = OnlineLDA(num_topics=corpus["topics"], id2word=corpus["id2word"], epochs=corpus["passes"],
                    chunksize=corpus["chunksize"], seed=seed, max_staleness=max_staleness, progress=False)
    started = time.perf_counter()
    model = lda.fit(rdd).model_
    seconds = time.perf_counter() - started
    chunks = sum(h["chunks"] for h in lda.history_)
    extra = {
        "bytes_pushed_per_chunk": sum(h["bytes_pushed"] for h in lda.history_) / chunks,
        "bytes_pulled_per_chunk": lda.status_["bytes_out"] / chunks,
        "dense_bytes_per_chunk": lda.history_[0]["dense_bytes_per_chunk"],
        "staleness": lda.status_["staleness_histogram"],
        "pass_seconds": [round(h["seconds"], 2) for h in lda.history_],
        "wait_seconds": round(sum(h["wait_seconds"] for h in lda.history_), 2),
    }
    return model, seconds, extra


def evaluate(result, corpus):
    model = result
    if isinstance(model, tuple):  # MLlib: (λ, α)
        topics, alpha = model
        bound = None
    else:
        topics, alpha = model.get_topics(), model.alpha
        # as gensim estimates it while training: the held-out documents stand for the corpus
        held_bow = [_bow(doc) for doc in corpus["held_out"] if len(doc)]
        bound = float(np.exp(-model.log_perplexity(held_bow, total_docs=len(corpus["train"]))))
    scores = {"perplexity": completion_perplexity(corpus["held_out"], topics, alpha), "bound": bound}
    if corpus["true_topics"] is not None:
        scores["recovery"] = topic_recovery(corpus["true_topics"], topics)
    return scores


# -- the run -----------------------------------------------------------------------------------------
LABELS = {"gensim": "gensim LdaModel", "multicore": "gensim LdaMulticore(workers=2)",
          "mllib": "Spark MLlib LDA online (learningOffset=10)", "deepdist": "deepdist OnlineLDA local[2]"}


def run_corpus(corpus, args, spark):
    sc = spark.sparkContext
    tokens = sum(c for doc in corpus["train"] for _, c in doc)
    print(f"\n## {corpus['name']}: {len(corpus['train'])} training documents, {tokens:,} tokens, "
          f"V={len(corpus['id2word'])}, K={corpus['topics']}, passes={corpus['passes']}, "
          f"chunksize={corpus['chunksize']}; held out {len(corpus['held_out'])} documents, "
          f"{sum(len(d) for d in corpus['held_out']):,} tokens", flush=True)
    frame = mllib_frame(spark, corpus) if "mllib" in args.tools else None
    rows = {tool: [] for tool in args.tools}
    original = corpus
    for seed in (args.seeds if corpus["name"] == "synthetic" else args.wiki_seeds):
        # online VB depends on the order of the documents: each seed shuffles them, the same for all
        order = np.random.default_rng(seed).permutation(len(original["train"]))
        corpus = dict(original, train=[original["train"][i] for i in order])
        rdd = sc.parallelize(corpus["train"], args.partitions).cache()
        rdd.count()
        for tool in args.tools:
            if tool in ("gensim", "multicore"):
                model, seconds, extra = run_gensim(corpus, seed, tool == "multicore")
            elif tool == "mllib":
                model, seconds, extra = run_mllib(frame, corpus, seed)
            else:
                model, seconds, extra = run_deepdist(rdd, corpus, seed, args.max_staleness)
            scores = evaluate(model, corpus)
            rows[tool].append({"seconds": seconds, **scores, **extra})
            print(f"  seed {seed} {tool:9s} {seconds:7.2f}s  perplexity {scores['perplexity']:.1f}  "
                  f"{extra.get('pass_seconds', extra)}", flush=True)
        rdd.unpersist()
    if frame is not None:
        frame.unpersist()
    report(corpus, rows, tokens)
    return rows


def _mean(rows, key):
    values = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(values)) if values else None


def report(corpus, rows, tokens):
    print()
    print(f"means over {len(next(iter(rows.values())))} runs (seeds); ± is the standard deviation")
    header = "| tool | train s | token-passes/s | held-out perplexity (completion) | exp(-bound) |"
    line = "|---|---|---|---|---|"
    if corpus["true_topics"] is not None:
        header += " topic recovery |"
        line += "---|"
    print(header)
    print(line)
    for tool, runs in rows.items():
        seconds = _mean(runs, "seconds")
        bound = _mean(runs, "bound")
        cells = [LABELS[tool], f"{seconds:.2f}", f"{tokens * corpus['passes'] / seconds:,.0f}",
                 f"{_mean(runs, 'perplexity'):.1f} ± {np.std([r['perplexity'] for r in runs]):.1f}",
                 "n/a" if bound is None else f"{bound:.1f}"]
        if corpus["true_topics"] is not None:
            cells.append(f"{_mean(runs, 'recovery'):.3f}")
        print("| " + " | ".join(cells) + " |")
    if "deepdist" not in rows:
        return
    ours = rows["deepdist"]
    print()
    for tool, runs in rows.items():
        if tool == "deepdist":
            continue
        speed = _mean(runs, "seconds") / _mean(ours, "seconds")
        ratio = _mean(ours, "perplexity") / _mean(runs, "perplexity")
        print(f"deepdist vs {LABELS[tool]}: speed-up {speed:.2f}x, held-out perplexity ratio {ratio:.4f} "
              f"({100 * (ratio - 1):+.2f}%){'  <- same M-step schedule' if tool == 'multicore' else ''}")
    pushed, dense = _mean(ours, "bytes_pushed_per_chunk"), _mean(ours, "dense_bytes_per_chunk")
    print(f"traffic per chunk: pushed {pushed / 1e3:,.1f} kB column-sparse vs {dense / 1e3:,.1f} kB dense "
          f"K x V float32 ({pushed / dense:.1%}); pulled {_mean(ours, 'bytes_pulled_per_chunk') / 1e3:,.1f} kB "
          f"(rows of the chunk's words + K topic sums); staleness histogram {ours[-1]['staleness']}")


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from pyspark.sql import SparkSession

    print(f"# lda_online_vs_peers: load average {os.getloadavg()[0]:.1f} at start, {os.cpu_count()} cores, "
          f"seeds {args.seeds} (synthetic) {args.wiki_seeds} (wiki)")
    texts = wiki_tokens() if "wiki" in args.corpora else None
    started = time.perf_counter()
    spark = (SparkSession.builder.master("local[2]").appName("lda_online_vs_peers")
             .config("spark.ui.enabled", "false").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    print(f"Spark session start {time.perf_counter() - started:.1f}s (excluded)")
    try:
        for name in args.corpora:
            corpus = synthetic_corpus(args) if name == "synthetic" else wiki_corpus(args, spark.sparkContext, texts)
            run_corpus(corpus, args, spark)
    finally:
        spark.stop()
    print(f"\nload average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
