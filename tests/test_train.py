"""End-to-end Downpour training on a real local Spark session and a real server."""

import numpy as np
import pytest
from pyspark import TaskContext

import deepdist
from deepdist.optim import add
from deepdist import AdaGrad, Checkpointer, DeepDist, SGD, ServerUnreachableError, SparseRows, TrainingFailedError


@pytest.fixture(scope="module")
def regression(sc):
    rng = np.random.default_rng(42)
    X = rng.normal(size=(4000, 10))
    y = X @ rng.normal(size=10) + 0.5 * rng.normal(size=4000)
    best, *_ = np.linalg.lstsq(X, y, rcond=None)
    rdd = sc.parallelize(list(zip(X, y)), 4).cache()
    rdd.count()
    yield X, y, best, rdd
    rdd.unpersist()


def loss(X, y, w):
    return 0.5 * np.mean((X @ w - y) ** 2)


def squared_error_gradient(model, batch):
    X = np.array([x for x, _ in batch])
    y = np.array([t for _, t in batch])
    residual = X @ model["w"] - y
    deepdist.report(loss=0.5 * float(np.mean(residual ** 2)))
    return {"w": X.T @ residual / len(batch)}


@pytest.mark.parametrize("descent", [SGD(lr=0.1, decay=0.02), AdaGrad(lr=0.2)], ids=["sgd", "adagrad"])
def test_linear_model_reaches_the_least_squares_optimum(sc, regression, descent):
    X, y, best, rdd = regression
    with DeepDist({"w": np.zeros(10)}, spark=sc) as dd:
        dd.train(rdd, squared_error_gradient, descent, epochs=6, batch_size=100)
        status = dd.status()
    optimum = loss(X, y, best)
    assert loss(X, y, dd.model["w"]) <= 1.01 * optimum
    assert status["updates_applied"] == 6 * 40
    assert status["metrics"]["loss"]["count"] == 6 * 40
    assert sum(status["staleness_histogram"].values()) == 6 * 40


def test_fetch_and_push_every_sum_locally(sc, regression):
    X, y, best, rdd = regression
    with DeepDist({"w": np.zeros(10)}, spark=sc) as dd:
        # pushes are sums of 4 batch gradients, hence the smaller rate
        reports = dd.train(rdd, squared_error_gradient, SGD(lr=0.05, decay=0.01), epochs=4, batch_size=50,
                           fetch_every=2, push_every=4)
        assert dd.status()["updates_applied"] == 4 * 4 * 5       # 20 batches / 4 per push
    assert [r["pulls"] for r in reports[0]] == [10] * 4
    assert loss(X, y, dd.model["w"]) <= 1.02 * loss(X, y, best)


def _count_words(model, batch):
    counts = np.zeros(model["counts"].shape[0], np.int64)
    for word in batch:
        counts[word] += 1
    rows = np.flatnonzero(counts)
    return {"counts": SparseRows(rows, counts[rows], model["counts"].shape)}


def test_retried_tasks_leave_an_exact_additive_model(sc, tmp_path):
    data = np.random.default_rng(1).integers(0, 50, size=4000)
    rdd = sc.parallelize(data.tolist(), 4)
    flag = tmp_path / "failed-once"

    def flaky_count(model, batch):
        task = TaskContext.get()
        # partition 2, first attempt: fail midway, after two pushes reached the server
        if task.partitionId() == 2 and task.attemptNumber() == 0 and len(flaky_count.seen) == 2:
            flag.touch()
            raise RuntimeError("injected failure")
        flaky_count.seen.append(len(batch))
        return _count_words(model, batch)
    flaky_count.seen = []

    with DeepDist({"counts": np.zeros(50, np.int64)}, spark=sc) as dd:
        dd.train(rdd, flaky_count, add, epochs=2, batch_size=100, additive=True)
        status = dd.status()
    assert flag.exists(), "the failure was not injected"
    np.testing.assert_array_equal(dd.model["counts"], 2 * np.bincount(data, minlength=50))
    assert status["updates_applied"] > 2 * 40          # the failed attempt's pushes were applied, then rolled back


