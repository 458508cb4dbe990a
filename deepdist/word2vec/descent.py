"""Descent rules for word2vec on the driver: :mod:`deepdist.optim`'s add or AdaGrad, plus word2vec's own.

Updates from :mod:`deepdist.word2vec` tasks hold sparse row deltas of ``w2v.wv.vectors``
and ``w2v.syn1neg`` / ``w2v.syn1``, the words they processed (``words_done``), what the
tasks did (``task_totals``: the learning rate times the words it was applied to, the
seconds spent in gensim's loop, the batches) and, per pushed row, how many pushes that
row had seen when the task pulled it (``updates_in`` / ``updates_out``), from which a
row's staleness follows.

The arithmetic of adding and of AdaGrad is :mod:`deepdist.optim`'s; what is word2vec's
here is which parts are counters (summed, never scaled) and the stale-row scaling.
"""

from __future__ import annotations

import numpy as np

from ..optim import AdaGrad, add
from ..params import get_param
from ..sparse import SparseRows

__all__ = ["AddDeltas", "RowAdaGrad"]

#: counters the tasks push: summed as they are, whatever the rule does to the weights
_COUNTERS = ("words_done", "task_totals")
#: per pushed row, the push count the task pulled it with (``stale_rows``): read, never applied
_SEEN = ("updates_in", "updates_out")


def _seen_name(name: str) -> str:
    return "updates_in" if name == "w2v.wv.vectors" else "updates_out"


def _row_scales(served, update: dict, name: str, part: SparseRows) -> np.ndarray | None:
    """Per-row step scale ``1 / (1 + staleness)``, counting the push on its rows.

    A row's staleness is the number of pushes applied to it since the task pulled it
    (Zhang et al. 2016, per row).  Rows only one task touches (most words) keep
    their whole delta; frequent rows that every task moves concurrently get the
    average of the concurrent deltas instead of their sum, which overshoots.
    """
    seen_name = _seen_name(name)
    counts = get_param(served, seen_name)   # an attribute of the model, or a shard's rows of it
    seen = update.get(seen_name)
    scales = None
    if seen is not None:
        staleness = np.maximum(counts[seen.indices] - seen.values, 0)
        scales = 1.0 / (1.0 + staleness)
    np.add.at(counts, part.indices, 1)
    return scales


class _RowDescent:
    """The tasks' counters summed, then ``rule`` on the row deltas (scaled by staleness with ``stale_rows``)."""

    def __init__(self, rule, stale_rows: bool):
        self.rule, self.stale_rows = rule, stale_rows

    def __call__(self, served, update: dict) -> None:
        add(served, {name: update[name] for name in _COUNTERS if name in update})
        deltas = {}
        for name, part in update.items():
            if name in _COUNTERS or name in _SEEN:
                continue
            scales = _row_scales(served, update, name, part) if self.stale_rows else None
            if scales is not None and (scales < 1).any():
                part = SparseRows(part.indices, part.values * scales[:, None].astype(part.values.dtype),
                                  part.shape)
            deltas[name] = part
        self.rule(served, deltas)


class AddDeltas(_RowDescent):
    """``descent="add"``: add each pushed row delta to the model (and count the words).

    With ``stale_rows`` each row's delta is scaled by ``1 / (1 + its staleness)``
    (:func:`_row_scales`).
    """

    def __init__(self, stale_rows: bool = False):
        super().__init__(add, stale_rows)


class RowAdaGrad(_RowDescent):
    """``descent="adagrad"``: AdaGrad with one accumulator per row (Duchi et al. 2011).

    Tasks push step directions ``u`` (their row deltas divided by the learning rate
    they used); for each row ``r``: ``G_r += mean(u_r^2)`` and
    ``w_r += lr * u_r / sqrt(G_r + eps)`` (:class:`deepdist.optim.AdaGrad` with
    ``per_row=True, deltas=True``).  One accumulator per row rather than per element
    keeps the driver's extra memory at one float per word.
    """

    def __init__(self, lr: float = 0.05, eps: float = 1e-6, stale_rows: bool = False):
        super().__init__(AdaGrad(lr, eps, per_row=True, deltas=True), stale_rows)

    @property
    def lr(self) -> float:
        return self.rule.lr

    @property
    def accumulators(self) -> dict:
        return self.rule.accumulators
