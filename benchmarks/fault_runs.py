"""Fault drills: SIGKILL an executor at chosen points of a fit on a real standalone cluster.

A :class:`deepdist.testing.LocalCluster` (a master and two one-core workers, all on
127.0.0.1) runs each model family's fit once undisturbed and once per fault point, in one
SparkSession, with default settings except a small corpus. A fault is
``cluster.kill_executor(0)``: worker 0's executor JVM and its Python workers die as on a lost
node, with their cached blocks; the master then starts a new executor on that worker.

Each part is a function ``part(cluster, spark, args) -> list of rows`` in :data:`PARTS`; a
row is a dict whose keys in :data:`COLUMNS` of the part are printed as a table (the whole row
goes to ``--json``). Adding a model family (word2vec, online LDA) is adding such a function and
its columns.

The ``gibbs`` part kills at three points of a GibbsLDA fit (one sweep a job, since a callback
asks for work between jobs; a lineage cut every ``lineage_every`` = 10 jobs):

- ``early``: between jobs 2 and 3, before any cut (rebuilt from the lineage of job 0);
- ``after-cut``: right after the cut at job 10 (rebuilt from the word ids and the
  assignments the driver holds);
- ``late``: during a job near the end (a timer fires half a job after the callback of job
  ``iterations - 5``: the running task is retried too);
- ``after-cut-ckpt`` (with ``--checkpoint-dir``): the same kill with a checkpoint directory
  set, so the cut is a reliable checkpoint.

and prints, per point: the job killed at, the partitions rebuilt, the checksum's repairs and the
entries they fixed, the seconds the fault cost against the undisturbed run, whether the final
counts equal the counts of the final assignments, and the training log-likelihood per token
against the undisturbed run's.

    python benchmarks/fault_runs.py                              # every part
    python benchmarks/fault_runs.py --parts gibbs --json out.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deepdist.testing import LocalCluster  # noqa: E402

log = logging.getLogger("fault_runs")


class Killer:
    """Kills worker ``worker``'s executor once: from a fit's callback after job ``at_job``, right
    away or ``delay`` seconds later on a timer (then usually inside the next job)."""

    def __init__(self, cluster, at_job, delay=0.0, worker=0):
        self.cluster, self.at_job, self.delay, self.worker = cluster, at_job, delay, worker
        self.killed: list = []
        self.jobs_done_at_kill = self.killed_at = None
        self.job_ends: list = []  # perf_counter at the end of each job
        self._jobs_done = 0
        self._timer = None

    def __call__(self, estimator, record):
        self.job_ends.append(time.perf_counter())
        self._jobs_done = record["job"] + 1
        if self.at_job is None or record["job"] != self.at_job:
            return
        if self.delay:
            self._timer = threading.Timer(self.delay, self._kill)
            self._timer.start()
        else:
            self._kill()

    def _kill(self):
        self.jobs_done_at_kill, self.killed_at = self._jobs_done, time.perf_counter()
        self.killed = self.cluster.kill_executor(self.worker)
        log.info("killed executor of worker %d (pids %s) after %d jobs", self.worker, self.killed,
                 self.jobs_done_at_kill)

    def join(self):
        if self._timer is not None:
            self._timer.join()

    def fault_seconds(self, jobs_after: int = 2):
        """What the kill cost: the time the ``jobs_after`` jobs ending after it took beyond this
        run's median job (a fit's total varies more than that from run to run on a shared host)."""
        if self.killed_at is None:
            return None
        lengths = np.diff(self.job_ends[1:])  # sweep jobs only: the first holds the set-up
        ends = np.array(self.job_ends[2:])
        hit = np.flatnonzero(ends > self.killed_at)[:jobs_after]
        return float((lengths[hit] - np.median(lengths)).sum())


def wait_for_executors(cluster, sc, timeout=120.0):
    """Until every worker runs an executor of this application again (after a kill the master
    starts a new one): a fit started earlier places all partitions on the survivors, and the
    next kill would then hit an executor that holds nothing."""
    cluster.wait_for_workers()
    deadline = time.monotonic() + timeout
    while sc._jsc.sc().getExecutorMemoryStatus().size() - 1 < cluster.workers:  # minus the driver's
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f}s for {cluster.workers} executors")
        time.sleep(0.25)


# -- Gibbs LDA -------------------------------------------------------------------------------------

def _gibbs_fit(sc, docs, phi, args, killer):
    from deepdist.lda import GibbsLDA
    from deepdist.lda.synthetic import topic_recovery

    lda = GibbsLDA(num_topics=args.gibbs_topics, id2word=[str(i) for i in range(args.gibbs_vocab)],
                   epochs=args.gibbs_iterations, seed=args.seed, keep_state=True, progress=False,
                   callbacks=[killer])
    rdd = sc.parallelize(docs, args.partitions)
    started = time.perf_counter()
    model = lda.fit(rdd).model_
    seconds = time.perf_counter() - started
    killer.join()
    counts = np.zeros(model.word_topic_.shape, np.int64)
    for block in lda.state_.collect():
        np.add.at(counts, (block.words, block.topics), 1)
    exact = bool(np.array_equal(counts, model.word_topic_)
                 and np.array_equal(counts.sum(axis=0), model.topic_totals_))
    lda.state_.unpersist()
    history = lda.history_
    return {"seconds": seconds, "exact": exact, "repairs": lda.repairs_,
            "repaired_entries": sum(h["repaired_entries"] for h in history),
            "rebuilt": sum(len(h["rebuilt_partitions"]) for h in history),
            "rebuilt_jobs": [h["job"] for h in history if h["rebuilt_partitions"]],
            "cuts": [(h["job"], h["cut"]) for h in history if "cut" in h],
            "cut_bytes": sum(h.get("cut_bytes", 0) for h in history),
            "cut_held_bytes": max([h.get("cut_held_bytes", 0) for h in history] or [0]),
            "ll_per_token": history[-1]["ll_per_token"], "recovery": topic_recovery(phi, model.topic_word_),
            "jobs": len(history),
            "job_seconds": statistics.median(h["seconds"] for h in history[1:])}


def gibbs_part(cluster, spark, args):
    """GibbsLDA: undisturbed, then one executor killed at each point (see the module docstring)."""
    from deepdist.lda.synthetic import synthetic_lda_corpus

    sc = spark.sparkContext
    docs, phi = synthetic_lda_corpus(args.gibbs_docs, args.gibbs_vocab, args.gibbs_topics, args.gibbs_doc_length,
                                   alpha=0.1, beta=0.01, seed=args.seed)
    docs = [d.tolist() for d in docs]
    lineage_every = 10  # GibbsLDA's default
    if args.gibbs_iterations <= lineage_every + 5:
        raise SystemExit(f"--gibbs-iterations must exceed {lineage_every + 5} for a late point after the cut")
    rows = []
    wait_for_executors(cluster, sc)
    # the first fit on fresh executors also starts their Python workers: not part of any row
    if args.warm_up:
        _gibbs_fit(sc, docs, phi, argparse.Namespace(**{**vars(args), "gibbs_iterations": 2}), Killer(cluster, None))
    base = _gibbs_fit(sc, docs, phi, args, Killer(cluster, None))
    rows.append({"point": "none", "killed_after_job": None, "pids_killed": 0, **base})
    points = [("early", 2, 0.0), ("after-cut", lineage_every, 0.0),
              ("late", args.gibbs_iterations - 5, 0.5 * base["job_seconds"])]
    for name, job, delay in points:
        if name not in args.gibbs_points.split(","):
            continue
        rows.append(_gibbs_fault_row(cluster, sc, docs, phi, args, base, name, job, delay))
    if args.checkpoint_dir:
        sc.setCheckpointDir(args.checkpoint_dir)  # cannot be unset: the last point
        rows.append(_gibbs_fault_row(cluster, sc, docs, phi, args, base, "after-cut-ckpt", lineage_every, 0.0))
    return rows


def _gibbs_fault_row(cluster, sc, docs, phi, args, base, name, job, delay):
    wait_for_executors(cluster, sc)
    killer = Killer(cluster, job, delay)
    run = _gibbs_fit(sc, docs, phi, args, killer)
    return {"point": name, "killed_after_job": killer.jobs_done_at_kill, "pids_killed": len(killer.killed), **run,
            "fault_seconds": killer.fault_seconds(), "fit_vs_undisturbed": run["seconds"] - base["seconds"],
            "ll_vs_undisturbed": run["ll_per_token"] - base["ll_per_token"]}


def gibbs_args(parser):
    # undisturbed runs of this corpus end within a few thousandths of a nat of each other
    parser.add_argument("--gibbs-docs", type=int, default=600)
    parser.add_argument("--gibbs-doc-length", type=int, default=80)
    parser.add_argument("--gibbs-vocab", type=int, default=150)
    parser.add_argument("--gibbs-topics", type=int, default=3)
    parser.add_argument("--gibbs-iterations", type=int, default=30)
    parser.add_argument("--gibbs-points", default="early,after-cut,late", help="which kill points to run")


#: part name -> (function, argument adder, printed columns as (key, header, format))
PARTS = {
    "gibbs": (gibbs_part, gibbs_args,
              [("point", "point", "{}"), ("killed_after_job", "killed after job", "{}"),
               ("rebuilt", "partitions rebuilt", "{}"), ("repairs", "repairs", "{}"),
               ("repaired_entries", "entries repaired", "{}"), ("fault_seconds", "fault cost s", "{:+.1f}"),
               ("seconds", "fit s", "{:.1f}"), ("fit_vs_undisturbed", "vs undisturbed", "{:+.1f}"),
               ("exact", "counts exact", "{}"), ("ll_per_token", "ll/token", "{:.4f}"),
               ("ll_vs_undisturbed", "vs undisturbed", "{:+.4f}"), ("recovery", "topic recovery", "{:.3f}"),
               ("cut_bytes", "bytes to driver", "{}")]),
}


def table(rows, columns) -> str:
    def cell(row, key, fmt):
        value = row.get(key)
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "no"
        return fmt.format(value)

    cells = [[header for _, header, _ in columns]] + [[cell(r, k, f) for k, _, f in columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def all_parts() -> dict:
    """Gibbs (here) and the other families' drills (benchmarks/fault_runs_w2v_online.py)."""
    import fault_runs_w2v_online

    return {**PARTS, **fault_runs_w2v_online.PARTS}


