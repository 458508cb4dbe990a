"""Online variational LDA on Spark: gensim's semantics, a real gensim LdaModel, planted topics recovered."""

import copy
import warnings

import numpy as np
import pytest
from gensim.corpora import Dictionary
from gensim.models import CoherenceModel, LdaModel
from gensim.models.ldamodel import LdaState

from deepdist.errors import ConfigurationError, NotFittedError
from deepdist.lda.dictionary import build_dictionary
from deepdist.lda.evaluate import completion_log_likelihood, completion_perplexity, fold_in_em
from deepdist.lda.online import OnlineLDA
from deepdist.lda.online_steps import _EStep, _MStep, _Shell
from deepdist.lda.synthetic import synthetic_lda_corpus, topic_recovery
from deepdist.sparse import SparseRows

K, V = 8, 300


def _bow(doc):
    words, counts = np.unique(doc, return_counts=True)
    return [(int(w), int(c)) for w, c in zip(words, counts)]


@pytest.fixture(scope="module")
def corpus():
    """A corpus with K planted topics: (train bow, held-out token lists, true topics)."""
    docs, topic_word = synthetic_lda_corpus(1600, V, K, 60, alpha=0.1, beta=0.01, seed=3,
                                            poisson_lengths=True)
    bow = [_bow(doc) for doc in docs]
    return bow[:1440], docs[1440:], topic_word, bow[1440:]


def _id2word():
    return {i: f"w{i}" for i in range(V)}


# -- gensim semantics, without Spark -------------------------------------------------------------
def test_sequential_e_and_m_steps_reproduce_gensim_update(corpus):
    """Our E-step (on λ rows only) and M-step run in order give gensim's LdaModel.update."""
    train = corpus[0][:600]
    reference = LdaModel(num_topics=K, id2word=_id2word(), chunksize=100, passes=2, eval_every=None,
                         decay=0.6, offset=2.0, random_state=7)
    ours = copy.deepcopy(reference)
    reference.update(train)

    shell = _Shell(ours, partitions=1, rounds=6)
    mstep = _MStep(ours, chunksize=100, chunks=[6], update_every=1, decay=0.6, offset=2.0)
    ours.state.numdocs += len(train)
    pushed = dense = 0
    for pass_ in range(2):
        estep = _EStep(seed=0, pass_=pass_, num_topics=K, num_terms=V, partitions=1, rounds=6)
        estep.random_state = lambda: ours.random_state  # gensim's own stream, for an exact comparison
        mstep.start_pass(pass_)
        for start in range(0, len(train), 100):
            update = estep(shell, train[start:start + 100])
            pushed += update["sstats_t"].nbytes
            dense += K * V * 4
            mstep(shell, update)
        mstep.flush(shell)
    assert ours.num_updates == reference.num_updates == 600
    # float32 rounding (psi in float64 here) shifts a few E-step convergence decisions: close, not equal
    drift = np.linalg.norm(ours.state.sstats - reference.state.sstats) / np.linalg.norm(reference.state.sstats)
    assert drift < 1e-3, drift
    np.testing.assert_allclose(shell.sstats_sum, [ours.state.sstats.sum(axis=1, dtype=np.float64)], rtol=1e-12)
    assert pushed < dense


def test_first_e_step_is_gensims_on_the_pulled_columns(corpus):
    chunk = corpus[0][:100]
    reference = LdaModel(num_topics=K, id2word=_id2word(), eval_every=None, random_state=7)
    ours = copy.deepcopy(reference)
    expected = LdaState(reference.eta, reference.state.sstats.shape, reference.dtype)
    reference.do_estep(chunk, expected)
    estep = _EStep(seed=0, pass_=0, num_topics=K, num_terms=V)
    estep.random_state = lambda: ours.random_state
    update = estep(_Shell(ours), chunk)
    rows = update["sstats_t"]
    assert len(rows.indices) == len({w for doc in chunk for w, _ in doc}) < V
    np.testing.assert_allclose(rows.to_dense().T, expected.sstats, rtol=1e-4, atol=1e-4)
    assert update["chunk_docs"].indices.tolist() == [0] and update["chunk_docs"].values.tolist() == [100]


