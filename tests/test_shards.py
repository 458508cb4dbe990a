"""``DeepDist(model, servers=N)``: parameters split by rows over N real server processes."""

import os
import signal

import numpy as np
import pytest
from pyspark import TaskContext

from deepdist import AdaGrad, DeepDist, SGD, SparseRows
from deepdist.errors import ConfigurationError, ServerUnreachableError
from deepdist.errors import ShardError
from deepdist.optim import add
from deepdist.params import ModelSpec
from deepdist import shards
from deepdist.shards import ShardLayout

from shard_hooks import pair_gradient, pair_rows, pairs_of
from test_train import _count_words, loss, squared_error_gradient


# -- the layout: pure functions ----------------------------------------------------------------
def test_rows_are_split_in_contiguous_ranges_with_row_zero_on_shard_zero():
    layout = ShardLayout(ModelSpec.of({"w": np.zeros((10, 3)), "b": np.zeros(2), "c": np.zeros(1)}), 3, 0)
    assert layout.ranges("w") == [(0, 4), (4, 7), (7, 10)]
    assert layout.ranges("b") == [(0, 1), (1, 2), (2, 2)]
    assert layout.ranges("c") == [(0, 1), (1, 1), (1, 1)]
    assert layout.names(2) == ["w"]


@pytest.mark.parametrize("order", ["any", "sorted"])
def test_an_update_split_by_shard_adds_up_to_the_update(order):
    rng = np.random.default_rng(0)
    spec = ModelSpec.of({"w": np.zeros((11, 4), np.float32), "n": np.zeros(5, np.int64)})
    layout = ShardLayout(spec, 3, whole_below=0)
    rows = rng.integers(0, 11, size=30)   # repeated rows add up
    if order == "sorted":   # what tasks send: cut by slices, not masks
        rows = np.sort(rows).astype(np.int32)
    update = {"w": SparseRows(rows, rng.normal(size=(30, 4)).astype(np.float32), (11, 4)),
              "n": rng.integers(-3, 3, size=5)}
    pieces = layout.split_update(update)
    whole = {"w": np.zeros((11, 4), np.float32), "n": np.zeros(5, np.int64)}
    for shard, piece in enumerate(pieces):
        for name, part in piece.items():
            lo, hi = layout.ranges(name)[shard]
            if isinstance(part, SparseRows):
                assert part.shape == (hi - lo, 4) and (part.indices < hi - lo).all()
                np.add.at(whole[name][lo:hi], part.indices, part.values)
            else:
                whole[name][lo:hi] += part
    np.testing.assert_allclose(whole["w"], update["w"].to_dense(), rtol=1e-6)
    np.testing.assert_array_equal(whole["n"], update["n"])


def test_every_shard_gets_a_piece_of_every_push():
    layout = ShardLayout(ModelSpec.of({"w": np.zeros((10, 2))}), 2, whole_below=0)
    pieces = layout.split_update({"w": SparseRows(np.array([1, 2]), np.ones((2, 2)), (10, 2))})
    assert pieces[1]["w"].indices.size == 0 and pieces[1]["w"].shape == (5, 2)


@pytest.mark.parametrize("asked", [[19, 0, 7, 7, 13, 2], [0, 2, 7, 7, 13, 19], [8, 9]], ids=["any", "sorted", "one-shard"])
def test_rows_asked_of_the_shards_come_back_in_the_callers_order(asked):
    params = {"w": np.arange(40.0).reshape(20, 2)}
    layout = ShardLayout.of(params, 3, whole_below=0)
    wanted = {"w": np.array(asked)}
    pieces, order = layout.split_rows(wanted)
    answers = []
    for shard, piece in enumerate(pieces):
        lo, hi = layout.ranges("w")[shard]
        answers.append({n: SparseRows(i, params[n][lo:hi][i], (hi - lo, 2)) for n, i in piece.items()})
    joined = layout.join_rows(wanted, order, answers)["w"]
    np.testing.assert_array_equal(joined.values, params["w"][wanted["w"]])
    np.testing.assert_array_equal(joined.indices, wanted["w"])


def test_small_parameters_stay_whole_on_shard_zero():
    layout = ShardLayout.of({"vectors": np.zeros((100_000, 8), np.float32), "words_done": np.zeros(1, np.int64),
                             "totals": np.zeros(4)}, 2)
    assert layout.ranges("vectors") == [(0, 50_000), (50_000, 100_000)]
    assert layout.ranges("words_done") == [(0, 1), (1, 1)] and layout.names(1) == ["vectors"]


def test_servers_must_be_a_positive_integer():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigurationError, match="servers must be an integer >= 1"):
            DeepDist({"w": np.zeros(3)}, servers=bad)


