"""What the server has seen of each partition: its task attempts, pushes, progress, last contact.

The server learns a task's epoch, partition and attempt from every push (and every
``/changes`` read); an attempt it has not seen before for a partition it has is a retry (Spark
ran the task again). When the driver settles an epoch it names the attempt Spark kept.
"""

from __future__ import annotations

import threading
import time

#: Partitions tracked; beyond, contacts from new partition numbers are not shown.
MAX_PARTITIONS = 4096


class PartitionBoard:
    """Per partition: epoch, attempt, attempts seen, retries, pushes, progress, last contact, state.

    Example::

        >>> board = PartitionBoard()
        >>> board.contact(epoch=1, partition=0, attempt=7, pushed=True, metrics={"progress": 0.5})
        >>> board.contact(epoch=1, partition=0, attempt=9, pushed=True)     # Spark retried it
        >>> board.rows()[0]["retries"]
        1
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._rows: dict = {}

    def contact(self, *, epoch: int, partition: int, attempt: int, pushed: bool = False,
                metrics: dict | None = None) -> None:
        """A request from task ``attempt`` of ``partition`` in ``epoch`` (a push when ``pushed``)."""
        if partition < 0:
            return  # the driver's own pushes
        now = time.time()
        with self._lock:
            row = self._rows.get(partition)
            if row is None:
                if len(self._rows) >= MAX_PARTITIONS:
                    return
                row = self._rows[partition] = {"partition": partition, "epoch": epoch, "attempt": attempt,
                                               "attempts": {attempt}, "retries": 0, "pushes": 0, "epoch_pushes": 0,
                                               "progress": None, "last_contact": now, "state": "running"}
            if epoch != row["epoch"]:   # the partition's task of a later epoch (or job)
                row.update(epoch=epoch, attempt=attempt, attempts={attempt}, epoch_pushes=0, progress=None)
            elif attempt not in row["attempts"]:
                row["retries"] += 1
                row["attempts"].add(attempt)
                row.update(attempt=attempt, epoch_pushes=0, progress=None)
            elif attempt != row["attempt"]:
                return  # a late request of an attempt that was replaced
            row["last_contact"] = now
            row["state"] = "running"
            if pushed:
                row["pushes"] += 1
                row["epoch_pushes"] += 1
            progress = (metrics or {}).get("progress")
            if progress is not None:
                row["progress"] = float(progress)

    def settled(self, epoch: int, winners: dict) -> None:
        """``epoch`` is over; ``winners`` maps a partition to the attempt whose result Spark kept."""
        with self._lock:
            for partition, attempt in winners.items():
                row = self._rows.get(partition)
                if row is not None and row["epoch"] == epoch:
                    row.update(state="done", attempt=attempt, progress=1.0)

    def rows(self) -> list:
        """The partitions, in order, as JSON-able dicts (``attempts``: how many this epoch)."""
        with self._lock:
            return [{**row, "attempts": len(row["attempts"])} for _, row in sorted(self._rows.items())]
