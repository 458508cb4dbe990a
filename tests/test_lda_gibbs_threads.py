"""GibbsLDA(threads=T): a task samples slices of its block on T threads and exchanges their
combined change with the server once a round (deepdist.lda.gibbs_threads), on local Spark."""

import numpy as np
import pytest

from deepdist.errors import ConfigurationError
from deepdist.lda import GibbsLDA
from deepdist.lda.synthetic import synthetic_lda_corpus, topic_recovery

from test_lda_gibbs import FailOnce, counts_from_state

V, K = 400, 8


@pytest.fixture(scope="module")
def corpus():
    docs, phi = synthetic_lda_corpus(1200, V, K, 60, alpha=0.1, beta=0.01, seed=3)
    return [d.tolist() for d in docs], phi


def fit(sc, docs, partitions, **options):
    options = {"num_topics": K, "id2word": [str(i) for i in range(V)], "progress": False, "seed": 0,
               "epochs": 30, "sweeps_per_job": 10, "keep_state": True, **options}
    lda = GibbsLDA(**options)
    assert lda.fit(sc.parallelize(docs, partitions)) is lda
    return lda


def test_two_threads_in_one_task_exchange_half_as_often_as_two_partitions_and_learn_as_well(sc, corpus):
    docs, phi = corpus
    threads, partitions = fit(sc, docs, 1, threads=2), fit(sc, docs, 2)
    try:
        # the same steps (sweeps, and the burn-in's slices), each a single exchange for the task
        # whose two threads merged in memory, and one per partition for the two partitions
        for a, b in zip(threads.history_[1:], partitions.history_[1:]):
            assert 2 * a["pushes"] == b["pushes"] > 0
        for lda in (threads, partitions):
            np.testing.assert_array_equal(counts_from_state(lda, V, K), lda.model_.word_topic_)
            assert lda.repairs_ == 0
        assert topic_recovery(phi, threads.model_.topic_word_) > 0.95
        assert threads.history_[-1]["ll_per_token"] >= partitions.history_[-1]["ll_per_token"] - 0.02
    finally:
        threads.state_.unpersist()
        partitions.state_.unpersist()


def test_threads_are_scheduled_out_of_the_result(sc, corpus):
    docs, _ = corpus
    runs = [fit(sc, docs, 1, threads=2, epochs=12, sweeps_per_job=6) for _ in range(2)]
    try:
        np.testing.assert_array_equal(runs[0].model_.word_topic_, runs[1].model_.word_topic_)
        np.testing.assert_array_equal(runs[0].state_.collect()[0].topics, runs[1].state_.collect()[0].topics)
    finally:
        for lda in runs:
            lda.state_.unpersist()


def test_counts_stay_exact_when_a_threaded_task_fails_after_its_pushes(sc, corpus, tmp_path):
    docs, _ = corpus
    marker = tmp_path / "failed"
    lda = GibbsLDA(num_topics=K, id2word=[str(i) for i in range(V)], epochs=6, sweeps_per_job=2, sync_every=1,
                   progress=False, keep_state=True, seed=1, threads=3)
    lda._task_hook = FailOnce(str(marker), job=2, partition=1)
    model = lda.fit(sc.parallelize(docs, 2)).model_
    try:
        assert marker.exists(), "the failure was not injected"
        recomputed = counts_from_state(lda, V, K)
        np.testing.assert_array_equal(recomputed, model.word_topic_)
        np.testing.assert_array_equal(recomputed.sum(axis=0), model.topic_totals_)
        assert lda.repairs_ == 0    # the ledger alone kept the counts exact
    finally:
        lda.state_.unpersist()


def test_threads_are_checked(sc):
    with pytest.raises(ConfigurationError, match="threads"):
        GibbsLDA(threads=0, progress=False).fit(sc.parallelize([["a", "b"]], 1))
