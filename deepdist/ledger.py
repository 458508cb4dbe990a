"""Exactly-once accounting of additive updates across Spark task attempts.

Spark retries failed tasks and may run speculative copies, so a partition's
updates can arrive twice or half-done.  For additive models (counts, gradient
sums) the ledger remembers what each (epoch, partition, attempt) contributed:

* when a newer attempt of a partition starts pushing, older attempts'
  contributions are rolled back and their further pushes refused;
* at the end of the epoch, the attempt whose result Spark kept (the "winner")
  is the only one left applied; if it had been rolled back, it is re-applied.

Memory is bounded: each attempt keeps a running sum of its updates, which is up to
one model in size (a dense update touches every entry), and an epoch has one attempt
per partition at least. So the sums live in memory only up to ``MEMORY_BUDGET`` bytes
over all attempts; past it, the sums of the attempts that pushed least recently (those
whose task finished, usually) move to files in a temporary directory, where later
pushes of theirs are added too. A rollback or re-apply reads one attempt's sum back
at a time. Driver memory for the ledger is therefore at most ``MEMORY_BUDGET`` plus one
model-sized sum being read or spilled, whatever the number of partitions; the disk
holds the rest (one model per spilled attempt, allocated when it is spilled, so that a
full disk is an error there and not a crash later; if a spill fails, the sums stay in
memory, over the budget, and a warning says so).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import threading
import weakref
from collections import OrderedDict

import numpy as np

from .errors import DeepDistError
from .sparse import SparseRows

log = logging.getLogger(__name__)

#: Bytes of running sums the ledger keeps in memory, over all attempts; the rest is on disk.
MEMORY_BUDGET = 64 << 20

#: Where spilled sums go (a temporary directory is made inside): ``DEEPDIST_SPILL_DIR``,
#: else the system's temporary directory (``TMPDIR``). It should be a disk, not a tmpfs.
SPILL_DIR = os.environ.get("DEEPDIST_SPILL_DIR") or None

# Below this many bytes of pending sparse updates an attempt does not compact them yet.
_COMPACT_FLOOR = 1 << 20

#: Sparse parts of parameters up to this size are summed in a dense table per attempt.
_DENSE_BYTES = 8 << 20

# Rows are read back from a spilled sum in chunks of about this many bytes.
_READ_CHUNK = 4 << 20


def _dense_bytes(part: SparseRows) -> int:
    return math.prod(part.shape) * part.values.dtype.itemsize


def _nbytes(update) -> int:
    if update is None:
        return 0
    return sum(getattr(part, "nbytes", 0) for part in update.values())


def _sum_sparse(parts: list) -> SparseRows:
    if len(parts) == 1:
        return parts[0]
    return SparseRows(np.concatenate([p.indices for p in parts]), np.concatenate([p.values for p in parts]),
                      parts[0].shape).coalesce()


def _nonzero_rows(table: np.ndarray) -> SparseRows:
    """The rows of ``table`` (an array or a memmap) that are not all zero, copied, in chunks."""
    shape = table.shape
    row_bytes = max(1, table.itemsize * (math.prod(shape[1:]) if len(shape) > 1 else 1))
    step = max(1, _READ_CHUNK // row_bytes)
    indices, values = [], []
    for start in range(0, shape[0], step):
        chunk = np.asarray(table[start:start + step])
        rows = np.flatnonzero(chunk.reshape(len(chunk), -1).any(axis=1))
        if len(rows):
            indices.append(rows + start)
            values.append(chunk[rows].copy())   # a copy: the chunk may be a view of a memmap
    if not indices:
        return SparseRows(np.zeros(0, np.int64), np.zeros((0,) + shape[1:], table.dtype), shape)
    return SparseRows(np.concatenate(indices), np.concatenate(values), shape)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class _Spilled:
    """One parameter's running sum of one attempt, in a file (raw, C order)."""

    __slots__ = ("path", "dtype", "shape", "sparse_only")

    def __init__(self, path: str, dtype, shape: tuple, sparse_only: bool):
        self.path, self.dtype, self.shape, self.sparse_only = path, np.dtype(dtype), tuple(shape), sparse_only

    @classmethod
    def zeros(cls, path: str, dtype, shape: tuple, sparse_only: bool) -> "_Spilled":
        # the blocks are allocated now: a full disk is an OSError here, never a SIGBUS when a
        # write through the memory map finds no space
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            if nbytes:
                os.posix_fallocate(fd, 0, nbytes)
        except BaseException:
            os.close(fd)
            _unlink(path)
            raise
        os.close(fd)
        return cls(path, dtype, shape, sparse_only)

    def add(self, part) -> None:
        table = np.memmap(self.path, self.dtype, "r+", shape=self.shape)
        try:
            if isinstance(part, SparseRows):
                part.add_to(table)
            else:
                table += part
                self.sparse_only = False
        finally:
            del table                     # unmapped: its pages leave this process

    def read(self):
        """The sum, in memory: the nonzero rows (if only sparse parts came) or the dense array."""
        if self.sparse_only:
            table = np.memmap(self.path, self.dtype, "r", shape=self.shape)
            try:
                return _nonzero_rows(table)
            finally:
                del table
        return np.fromfile(self.path, self.dtype).reshape(self.shape)


