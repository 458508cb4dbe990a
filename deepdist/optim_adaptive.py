"""Descents with per-parameter state: SGD with momentum (and Nesterov's), Adam and AdamW.

They run on the driver, in the applier thread, one update at a time, and keep their state
(velocities, moment estimates, step counts) beside the model. Updates are gradients, dense or
:class:`~deepdist.SparseRows` (then only the rows they carry move, and only those rows' state:
the lazy variant of each rule). Names that :func:`deepdist.optim.resolve` calls *state*
(a PyTorch module's batch-norm buffers) are added as they come, never stepped.

Their state is a pair ``state_dict() -> (arrays, meta)`` / ``load_state_dict(arrays, meta)``,
which :class:`~deepdist.descent_checkpoint.DescentCheckpointer` writes beside the model: a
resumed run continues with the moments it had, not from zero.

Example::

    from deepdist import Adam, DeepDist
    with DeepDist({"w": np.zeros(10)}) as dd:
        dd.train(rdd, gradient, Adam(lr=1e-2), epochs=3)
"""

from __future__ import annotations

import threading

import numpy as np

from .errors import ConfigurationError
from .optim import _Shippable, _check_rule, _rows_and_values, stepped
from .validation import check_bool, check_real

__all__ = ["Adam", "AdamW", "Momentum"]


class _StatefulRule(_Shippable):
    """Shared plumbing: state arrays made on first sight of a parameter, saved and loaded by name."""

    rule = ""
    #: the state arrays each parameter has, by kind
    kinds: tuple = ()

    def __init__(self):
        self.state: dict[str, dict[str, np.ndarray]] = {kind: {} for kind in self.kinds}
        self.steps: dict[str, int] = {}
        self._lock = threading.Lock()

    def _slots(self, name: str, param: np.ndarray) -> list:
        slots = [self.state[kind].get(name) for kind in self.kinds]
        if any(s is None for s in slots):
            with self._lock:
                # the state is kept in the parameter's precision, as torch.optim keeps it
                slots = [self.state[kind].setdefault(name, np.zeros(param.shape, param.dtype))
                         for kind in self.kinds]
        return slots

    def __call__(self, model, update: dict) -> None:
        for name, param, part in stepped(model, update):
            if not np.issubdtype(param.dtype, np.floating):
                raise ConfigurationError(f"{self.rule} steps float parameters only; {name!r} is {param.dtype}")
            rows, grad = _rows_and_values(part)
            grad = grad.astype(param.dtype, copy=False)
            self.steps[name] = step = self.steps.get(name, 0) + 1
            self._step(param, rows, grad, self._slots(name, param), step)

    def _step(self, param, rows, grad, slots, step) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def state_dict(self) -> tuple[dict, dict]:
        """``(arrays, meta)`` to checkpoint: copies of the state arrays, the step counts, the settings."""
        with self._lock:
            arrays = {f"{kind}/{name}": array.copy() for kind in self.kinds
                      for name, array in self.state[kind].items()}
            return arrays, {"rule": self.rule, "steps": dict(self.steps), "settings": self._settings()}

    def load_state_dict(self, arrays: dict, meta: dict) -> None:
        """Continue from :meth:`state_dict`'s ``(arrays, meta)``."""
        _check_rule(meta, self.rule)
        state = {kind: {} for kind in self.kinds}
        for key, array in arrays.items():
            kind, _, name = key.partition("/")
            if kind not in state:
                raise ConfigurationError(f"saved {self.rule} state has an unknown array {key!r}")
            state[kind][name] = np.array(array)
        with self._lock:
            self.state = state
            self.steps = {name: int(n) for name, n in meta.get("steps", {}).items()}

    def _settings(self) -> dict:
        return {}


