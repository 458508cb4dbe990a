"""GibbsLDA on Spark end to end: recovery of planted topics, exact counts under task failures,
the estimator contract, the fitted model's API and its file format, vocabulary building,
checkpoints and resume."""

import gzip
import json
import os
import pickle
import warnings

import numpy as np
import pytest

from deepdist import persist
from deepdist.errors import ConfigurationError, NotFittedError
from deepdist.lda import GibbsLDA, GibbsLDAModel
from deepdist.lda import gibbs_checkpoint, gibbs_model
from deepdist.lda.corpus import Block
from deepdist.lda.gibbs_task import _Task
from deepdist.lda.sampler import derive_seed
from deepdist.lda.synthetic import synthetic_lda_corpus, topic_recovery
from deepdist.vocabulary import Vocabulary, build_vocabulary

V, K = 400, 8


@pytest.fixture(scope="module")
def corpus():
    docs, phi = synthetic_lda_corpus(1200, V, K, 60, alpha=0.1, beta=0.01, seed=3)
    return [d.tolist() for d in docs], phi


def counts_from_state(lda, num_words, num_topics):
    """n_wk recomputed from the assignments the final RDD holds."""
    counts = np.zeros((num_words, num_topics), np.int64)
    for block in lda.state_.collect():
        np.add.at(counts, (block.words, block.topics), 1)
    return counts


class FailOnce:
    """Test hook: fail a partition's first attempt right after its first push of one job."""

    def __init__(self, marker, job, partition):
        self.marker, self.job, self.partition = marker, job, partition

    def __call__(self, *, job, partition, attempt, event):
        # attempts are numbered by Spark's taskAttemptId (unique in the application), so the first
        # attempt is the one that finds no marker
        if job == self.job and partition == self.partition and not os.path.exists(self.marker):
            with open(self.marker, "a") as f:
                f.write(f"failed job {job} partition {partition}\n")
            raise RuntimeError("injected failure after a push")


def fit(sc, docs, partitions=2, **options):
    options = {"num_topics": K, "id2word": [str(i) for i in range(V)], "progress": False, "seed": 0, **options}
    lda = GibbsLDA(**options)
    assert lda.fit(sc.parallelize(docs, partitions)) is lda
    return lda, lda.model_


class HoldFitState:
    """Test hook ``GibbsLDA._fit_hook``: keeps the fit state, whose ``dd`` is the count server."""

    def __call__(self, fit_state):
        self.fit = fit_state


def test_recovers_planted_topics_and_likelihood_rises(sc, corpus):
    docs, phi = corpus
    lda, model = fit(sc, docs, epochs=60, sweeps_per_job=10, keep_state=True)
    try:
        assert topic_recovery(phi, model.topic_word_) >= 0.9
        lls = [h["ll_per_token"] for h in lda.history_]
        assert lls[-1] > lls[1] > lls[0]
        assert np.allclose(model.topic_word_.sum(axis=1), 1.0)
        assert lda.repairs_ == 0
        assert "log_likelihood" in lda.status_["metrics"]  # the training log-likelihood is on /status
        assert np.array_equal(counts_from_state(lda, V, K), model.word_topic_)
        # traffic: sparse pushes are smaller than dense tables
        last = lda.history_[-1]
        assert 0 < last["bytes_pushed"] < last["dense_bytes_pushed"]
        # each partition's count exchanges ran on its background thread, and their time is accounted
        assert len(last["exchange_cpu_seconds"]) == 2
        assert all(0 < cpu <= wall for cpu, wall in zip(last["exchange_cpu_seconds"], last["exchange_seconds"]))
    finally:
        lda.state_.unpersist()


