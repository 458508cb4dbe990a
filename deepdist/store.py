"""The transport-free heart of the model server.

A :class:`ParameterStore` owns the model, its version, a bounded queue of
validated updates and the one applier thread that calls ``descent`` on them in
arrival order, under the model lock.  The HTTP layer (:mod:`deepdist.server`)
is a thin shell around it, so everything here is testable without sockets.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, defaultdict

import numpy as np

from . import wire
from .config import ServerConfig
from .errors import ConfigurationError, DescentFailedError, SupersededAttemptError
from .ledger import AttemptLedger
from .params import ModelSpec, ParamAdapter
from .sparse import SparseRows, scale

log = logging.getLogger(__name__)

_STOP = object()

#: Task attempts (epoch, partition, attempt) of unsettled epochs whose pushes the store tracks;
#: a push from one more is refused. An epoch's are forgotten when it is settled.
MAX_SENDERS = 1 << 16
#: Pushes of one attempt that may arrive ahead of a missing one (a task pushes in order).
MAX_SEQS_AHEAD = 16
#: Distinct metric names that tasks may report (``deepdist.report``), and their longest name.
MAX_METRICS = 256
MAX_METRIC_NAME = 100


def staleness_bucket(staleness: int) -> str:
    """Histogram bucket of a staleness: exact up to 3, then powers of two."""
    if staleness < 4:
        return str(staleness)
    low = 1 << (int(staleness).bit_length() - 1)
    return f"{low}-{2 * low - 1}"


class QueueFullError(Exception):
    """No room in the update queue within the back-pressure timeout."""


class PushRefusedError(SupersededAttemptError):
    """A push beyond the store's bookkeeping bounds (too many senders, too far out of order): a 409."""


class _Metric:
    __slots__ = ("last", "total", "count")

    def __init__(self):
        self.last, self.total, self.count = 0.0, 0.0, 0

    def add(self, value: float) -> None:
        self.last = value
        self.total += value
        self.count += 1

    def to_json(self) -> dict:
        return {"last": self.last, "mean": self.total / self.count if self.count else None,
                "count": self.count}