class Momentum(_StatefulRule):
    """SGD with heavy-ball momentum, or Nesterov's, on the driver (``torch.optim.SGD``'s rule).

    ``v = momentum * v + g``, then ``w -= lr * v`` (heavy ball) or ``w -= lr * (g + momentum * v)``
    (``nesterov=True``). ``weight_decay`` adds ``weight_decay * w`` to the gradient first.

    In Downpour training the momentum is the server's: one velocity per parameter, fed by every
    worker's pushes in arrival order. Stale pushes (see ``DeepDist(staleness=...)``) add an
    implicit momentum of their own, so a smaller ``momentum`` than in synchronous training often
    suits (Mitliagkas et al. 2016, "Asynchrony begets momentum").

    Example::

        dd.train(rdd, torch_gradient(loss), Momentum(lr=0.05, momentum=0.9, nesterov=True))
    """

    rule = "Momentum"
    kinds = ("velocity",)

    def __init__(self, lr: float = 0.01, momentum: float = 0.9, *, nesterov: bool = False,
                 weight_decay: float = 0.0):
        self.lr = float(check_real("lr", lr, above=0))
        self.momentum = float(check_real("momentum", momentum, minimum=0, below=1))
        self.nesterov = check_bool("nesterov", nesterov)
        self.weight_decay = float(check_real("weight_decay", weight_decay, minimum=0))
        super().__init__()

    def _step(self, param, rows, grad, slots, step) -> None:
        (velocity,) = slots
        if self.weight_decay:
            grad = grad + self.weight_decay * param[rows]
        velocity[rows] = self.momentum * velocity[rows] + grad
        direction = grad + self.momentum * velocity[rows] if self.nesterov else velocity[rows]
        param[rows] -= (self.lr * direction).astype(param.dtype, copy=False)

    def _settings(self) -> dict:
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay}


class Adam(_StatefulRule):
    """Adam (Kingma & Ba 2015) on the driver, with bias correction per parameter.

    ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``,
    ``w -= lr * m_hat / (sqrt(v_hat) + eps)`` with ``m_hat = m / (1 - b1^t)``,
    ``v_hat = v / (1 - b2^t)`` and ``t`` the updates the parameter has had. ``weight_decay``
    is L2 regularisation added to the gradient (``torch.optim.Adam``'s); :class:`AdamW`
    decouples it.

    Example::

        dd.train(rdd, torch_gradient(loss), Adam(lr=1e-3), epochs=5, batch_size=64)
    """

    rule = "Adam"
    kinds = ("m", "v")
    _decoupled = False

    def __init__(self, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        self.lr = float(check_real("lr", lr, above=0))
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ConfigurationError(f"betas must be a pair (b1, b2), got {betas!r}")
        self.betas = (float(check_real("betas[0]", betas[0], minimum=0, below=1)),
                      float(check_real("betas[1]", betas[1], minimum=0, below=1)))
        self.eps = float(check_real("eps", eps, above=0))
        self.weight_decay = float(check_real("weight_decay", weight_decay, minimum=0))
        super().__init__()

    def _step(self, param, rows, grad, slots, step) -> None:
        m, v = slots
        b1, b2 = self.betas
        if self.weight_decay:
            if self._decoupled:
                param[rows] *= param.dtype.type(1.0 - self.lr * self.weight_decay)
            else:
                grad = grad + self.weight_decay * param[rows]
        m[rows] = b1 * m[rows] + (1.0 - b1) * grad
        v[rows] = b2 * v[rows] + (1.0 - b2) * (grad * grad)
        rate = self.lr * np.sqrt(1.0 - b2 ** step) / (1.0 - b1 ** step)
        # eps scaled into the corrected frame: the same step as eps added to sqrt(v_hat)
        denominator = np.sqrt(v[rows]) + self.eps * np.sqrt(1.0 - b2 ** step)
        param[rows] -= (rate * m[rows] / denominator).astype(param.dtype, copy=False)

    def _settings(self) -> dict:
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps, "weight_decay": self.weight_decay}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019): ``w *= 1 - lr * weight_decay``
    before each Adam step, rather than decay folded into the gradient.

    Example::

        dd.train(rdd, torch_gradient(loss), AdamW(lr=1e-3, weight_decay=1e-2), epochs=5)
    """

    rule = "AdamW"
    _decoupled = True

    def __init__(self, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2):
        super().__init__(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
