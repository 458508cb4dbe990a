"""Epochs that visit each partition's elements in a new order, without moving data.

Plain PyTorch reshuffles the training set every epoch (``DataLoader(shuffle=True)``). A Spark
shuffle every epoch would move the whole data set over the network; permuting each partition's
elements in place is free, and with partitions that were shuffled once (``parallelize`` of a
shuffled list, ``repartition``) it gives every mini-batch a new mix of elements each epoch.
"""

from __future__ import annotations

import numpy as np

__all__ = ["shuffle_within_partitions"]


def shuffle_within_partitions(rdd, seed: int, epoch: int):
    """``rdd`` with each partition's elements permuted, by a permutation fixed by ``(seed, epoch, partition)``.

    Example::

        for epoch in range(5):
            dd.train(shuffle_within_partitions(rdd, seed=0, epoch=epoch), gradient, descent, epochs=1)
    """
    def permute(index, elements):
        elements = list(elements)
        order = np.random.default_rng((int(seed), int(epoch), index)).permutation(len(elements))
        return (elements[i] for i in order)

    return rdd.mapPartitionsWithIndex(permute, preservesPartitioning=True)