def test_update_every_merges_chunks_before_one_blend(corpus):
    """Two chunks' statistics are merged, then blended once (update_every=2)."""
    train = corpus[0][:200]
    model = LdaModel(num_topics=K, id2word=_id2word(), chunksize=50, eval_every=None, random_state=1)
    shell = _Shell(model, partitions=1, rounds=4)
    model.state.numdocs += 200
    estep = _EStep(seed=0, pass_=0, num_topics=K, num_terms=V, partitions=1, rounds=4)
    mstep = _MStep(model, chunksize=50, chunks=[4], update_every=2, decay=0.5, offset=1.0)
    expected = LdaState(model.eta, model.state.sstats.shape, model.dtype)
    before = model.state.sstats.copy()
    for start in (0, 50):
        update = estep(shell, train[start:start + 50])
        expected.sstats[:, update["sstats_t"].indices] += update["sstats_t"].values.T
        expected.numdocs += 50
        mstep(shell, update)
    assert mstep.msteps == 1 and model.num_updates == 100 and mstep.rho == 1.0 and shell.msteps[0] == 1
    reference = LdaState(model.eta, before.shape, model.dtype)
    reference.sstats[...] = before
    reference.numdocs = 200
    reference.blend(1.0, expected)
    np.testing.assert_allclose(model.state.sstats, reference.sstats, rtol=1e-5)


def _chunk_update(partition, chunk, rounds, word, docs=10.0):
    sstats = SparseRows(np.array([word], np.int32), np.full((1, K), 1.0, np.float32), (V, K))
    return {"sstats_t": sstats, "chunk_docs": SparseRows(np.array([partition * rounds + chunk]),
                                                         np.array([docs]), (2 * rounds,))}