# -- real shards, real Spark ---------------------------------------------------------------------
@pytest.fixture(autouse=True)
def split_small_parameters(request, monkeypatch):
    """The models here are small: split them anyway (shards.WHOLE_BELOW_ROWS keeps small ones whole)."""
    if "sc" in request.fixturenames:
        monkeypatch.setattr(shards, "WHOLE_BELOW_ROWS", 0)


@pytest.fixture(scope="module")
def regression(sc):
    rng = np.random.default_rng(42)
    X = rng.normal(size=(2000, 10))
    y = X @ rng.normal(size=10) + 0.5 * rng.normal(size=2000)
    best, *_ = np.linalg.lstsq(X, y, rcond=None)
    return X, y, best, list(zip(X, y))


@pytest.mark.parametrize("descent", [lambda: SGD(lr=0.1, decay=0.02), lambda: AdaGrad(lr=0.2)],
                         ids=["sgd", "adagrad"])
def test_two_shards_train_exactly_as_one_server_in_one_partition(sc, regression, descent):
    # one partition applies its pushes in order: the same steps, row by row, on one server or two
    *_, rows = regression
    rdd = sc.parallelize(rows, 1)
    trained = []
    for servers in (1, 2):
        with DeepDist({"w": np.zeros(10)}, spark=sc, servers=servers, progress=False) as dd:
            dd.train(rdd, squared_error_gradient, descent(), epochs=2, batch_size=100)
        trained.append(dd.model["w"].copy())
    np.testing.assert_array_equal(trained[0], trained[1])


def test_three_shards_reach_the_least_squares_optimum_from_four_partitions(sc, regression):
    X, y, best, rows = regression
    rdd = sc.parallelize(rows, 4)
    with DeepDist({"w": np.zeros(10)}, spark=sc, servers=3, progress=False) as dd:
        dd.train(rdd, squared_error_gradient, SGD(lr=0.1, decay=0.02), epochs=4, batch_size=50)
        status = dd.status()
    assert loss(X, y, dd.model["w"]) <= 1.01 * loss(X, y, best)
    assert len(status["shards"]) == 3
    assert [s["updates_applied"] for s in status["shards"]] == [4 * 40] * 3   # every push reached every shard
    assert status["version"] == 3 * 4 * 40


def test_retried_tasks_leave_exact_counts_on_every_shard(sc, tmp_path):
    data = np.random.default_rng(1).integers(0, 50, size=4000)
    rdd = sc.parallelize(data.tolist(), 4)
    flag = tmp_path / "failed-once"

    def flaky_count(model, batch):
        task = TaskContext.get()
        # partition 1, first attempt: fail after three pushes reached all three shards
        if task.partitionId() == 1 and task.attemptNumber() == 0 and len(flaky_count.seen) == 3:
            flag.touch()
            raise RuntimeError("injected failure")
        flaky_count.seen.append(len(batch))
        return _count_words(model, batch)
    flaky_count.seen = []

    with DeepDist({"counts": np.zeros(50, np.int64)}, spark=sc, servers=3, progress=False) as dd:
        dd.train(rdd, flaky_count, add, epochs=2, batch_size=100, additive=True)
        status = dd.status()
    assert flag.exists(), "the failure was not injected"
    np.testing.assert_array_equal(dd.model["counts"], 2 * np.bincount(data, minlength=50))
    for shard in status["shards"]:   # each shard applied the failed attempt's pushes, then rolled them back
        assert shard["updates_applied"] > 2 * 40


def test_row_pulls_and_sparse_pushes_route_to_their_shards(sc):
    rng = np.random.default_rng(3)
    examples = pairs_of(rng.normal(size=(60, 4)) / 2, 3000, rng)
    start = (rng.normal(size=(60, 4)) / 2).astype(np.float64)
    rdd = sc.parallelize(examples, 1)
    trained = []
    for servers in (1, 2, 4):
        with DeepDist({"table": start.copy()}, spark=sc, servers=servers, progress=False) as dd:
            dd.train(rdd, pair_gradient, SGD(lr=0.05), epochs=2, batch_size=20, rows=pair_rows)
        trained.append(dd.model["table"])
    np.testing.assert_array_equal(trained[0], trained[1])
    np.testing.assert_array_equal(trained[0], trained[2])
    fit = np.mean([(trained[0][i] @ trained[0][j] - t) ** 2 for i, j, t in examples])
    assert fit < 0.5 * np.mean([(start[i] @ start[j] - t) ** 2 for i, j, t in examples])