class _Attempt:
    """The running sum of one attempt's updates.

    The sum is only read for a rollback or a re-apply (rare: retries), while every push adds
    to it. Dense parts are added into one owned array per parameter. Sparse parts of a small
    parameter (at most ``_DENSE_BYTES``, such as a V × K count table) are added into a dense
    table of that shape as they arrive: O(entries) per push, no sort. Sparse parts of larger
    parameters are kept as a list and summed lazily; the list is compacted whenever it
    outgrows the total (and a floor), so the work stays O(n log n) overall and memory within
    about twice the total. (Summing each push into a sparse total as it arrived cost a sort
    of the whole total per push.) Once spilled, every part is added into a file per parameter.
    """

    __slots__ = ("key", "_dense", "_sparse_only", "_sparse", "_pending", "_pending_bytes", "_files",
                 "applied", "updates", "nbytes")

    def __init__(self, key: tuple):
        self.key = key           # (epoch, partition, attempt)
        self._dense = {}         # name -> owned running sum (dense parts; sparse parts of small params)
        self._sparse_only = set()  # names in _dense that only sparse parts fed: total gives their rows
        self._sparse = {}        # name -> compacted SparseRows sum (sparse parts of large params)
        self._pending = {}       # name -> SparseRows not summed yet
        self._pending_bytes = 0
        self._files = None       # name -> _Spilled, once the attempt is spilled
        self.applied = False     # is the total currently part of the model?
        self.updates = 0
        self.nbytes = 0          # bytes of the running sum held in memory

    @property
    def spilled(self) -> bool:
        return self._files is not None

    def add(self, update: dict, spill_path=None) -> None:
        self.updates += 1
        if self._files is not None:
            for name, part in update.items():
                spilled = self._files.get(name)
                if spilled is None:
                    sparse = isinstance(part, SparseRows)
                    spilled = self._files[name] = _Spilled.zeros(
                        spill_path(), part.dtype, part.shape, sparse)
                spilled.add(part)
            return
        for name, part in update.items():
            table = self._dense.get(name)
            if isinstance(part, SparseRows) and table is None and _dense_bytes(part) > _DENSE_BYTES:
                self._pending.setdefault(name, []).append(part)
                self._pending_bytes += part.nbytes
                self.nbytes += part.nbytes
            elif table is None and name in self._sparse:
                # a dense part of a parameter that so far had large sparse ones: sum them here
                self._compact()
                table = self._dense[name] = np.array(part, copy=True) if not isinstance(part, SparseRows) \
                    else np.zeros(part.shape, part.values.dtype)
                if isinstance(part, SparseRows):
                    part.add_to(table)
                    self._sparse_only.add(name)
                self._sparse.pop(name).add_to(table)
                self._recount()
            elif table is None:
                if isinstance(part, SparseRows):
                    table = self._dense[name] = np.zeros(part.shape, part.values.dtype)
                    part.add_to(table)
                    self._sparse_only.add(name)
                else:
                    table = self._dense[name] = np.array(part, copy=True)
                self.nbytes += table.nbytes
            elif isinstance(part, SparseRows):
                part.add_to(table)
            else:
                table += part
                self._sparse_only.discard(name)
        if self._pending_bytes > max(_COMPACT_FLOOR, sum(p.nbytes for p in self._sparse.values())):
            self._compact()

    def _compact(self) -> None:
        for name, parts in self._pending.items():
            if name in self._dense:       # a dense part came meanwhile
                for part in parts:
                    part.add_to(self._dense[name])
                continue
            total = self._sparse.get(name)
            self._sparse[name] = _sum_sparse(parts if total is None else [total] + parts)
        self._pending, self._pending_bytes = {}, 0
        self._recount()

    def _recount(self) -> None:
        self.nbytes = (sum(t.nbytes for t in self._dense.values()) + sum(p.nbytes for p in self._sparse.values())
                       + self._pending_bytes)

    def spill(self, spill_path) -> None:
        """Move the running sum to files (``spill_path()`` names a new one); memory is freed.

        On an OSError (a full disk) nothing changes: the files written so far are removed.
        """
        self._compact()
        files = {}
        try:
            for name, table in self._dense.items():
                files[name] = _Spilled.zeros(spill_path(), table.dtype, table.shape, name in self._sparse_only)
                with open(files[name].path, "r+b") as f:
                    table.tofile(f)
            for name, total in self._sparse.items():
                files[name] = _Spilled.zeros(spill_path(), total.dtype, total.shape, True)
                files[name].add(total)
        except BaseException:
            for spilled in files.values():
                _unlink(spilled.path)
            raise
        self._files = files
        self._dense, self._sparse_only, self._sparse = {}, set(), {}
        self.nbytes = 0

    def total(self, sign: int = 1):
        """The sum of every recorded update times ``sign`` (None before the first).

        Arrays of an attempt in memory are its own when ``sign`` is 1 (the attempt must not
        take more updates while they are used); the rest are fresh.
        """
        if self.updates == 0:
            return None
        if self._files is not None:
            total = {name: spilled.read() for name, spilled in self._files.items()}
            if sign < 0:
                for part in total.values():
                    values = part.values if isinstance(part, SparseRows) else part
                    np.negative(values, out=values)
            return total
        self._compact()
        total = {}
        for name, table in self._dense.items():
            part = _nonzero_rows(table) if name in self._sparse_only else table
            total[name] = -part if sign < 0 else part
        for name, part in self._sparse.items():
            total[name] = -part if sign < 0 else part
        return total

    def discard(self) -> None:
        for spilled in (self._files or {}).values():
            _unlink(spilled.path)
        self._files = None
        self._dense, self._sparse, self._pending = {}, {}, {}
        self.nbytes = 0