def test_fit_returns_self_and_the_old_names_warn_and_still_work(sc, corpus):
    docs, _ = corpus
    seen = []

    def callback(estimator, record):
        # the estimator itself, with model_ the counts as they stand after this job
        seen.append((estimator, record["epoch"], int(estimator.model_.topic_totals_.sum()), record["tokens"]))

    with pytest.warns(DeprecationWarning, match="iterations") as caught:
        lda = GibbsLDA(num_topics=K, id2word=[str(i) for i in range(V)], progress=False, iterations=3,
                       callback=callback)
    assert any("callback" in str(w.message) for w in caught)
    assert lda.epochs == 3 and lda.callbacks is callback
    assert lda.fit(sc.parallelize(docs, 2)) is lda
    # a callback asks for a job a sweep: the initialisation, then sweeps 1, 2, 3
    assert [e for _, e, _, _ in seen] == [0, 1, 2, 3] == [h["epoch"] for h in lda.history_]
    assert all(est is lda and total == tokens for est, _, total, tokens in seen)
    assert [h["sweeps"] for h in lda.history_] == [0, 1, 2, 3] and lda.n_iter_ == 3
    elapsed = [h["elapsed"] for h in lda.history_]
    assert elapsed == sorted(elapsed) and all(h["seconds"] <= h["elapsed"] for h in lda.history_)
    assert isinstance(lda.model_, GibbsLDAModel) and lda.model_.word_topic_.sum() == sum(map(len, docs))
    # alpha_ has one meaning, the model's (K,) array; the estimator reaches it only as the old
    # fit-returns-the-model path, with a warning
    assert lda.model_.alpha_.shape == (K,)
    with pytest.warns(DeprecationWarning, match="model_"):
        assert np.array_equal(lda.alpha_, lda.model_.alpha_)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GibbsLDA(epochs=3, callbacks=[callback])  # the new names are silent
    with pytest.raises(TypeError, match="both callback= and callbacks="):
        GibbsLDA(callback=callback, callbacks=[callback])


def test_a_model_directory_of_the_old_format_still_loads_with_a_warning(tmp_path):
    """The directory ``save`` wrote before the one format (model.json, model.npz, vocabulary.json.gz)."""
    rng = np.random.default_rng(0)
    word_topic = rng.integers(0, 9, (6, 3)).astype(np.int32)
    vocabulary = Vocabulary(["a", "b", "c", "d", "e", "f"])
    old = tmp_path / "old"
    old.mkdir()
    np.savez_compressed(old / "model.npz", word_topic=word_topic, topic_totals=word_topic.sum(axis=0),
                        alpha=np.full(3, 0.2))
    with gzip.open(old / "vocabulary.json.gz", "wt", encoding="utf-8") as f:
        json.dump(vocabulary.to_json(), f)
    (old / "model.json").write_text(json.dumps({"format": 1, "num_topics": 3, "num_words": 6, "beta": 0.05,
                                                "history": [{"job": 0, "sweeps": 0}]}))
    with pytest.warns(DeprecationWarning, match="old directory format"):
        model = GibbsLDAModel.load(old)
    assert np.array_equal(model.word_topic_, word_topic) and model.id2word == vocabulary.id2word
    assert model.alpha_.tolist() == [0.2] * 3 and model.beta == 0.05 and model.history_ == [{"job": 0, "sweeps": 0}]
    # saved again, it is one file of the new format, and loads without a warning
    model.save(tmp_path / "new")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = GibbsLDAModel.load(tmp_path / "new")
    assert np.array_equal(again.word_topic_, word_topic) and again.id2word == vocabulary.id2word
    with pytest.raises(ConfigurationError, match="is a directory"):
        model.save(old)
    with pytest.raises(ConfigurationError, match="holds"):
        persist.write_frame(tmp_path / "other", {}, {"format": "something/1"})
        GibbsLDAModel.load(tmp_path / "other")


def test_counts_exact_after_injected_task_failure(sc, corpus, tmp_path):
    docs, _ = corpus
    marker = tmp_path / "failed"
    lda = GibbsLDA(num_topics=K, id2word=[str(i) for i in range(V)], epochs=6, sweeps_per_job=2,
                   sync_every=1, progress=False, keep_state=True, seed=1)
    lda._task_hook = FailOnce(str(marker), job=2, partition=1)
    model = lda.fit(sc.parallelize(docs, 3)).model_
    try:
        assert marker.exists(), "the failure was not injected"
        # job 2's sweeps (3 and 4) are burn-in sweeps of 4 slices each, so every partition pushes
        # 8 times; the failed attempt pushed before it died, and only its retry's pushes count
        assert lda.history_[2]["pushes"] == 3 * 2 * 4
        recomputed = counts_from_state(lda, V, K)
        assert np.array_equal(recomputed, model.word_topic_)                    # element for element
        assert np.array_equal(recomputed.sum(axis=0), model.topic_totals_)
        assert lda.repairs_ == 0  # the ledger alone kept the counts exact
    finally:
        lda.state_.unpersist()


