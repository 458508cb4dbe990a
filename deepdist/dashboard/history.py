"""The metric history behind the dashboard's curves: the server's counters sampled over time.

A sampler thread reads the store's status once a ``interval`` (and the driver adds a sample
as every epoch starts and ends). Each point holds the cumulative counters (updates, bytes,
rejections), the queue depth, and for every task-reported metric
(:func:`deepdist.report`, or a value the driver added, like the Gibbs log-likelihood) the mean
of the values reported since the point before. The history is bounded: past ``max_points``
neighbouring points are merged in pairs, so a long fit keeps its whole course at a coarser
step (counters keep the later value; metric means are weighted by their counts).
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)

#: Seconds between samples.
SAMPLE_SECONDS = 1.0
#: Points kept; beyond, neighbours merge in pairs.
MAX_POINTS = 2000
#: Epoch marks kept (the oldest go first).
MAX_MARKS = 2000
#: Metrics a task reports for the progress line and the partitions table, not for a curve.
_NOT_CURVES = frozenset({"epoch", "epochs", "progress"})


def _merge(a: dict, b: dict) -> dict:
    """One point standing for ``a`` then ``b``."""
    merged = dict(b)
    metrics = dict(a["metrics"])
    counts = dict(a["counts"])
    for name, value in b["metrics"].items():
        n_a, n_b = counts.get(name, 0), b["counts"][name]
        metrics[name] = value if name not in metrics else (metrics[name] * n_a + value * n_b) / (n_a + n_b)
        counts[name] = n_a + n_b
    merged["metrics"], merged["counts"] = metrics, counts
    return merged


class MetricHistory:
    """Points sampled from a store's ``status()``, bounded; and the epochs' start and end marks.

    (Spark's own task counts are not sampled: its status tracker lags its tasks by seconds; the
    partitions table has what the server saw, as it happened.)

    Example::

        >>> history = MetricHistory(store.status)          # doctest: +SKIP
        >>> history.start(); ...; history.stop()           # doctest: +SKIP
        >>> history.since(0)["points"][-1]["applied"]      # doctest: +SKIP
        120
    """

    def __init__(self, status, interval: float = SAMPLE_SECONDS, max_points: int = MAX_POINTS):
        self._status = status
        self.interval, self.max_points = interval, max_points
        self.started = time.time()
        self._t0 = time.monotonic()
        self._lock = threading.Lock()
        self._points: list = []
        self._marks: list = []
        self._seen: dict = {}       # metric name -> (total, count) at the last sample
        self._n = 0                 # the last point's number
        self._marks_made = 0        # the last mark's number
        self.generation = 0         # bumped when points merge: readers take the whole history again
        self._stop = threading.Event()
        self._thread = None

    # -- life cycle --------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="deepdist-dashboard", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Take a last sample and stop sampling."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception:  # never let a sample stop the sampling
                log.debug("dashboard sample failed", exc_info=True)

    # -- recording ---------------------------------------------------------------------------
    def now(self) -> float:
        """Seconds since the history started (the points' ``t``)."""
        return round(time.monotonic() - self._t0, 3)

    def sample(self, status: dict | None = None) -> None:
        """Add a point from ``status`` (the store's, by default)."""
        status = status if status is not None else self._status()
        with self._lock:
            metrics, counts = {}, {}
            for name, metric in status.get("metrics", {}).items():
                if name in _NOT_CURVES or not metric["count"]:
                    continue
                total = metric["mean"] * metric["count"]
                before_total, before_count = self._seen.get(name, (0.0, 0))
                if metric["count"] > before_count:
                    new = metric["count"] - before_count
                    metrics[name] = (total - before_total) / new
                    counts[name] = new
                self._seen[name] = (total, metric["count"])
            self._n += 1
            point = {"n": self._n, "t": self.now(), "version": status.get("version", 0),
                     "epoch": status.get("epoch", 0), "received": status.get("updates_received", 0),
                     "applied": status.get("updates_applied", 0), "rejected": status.get("updates_rejected", 0),
                     "bytes_in": status.get("bytes_in", 0), "bytes_out": status.get("bytes_out", 0),
                     "queue": status.get("queue_depth", 0), "metrics": metrics, "counts": counts}
            self._points.append(point)
            if len(self._points) > self.max_points:
                self._compact()

    def _compact(self) -> None:
        pairs = range(0, len(self._points) - 1, 2)
        kept = [_merge(self._points[i], self._points[i + 1]) for i in pairs]
        if len(self._points) % 2:
            kept.append(self._points[-1])
        self._points = kept
        self.generation += 1

    def mark(self, label: str) -> None:
        """An epoch (or job) called ``label`` starts now: sample what the driver added since the last
        one ended (a Gibbs job's log-likelihood, a tree's size), so each job's value gets its own point."""
        self.sample()
        with self._lock:
            self._marks_made += 1
            self._marks.append({"i": self._marks_made, "label": label, "start": self.now(), "end": None})
            del self._marks[:-MAX_MARKS]

    def end_mark(self, label: str) -> None:
        """The epoch ``label`` has ended: close its mark and sample the state it ended in."""
        with self._lock:
            for mark in reversed(self._marks):
                if mark["label"] == label and mark["end"] is None:
                    mark["end"] = self.now()
                    break
        self.sample()

    # -- reading ------------------------------------------------------------------------------
    def since(self, after: int = 0, generation: int | None = None, mark: int = 0) -> dict:
        """The points after point ``after`` of ``generation`` (all of them when the points were
        merged since, and then ``"reset": true``), the marks from mark number ``mark`` on (the
        reader's last, which may have ended since; all of them on a reset), and where the reader is now."""
        with self._lock:
            reset = generation is not None and generation != self.generation or not after
            points = self._points if reset else [p for p in self._points if p["n"] > after]
            marks = self._marks if reset else [m for m in self._marks if m["i"] >= mark]
            return {"points": [dict(p) for p in points], "marks": [dict(m) for m in marks],
                    "generation": self.generation, "last": self._n, "reset": reset,
                    "started": self.started}
