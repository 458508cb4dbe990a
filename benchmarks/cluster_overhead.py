"""What a real cluster costs deepdist against local mode with the same cores.

Runs the same word2vec fit (the Wikipedia dump gensim ships) and the same Gibbs LDA fit (a
corpus planted from LDA's generative process) twice, in one run: on ``local[2]`` and on a
Spark standalone cluster of two one-core workers on this machine
(:class:`deepdist.testing.LocalCluster`). Both are launched by ``spark-submit`` in a fresh
process, so each pays its own JVM start, as a user's job would. The ratio is what the
cluster's RPC, separate executor JVMs, task shipping and block transfers cost us.

    .venv/bin/python benchmarks/cluster_overhead.py [--repeat 2] [--docs 20000] [--articles 300] [--conf KEY=VALUE]

Only ratios inside one run mean anything on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- the driver side: one job, run under spark-submit -------------------------------------------------
def job_word2vec(sc, args) -> dict:
    from gensim.test.utils import datapath

    from deepdist.datasets.wikipedia import read_articles, sentences, split_heldout
    from deepdist.word2vec import DistributedWord2Vec
    from deepdist.word2vec.evaluate import HeldoutSGNSLoss

    dump = datapath("enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
    articles = read_articles(sc, dump, max_articles=args.articles)
    train_articles, heldout_articles = split_heldout(articles, 0.1, seed=1)
    train = sentences(train_articles, 1000).cache()
    train.count()
    heldout = [tokens for _, tokens in heldout_articles.take(200)]
    started = time.perf_counter()
    estimator = DistributedWord2Vec(vector_size=100, epochs=args.epochs, seed=1, partitions=2, progress=False,
                                    spark=sc).fit(train)
    seconds = time.perf_counter() - started
    model = estimator.model_
    counts = {w: model.wv.get_vecattr(w, "count") for w in model.wv.index_to_key}
    loss = HeldoutSGNSLoss(counts, heldout, window=5)(model)
    return {"seconds": seconds, "quality": loss, "quality_name": "held-out loss",
            "words": args.epochs * estimator.corpus_words_}


def job_gibbs(sc, args) -> dict:
    from deepdist.lda import GibbsLDA
    from deepdist.lda.synthetic import synthetic_lda_corpus

    V, K = 2000, 50
    docs, _ = synthetic_lda_corpus(args.docs, V, K, 100, alpha=0.1, beta=0.01, seed=3)
    rdd = sc.parallelize([d.tolist() for d in docs], 2).cache()
    rdd.count()
    started = time.perf_counter()
    lda = GibbsLDA(num_topics=K, id2word=[str(i) for i in range(V)], epochs=args.sweeps, seed=0,
                   progress=False).fit(rdd)
    seconds = time.perf_counter() - started
    tokens = int(sum(len(d) for d in docs))
    return {"seconds": seconds, "quality": lda.history_[-1]["ll_per_token"], "quality_name": "ll/token",
            "words": tokens * args.sweeps, "repairs": lda.repairs_}


JOBS = {"word2vec": job_word2vec, "gibbs": job_gibbs}


def run_job(args) -> None:
    from deepdist.session import describe_master, spark_session

    spark = spark_session(f"cluster-overhead-{args.job}")
    sc = spark.sparkContext
    sc.setLogLevel("ERROR")
    result = JOBS[args.job](sc, args)
    result["master"] = describe_master(sc)
    with open(args.output, "w") as f:
        json.dump(result, f)
    spark.stop()


# -- the orchestrating side ------------------------------------------------------------------------
def submit(job: str, master_args: list, env: dict, args) -> dict:
    out = tempfile.NamedTemporaryFile(suffix=".json", delete=False).name
    command = [os.path.join(os.path.dirname(sys.executable), "spark-submit"), *master_args, __file__,
               "--run-job", job, "--output", out, "--docs", str(args.docs), "--sweeps", str(args.sweeps),
               "--articles", str(args.articles), "--epochs", str(args.epochs)]
    started = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{job} on {master_args} failed:\n{proc.stderr[-3000:]}")
    with open(out) as f:
        result = json.load(f)
    os.unlink(out)
    result["wall"] = time.perf_counter() - started
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs of each job in each mode (alternating)")
    parser.add_argument("--jobs", default="word2vec,gibbs")
    parser.add_argument("--docs", type=int, default=20000, help="Gibbs: documents of 100 tokens")
    parser.add_argument("--sweeps", type=int, default=100, help="Gibbs: sweeps")
    parser.add_argument("--articles", type=int, default=300, help="word2vec: articles of the shipped dump")
    parser.add_argument("--epochs", type=int, default=3, help="word2vec: epochs")
    parser.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                        help="a Spark setting for both modes (e.g. spark.locality.wait=0s)")
    parser.add_argument("--run-job", dest="job", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--output", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.job:
        run_job(args)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from deepdist.testing import LocalCluster

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.setdefault("SPARK_CONF_DIR", os.path.join(ROOT, "spark-conf"))
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    rows = []
    with LocalCluster(workers=2, cores=1) as cluster:
        env.update(cluster.driver_env())
        extra = [arg for setting in args.conf for arg in ("--conf", setting)]
        modes = {"local[2]": ["--master", "local[2]", *extra], "cluster 2x1": cluster.submit_args() + extra}
        for job in args.jobs.split(","):
            runs = {mode: [] for mode in modes}
            for _ in range(args.repeat):
                for mode, master_args in modes.items():
                    runs[mode].append(submit(job, master_args, env, args))
            rows.append((job, runs))
    print(f"\n{'job':10} {'mode':12} {'fit s':>8} {'job wall s':>11} {'Mwords/s':>9}  quality")
    for job, runs in rows:
        for mode, results in runs.items():
            best = min(results, key=lambda r: r["seconds"])
            print(f"{job:10} {mode:12} {best['seconds']:8.1f} {best['wall']:11.1f} "
                  f"{best['words'] / best['seconds'] / 1e6:9.2f}  {best['quality_name']} {best['quality']:.4f}")
        local = min(r["seconds"] for r in runs["local[2]"])
        remote = min(r["seconds"] for r in runs["cluster 2x1"])
        print(f"{job:10} {'ratio':12} {remote / local:8.2f}x  (cluster fit time / local[2] fit time)")


if __name__ == "__main__":
    main()
