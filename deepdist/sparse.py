"""Sparse-row updates: the rows of a matrix that an update touches.

Word2vec partitions touch a fraction of the vocabulary and a Gibbs sweep
changes a fraction of the word-topic counts, so updates name the rows they
change instead of shipping whole matrices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InvalidUpdateError


@dataclass(frozen=True)
class SparseRows:
    """Rows ``indices`` of a parameter of full shape ``shape``, with values ``values``.

    ``values[i]`` belongs to row ``indices[i]``; indices may repeat (repeats add up).

    Example::

        >>> import numpy as np
        >>> from deepdist import SparseRows
        >>> u = SparseRows(np.array([3, 7]), np.ones((2, 4), np.float32), shape=(10, 4))
        >>> u.to_dense()[7]
        array([1., 1., 1., 1.], dtype=float32)
    """

    indices: np.ndarray
    values: np.ndarray
    shape: tuple

    def __post_init__(self):
        indices = np.asarray(self.indices)
        values = np.asarray(self.values)
        if indices.ndim != 1:
            raise InvalidUpdateError(f"SparseRows indices must be 1-D, got shape {indices.shape}")
        if values.shape[:1] != indices.shape or tuple(values.shape[1:]) != tuple(self.shape[1:]):
            raise InvalidUpdateError(
                f"SparseRows values of shape {values.shape} do not fit {len(indices)} rows "
                f"of a parameter shaped {tuple(self.shape)}"
            )
        object.__setattr__(self, "indices", indices)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))

    @property
    def dtype(self) -> np.dtype:
        return self.values.dtype

    @property
    def nbytes(self) -> int:
        return self.indices.nbytes + self.values.nbytes

    def coalesce(self) -> "SparseRows":
        """Sum repeated rows, so every index appears once, in increasing order."""
        unique, inverse = np.unique(self.indices, return_inverse=True)
        if len(unique) == len(self.indices):
            order = np.argsort(self.indices, kind="stable")
            return SparseRows(self.indices[order], self.values[order], self.shape)
        summed = np.zeros((len(unique),) + self.values.shape[1:], self.values.dtype)
        np.add.at(summed, inverse, self.values)
        return SparseRows(unique, summed, self.shape)

    def to_dense(self) -> np.ndarray:
        dense = np.zeros(self.shape, self.values.dtype)
        np.add.at(dense, self.indices, self.values)
        return dense

    def scaled(self, factor: float) -> "SparseRows":
        return SparseRows(self.indices, self.values * factor, self.shape)

    def __neg__(self) -> "SparseRows":
        return SparseRows(self.indices, -self.values, self.shape)

    def add_to(self, target: np.ndarray, scale: float = 1.0) -> None:
        """``target[indices] += scale * values``, adding repeated rows correctly.

        Rows of several values under strictly increasing indices (what tasks push) take a
        plain fancy-index add: ``np.add.at``, exact for repeats, is many times slower per row
        there; for single values it is the faster of the two, so they always take it.
        """
        values = self.values if scale == 1.0 else self.values * scale
        values = values.astype(target.dtype, copy=False)
        indices = self.indices
        if values.ndim > 1 and (len(indices) < 2 or (indices[1:] > indices[:-1]).all()):
            target[indices] += values
        else:
            np.add.at(target, indices, values)


def add_updates(left, right):
    """Sum two updates of one parameter (dense arrays or :class:`SparseRows`)."""
    if left is None:
        return right
    if right is None:
        return left
    if isinstance(left, SparseRows) and isinstance(right, SparseRows):
        return SparseRows(
            np.concatenate([left.indices, right.indices]),
            np.concatenate([left.values, right.values]),
            left.shape,
        ).coalesce()
    if isinstance(left, SparseRows):
        left, right = right, left
    dense = np.array(left, copy=True)
    if isinstance(right, SparseRows):
        right.add_to(dense)
    else:
        dense += right
    return dense


def sum_updates(left: dict | None, right: dict) -> dict:
    """Sum two updates (dicts of named parts), name by name."""
    if left is None:
        return dict(right)
    merged = dict(left)
    for name, part in right.items():
        merged[name] = add_updates(merged.get(name), part)
    return merged


def sum_many(updates: list, owned_first: bool = False) -> dict:
    """Sum a list of updates name by name, sparse parts with one sort rather than one per pair.

    ``owned_first``: the first update's dense arrays belong to the caller and may be added into.
    """
    names = {}
    for update in updates:
        for name, part in update.items():
            names.setdefault(name, []).append(part)
    merged = {}
    for name, parts in names.items():
        sparse = [p for p in parts if isinstance(p, SparseRows)]
        dense = [p for p in parts if not isinstance(p, SparseRows)]
        total = None
        if sparse:
            total = sparse[0] if len(sparse) == 1 else SparseRows(
                np.concatenate([p.indices for p in sparse]), np.concatenate([p.values for p in sparse]),
                sparse[0].shape).coalesce()
        if dense:
            owned = owned_first and dense[0] is parts[0]
            out = dense[0] if owned else np.array(dense[0], copy=True)
            for part in dense[1:]:
                out += part
            if total is not None:
                total.add_to(out)
            total = out
        merged[name] = total
    return merged


def negate(update: dict) -> dict:
    return {name: -part for name, part in update.items()}


def scale(update: dict, factor: float) -> dict:
    return {
        name: part.scaled(factor) if isinstance(part, SparseRows) else part * factor
        for name, part in update.items()
    }


def copy_rows(target: dict, arrays: dict) -> None:
    """Write pulled rows ``{name: SparseRows}`` into the full arrays of ``target``, in place."""
    for name, part in arrays.items():
        target[name][part.indices] = part.values