class AttemptLedger:
    """What each task attempt of an epoch contributed to an additive model.

    ``memory_budget`` (default :data:`MEMORY_BUDGET`) bounds the bytes of running sums kept
    in memory; ``spill_dir`` (default :data:`SPILL_DIR`) is where the others go.
    """

    def __init__(self, memory_budget: int | None = None, spill_dir: str | None = None):
        self._lock = threading.Lock()
        self._book = threading.RLock()                # record / reconcile / spill
        self._newest: dict[tuple, int] = {}           # (epoch, partition) -> newest attempt admitted
        self._attempts: dict[tuple, dict[int, _Attempt]] = {}
        self._budget = memory_budget
        self._spill_dir = spill_dir
        self._in_memory: OrderedDict = OrderedDict()  # key -> _Attempt, least recently pushed first
        self.memory_bytes = 0                         # running sums held in memory
        self.peak_memory_bytes = 0
        self.spilled_attempts = 0                     # how many attempts went to disk, ever
        self.spill_failures = 0                       # spills that failed (a full disk): sums kept in memory
        self._dir = None
        self._files = 0
        self._finalizer = None

    @property
    def budget(self) -> int:
        return MEMORY_BUDGET if self._budget is None else self._budget

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
        with self._book:
            attempts = self._attempts.setdefault((epoch, partition), {})
            entry = attempts.get(attempt)
            if entry is None:
                entry = attempts[attempt] = _Attempt((epoch, partition, attempt))
            before = entry.nbytes
            entry.add(update, self._spill_path)
            self._account(entry, before)
            if any(number > attempt for number in attempts):
                return False, []
            corrections = []
            for number, old in attempts.items():
                if number < attempt and old.applied:
                    corrections.append(self._total(old, -1))
                    old.applied = False
            entry.applied = True
            return True, corrections

    def reconcile(self, epoch: int, winners: dict):
        """Corrections that leave exactly the winning attempts applied, one at a time.

        ``winners`` maps partition -> (attempt, number of updates it pushed). Every check is
        made before this returns; the corrections are read (from disk, for spilled attempts)
        as they are iterated, and each attempt's bookkeeping is freed once it is used.
        """
        with self._book:
            entries = {key: attempts for key, attempts in self._attempts.items() if key[0] == epoch}
            plan = []
            try:
                for (_, partition), attempts in entries.items():
                    if partition not in winners:
                        raise DeepDistError(
                            f"partition {partition} pushed updates in epoch {epoch} but no task result "
                            "names it; cannot make the model exact")
                    win_attempt, pushed = winners[partition]
                    win = attempts.get(win_attempt)
                    applied = win.updates if win else 0
                    if applied != pushed:
                        raise DeepDistError(
                            f"partition {partition} attempt {win_attempt} pushed {pushed} updates but "
                            f"{applied} were applied; cannot make the model exact")
                    for number, entry in attempts.items():
                        if number != win_attempt and entry.applied and entry.updates:
                            plan.append((-1, entry))
                    if win is not None and not win.applied and win.updates:
                        plan.append((1, win))
            except DeepDistError:
                self.discard(epoch)
                raise
            self._forget(epoch, keep={id(entry) for _, entry in plan})
        return self._corrections(plan)

    def _corrections(self, plan: list):
        try:
            while plan:
                sign, entry = plan.pop(0)
                entry.applied = sign > 0
                correction = self._total(entry, sign)
                self._drop(entry)
                yield correction
                del correction
        finally:
            for _, entry in plan:
                self._drop(entry)

    def discard(self, epoch: int) -> None:
        """Forget ``epoch`` without corrections (its updates stay as they are)."""
        with self._book:
            self._forget(epoch)

    def _forget(self, epoch: int, keep=()) -> None:
        for key in [k for k in self._attempts if k[0] == epoch]:
            for entry in self._attempts.pop(key).values():
                if id(entry) not in keep:
                    self._drop(entry)
        with self._lock:
            for key in [k for k in self._newest if k[0] == epoch]:
                del self._newest[key]

    def _total(self, entry: _Attempt, sign: int):
        with self._book:
            before = entry.nbytes
            total = entry.total(sign)     # may compact the sum: its size changes
            if entry.key in self._in_memory:
                self.memory_bytes += entry.nbytes - before
            return total

    def _drop(self, entry: _Attempt) -> None:
        with self._book:
            if self._in_memory.pop(entry.key, None) is not None:
                self.memory_bytes -= entry.nbytes
            entry.discard()

    def _account(self, entry: _Attempt, before: int) -> None:
        """Book ``entry``'s growth, then spill the least recently pushed attempts past the budget."""
        if entry.spilled:
            return
        self._in_memory[entry.key] = entry
        self._in_memory.move_to_end(entry.key)
        self.memory_bytes += entry.nbytes - before
        self.peak_memory_bytes = max(self.peak_memory_bytes, self.memory_bytes)
        while self.memory_bytes > self.budget and self._in_memory:
            key, victim = next(iter(self._in_memory.items()))
            freed = victim.nbytes
            try:
                victim.spill(self._spill_path)
            except OSError as err:
                # exactness first: the sums stay in memory, over the budget
                log.warning("cannot spill ledger sums to %s (%s): keeping %.0f MB in memory, over the "
                            "budget of %.0f MB", self._dir or self._spill_dir or SPILL_DIR or tempfile.gettempdir(),
                            err, self.memory_bytes / 1e6, self.budget / 1e6)
                self.spill_failures += 1
                break
            del self._in_memory[key]
            self.memory_bytes -= freed
            self.spilled_attempts += 1

    def _spill_path(self) -> str:
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="deepdist-ledger-", dir=self._spill_dir or SPILL_DIR)
            self._finalizer = weakref.finalize(self, shutil.rmtree, self._dir, True)
        self._files += 1
        return os.path.join(self._dir, f"{self._files}.sum")

    def epochs(self) -> set:
        """The epochs with any attempt still booked (admitted or recorded)."""
        with self._book, self._lock:
            return {key[0] for key in self._attempts} | {key[0] for key in self._newest}

    @property
    def spill_directory(self) -> str | None:
        return self._dir

    def close(self) -> None:
        """Forget every attempt and remove the spill directory."""
        with self._book:
            for attempts in self._attempts.values():
                for entry in attempts.values():
                    entry.discard()
            self._attempts.clear()
            self._in_memory.clear()
            self.memory_bytes = 0
            if self._finalizer is not None:
                self._finalizer()
            self._dir = self._finalizer = None
