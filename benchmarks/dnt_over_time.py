"""Dependent trees over time against independent and pooled trees (issue 27, Must show 1).

One run on the PNAS titles (``../shared/data/pnas/``: ten epochs, the paper's train/test split),
three fits on one ``local[2]`` SparkSession, every score on each epoch's own held-out titles:

1. **dependent**: ``DNT(history=h)`` over the epochs in order (each tree starts from the last;
   :mod:`deepdist.dnt.timeline`);
2. **independent**: one ``DNT`` per epoch on that epoch's titles alone, with ``max_nodes`` = the
   dependent tree's node count in that epoch (same size, or smaller if it stops growing), and
   enough passes to reach that size (:func:`peer_passes`);
3. **pooled**: one ``DNT`` on the titles of all ten epochs, ``max_nodes`` = the largest
   dependent tree, scored on every epoch's held-out titles. It has seen every epoch's titles,
   the later epochs' included, when it scores an early one;
4. **pooled up to t**: for each epoch t, one ``DNT`` on the titles of epochs 1..t pooled,
   ``max_nodes`` = the dependent tree's node count at t and enough passes to reach it: the same
   titles as the dependent tree has seen by then, without the dependence (``--no-pooled-to-date``
   skips these fits).

Both scores of the DNT issue per epoch: the paper's (β µ_zᵀx, z the most probable node) and the
normalised vMF log-likelihood per document. Printed: the per-epoch table, the means over the
epochs, and the ratios dependent / independent and dependent / pooled, with wall seconds.

Usage::

    .venv/bin/python benchmarks/dnt_over_time.py                      # the full run
    .venv/bin/python benchmarks/dnt_over_time.py --quick              # 3 epochs, 1,500 titles each
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

log = logging.getLogger("dnt_over_time")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="epochs 1-3, 1,500 training titles each, max_nodes 40")
    p.add_argument("--epochs-list", type=int, nargs="+", default=list(range(1, 11)), help="PNAS epochs, in order")
    p.add_argument("--docs-per-epoch", type=int, default=None, help="a random subset of each epoch's titles")
    p.add_argument("--history", type=int, default=3, help="h: the window of the sticks' counts")
    p.add_argument("--kappa2", type=float, default=None, help="default: DNT's own")
    p.add_argument("--smooth", type=int, default=0,
                   help="passes per epoch of the dependent fit's backward sweep (DNT(smooth=...)); the forward "
                        "sweep's trees are scored too, as 'fwd'")
    p.add_argument("--max-nodes", type=int, default=400, help="the dependent trees' capacity")
    p.add_argument("--passes", type=int, default=10, help="passes per epoch (dependent, independent)")
    p.add_argument("--pooled-passes", type=int, default=20, help="passes of the pooled tree")
    p.add_argument("--no-pooled-to-date", dest="pooled_to_date", action="store_false",
                   help="skip the pooled-up-to-t fits")
    p.add_argument("--partitions", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, help="the PNAS directory (default: read_pnas's search)")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs_list = args.epochs_list[:3] if len(args.epochs_list) > 3 else args.epochs_list
        args.docs_per_epoch = args.docs_per_epoch or 1500
        args.max_nodes = min(args.max_nodes, 40)
        args.passes = min(args.passes, 5)
        args.pooled_passes = min(args.pooled_passes, 8)
    return args


def load(args) -> dict:
    from deepdist.datasets.pnas import read_pnas

    rng = np.random.default_rng(args.seed)
    train, held = {}, {}
    for epoch in args.epochs_list:
        data = read_pnas(args.data, epochs=[epoch], split="train")
        if args.docs_per_epoch and args.docs_per_epoch < data.n_docs:
            data = data.subset(np.sort(rng.choice(data.n_docs, args.docs_per_epoch, replace=False)))
        train[epoch] = data.bows()
        held[epoch] = read_pnas(args.data, epochs=[epoch], split="test").bows()
    vocabulary = list(read_pnas(args.data, epochs=[args.epochs_list[0]], split="test").vocabulary)
    return {"train": train, "held": held, "id2word": vocabulary}


def peer_passes(size: int, passes: int) -> int:
    """Passes for a tree fitted from its root to be able to reach ``size`` nodes: a birth pass at
    most doubles the tree (one child per node), and births follow the first two thirds of the
    passes (DNT's ``grow_epochs``), so log2(size) birth passes, one more for the merges; at least
    ``passes``. With the dependent fit's own passes per epoch a tree stops near 2^4 nodes, while
    the dependent tree has grown over all the epochs before."""
    growth = int(np.ceil(np.log2(max(size, 2)))) + 1
    return max(passes, int(np.ceil(1.5 * growth)))


def scores(model, docs) -> dict:
    return {"paper": model.score(docs, kind="paper"), "vmf": model.score(docs, kind="vmf")}


def run(args) -> dict:
    from deepdist.dnt import DNT
    from deepdist.session import spark_session

    data = load(args)
    epochs = args.epochs_list
    common = {"seed": args.seed, "progress": False}
    if args.kappa2 is not None:
        common["kappa2"] = args.kappa2
    spark = spark_session("dnt-over-time", "local[2]")
    spark.sparkContext.setLogLevel("ERROR")
    sc = spark.sparkContext
    out = {"args": vars(args), "epochs": {}}
    try:
        pairs = sc.parallelize([(e, d) for e in epochs for d in data["train"][e]], args.partitions).cache()
        pairs.count()
        started = time.perf_counter()
        dependent = DNT(history=args.history, max_nodes=args.max_nodes, epochs=args.passes, smooth=args.smooth,
                        **common)
        timeline = dependent.fit(pairs, id2word=data["id2word"]).model_
        out["dependent_seconds"] = time.perf_counter() - started
        pairs.unpersist()
        log.info("dependent: %s in %.0f s", timeline, out["dependent_seconds"])
        out["independent_seconds"] = 0.0
        for e in epochs:
            tree = timeline.tree_at(e)
            row = {"docs": len(data["train"][e]), "held": len(data["held"][e]), "dependent_nodes": tree.n_nodes_,
                   "dependent": scores(tree, data["held"][e]),
                   "births": len(timeline.births(e)), "merges": len(timeline.merges(e))}
            if args.smooth:
                forward = dependent.forward_model_.tree_at(e)
                row["forward_nodes"], row["forward"] = forward.n_nodes_, scores(forward, data["held"][e])
            rdd = sc.parallelize(data["train"][e], args.partitions).cache()
            rdd.count()
            started = time.perf_counter()
            alone = DNT(max_nodes=max(tree.n_nodes_, 2), epochs=peer_passes(tree.n_nodes_, args.passes), **common).fit(
                rdd, id2word=data["id2word"]).model_
            out["independent_seconds"] += time.perf_counter() - started
            rdd.unpersist()
            row["independent_nodes"] = alone.n_nodes_
            row["independent"] = scores(alone, data["held"][e])
            out["epochs"][e] = row
            log.info("epoch %s: %s", e, row)
        rdd = sc.parallelize([d for e in epochs for d in data["train"][e]], args.partitions).cache()
        rdd.count()
        largest = max(r["dependent_nodes"] for r in out["epochs"].values())
        started = time.perf_counter()
        pooled = DNT(max_nodes=max(largest, 2), epochs=args.pooled_passes, **common).fit(
            rdd, id2word=data["id2word"]).model_
        out["pooled_seconds"] = time.perf_counter() - started
        out["pooled_nodes"] = pooled.n_nodes_
        for e in epochs:
            out["epochs"][e]["pooled"] = scores(pooled, data["held"][e])
        out["pooled_to_date_seconds"] = 0.0
        for t, e in enumerate(epochs if args.pooled_to_date else []):
            rdd = sc.parallelize([d for past in epochs[:t + 1] for d in data["train"][past]], args.partitions).cache()
            rdd.count()
            started = time.perf_counter()
            size = out["epochs"][e]["dependent_nodes"]
            to_date = DNT(max_nodes=max(size, 2), epochs=peer_passes(size, args.passes), **common).fit(
                rdd, id2word=data["id2word"]).model_
            out["pooled_to_date_seconds"] += time.perf_counter() - started
            rdd.unpersist()
            out["epochs"][e]["to_date_nodes"] = to_date.n_nodes_
            out["epochs"][e]["to_date"] = scores(to_date, data["held"][e])
            log.info("pooled up to epoch %s: %s nodes, %s", e, to_date.n_nodes_, out["epochs"][e]["to_date"])
    finally:
        spark.stop()
    return out


def report(out) -> None:
    rows = out["epochs"]
    peers = [("independent", "indep"), ("pooled", "pooled")]
    if all("to_date" in r for r in rows.values()):
        peers.append(("to_date", "pool<=t"))
    if all("forward" in r for r in rows.values()):
        peers.append(("forward", "fwd"))
    names = "/".join(["dep"] + [short for _, short in peers])
    head = (f"{'epoch':>5} {'train':>6} {'held':>5} | {'nodes ' + names:>24} | "
            + " ".join(f"{'paper dep':>9}" if not i else f"{short:>9}" for i, short in enumerate(["dep"] + [s for _, s in peers]))
            + " | " + " ".join(f"{'vMF dep':>10}" if not i else f"{short:>10}" for i, short in enumerate(["dep"] + [s for _, s in peers]))
            + f" | {'born':>4} {'merged':>6}")
    print(head)
    print("-" * len(head))
    for e, r in rows.items():
        nodes = [r["dependent_nodes"], r["independent_nodes"], out["pooled_nodes"]] + [
            r[key + "_nodes"] for key, _ in peers[2:]]
        paper = " ".join(f"{r[k]['paper']:>9.1f}" for k in ["dependent"] + [k for k, _ in peers])
        vmf = " ".join(f"{r[k]['vmf']:>10.1f}" for k in ["dependent"] + [k for k, _ in peers])
        print(f"{e:>5} {r['docs']:>6} {r['held']:>5} | {'/'.join(map(str, nodes)):>24} | {paper} | {vmf} | "
              f"{r['births']:>4} {r['merges']:>6}")
    print("-" * len(head))
    for kind in ("paper", "vmf"):
        dep = np.mean([r["dependent"][kind] for r in rows.values()])
        parts = [f"mean dependent {dep:.1f}"]
        for key, short in peers:
            peer = np.mean([r[key][kind] for r in rows.values()])
            wins = sum(r["dependent"][kind] >= r[key][kind] for r in rows.values())
            parts.append(f"dependent/{short} {dep / peer:.4f} (mean {peer:.1f}; at or above in {wins} of {len(rows)})")
        print(f"{kind:>5}: " + "; ".join(parts))
    print(f"wall seconds: dependent {out['dependent_seconds']:.0f}, independent (all epochs) "
          f"{out['independent_seconds']:.0f}, pooled {out['pooled_seconds']:.0f}, pooled up to t (all epochs) "
          f"{out.get('pooled_to_date_seconds', 0):.0f}")


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for name in ("py4j", "deepdist"):
        logging.getLogger(name).setLevel(logging.WARNING)
    args = parse_args(argv)
    out = run(args)
    report(out)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
