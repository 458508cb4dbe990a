"""Ready-made ``descent`` rules: addition, SGD and AdaGrad, for dense and sparse-row updates.

Each rule is a callable ``rule(model, update)`` to pass to ``DeepDist.train``.  Updates
are *gradients* (the rule steps against them) unless a rule is told they are *deltas*
(``AdaGrad(deltas=True)``: the step a worker wants taken, as word2vec's tasks push).
Sparse-row updates touch only their rows (repeated rows add up).

This module is the one home of adding an update into a parameter (:func:`add_to`) and of
AdaGrad; other descents (word2vec's, with its counters and stale-row scaling) are built
from them.

Example::

    from deepdist.optim import AdaGrad
    with DeepDist({"w": np.zeros(10)}) as dd:
        dd.train(rdd, gradient, AdaGrad(lr=0.5), epochs=5)
"""

from __future__ import annotations

import threading

import numpy as np

from .errors import ConfigurationError
from .params import get_param
from .sparse import SparseRows
from .validation import check_real

__all__ = ["AdaGrad", "SGD", "add", "add_to", "resolve"]


def resolve(model, name: str) -> tuple[np.ndarray, bool]:
    """``(array, is_state)``: the numpy array a descent changes for parameter ``name``, and whether
    it is *state* that updates are added to as they are rather than stepped against.

    For a dict or an object with numpy attributes: the array itself, never state. For a PyTorch
    module (:func:`deepdist.torch.module_params`): a zero-copy numpy view of the tensor, which is
    state when it is a buffer (batch-norm running statistics: workers push how much their
    forward passes moved it) rather than an ``nn.Parameter``.
    """
    found = get_param(model, name)
    if isinstance(found, np.ndarray):
        return found, False
    # a torch tensor (torch is imported when one exists): duck-typed, so optim never imports torch
    return found.detach().numpy(), type(found).__name__ != "Parameter"


def stepped(model, update: dict):
    """``(name, param, part)`` for each part of ``update`` that a rule steps against; the parts of
    state (:func:`resolve`) are added as they are on the way, as every rule adds them."""
    for name, part in update.items():
        param, is_state = resolve(model, name)
        if is_state:
            add_to(param, part)
        else:
            yield name, param, part


def add_to(param: np.ndarray, part, scale: float = 1.0) -> None:
    """``param += scale * part`` in place, for a dense array or :class:`SparseRows` ``part``.

    The one sparse-or-dense dispatch of the descents: a sparse part adds into its rows only.
    """
    if isinstance(part, SparseRows):
        part.add_to(param, scale=scale)
    elif scale == 1.0:
        param += part
    else:
        param += scale * part


def add(model, update: dict) -> None:
    """The descent that adds each update as it is: counts, deltas, gradient sums.

    It is linear, so it suits ``train(..., additive=True)``.

    Example::

        dd.train(rdd, count_words, deepdist.optim.add, additive=True)
    """
    for name, part in update.items():
        add_to(resolve(model, name)[0], part)


class SGD:
    """Plain stochastic gradient descent: ``w -= lr * g``.

    ``decay`` divides the rate by ``1 + decay * t`` after ``t`` updates.

    Example::

        dd.train(rdd, gradient, SGD(lr=0.05), epochs=3)
    """

    def __init__(self, lr: float = 0.01, decay: float = 0.0):
        self.lr = float(check_real("lr", lr, above=0))
        self.decay = float(decay)
        self.steps = 0

    def rate(self) -> float:
        return self.lr / (1.0 + self.decay * self.steps)

    def __call__(self, model, update: dict) -> None:
        rate = self.rate()
        for name, grad in update.items():
            param, is_state = resolve(model, name)
            add_to(param, grad, scale=1.0 if is_state else -rate)
        self.steps += 1

    def state_dict(self) -> tuple[dict, dict]:
        """``(arrays, meta)`` to checkpoint: the step count that the decay follows."""
        return {}, {"rule": "SGD", "steps": self.steps}

    def load_state_dict(self, arrays: dict, meta: dict) -> None:
        """Continue from :meth:`state_dict`'s ``(arrays, meta)``."""
        _check_rule(meta, "SGD")
        self.steps = int(meta["steps"])


