"""The parameters and buffers of an ``nn.Module`` as deepdist's named numpy arrays.

On the driver the server's arrays *are* the module's tensors (``tensor.numpy()`` views): the
descent steps the module in place, and the trained ``net`` needs no copying back. On an
executor the module arrives once per process by Spark broadcast, stripped of its tensors, and
gets tensors made over the arrays the task pulls into (``torch.from_numpy``): a pull is one
``np.copyto`` per parameter, straight into the memory the forward pass reads.

Which buffers travel: every persistent buffer (``state_dict`` has it) except the
``num_batches_tracked`` counter of a batch norm whose ``momentum`` is set, which such a layer
never reads (and an integer array could not be scaled by ``staleness="scale"``).
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import threading
import weakref

import numpy as np
import torch

from ..errors import ConfigurationError
from ..params import ALLOWED_DTYPES, ParamAdapter

__all__ = ["ModuleAdapter", "module_params", "ship", "trained_names", "use_task_cpus"]

log = logging.getLogger(__name__)

#: executor copies of modules -> the names their arrays are trained under (set by ModuleAdapter.set)
_TRAINED = weakref.WeakKeyDictionary()
_threads_lock = threading.Lock()
_threads_set: list = []


def _travelling_buffers(module) -> list:
    persistent = set(module.state_dict(keep_vars=True))
    names = []
    for name, _ in module.named_buffers():
        if name not in persistent:
            continue  # a constant the module rebuilds, not state
        owner_name, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_name)
        if (leaf == "num_batches_tracked" and isinstance(owner, torch.nn.modules.batchnorm._NormBase)
                and owner.momentum is not None):
            continue
        names.append(name)
    return names


class ModuleAdapter(ParamAdapter):
    """The :class:`~deepdist.ParamAdapter` of a PyTorch module: parameters by their
    ``named_parameters()`` names, then buffers by their ``named_buffers()`` names.

    Parameters:
        module: the ``nn.Module`` (on the CPU, float32 or float64 tensors).
        buffers: let buffers travel (batch-norm running statistics); workers push how much
            their forward passes moved them, and descents add that.

    Example::

        >>> import torch
        >>> from deepdist.torch import module_params
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
        >>> adapter = module_params(net)
        >>> adapter.names
        ['0.weight', '0.bias', '1.weight', '1.bias', '1.running_mean', '1.running_var']
        >>> adapter.get(net)["0.bias"].dtype
        dtype('float32')
    """

    def __init__(self, module, buffers: bool = True):
        if not isinstance(module, torch.nn.Module):
            raise ConfigurationError(f"module_params needs a torch.nn.Module, got {type(module).__name__}")
        self.param_names = [name for name, _ in module.named_parameters()]
        self.buffer_names = _travelling_buffers(module) if buffers else []
        self.names = self.param_names + self.buffer_names
        if not self.names:
            raise ConfigurationError(f"{type(module).__name__} has no parameters or buffers to train")
        for name in self.names:
            tensor = self._tensor(module, name)
            if tensor.device.type != "cpu":
                raise ConfigurationError(f"{name!r} lives on {tensor.device}; the server trains CPU tensors "
                                         "(move the module with .cpu() first)")
            dtype = str(tensor.dtype).removeprefix("torch.")
            if dtype not in ALLOWED_DTYPES:
                raise ConfigurationError(f"{name!r} is {tensor.dtype}; trainable dtypes are {', '.join(ALLOWED_DTYPES)}"
                                         " (convert the module with .float() first)")
            if not tensor.is_contiguous():
                raise ConfigurationError(f"{name!r} is not contiguous; make it so before training")

    @staticmethod
    def _tensor(module, name: str):
        owner_name, _, leaf = name.rpartition(".")
        return getattr(module.get_submodule(owner_name), leaf)

    def get(self, model) -> dict:
        # views, not copies: the server's arrays are the module's memory
        return {name: self._tensor(model, name).detach().numpy() for name in self.names}

    def set(self, model, params: dict) -> None:
        with torch.no_grad():
            for name, array in params.items():
                owner_name, _, leaf = name.rpartition(".")
                owner = model.get_submodule(owner_name)
                tensor = torch.from_numpy(np.ascontiguousarray(array))
                if leaf in owner._parameters:
                    # keep the Parameter object (and requires_grad); only its memory changes
                    owner._parameters[leaf].data = tensor
                else:
                    owner._buffers[leaf] = tensor
        _TRAINED[model] = tuple(self.names)

    @contextlib.contextmanager
    def stripped(self, model):
        """The module without its tensors' contents, wrapped for the broadcast (see :func:`ship`)."""
        params = self.get(model)
        # a parameter keeps its object and gets new memory: hold on to the memory (.data)
        originals = {name: self._tensor(model, name) for name in self.names}
        originals = {name: t.data if isinstance(t, torch.nn.Parameter) else t for name, t in originals.items()}
        try:
            self.set(model, {name: np.empty((0,), array.dtype) for name, array in params.items()})
            yield ship(model)
        finally:
            with torch.no_grad():
                for name, tensor in originals.items():
                    owner_name, _, leaf = name.rpartition(".")
                    owner = model.get_submodule(owner_name)
                    if leaf in owner._parameters:
                        owner._parameters[leaf].data = tensor
                    else:
                        owner._buffers[leaf] = tensor
            _TRAINED.pop(model, None)


def module_params(module, buffers: bool = True) -> ModuleAdapter:
    """The adapter to pass as ``DeepDist(module, params=module_params(module))`` (see :class:`ModuleAdapter`)."""
    return ModuleAdapter(module, buffers=buffers)


def trained_names(module) -> tuple:
    """The names an executor's copy of ``module`` is trained under (all parameters and travelling
    buffers, when it was not made by :meth:`ModuleAdapter.set`)."""
    names = _TRAINED.get(module)
    if names is None:
        names = tuple(name for name, _ in module.named_parameters()) + tuple(_travelling_buffers(module))
    return names


class _Shipped:
    """A module on its way to executors: pickled by value with cloudpickle, so a module class defined
    in the driver's script (``__main__``) arrives too; Spark's broadcast uses plain pickle, which
    would send such a class by a name executors cannot import. Unpickles to the module itself."""

    def __init__(self, module):
        self.module = module

    def __reduce__(self):
        from pyspark import cloudpickle

        return pickle.loads, (cloudpickle.dumps(self.module, protocol=pickle.HIGHEST_PROTOCOL),)


def ship(module) -> _Shipped:
    """``module`` wrapped for ``sc.broadcast``: the broadcast's value on executors is the module."""
    return _Shipped(module)


def use_task_cpus() -> int:
    """Give torch as many threads as this Spark task has cores (``spark.task.cpus``); return them.

    Torch's default is one thread per core of the machine, in every task: on an executor with
    N task slots that is N times too many threads. Outside a task torch is left as it is.
    """
    from pyspark import TaskContext

    task = TaskContext.get()
    if task is None:
        return torch.get_num_threads()
    cpus = max(1, int(task.cpus()))
    if _threads_set != [cpus]:
        with _threads_lock:
            torch.set_num_threads(cpus)
            if not _threads_set:
                try:
                    torch.set_num_interop_threads(cpus)
                except RuntimeError:  # only settable before torch's first parallel work
                    pass
            _threads_set[:] = [cpus]
    return cpus
