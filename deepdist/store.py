"""The transport-free heart of the model server.

A :class:`ParameterStore` owns the model and its version, and applies validated updates in
arrival order, under the model lock, with ``descent``. Its other concerns have parts of their
own, which it wires together:

* :class:`~deepdist.applier.Applier`: the bounded update queue and the applier thread;
* :class:`~deepdist.senders.SenderBook`: which pushes of each task attempt arrived and which
  are done (retried POSTs are taken once; a task reads its own writes);
* :class:`~deepdist.ledger.AttemptLedger`: exactly-once accounting of additive updates;
* :class:`~deepdist.changelog.ChangeLog`: recent additive updates, for ``/changes``;
* :class:`~deepdist.counters.ServerCounters`: what ``/status`` counts.

The HTTP layer (:mod:`deepdist.server`) is a thin shell around the store's public methods, so
everything here is testable without sockets.
"""

from __future__ import annotations

import logging
import queue
import threading
import warnings

import numpy as np

from . import wire
from .applier import Applier
from .changelog import ChangeLog
from .config import ServerConfig
# the bounds and staleness_bucket lived here: importable from here still (set the bounds in their modules)
from .counters import MAX_METRIC_NAME, MAX_METRICS, ServerCounters, staleness_bucket
from .errors import ConfigurationError, DescentFailedError, QueueFullError, SupersededAttemptError
from .ledger import AttemptLedger
from .params import ModelSpec, ParamAdapter
from .senders import MAX_SENDERS, MAX_SEQS_AHEAD, PushRefusedError, SenderBook
from .sparse import SparseRows, scale

__all__ = ["ParameterStore", "QueueFullError", "PushRefusedError", "staleness_bucket",
           "MAX_METRICS", "MAX_METRIC_NAME", "MAX_SENDERS", "MAX_SEQS_AHEAD"]

log = logging.getLogger(__name__)

#: counters that were attributes of the store; they are its ``counters``' now
_COUNTER_ATTRIBUTES = frozenset({"received", "applied", "rejected", "bytes_in", "bytes_out", "staleness",
                                 "metrics_ignored", "started_at"})


class _EncodedSnapshot:
    """The whole model encoded once per version: every reader of that version shares the bytes."""

    def __init__(self):
        self._cached = (None, None)          # (version, encoded frame)
        self._lock = threading.Lock()

    def get(self, store: "ParameterStore") -> tuple[int, bytes]:
        version, body = self._cached
        if version == store.version:
            return version, body
        with self._lock:                     # one encoder per version; the others wait for it
            version, body = self._cached
            if version != store.version:
                # joining the frame under the model lock is the one copy a snapshot needs
                with store.lock:
                    version = store.version
                    body = wire.encode(store.params, store.frame_meta())
                self._cached = (version, body)
            return version, body


