"""A driver program for ``spark-submit``: every deepdist entry point, on whatever master it is given.

    spark-submit --master spark://127.0.0.1:7077 tests/cluster_jobs.py --output results.json

Runs a plain ``dd.train`` (exact additive counts, and least squares by Downpour SGD; also on
sharded servers, with ``GibbsLDA`` and ``OnlineLDA`` among them), ``GibbsLDA`` and ``OnlineLDA`` on corpora planted from LDA's generative process, and
``DistributedWord2Vec`` on gensim's ``lee_background.cor`` and ``DNT`` on a corpus drawn from its own
model (with its server statistics checked against the memos after every pass); beside each it computes the
single-machine reference the quality is judged against, and writes the numbers, the
master and the executor processes that ran the tasks to ``--output``. tests/test_cluster.py
asserts on them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import time

import numpy as np

from deepdist import DeepDist, SGD
from deepdist.optim import add
from deepdist.session import spark_session


def _where(iterator):
    for _ in iterator:
        pass
    yield (socket.gethostname(), os.getpid(), sys.executable)


def executors_of(sc, partitions: int = 4) -> list:
    """The (host, pid, python) of the processes that run this context's tasks."""
    return sorted(set(sc.parallelize(range(partitions), partitions).mapPartitions(_where).collect()))


def job_train(sc) -> dict:
    data = np.arange(4000) % 50

    def count(model, batch):
        return {"counts": np.bincount(np.asarray(batch), minlength=50).astype(np.int64)}

    def add(model, update):
        model["counts"] += update["counts"]

    rng = np.random.default_rng(0)
    X = rng.normal(size=(4000, 10))
    w = rng.normal(size=10)
    y = X @ w + 0.1 * rng.normal(size=4000)
    best, *_ = np.linalg.lstsq(X, y, rcond=None)

    def gradient(model, batch):
        Xb = np.stack([x for x, _ in batch])
        yb = np.array([t for _, t in batch])
        return {"w": Xb.T @ (Xb @ model["w"] - yb) / len(batch)}

    with DeepDist({"counts": np.zeros(50, np.int64)}, spark=sc, progress=False) as dd:
        dd.train(sc.parallelize(data.tolist(), 4), count, add, epochs=2, batch_size=100, additive=True)
        counts, url = dd.model["counts"].copy(), dd.url
    with DeepDist({"w": np.zeros(10)}, spark=sc, progress=False) as dd:
        dd.train(sc.parallelize(list(zip(X, y)), 4), gradient, SGD(lr=0.1), epochs=4, batch_size=100)
        trained = dd.model["w"]

    def loss(v):
        r = X @ v - y
        return float(r @ r) / len(y)

    return {"counts_exact": bool(np.array_equal(counts, 2 * np.bincount(data, minlength=50))), "url": url,
            "loss": loss(trained), "optimum": loss(best)}


def _sparse_count(model, batch):
    from pyspark import TaskContext

    from deepdist import SparseRows

    task = TaskContext.get()
    _sparse_count.pushed = getattr(_sparse_count, "pushed", 0) + 1
    if task.partitionId() == 1 and task.attemptNumber() == 0 and _sparse_count.pushed > 2:
        raise RuntimeError("injected failure after two pushes (the retry must leave the counts exact)")
    rows, counts = np.unique(np.asarray(batch), return_counts=True)
    return {"counts": SparseRows(rows, counts.astype(np.int64), model["counts"].shape)}


def job_shards(sc) -> dict:
    """DeepDist(servers=N): counts split over 2 shards with a task failing once, and a table of 2,000
    rows trained through row pulls on 1, 2 and 3 shards (one partition: the same steps)."""
    from pyspark import cloudpickle

    import shard_hooks

    cloudpickle.register_pickle_by_value(shard_hooks)   # the executors have no tests/ directory
    rng = np.random.default_rng(5)
    words = rng.integers(0, 3000, size=20000)
    with DeepDist({"counts": np.zeros(3000, np.int64)}, spark=sc, progress=False, servers=2) as dd:
        dd.train(sc.parallelize(words.tolist(), 4), _sparse_count, add,
                 epochs=2, batch_size=500, additive=True)
        counts, urls, status = dd.model["counts"].copy(), list(dd._urls), dd.status()
    examples = shard_hooks.pairs_of(rng.normal(size=(2000, 4)) / 2, 4000, rng)
    start = rng.normal(size=(2000, 4)) / 2
    tables = []
    for servers in (1, 2, 3):
        with DeepDist({"table": start.copy()}, spark=sc, progress=False, servers=servers) as dd:
            dd.train(sc.parallelize(examples, 1), shard_hooks.pair_gradient, SGD(lr=0.05), epochs=2,
                     batch_size=20, rows=shard_hooks.pair_rows)
            tables.append(dd.model["table"])
    return {"counts_exact": bool(np.array_equal(counts, 2 * np.bincount(words, minlength=3000))), "urls": urls,
            "applied": [s["updates_applied"] for s in status["shards"]],
            "same_tables": all(bool(np.array_equal(tables[0], t)) for t in tables[1:]),
            "table_changed": bool(not np.array_equal(tables[0], start)), "gibbs": _gibbs_on_shards(sc),
            "online": _online_on_shards(sc)}


