"""The Downpour loop that runs inside each Spark task (executor side).

For every mini-batch of its partition a task

* pulls the model every ``fetch_every`` batches (only the rows the next
  batches need, when a ``rows`` function says which; with ``wait_for``, once
  the model has reached the state that function names: bounded staleness),
* calls ``gradient(model, batch)`` on its local copy,
* sums updates locally and pushes them every ``push_every`` batches (a row pull
  that follows a push rides on it: one round trip, answered once the push is applied),

tagging each push with the model version it started from, the epoch, the
partition, the Spark task attempt and a sequence number (Dean et al. 2012).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time

import numpy as np

from . import wire
from .config import WAIT_TIMEOUT
from .errors import DeepDistError
from .params import allocate
from .sparse import copy_rows, sum_updates

log = logging.getLogger(__name__)
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
    if len(row_sets) == 1:  # one batch's rows: already the set to pull
        return row_sets[0]
    names = set().union(*row_sets) if row_sets else set()
    return {name: np.unique(np.concatenate([np.asarray(r[name], np.int64).ravel()
                                            for r in row_sets if name in r]))
            for name in names}


def attempt_of(task) -> int:
    """A number for a task attempt that no other attempt of its partition shares, larger for
    attempts launched later: Spark's ``taskAttemptId``.

    Not ``attemptNumber``: Spark numbers a task's attempts from 0 again in each attempt of a
    stage, and a stage is attempted again when a task could not fetch shuffle output that died
    with an executor. The retry of a task whose executor was lost can then be attempt 0 again,
    like the lost attempt, and the server would take its pushes for duplicates of the lost
    attempt's (and book both in one ledger entry).
    """
    return task.taskAttemptId()


class TaskChannel:
    """One Spark task's line to the model server, for custom partition loops.

    It knows the epoch, and inside a task it learns the partition and attempt;
    it numbers pushes, tags them with the version they were computed from, and
    ends with the report that lets the driver keep exactly one attempt per
    partition.  :class:`PartitionTrainer` is built on it; so is the Gibbs
    sampler, which yields new assignments rather than gradients.

    Example::

        channel = dd.channel(epoch)
        def task(blocks):
            with channel.open() as ch:
                version = ch.pull_into(local_counts)
                ...
                ch.push({"counts": delta}, version)
                yield ch.report()
    """

    def __init__(self, client, epoch: int):
        self.client = client
        self.epoch = epoch
        self.partition = 0
        self.attempt = 0
        self.stats: dict = {}

    def open(self) -> "TaskChannel":
        from pyspark import TaskContext

        task = TaskContext.get()
        self.partition = task.partitionId() if task else 0
        self.attempt = attempt_of(task) if task else 0
        self.stats = {"partition": self.partition, "attempt": self.attempt, "pushed": 0,
                      "pulls": 0, "bytes_pushed": 0, "wait_seconds": 0.0, "wait_timeouts": 0,
                      "network_seconds": 0.0, "started": time.perf_counter()}
        _local.metrics = {}
        return self

    def __enter__(self) -> "TaskChannel":
        return self

    def __exit__(self, exc_type, exc, tb):
        if isinstance(exc, DeepDistError):
            # Spark hands the driver only a string; the tag lets it rebuild this error (chained,
            # that string would hold the same error twice, once untagged)
            raise type(exc)(exc.tagged()) from None
        return False

    def _own_last_push(self):
        """This task's last push, which a pull must include: ``(epoch, partition, attempt, seq)``."""
        pushed = self.stats.get("pushed", 0)
        return (self.epoch, self.partition, self.attempt, pushed - 1) if pushed else None

    @contextlib.contextmanager
    def _on_the_wire(self):
        """Count the time spent talking to the server (``network_seconds``, waits included)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.stats["network_seconds"] += time.perf_counter() - started

    def pull_into(self, params: dict, names=None) -> int:
        """Copy the latest model (with this task's own pushes applied) into ``params``."""
        self.stats["pulls"] += 1
        with self._on_the_wire():
            return self.client.pull_into(params, names, after=self._own_last_push())

    def pull_rows(self, rows: dict) -> tuple[int, dict]:
        """The latest ``rows`` ``{name: indices}`` as ``(version, {name: SparseRows})``, for a task
        that keeps no full-size copy of the parameters (only the rows it reads)."""
        self.stats["pulls"] += 1
        with self._on_the_wire():
            return self.client.pull_rows(rows, after=self._own_last_push())

    def pull_rows_into(self, params: dict, rows: dict, wait=None) -> int:
        """Copy the latest ``rows`` into ``params``; return the version.

        ``wait=(name, at_least, timeout)`` first waits, on the server, until the model's
        ``name[0] >= at_least`` (bounded staleness); a wait that timed out counts in the
        report's ``wait_timeouts`` and the rows come as they were.
        """
        self.stats["pulls"] += 1
        if wait is None:
            with self._on_the_wire():
                return self.client.pull_rows_into(params, rows, after=self._own_last_push())
        started = time.perf_counter()
        with self._on_the_wire():
            version, arrays, ready = self.client.pull_rows_when(rows, *wait, after=self._own_last_push())
        self.stats["wait_seconds"] += time.perf_counter() - started
        self.stats["wait_timeouts"] += not ready
        copy_rows(params, arrays)
        return version

    def pull_changes(self, since: int):
        """``(version, {name: SparseRows} | None)``: what other tasks added after ``since``."""
        self.stats["pulls"] += 1
        with self._on_the_wire():
            return self.client.pull_changes(since, self.partition, self.attempt)

    def _next_meta(self, version: int) -> wire.UpdateMeta:
        """The header of this task's next push: who sends it, from which version, and the metrics."""
        return wire.UpdateMeta(version=version, epoch=self.epoch, partition=self.partition,
                               attempt=self.attempt, seq=self.stats["pushed"], metrics=_take_metrics())

    def push(self, update: dict, version: int, changes_since: int | None = None):
        """Send ``update``, computed from model ``version``, with the metrics reported so far.

        With ``changes_since``, also fetch :meth:`pull_changes` in the same round trip and
        return its ``(version, arrays)``.
        """
        meta = self._next_meta(version)
        changes = None
        if changes_since is None:
            with self._on_the_wire():
                self.stats["bytes_pushed"] += self.client.push(update, meta)
        else:
            with self._on_the_wire():
                nbytes, *changes = self.client.push_pull_changes(update, meta, changes_since)
            self.stats["bytes_pushed"] += nbytes
            self.stats["pulls"] += 1
        self.stats["pushed"] += 1
        return changes

    def push_pull_rows_into(self, update: dict, version: int, params: dict, rows: dict) -> int:
        """:meth:`push`, then copy ``rows`` of the model with it applied into ``params``, in one round
        trip; return the new version."""
        meta = self._next_meta(version)
        with self._on_the_wire():
            nbytes, version, arrays = self.client.push_pull_rows(update, meta, rows)
        self.stats["bytes_pushed"] += nbytes
        self.stats["pushed"] += 1
        self.stats["pulls"] += 1
        copy_rows(params, arrays)
        return version

    def report(self, **extra) -> dict:
        """What the driver needs from this task: partition, attempt, pushes (plus ``extra``)."""
        stats = dict(self.stats)
        stats["seconds"] = time.perf_counter() - stats.pop("started")
        stats.update(extra)
        return stats


class PartitionTrainer:
    """The function given to ``rdd.mapPartitions`` for one epoch of ``DeepDist.train``.

    It carries configuration only (channel, broadcast skeleton, user functions),
    so Spark can ship it in the task closure.
    """

    def __init__(self, *, channel, context_id, spec, adapter, skeleton, gradient,
                 batch_size, fetch_every, push_every, rows=None, wait_for=None,
                 wait_timeout=WAIT_TIMEOUT):
        self.channel = channel
        self.context_id = context_id
        self.spec = spec
        self.adapter = adapter
        self.skeleton = skeleton
        self.gradient = gradient
        self.batch_size = batch_size
        self.fetch_every = fetch_every
        self.push_every = push_every
        self.rows = rows
        self.wait_for = wait_for
        self.wait_timeout = wait_timeout

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
        with self.channel.open() as channel:
            yield self._run(iterator, channel)

    def _run(self, iterator, channel):
        model, params = self.local_model()
        pending, version, done, gradient_seconds = None, 0, 0, 0.0
        stream = batches(iterator, self.batch_size)
        window, pulled = list(itertools.islice(stream, self.fetch_every)), False
        while window:
            if not pulled:
                version = self._pull(channel, params, window, done)
            pulled, upcoming = False, None
            for i, batch in enumerate(window):
                started = time.perf_counter()
                update = self.gradient(model, batch)
                gradient_seconds += time.perf_counter() - started
                if update:
                    pending = sum_updates(pending, update)
                done += 1
                if done % self.push_every == 0 and pending is not None:
                    if i == len(window) - 1:
                        upcoming = list(itertools.islice(stream, self.fetch_every))
                    if upcoming and self.rows is not None and self._wait_condition(channel, done) is None:
                        # the push and the next window's pull share one round trip
                        wanted = _union_rows([self.rows(b) for b in upcoming])
                        version = channel.push_pull_rows_into(pending, version, params, wanted)
                        pulled = True
                    else:
                        channel.push(pending, version)
                    pending = None
            window = upcoming if upcoming is not None else list(itertools.islice(stream, self.fetch_every))
        if pending is not None:
            channel.push(pending, version)
        return channel.report(batches=done, gradient_seconds=gradient_seconds)

    def _wait_condition(self, channel, done: int):
        """What the pull for batch ``done`` must wait for, or None: no ``wait_for``, nothing to
        wait for, or a wait already timed out. A row pull that waits for nothing can ride on
        the push before it."""
        if self.wait_for is None or channel.stats["wait_timeouts"]:
            return None
        return self.wait_for(done)

    def _pull(self, channel, params, window, done) -> int:
        if self.rows is None:
            return channel.pull_into(params)
        wanted = _union_rows([self.rows(b) for b in window])
        condition = self._wait_condition(channel, done)
        if condition is None:
            return channel.pull_rows_into(params, wanted)
        version = channel.pull_rows_into(params, wanted, (*condition, self.wait_timeout))
        if channel.stats["wait_timeouts"]:  # the others are not running: stop waiting
            log.warning("partition %d: the model did not reach %s >= %s within %.0fs; this task "
                        "goes on without waiting", channel.partition, *condition, self.wait_timeout)
        return version