def test_a_checkpoint_of_a_sharded_model_holds_every_shard_and_resumes(sc, regression, tmp_path):
    X, y, best, rows = regression
    rdd = sc.parallelize(rows, 2)
    with DeepDist({"w": np.zeros(10)}, spark=sc, servers=2, checkpoint=str(tmp_path), progress=False) as dd:
        dd.train(rdd, squared_error_gradient, SGD(lr=0.1), epochs=2, batch_size=100)
    first = dd.model["w"].copy()
    with DeepDist({"w": np.zeros(10)}, spark=sc, servers=2, checkpoint=str(tmp_path), resume=True,
                  progress=False) as again:
        np.testing.assert_array_equal(again.client.pull()[1]["w"], first)   # both shards start from it
        again.train(rdd, squared_error_gradient, SGD(lr=0.1), epochs=4, batch_size=100)
        assert again.status()["shards"][1]["updates_applied"] == 2 * 20   # epochs 3 and 4 only
    assert loss(X, y, again.model["w"]) <= 1.01 * loss(X, y, best)


class _WholeModelRule:
    needs_whole_model = True

    def __call__(self, model, update):
        pass


def test_a_descent_that_needs_the_whole_model_is_refused_with_a_reason(sc, regression):
    *_, rows = regression
    with DeepDist({"w": np.zeros(10)}, spark=sc, servers=2, progress=False) as dd:
        with pytest.raises(ConfigurationError, match="needs the whole model.*servers=1"):
            dd.train(sc.parallelize(rows, 1), squared_error_gradient, _WholeModelRule())


def test_a_dead_shard_is_one_clear_error(sc, regression):
    *_, rows = regression
    with DeepDist({"w": np.zeros(10)}, spark=sc, servers=2, progress=False) as dd:
        shard = dd._shards.shards[0]
        os.kill(shard.process.pid, signal.SIGKILL)
        shard.process.wait(10)
        with pytest.raises(ShardError, match=r"shard 1 \(pid \d+\) is gone \(exit code -9\)"):
            dd.train(sc.parallelize(rows, 1), squared_error_gradient, SGD(lr=0.1), batch_size=100)
    assert dd._shards is None   # closing stopped what was left


def test_a_task_whose_shard_died_names_the_shard_it_could_not_reach(sc, regression):
    *_, rows = regression
    with DeepDist({"w": np.zeros(10)}, spark=sc, servers=2, progress=False,
                  client_options={"retries": 1, "connect_timeout": 2}) as dd:
        dd.train(sc.parallelize(rows, 1), squared_error_gradient, SGD(lr=0.1), batch_size=100)
        shard = dd._shards.shards[0]
        client = dd.client   # what a task holds
        os.kill(shard.process.pid, signal.SIGKILL)
        shard.process.wait(10)
        with pytest.raises(ServerUnreachableError, match=f"127.0.0.1:{shard.port}"):
            client.pull()


# -- model families ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sentences(sc):
    """Sentences of <= 1000 tokens from the first articles of the Wikipedia dump gensim ships."""
    from deepdist.datasets.wikipedia import read_articles
    from test_word2vec import DUMP

    articles = sorted(read_articles(sc, DUMP, partitions=4).collect())[:30]
    return [tokens[i:i + 1000] for _, tokens in articles for i in range(0, len(tokens), 1000)][:40]


@pytest.mark.parametrize("sync_epochs", [True, False], ids=["job-per-epoch", "one-job"])
def test_word2vec_trains_the_same_vectors_on_two_shards(sc, sentences, monkeypatch, sync_epochs):
    from deepdist.word2vec import DistributedWord2Vec

    monkeypatch.setattr(shards, "WHOLE_BELOW_ROWS", 100)   # the vectors split; the word counters stay whole
    fits = []
    for servers in (1, 2):
        estimator = DistributedWord2Vec(vector_size=16, epochs=2, partitions=1, progress=False, spark=sc,
                                        sync_epochs=sync_epochs, server_options={"servers": servers})
        fits.append(estimator.fit(sentences))
    one, two = fits
    assert len(one.model_.wv) > 100
    # one partition: the same pushes in the same order, so the same vectors to the last bit
    np.testing.assert_array_equal(one.model_.wv.vectors, two.model_.wv.vectors)
    np.testing.assert_array_equal(one.model_.syn1neg, two.model_.syn1neg)
    assert [r["words_done"] for r in one.history_] == [r["words_done"] for r in two.history_]
    assert [r["alpha_mean"] for r in one.history_] == [r["alpha_mean"] for r in two.history_]