def _online_on_shards(sc) -> dict:
    """OnlineLDA with λ split over 2 shards against the same fit on one server."""
    from deepdist.lda import OnlineLDA
    from deepdist.lda.evaluate import completion_perplexity
    from deepdist.lda.synthetic import synthetic_lda_corpus, topic_recovery

    V, K = 1500, 8
    docs, topic_word = synthetic_lda_corpus(1100, V, K, 60, alpha=0.1, beta=0.01, seed=6, poisson_lengths=True)
    bow = [[(int(w), int(c)) for w, c in zip(*np.unique(doc, return_counts=True))] for doc in docs]
    rdd = sc.parallelize(bow[:960], 2).cache()
    fits = [OnlineLDA(num_topics=K, id2word={i: str(i) for i in range(V)}, epochs=3, chunksize=80, seed=4,
                      max_staleness=0, progress=False, server_options={"servers": n}).fit(rdd) for n in (1, 2)]
    rdd.unpersist()
    one, two = (f.model_ for f in fits)
    return {"recovery": float(topic_recovery(topic_word, two.get_topics())),
            "perplexity": completion_perplexity(docs[960:], two.get_topics(), two.alpha),
            "one_server_perplexity": completion_perplexity(docs[960:], one.get_topics(), one.alpha),
            "applied": [s["updates_applied"] for s in fits[1].status_["shards"]]}


def _gibbs_on_shards(sc) -> dict:
    """GibbsLDA with its count table split over 2 shards (1,500 word rows: more than stay whole)."""
    from deepdist.lda import GibbsLDA
    from deepdist.lda.synthetic import synthetic_lda_corpus, topic_recovery

    V, K = 1500, 8
    docs, phi = synthetic_lda_corpus(1500, V, K, 80, alpha=0.1, beta=0.01, seed=4)
    lda = GibbsLDA(num_topics=K, id2word=[str(i) for i in range(V)], epochs=40, sweeps_per_job=10,
                   seed=0, progress=False, keep_state=True, server_options={"servers": 2})
    model = lda.fit(sc.parallelize([d.tolist() for d in docs], 2)).model_
    counts = np.zeros((V, K), np.int64)
    for block in lda.state_.collect():
        np.add.at(counts, (block.words, block.topics), 1)
    lda.state_.unpersist()
    # and each task sampling on 2 threads, one exchange a round for both
    threaded = GibbsLDA(num_topics=K, id2word=[str(i) for i in range(V)], epochs=40, sweeps_per_job=10,
                        seed=0, progress=False, keep_state=True, threads=2)
    threaded_model = threaded.fit(sc.parallelize([d.tolist() for d in docs], 2)).model_
    threaded_counts = np.zeros((V, K), np.int64)
    for block in threaded.state_.collect():
        np.add.at(threaded_counts, (block.words, block.topics), 1)
    threaded.state_.unpersist()
    return {"recovery": float(topic_recovery(phi, model.topic_word_)), "repairs": lda.repairs_,
            "counts_exact": bool(np.array_equal(counts, model.word_topic_)),
            "applied": [s["updates_applied"] for s in lda.status_["shards"]],
            "threads_recovery": float(topic_recovery(phi, threaded_model.topic_word_)),
            "threads_counts_exact": bool(np.array_equal(threaded_counts, threaded_model.word_topic_)),
            "threads_pushes": [h["pushes"] for h in threaded.history_[1:]],
            "pushes": [h["pushes"] for h in lda.history_[1:]]}


def job_gibbs(sc) -> dict:
    from deepdist.lda import GibbsLDA
    from deepdist.lda.synthetic import synthetic_lda_corpus, topic_recovery

    V, K = 400, 8
    docs, phi = synthetic_lda_corpus(1200, V, K, 60, alpha=0.1, beta=0.01, seed=3)
    lda = GibbsLDA(num_topics=K, id2word=[str(i) for i in range(V)], epochs=60, sweeps_per_job=10,
                   seed=0, progress=False, keep_state=True)
    model = lda.fit(sc.parallelize([d.tolist() for d in docs], 2)).model_
    counts = np.zeros((V, K), np.int64)
    for block in lda.state_.collect():
        np.add.at(counts, (block.words, block.topics), 1)
    lda.state_.unpersist()
    return {"recovery": float(topic_recovery(phi, model.topic_word_)),
            "counts_exact": bool(np.array_equal(counts, model.word_topic_)), "repairs": lda.repairs_,
            "ll_per_token": [h["ll_per_token"] for h in lda.history_]}