def test_aggregate_check_repairs_corrupted_counts(sc, corpus):
    docs, _ = corpus

    held = HoldFitState()

    def corrupt(estimator, record):
        if record["job"] == 1:
            store = held.fit.dd.store
            with store.lock:
                store.params["word_topic"][3, 1] += 7
                store.params["topic_totals"][1] += 7

    lda = GibbsLDA(num_topics=K, id2word=[str(i) for i in range(V)], progress=False, epochs=3, keep_state=True,
                   callbacks=[corrupt])
    lda._fit_hook = held
    model = lda.fit(sc.parallelize(docs, 2)).model_
    try:
        assert lda.repairs_ == 1 and lda.history_[2]["repaired"]
        assert np.array_equal(counts_from_state(lda, V, K), model.word_topic_)
    finally:
        lda.state_.unpersist()


class LoseCachedBlocks:
    """Callback: after the given jobs, drop every block Spark cached since it was made, as if the
    executors holding them had died (they stay, so this runs on local[*]): the next job's input,
    and the word ids, must come back from the lineage."""

    def __init__(self, sc, jobs):
        self.sc, self.jobs = sc, set(jobs)
        self.before = set(sc._jsc.getPersistentRDDs().keys())

    def __call__(self, estimator, record):
        if record["job"] in self.jobs:
            for rdd_id, rdd in list(self.sc._jsc.getPersistentRDDs().items()):
                if rdd_id not in self.before:
                    rdd.unpersist(True)


def test_lost_cached_blocks_come_back_from_the_lineage_and_the_driver_held_cut(sc, corpus):
    docs, _ = corpus
    # lineage cuts after jobs 3 and 6; blocks lost after job 2 (before any cut), after job 4
    # (one job past the cut) and after job 6 (right after the cut)
    lda, model = fit(sc, docs, epochs=8, lineage_every=3, keep_state=True,
                     callbacks=[LoseCachedBlocks(sc, {2, 4, 6})])
    try:
        history = lda.history_
        assert [h["job"] for h in history if h.get("cut")] == [3, 6]
        assert all(history[j]["cut"] == "driver" and history[j]["cut_bytes"] == 72000 for j in (3, 6))
        # job 3 and job 5 started from older assignments (job 0's, the cut's) and left them unsampled
        assert history[3]["rebuilt_partitions"] == [0, 1] and history[3]["rebuilt_from_jobs"] == [0]
        assert history[5]["rebuilt_partitions"] == [0, 1] and history[5]["rebuilt_from_jobs"] == [3]
        assert history[3]["repaired"] and history[5]["repaired"] and lda.repairs_ == 2
        # right after a cut nothing older comes back: the driver holds the cut's assignments
        assert history[7]["rebuilt_partitions"] == [] and not history[7]["repaired"]
        assert np.array_equal(counts_from_state(lda, V, K), model.word_topic_)
        assert history[-1]["ll_per_token"] > history[1]["ll_per_token"]
    finally:
        lda.state_.unpersist()


def test_model_api_save_load_gensim(sc, corpus, tmp_path):
    docs, _ = corpus
    held = docs[:50]
    lda, model = fit(sc, docs[50:], epochs=30, sweeps_per_job=10)
    topics = model.show_topics(num_words=5)
    assert len(topics) == K and all(len(words) == 5 for _, words in topics)
    theta = model.transform(held[:10])
    assert theta.shape == (10, K) and np.allclose(theta.sum(axis=1), 1.0)
    ll = model.log_perplexity(held)
    assert -np.log(V) < ll < 0  # better than uniform over the vocabulary
    assert model.log_perplexity(held, method="gibbs", iterations=20, burn_in=5) < 0
    model.save(tmp_path / "m")
    _, meta = persist.read_frame(tmp_path / "m", expect=gibbs_model.FORMAT)  # one file, the one format
    assert meta["vocabulary"]["id2word"] == model.id2word and len(meta["history"]) == len(lda.history_)
    loaded = GibbsLDAModel.load(tmp_path / "m")
    assert np.array_equal(loaded.word_topic_, model.word_topic_) and loaded.id2word == model.id2word
    assert np.array_equal(loaded.topic_totals_, model.topic_totals_) and np.array_equal(loaded.alpha_, model.alpha_)
    assert loaded.beta == model.beta and loaded.history_[-1]["ll_per_token"] == lda.history_[-1]["ll_per_token"]
    assert loaded.log_perplexity(held) == pytest.approx(ll)
    gensim_model = model.to_gensim()
    assert np.allclose(gensim_model.get_topics(), model.topic_word_)
    assert gensim_model.id2word[5] == model.id2word[5]


