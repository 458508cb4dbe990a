"""Per-epoch records of a word2vec fit, closed on the driver where each epoch really ends."""

from __future__ import annotations

import logging
import time

from .training import _TASK_TOTALS

log = logging.getLogger(__name__)


class _EpochClock:
    """Per-epoch records, closed where each epoch really ends.

    One job per epoch: at the end of each job, with the tasks' own reports.  One job for
    all epochs: when the words all tasks pushed reach k times the corpus, the k-th epoch
    ends (the boundary :meth:`_Gradient.epoch_at` uses); that is seen by the applier
    thread, push by push, and the traffic, time and the rate the tasks applied are read
    there.  Either way a record holds what happened in its epoch only.

    ``records`` fill up here; the estimator hands each to its history and callbacks on the
    driver's own thread once the job that holds it has ended (callbacks never run on the
    applier thread, against a model still being trained).  ``elapsed`` is stamped at the
    epoch's end, since ``fit_started`` (a ``time.perf_counter()``).
    """

    def __init__(self, dd, served, gradient, epoch_words: int, epochs: int, fetch_every: int,
                 at_word_boundaries: bool, fit_started: float):
        self.dd, self.served, self.gradient = dd, served, gradient
        self.epoch_words, self.epochs, self.fetch_every = epoch_words, epochs, fetch_every
        self.at_word_boundaries, self.fit_started = at_word_boundaries, fit_started
        self.matrices = dd.store.spec.nbytes
        self.records: list[dict] = []
        self.pushes = 0
        self._base = None

    def _snapshot(self) -> dict:
        status = self.dd.store.status()
        return {"time": time.perf_counter(), "bytes_in": status["bytes_in"], "bytes_out": status["bytes_out"],
                "words_done": int(self.served.words_done[0]), "totals": self.served.task_totals.copy(),
                "pushes": self.pushes}

    def start(self) -> None:
        """A job starts: the time between jobs (callbacks, scheduling) belongs to no epoch."""
        self._base = self._snapshot()

    def after_push(self) -> None:
        """Called by the descent on the applier thread after each applied push."""
        self.pushes += 1
        if (self.at_word_boundaries and len(self.records) < self.epochs - 1
                and self.served.words_done[0] >= (len(self.records) + 1) * self.epoch_words):
            self._close()

    def finish(self, reports: list) -> None:
        """A job ended and its updates are applied: close its (last) epoch."""
        if len(self.records) < self.epochs:
            self._close(None if self.at_word_boundaries else reports)

    def _close(self, reports=None) -> None:
        now, base = self._snapshot(), self._base
        self._base = now
        seconds = now["time"] - base["time"]
        words = now["words_done"] - base["words_done"]
        totals = dict(zip(_TASK_TOTALS, now["totals"] - base["totals"]))
        pushes = now["pushes"] - base["pushes"]
        # a pull precedes every fetch_every batches; in one job for all epochs no task report
        # splits them by epoch, so they are counted from the batches the pushes carried
        pulls = (sum(r["pulls"] for r in reports) if reports is not None
                 else round(totals["batches"] / self.fetch_every))
        record = {"epoch": len(self.records) + 1, "seconds": seconds, "elapsed": now["time"] - self.fit_started,
                  "words": words, "words_per_sec": words / seconds if seconds > 0 else 0.0,
                  "bytes_pulled": now["bytes_out"] - base["bytes_out"],
                  "bytes_pushed": now["bytes_in"] - base["bytes_in"],
                  "pulls": pulls, "pushes": pushes,
                  "dense_bytes_pulled": pulls * self.matrices, "dense_bytes_pushed": pushes * self.matrices,
                  "words_done": now["words_done"],
                  # the schedule's rate where the epoch ended, and the mean rate the tasks applied
                  "alpha": self.gradient.alpha_at(now["words_done"]),
                  "alpha_mean": float(totals["alpha_words"] / words) if words else None,
                  "gradient_seconds": float(totals["gradient_seconds"])}
        if reports is not None:  # summed over the tasks: where their time went
            record.update(task_seconds=sum(r["seconds"] for r in reports),
                          network_seconds=sum(r["network_seconds"] for r in reports))
        self.records.append(record)
        log.info("word2vec epoch %d/%d: %.2fs, %.0f words/s, mean alpha %.5f, pulled %.1f MB, pushed %.1f MB",
                 record["epoch"], self.epochs, seconds, record["words_per_sec"], record["alpha_mean"] or 0.0,
                 record["bytes_pulled"] / 1e6, record["bytes_pushed"] / 1e6)


class _Clocked:
    """The driver's descent, then the epoch clock's look at the counters it just moved."""

    def __init__(self, descent, clock: _EpochClock):
        self.descent, self.clock = descent, clock

    def __call__(self, served, update: dict) -> None:
        self.descent(served, update)
        if self.clock is not None:
            self.clock.after_push()

    def __getstate__(self):
        # sent to another shard's process (servers > 1): the clock reads the counters, which live
        # whole on shard 0, the driver's; the other shards only descend
        return {"descent": self.descent, "clock": None}
