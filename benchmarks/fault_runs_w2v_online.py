"""Fault drills for word2vec, online LDA and additive ``dd.train``: parts of benchmarks/fault_runs.py.

Each part fits once undisturbed and once per fault point on fault_runs.py's LocalCluster (two
one-core workers on 127.0.0.1), killing worker 0's executor (JVM and Python workers) from a
timer thread a chosen share of the way into a training stage whose two tasks are running (the
drills of tests/fault_jobs.py, with these sizes), and prints per point: where the kill landed,
the seconds the fault cost against the undisturbed run, and the quality against it.

- ``online``: ``OnlineLDA`` (default settings) on a planted corpus; kills early in epoch (pass) 1,
  in the middle of epoch 2 and late in epoch 3; quality = held-out completion perplexity ratio, plus
  the chunks a retried task delivered again (dropped) and the documents each pass merged.
- ``word2vec``: ``DistributedWord2Vec`` (default settings, one job) on gensim's lee_background;
  kills at 20%, 50% and 80% of the undisturbed training time; quality = held-out SGNS loss ratio.
- ``additive``: a count vector by additive ``dd.train``; whether the counts are exact.

    python benchmarks/fault_runs_w2v_online.py                       # online, word2vec, additive
    python benchmarks/fault_runs_w2v_online.py --parts online --json out.json

Its :data:`PARTS` join fault_runs.py's when this module is run; fault_runs.py can list them too
(``PARTS.update(fault_runs_w2v_online.PARTS)``).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

import fault_jobs  # noqa: E402  (tests/fault_jobs.py: the drills)


def online_part(cluster, spark, args):
    points = (("early-pass-1", 1, 0.2), ("mid-pass-2", 2, 0.5), ("late-pass-3", 3, 0.8))
    result = fault_jobs.online_drill(cluster, spark, docs=args.online_docs, passes=args.online_epochs,
                                     seed=args.seed, points=points)
    base = result["undisturbed"]
    rows = [{"point": "none", **base, "perplexity_ratio": 1.0, "fault_seconds": 0.0}]
    return rows + result["faults"]


def online_args(parser):
    parser.add_argument("--online-docs", type=int, default=6000)
    parser.add_argument("--online-epochs", "--online-passes", dest="online_epochs", type=int, default=4,
                        help="OnlineLDA epochs (passes over the corpus; --online-passes is the old name)")


def word2vec_part(cluster, spark, args):
    points = (("20% of training", 0.2), ("50% of training", 0.5), ("80% of training", 0.8))
    result = fault_jobs.word2vec_drill(cluster, spark, epochs=args.w2v_epochs, repeat=args.w2v_repeat,
                                       partitions=args.partitions, points=points)
    base = result["undisturbed"]
    return [{"point": "none", **base, "loss_ratio": 1.0, "fault_seconds": 0.0}] + result["faults"]


def word2vec_args(parser):
    parser.add_argument("--w2v-epochs", type=int, default=5)
    parser.add_argument("--w2v-repeat", type=int, default=5, help="copies of lee_background in the corpus")


def additive_part(cluster, spark, args):
    result = fault_jobs.additive_drill(cluster, spark)
    return [{"point": "none", **result["undisturbed"], "fault_seconds": 0.0},
            {"point": "mid-epoch-1", **result["faulted"], "fault_seconds": result["fault_seconds"]}]


_KILL = [("point", "point", "{}"), ("killed_in_stage", "killed in stage", "{}"),
         ("seconds_into_stage", "s into stage", "{:.1f}"), ("seconds", "seconds", "{:.1f}"),
         ("fault_seconds", "fault cost s", "{:+.1f}")]

PARTS = {
    "online": (online_part, online_args,
               _KILL + [("perplexity", "perplexity", "{:.3f}"), ("perplexity_ratio", "vs undisturbed", "{:.4f}"),
                        ("repeated_chunks", "chunks dropped", "{}"), ("docs_merged", "docs merged a pass", "{}"),
                        ("wait_timeouts", "wait timeouts", "{}")]),
    "word2vec": (word2vec_part, word2vec_args,
                 _KILL + [("heldout_loss", "held-out loss", "{:.4f}"), ("loss_ratio", "vs undisturbed", "{:.4f}")]),
    "additive": (additive_part, lambda parser: None,
                 _KILL + [("exact", "counts exact", "{}"), ("updates_applied", "updates applied", "{}")]),
}


if __name__ == "__main__":
    import fault_runs

    sys.exit(fault_runs.main(parts_table=PARTS))  # only these (fault_runs.py runs them all)
