"""The log of recent additive updates, from which a task learns what the others changed.

In additive mode (:meth:`deepdist.store.ParameterStore.set_descent` with ``additive=True``)
a task that holds the model at version ``V`` plus its own updates reaches the latest version
by adding what the *other* tasks pushed after ``V``: usually a few sparse rows, where a full
pull is the whole model. The store keeps those updates here, one entry per version, and
serves them for ``GET /changes?since=V`` and ``POST /update?since=V``.

The log is bounded by the model's size: past it a full pull is cheaper, so the older half
is dropped and a task asking for a version before the log's floor is told to pull.
"""

from __future__ import annotations

import numpy as np

from .sparse import SparseRows


def _nbytes(update: dict) -> int:
    return sum(getattr(part, "nbytes", 0) for part in update.values())


class ChangeLog:
    """The updates behind versions ``floor + 1 .. floor + len(log)``, each tagged with its sender.

    A tag is the ``(partition, attempt)`` that pushed the update, or ``None`` for a
    correction (a ledger rollback or repair): a reader whose window holds one cannot tell
    it apart from its own updates, so it must pull the whole model.

    Not thread-safe on its own: the store calls it under the model lock.
    """

    def __init__(self, limit_bytes: int, version: int = 0):
        self.limit_bytes = limit_bytes
        self.reset(version)

    def reset(self, version: int) -> None:
        """Forget every entry: the next one is the update behind ``version + 1``."""
        self._entries: list = []     # (tag, update)
        self._bytes = 0
        self.floor = version

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def append(self, tag, update: dict) -> None:
        """Log the update behind the next version."""
        self._entries.append((tag, update))
        self._bytes += _nbytes(update)
        if self._bytes > self.limit_bytes:  # past that, a full pull is cheaper anyway
            drop = max(1, len(self._entries) // 2)
            self._bytes -= sum(_nbytes(update) for _, update in self._entries[:drop])
            del self._entries[:drop]
            self.floor += drop

    def since(self, version: int, partition: int, attempt: int) -> dict | None:
        """What senders other than ``(partition, attempt)`` added after ``version``, as merged
        sparse rows per parameter (repeated rows add up); None when the reader must pull the
        whole model: ``version`` is outside the log, or a correction or a dense part lies in
        the window."""
        start = version - self.floor
        if not 0 <= start <= len(self._entries):
            return None
        parts: dict = {}
        for tag, update in self._entries[start:]:
            if tag is None:
                return None
            if tag == (partition, attempt):
                continue
            for name, part in update.items():
                if not isinstance(part, SparseRows):
                    return None
                parts.setdefault(name, []).append(part)
        return {name: ps[0] if len(ps) == 1 else SparseRows(np.concatenate([p.indices for p in ps]),
                                                            np.concatenate([p.values for p in ps]), ps[0].shape)
                for name, ps in parts.items()}
