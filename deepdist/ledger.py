"""Exactly-once accounting of additive updates across Spark task attempts.

Spark retries failed tasks and may run speculative copies, so a partition's
updates can arrive twice or half-done.  For additive models (counts, gradient
sums) the ledger remembers what each (epoch, partition, attempt) contributed:

* when a newer attempt of a partition starts pushing, older attempts'
  contributions are rolled back and their further pushes refused;
* at the end of the epoch, the attempt whose result Spark kept (the "winner")
  is the only one left applied; if it had been rolled back, it is re-applied.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from .errors import DeepDistError
from .sparse import SparseRows, negate, sum_many

# Below this many bytes of pending updates an attempt does not compact them yet.
_COMPACT_FLOOR = 1 << 20


class _Attempt:
    """The running sum of one attempt's updates.

    The sum is only read for a rollback or a re-apply (rare: retries), while every push adds
    to it. Sparse parts of a small parameter (at most ``_DENSE_BYTES``, such as a V × K count
    table) are added into a dense table of that shape as they arrive: O(entries) per push,
    no sort. Other updates are kept as a list and summed lazily; the list is compacted
    whenever it outgrows the total (and a floor), so the work stays O(n log n) overall and
    memory within about twice the total. (Summing each push into a sparse total as it
    arrived cost a sort of the whole total per push.)
    """

    __slots__ = ("_total", "_pending", "_pending_bytes", "_dense", "applied", "updates")

    def __init__(self):
        self._total = None     # compacted sum of earlier updates (owned: safe to add into)
        self._pending = []     # later updates, not summed yet
        self._pending_bytes = 0
        self._dense = {}       # name -> dense sum of the sparse parts of a small parameter
        self.applied = False   # is `total` currently part of the model?
        self.updates = 0

    def add(self, update: dict) -> None:
        rest = {}
        for name, part in update.items():
            if isinstance(part, SparseRows) and _dense_bytes(part) <= _DENSE_BYTES:
                table = self._dense.get(name)
                if table is None:
                    table = self._dense[name] = np.zeros(part.shape, part.values.dtype)
                part.add_to(table)
            else:
                rest[name] = part
        self.updates += 1
        if rest:
            self._pending.append(rest)
            self._pending_bytes += _nbytes(rest)
            if self._pending_bytes > max(_COMPACT_FLOOR, _nbytes(self._total)):
                self._compact()

    def _compact(self) -> None:
        if self._pending:
            parts = self._pending if self._total is None else [self._total] + self._pending
            self._total = sum_many(parts, owned_first=self._total is not None)
            self._pending, self._pending_bytes = [], 0

    @property
    def total(self):
        """Sum of every update of this attempt that was recorded (None before the first)."""
        self._compact()
        if not self._dense:
            return self._total
        total = dict(self._total or {})
        for name, table in self._dense.items():
            rows = np.flatnonzero(table.reshape(len(table), -1).any(axis=1))
            total[name] = SparseRows(rows, table[rows], table.shape)
        return total


#: Sparse parts of parameters up to this size are summed in a dense table per attempt.
_DENSE_BYTES = 8 << 20


def _dense_bytes(part: SparseRows) -> int:
    return math.prod(part.shape) * part.values.dtype.itemsize


def _nbytes(update) -> int:
    if update is None:
        return 0
    return sum(getattr(part, "nbytes", 0) for part in update.values())


class AttemptLedger:
    """What each task attempt of an epoch contributed to an additive model."""

    def __init__(self):
        self._lock = threading.Lock()
        self._newest: dict[tuple, int] = {}           # (epoch, partition) -> newest attempt admitted
        self._attempts: dict[tuple, dict[int, _Attempt]] = {}

    def admit(self, epoch: int, partition: int, attempt: int) -> bool:
        """Called when an update is queued; False if a newer attempt took over."""
        key = (epoch, partition)
        with self._lock:
            newest = self._newest.get(key, -1)
            if attempt < newest:
                return False
            self._newest[key] = attempt
            return True

    def record(self, epoch: int, partition: int, attempt: int, update: dict):
        """Book an update about to be applied.

        Returns ``(apply_it, corrections)``: the corrections roll back older
        attempts of the same partition still in the model and go first; when a
        newer attempt has already contributed, the update is only booked (it is
        re-applied if its attempt turns out to be the one Spark kept).
        """
        attempts = self._attempts.setdefault((epoch, partition), {})
        entry = attempts.setdefault(attempt, _Attempt())
        entry.add(update)
        if any(number > attempt for number in attempts):
            return False, []
        corrections = []
        for number, old in attempts.items():
            if number < attempt and old.applied:
                corrections.append(negate(old.total))
                old.applied = False
        entry.applied = True
        return True, corrections

    def reconcile(self, epoch: int, winners: dict) -> list:
        """Corrections that leave exactly the winning attempts applied.

        ``winners`` maps partition -> (attempt, number of updates it pushed).
        """
        corrections = []
        for (ep, partition), attempts in list(self._attempts.items()):
            if ep != epoch:
                continue
            if partition not in winners:
                raise DeepDistError(
                    f"partition {partition} pushed updates in epoch {epoch} but no task result "
                    "names it; cannot make the model exact")
            win_attempt, pushed = winners[partition]
            for number, entry in attempts.items():
                if number != win_attempt and entry.applied and entry.total is not None:
                    corrections.append(negate(entry.total))
                    entry.applied = False
            win = attempts.get(win_attempt)
            applied = win.updates if win else 0
            if applied != pushed:
                raise DeepDistError(
                    f"partition {partition} attempt {win_attempt} pushed {pushed} updates but "
                    f"{applied} were applied; cannot make the model exact")
            if win is not None and not win.applied and win.total is not None:
                corrections.append(win.total)
                win.applied = True
        for key in [k for k in self._attempts if k[0] == epoch]:
            del self._attempts[key]
        with self._lock:
            for key in [k for k in self._newest if k[0] == epoch]:
                del self._newest[key]
        return corrections
