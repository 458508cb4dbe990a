"""GibbsLDA and OnlineLDA on sharded model servers (``server_options={"servers": N}``), over real
shard processes: Gibbs's count table split by word rows, its flat view cut at the same rows, and
the driver's repairs and lineage cuts reaching every shard; online LDA's λ split by word rows,
each shard blending its own rows on the chunk tags every shard sees."""

import os

import numpy as np
import pytest

from deepdist import DeepDist, SparseRows
from deepdist.lda import GibbsLDA, OnlineLDA
from deepdist.lda import online as online_module
from deepdist.lda.evaluate import completion_perplexity
from deepdist.lda.online_steps import _EStep
from deepdist.optim import add
from deepdist.params import ModelSpec
from deepdist.shards import ShardLayout, flat_aliases
from deepdist.lda.synthetic import synthetic_lda_corpus, topic_recovery

from test_lda_gibbs import FailOnce, HoldFitState, counts_from_state

# more words than shards.WHOLE_BELOW_ROWS, so that n_wk is split and not kept whole on shard 0
V, K = 1500, 8


@pytest.fixture(scope="module")
def corpus():
    docs, _ = synthetic_lda_corpus(600, V, K, 60, alpha=0.1, beta=0.01, seed=5)
    return [d.tolist() for d in docs]


def gibbs(servers, **options):
    options = {"num_topics": K, "id2word": [str(i) for i in range(V)], "progress": False, "seed": 0,
               "server_options": {"servers": servers}, **options}
    return GibbsLDA(**options)


def test_a_flat_view_is_found_and_cut_where_its_table_is():
    table = np.zeros((1001, 7), np.int32)
    params = {"word_topic": table, "topic_totals": np.zeros(7, np.int64), "word_topic_flat": table.reshape(-1),
              "copy": table.reshape(-1).copy()}
    assert flat_aliases(params) == {"word_topic_flat": "word_topic"}
    layout = ShardLayout(ModelSpec.of(params), 3, whole_below=0, aliases=flat_aliases(params))
    assert layout.ranges("word_topic") == [(0, 334), (334, 668), (668, 1001)]
    assert layout.ranges("word_topic_flat") == [(0, 334 * 7), (334 * 7, 668 * 7), (668 * 7, 1001 * 7)]
    assert layout.ranges("copy") != layout.ranges("word_topic_flat")   # a copy is no alias
    # a table too small to split keeps its flat view whole with it
    small = ShardLayout(ModelSpec.of(params), 3, aliases=flat_aliases(params))
    assert small.ranges("word_topic_flat") == [(0, 1001 * 7), (1001 * 7,) * 2, (1001 * 7,) * 2]


def test_replicated_parameters_reach_every_shard_whole_and_per_shard_ones_put_a_row_on_each():
    spec = ModelSpec.of({"rows": np.zeros((3000, 2)), "tag": np.zeros(6), "sums": np.zeros((3, 2))})
    layout = ShardLayout(spec, 3, replicated=["tag"], per_shard=["sums"])
    assert layout.ranges("sums") == [(0, 1), (1, 2), (2, 3)]
    assert layout.ranges("tag") == [(0, 6), (6, 6), (6, 6)]           # read from shard 0
    kept = [layout.slices({"rows": np.zeros((3000, 2)), "tag": np.arange(6.0), "sums": np.zeros((3, 2))}, s)
            for s in range(3)]
    assert [sorted(k) for k in kept] == [["rows", "sums", "tag"]] * 3 and kept[2]["tag"].tolist() == list(range(6))
    tag = SparseRows(np.array([4]), np.array([1.0]), (6,))
    pieces = layout.split_update({"rows": SparseRows(np.array([5]), np.ones((1, 2)), (3000, 2)), "tag": tag})
    assert all(p["tag"] is tag for p in pieces) and "rows" in pieces[0] and "rows" not in pieces[1]
    # each shard's change log holds its copy's change: the joined changes count it once
    joined = layout.join_changes([{"tag": tag}, {"tag": tag}, {"tag": tag}])
    assert joined["tag"].indices.tolist() == [4]
    with pytest.raises(Exception, match="one row per model server"):
        ShardLayout(spec, 2, per_shard=["sums"])


