"""deepdist.optim: add, SGD and AdaGrad on dense and sparse-row updates, against slow NumPy references."""

import numpy as np
import pytest

from deepdist.errors import ConfigurationError
from deepdist.optim import SGD, AdaGrad, add, add_to
from deepdist.sparse import SparseRows


def _updates(rng, steps=6, rows=12, dim=3):
    """Updates of a (rows, dim) matrix "w" (sparse, rows repeated, its last 4 rows never touched) and
    of a vector "b" (dense)."""
    out = []
    for _ in range(steps):
        indices = rng.integers(0, rows - 4, 7)
        out.append({"w": SparseRows(indices, rng.normal(size=(len(indices), dim)), (rows, dim)),
                    "b": rng.normal(size=dim)})
    return out


def _dense(part):
    return part.to_dense() if isinstance(part, SparseRows) else np.asarray(part)


def _model(rng):
    return {"w": rng.normal(size=(12, 3)), "b": np.zeros(3)}


def test_add_and_add_to_sum_dense_and_sparse_parts():
    rng = np.random.default_rng(0)
    model = _model(rng)
    expected = {k: v.copy() for k, v in model.items()}
    for update in _updates(rng):
        add(model, update)
        for name, part in update.items():
            expected[name] += _dense(part)                  # repeated rows add up
    for name in model:
        np.testing.assert_allclose(model[name], expected[name])
    counts = np.zeros(4, np.int64)
    add_to(counts, SparseRows(np.array([1, 1, 3]), np.array([2, 5, 1]), (4,)))
    add_to(counts, np.array([1, 0, 0, 0]), scale=3)
    assert counts.tolist() == [3, 7, 0, 1]


def test_sgd_steps_against_the_gradient_with_decay():
    rng = np.random.default_rng(1)
    model = _model(rng)
    expected = {k: v.copy() for k, v in model.items()}
    rule = SGD(lr=0.1, decay=0.5)
    for t, update in enumerate(_updates(rng)):
        rule(model, update)
        for name, part in update.items():
            expected[name] -= 0.1 / (1 + 0.5 * t) * _dense(part)
    for name in model:
        np.testing.assert_allclose(model[name], expected[name])


@pytest.mark.parametrize("per_row", [False, True], ids=["per-element", "per-row"])
@pytest.mark.parametrize("deltas", [False, True], ids=["gradients", "deltas"])
def test_adagrad_matches_a_slow_reference(per_row, deltas):
    rng = np.random.default_rng(2)
    model = _model(rng)
    expected = {k: v.copy() for k, v in model.items()}
    acc = {"w": np.zeros(12 if per_row else (12, 3)), "b": np.zeros(3)}
    lr, eps = 0.3, 1e-8
    rule = AdaGrad(lr=lr, eps=eps, per_row=per_row, deltas=deltas)
    updates = _updates(rng)
    for update in updates:
        rule(model, update)
        for name, part in update.items():
            g = _dense(part)
            touched = np.unique(part.indices) if isinstance(part, SparseRows) else np.arange(len(g))
            for r in touched:                               # one row at a time, repeats summed first
                square = np.mean(g[r] ** 2) if per_row and name == "w" else g[r] ** 2
                acc[name][r] += square
                step = lr * g[r] / np.sqrt(acc[name][r] + eps)
                expected[name][r] += step if deltas else -step
    for name in model:
        np.testing.assert_allclose(model[name], expected[name], rtol=1e-10)
        assert rule.accumulators[name].shape == acc[name].shape
    # rows no update touched keep their accumulator at zero
    untouched = np.setdiff1d(np.arange(12), np.concatenate([u["w"].indices for u in updates]))
    assert len(untouched) and (rule.accumulators["w"][untouched] == 0).all()


def test_adagrad_keeps_float32_parameters_float32():
    model = {"w": np.zeros((4, 2), np.float32)}
    AdaGrad(lr=0.1)(model, {"w": SparseRows(np.array([2]), np.ones((1, 2), np.float32), (4, 2))})
    AdaGrad(lr=0.1, per_row=True, deltas=True)(model, {"w": np.ones((4, 2), np.float32)})
    assert model["w"].dtype == np.float32
    np.testing.assert_allclose(model["w"][2], [-0.1 + 0.1, -0.1 + 0.1], atol=1e-6)
    np.testing.assert_allclose(model["w"][0], [0.1, 0.1], rtol=1e-5)


@pytest.mark.parametrize("rule", [SGD, AdaGrad])
@pytest.mark.parametrize("lr", [0, -1, True, float("nan")])
def test_a_bad_rate_is_refused(rule, lr):
    with pytest.raises(ConfigurationError, match="lr"):
        rule(lr=lr)