def test_descent_error_is_raised_by_train_with_its_message(sc, regression):
    *_, rdd = regression

    def broken(model, update):
        raise ValueError("learning rate schedule exploded at step 0")

    with pytest.raises(ValueError, match="learning rate schedule exploded"):
        with DeepDist({"w": np.zeros(10)}, spark=sc) as dd:
            dd.train(rdd, squared_error_gradient, broken, batch_size=100)


def test_gradient_error_shows_the_python_traceback(sc, regression):
    *_, rdd = regression

    def broken(model, batch):
        raise KeyError("no such feature: 'age'")

    with DeepDist({"w": np.zeros(10)}, spark=sc) as dd:
        with pytest.raises(TrainingFailedError) as info:
            dd.train(rdd, broken, SGD(), batch_size=100)
    message = str(info.value)
    assert "no such feature: 'age'" in message and "Py4J" not in message and "at org.apache" not in message


def test_dead_server_is_one_actionable_error(sc, regression):
    *_, rdd = regression
    dd = DeepDist({"w": np.zeros(10)}, spark=sc, client_options={"retries": 1, "backoff": 0.05})
    with dd:
        dd._server.stop()
        with pytest.raises(ServerUnreachableError) as info:
            dd.train(rdd, squared_error_gradient, SGD(), batch_size=100)
        dd._server = None
        dd.store.stop()
    message = str(info.value)
    assert dd.url in message and "spark.driver.host" in message and "at org.apache" not in message


class LinearModel:
    """An object model: `coef` trains, everything else is static."""

    def __init__(self, n):
        self.coef = np.zeros(n)
        self.feature_names = [f"x{i}" for i in range(n)]


def test_object_model_with_adapter_and_sparse_rows(sc):
    rdd = sc.parallelize(range(200), 4)

    def gradient(model, batch):
        assert model.feature_names[0] == "x0"           # static part arrived by broadcast
        assert model.table.shape == (20, 3)
        rows = np.array(sorted({i % 20 for i in batch}))
        return {"table": SparseRows(rows, np.ones((len(rows), 3)), (20, 3))}

    model = LinearModel(3)
    model.table = np.zeros((20, 3))
    with DeepDist(model, params=["coef", "table"], spark=sc) as dd:
        dd.train(rdd, gradient, SGD(lr=1.0), batch_size=10,
                 rows=lambda batch: {"table": [i % 20 for i in batch]})
    assert dd.model is model and model.feature_names == ["x0", "x1", "x2"]
    # each of the 20 rows is touched by 10 of the 20 batches, with a step of -1
    np.testing.assert_array_equal(model.table, np.full((20, 3), -10.0))


def test_checkpoints_resume_after_the_last_full_epoch(sc, regression, tmp_path):
    X, y, best, rdd = regression
    ckpt = Checkpointer(tmp_path, every_updates=10, keep=2)
    with DeepDist({"w": np.zeros(10)}, spark=sc, checkpoint=ckpt) as dd:
        dd.train(rdd, squared_error_gradient, SGD(lr=0.1), epochs=2, batch_size=100)
    assert len(ckpt.list()) == 2
    saved = ckpt.latest()
    assert saved.meta["epochs_completed"] == 2
    np.testing.assert_array_equal(saved.arrays["w"], dd.model["w"])

    fresh = {"w": np.zeros(10)}
    with DeepDist(fresh, spark=sc, checkpoint=Checkpointer(tmp_path), resume=True) as dd2:
        np.testing.assert_array_equal(fresh["w"], dd.model["w"])
        reports = dd2.train(rdd, squared_error_gradient, SGD(lr=0.1), epochs=3, batch_size=100)
    assert len(reports) == 1                       # only the third epoch ran


def test_wrong_update_shape_is_one_clear_error(sc, regression):
    *_, rdd = regression

    def wrong_shape(model, batch):
        return {"w": np.zeros(11)}

    with DeepDist({"w": np.zeros(10)}, spark=sc) as dd:
        with pytest.raises(deepdist.InvalidUpdateError) as info:
            dd.train(rdd, wrong_shape, SGD(), batch_size=1000)
        assert dd.status()["updates_applied"] == 0
    message = str(info.value)
    assert "shape (11,)" in message and "(10,)" in message and "at org.apache" not in message
    np.testing.assert_array_equal(dd.model["w"], np.zeros(10))
