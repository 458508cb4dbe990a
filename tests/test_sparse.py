"""SparseRows arithmetic against plain loops."""

import numpy as np
import pytest

from deepdist import SparseRows


@pytest.mark.parametrize("indices", [[0, 2, 5], [5, 0, 2], [2, 2, 5, 0, 2], [3]], ids=[
    "increasing", "unsorted", "repeated", "one"])
@pytest.mark.parametrize("width", [None, 3])
def test_add_to_adds_every_row_once_per_occurrence(indices, width):
    rng = np.random.default_rng(len(indices))
    shape = (6,) if width is None else (6, width)
    values = rng.normal(size=(len(indices),) + shape[1:])
    target = rng.normal(size=shape).astype(np.float32)
    expected = target.copy()
    for i, row in enumerate(indices):
        expected[row] += (0.5 * values[i]).astype(np.float32)
    SparseRows(np.array(indices), values, shape).add_to(target, scale=0.5)
    np.testing.assert_allclose(target, expected, rtol=1e-6)
