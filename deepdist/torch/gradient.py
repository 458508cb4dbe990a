"""The executor side: a loss turned into ``gradient(model, batch)`` for :meth:`deepdist.DeepDist.train`.

For one mini-batch (a list of RDD elements) :class:`TorchGradient` collates the elements into
tensors, runs the forward pass in training mode and the backward pass, and returns
``{name: gradient}`` for every parameter that has one, plus ``{buffer: how far this forward
pass moved it}`` for the travelling buffers (batch-norm running statistics; descents add those).

What ``train(push_every=k)`` then sends, by mode:

* **gradient sums** (default): the task's model does not move between pulls; a push is the sum
  of k mini-batch gradients taken at the pulled model, one k-times-larger batch in effect (scale
  the server's rate for it).
* **local SGD** (``local_lr=η``): after each gradient the task also steps its own copy,
  ``w -= η g``, so the next gradient is taken at the moved model. A push is the sum of the k
  gradients of that local trajectory, which is ``(w_pulled - w_local) / η``: a server
  ``SGD(lr=η)`` replays the k local steps exactly, and a stateful server rule (momentum, Adam)
  treats the trajectory as one "outer" gradient. Pull when you push (``fetch_every=k``);
  a pull between pushes puts the task's copy back to the server's, and its local steps are lost
  to the copy (not to the server, which still gets their gradients).

Each batch also reports ``loss`` (the server's ``/status`` and the driver's progress line).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigurationError
from ..validation import check_real
from ..worker import report
from .adapter import trained_names, use_task_cpus

__all__ = ["TorchGradient", "default_collate", "torch_gradient"]


def _tensor(values: list):
    first = values[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(values)
    if hasattr(first, "toArray"):  # pyspark.ml vectors (a DataFrame's features column)
        values = [v.toArray() for v in values]
    array = np.asarray(values)
    if array.dtype == object:
        raise ConfigurationError("elements of a batch field have different shapes or types; "
                                 "pass collate=... to batch them")
    if np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32, copy=False)  # the parameters' precision
    elif np.issubdtype(array.dtype, np.bool_) or np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.int64, copy=False)    # class labels, token ids
    return torch.from_numpy(np.ascontiguousarray(array))


def default_collate(elements: list):
    """Stack a list of RDD elements into tensors, keeping the elements' structure.

    * tuples/lists ``(x, y)`` -> a tuple of tensors, field by field;
    * dicts and DataFrame ``Row`` s -> a dict of tensors by key (``pyspark.ml`` vectors become arrays);
    * arrays or numbers -> one tensor.

    Floats become float32, integers and booleans int64 (labels).

    Example::

        >>> import numpy as np
        >>> x, y = default_collate([(np.zeros(3), 1), (np.ones(3), 0)])
        >>> tuple(x.shape), x.dtype, y.tolist()
        ((2, 3), torch.float32, [1, 0])
    """
    first = elements[0]
    if hasattr(first, "asDict"):                       # a Row is a tuple: look at it first
        elements = [e.asDict() for e in elements]
        first = elements[0]
    if isinstance(first, dict):
        return {key: _tensor([e[key] for e in elements]) for key in first}
    if isinstance(first, (tuple, list)):
        return tuple(_tensor([e[i] for e in elements]) for i in range(len(first)))
    return _tensor(elements)


class TorchGradient:
    """``gradient(model, batch)`` of a PyTorch module for :meth:`deepdist.DeepDist.train`.

    Parameters:
        loss_fn: ``loss_fn(output, target) -> scalar tensor`` (``torch.nn.functional.cross_entropy``,
            an ``nn.MSELoss()``...), called on ``model(inputs)``.
        collate: ``collate(elements) -> batch``; :func:`default_collate` by default.
        inputs, target: where the collated batch keeps the model's input and the target: positions
            of a tuple (0 and 1 by default) or keys of a dict (``inputs="features", target="label"``).
        forward: ``forward(model, batch) -> scalar loss tensor``, instead of ``loss_fn``, for
            anything else (several inputs, auxiliary losses).
        local_lr: also step the task's copy with plain SGD at this rate (local SGD; see the module).
        max_grad_norm: clip each mini-batch's gradient to this global norm before it is sent.

    Example::

        import torch.nn.functional as F
        dd.train(rdd, torch_gradient(F.cross_entropy), Adam(lr=1e-3), epochs=3, batch_size=64)
    """

    def __init__(self, loss_fn=None, collate=None, *, inputs=0, target=1, forward=None,
                 local_lr: float | None = None, max_grad_norm: float | None = None):
        if (loss_fn is None) == (forward is None):
            raise ConfigurationError("torch_gradient needs loss_fn(output, target) or forward(model, batch), one of them")
        for name, value in (("loss_fn", loss_fn), ("collate", collate), ("forward", forward)):
            if value is not None and not callable(value):
                raise ConfigurationError(f"{name} must be callable, got {type(value).__name__}")
        self.loss_fn = loss_fn
        self.collate = collate or default_collate
        self.inputs, self.target = inputs, target
        self.forward = forward
        self.local_lr = check_real("local_lr", local_lr, above=0, none=True)
        self.max_grad_norm = check_real("max_grad_norm", max_grad_norm, above=0, none=True)

    def loss(self, model, batch):
        """The scalar loss of ``model`` on a collated ``batch``."""
        if self.forward is not None:
            return self.forward(model, batch)
        try:
            inputs, target = batch[self.inputs], batch[self.target]
        except (KeyError, IndexError, TypeError) as err:
            raise ConfigurationError(f"cannot take inputs={self.inputs!r} and target={self.target!r} from a "
                                     f"collated {type(batch).__name__}; set inputs=/target= or pass forward=") from err
        return self.loss_fn(model(inputs), target)

    def __call__(self, model, elements) -> dict:
        use_task_cpus()
        batch = self.collate(elements)
        names = trained_names(model)
        params = dict(model.named_parameters())
        buffers = {name: b for name, b in model.named_buffers() if name in names}
        before = {name: b.clone() for name, b in buffers.items()}
        model.train()
        for p in params.values():
            p.grad = None  # fresh gradient tensors: the update can own their memory, no copy
        loss = self.loss(model, batch)
        loss.backward()
        if self.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params.values(), self.max_grad_norm)
        update = {}
        for name in names:
            p = params.get(name)
            if p is not None and p.grad is not None:
                update[name] = p.grad.numpy()
        with torch.no_grad():
            if self.local_lr is not None:
                for name, p in params.items():
                    if p.grad is not None and name in update:
                        p.add_(p.grad, alpha=-self.local_lr)
            for name, b in buffers.items():
                moved = (b - before[name]).numpy()
                if moved.any():
                    update[name] = moved
        for p in params.values():
            p.grad = None  # the update holds the only reference now
        report(loss=float(loss.detach()))
        return update


def torch_gradient(loss_fn=None, collate=None, **options) -> TorchGradient:
    """The ``gradient`` argument of ``train`` for a PyTorch module (see :class:`TorchGradient`)."""
    return TorchGradient(loss_fn, collate, **options)
