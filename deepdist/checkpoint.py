"""Periodic, atomic model checkpoints and resuming from them.

A checkpoint is one wire frame on disk (the format of :mod:`deepdist.wire`,
never pickle) whose header records the model version and how many epochs were
complete.  It is written to a temporary file, flushed and renamed, so a crash
leaves either the old or the new checkpoint, never half of one.  This plays
the part of dist_lda's "listener".
"""

from __future__ import annotations

import glob
import logging
import os
import socket
import tempfile
import time

import numpy as np

from . import wire
from .errors import ConfigurationError

log = logging.getLogger(__name__)

_PATTERN = "checkpoint-{version:012d}.ddw"
#: a writer's temporary files name its host and process, so that another process can tell a
#: crashed writer's leftovers from a live writer's file in progress
_TMP_PREFIX = ".tmp-checkpoint-"


def _tmp_prefix() -> str:
    return f"{_TMP_PREFIX}{socket.gethostname()}-{os.getpid()}-"


def remove_leftovers(directory: str) -> list:
    """Delete the temporary files of writers on this host that died mid-write; return their paths."""
    removed = []
    host = socket.gethostname()
    for path in glob.glob(os.path.join(glob.escape(directory), _TMP_PREFIX + "*")):
        rest = os.path.basename(path)[len(_TMP_PREFIX):]
        writer_host, _, tail = rest.rpartition("-")[0].rpartition("-")
        pid = tail
        if writer_host != host or not pid.isdigit():
            continue  # another host's writer (a shared directory), or a name not ours
        try:
            os.kill(int(pid), 0)
            continue  # a live writer
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # alive, someone else's
        try:
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:
            pass
    if removed:
        log.warning("removed %d temporary file(s) of checkpoint writers that died mid-write in %s",
                    len(removed), directory)
    return removed


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
            remove_leftovers(self.directory)

    def after_update(self, store, version: int) -> None:
        """Called by the applier after each update; writes when one is due.

        Mid-epoch checkpoints are skipped for additive models: resuming from
        one would count part of an epoch twice.
        """
        if store._additive:
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
        os.makedirs(self.directory, exist_ok=True)
        path = os.path.join(self.directory, _PATTERN.format(version=version))
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=_tmp_prefix())
        try:
            with os.fdopen(fd, "wb") as out:
                for part in wire.encode_parts(arrays, meta):
                    out.write(part)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
            _fsync_directory(self.directory)  # the rename itself survives a power cut
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
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
            return wire.decode(f.read())


def _fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
