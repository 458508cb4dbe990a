"""DNT at scale: a synthetic corpus of a million documents (V = 20,000), generated on the executors.

The corpus is drawn from a known tree (``synthetic_tree_corpus``'s node word distributions, for a
wide tree), each partition sampling its own documents from a seed, so the driver never holds
the data. The fit grows the tree by births; the script prints, per pass, the seconds, the tree's
size, the bytes on the wire (pushed ΔS and pulled rows), and at the end the driver's and the
executors' peak resident memory.

    .venv/bin/python benchmarks/dnt_scale.py                      # 1,000,000 documents
    .venv/bin/python benchmarks/dnt_scale.py --docs 100000 --epochs 6   # a smaller run

Peak memory: the driver's Python from ``resource.getrusage``, the driver JVM's from /proc (its
VmHWM), the executors' as the largest peak RSS of a Python worker.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import time

import numpy as np


def _generate(args, word_cdf, node_cdf):
    """``mapPartitions`` body: partition p draws its share of the documents from seed (seed, p)."""

    def generate(partition, _):
        rng = np.random.default_rng([args.seed, partition])
        count = args.docs // args.partitions + (partition < args.docs % args.partitions)
        nodes = np.searchsorted(node_cdf, rng.random(count))
        lengths = 1 + rng.poisson(args.length - 1, size=count)
        for node, length in zip(nodes, lengths):
            words = np.searchsorted(word_cdf[node], rng.random(length))
            ids, counts = np.unique(np.minimum(words, word_cdf.shape[1] - 1), return_counts=True)
            yield list(zip(ids.tolist(), counts.tolist()))

    return generate


def _worker_peak_rss(_):
    """The largest resident set of this Python worker so far, in bytes."""
    yield resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _jvm_rss(sc) -> int:
    """The driver JVM's peak resident set (bytes), from /proc (VmHWM)."""
    pid = int(sc._jvm.java.lang.ProcessHandle.current().pid())
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--vocab", type=int, default=20_000)
    parser.add_argument("--length", type=float, default=40.0, help="mean words per document")
    parser.add_argument("--branching", default="8,6,4", help="the true tree's children per level")
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--max-nodes", type=int, default=700)
    parser.add_argument("--births-per-pass", type=int, default=150)
    parser.add_argument("--birth-children", type=int, default=3, help="children a birth proposes at once")
    parser.add_argument("--beta", type=float, default=1e4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the records as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for name in ("py4j", "deepdist.core", "deepdist.server", "deepdist.store", "deepdist.ledger"):
        logging.getLogger(name).setLevel(logging.WARNING)

    from deepdist.dnt import DNT
    from deepdist.dnt.synthetic import synthetic_tree_corpus
    from deepdist.session import spark_session

    truth = synthetic_tree_corpus(n_docs=1, vocab_size=args.vocab, kind="counts", seed=args.seed,
                                  branching=tuple(int(b) for b in args.branching.split(",")), alpha=4.0, gamma=2.0)
    word_cdf = np.cumsum(truth.word_probs, axis=1)
    node_cdf = np.cumsum(truth.node_masses)
    spark = spark_session("deepdist dnt scale", args.master)
    sc = spark.sparkContext
    docs = sc.parallelize(range(args.partitions), args.partitions).mapPartitionsWithIndex(
        _generate(args, word_cdf, node_cdf))
    dnt = DNT(max_nodes=args.max_nodes, epochs=args.epochs, beta=args.beta, births_per_pass=args.births_per_pass,
              birth_children=args.birth_children, seed=args.seed, progress=False)
    started = time.perf_counter()
    dnt.fit(docs, id2word=[f"w{i}" for i in range(args.vocab)])
    seconds = time.perf_counter() - started
    executor_peak = max(sc.parallelize(range(args.partitions), args.partitions).mapPartitions(
        _worker_peak_rss).collect())
    driver_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    jvm_peak = _jvm_rss(sc)
    spark.stop()

    print(f"\nDNT on {args.docs:,} synthetic documents, V = {args.vocab:,}, true tree of {len(truth.parents)} nodes, "
          f"{args.master}, {args.partitions} partitions")
    print(f"{'pass':>4} {'seconds':>8} {'nodes':>6} {'births':>6} {'merges':>6} {'moved docs':>11} "
          f"{'pushed MB':>10} {'pulled MB':>10}")
    for r in dnt.history_:
        print(f"{r['epoch']:>4} {r['seconds']:>8.1f} {r['nodes']:>6} {r['births']:>6} {r['merges']:>6} "
              f"{r['changed_docs']:>11,} {r['bytes_pushed'] / 1e6:>10.1f} {r['bytes_pulled'] / 1e6:>10.1f}")
    print(f"total {seconds:.0f} s, {np.mean([r['seconds'] for r in dnt.history_]):.1f} s a pass on average; "
          f"{dnt.model_.n_nodes_} nodes, depth {int(dnt.model_.depth_.max()) + 1} levels")
    print(f"peak memory: driver Python {driver_peak / 2**20:,.0f} MiB, driver JVM {jvm_peak / 2**20:,.0f} MiB, "
          f"largest executor Python worker {executor_peak / 2**20:,.0f} MiB")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "seconds": seconds, "history": dnt.history_,
                       "driver_peak": driver_peak, "jvm_peak": jvm_peak, "executor_peak": executor_peak},
                      f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