def main(argv=None, parts_table: dict | None = None) -> int:
    PARTS = all_parts() if parts_table is None else parts_table  # noqa: N806 (the table this run offers)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-dir", help="also kill after a cut made with this checkpoint directory set "
                                                 "(the Gibbs part's last point)")
    parser.add_argument("--json", help="write every row here")
    parser.add_argument("--no-warm-up", dest="warm_up", action="store_false",
                        help="skip the unrecorded first fit that starts the executors' Python workers")
    parser.add_argument("--verbose", action="store_true")
    for _, add_args, _ in PARTS.values():
        add_args(parser)
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown parts {unknown}; known: {', '.join(PARTS)}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    results = {}
    with tempfile.TemporaryDirectory(prefix="fault-runs-") as scratch, \
            LocalCluster(workers=2, cores=1, log_dir=os.path.join(scratch, "cluster")) as cluster:
        # no delay scheduling: a task waits for no executor, so each job keeps both executors
        # busy and each holds cached blocks (with Spark's 3 s wait, jobs of a second could all
        # queue on one executor, and killing the other would cost nothing)
        spark = cluster.session("deepdist-fault-runs", **{"spark.locality.wait": "0s"})
        spark.sparkContext.setLogLevel("ERROR")
        try:
            for name in parts:
                function, _, columns = PARTS[name]
                started = time.perf_counter()
                results[name] = function(cluster, spark, args)
                print(f"\n{name} ({time.perf_counter() - started:.0f}s, master {cluster.url}):")
                print(table(results[name], columns), flush=True)
        finally:
            spark.stop()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