def test_token_input_vocabulary_and_hashing(sc):
    rng = np.random.default_rng(0)
    words = ["apple", "pear", "plum", "fig", "car", "bus", "train", "bike"]
    docs = [list(rng.choice(words[:4] if i % 2 else words[4:], 20)) + ["the", "rare" + str(i)]
            for i in range(200)]
    rdd = sc.parallelize(docs, 2)
    vocab = build_vocabulary(rdd, min_count=2, stop_words={"the"})
    assert sorted(vocab.id2word) == sorted(words)
    model = GibbsLDA(num_topics=2, epochs=20, sweeps_per_job=10, min_count=2, stop_words={"the"},
                     progress=False).fit(rdd).model_
    tops = [set(w for w, _ in ws) for _, ws in model.show_topics(num_words=4)]
    assert sorted(map(sorted, tops)) == sorted([sorted(words[:4]), sorted(words[4:])])
    hashed = GibbsLDA(num_topics=2, epochs=4, sweeps_per_job=2, hash_buckets=64, progress=False).fit(rdd).model_
    assert hashed.word_topic_.shape == (64, 2)
    assert hashed.transform([["apple", "pear", "unknown"]]).shape == (1, 2)


def test_warns_when_one_partition_holds_far_more_than_its_share(sc, corpus, caplog):
    docs, _ = corpus
    options = {"num_topics": K, "id2word": [str(i) for i in range(V)], "progress": False, "epochs": 1}
    with caplog.at_level("WARNING", logger="deepdist.lda.gibbs"):
        GibbsLDA(**options).fit(sc.parallelize([docs[:900], docs[900:]], 2).flatMap(lambda shard: shard))
    warnings = [r.getMessage() for r in caplog.records if "more than the mean" in r.getMessage()]
    assert len(warnings) == 1 and "repartition" in warnings[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="deepdist.lda.gibbs"):
        GibbsLDA(**options).fit(sc.parallelize(docs, 2))
    assert not [r for r in caplog.records if "more than the mean" in r.getMessage()]


def test_warns_when_the_partitions_are_too_small_for_exchanges_to_pay(sc, corpus, caplog):
    docs, _ = corpus
    options = {"num_topics": K, "id2word": [str(i) for i in range(V)], "progress": False, "epochs": 1}
    tokens = sum(len(d) for d in docs)
    with caplog.at_level("WARNING", logger="deepdist.lda.gibbs"):
        GibbsLDA(**options).fit(sc.parallelize(docs, 2))
    warnings = [r.getMessage() for r in caplog.records if "fewer partitions" in r.getMessage()]
    assert len(warnings) == 1
    assert f"2 partitions hold {tokens} tokens, {tokens // 2} each" in warnings[0]
    assert "docs_rdd.coalesce(1)" in warnings[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="deepdist.lda.gibbs"):
        GibbsLDA(**options).fit(sc.parallelize(docs, 1))  # one partition: nothing to exchange
    assert not [r for r in caplog.records if "fewer partitions" in r.getMessage()]


