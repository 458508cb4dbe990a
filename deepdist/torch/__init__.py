"""PyTorch models trained by Downpour SGD: the module is the model.

    import torch
    from deepdist import Adam, DeepDist
    from deepdist.torch import evaluate, module_params, torch_gradient

    net = torch.nn.Sequential(...)
    with DeepDist(net, params=module_params(net)) as dd:
        dd.train(rdd, torch_gradient(torch.nn.functional.cross_entropy), Adam(lr=1e-3),
                 epochs=5, batch_size=64)
    evaluate(net, test_rdd, "accuracy")          # net was trained in place

* :func:`module_params` names a module's parameters and buffers (batch-norm statistics); they
  travel as named float32 arrays that are zero-copy views of the tensors on the driver and on
  the executors. The module's code reaches executors once, by Spark broadcast; nothing is
  pickled over HTTP.
* :func:`torch_gradient` turns a loss into the ``gradient(model, batch)`` of
  :meth:`deepdist.DeepDist.train`: it collates RDD elements (numpy arrays, dicts, DataFrame
  rows) into tensors and returns the gradients, plus how far the forward passes moved the
  buffers. With ``local_lr`` it also steps the task's copy (local SGD).
* :func:`evaluate` runs inference on the executors in parallel.

torch is an optional dependency (``pip install deepdist[torch]``): the rest of deepdist never
imports it, and this package imports it on first use of one of its names.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "ModuleAdapter": "deepdist.torch.adapter",
    "module_params": "deepdist.torch.adapter",
    "use_task_cpus": "deepdist.torch.adapter",
    "TorchGradient": "deepdist.torch.gradient",
    "default_collate": "deepdist.torch.gradient",
    "torch_gradient": "deepdist.torch.gradient",
    "shuffle_within_partitions": "deepdist.torch.data",
    "accuracy": "deepdist.torch.evaluation",
    "evaluate": "deepdist.torch.evaluation",
    "mean_loss": "deepdist.torch.evaluation",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'deepdist.torch' has no attribute {name!r}")
    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as err:
        if err.name != "torch":
            raise
        raise ImportError("deepdist.torch needs PyTorch: pip install 'deepdist[torch]'") from err
