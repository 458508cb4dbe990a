"""A word2vec-like model for the shard tests: a table whose rows a batch touches in pairs.

Shared by ``tests/test_shards.py`` and the cluster job in ``tests/cluster_jobs.py`` (which ships
it to the executors by value: they do not have ``tests/``).
"""

import numpy as np

from deepdist import SparseRows


def pair_gradient(model, batch):
    """Squared error of ``table[i] . table[j]`` against a target: sparse rows of the two tables' rows."""
    g = np.zeros_like(model["table"])
    for i, j, target in batch:
        residual = model["table"][i] @ model["table"][j] - target
        g[i] += residual * model["table"][j]
        g[j] += residual * model["table"][i]
    touched = pair_rows(batch)["table"]
    return {"table": SparseRows(touched, g[touched], model["table"].shape)}


def pair_rows(batch):
    """The rows a batch reads: tasks pull only these."""
    return {"table": np.unique([r for i, j, _ in batch for r in (i, j)])}


def pairs_of(truth, n: int, rng):
    """``n`` examples ``(i, j, truth[i] . truth[j])`` over random row pairs."""
    pairs = rng.integers(0, len(truth), size=(n, 2))
    return [(int(i), int(j), float(truth[i] @ truth[j])) for i, j in pairs]
