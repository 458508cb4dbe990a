"""What the model server counts: updates in, applied and refused, bytes, staleness, task metrics.

:class:`ServerCounters` is the part of ``GET /status`` that is counted; the store adds its
version, epoch and queue depth.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict

#: Distinct metric names that tasks may report (``deepdist.report``), and their longest name.
MAX_METRICS = 256
MAX_METRIC_NAME = 100


def staleness_bucket(staleness: int) -> str:
    """Histogram bucket of a staleness: exact up to 3, then powers of two."""
    if staleness < 4:
        return str(staleness)
    low = 1 << (int(staleness).bit_length() - 1)
    return f"{low}-{2 * low - 1}"


class Metric:
    """A task-reported value: the last one, and the running mean."""

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


class ServerCounters:
    """Thread-safe counters of one store (request threads and the applier write them).

    ``metrics`` maps a metric name to its :class:`Metric`; the driver may add to it directly
    (a missing name is created), e.g. to show a value of its own on ``/status``.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.received = 0
        self.applied = 0
        self.rejected: Counter = Counter()
        self.bytes_in = 0
        self.bytes_out = 0
        self.staleness: Counter = Counter()
        self.metrics: dict[str, Metric] = defaultdict(Metric)
        self.metrics_ignored = 0   # metric values dropped past MAX_METRICS names
        self.started_at = time.time()

    def count_received(self, nbytes: int, metrics: dict) -> None:
        """A queued update of ``nbytes`` on the wire, with the metrics its task reported."""
        with self._lock:
            self.received += 1
            self.bytes_in += nbytes
            for name, value in metrics.items():
                if name not in self.metrics and (len(self.metrics) >= MAX_METRICS or len(name) > MAX_METRIC_NAME):
                    self.metrics_ignored += 1
                    continue
                self.metrics[name].add(float(value))

    def count_applied(self, staleness: int) -> None:
        with self._lock:
            self.applied += 1
            self.staleness[staleness_bucket(staleness)] += 1

    def count_rejected(self, reason: str) -> None:
        with self._lock:
            self.rejected[reason] += 1

    def count_bytes_out(self, nbytes: int) -> None:
        with self._lock:
            self.bytes_out += nbytes

    def to_json(self) -> dict:
        with self._lock:
            return {
                "updates_received": self.received,
                "updates_applied": self.applied,
                "updates_rejected": sum(self.rejected.values()),
                "rejected_by_reason": dict(self.rejected),
                "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out,
                "staleness_histogram": dict(self.staleness),
                "metrics": {name: m.to_json() for name, m in self.metrics.items()},
                "metrics_ignored": self.metrics_ignored,
                "uptime_seconds": round(time.time() - self.started_at, 3),
            }
