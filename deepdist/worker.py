"""The Downpour loop that runs inside each Spark task (executor side).

For every mini-batch of its partition a task

* pulls the model every ``fetch_every`` batches (only the rows the next
  batches need, when a ``rows`` function says which),
* calls ``gradient(model, batch)`` on its local copy,
* sums updates locally and pushes them every ``push_every`` batches,

tagging each push with the model version it started from, the epoch, the
partition, the Spark task attempt and a sequence number (Dean et al. 2012).
"""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np

from . import wire
from .errors import DeepDistError
from .params import allocate
from .sparse import sum_updates

_local = threading.local()
_models: dict = {}


def report(**metrics: float) -> None:
    """Report worker metrics (such as ``loss``) from inside ``gradient``.

    They travel with the next push and show on the server's ``/status`` and
    the driver's progress line.  Several reports between pushes are averaged.

    Example::

        def gradient(model, batch):
            loss, grad = ...
            deepdist.report(loss=loss)
            return {"w": grad}
    """
    pending = getattr(_local, "metrics", None)
    if pending is None:
        return  # called outside a deepdist task: nothing to send it with
    for name, value in metrics.items():
        total, count = pending.get(name, (0.0, 0))
        pending[name] = (total + float(value), count + 1)


def _take_metrics() -> dict:
    pending = getattr(_local, "metrics", None) or {}
    _local.metrics = {}
    return {name: total / count for name, (total, count) in pending.items()}


def batches(iterator, batch_size):
    """Lists of ``batch_size`` elements; the whole partition when ``batch_size`` is None."""
    # Spark may hand over an iterable that restarts (a range), not an iterator
    iterator = iter(iterator)
    if batch_size is None:
        whole = list(iterator)
        if whole:
            yield whole
        return
    while True:
        batch = list(itertools.islice(iterator, batch_size))
        if not batch:
            return
        yield batch


def _union_rows(row_sets: list) -> dict:
    names = set().union(*row_sets) if row_sets else set()
    return {name: np.unique(np.concatenate([np.asarray(r[name], np.int64).ravel()
                                            for r in row_sets if name in r]))
            for name in names}


class PartitionTrainer:
    """The function given to ``rdd.mapPartitions`` for one epoch.

    It carries configuration only (client, broadcast skeleton, user functions),
    so Spark can ship it in the task closure.
    """

    def __init__(self, *, client, context_id, spec, adapter, skeleton, gradient, epoch,
                 batch_size, fetch_every, push_every, rows=None):
        self.client = client
        self.context_id = context_id
        self.spec = spec
        self.adapter = adapter
        self.skeleton = skeleton
        self.gradient = gradient
        self.epoch = epoch
        self.batch_size = batch_size
        self.fetch_every = fetch_every
        self.push_every = push_every
        self.rows = rows

    def local_model(self):
        """This process's copy of the model: the broadcast skeleton plus parameter arrays."""
        cached = _models.get(self.context_id)
        if cached is None:
            params = allocate(self.spec)
            if self.skeleton is None:
                model = params
            else:
                model = self.skeleton.value
                self.adapter.set(model, params)
            _models.clear()  # one training context per process at a time
            cached = _models[self.context_id] = (model, params)
        return cached

    def __call__(self, iterator):
        from pyspark import TaskContext

        task = TaskContext.get()
        partition = task.partitionId() if task else 0
        attempt = task.attemptNumber() if task else 0
        try:
            yield self._run(iterator, partition, attempt)
        except DeepDistError as err:
            # Spark hands the driver only a string; the tag lets it rebuild this error
            raise type(err)(err.tagged()) from None

    def _run(self, iterator, partition, attempt):
        model, params = self.local_model()
        _local.metrics = {}
        started = time.perf_counter()
        stats = {"partition": partition, "attempt": attempt, "pushed": 0, "batches": 0,
                 "bytes_pushed": 0, "pulls": 0}
        pending, version = None, 0
        stream = batches(iterator, self.batch_size)
        while True:
            window = list(itertools.islice(stream, self.fetch_every))
            if not window:
                break
            if self.rows is None:
                version = self.client.pull_into(params)
            else:
                wanted = _union_rows([self.rows(batch) for batch in window])
                version = self.client.pull_rows_into(params, wanted)
            stats["pulls"] += 1
            for batch in window:
                update = self.gradient(model, batch)
                if update:
                    pending = sum_updates(pending, update)
                stats["batches"] += 1
                if stats["batches"] % self.push_every == 0 and pending is not None:
                    stats["bytes_pushed"] += self._push(pending, version, partition, attempt, stats["pushed"])
                    stats["pushed"] += 1
                    pending = None
        if pending is not None:
            stats["bytes_pushed"] += self._push(pending, version, partition, attempt, stats["pushed"])
            stats["pushed"] += 1
        stats["seconds"] = time.perf_counter() - started
        return stats

    def _push(self, update, version, partition, attempt, seq) -> int:
        meta = wire.UpdateMeta(version=version, epoch=self.epoch, partition=partition,
                               attempt=attempt, seq=seq, metrics=_take_metrics())
        return self.client.push(update, meta)
