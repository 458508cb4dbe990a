"""A progress line on the driver while Spark runs an epoch."""

from __future__ import annotations

import logging
import sys
import threading
import time

log = logging.getLogger("deepdist")


def _task_counts(sc) -> tuple[int, int]:
    tracker = sc.statusTracker()
    done = total = 0
    for stage_id in tracker.getActiveStageIds():
        info = tracker.getStageInfo(stage_id)
        if info is not None:
            done += info.numCompletedTasks
            total += info.numTasks
    return done, total


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GB"


class ProgressLine:
    """Shows ``epoch, tasks, version, updates, queue, metrics`` while a block runs.

    On a terminal the line is redrawn in place on stderr; otherwise it is logged
    at INFO every ``log_every`` seconds.  ``describe`` adds text (e.g. a
    log-likelihood) from the caller.

    Tasks that run several epochs in one Spark job (or one epoch of several, each its own
    job) know which epoch they are in better than the caller's label: when they report
    ``epoch`` and ``epochs`` metrics (``deepdist.report(epoch=3, epochs=5)``), the line
    starts with ``epoch 3/5`` from the latest push instead of the label.

    Example::

        with ProgressLine(sc, store, "epoch 1/3"):
            rdd.mapPartitions(work).collect()
    """

    def __init__(self, sc, store, label: str, enabled: bool = True, interval: float = 0.5,
                 log_every: float = 10.0, describe=None):
        self.sc, self.store, self.label = sc, store, label
        self.enabled = enabled
        self.interval = interval
        self.log_every = log_every
        self.describe = describe
        self._stop = threading.Event()
        self._tty = sys.stderr.isatty()
        self._thread = None
        self._started = 0.0

    def line(self) -> str:
        status = self.store.status()
        done, total = _task_counts(self.sc)
        elapsed = time.monotonic() - self._started
        metrics = dict(status["metrics"])
        epoch, epochs = metrics.pop("epoch", None), metrics.pop("epochs", None)
        label = self.label
        if epoch is not None and epochs is not None and epoch["count"]:
            label = f"epoch {int(epoch['last'])}/{int(epochs['last'])}"
        parts = [label, f"tasks {done}/{total}" if total else "tasks -",
                 f"v{status['version']}", f"applied {status['updates_applied']}",
                 f"queue {status['queue_depth']}",
                 f"in {_human_bytes(status['bytes_in'])} out {_human_bytes(status['bytes_out'])}"]
        for name, metric in sorted(metrics.items()):
            parts.append(f"{name} {metric['last']:.4g}")
        if self.describe is not None:
            parts.append(self.describe())
        parts.append(f"{elapsed:.1f}s")
        return " | ".join(parts)

    def _loop(self) -> None:
        last_log = time.monotonic()
        while not self._stop.wait(self.interval):
            if self._tty:
                sys.stderr.write("\r" + self.line()[:200].ljust(120))
                sys.stderr.flush()
            elif time.monotonic() - last_log >= self.log_every:
                log.info("%s", self.line())
                last_log = time.monotonic()

    def __enter__(self):
        self._started = time.monotonic()
        if self.enabled:
            self._thread = threading.Thread(target=self._loop, name="deepdist-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            if self._tty:
                sys.stderr.write("\r" + self.line()[:200].ljust(120) + "\n")
                sys.stderr.flush()
        log.info("%s", self.line())
        return False