def test_pushes_by_flat_index_land_in_the_rows_each_shard_serves_and_driver_rewrites_reach_every_shard(sc):
    table = np.zeros((3000, 4), np.int32)
    model = {"n": table, "n_flat": table.reshape(-1)}
    rng = np.random.default_rng(2)
    flat = np.unique(rng.integers(0, table.size, size=500)).astype(np.int32)

    def count(_, batch):
        return {"n_flat": SparseRows(flat, np.ones(flat.size, np.int32), (table.size,))}

    with DeepDist(model, spark=sc, servers=3, progress=False) as dd:
        dd.train(sc.parallelize(range(2), 2), count, add, additive=True)
        expected = np.zeros(table.size, np.int32)
        expected[flat] = 2
        np.testing.assert_array_equal(table.reshape(-1), expected)       # gathered from 3 shards
        _, rows = dd.client.pull_rows({"n": np.arange(3000)})             # each shard's table moved too
        np.testing.assert_array_equal(rows["n"].values.reshape(-1), expected)
        table[2500:] = 7                                                   # the driver rewrites shard 2's rows
        before = dd.version
        dd.rewrote("n")
        assert dd.version > before
        _, pulled = dd.client.pull(["n", "n_flat"])
        np.testing.assert_array_equal(pulled["n"], table)
        np.testing.assert_array_equal(pulled["n_flat"], table.reshape(-1))
        with pytest.raises(Exception, match="unknown parameters"):
            dd.rewrote("m")


def test_two_shards_sample_the_same_counts_as_one_server_with_driver_held_lineage_cuts(sc, corpus):
    fits = []
    for servers in (1, 2):
        lda = gibbs(servers, epochs=6, sweeps_per_job=1, lineage_every=2, keep_state=True)
        held = HoldFitState()
        lda._fit_hook = held
        lda.fit(sc.parallelize(corpus, 1))
        assert held.fit.cut_mode == "driver" and any(r.get("cut") == "driver" for r in lda.history_)
        fits.append(lda)
    one, two = fits
    try:
        # one partition: the same pushes in the same order, so the same counts to the last one
        np.testing.assert_array_equal(one.model_.word_topic_, two.model_.word_topic_)
        np.testing.assert_array_equal(one.model_.topic_totals_, two.model_.topic_totals_)
        assert [r["log_likelihood"] for r in one.history_] == [r["log_likelihood"] for r in two.history_]
        assert two.repairs_ == 0 and len(two.status_["shards"]) == 2
        assert all(s["updates_applied"] > 0 for s in two.status_["shards"])
    finally:
        one.state_.unpersist()
        two.state_.unpersist()


def test_counts_stay_exact_on_shards_after_a_retried_task_and_a_repair(sc, corpus, tmp_path):
    held = HoldFitState()

    def corrupt(estimator, record):
        # a driver-side rewrite of a row that lives on shard 1, which the next job's checksum
        # must find and undo on that shard
        if record["job"] == 1:
            with held.fit.dd.store.lock:
                held.fit.model["word_topic"][V - 3, 1] += 7
                held.fit.model["topic_totals"][1] += 7
            held.fit.dd.rewrote("word_topic", "topic_totals")

    lda = gibbs(2, epochs=5, sweeps_per_job=1, sync_every=1, keep_state=True, seed=1, callbacks=[corrupt])
    lda._task_hook = FailOnce(str(tmp_path / "failed"), job=3, partition=1)
    lda._fit_hook = held
    model = lda.fit(sc.parallelize(corpus, 3)).model_
    try:
        assert (tmp_path / "failed").exists(), "the failure was not injected"
        assert lda.repairs_ == 1 and lda.history_[2]["repaired"] and not lda.history_[4]["repaired"]
        recomputed = counts_from_state(lda, V, K)
        np.testing.assert_array_equal(recomputed, model.word_topic_)
        np.testing.assert_array_equal(recomputed.sum(axis=0), model.topic_totals_)
        assert lda.history_[-1]["ll_per_token"] > lda.history_[0]["ll_per_token"]
    finally:
        lda.state_.unpersist()


# -- OnlineLDA ----------------------------------------------------------------------------------
def _bow(doc):
    words, counts = np.unique(doc, return_counts=True)
    return [(int(w), int(c)) for w, c in zip(words, counts)]


@pytest.fixture(scope="module")
def bows():
    docs, topic_word = synthetic_lda_corpus(1100, V, K, 60, alpha=0.1, beta=0.01, seed=6, poisson_lengths=True)
    return [_bow(d) for d in docs[:960]], docs[960:], topic_word


def online(servers, **options):
    options = {"num_topics": K, "id2word": {i: str(i) for i in range(V)}, "epochs": 2, "chunksize": 80, "seed": 4,
               "max_staleness": 0, "progress": False, "server_options": {"servers": servers}, **options}
    return OnlineLDA(**options)


