"""Driver memory of exact additive training: the attempt ledger before and after its budget.

An 8 MB dense additive model (1,048,576 float64) and 32 partitions, each pushing the whole
model twice (dense sums of its mini-batches): the case of issue 24, item 8. The ledger keeps
what every (epoch, partition, attempt) contributed until the epoch ends, so that a losing
attempt can be rolled back. Before, every attempt's running sum stayed in memory (32 x 8 MB,
plus an update waiting to be compacted); now sums past ``deepdist.ledger.MEMORY_BUDGET``
(64 MiB) go to files, the least recently pushed first, and come back one at a time.

Each design runs in a fresh driver process (peak RSS is a process's lifetime high):

* ``spark``: ``dd.train(..., additive=True)`` on local Spark, tasks pushing over HTTP;
* ``direct``: the same pushes submitted straight to a ``ParameterStore`` (no Spark, no HTTP),
  isolating the ledger.

"before" is the ledger of commit 64af759 (the last one before the budget), loaded from git
into the current store; "after" is the current one. Columns: the driver's peak RSS, its
growth over the RSS just before training, the peak of tracemalloc (Python and numpy
allocations) during training, and the ledger's own bytes at its peak (after only).

    python benchmarks/ledger_memory.py [--partitions 32] [--mb 8] [--pushes 2] [--modes spark,direct]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BEFORE = "64af759"


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def use_old_ledger() -> None:
    """Swap the store's AttemptLedger for the one of commit BEFORE."""
    import deepdist.store

    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{BEFORE}:deepdist/ledger.py"],
                            check=True, capture_output=True, text=True).stdout
    spec = importlib.util.spec_from_loader("deepdist._ledger_before", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "deepdist"
    exec(compile(source, f"{BEFORE}:deepdist/ledger.py", "exec"), module.__dict__)

    class Before(module.AttemptLedger):
        def discard(self, epoch):       # not in the old API; the store calls it after a failure
            pass

    deepdist.store.AttemptLedger = Before


def run_direct(partitions: int, size: int, pushes: int) -> dict:
    from deepdist.optim import add
    from deepdist.store import ParameterStore
    from deepdist.wire import UpdateMeta

    store = ParameterStore({"w": np.zeros(size, np.float64)})
    store.set_descent(add, additive=True)
    store.start()
    before = rss_bytes()
    tracemalloc.start()
    started = time.perf_counter()
    for partition in range(partitions):
        for seq in range(pushes):
            # a fresh array per push, as a decoded request body would be; each one applied before
            # the next is sent (a task waits for its push), or the update queue (32 updates, 256 MB
            # here) would measure the queue rather than the ledger
            store.submit({"w": np.full(size, 1.0)}, UpdateMeta(version=0, epoch=1, partition=partition,
                                                               attempt=partition + 100, seq=seq))
            store.drain()
    store.end_epoch(1, {p: (p + 100, pushes) for p in range(partitions)})
    seconds = time.perf_counter() - started
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    store.stop()
    assert (store.model["w"] == partitions * pushes).all(), "the model is not exact"
    return {"before_rss": before, "traced_peak": traced, "seconds": seconds, "ledger": store.ledger}


def run_spark(partitions: int, size: int, pushes: int) -> dict:
    from pyspark.sql import SparkSession

    from deepdist import DeepDist
    from deepdist.optim import add

    spark = (SparkSession.builder.master("local[2]").appName("ledger-memory")
             .config("spark.ui.enabled", "false").getOrCreate())
    sc = spark.sparkContext
    sc.setLogLevel("ERROR")
    rdd = sc.parallelize(range(partitions * pushes), partitions).cache()
    rdd.count()

    def gradient(model, batch):           # a dense update of the whole model per mini-batch
        return {"w": np.full(model["w"].shape, float(len(batch)))}

    try:
        with DeepDist({"w": np.zeros(size, np.float64)}, spark=sc, progress=False) as dd:
            dd.check_reachable()
            before = rss_bytes()
            tracemalloc.start()
            started = time.perf_counter()
            dd.train(rdd, gradient, add, batch_size=1, additive=True)
            seconds = time.perf_counter() - started
            traced = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            ledger = dd.store.ledger
        assert (dd.model["w"] == partitions * pushes).all(), "the model is not exact"
    finally:
        spark.stop()
    return {"before_rss": before, "traced_peak": traced, "seconds": seconds, "ledger": ledger}


def child(args) -> None:
    if args.design == "before":
        use_old_ledger()
    size = args.mb * (1 << 20) // 8
    run = run_spark if args.mode == "spark" else run_direct
    result = run(args.partitions, size, args.pushes)
    ledger = result.pop("ledger")
    result["peak_rss"] = peak_rss_bytes()
    result["ledger_peak"] = getattr(ledger, "peak_memory_bytes", None)
    result["spilled"] = getattr(ledger, "spilled_attempts", None)
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--partitions", type=int, default=32)
    parser.add_argument("--mb", type=int, default=8, help="model size in MiB (dense float64)")
    parser.add_argument("--pushes", type=int, default=2, help="dense pushes per partition")
    parser.add_argument("--modes", default="spark,direct")
    parser.add_argument("--design", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.design:
        return child(args)

    env = dict(os.environ)
    env.setdefault("SPARK_CONF_DIR", str(ROOT / "spark-conf"))
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    env.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from deepdist import ledger

    print(f"{args.partitions} partitions x a {args.mb} MiB dense additive model, {args.pushes} pushes each; "
          f"budget {ledger.MEMORY_BUDGET >> 20} MiB, spill dir {ledger.SPILL_DIR or tempfile.gettempdir()}")
    rows = []
    for mode in args.modes.split(","):
        for design in ("before", "after"):
            command = [sys.executable, __file__, "--design", design, "--mode", mode, "--partitions",
                       str(args.partitions), "--mb", str(args.mb), "--pushes", str(args.pushes)]
            out = subprocess.run(command, env=env, capture_output=True, text=True)
            line = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
            if out.returncode or not line:
                sys.exit(f"{mode}/{design} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
            rows.append((mode, design, json.loads(line[0][7:])))

    mb = lambda n: "-" if n is None else f"{n / 2**20:,.0f}"
    header = ("mode", "design", "peak RSS MiB", "RSS growth MiB", "traced peak MiB", "ledger peak MiB",
              "attempts spilled", "seconds")
    table = [header] + [(mode, design, mb(r["peak_rss"]), mb(r["peak_rss"] - r["before_rss"]),
                         mb(r["traced_peak"]), mb(r["ledger_peak"]),
                         "-" if r["spilled"] is None else str(r["spilled"]), f"{r['seconds']:.1f}")
                        for mode, design, r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for k, row in enumerate(table):
        print("  ".join(cell.rjust(w) if i > 1 else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))))
        if k == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    main()