def test_m_steps_take_whole_rounds_in_order_whatever_the_arrival_order():
    """Partition 0 has 3 chunks, partition 1 has 2: M-steps merge {0:0, 1:0}, {0:1, 1:1}, {0:2}."""
    model = LdaModel(num_topics=K, id2word=_id2word(), chunksize=10, eval_every=None, random_state=1)
    model.state.numdocs += 50
    shell = _Shell(model, partitions=2, rounds=3)
    mstep = _MStep(model, chunksize=10, chunks=[3, 2], update_every=1, decay=0.5, offset=1.0)
    blended = []
    mstep.mstep = lambda params, other: blended.append(sorted(np.flatnonzero(other.sstats_t.sum(axis=1))))
    for partition, chunk in [(0, 0), (0, 1), (1, 0)]:  # partition 0 ran ahead
        mstep(shell, _chunk_update(partition, chunk, 3, word=10 * partition + chunk))
    assert blended == [[0, 10]]  # round 1 waits for partition 1's chunk
    mstep(shell, _chunk_update(0, 0, 3, word=99))  # a retried attempt repeats its first chunk
    assert blended == [[0, 10]] and mstep.next_block == 1 and mstep.repeated == 1
    mstep(shell, _chunk_update(1, 1, 3, word=11))
    assert blended == [[0, 10], [1, 11]]  # the repeat is dropped: each chunk weighs once a pass
    mstep(shell, _chunk_update(0, 2, 3, word=2))
    assert blended == [[0, 10], [1, 11], [2]] and not mstep.pending
    assert shell.chunk_docs.tolist() == [10.0, 10.0, 10.0, 10.0, 10.0, 0.0]
    assert shell.chunk_pass.tolist() == [1.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    mstep.start_pass(1)  # the next pass merges every chunk again
    mstep(shell, _chunk_update(0, 0, 3, word=5))
    assert mstep.repeated == 1 and shell.chunk_pass[0] == 2.0


def test_a_retried_task_skips_the_chunks_merged_in_this_pass(corpus):
    """The E-step of a chunk the driver marks as merged in this pass (chunk_pass) is skipped: no update."""
    model = LdaModel(num_topics=K, id2word=_id2word(), chunksize=10, eval_every=None, random_state=1)
    shell = _Shell(model, partitions=1, rounds=3)
    shell.chunk_pass[:] = [2.0, 1.0, 0.0]  # chunk 0 merged in pass 2 (this one), chunk 1 in pass 1
    estep = _EStep(seed=0, pass_=1, num_topics=K, num_terms=V, partitions=1, rounds=3, marker=2.0)
    chunks = [corpus[0][i:i + 10] for i in (0, 10, 20)]
    assert estep.rows(chunks[0])["chunk_pass"].tolist() == [0]
    assert estep(shell, chunks[0]) == {}
    assert estep.rows(chunks[1])["chunk_pass"].tolist() == [1]
    update = estep(shell, chunks[1])
    assert update["chunk_docs"].indices.tolist() == [1] and update["sstats_t"].values.sum() > 0


def test_completion_evaluator_against_a_slow_reference():
    rng = np.random.default_rng(0)
    phi = rng.dirichlet(np.full(30, 0.2), size=4)
    docs = [rng.integers(0, 30, size=n) for n in (0, 1, 7, 20)]
    theta = fold_in_em([d[: len(d) // 2] for d in docs], phi, 0.3, iterations=500, tol=1e-12)
    for doc, row in zip(docs, theta):
        first = doc[: len(doc) // 2]
        slow = np.full(4, 0.25)
        for _ in range(500):
            r = slow[:, None] * phi[:, first]
            r /= r.sum(axis=0, keepdims=True)
            slow = (0.3 + r.sum(axis=1)) / (len(first) + 1.2)
        np.testing.assert_allclose(row, slow, atol=1e-8)
    total, tokens = completion_log_likelihood(docs, phi, 0.3, iterations=500, tol=1e-12)
    expected = sum(np.log(row @ phi[:, doc[len(doc) // 2:]]).sum() for doc, row in zip(docs, theta))
    assert tokens == sum(len(d) - len(d) // 2 for d in docs)
    assert total == pytest.approx(expected)


# -- the dictionary ------------------------------------------------------------------------------
def test_build_dictionary_is_gensims_dictionary(sc):
    rng = np.random.default_rng(5)
    words = [f"t{i}" for i in range(60)]
    docs = [list(rng.choice(words, size=rng.integers(1, 15), p=np.arange(60, 0, -1) / 1830))
            for _ in range(300)]
    for options in ({"no_below": 3, "no_above": 0.5, "keep_n": 25},
                    {"no_below": 5, "no_above": 0.2, "keep_n": None, "keep_tokens": ["t0", "t59"]}):
        expected = Dictionary(docs)
        expected.filter_extremes(**options)
        got = build_dictionary(sc.parallelize(docs, 3), **options)
        assert got.token2id == expected.token2id
        assert got.dfs == expected.dfs and got.cfs == expected.cfs
        assert (got.num_docs, got.num_pos, got.num_nnz) == (expected.num_docs, expected.num_pos,
                                                            expected.num_nnz)
        assert got.doc2bow(docs[0]) == expected.doc2bow(docs[0])


def test_build_dictionary_validates(sc):
    with pytest.raises(ConfigurationError, match="no_above"):
        build_dictionary(sc.parallelize([["a"]]), no_below=1, no_above=2.0)


# -- the estimator contract, without Spark --------------------------------------------------------
def test_contract_names_defaults_and_old_names():
    lda = OnlineLDA(num_topics=K)
    assert lda.seed == 0 and lda.epochs == 1 and lda.callbacks == () and lda.iterations == 50
    assert repr(OnlineLDA(num_topics=K, epochs=3)) == f"OnlineLDA(num_topics={K}, epochs=3)"
    with pytest.warns(DeprecationWarning, match="passes=.* is renamed epochs"):
        old = OnlineLDA(num_topics=K, passes=3)
    assert old.epochs == 3 and "passes" not in old.get_params()
    with pytest.warns(DeprecationWarning):
        assert old.passes == 3

    def hook(model, record):
        return 1

    with pytest.warns(DeprecationWarning, match="on_pass"):
        wrapped = OnlineLDA(num_topics=K, callbacks=[print], on_pass=hook)
    assert wrapped.callbacks[0] is print and wrapped.callbacks[1].function is hook and len(wrapped.callbacks) == 2


# -- Spark end to end ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted(sc, corpus):
    train = corpus[0]
    rdd = sc.parallelize(train, 4)

    def held_out(estimator, record):
        record["heldout"] = _perplexity(estimator.model_, corpus[1])

    def old_hook(model, record):  # the deprecated on_pass=f(model, record): its result lands in the record
        return _perplexity(model, corpus[1])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        lda = OnlineLDA(num_topics=K, id2word=_id2word(), epochs=4, chunksize=120, progress=False,
                        callbacks=[held_out], on_pass=old_hook)
    returned = lda.fit(rdd)
    assert returned is lda
    gensim_model = LdaModel(train, num_topics=K, id2word=_id2word(), passes=4, chunksize=120,
                            random_state=0, eval_every=None)
    return lda, lda.model_, gensim_model


def _perplexity(model, held_out):
    return completion_perplexity(held_out, model.get_topics(), model.alpha)


def test_fit_returns_the_estimator_whose_model_is_a_gensim_lda_model_that_round_trips(fitted, corpus, tmp_path):
    lda, model, gensim_model = fitted
    assert type(model) is LdaModel and lda.n_iter_ == 4
    assert [h["epoch"] for h in lda.history_] == [1, 2, 3, 4]
    assert model.state.numdocs == len(corpus[0]) and model.num_updates == len(corpus[0])
    assert len(model.print_topics(3)) == 3
    doc = corpus[3][0]
    topics = model.get_document_topics(doc, minimum_probability=0.0)
    assert sum(p for _, p in topics) == pytest.approx(1.0, abs=1e-4)
    # gensim's own held-out bound: ours is no worse than gensim's model trained alike
    assert model.log_perplexity(corpus[3]) >= 1.02 * gensim_model.log_perplexity(corpus[3])
    model.save(str(tmp_path / "lda"))
    loaded = LdaModel.load(str(tmp_path / "lda"))
    np.testing.assert_allclose(loaded.get_topics(), model.get_topics())
    assert dict(loaded.get_document_topics(doc)) == pytest.approx(dict(model.get_document_topics(doc)), abs=1e-3)
    dictionary = Dictionary.from_corpus(corpus[0], id2word=_id2word())

    def coherence(lda_model):
        return CoherenceModel(model=lda_model, corpus=corpus[0], dictionary=dictionary,
                              coherence="u_mass").get_coherence()

    untrained = LdaModel(num_topics=K, id2word=_id2word(), random_state=0)
    assert coherence(loaded) > coherence(untrained) + 2.0  # the planted topics are coherent, random ones not


def test_recovers_planted_topics_as_well_as_gensim(fitted, corpus):
    _, model, gensim_model = fitted
    true_topics, held_out = corpus[2], corpus[1]
    assert topic_recovery(true_topics, model.get_topics()) > 0.9
    ours, theirs = _perplexity(model, held_out), _perplexity(gensim_model, held_out)
    assert ours <= 1.05 * theirs, (ours, theirs)


def test_more_passes_do_not_hurt_and_progress_is_reported(fitted, corpus):
    lda, model, _ = fitted
    held_out = [h["heldout"] for h in lda.history_]
    assert [h["on_pass"] for h in lda.history_] == held_out  # the old hook's result, kept in the record
    assert held_out[-1] == pytest.approx(_perplexity(model, corpus[1]))
    assert held_out[-1] < 0.9 * held_out[0]
    estimates = [h["perplexity"] for h in lda.history_]
    assert len(estimates) == 4 and estimates[-1] <= estimates[0]
    assert lda.status_["metrics"]["perplexity"]["count"] == sum(h["chunks"] for h in lda.history_)
    assert sum(lda.status_["staleness_histogram"].values()) == lda.status_["updates_applied"]
    for record in lda.history_:
        assert record["bytes_pushed"] / record["chunks"] < record["dense_bytes_per_chunk"]


def test_a_seeded_fit_on_two_partitions_is_reproducible(sc, corpus):
    """Rounds and bounded staleness take task timing out of the result: same seed, same topics."""
    rdd = sc.parallelize(corpus[0][:960], 2).cache()
    fits = [OnlineLDA(num_topics=K, id2word=_id2word(), epochs=2, chunksize=80, seed=4, max_staleness=0,
                      progress=False) for _ in range(2)]
    topics = [lda.fit(rdd).model_.get_topics() for lda in fits]
    np.testing.assert_array_equal(topics[0], topics[1])
    for lda in fits:
        assert [h["msteps"] for h in lda.history_] == [6, 6]  # 6 rounds of 2 chunks per pass
        assert lda.status_["staleness_histogram"].get("0", 0) > 0
        assert sum(h["wait_timeouts"] for h in lda.history_) == 0


def test_update_continues_online(sc, corpus):
    train, held_out = corpus[0], corpus[1]
    lda = OnlineLDA(num_topics=K, id2word=_id2word(), epochs=2, chunksize=120, seed=1, progress=True)
    model = lda.fit(sc.parallelize(train[:720], 2)).model_
    before = _perplexity(model, held_out)
    updates = model.num_updates
    with pytest.warns(DeprecationWarning, match="passes"):
        again = lda.update(sc.parallelize(train[720:], 2), passes=1)
    assert again is lda and lda.model_ is model
    assert model.state.numdocs == len(train) and model.num_updates == updates + len(train) - 720
    assert [h["epoch"] for h in lda.history_] == [1, 2, 3] and lda.n_iter_ == 3
    assert _perplexity(model, held_out) <= 1.02 * before


def test_parameters_are_checked(sc, corpus):
    rdd = sc.parallelize(corpus[0][:10], 1)
    with pytest.raises(ConfigurationError, match="alpha='auto'"):
        OnlineLDA(num_topics=K, id2word=_id2word(), alpha="auto").fit(rdd)
    with pytest.raises(ConfigurationError, match=r"decay .* \(0, 1\], got 1.5"):
        OnlineLDA(num_topics=K, id2word=_id2word(), decay=1.5).fit(rdd)
    for options, name in (({"num_topics": True}, "num_topics"), ({"epochs": True}, "epochs"),
                          ({"epochs": 0}, "epochs"), ({"seed": -1}, "seed"), ({"update_every": 1.5}, "update_every"),
                          ({"wait_timeout": 0}, "wait_timeout"), ({"server_options": []}, "server_options"),
                          ({"callbacks": [3]}, "callbacks")):
        with pytest.raises(ConfigurationError, match=name):
            OnlineLDA(**{"num_topics": K, "id2word": _id2word(), **options}).fit(rdd)
    with pytest.raises(NotFittedError):
        OnlineLDA(num_topics=K).update(rdd)
    with pytest.raises(ConfigurationError, match="epochs"):
        OnlineLDA(num_topics=K).update(rdd, epochs=0)
    small = {i: f"w{i}" for i in range(10)}
    with pytest.raises(ConfigurationError, match="word id out of range"):
        OnlineLDA(num_topics=2, id2word=small, progress=False).fit(rdd)