def _rows_and_values(part):
    """``(rows, values)`` of an update: its distinct rows (all rows, as a slice, for a dense one)."""
    if not isinstance(part, SparseRows):
        return slice(None), np.asarray(part)
    indices = part.indices
    if len(indices) > 1 and not (indices[1:] > indices[:-1]).all():
        # a fancy-indexed ``+=`` keeps one of repeated rows: sum them first. Pushes of distinct
        # rows in order (word2vec's, on the driver's hot path) skip the sort.
        part = part.coalesce()
    return part.indices, part.values


class _Shippable:
    """A rule whose lock stays behind when it is pickled (to a shard's process): the copy makes its own."""

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()


class AdaGrad(_Shippable):
    """AdaGrad (Duchi et al. 2011): rates ``lr / sqrt(eps + sum g^2)``, per element or per row.

    The squared-gradient accumulators live on the driver; sparse-row updates touch only their
    rows' accumulators.

    Parameters:
        lr, eps, initial_accumulator: the step scale, the floor under the root, the
            accumulators' start.
        per_row: one accumulator per row of a matrix, summing the mean square of the row's
            gradient (``G_r += mean(g_r^2)``), instead of one per element: one float per row of
            driver memory, for embedding matrices with millions of rows.
        deltas: updates are the steps a worker wants taken (row deltas, or deltas divided by
            the learning rate they were taken with), and the rule moves along them
            (``w += lr * u / sqrt(G)``); by default updates are gradients, and it steps against.

    Example::

        dd.train(rdd, gradient, AdaGrad(lr=0.1), epochs=3)
    """

    def __init__(self, lr: float = 0.1, eps: float = 1e-8, initial_accumulator: float = 0.0, *,
                 per_row: bool = False, deltas: bool = False):
        self.lr = float(check_real("lr", lr, above=0))
        self.eps = float(eps)
        self.initial_accumulator = float(initial_accumulator)
        self.per_row, self.deltas = bool(per_row), bool(deltas)
        self.accumulators: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def _accumulator(self, name: str, param: np.ndarray) -> np.ndarray:
        acc = self.accumulators.get(name)
        if acc is None:
            # per row, the mean square of a row is summed over many steps: float64 keeps it exact
            dtype = np.float64 if self.per_row or param.dtype == np.float64 else np.float32
            shape = param.shape[:1] if self.per_row else param.shape
            with self._lock:
                acc = self.accumulators.setdefault(name, np.full(shape, self.initial_accumulator, dtype))
        return acc

    def __call__(self, model, update: dict) -> None:
        for name, param, part in stepped(model, update):
            self.step(param, self._accumulator(name, param), part)

    def state_dict(self) -> tuple[dict, dict]:
        """``(arrays, meta)`` to checkpoint: the squared-gradient accumulators (copies)."""
        with self._lock:
            return ({name: acc.copy() for name, acc in self.accumulators.items()},
                    {"rule": "AdaGrad", "per_row": self.per_row})

    def load_state_dict(self, arrays: dict, meta: dict) -> None:
        """Continue from :meth:`state_dict`'s ``(arrays, meta)``."""
        _check_rule(meta, "AdaGrad")
        if bool(meta.get("per_row")) != self.per_row:
            raise ConfigurationError(f"the saved AdaGrad state has per_row={meta.get('per_row')}, "
                                     f"this rule per_row={self.per_row}")
        with self._lock:
            self.accumulators = {name: np.array(acc) for name, acc in arrays.items()}

    def step(self, param: np.ndarray, acc: np.ndarray, part) -> None:
        """One AdaGrad step of ``param`` (with its accumulator ``acc``) for one update ``part``."""
        rows, values = _rows_and_values(part)
        g = values.astype(acc.dtype, copy=False)
        if self.per_row and g.ndim > 1:
            acc[rows] += np.mean(g * g, axis=tuple(range(1, g.ndim)))
            root = np.sqrt(acc[rows] + self.eps).reshape((-1,) + (1,) * (g.ndim - 1))
        else:
            acc[rows] += g * g
            root = np.sqrt(acc[rows] + self.eps)
        step = (self.lr * g / root).astype(param.dtype, copy=False)
        if self.deltas:
            param[rows] += step
        else:
            param[rows] -= step


def _check_rule(meta: dict, rule: str) -> None:
    """Refuse to load another rule's saved state (an Adam checkpoint into SGD)."""
    if meta.get("rule") != rule:
        raise ConfigurationError(f"the saved descent state is {meta.get('rule')!r}'s; this rule is {rule!r}")
