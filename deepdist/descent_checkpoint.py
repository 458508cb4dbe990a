"""Checkpoints that hold the descent's state beside the model: momentum, Adam's moments, AdaGrad's sums.

A plain :class:`~deepdist.Checkpointer` saves the parameters; resuming from it restarts a
stateful rule from zero moments (Adam's first steps after a resume are then its large,
bias-corrected first steps again). :class:`DescentCheckpointer` writes the rule's
``state_dict()`` into the same file (same format, same atomic write), read under the model
lock so parameters and state are of one instant, and restores it when ``DeepDist(...,
resume=True)`` loads the file.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np

from . import persist
from .checkpoint import _PATTERN, Checkpointer
from .errors import ConfigurationError

__all__ = ["DescentCheckpointer"]

log = logging.getLogger(__name__)

#: names of the descent's arrays in a checkpoint file: this prefix, then the rule's own name
PREFIX = "descent:"


class DescentCheckpointer(Checkpointer):
    """A :class:`~deepdist.Checkpointer` that also saves and restores ``descent``'s state.

    ``descent`` is the rule given to ``train``: it must have ``state_dict()`` and
    ``load_state_dict(arrays, meta)`` (every rule of :mod:`deepdist.optim` and
    :mod:`deepdist.optim_adaptive` has). When ``DeepDist(..., resume=True)`` reads the latest
    checkpoint (:meth:`latest`), the state in it is loaded into ``descent``.

    Example::

        adam = Adam(lr=1e-3)
        ckpt = DescentCheckpointer("ckpt/", adam, every_updates=200)
        with DeepDist(net, params=module_params(net), checkpoint=ckpt, resume=True) as dd:
            dd.train(rdd, torch_gradient(loss), adam, epochs=10)
    """

    def __init__(self, directory, descent, every_updates: int | None = None, every_seconds: float | None = None,
                 keep: int = 3):
        if not (callable(getattr(descent, "state_dict", None)) and callable(getattr(descent, "load_state_dict", None))):
            raise ConfigurationError(f"descent must have state_dict() and load_state_dict(); "
                                     f"{type(descent).__name__} has not")
        super().__init__(directory, every_updates=every_updates, every_seconds=every_seconds, keep=keep)
        self.descent = descent

    def write(self, store, epochs_completed: int | None = None) -> str:
        if epochs_completed is not None:
            self.epochs_completed = epochs_completed
        if getattr(store, "_descent", self.descent) is not self.descent:
            log.warning("the store applies another descent than this checkpointer saves (%s)",
                        type(self.descent).__name__)
        with store.lock:   # the applier holds it while it steps: parameters and state of one instant
            version = store.version
            arrays = {name: np.array(a, copy=True) for name, a in store.params.items()}
            state, state_meta = self.descent.state_dict()
        arrays.update({PREFIX + name: np.ascontiguousarray(a) for name, a in state.items()})
        meta = {"version": version, "epochs_completed": self.epochs_completed, "time": time.time(),
                "descent": state_meta}
        path = os.path.join(self.directory, _PATTERN.format(version=version))
        persist.write_frame(path, arrays, meta)
        self._last_version, self._last_time = version, time.monotonic()
        for old in self.list()[:-self.keep]:
            os.unlink(old)
        log.info("checkpoint written: %s (version %s, %s epochs complete, %s state)", path, version,
                 self.epochs_completed, state_meta.get("rule"))
        return path

    def latest(self):
        """The newest checkpoint (its model arrays), after loading its descent state into ``descent``.

        A checkpoint without descent state (a plain :class:`~deepdist.Checkpointer`'s) leaves
        ``descent`` as it is, with a warning.
        """
        frame = super().latest()
        if frame is None:
            return None
        state = {name[len(PREFIX):]: frame.arrays.pop(name) for name in list(frame.arrays)
                 if name.startswith(PREFIX)}
        saved = frame.meta.get("descent")
        if saved is None:
            log.warning("the checkpoint in %s holds no descent state; %s starts afresh",
                        self.directory, type(self.descent).__name__)
        else:
            self.descent.load_state_dict(state, saved)
        return frame