def job_online(sc) -> dict:
    from gensim.models import LdaModel

    from deepdist.lda import OnlineLDA
    from deepdist.lda.evaluate import completion_perplexity
    from deepdist.lda.synthetic import synthetic_lda_corpus, topic_recovery

    V, K = 300, 8
    docs, topic_word = synthetic_lda_corpus(1600, V, K, 60, alpha=0.1, beta=0.01, seed=3, poisson_lengths=True)
    bow = [[(int(w), int(c)) for w, c in zip(*np.unique(doc, return_counts=True))] for doc in docs]
    train, held_out = bow[:1440], docs[1440:]
    id2word = {i: f"w{i}" for i in range(V)}
    lda = OnlineLDA(num_topics=K, id2word=id2word, epochs=4, chunksize=120, seed=0, progress=False)
    model = lda.fit(sc.parallelize(train, 2)).model_
    reference = LdaModel(train, num_topics=K, id2word=id2word, passes=4, chunksize=120, random_state=0,
                         eval_every=None)
    return {"recovery": float(topic_recovery(topic_word, model.get_topics())),
            "perplexity": completion_perplexity(held_out, model.get_topics(), model.alpha),
            "reference_perplexity": completion_perplexity(held_out, reference.get_topics(), reference.alpha)}


def job_word2vec(sc) -> dict:
    from gensim.models import Word2Vec
    from gensim.test.utils import datapath
    from gensim.utils import simple_preprocess

    from deepdist.word2vec import DistributedWord2Vec
    from deepdist.word2vec.evaluate import HeldoutSGNSLoss

    with open(datapath("lee_background.cor"), encoding="utf-8") as f:
        docs = [simple_preprocess(line) for line in f if line.strip()]
    train, heldout = docs[:270], docs[270:]
    estimator = DistributedWord2Vec(vector_size=50, epochs=5, min_count=2, seed=3, progress=False, spark=sc)
    estimator.fit(sc.parallelize(train, 2))
    model = estimator.model_
    counts = {w: model.wv.get_vecattr(w, "count") for w in model.wv.index_to_key}
    evaluator = HeldoutSGNSLoss(counts, heldout, window=5)
    untrained = Word2Vec(vector_size=50, min_count=2, seed=3)
    untrained.build_vocab_from_freq(counts)
    reference = Word2Vec(train, vector_size=50, epochs=5, min_count=2, seed=3, workers=1)
    return {"loss": evaluator(model), "untrained_loss": evaluator(untrained), "reference_loss": evaluator(reference)}


def job_dnt(sc) -> dict:
    from deepdist.dnt import DNT
    from deepdist.dnt.fit import exact_stats
    from deepdist.dnt.synthetic import synthetic_tree_corpus

    corpus = synthetic_tree_corpus(n_docs=1500, vocab_size=400, kind="counts", seed=2, alpha=4.0, gamma=2.0)
    bows = [[(int(w), int(n)) for w, n in zip(np.flatnonzero(row), row[row > 0])] for row in corpus.counts]
    held = {}
    dnt = DNT(max_nodes=16, epochs=8, grow_epochs=6, beta=300.0, kappa1=300.0, births_per_pass=3, seed=0,
              progress=False)

    def check(estimator, record):
        fit = held["fit"]
        stats, mass, _ = exact_stats(fit.state, len(fit.vocabulary), fit.tree.capacity, fit.ops)
        with fit.dd.store.lock:
            held.setdefault("errors", []).append(float(np.abs(fit.dd.store.params["stats"] - stats).max()))

    dnt._fit_hook = lambda fit: held.update(fit=fit)
    dnt.callbacks = [check]
    dnt.fit(sc.parallelize(bows, 2), id2word=[f"w{i}" for i in range(400)])
    trace = dnt.elbo_trace_
    falls = [(a - b) / abs(a) for (_, a, _), (_, b, moved) in zip(trace, trace[1:]) if not moved and a]
    cosine = corpus.node_means @ dnt.model_.mean_directions_.T
    big = corpus.node_masses >= 0.05
    return {"nodes": int(dnt.model_.n_nodes_), "memo_errors": held["errors"], "repairs": dnt.repairs_,
            "largest_fall": max(falls, default=0.0), "big_matched": float((cosine.max(axis=1)[big] >= 0.9).mean())}


