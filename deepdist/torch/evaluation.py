"""Inference on the executors: a module scored on an RDD, partitions in parallel.

The module travels once by Spark broadcast (parameters included); each task runs it in
evaluation mode without gradients, on as many threads as it has cores, and returns sums that
the driver adds up. A metric is ``metric(output, target) -> (total, count)``; the result is
``sum(total) / sum(count)``.
"""

from __future__ import annotations

import torch

from ..errors import ConfigurationError
from ..validation import check_int
from ..worker import batches
from .adapter import ship, use_task_cpus
from .gradient import default_collate

__all__ = ["accuracy", "evaluate", "mean_loss"]


def accuracy(output, target) -> tuple[float, int]:
    """``(correct, count)``: how many rows' largest output is the target class."""
    return float((output.argmax(dim=1) == target).sum()), int(target.shape[0])


def mean_loss(loss_fn):
    """A metric: the mean of ``loss_fn(output, target)`` over the examples (weighted by batch size)."""
    def metric(output, target):
        return float(loss_fn(output, target)) * int(target.shape[0]), int(target.shape[0])
    metric.__name__ = f"mean_{getattr(loss_fn, '__name__', 'loss')}"
    return metric


_NAMED = {"accuracy": accuracy}


def _metrics(metric) -> tuple[dict, bool]:
    single = not isinstance(metric, dict)
    metrics = {"value": metric} if single else dict(metric)
    for name, m in metrics.items():
        if isinstance(m, str):
            if m not in _NAMED:
                raise ConfigurationError(f"unknown metric {m!r}; named metrics: {sorted(_NAMED)}")
            metrics[name] = _NAMED[m]
        elif not callable(metrics[name]):
            raise ConfigurationError(f"metric {name!r} must be callable or one of {sorted(_NAMED)}, got {m!r}")
    return metrics, single


def evaluate(net, rdd, metric="accuracy", *, collate=None, inputs=0, target=1, batch_size: int = 512):
    """Score ``net`` on ``rdd`` on the executors; return a float (or a dict for a dict of metrics).

    Parameters:
        net: the ``nn.Module`` (on the driver; it is not changed).
        rdd: elements as :func:`deepdist.torch.torch_gradient` takes them.
        metric: ``metric(output, target) -> (total, count)``, ``"accuracy"``, or a dict of them.
        collate, inputs, target: as for :func:`deepdist.torch.torch_gradient`.
        batch_size: rows per forward pass.

    Example::

        from deepdist.torch import evaluate, mean_loss
        scores = evaluate(net, test_rdd, {"accuracy": "accuracy", "loss": mean_loss(F.cross_entropy)})
    """
    metrics, single = _metrics(metric)
    check_int("batch_size", batch_size)
    collate = collate or default_collate
    shipped = rdd.context.broadcast(ship(net))

    def score(elements):
        model = shipped.value
        use_task_cpus()
        model.eval()
        totals = {name: [0.0, 0] for name in metrics}
        with torch.no_grad():
            for chunk in batches(elements, batch_size):
                batch = collate(chunk)
                output = model(batch[inputs])
                for name, m in metrics.items():
                    total, count = m(output, batch[target])
                    totals[name][0] += float(total)
                    totals[name][1] += int(count)
        yield totals

    try:
        parts = rdd.mapPartitions(score).collect()
    finally:
        shipped.unpersist()
    results = {}
    for name in metrics:
        total = sum(p[name][0] for p in parts)
        count = sum(p[name][1] for p in parts)
        results[name] = total / count if count else float("nan")
    return results["value"] if single else results
