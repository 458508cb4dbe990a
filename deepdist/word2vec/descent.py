"""Descent rules for word2vec on the driver: add the pushed row deltas, or AdaGrad per row.

Updates from :mod:`deepdist.word2vec` tasks hold sparse row deltas of
``w2v.wv.vectors`` and ``w2v.syn1neg`` / ``w2v.syn1``, the words they processed (``words_done``), what the
tasks did (``task_totals``: the learning rate times the words it was applied to, the
seconds spent in gensim's loop, the batches) and, per pushed row, how many pushes that
row had seen when the task pulled it (``updates_in`` / ``updates_out``), from which a
row's staleness follows.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigurationError
from ..sparse import SparseRows

__all__ = ["AddDeltas", "RowAdaGrad"]


def _add_rows(param: np.ndarray, part) -> None:
    if isinstance(part, SparseRows):
        part.add_to(param)
    else:
        param += part.astype(param.dtype, copy=False)


def _row_scales(served, update: dict, name: str, part: SparseRows, stale_rows: bool) -> np.ndarray | None:
    """Per-row step scale ``1 / (1 + staleness)``, counting the push on its rows (``stale_rows`` only).

    A row's staleness is the number of pushes applied to it since the task pulled it
    (Zhang et al. 2016, per row).  Rows only one task touches (most words) keep
    their whole delta; frequent rows that every task moves concurrently get the
    average of the concurrent deltas instead of their sum, which overshoots.
    """
    if not stale_rows:
        return None
    counts = served.updates_in if name == "w2v.wv.vectors" else served.updates_out
    seen = update.get("updates_in" if name == "w2v.wv.vectors" else "updates_out")
    scales = None
    if seen is not None:
        staleness = np.maximum(counts[seen.indices] - seen.values, 0)
        scales = 1.0 / (1.0 + staleness)
    np.add.at(counts, part.indices, 1)
    return scales


_COUNTERS = ("words_done", "task_totals")


def _add_counters(served, update: dict) -> None:
    """Sum the tasks' counters: they are not weights, and no rule may scale them."""
    for name in _COUNTERS:
        if name in update:
            _add_rows(getattr(served, name), update[name])


def _delta_names(update: dict):
    return [n for n in update if n not in (*_COUNTERS, "updates_in", "updates_out")]


class AddDeltas:
    """``descent="add"``: add each pushed row delta to the model (and count the words).

    With ``stale_rows`` each row's delta is scaled by ``1 / (1 + its
    staleness)`` (:func:`_row_scales`).
    """

    def __init__(self, stale_rows: bool = False):
        self.stale_rows = stale_rows

    def __call__(self, served, update: dict) -> None:
        _add_counters(served, update)
        for name in _delta_names(update):
            part, param = update[name], _param(served, name)
            scales = _row_scales(served, update, name, part, self.stale_rows)
            if scales is not None and (scales < 1).any():
                part = SparseRows(part.indices, part.values * scales[:, None].astype(part.values.dtype),
                                  part.shape)
            _add_rows(param, part)


class RowAdaGrad:
    """``descent="adagrad"``: AdaGrad with one accumulator per row (Duchi et al. 2011).

    Tasks push step directions ``u`` (their row deltas divided by the learning rate
    they used); for each row ``r``: ``G_r += mean(u_r^2)`` and
    ``w_r += lr * u_r / sqrt(G_r + eps)``.  One accumulator per row rather than per
    element keeps the driver's extra memory at one float per word.
    """

    def __init__(self, lr: float = 0.05, eps: float = 1e-6, stale_rows: bool = False):
        if not lr > 0:
            raise ConfigurationError(f"adagrad_lr must be > 0, got {lr!r}")
        self.lr, self.eps, self.stale_rows = float(lr), float(eps), stale_rows
        self.accumulators: dict = {}

    def __call__(self, served, update: dict) -> None:
        _add_counters(served, update)
        for name in _delta_names(update):
            part, param = update[name], _param(served, name)
            scales = _row_scales(served, update, name, part, self.stale_rows)
            acc = self.accumulators.get(name)
            if acc is None:
                acc = self.accumulators[name] = np.zeros(len(param), np.float64)
            rows, u = part.indices, part.values.astype(np.float64)
            if scales is not None:
                u = u * scales[:, None]
            acc[rows] += np.mean(u * u, axis=1)
            param[rows] += (self.lr * u / np.sqrt(acc[rows] + self.eps)[:, None]).astype(param.dtype)


def _param(served, name: str) -> np.ndarray:
    return served.w2v.wv.vectors if name == "w2v.wv.vectors" else getattr(served.w2v, name.split(".")[-1])