class ParameterStore:
    """Versioned parameters, applied to by one thread in arrival order.

    Attributes:
        model, adapter, spec: the model, how its parameter arrays are reached, their shapes.
        lock: the model lock; hold it to read or change the model consistently.
        version: how many changes the model has seen (updates, corrections, :meth:`bump`).
        epoch: the epoch the driver is running (stamped on every frame served).
        error: what ``descent`` (or the ledger) raised, once it has; updates are refused then.
        on_error: called from the applier thread with that error (e.g. to cancel Spark jobs).
        ledger, senders, counters: the store's parts (see the module's docstring).

    Example::

        >>> import numpy as np
        >>> from deepdist.store import ParameterStore
        >>> store = ParameterStore({"w": np.zeros(3)})
        >>> store.set_descent(lambda model, update: model["w"].__iadd__(update["w"]))
        >>> store.start()
        >>> store.submit({"w": np.ones(3)}, wire.UpdateMeta(version=0))
        >>> store.drain(); store.stop()
        >>> store.model["w"]
        array([1., 1., 1.])
    """

    def __init__(self, model, adapter: ParamAdapter | None = None, config: ServerConfig | None = None,
                 checkpointer=None, ledger: AttemptLedger | None = None):
        from .params import adapter_for

        self.model = model
        self.adapter = adapter or adapter_for(model)
        self.config = config or ServerConfig()
        self.config.validate()
        self.spec = ModelSpec.of(self.adapter.get(model))
        self.checkpointer = checkpointer
        self.lock = threading.RLock()
        #: notified (under ``lock``) whenever the version moves: waiters of :meth:`wait_for`
        self._changed = threading.Condition(self.lock)
        self.version = 0
        self.epoch = 0
        self.error: BaseException | None = None
        self.on_error = None
        self._descent = None
        self._additive = False
        self.counters = ServerCounters()
        self.ledger = ledger or AttemptLedger()
        self.senders = SenderBook(on_reject=self.counters.count_rejected)
        self._changelog = ChangeLog(limit_bytes=self.spec.nbytes)
        self._applier = Applier(self.config.queue_size, self._apply_one)
        self._snapshot = _EncodedSnapshot()

    def __getattr__(self, name):
        if name in _COUNTER_ATTRIBUTES:
            warnings.warn(f"ParameterStore.{name} is deprecated; use ParameterStore.counters.{name}",
                          DeprecationWarning, stacklevel=2)
            return getattr(self.counters, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # -- configuration -------------------------------------------------------
    def set_descent(self, descent, additive: bool = False) -> None:
        """Use ``descent(model, update)`` for the updates that follow."""
        if not callable(descent):
            raise ConfigurationError(f"descent must be callable, got {type(descent).__name__}")
        if additive and self.config.staleness != "apply":
            raise ConfigurationError(
                f"additive=True needs staleness='apply' (got {self.config.staleness!r}): "
                "scaled or dropped updates cannot be counted exactly")
        if self.config.staleness == "scale" and any(p.is_integer for p in self.spec.values()):
            raise ConfigurationError("staleness='scale' cannot scale integer parameters")
        self._descent = descent
        self._additive = additive
        with self.lock:
            self._changelog.reset(self.version)

    @property
    def additive(self) -> bool:
        """Do updates add up (and so are booked by the ledger and logged for ``/changes``)?"""
        return self._additive

    @property
    def params(self) -> dict:
        return self.adapter.get(self.model)

    @property
    def metrics(self) -> dict:
        """Task-reported metrics by name (:class:`~deepdist.counters.Metric`); the driver may add."""
        return self.counters.metrics

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        self._applier.start()

    def stop(self) -> None:
        """Apply what is queued, then stop the applier thread."""
        self._applier.stop()

    @property
    def alive(self) -> bool:
        """Is the applier thread running?"""
        return self._applier.alive

    # -- updates ------------------------------------------------------------------
    def submit(self, update: dict, meta: wire.UpdateMeta, nbytes: int = 0, timeout: float | None = None) -> None:
        """Queue a validated update; blocks while the queue is full (back-pressure).

        Raises :class:`QueueFullError` after ``timeout`` seconds without room,
        :class:`SupersededAttemptError` if a newer attempt owns the partition or the epoch is
        settled, and :class:`DescentFailedError` once ``descent`` has raised.
        """
        if self.error is not None:
            raise DescentFailedError(f"descent failed on the driver: {self.error!r}")
        if self._descent is None:
            raise ConfigurationError("no descent function is set: updates are accepted only during train()")
        # a push that passes the door is pending before its epoch's drain starts, so reconcile
        # sees it; one that does not leaves no trace (a zombie's pushes must not grow the
        # bookkeeping of a closed epoch)
        if not self._applier.enter(meta.epoch):
            self.count_rejected("settled_epoch")
            raise SupersededAttemptError(
                f"epoch {meta.epoch} is already settled: the update of partition {meta.partition} "
                f"attempt {meta.attempt} comes from an attempt whose result Spark did not keep")
        sender = (meta.epoch, meta.partition, meta.attempt)
        try:
            if meta.partition >= 0 and not self.senders.admit(sender, meta.seq):
                # a client retried a POST whose first copy did arrive
                self._applier.finish_one()
                return
            if self._additive and not self.ledger.admit(meta.epoch, meta.partition, meta.attempt):
                self.count_rejected("superseded")
                raise SupersededAttemptError(
                    f"partition {meta.partition} attempt {meta.attempt} was superseded by a newer attempt")
            self._applier.put((update, meta), timeout if timeout is not None else self.config.backpressure_timeout)
        except queue.Full as full:
            self._applier.finish_one()
            self.senders.forget_push(sender, meta.seq)
            raise QueueFullError(f"update queue full ({self.config.queue_size} waiting)") from full
        except BaseException:
            self._applier.finish_one()
            raise
        self.counters.count_received(nbytes, meta.metrics)

    def drain(self, timeout: float | None = None) -> None:
        """Wait until every queued update has been applied (or refused)."""
        self._applier.drain(timeout)

    def wait_finished(self, epoch: int, partition: int, attempt: int, seq: int, timeout: float) -> bool:
        """Block until the sender's update ``seq`` (and so every earlier one) is applied or refused.

        A task's pull after its own push waits for it: otherwise the rows it gets may still
        lack its last step, and it would take that step again (read your own writes).
        """
        if partition < 0:
            return True  # not a task's push: not tracked
        # a settled epoch's bookkeeping is gone, and nothing of it will be applied any more
        return self.senders.wait_finished((epoch, partition, attempt), seq, timeout,
                                          given_up=lambda: self._applier.settled(epoch))

    def count_rejected(self, reason: str) -> None:
        """Count an update refused for ``reason`` (``/status``'s ``rejected_by_reason``)."""
        self.counters.count_rejected(reason)

    def _apply_one(self, item) -> None:
        update, meta = item
        try:
            self._apply(update, meta)
        finally:
            if meta.partition >= 0:   # not a task: no push of its is tracked, nothing waits on it
                self.senders.finish((meta.epoch, meta.partition, meta.attempt), meta.seq)

    def _apply(self, update: dict, meta: wire.UpdateMeta) -> None:
        if self.error is not None:
            self.count_rejected("descent_failed")
            return
        with self.lock:
            staleness = max(0, self.version - meta.version)
            policy = self.config.staleness
            if policy == "drop" and staleness > self.config.max_staleness:
                self.count_rejected("too_stale")
                log.debug("dropped update from partition %s: staleness %s", meta.partition, staleness)
                return
            if policy == "scale" and staleness > 1:
                update = scale(update, 1.0 / staleness)
            steps = [update]
            if self._additive:
                try:
                    apply_it, corrections = self.ledger.record(meta.epoch, meta.partition, meta.attempt, update)
                except BaseException as exc:  # a spilled sum could not be written (a full disk)
                    self._fail(exc, "the ledger of additive updates")
                    return
                if not apply_it:
                    self.count_rejected("superseded")
                    return
                steps = corrections + [update]
            try:
                for step in steps:
                    # corrections carry no tag: whoever reads past one needs the whole model
                    self._descend(step, (meta.partition, meta.attempt) if step is update else None)
            except BaseException as exc:  # re-raised on the driver by train()
                self._fail(exc, "descent")
                return
            self.counters.count_applied(staleness)
            version = self.version
        if self.checkpointer is not None:
            self.checkpointer.after_update(self, version)

    def _fail(self, exc: BaseException, what: str) -> None:
        self.error = exc
        log.error("%s raised %r; training will stop", what, exc)
        if self.on_error is not None:
            self.on_error(exc)

    def _descend(self, update: dict, tag=None) -> None:
        result = self._descent(self.model, update)
        # descent updates in place; returning {name: new array} also works
        if isinstance(result, dict) and result is not self.model:
            self.adapter.set(self.model, result)
        self.spec.check(self.params)
        self.version += 1
        self._changed.notify_all()
        if self._additive:
            self._changelog.append(tag, update)

    def call_descent(self, method: str, *args):
        """``descent.method(model, *args)`` under the model lock (between epochs: a descent's own
        step, such as blending what it merged); a true result means it changed the model, and
        readers get a new version."""
        with self.lock:
            changed = getattr(self._descent, method)(self.model, *args)
        if changed:
            self.bump()
        return changed

    def rewritten(self) -> None:
        """The driver rewrote parameters in place between epochs (a repair, a restore): a new
        version, and no task may reach it through the change log, which never saw the change."""
        with self._changed:
            self.bump()
            self._changelog.reset(self.version)

    def bump(self) -> None:
        """A new version for a change the driver made itself (outside ``descent``): readers refetch."""
        with self._changed:
            self.version += 1
            self._changed.notify_all()

    def wait_for(self, name: str, at_least: float, timeout: float) -> bool:
        """Block until ``params[name].flat[0] >= at_least``; False if ``timeout`` seconds pass first.

        This is how a task waits for the model to reach a state (e.g. an M-step count: bounded
        staleness) without polling: every applied update wakes the waiters.
        """
        with self._changed:
            return bool(self._changed.wait_for(lambda: self.params[name].flat[0] >= at_least, timeout))

    def apply_corrections(self, corrections) -> None:
        """Apply ledger corrections directly (between epochs, the queue drained)."""
        with self.lock:
            for step in corrections:
                self._descend(step)

    def end_epoch(self, epoch: int, winners: dict) -> None:
        """Refuse further pushes of ``epoch``, drain, then leave exactly the winning attempts applied."""
        self._applier.settle(epoch)
        self.drain()
        self.senders.forget(epoch)   # and waiters on the epoch's pushes give up
        if self.error is None and self._additive:
            # one correction at a time: a spilled attempt's sum is read back as it is applied
            self.apply_corrections(self.ledger.reconcile(epoch, winners))
        else:
            self.ledger.discard(epoch)
        with self.lock:
            self._changelog.reset(self.version)

    # -- reads -----------------------------------------------------------------------
    def snapshot(self, names=None) -> tuple[int, bytes]:
        """The latest model as one encoded frame, encoded once per version.

        ``names`` selects some parameters (encoded afresh, not cached).
        """
        if names is None:
            return self._snapshot.get(self)
        with self.lock:
            params = self.params
            return self.version, wire.encode({n: params[n] for n in names}, self.frame_meta())

    def rows(self, wanted: dict, parts: bool = False, **meta) -> tuple[int, bytes]:
        """Selected rows ``{name: indices}`` of the latest model, encoded (``meta`` joins the frame's).

        Only the copy of the rows holds the model lock; the frame is encoded after it. With
        ``parts``, the frame is a list of buffers to send one after the other (not joined: a copy less).
        """
        with self.lock:
            params = self.params
            picked = {name: SparseRows(rows, np.take(params[name], rows, axis=0), params[name].shape)
                      for name, rows in wanted.items()}
            version, frame_meta = self.version, {**self.frame_meta(), **meta}
        return version, (wire.encode_parts if parts else wire.encode)(picked, frame_meta)

    def changes(self, since: int, partition: int, attempt: int, parts: bool = False) -> tuple[int, bytes]:
        """What the other tasks added after version ``since``, as sparse rows (repeats add up), encoded.

        Additive mode only: a task holding the model at ``since`` plus its own updates (those
        of ``(partition, attempt)`` are left out: it has them) reaches the latest version by
        adding these. The frame's meta says ``"full": true`` (and holds no arrays) when that
        is not possible (see :meth:`deepdist.changelog.ChangeLog.since`, and any non-additive
        model); the task then pulls the model. ``parts``: as in :meth:`rows`.
        """
        with self.lock:
            merged = self._changelog.since(since, partition, attempt) if self._additive else None
            version, meta = self.version, {**self.frame_meta(), "full": merged is None}
        # the merged rows are fresh arrays, or logged ones no one writes to: encoding needs no lock
        return version, (wire.encode_parts if parts else wire.encode)(merged or {}, meta)

    def frame_meta(self) -> dict:
        """The meta every served frame carries: the model's version and the running epoch."""
        return {"version": self.version, "epoch": self.epoch}

    def count_bytes_out(self, nbytes: int) -> None:
        self.counters.count_bytes_out(nbytes)

    def status(self) -> dict:
        counted = self.counters.to_json()
        return {"version": self.version, "epoch": self.epoch, **counted,
                "queue_depth": self._applier.depth,
                "descent_error": repr(self.error) if self.error is not None else None}
