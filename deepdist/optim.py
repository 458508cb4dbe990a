"""Ready-made ``descent`` rules: addition, SGD and AdaGrad, for dense and sparse-row updates.

Each rule is a callable ``rule(model, update)`` to pass to ``DeepDist.train``.
Updates are *gradients*: the rule steps against them.  Sparse-row updates
touch only their rows (repeated rows add up).

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


def _check_lr(lr: float) -> float:
    if not lr > 0:
        raise ConfigurationError(f"lr must be > 0, got {lr!r}")
    return float(lr)


def add(model, update: dict) -> None:
    """The descent that adds each update as it is: counts, deltas, gradient sums.

    It is linear, so it suits ``train(..., additive=True)``.

    Example::

        dd.train(rdd, count_words, deepdist.optim.add, additive=True)
    """
    for name, part in update.items():
        param = get_param(model, name)
        if isinstance(part, SparseRows):
            part.add_to(param)
        else:
            param += part


class SGD:
    """Plain stochastic gradient descent: ``w -= lr * g``.

    ``decay`` divides the rate by ``1 + decay * t`` after ``t`` updates.

    Example::

        dd.train(rdd, gradient, SGD(lr=0.05), epochs=3)
    """

    def __init__(self, lr: float = 0.01, decay: float = 0.0):
        self.lr = _check_lr(lr)
        self.decay = float(decay)
        self.steps = 0

    def rate(self) -> float:
        return self.lr / (1.0 + self.decay * self.steps)

    def __call__(self, model, update: dict) -> None:
        rate = self.rate()
        for name, grad in update.items():
            param = get_param(model, name)
            if isinstance(grad, SparseRows):
                grad.add_to(param, scale=-rate)
            else:
                param -= rate * grad
        self.steps += 1


class AdaGrad:
    """AdaGrad (Duchi et al. 2011): per-element rates ``lr / sqrt(eps + sum g^2)``.

    The squared-gradient accumulators live on the driver, one per parameter
    element; sparse-row updates touch only their rows' accumulators.

    Example::

        dd.train(rdd, gradient, AdaGrad(lr=0.1), epochs=3)
    """

    def __init__(self, lr: float = 0.1, eps: float = 1e-8, initial_accumulator: float = 0.0):
        self.lr = _check_lr(lr)
        self.eps = float(eps)
        self.initial_accumulator = float(initial_accumulator)
        self.accumulators: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def _accumulator(self, name: str, param: np.ndarray) -> np.ndarray:
        acc = self.accumulators.get(name)
        if acc is None:
            with self._lock:
                acc = self.accumulators.setdefault(
                    name, np.full(param.shape, self.initial_accumulator, dtype=np.float64
                                  if param.dtype == np.float64 else np.float32))
        return acc

    def __call__(self, model, update: dict) -> None:
        for name, grad in update.items():
            param = get_param(model, name)
            acc = self._accumulator(name, param)
            if isinstance(grad, SparseRows):
                grad = grad.coalesce()
                rows, values = grad.indices, grad.values.astype(acc.dtype, copy=False)
                acc[rows] += values * values
                param[rows] -= (self.lr * values / np.sqrt(acc[rows] + self.eps)).astype(param.dtype, copy=False)
            else:
                g = np.asarray(grad, dtype=acc.dtype)
                acc += g * g
                param -= (self.lr * g / np.sqrt(acc + self.eps)).astype(param.dtype, copy=False)
