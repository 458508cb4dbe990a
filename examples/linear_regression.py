"""Downpour SGD on Spark: least-squares linear regression with deepdist.

The data set is fixed by its seed: ``--rows`` points in ``--features``
dimensions, ``y = X @ w_true + noise``.  Partitions fetch the weights from the
driver's model server, compute mini-batch gradients and push them; the driver
applies them asynchronously with SGD or AdaGrad.  At the end the script
compares the result with the closed-form least-squares optimum.

    python examples/linear_regression.py --optimizer adagrad
    spark-submit --master spark://host:7077 --py-files deepdist.zip examples/linear_regression.py
"""

import argparse
import json
import logging
import time

import numpy as np

import deepdist
from deepdist import AdaGrad, DeepDist, SGD
from deepdist.session import describe_master, spark_session


def make_data(rows: int, features: int, noise: float, seed: int):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, features))
    w_true = rng.normal(size=features)
    y = X @ w_true + noise * rng.normal(size=rows)
    return X, y


def gradient(model, batch):
    X = np.stack([x for x, _ in batch])
    y = np.array([t for _, t in batch])
    residual = X @ model["w"] - y
    deepdist.report(loss=0.5 * float(residual @ residual) / len(batch))
    return {"w": X.T @ residual / len(batch)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--master", default=None, help="Spark master (default: spark-submit's, else local[*])")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--noise", type=float, default=0.5)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--optimizer", choices=["sgd", "adagrad"], default="sgd")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="write the results to this JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    spark = spark_session("deepdist-linear-regression", args.master)

    X, y = make_data(args.rows, args.features, args.noise, args.seed)
    best, *_ = np.linalg.lstsq(X, y, rcond=None)
    rdd = spark.sparkContext.parallelize(list(zip(X, y)), args.partitions).cache()
    rdd.count()

    descent = SGD(lr=0.1, decay=0.02) if args.optimizer == "sgd" else AdaGrad(lr=0.2)
    started = time.perf_counter()
    with DeepDist({"w": np.zeros(args.features)}, spark=spark) as dd:
        dd.train(rdd, gradient, descent, epochs=args.epochs, batch_size=args.batch_size)
        status = dd.status()
    seconds = time.perf_counter() - started

    def loss(w):
        r = X @ w - y
        return 0.5 * float(r @ r) / len(y)

    trained, optimum = loss(dd.model["w"]), loss(best)
    print(f"\nDownpour {args.optimizer.upper()} on {args.rows:,} x {args.features} "
          f"({args.partitions} partitions, {args.epochs} epochs, {seconds:.1f}s on {describe_master(spark.sparkContext)}, "
          f"{status['updates_applied']} updates)")
    print(f"  loss of the trained model      {trained:.6f}")
    print(f"  least-squares optimum          {optimum:.6f}")
    print(f"  relative gap                   {trained / optimum - 1:.4%}")
    print(f"  |w - w*| / |w*|                {np.linalg.norm(dd.model['w'] - best) / np.linalg.norm(best):.4%}")
    gap = trained / optimum - 1
    if args.output:
        sc = spark.sparkContext
        with open(args.output, "w") as f:
            json.dump({"master": sc.master, "app_id": sc.applicationId, "loss": trained, "optimum": optimum,
                       "relative_gap": gap, "updates": status["updates_applied"], "url": dd.url,
                       "optimizer": args.optimizer, "epochs": args.epochs, "seconds": seconds}, f, indent=1)
    spark.stop()
    return gap


if __name__ == "__main__":
    main()