def _bows(counts):
    return [[(int(w), int(n)) for w, n in zip(np.flatnonzero(row), row[row > 0])] for row in counts]


def job_dnt_time(sc) -> dict:
    """Dependent trees over three epochs (DNT(history=1)) from (epoch, document) pairs in time
    order, against one tree per epoch alone, both scored on the epoch's held-out documents."""
    from deepdist.dnt import DNT
    from deepdist.dnt.synthetic import synthetic_tree_corpus

    corpus = synthetic_tree_corpus(n_docs=3 * 550, vocab_size=400, kind="counts", seed=5, alpha=4.0, gamma=2.0,
                                   node_kappa=300.0)
    bows = _bows(corpus.counts)
    params = dict(epochs=4, beta=300.0, kappa1=300.0, births_per_pass=3, progress=False, seed=1)
    id2word = [f"w{i}" for i in range(400)]
    train = {t: bows[(t - 1) * 550:(t - 1) * 550 + 400] for t in (1, 2, 3)}
    held = {t: bows[(t - 1) * 550 + 400:t * 550] for t in (1, 2, 3)}
    pairs = sc.parallelize([(t, d) for t in (1, 2, 3) for d in train[t]], 2)
    dnt = DNT(history=1, kappa2=300.0, max_nodes=16, verify="full", **params).fit(pairs, id2word=id2word)
    timeline = dnt.model_
    out = {"nodes": [int(timeline.tree_at(t).n_nodes_) for t in (1, 2, 3)], "repairs": dnt.repairs_,
           "memo_errors": [float(r["memo_error"]) for r in dnt.history_], "dependent": [], "independent": []}
    for t in (2, 3):
        alone = DNT(max_nodes=int(timeline.tree_at(t).n_nodes_), **params).fit(
            sc.parallelize(train[t], 2), id2word=id2word).model_
        out["dependent"].append(timeline.score(held[t], t, kind="vmf"))
        out["independent"].append(alone.score(held[t], kind="vmf"))
    return out


def job_dnt_parallel(sc) -> dict:
    """Model-parallel births on the executors (a structure task failing once) against the same
    proposals confirmed on the driver (structure="batch"): the same tree, node for node."""
    import tempfile

    from pyspark import cloudpickle

    import dnt_hooks
    from deepdist.dnt import DNT
    from deepdist.dnt.synthetic import synthetic_tree_corpus

    bows = _bows(synthetic_tree_corpus(n_docs=1500, vocab_size=400, kind="counts", seed=2, alpha=4.0,
                                       gamma=2.0).counts)
    params = dict(max_nodes=24, epochs=6, beta=300.0, kappa1=300.0, births_per_pass=6, birth_children=2,
                  verify="full", progress=False, seed=3)
    id2word = [f"w{i}" for i in range(400)]
    batch = DNT(structure="batch", **params).fit(sc.parallelize(bows, 2), id2word=id2word).model_
    # the executors cannot import the tests' module: its hook travels by value
    cloudpickle.register_pickle_by_value(dnt_hooks)
    marker = tempfile.mkdtemp(prefix="dnt-structure-")
    parallel = DNT(structure="parallel", **params)
    parallel._structure_hook = dnt_hooks.FailFirstProposal(marker)
    parallel.fit(sc.parallelize(bows, 2), id2word=id2word)
    tree = parallel.model_
    same_shape = batch.n_nodes_ == tree.n_nodes_ and bool(np.array_equal(batch.tree_, tree.tree_))
    return {"nodes": int(tree.n_nodes_), "same_tree": same_shape, "failed": sorted(os.listdir(marker)),
            "mean_diff": float(np.abs(batch.mean_directions_ - tree.mean_directions_).max()) if same_shape else None,
            "births": sum(r["births"] for r in parallel.history_), "repairs": parallel.repairs_}


JOBS = {"train": job_train, "gibbs": job_gibbs, "online": job_online, "word2vec": job_word2vec, "dnt": job_dnt,
        "dnt_time": job_dnt_time, "dnt_parallel": job_dnt_parallel, "shards": job_shards}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True)
    parser.add_argument("--jobs", default=",".join(JOBS))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    spark = spark_session("deepdist-cluster-jobs")
    sc = spark.sparkContext
    sc.setLogLevel("WARN")
    results = {"master": sc.master, "app_id": sc.applicationId, "driver_pid": os.getpid(),
               "executors": executors_of(sc), "seconds": {}}
    for name in args.jobs.split(","):
        started = time.perf_counter()
        results[name] = JOBS[name](sc)
        results["seconds"][name] = time.perf_counter() - started
        logging.info("%s: %s", name, results[name])
    with open(args.output, "w") as f:
        json.dump(results, f, indent=1, default=float)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