def test_online_lda_on_two_shards_blends_the_same_topics_as_one_server(sc, bows):
    train, heldout, _ = bows
    rdd = sc.parallelize(train, 2).cache()
    try:
        one, two = online(1).fit(rdd), online(2).fit(rdd)
    finally:
        rdd.unpersist()
    shards = two.status_["shards"]
    assert len(shards) == 2 and shards[0]["updates_applied"] == shards[1]["updates_applied"] > 0
    assert [h["msteps"] for h in two.history_] == [h["msteps"] for h in one.history_] == [6, 6]
    assert two.model_.num_updates == one.model_.num_updates == len(train)
    # the same M-steps on the same chunks; the topic sums are added from two partial sums, so
    # float64 rounding (not the algorithm) is all that may differ
    a, b = one.model_.state.sstats, two.model_.state.sstats
    assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max()
    p1 = completion_perplexity(heldout, one.model_.get_topics(), one.model_.alpha)
    p2 = completion_perplexity(heldout, two.model_.get_topics(), two.model_.alpha)
    assert p2 == pytest.approx(p1, rel=1e-4)


class _FailingEStep(_EStep):
    """Partition 1's first attempt dies after it delivered two chunks (once: ``failure_file``)."""

    failure_file = None

    def __call__(self, shell, chunk):
        from pyspark import TaskContext

        task = TaskContext.get()
        done = self._chunks.get(self._task_key(), 0)
        if (task.partitionId() == 1 and task.attemptNumber() == 0 and done == 2
                and not os.path.exists(self.failure_file)):
            with open(self.failure_file, "a") as f:
                f.write("failed\n")
            raise RuntimeError("injected failure after two chunks")
        return super().__call__(shell, chunk)


def _fit_with_a_failure(sc, train, servers, marker, monkeypatch):
    """OnlineLDA on ``servers`` servers, partition 1's first attempt dying after two chunks."""

    class Failing(_FailingEStep):
        pass

    Failing.failure_file = marker
    monkeypatch.setattr(online_module, "_EStep", Failing)
    rdd = sc.parallelize(train, 2).cache()
    try:
        # no staleness: which M-steps a chunk sees does not hang on task timing, so two fits of
        # the same failure can be compared (with staleness 1 they land in one of two optima)
        lda = online(servers, max_staleness=0).fit(rdd)
    finally:
        rdd.unpersist()
    assert os.path.exists(marker), "the failure was not injected"
    return lda


def test_online_lda_on_two_shards_merges_each_chunk_once_when_a_task_is_retried(sc, bows, tmp_path, monkeypatch):
    train, heldout, topic_word = bows
    lda = _fit_with_a_failure(sc, train, 2, str(tmp_path / "failed-2"), monkeypatch)
    # the retry skipped the E-steps of the two chunks its lost attempt delivered: every chunk
    # weighs once, on both shards alike (every push reached both)
    assert [h["docs_merged"] for h in lda.history_] == [len(train)] * 2
    assert [h["msteps"] for h in lda.history_] == [6, 6]
    shards = lda.status_["shards"]
    assert shards[0]["updates_applied"] == shards[1]["updates_applied"]
    model = lda.model_
    assert topic_recovery(topic_word, model.get_topics()) > 0.8
    # against one server through the same failure
    reference = _fit_with_a_failure(sc, train, 1, str(tmp_path / "failed-1"), monkeypatch)
    ours = completion_perplexity(heldout, model.get_topics(), model.alpha)
    theirs = completion_perplexity(heldout, reference.model_.get_topics(), reference.model_.alpha)
    assert ours <= 1.02 * theirs, (ours, theirs)


class _Flushing:
    """An additive descent with a step of its own between epochs (as OnlineLDA's blend of what it
    merged): ``flush`` adds one to every row the server holds of ``n``."""

    def __call__(self, model, update):
        update["n"].add_to(model["n"])

    def flush(self, model):
        model["n"] += 1
        return True


def test_a_descents_own_step_runs_on_every_shard_and_the_model_gathers_it(sc):
    table = np.zeros((3000, 2), np.int64)

    def push(_, batch):
        rows = np.asarray(batch, np.int32)
        return {"n": SparseRows(rows, np.ones((len(rows), 2), np.int64), table.shape)}

    with DeepDist({"n": table}, spark=sc, servers=2, progress=False) as dd:
        dd.train(sc.parallelize([0, 2999], 2), push, _Flushing(), batch_size=1)
        before = dd.version
        assert dd.call_descent("flush") is True
        expected = np.ones_like(table)
        expected[[0, 2999]] += 1
        np.testing.assert_array_equal(table, expected)               # both shards' rows, gathered
        _, pulled = dd.client.pull(["n"])
        np.testing.assert_array_equal(pulled["n"], expected)         # and what tasks read
        assert dd.version > before