def test_checkpoint_and_resume(sc, corpus, tmp_path):
    docs, _ = corpus
    rdd = sc.parallelize(docs, 2)
    options = dict(num_topics=K, id2word=[str(i) for i in range(V)], sweeps_per_job=2, progress=False,
                   checkpoint_dir=str(tmp_path), checkpoint_every=1, seed=4)
    GibbsLDA(epochs=4, **options).fit(rdd)
    assert sorted(os.listdir(tmp_path)) == ["sweep-000002.ddw", "sweep-000004.ddw"]  # one file each
    arrays, meta = persist.read_frame(tmp_path / "sweep-000004.ddw", expect=gibbs_checkpoint.FORMAT)
    assert meta["sweeps"] == 4 and len(meta["topics"]) == K and arrays["topics"].size == sum(map(len, docs))
    lda = GibbsLDA(epochs=6, resume=True, keep_state=True, **options)
    model = lda.fit(rdd).model_
    try:
        assert [h["sweeps"] for h in lda.history_] == [4, 6]
        assert np.array_equal(counts_from_state(lda, V, K), model.word_topic_)
    finally:
        lda.state_.unpersist()


def test_resume_finds_the_latest_checkpoint_of_either_format(tmp_path):
    """One file a checkpoint now; a directory of the old format is still found and read, with a warning."""
    vocabulary = Vocabulary(["a", "b", "c"])
    old = tmp_path / "sweep-000004"
    old.mkdir()
    (old / "meta.json").write_text(json.dumps({"sweeps": 4, "num_topics": 2, "alpha": 0.3, "beta": 0.01, "seed": 0}))
    with gzip.open(old / "vocabulary.json.gz", "wt", encoding="utf-8") as f:
        json.dump(vocabulary.to_json(), f)
    np.savez_compressed(old / "state.npz", partitions=np.array([0, 1]), sizes=np.array([2, 1]),
                        topics=np.array([1, 0, 1], np.int32))
    persist.write_frame(tmp_path / "sweep-000002.ddw", {}, {"format": gibbs_checkpoint.FORMAT})
    assert gibbs_checkpoint.latest(tmp_path) == str(old)  # most sweeps wins
    with pytest.warns(DeprecationWarning, match="old directory format"):
        checkpoint = gibbs_checkpoint.read(str(old), num_topics=2)
    assert (checkpoint.sweeps, checkpoint.alpha, checkpoint.vocabulary.id2word) == (4, 0.3, ["a", "b", "c"])
    assert {p: t.tolist() for p, t in checkpoint.topics.items()} == {0: [1, 0], 1: [1]}
    with pytest.raises(ConfigurationError, match="num_topics=2, this estimator 3"), pytest.warns(DeprecationWarning):
        gibbs_checkpoint.read(str(old), num_topics=3)


def test_burn_in_cuts_its_sweeps_into_seeded_slices_with_an_exchange_before_each():
    task = _Task(None, job=1, first_sweep=2, sweeps=4, sync_every=2, seed=7, num_topics=K, num_words=V,
                 alpha=0.1, beta=0.01, pull_rows="auto", histograms=False, burn_in_sweeps=3, burn_in_syncs=3)
    steps = task._steps(10, partition=5)
    sweep_seed = {n: derive_seed(7, 5, n) for n in range(2, 6)}
    # sweeps 2 and 3 are burn-in: three slices covering the documents, each after an exchange
    burn_in = [((0, 3), derive_seed(sweep_seed[2], 0), True), ((3, 6), derive_seed(sweep_seed[2], 1), True),
               ((6, 10), derive_seed(sweep_seed[2], 2), True),
               ((0, 3), derive_seed(sweep_seed[3], 0), True), ((3, 6), derive_seed(sweep_seed[3], 1), True),
               ((6, 10), derive_seed(sweep_seed[3], 2), True)]
    # sweeps 4 and 5 are whole, seeded as without burn-in, and sync every second sweep of the job
    assert steps == burn_in + [((0, 10), sweep_seed[4], True), ((0, 10), sweep_seed[5], False)]
    # no burn-in: one step a sweep, the seeds a run without the option always had
    plain = _Task(None, job=1, first_sweep=2, sweeps=4, sync_every=2, seed=7, num_topics=K, num_words=V,
                  alpha=0.1, beta=0.01, pull_rows="auto", histograms=False)
    assert plain._steps(10, partition=5) == [((0, 10), sweep_seed[n], n % 2 == 0) for n in range(2, 6)]