@pytest.mark.parametrize("family", ["DNT"])
def test_families_whose_driver_needs_the_whole_model_refuse_shards_before_spark_runs(sc, family):
    from deepdist.dnt import DNT

    estimator = {"DNT": DNT}[family](
        server_options={"servers": 2}, progress=False)
    docs = sc.parallelize([[(0, 1), (1, 2)], [(1, 1)]], 1)
    with pytest.raises(ConfigurationError, match=f"{family} runs on one model server .*servers=2"):
        estimator.fit(docs)


def test_shards_serve_tls_with_the_contexts_pinned_certificate(sc):
    rng = np.random.default_rng(4)
    words = rng.integers(0, 40, size=2000)

    def count(model, batch):
        counts = np.bincount(np.asarray(batch), minlength=40)
        rows = np.flatnonzero(counts)
        return {"n": SparseRows(rows, counts[rows].astype(np.int64), (40,))}

    with DeepDist({"n": np.zeros(40, np.int64)}, spark=sc, servers=2, tls=True, progress=False) as dd:
        assert all(url.startswith("https://127.0.0.1:") for url in dd._urls) and len(dd._urls) == 2
        dd.train(sc.parallelize(words.tolist(), 2), count, add, epochs=2, batch_size=100, additive=True)
        assert dd.status()["shards"][1]["updates_applied"] == 2 * 20
    np.testing.assert_array_equal(dd.model["n"], 2 * np.bincount(words, minlength=40))


def test_clients_share_one_pool_of_sender_threads_per_process(sc):
    import threading

    def senders():
        return [t for t in threading.enumerate() if t.name.startswith("deepdist-shard-sender")]

    before = len(senders())   # earlier tests' sharded clients in this process left their pool
    with DeepDist({"w": np.zeros((30, 2))}, spark=sc, servers=3, progress=False) as dd:
        for _ in range(6):   # as tasks in one Python worker: a fresh client each time
            version, params = dd.client.pull()
            assert params["w"].shape == (30, 2)
    assert 1 <= len(senders()) <= max(before, 2)


def test_a_wait_on_a_counter_is_answered_by_shard_zero_and_the_rows_come_from_every_shard(sc):
    import threading

    from deepdist import wire

    with DeepDist({"w": np.zeros((40, 2)), "rounds": np.zeros(1)}, spark=sc, servers=2, progress=False) as dd:
        dd.set_descent(add, additive=True)
        client = dd.client
        answers = []
        waiter = threading.Thread(target=lambda: answers.append(
            client.pull_rows_when({"w": [35, 1]}, "rounds", 2, timeout=30)))
        waiter.start()
        pusher = dd.client
        for seq in range(2):
            assert waiter.is_alive()   # not before the second round
            # the rows first, applied on both shards; then the round that shard 0 counts
            pusher.push({"w": np.ones((40, 2))}, wire.UpdateMeta(version=0, seq=2 * seq))
            dd.store.drain(), dd._shards.drain(10)
            pusher.push({"rounds": np.ones(1)}, wire.UpdateMeta(version=0, seq=2 * seq + 1))
            dd.store.drain(), dd._shards.drain(10)
        waiter.join(10)
        version, arrays, ready = answers[0]
        assert ready and arrays["w"].indices.tolist() == [35, 1] and arrays["w"].values.tolist() == [[2, 2]] * 2
        # rows of shard 1 only: shard 0 still holds the wait (on a row nobody asked for)
        version, arrays, ready = client.pull_rows_when({"w": [30]}, "rounds", 3, timeout=0.2)
        assert not ready and arrays["w"].values.tolist() == [[2, 2]] and list(arrays) == ["w"]


def test_rows_out_of_range_are_refused_before_anything_is_sent():
    from deepdist.errors import InvalidUpdateError

    layout = ShardLayout.of({"w": np.zeros((10, 2))}, 2, whole_below=0)
    for bad in ([3, 10], [-1, 2], [12, 1]):
        with pytest.raises(InvalidUpdateError, match=r"row index out of range for 'w': rows must be in \[0, 10\)"):
            layout.split_rows({"w": np.array(bad)})
        with pytest.raises(InvalidUpdateError, match="row index out of range"):
            layout.split_update({"w": SparseRows(np.array(bad), np.ones((2, 2)), (10, 2))})


def test_a_model_too_small_to_split_runs_on_one_server_with_a_warning(sc, monkeypatch, caplog):
    monkeypatch.setattr(shards, "WHOLE_BELOW_ROWS", 1024)
    with DeepDist({"w": np.zeros(10)}, spark=sc, servers=2, progress=False) as dd:
        assert dd._shards is None and len(dd._urls) == 1
    assert "every parameter has fewer than 1024 rows" in caplog.text