class ParameterStore:
    """Versioned parameters, the update queue and the applier thread.

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
                 checkpointer=None):
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
        # (epoch, partition, attempt) -> how many of its updates the applier has finished
        self._finished_by: dict = {}
        # epochs whose attempts are reconciled: a late push tagged with one (a losing speculative
        # copy, a task on an executor wrongly declared lost) could never be rolled back
        self._settled: set = set()
        self.version = 0
        self.epoch = 0
        self._descent = None
        self._additive = False
        self._ledger = AttemptLedger()
        # additive mode: the updates behind the latest versions, so a task can fetch what
        # others changed since its last pull instead of the whole model (see changes())
        self._log: list = []          # (tag, update) for versions _log_floor+1 .. version
        self._log_floor = 0
        self._log_bytes = 0
        self._queue: queue.Queue = queue.Queue(maxsize=self.config.queue_size)
        self._pending = 0
        self._idle = threading.Condition()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        #: called from the applier thread when descent raises (e.g. to cancel Spark jobs)
        self.on_error = None
        self._snapshot = (None, None)          # (version, encoded parts)
        self._snapshot_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self.received = 0
        # (epoch, partition, attempt) -> [floor, seqs >= floor]: which pushes arrived (see _admit_seq)
        self._seen: dict = {}
        self.applied = 0
        self.rejected: Counter = Counter()
        self.bytes_in = 0
        self.bytes_out = 0
        self.staleness = Counter()
        self.metrics: dict[str, _Metric] = defaultdict(_Metric)
        self.metrics_ignored = 0   # metric values dropped past MAX_METRICS names
        self.started_at = time.time()

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
            self._reset_log()

    @property
    def params(self) -> dict:
        return self.adapter.get(self.model)

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._apply_loop, name="deepdist-applier", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Apply what is queued, then stop the applier thread."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join()
        self._thread = None

    # -- updates ------------------------------------------------------------------
    def submit(self, update: dict, meta: wire.UpdateMeta, nbytes: int = 0, timeout: float | None = None) -> None:
        """Queue a validated update; blocks while the queue is full (back-pressure).

        Raises :class:`QueueFullError` after ``timeout`` seconds without room,
        :class:`SupersededAttemptError` if a newer attempt owns the partition and
        :class:`DescentFailedError` once ``descent`` has raised.
        """
        if self.error is not None:
            raise DescentFailedError(f"descent failed on the driver: {self.error!r}")
        if self._descent is None:
            raise ConfigurationError("no descent function is set: updates are accepted only during train()")
        with self._idle:
            # checked first, under the same lock end_epoch marks with: a push that passes is
            # pending before the epoch's drain starts, so reconcile sees it; one that does not
            # leaves no trace (a zombie's pushes must not grow the bookkeeping of a closed epoch)
            if meta.epoch in self._settled:
                settled = True
            else:
                settled = False
                self._pending += 1
        if settled:
            self._count_rejected("settled_epoch")
            raise SupersededAttemptError(
                f"epoch {meta.epoch} is already settled: the update of partition {meta.partition} "
                f"attempt {meta.attempt} comes from an attempt whose result Spark did not keep")
        sender = (meta.epoch, meta.partition, meta.attempt)
        try:
            if meta.partition >= 0 and not self._admit_seq(sender, meta.seq):
                # a client retried a POST whose first copy did arrive
                self._finish_one()
                return
            if self._additive and not self._ledger.admit(meta.epoch, meta.partition, meta.attempt):
                self._count_rejected("superseded")
                raise SupersededAttemptError(
                    f"partition {meta.partition} attempt {meta.attempt} was superseded by a newer attempt")
            self._queue.put((update, meta), timeout=timeout if timeout is not None
                            else self.config.backpressure_timeout)
        except queue.Full:
            self._finish_one()
            self._forget_seq(sender, meta.seq)
            raise QueueFullError(f"update queue full ({self.config.queue_size} waiting)") from None
        except BaseException:
            self._finish_one()
            raise
        with self._stats_lock:
            self.received += 1
            self.bytes_in += nbytes
            for name, value in meta.metrics.items():
                if name not in self.metrics and (len(self.metrics) >= MAX_METRICS or len(name) > MAX_METRIC_NAME):
                    self.metrics_ignored += 1
                    continue
                self.metrics[name].add(float(value))

    def _admit_seq(self, sender: tuple, seq: int) -> bool:
        """Book push ``seq`` of ``sender``; False if it was booked already (a retried POST).

        Bounded: a sender's pushes come in order, so it keeps the number below which every seq
        arrived plus at most ``MAX_SEQS_AHEAD`` seqs beyond a gap; at most ``MAX_SENDERS``
        senders of unsettled epochs are tracked. Past either bound the push is refused (409).
        """
        with self._stats_lock:
            book = self._seen.get(sender)
            if book is None:
                if len(self._seen) >= MAX_SENDERS:
                    self.rejected["too_many_senders"] += 1
                    raise PushRefusedError(
                        f"the server already tracks {MAX_SENDERS} task attempts of unsettled epochs; "
                        f"refusing epoch {sender[0]} partition {sender[1]} attempt {sender[2]}")
                book = self._seen[sender] = [0]      # [floor, seqs >= floor that arrived...]
            floor = book[0]
            if seq < floor or seq in book[1:]:
                self.rejected["duplicate"] += 1
                return False
            if seq == floor:
                floor += 1
                while floor in book[1:]:
                    book.remove(floor)
                    floor += 1
                book[0] = floor
            elif len(book) > MAX_SEQS_AHEAD:
                self.rejected["out_of_order"] += 1
                raise PushRefusedError(
                    f"push {seq} of partition {sender[1]} attempt {sender[2]} is out of order: "
                    f"push {floor} has not arrived and {MAX_SEQS_AHEAD} later ones have")
            else:
                book.append(seq)
            return True

    def _forget_seq(self, sender: tuple, seq: int) -> None:
        """Un-book push ``seq`` (it was not queued), so that its retry is taken."""
        with self._stats_lock:
            book = self._seen.get(sender)
            if book is None:
                return
            if seq in book[1:]:
                book.remove(seq)
            elif seq == book[0] - 1:
                book[0] = seq
            elif seq < book[0]:  # later pushes arrived meanwhile: they stay booked
                if book[0] - seq - 1 + len(book) - 1 > MAX_SEQS_AHEAD:
                    return       # cannot reopen it within the bound: its retry is refused as a duplicate
                book[1:] = sorted(set(book[1:]) | set(range(seq + 1, book[0])))
                book[0] = seq

    def drain(self, timeout: float | None = None) -> None:
        """Wait until every queued update has been applied (or refused)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._pending:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"{self._pending} updates still pending after {timeout}s")
                self._idle.wait(remaining if remaining is not None else 1.0)

    def _finish_one(self) -> None:
        with self._idle:
            self._pending -= 1
            if not self._pending:
                self._idle.notify_all()

    def _finish_sender(self, meta: wire.UpdateMeta) -> None:
        if meta.partition < 0:   # not a task: no push of its is tracked, nothing waits on it
            return
        with self._changed:
            key = (meta.epoch, meta.partition, meta.attempt)
            self._finished_by[key] = max(self._finished_by.get(key, 0), meta.seq + 1)
            self._changed.notify_all()

    def wait_finished(self, epoch: int, partition: int, attempt: int, seq: int, timeout: float) -> bool:
        """Block until the sender's update ``seq`` (and so every earlier one) is applied or refused.

        A task's pull after its own push waits for it: otherwise the rows it gets may still
        lack its last step, and it would take that step again (read your own writes).
        """
        if partition < 0:
            return True  # not a task's push: not tracked
        with self._changed:
            # a settled epoch's bookkeeping is gone, and nothing of it will be applied any more
            return self._changed.wait_for(
                lambda: self._finished_by.get((epoch, partition, attempt), 0) > seq
                or epoch in self._settled, timeout)

    def _count_rejected(self, reason: str) -> None:
        with self._stats_lock:
            self.rejected[reason] += 1

    def _apply_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                self._apply(*item)
            finally:
                self._finish_sender(item[1])
                self._finish_one()

    def _apply(self, update: dict, meta: wire.UpdateMeta) -> None:
        if self.error is not None:
            self._count_rejected("descent_failed")
            return
        with self.lock:
            staleness = max(0, self.version - meta.version)
            policy = self.config.staleness
            if policy == "drop" and staleness > self.config.max_staleness:
                self._count_rejected("too_stale")
                log.debug("dropped update from partition %s: staleness %s", meta.partition, staleness)
                return
            if policy == "scale" and staleness > 1:
                update = scale(update, 1.0 / staleness)
            steps = [update]
            if self._additive:
                try:
                    apply_it, corrections = self._ledger.record(meta.epoch, meta.partition, meta.attempt, update)
                except BaseException as exc:  # a spilled sum could not be written (a full disk)
                    self._fail(exc, "the ledger of additive updates")
                    return
                if not apply_it:
                    self._count_rejected("superseded")
                    return
                steps = corrections + [update]
            try:
                for step in steps:
                    # corrections carry no tag: whoever reads past one needs the whole model
                    self._descend(step, (meta.partition, meta.attempt) if step is update else None)
            except BaseException as exc:  # re-raised on the driver by train()
                self._fail(exc, "descent")
                return
            with self._stats_lock:
                self.applied += 1
                self.staleness[staleness_bucket(staleness)] += 1
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
            self._log_update(tag, update)

    def _log_update(self, tag, update: dict) -> None:
        self._log.append((tag, update))
        self._log_bytes += sum(getattr(part, "nbytes", 0) for part in update.values())
        if self._log_bytes > self.spec.nbytes:  # past that, a full pull is cheaper anyway
            drop = max(1, len(self._log) // 2)
            self._log_bytes -= sum(sum(getattr(p, "nbytes", 0) for p in u.values()) for _, u in self._log[:drop])
            del self._log[:drop]
            self._log_floor += drop

    def _reset_log(self) -> None:
        self._log, self._log_bytes, self._log_floor = [], 0, self.version

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

    def apply_corrections(self, corrections: list) -> None:
        """Apply ledger corrections directly (between epochs, the queue drained)."""
        with self.lock:
            for step in corrections:
                self._descend(step)

    def end_epoch(self, epoch: int, winners: dict) -> None:
        """Refuse further pushes of ``epoch``, drain, then leave exactly the winning attempts applied."""
        with self._idle:
            self._settled.add(epoch)
        self.drain()
        with self._stats_lock:
            self._seen = {key: book for key, book in self._seen.items() if key[0] != epoch}
        with self._changed:
            self._finished_by = {key: n for key, n in self._finished_by.items() if key[0] != epoch}
            self._changed.notify_all()   # waiters on a settled epoch's pushes give up
        if self.error is None and self._additive:
            # one correction at a time: a spilled attempt's sum is read back as it is applied
            self.apply_corrections(self._ledger.reconcile(epoch, winners))
        else:
            self._ledger.discard(epoch)
        with self.lock:
            self._reset_log()

    # -- reads -----------------------------------------------------------------------
    def snapshot(self, names=None) -> tuple[int, bytes]:
        """The latest model as one encoded frame, encoded once per version.

        Joining the frame under the model lock is the one copy a snapshot
        needs; every reader of that version shares the bytes.  ``names``
        selects some parameters (encoded afresh, not cached).
        """
        if names is not None:
            with self.lock:
                params = self.params
                return self.version, wire.encode({n: params[n] for n in names}, self._frame_meta())
        version, body = self._snapshot
        if version == self.version:
            return version, body
        with self._snapshot_lock:
            version, body = self._snapshot
            if version != self.version:
                with self.lock:
                    version = self.version
                    body = wire.encode(self.params, self._frame_meta())
                self._snapshot = (version, body)
            return version, body

    def rows(self, wanted: dict, **meta) -> tuple[int, bytes]:
        """Selected rows ``{name: indices}`` of the latest model, encoded (``meta`` joins the frame's).

        Only the copy of the rows holds the model lock; the frame is encoded after it.
        """
        with self.lock:
            params = self.params
            picked = {name: SparseRows(rows, np.take(params[name], rows, axis=0), params[name].shape)
                      for name, rows in wanted.items()}
            version, frame_meta = self.version, {**self._frame_meta(), **meta}
        return version, wire.encode(picked, frame_meta)

    def changes(self, since: int, partition: int, attempt: int) -> tuple[int, bytes]:
        """What the other tasks added after version ``since``, as sparse rows (repeats add up), encoded.

        Additive mode only: a task holding the model at ``since`` plus its own updates (those
        of ``(partition, attempt)`` are left out: it has them) reaches the latest version by
        adding these. The frame's meta says ``"full": true`` (and holds no arrays) when that
        is not possible: ``since`` is older than the log, a correction (ledger rollback or
        repair) happened since, or an update had dense parts; the task then pulls the model.
        """
        with self.lock:
            start = since - self._log_floor
            entries = self._log[start:] if self._additive and 0 <= start <= len(self._log) else None
            parts: dict = {}
            for tag, update in entries or ():
                if tag is None:
                    entries = None
                    break
                if tag == (partition, attempt):
                    continue
                for name, part in update.items():
                    if not isinstance(part, SparseRows):
                        entries = None
                        break
                    parts.setdefault(name, []).append(part)
                if entries is None:
                    break
            meta = {**self._frame_meta(), "full": entries is None}
            if entries is None:
                return self.version, wire.encode({}, meta)
            merged = {name: SparseRows(np.concatenate([p.indices for p in ps]),
                                       np.concatenate([p.values for p in ps]), ps[0].shape)
                      for name, ps in parts.items()}
            return self.version, wire.encode(merged, meta)

    def _frame_meta(self) -> dict:
        return {"version": self.version, "epoch": self.epoch}

    def count_bytes_out(self, nbytes: int) -> None:
        with self._stats_lock:
            self.bytes_out += nbytes

    def status(self) -> dict:
        with self._stats_lock:
            return {
                "version": self.version,
                "epoch": self.epoch,
                "updates_received": self.received,
                "updates_applied": self.applied,
                "updates_rejected": sum(self.rejected.values()),
                "rejected_by_reason": dict(self.rejected),
                "queue_depth": self._queue.qsize(),
                "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out,
                "staleness_histogram": dict(self.staleness),
                "metrics": {name: m.to_json() for name, m in self.metrics.items()},
                "metrics_ignored": self.metrics_ignored,
                "descent_error": repr(self.error) if self.error is not None else None,
                "uptime_seconds": round(time.time() - self.started_at, 3),
            }