def test_a_whole_sweep_with_an_exchange_in_flight_stops_after_its_head_only_when_others_exist():
    def task(merge_early):
        return _Task(None, job=1, first_sweep=1, sweeps=4, sync_every=1, seed=7, num_topics=K, num_words=V,
                     alpha=0.1, beta=0.01, pull_rows="auto", histograms=False, merge_early=merge_early)
    assert task(True)._head_end((0, 800), 800) == 100  # the first eighth of the documents
    assert task(True)._head_end((200, 400), 800) is None  # a burn-in slice: it exchanges anyway
    assert task(True)._head_end((0, 5), 5) is None  # too few documents to cut
    assert task(False)._head_end((0, 800), 800) is None  # one partition: nothing to merge


@pytest.mark.parametrize("num_topics, num_words", [(100, 5000), (300, 70000)])
def test_blocks_pickle_word_ids_and_topics_narrow_and_come_back_as_int32(num_topics, num_words):
    rng = np.random.default_rng(0)
    words = rng.integers(0, num_words, 1000).astype(np.int32)
    topics = rng.integers(0, num_topics, 1000).astype(np.int32)
    block = Block(3, np.array([0, 400, 1000]), words, topics, np.unique(words).astype(np.int64), {"tokens": 1000})
    state = block.__getstate__()
    assert state["topics"].itemsize == (1 if num_topics <= 256 else 2)
    assert state["words"].itemsize == (2 if num_words <= 65536 else 4)
    back = pickle.loads(pickle.dumps(block))
    for name in ("words", "topics"):
        assert getattr(back, name).dtype == np.int32
        assert np.array_equal(getattr(back, name), getattr(block, name))
    assert back.partition == 3 and back.report == {"tokens": 1000} and np.array_equal(back.rows, block.rows)


def test_alpha_optimisation_moves_alpha(sc, corpus):
    docs, _ = corpus
    lda, model = fit(sc, docs, epochs=20, sweeps_per_job=5, alpha=1.0, optimize_alpha_every=1,
                     optimize_alpha_after=10)
    # the corpus was drawn with α = 0.1; from α = 1 Minka's fixed point reaches 0.097-0.099 by
    # sweep 20 on it (and stays there to sweep 60): within 20% of the truth
    assert 0.08 < model.alpha_[0] < 0.12 and np.all(model.alpha_ == model.alpha_[0])
    alphas = [h["alpha"] for h in lda.history_]
    assert alphas[:2] == [1.0, 1.0]  # untouched before optimize_alpha_after sweeps
    assert alphas[-1] == model.alpha_[0]


def test_parameters_are_validated(sc):
    rdd = sc.parallelize([["a", "b"]], 1)
    with pytest.raises(ConfigurationError, match="num_topics must be an integer >= 1, got 0"):
        GibbsLDA(num_topics=0).fit(rdd)
    with pytest.raises(ConfigurationError, match="beta must be a finite number > 0"):
        GibbsLDA(beta=-1.0).fit(rdd)
    with pytest.raises(ConfigurationError, match="need checkpoint_dir"):
        GibbsLDA(resume=True).fit(rdd)
    with pytest.raises(ConfigurationError, match="burn_in_syncs must be an integer >= 1, got 0"):
        GibbsLDA(burn_in_syncs=0).fit(rdd)
    with pytest.raises(ConfigurationError, match="burn_in_sweeps must be an integer >= 0, got -1"):
        GibbsLDA(burn_in_sweeps=-1).fit(rdd)
    with pytest.raises(NotFittedError):
        GibbsLDA().transform([["a"]])


@pytest.mark.slow
def test_recovery_on_the_full_synthetic_corpus(sc):
    """A full-size synthetic corpus: V=5,000, K=50, 20,000 documents of ~100 tokens, α=0.1, β=0.01."""
    docs, phi = synthetic_lda_corpus(20000, 5000, 50, 100, alpha=0.1, beta=0.01, seed=0, poisson_lengths=True)
    lda, model = fit(sc, [d.tolist() for d in docs], num_topics=50, id2word=[str(i) for i in range(5000)],
                     epochs=150, sweeps_per_job=15)
    assert topic_recovery(phi, model.topic_word_) >= 0.9
