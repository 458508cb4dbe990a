"""Periodic, atomic model checkpoints and resuming from them.

A checkpoint is one file of deepdist's on-disk format (:mod:`deepdist.persist`: a wire frame,
never pickle, written atomically) whose header records the model version and how many epochs
were complete.  This plays the part of dist_lda's "listener".
"""

from __future__ import annotations

import glob
import logging
import os
import time

import numpy as np

from . import persist, wire
from .errors import ConfigurationError

log = logging.getLogger(__name__)

_PATTERN = "checkpoint-{version:012d}.ddw"


class Checkpointer:
    """Writes the model to ``directory`` every ``every_updates`` updates or ``every_seconds``.

    Epoch ends always write one.  ``keep`` most recent checkpoints are kept.

    Example::

        with DeepDist(model, checkpoint=Checkpointer("ckpt/", every_seconds=60)) as dd:
            dd.train(rdd, gradient, descent, epochs=10)
        # after a crash:
        with DeepDist(model, checkpoint=Checkpointer("ckpt/"), resume=True) as dd:
            dd.train(rdd, gradient, descent, epochs=10)   # continues after the last full epoch
    """

    def __init__(self, directory, every_updates: int | None = None, every_seconds: float | None = None,
                 keep: int = 3):
        if every_updates is not None and every_updates < 1:
            raise ConfigurationError(f"every_updates must be >= 1, got {every_updates}")
        if every_seconds is not None and every_seconds <= 0:
            raise ConfigurationError(f"every_seconds must be > 0, got {every_seconds}")
        if keep < 1:
            raise ConfigurationError(f"keep must be >= 1, got {keep}")
        self.directory = os.fspath(directory)
        self.every_updates = every_updates
        self.every_seconds = every_seconds
        self.keep = keep
        self.epochs_completed = 0
        self._last_version = 0
        self._last_time = time.monotonic()
        if os.path.isdir(self.directory):
            persist.remove_leftovers(self.directory)

    def after_update(self, store, version: int) -> None:
        """Called by the applier after each update; writes when one is due.

        Mid-epoch checkpoints are skipped for additive models: resuming from
        one would count part of an epoch twice.
        """
        if store.additive:
            return
        due = (self.every_updates is not None and version - self._last_version >= self.every_updates) or (
            self.every_seconds is not None and time.monotonic() - self._last_time >= self.every_seconds)
        if due:
            self.write(store)

    def write(self, store, epochs_completed: int | None = None) -> str:
        if epochs_completed is not None:
            self.epochs_completed = epochs_completed
        with store.lock:
            version = store.version
            arrays = {name: np.array(a, copy=True) for name, a in store.params.items()}
        meta = {"version": version, "epochs_completed": self.epochs_completed, "time": time.time()}
        path = os.path.join(self.directory, _PATTERN.format(version=version))
        persist.write_frame(path, arrays, meta)
        self._last_version, self._last_time = version, time.monotonic()
        for old in self.list()[:-self.keep]:
            os.unlink(old)
        log.info("checkpoint written: %s (version %s, %s epochs complete)", path, version, self.epochs_completed)
        return path

    def list(self) -> list:
        return sorted(glob.glob(os.path.join(self.directory, "checkpoint-*.ddw")))

    def latest(self) -> wire.Frame | None:
        """The newest checkpoint, decoded, or ``None`` if there is none."""
        paths = self.list()
        if not paths:
            return None
        with open(paths[-1], "rb") as f:
            return wire.decode(f.read(), max_header_bytes=persist.MAX_FILE_HEADER_BYTES)
