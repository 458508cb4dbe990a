"""Collapsed Gibbs kernels against slow, obviously correct NumPy references."""

import hashlib
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.special import gammaln

from deepdist.lda import _inference_kernels, _kernels, sampler
from deepdist.lda.local_counts import LocalCounts
from deepdist.lda.synthetic import synthetic_lda_corpus, topic_recovery


# ---------------------------------------------------------------------------------------------
# references
# ---------------------------------------------------------------------------------------------

def ref_word_topic(words, topics, V, K):
    out = np.zeros((V, K), np.int64)
    np.add.at(out, (words, topics), 1)
    return out


def ref_doc_topic(offsets, topics, K):
    out = np.zeros((len(offsets) - 1, K), np.int64)
    for d in range(len(offsets) - 1):
        np.add.at(out[d], topics[offsets[d]:offsets[d + 1]], 1)
    return out


def ref_conditional(d, w, t, doc_topic, word_topic, topic_totals, alpha, beta):
    """p(z = k | rest) for a token of word w in document d currently assigned to t."""
    ndk = doc_topic[d].astype(float).copy()
    nwk = word_topic[w].astype(float).copy()
    nk = topic_totals.astype(float).copy()
    ndk[t] -= 1
    nwk[t] -= 1
    nk[t] -= 1
    V = word_topic.shape[0]
    p = (ndk + alpha) * (nwk + beta) / (nk + V * beta)
    return p / p.sum()


def ref_log_joint(word_topic, doc_topic, alpha, beta):
    """log p(w, z) straight from the Dirichlet-multinomial formulas, dense."""
    V, K = word_topic.shape
    alpha = np.broadcast_to(np.asarray(alpha, float), (K,))
    nk = word_topic.sum(axis=0)
    lw = K * (gammaln(V * beta) - V * gammaln(beta))
    lw += gammaln(word_topic + beta).sum() - gammaln(nk + V * beta).sum()
    nd = doc_topic.sum(axis=1)
    lz = (gammaln(alpha.sum()) - gammaln(alpha).sum()) * doc_topic.shape[0]
    lz += gammaln(doc_topic + alpha).sum() - gammaln(nd + alpha.sum()).sum()
    return lw, lz


def make_state(docs, V, K, seed=0):
    offsets, words = sampler.pack_documents(docs)
    topics = sampler.random_topics(words.size, K, seed)
    wt = sampler.counts_from_assignments(words, topics, V, K)
    dt = sampler.doc_topic_from_assignments(offsets, topics, K)
    tt = wt.sum(axis=0, dtype=np.int64)
    return offsets, words, topics, dt, wt, tt


def random_docs(rng, n_docs, V, max_len):
    return [rng.integers(0, V, size=rng.integers(0, max_len + 1)).astype(np.int32)
            for _ in range(n_docs)]


def run_sweeps(state, n, alpha, beta, seed=0, partition=0, method="auto"):
    offsets, words, topics, dt, wt, tt = state
    for it in range(n):
        sampler.sweep(offsets, words, topics, dt, wt, tt, alpha, beta,
                      seed=sampler.derive_seed(seed, partition, it), method=method)


METHODS = ["sparse", "dense"]


# ---------------------------------------------------------------------------------------------
# (a) the sampling distribution is the collapsed Gibbs conditional
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("alpha", [0.7, np.array([0.2, 1.5, 0.05, 0.9, 0.4])])
def test_first_token_follows_the_exact_conditional(alpha, method):
    # Resampling documents [d, d+1) draws the document's first token first, from exactly
    # p(z | rest) of the starting state. Large α and β give the s and r buckets real mass, and
    # the state has zero n_wk and n_dk entries, so every bucket of SparseLDA is exercised.
    rng = np.random.default_rng(5)
    V, K = 6, 5
    docs = [rng.integers(0, V, 12).astype(np.int32) for _ in range(4)]
    docs[2] = np.array([1, 1, 2, 0, 1, 3], np.int32)
    state = make_state(docs, V, K, seed=11)
    offsets, words, topics, dt, wt, tt = state
    beta = 0.5
    d = 2
    i = offsets[d]
    expected = ref_conditional(d, words[i], topics[i], dt, wt, tt,
                               np.broadcast_to(alpha, (K,)), beta)
    draws = 20000
    hist = np.zeros(K, np.int64)
    for rep in range(draws):
        z, ndt, nwt, ntt = topics.copy(), dt.copy(), wt.copy(), tt.copy()
        sampler.sweep(offsets, words, z, ndt, nwt, ntt, alpha, beta,
                      seed=sampler.derive_seed(rep, 0, 0), docs=(d, d + 1), method=method,
                      validate=False)
        hist[z[i]] += 1
    assert (expected > 0.01).all()  # a meaningful test: no topic is negligible
    _, p = stats.chisquare(hist, expected * draws)
    assert p > 1e-4, (hist / draws, expected)


@pytest.mark.parametrize("method", ["sparse", "dense", "auto"])
def test_chain_samples_the_exact_posterior(method):
    # 4 tokens, 3 topics: 81 joint states, posterior p(z | w) ∝ p(w, z) by enumeration. A long
    # run of whole sweeps must visit states with those frequencies (this checks the book-keeping
    # between tokens, not only one draw).
    V, K, alpha, beta = 3, 3, 0.3, 0.4
    docs = [np.array([0, 1, 0], np.int32), np.array([2], np.int32)]
    offsets, words = sampler.pack_documents(docs)
    states = list(itertools.product(range(K), repeat=words.size))
    logp = []
    for z in states:
        z = np.array(z)
        lw, lz = ref_log_joint(ref_word_topic(words, z, V, K), ref_doc_topic(offsets, z, K),
                               alpha, beta)
        logp.append(lw + lz)
    post = np.exp(np.array(logp) - max(logp))
    post /= post.sum()
    state = make_state(docs, V, K, seed=3)
    _, _, topics, dt, wt, tt = state
    index = {z: n for n, z in enumerate(states)}
    n_sweeps = 40000
    visits = np.zeros(len(states))
    for it in range(n_sweeps):
        sampler.sweep(offsets, words, topics, dt, wt, tt, alpha, beta,
                      seed=sampler.derive_seed(1, 0, it), method=method, validate=False)
        visits[index[tuple(topics)]] += 1
    tv = 0.5 * np.abs(visits / n_sweeps - post).sum()
    assert tv < 0.03, tv


@pytest.mark.parametrize("method", METHODS)
def test_negative_counts_are_clamped_not_fatal(method):
    rng = np.random.default_rng(0)
    V, K = 20, 6
    state = make_state(random_docs(rng, 30, V, 15), V, K)
    offsets, words, topics, dt, wt, tt = state
    wt -= rng.integers(0, 4, size=wt.shape).astype(np.int32)   # a damaged copy
    tt[:3] = -5
    run_sweeps(state, 3, 0.1, 0.01, method=method)
    assert topics.min() >= 0 and topics.max() < K
    assert (dt == ref_doc_topic(offsets, topics, K)).all()
    # document counts that disagree with the assignments: still no crash, topics in range
    dt[:] = rng.integers(-2, 3, size=dt.shape).astype(np.int32)
    run_sweeps(state, 3, 0.1, 0.01, seed=1, method=method)
    assert topics.min() >= 0 and topics.max() < K


# ---------------------------------------------------------------------------------------------
# (b) counts stay consistent; log-likelihood
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["sparse", "dense", "auto"])
@pytest.mark.parametrize("K", [1, 7, 64])
def test_counts_stay_consistent_with_assignments(K, method):
    rng = np.random.default_rng(K)
    V = 40
    docs = random_docs(rng, 60, V, 30)
    state = make_state(docs, V, K)
    offsets, words, topics, dt, wt, tt = state
    assert (wt == ref_word_topic(words, topics, V, K)).all()
    assert (dt == ref_doc_topic(offsets, topics, K)).all()
    for it in range(5):
        sampler.sweep(offsets, words, topics, dt, wt, tt, np.linspace(0.05, 0.5, K), 0.02,
                      seed=sampler.derive_seed(0, 0, it), method=method)
        sampler.sweep(offsets, words, topics, dt, wt, tt, 0.1, 0.02,
                      seed=sampler.derive_seed(0, 1, it), docs=(10, 25), method=method)
    assert topics.min() >= 0 and topics.max() < K
    assert (wt == ref_word_topic(words, topics, V, K)).all()
    assert (sampler.counts_from_assignments(words, topics, V, K) == wt).all()
    assert (dt == ref_doc_topic(offsets, topics, K)).all()
    assert (tt == wt.sum(axis=0)).all()


def test_log_likelihood_matches_dense_reference():
    rng = np.random.default_rng(1)
    V, K = 30, 4
    state = make_state(random_docs(rng, 25, V, 20), V, K)
    run_sweeps(state, 3, 0.3, 0.05)
    _, _, _, dt, wt, tt = state
    alpha = np.array([0.1, 0.2, 0.3, 0.4])
    lw, lz = ref_log_joint(wt.astype(np.int64), dt.astype(np.int64), alpha, 0.05)
    assert sampler.log_likelihood(wt, tt, 0.05) == pytest.approx(lw, rel=1e-10)
    assert sampler.log_prior_assignments(dt, alpha) == pytest.approx(lz, rel=1e-10)
    assert sampler.log_likelihood(wt, tt, 0.05, doc_topic=dt, alpha=alpha) == \
        pytest.approx(lw + lz, rel=1e-10)


# ---------------------------------------------------------------------------------------------
# (c) sparse deltas
# ---------------------------------------------------------------------------------------------

def check_delta(words, old, new, V, K):
    index, value = sampler.sparse_delta(words, old, new, K)
    dense = (ref_word_topic(words, new, V, K) - ref_word_topic(words, old, V, K)).ravel()
    expected_index = np.flatnonzero(dense)
    assert index.dtype == np.int64 and value.dtype == np.int32
    assert np.array_equal(index, expected_index)
    assert np.array_equal(value, dense[expected_index])
    return index, value


def test_sparse_delta_of_sweeps_equals_count_difference():
    rng = np.random.default_rng(2)
    V, K = 50, 8
    state = make_state(random_docs(rng, 80, V, 25), V, K)
    offsets, words, topics, dt, wt, tt = state
    old_topics, old_wt, old_tt = topics.copy(), wt.copy(), tt.copy()
    run_sweeps(state, 2, 0.1, 0.01)
    index, value = check_delta(words, old_topics, topics, V, K)
    sampler.apply_sparse_delta(old_wt, old_tt, index, value)
    assert (old_wt == wt).all() and (old_tt == tt).all()


@pytest.mark.parametrize("order", ["sorted", "sorted runs", "shuffled"])
def test_merging_a_delta_updates_n_k_from_its_flat_indices_in_any_order(order):
    # deltas arrive sorted, or as several tasks' sorted runs one after the other; the kernels find
    # each entry's topic with one division a row, which must not depend on that order
    from deepdist.lda import _delta_kernels
    rng = np.random.default_rng(11)
    V, K = 300, 7
    index = np.sort(rng.choice(V * K, 900, replace=False))
    value = rng.integers(-3, 4, index.size).astype(np.int32)
    if order == "sorted runs":
        index, value = np.concatenate([index[1::2], index[::2]]), np.concatenate([value[1::2], value[::2]])
    elif order == "shuffled":
        perm = rng.permutation(index.size)
        index, value = index[perm], value[perm]
    expected = np.zeros(V * K, np.int64)
    np.add.at(expected, index, value)
    for dtype in (np.int64, np.int32):
        word_topic, topic_totals = np.zeros((V, K), np.int32), np.zeros(K, np.int64)
        _delta_kernels.apply_sparse_delta(word_topic, topic_totals, index.astype(dtype), value)
        assert np.array_equal(word_topic.ravel(), expected)
        assert np.array_equal(topic_totals, expected.reshape(V, K).sum(axis=0))
        assert np.array_equal(_delta_kernels.topic_totals_delta(index.astype(dtype), value, K),
                              expected.reshape(V, K).sum(axis=0))


def test_sparse_delta_with_a_table_too_big_to_scatter_into():
    # few moved tokens over a wide vocabulary take the bucket-by-word path, not the dense scratch
    rng = np.random.default_rng(5)
    V, K, n = 200_000, 50, 3000
    words = rng.integers(0, V, n).astype(np.int32)
    words[:1000] = 7  # one frequent word, many topics touched
    old = rng.integers(0, K, n).astype(np.int32)
    new = np.where(rng.random(n) < 0.5, rng.integers(0, K, n), old).astype(np.int32)
    index, value = sampler.sparse_delta(words, old, new, K)
    flat = np.concatenate([words.astype(np.int64) * K + new, words.astype(np.int64) * K + old])
    cells, inverse = np.unique(flat, return_inverse=True)
    change = np.bincount(inverse, np.concatenate([np.ones(n), -np.ones(n)])).astype(np.int64)
    assert np.array_equal(index, cells[change != 0]) and np.array_equal(value, change[change != 0])


@pytest.mark.parametrize("method", ["table", "tokens"])
def test_local_counts_push_only_their_own_sweeps(method):
    # two tasks share counts: each one's unpushed change must be exactly its own sweeps, with
    # the other's changes merged in between (and once the copy is rebased on the server's)
    rng = np.random.default_rng(8)
    V, K = 40, 6
    docs = random_docs(rng, 60, V, 20)
    halves = [sampler.pack_documents(docs[:30]), sampler.pack_documents(docs[30:])]
    words = np.concatenate([w for _, w in halves])
    topics = sampler.random_topics(words.size, K, 3)
    server = sampler.counts_from_assignments(words, topics, V, K)
    tasks, start = [], 0
    for o, w in halves:
        z = topics[start:start + w.size].copy()
        start += w.size
        local = LocalCounts(w, z, num_words=V, num_topics=K, method=method)
        local.word_topic[...] = server
        local.topic_totals[...] = server.sum(axis=0)
        local.mark_pushed()
        tasks.append((local, o, w, z, sampler.doc_topic_from_assignments(o, z, K)))
    for step in range(4):
        for part, (local, o, w, z, dt) in enumerate(tasks):
            before = z.copy()
            sampler.sweep(o, w, z, dt, local.word_topic, local.topic_totals, 0.1, 0.01, seed=10 * step + part)
            index, value = local.take_unpushed()
            expected = sampler.counts_from_assignments(w, z, V, K) - sampler.counts_from_assignments(w, before, V, K)
            assert np.array_equal(index, np.flatnonzero(expected)) and np.array_equal(value, expected.ravel()[index])
            server.reshape(-1)[index] += value
            tasks[1 - part][0].merge(index, value)
        local, o, w, z, dt = tasks[0]
        before = z.copy()
        sampler.sweep(o, w, z, dt, local.word_topic, local.topic_totals, 0.1, 0.01, seed=99 + step)
        own = sampler.counts_from_assignments(w, z, V, K) - sampler.counts_from_assignments(w, before, V, K)

        def pull(arrays):
            arrays["word_topic"][...] = server
            arrays["topic_totals"][...] = server.sum(axis=0)
            return step

        assert local.rebase(pull) == step
        assert np.array_equal(local.word_topic, server + own)
        assert np.array_equal(local.topic_totals, (server + own).sum(axis=0))
        index, value = local.take_unpushed()
        assert np.array_equal(index, np.flatnonzero(own)) and np.array_equal(value, own.ravel()[index])
        server.reshape(-1)[index] += value
        tasks[1][0].merge(index, value)
    everything = np.concatenate([t[3] for t in tasks])
    assert np.array_equal(server, sampler.counts_from_assignments(words, everything, V, K))
    for local, *_ in tasks:
        assert np.array_equal(local.word_topic, server)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_sparse_delta_property(data):
    V = data.draw(st.integers(1, 12))
    K = data.draw(st.integers(1, 9))
    n = data.draw(st.integers(0, 60))
    ints = lambda hi: st.lists(st.integers(0, hi - 1), min_size=n, max_size=n)  # noqa: E731
    words = np.array(data.draw(ints(V)), np.int32)
    old = np.array(data.draw(ints(K)), np.int32)
    new = np.array(data.draw(ints(K)), np.int32)
    check_delta(words, old, new, V, K)


# ---------------------------------------------------------------------------------------------
# (d) reproducibility
# ---------------------------------------------------------------------------------------------

def test_same_seed_same_topics_other_partition_differs():
    rng = np.random.default_rng(3)
    V, K = 60, 10
    docs = random_docs(rng, 50, V, 40)
    a, b, c = (make_state(docs, V, K, seed=7) for _ in range(3))
    run_sweeps(a, 4, 0.1, 0.01, seed=42, partition=0)
    run_sweeps(b, 4, 0.1, 0.01, seed=42, partition=0)
    run_sweeps(c, 4, 0.1, 0.01, seed=42, partition=1)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    assert not np.array_equal(a[2], c[2])


def test_derive_seed_is_a_mixing_function():
    seeds = {sampler.derive_seed(s, p, i) for s in range(4) for p in range(4) for i in range(4)}
    assert len(seeds) == 64
    assert all(0 <= x < 2 ** 64 for x in seeds)
    assert sampler.derive_seed(0, 1, 0) != sampler.derive_seed(0, 0, 1)


# ---------------------------------------------------------------------------------------------
# (e) recovery of planted topics
# ---------------------------------------------------------------------------------------------

def test_recovers_planted_topics_and_likelihood_rises():
    V, K, alpha, beta = 500, 10, 0.1, 0.01
    docs, true_phi = synthetic_lda_corpus(2000, V, K, 80, alpha, beta, seed=0)
    state = make_state(docs, V, K, seed=sampler.derive_seed(0, 0, 0))
    offsets, words, topics, dt, wt, tt = state
    lls = {}
    for it in range(1, 101):
        sampler.sweep(offsets, words, topics, dt, wt, tt, alpha, beta,
                      seed=sampler.derive_seed(0, 0, it), validate=False)
        if it in (1, 50):
            lls[it] = sampler.log_likelihood(wt, tt, beta, doc_topic=dt, alpha=alpha)
    assert lls[50] > lls[1]
    phi = sampler.topic_word_distribution(wt, tt, beta)
    assert np.allclose(phi.sum(axis=1), 1.0)
    assert topic_recovery(true_phi, phi) >= 0.9


# ---------------------------------------------------------------------------------------------
# (f) fold-in and held-out scoring
# ---------------------------------------------------------------------------------------------

def test_fold_in_finds_the_generating_topic():
    V, K = 300, 6
    _, true_phi = synthetic_lda_corpus(10, V, K, 10, 0.1, 0.01, seed=4)
    rng = np.random.default_rng(4)
    source = np.repeat(np.arange(K), 5)
    docs = [rng.choice(V, size=40, p=true_phi[k]).astype(np.int32) for k in source]
    offsets, words = sampler.pack_documents(docs + [np.zeros(0, np.int32)])
    theta = sampler.fold_in(offsets, words, true_phi, 0.1, iterations=30, burn_in=5, seed=1)
    assert theta.shape == (len(docs) + 1, K)
    assert np.allclose(theta.sum(axis=1), 1.0)
    assert (theta[:-1].argmax(axis=1) == source).all()
    assert theta[np.arange(len(docs)), source].min() > 0.8
    assert np.allclose(theta[-1], 1.0 / K)  # empty document: the prior mean


def test_fold_in_is_unbiased_on_a_two_token_document():
    # E[theta_k] = (E[n_dk] + α_k) / (n + Σα), with E[n_dk] by enumerating the K² assignments.
    rng = np.random.default_rng(6)
    K, V = 4, 5
    phi = rng.dirichlet(np.ones(V), size=K)
    alpha = np.array([0.3, 0.1, 0.6, 0.2])
    doc = np.array([1, 3], np.int32)
    weights, counts = [], []
    for z in itertools.product(range(K), repeat=2):
        n = np.bincount(z, minlength=K)
        prior = sum(math.lgamma(n[k] + alpha[k]) - math.lgamma(alpha[k]) for k in range(K))
        weights.append(math.exp(prior) * phi[z[0], doc[0]] * phi[z[1], doc[1]])
        counts.append(n)
    weights = np.array(weights) / sum(weights)
    expected = (weights @ np.array(counts) + alpha) / (2 + alpha.sum())
    offsets, words = sampler.pack_documents([doc])
    theta = sampler.fold_in(offsets, words, phi, alpha, iterations=100000, burn_in=10, seed=3)
    assert np.allclose(theta[0], expected, atol=0.01), (theta[0], expected)


def test_completion_log_likelihood_matches_reference():
    V, K = 200, 5
    docs, phi = synthetic_lda_corpus(40, V, K, 30, 0.2, 0.05, seed=8, poisson_lengths=True)
    docs[3] = np.zeros(0, np.int32)
    docs[4] = np.array([7], np.int32)
    offsets, words = sampler.pack_documents(docs)
    total, count = sampler.completion_log_likelihood(offsets, words, phi, 0.2, iterations=20,
                                                     burn_in=4, seed=9)
    # the same fold-in on the first halves draws the same random numbers, so theta agrees
    halves = [d[:len(d) // 2] for d in docs if len(d)]
    h_off, h_words = sampler.pack_documents(halves)
    theta = sampler.fold_in(h_off, h_words, phi, 0.2, iterations=20, burn_in=4, seed=9)
    ref_total, ref_count = 0.0, 0
    for th, d in zip(theta, (d for d in docs if len(d))):
        rest = d[len(d) // 2:]
        ref_total += np.log(th @ phi[:, rest]).sum()
        ref_count += len(rest)
    assert count == ref_count
    assert total == pytest.approx(ref_total, rel=1e-9)
    # the true topics explain held-out words better than uniform ones
    uniform = np.full((K, V), 1.0 / V)
    worse, _ = sampler.completion_log_likelihood(offsets, words, uniform, 0.2, iterations=5,
                                                 burn_in=1)
    assert total > worse


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------

def test_validation_names_the_parameter():
    V, K = 10, 3
    state = make_state([np.array([1, 2, 3], np.int32)], V, K)
    offsets, words, topics, dt, wt, tt = state
    with pytest.raises(ValueError, match="beta"):
        sampler.sweep(offsets, words, topics, dt, wt, tt, 0.1, 0.0, seed=0)
    with pytest.raises(ValueError, match="alpha"):
        sampler.sweep(offsets, words, topics, dt, wt, tt, [0.1, 0.2], 0.1, seed=0)
    with pytest.raises(TypeError, match="topics"):
        sampler.sweep(offsets, words, topics.astype(np.int64), dt, wt, tt, 0.1, 0.1, seed=0)
    bad = topics.copy()
    bad[0] = K
    with pytest.raises(ValueError, match="topics"):
        sampler.sweep(offsets, words, bad, dt, wt, tt, 0.1, 0.1, seed=0)
    with pytest.raises(ValueError, match="word ids"):
        sampler.sweep(offsets, words + V, topics, dt, wt, tt, 0.1, 0.1, seed=0)
    with pytest.raises(ValueError, match="method"):
        sampler.sweep(offsets, words, topics, dt, wt, tt, 0.1, 0.1, seed=0, method="alias")
    with pytest.raises(ValueError, match="burn_in"):
        sampler.fold_in(offsets, words, np.full((K, V), 0.1), 0.1, iterations=5, burn_in=5)


# ---------------------------------------------------------------------------------------------
# (g) the kernels' exact output for fixed seeds
# ---------------------------------------------------------------------------------------------

def planted_corpus(n_docs, block, n_planted):
    """A corpus of planted topics built from the kernels' own generator only.

    Each document mixes two of ``n_planted`` word blocks, so sweeps make the counts sparse and
    SparseLDA's q bucket and word lists do real work. numpy's generators may change their
    streams between releases; ``_kernels.random_topics`` is ours and does not, so the corpus is
    the same on every install.
    """
    lengths = _kernels.random_topics(n_docs, 70, np.uint64(101)).astype(np.int64)
    lengths[::17] = 0  # empty documents, which the sweep skips
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n = int(offsets[-1])
    pair = _kernels.random_topics(2 * n_docs, n_planted, np.uint64(102)).reshape(n_docs, 2)
    side = _kernels.random_topics(n, 2, np.uint64(103))
    within = _kernels.random_topics(n, block, np.uint64(104))
    doc_of = np.repeat(np.arange(n_docs), lengths)
    words = (pair[doc_of, side].astype(np.int64) * block + within).astype(np.int32)
    return offsets, words, block * n_planted


def kernel_run_digest(K, alpha, beta, dense_above, sweeps, totals_dtype=np.int64,
                      damage=False, batch=None):
    """sha256 of the state (and change counts) after fixed-seed calls of ``_kernels.sweep``."""
    offsets, words, V = planted_corpus(240, 40, 6)
    D = offsets.size - 1
    topics = _kernels.random_topics(words.size, K, np.uint64(7))
    wt = _kernels.word_topic_counts(words, topics, V, K)
    dt = _kernels.doc_topic_counts(offsets, topics, K)
    tt = wt.sum(axis=0).astype(totals_dtype)
    if damage:
        # a damaged copy (the kernel clamps, never crashes): negative n_wk, n_k, and n_dk that
        # disagree with the assignments; from the same generator, so also install-independent
        wt -= _kernels.random_topics(wt.size, 3, np.uint64(105)).reshape(wt.shape)
        tt[: K // 3] = -4
        every_5th = dt[::5]
        every_5th += _kernels.random_topics(every_5th.size, 4, np.uint64(106)).reshape(
            every_5th.shape) - 2
    alpha = np.ascontiguousarray(np.broadcast_to(np.asarray(alpha, np.float64), (K,)))
    changed = []
    for it in range(sweeps):
        start, stop = (0, D) if batch is None or it % 2 == 0 else batch
        changed.append(_kernels.sweep(start, stop, offsets, words, topics, dt, wt, tt, alpha,
                                      beta, np.uint64(1000 + 7919 * it), dense_above))
    h = hashlib.sha256()
    for a in (topics, dt, wt, tt, np.array(changed)):
        h.update(np.ascontiguousarray(a, dtype="<i8").tobytes())
    return h.hexdigest()


# Digests of the kernel as it stood before its sweep was split into helpers: a restructuring
# must draw the same random numbers in the same order and so reproduce them to the bit. A
# deliberate change of the sampler's arithmetic or draw order updates them (and says so).
# fastmath lets the compiler sum the weights in another order on another CPU, but a draw moves
# only when u falls within rounding (~1e-16 relative) of a bucket boundary, which for these few
# thousand tokens is vanishingly unlikely. "auto" runs dense for the first sweeps, then sparse.
SWEEP_DIGESTS = {
    "sparse":
        "7428dc7df35f6756ee453cc498ece719809d208395847afad729978ccfc6cd13",
    "sparse, mini-batches, int32 n_k":
        "a5aaf7f30cf8d36f17aa67518a73d0fd9d1c58001c20e9c306769e7c0e0b28e2",
    "sparse, heavy s and r buckets":
        "94164b312d71c13d2f3c9f23f74407f5068e1a7d66f7f95203bc45147712a3b8",
    "dense":
        "2f84b6a158225193841e282ab3e925f73cc425fe3254965089a96f3bb441f0d5",
    "auto":
        "d0d402bd0f382d62ba8616101b3033801237b05728acfad6d2f8737fb211a3a5",
    "sparse, damaged counts":
        "6e9023b802b639b8ac244bdf82db39cb7def4c9b79047e9a21b9cfccb82bedec",
    "dense, damaged counts":
        "cd7d2ea3674448bbe255173da76fdb139e91f9bd398877eee0cee13cbe5ba0f3",
}
SWEEP_RUNS = {
    "sparse": dict(K=12, alpha=np.linspace(0.02, 0.3, 12), beta=0.01, dense_above=np.inf,
                   sweeps=30),
    "sparse, mini-batches, int32 n_k": dict(K=20, alpha=0.1, beta=0.02, dense_above=np.inf,
                                            sweeps=16, totals_dtype=np.int32, batch=(30, 170)),
    "sparse, heavy s and r buckets": dict(K=5, alpha=np.array([0.5, 2.0, 0.7, 1.3, 3.0]),
                                          beta=0.8, dense_above=np.inf, sweeps=12),
    "dense": dict(K=12, alpha=np.linspace(0.02, 0.3, 12), beta=0.01, dense_above=0.0,
                  sweeps=12),
    "auto": dict(K=12, alpha=0.1, beta=0.01, dense_above=0.2, sweeps=30),
    "sparse, damaged counts": dict(K=9, alpha=0.2, beta=0.05, dense_above=np.inf, sweeps=6,
                                   damage=True),
    "dense, damaged counts": dict(K=9, alpha=0.2, beta=0.05, dense_above=0.0, sweeps=6,
                                  damage=True),
}


@pytest.mark.parametrize("name", sorted(SWEEP_RUNS))
def test_sweep_reproduces_its_recorded_output_bit_for_bit(name):
    assert kernel_run_digest(**SWEEP_RUNS[name]) == SWEEP_DIGESTS[name]


def inference_run_digest(K, alpha, iterations, burn_in):
    """sha256 of fold_in's θ and document completion's score for fixed seeds.

    φ favours, for topic k, the word block k mod 6 of :func:`planted_corpus`, so the sampled
    documents hold few topics and the document-topic list grows and shrinks as they move.
    """
    offsets, words, V = planted_corpus(120, 40, 6)
    block_of_word = np.arange(V) // 40
    phi_wk = 1.0 + 20.0 * (block_of_word[:, None] == np.arange(K)[None, :] % 6)
    phi_wk /= phi_wk.sum(axis=0)
    alpha = np.full(K, alpha)
    theta = _inference_kernels.fold_in(offsets, words, phi_wk, alpha, iterations, burn_in,
                                       np.uint64(11))
    total, scored = _inference_kernels.completion_log_likelihood(
        offsets, words, phi_wk, alpha, iterations, burn_in, np.uint64(12))
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(theta, dtype="<f8").tobytes())
    h.update(np.array([total], "<f8").tobytes() + np.array([scored], "<i8").tobytes())
    return h.hexdigest()


# Digests of fold-in and document completion as they stood before their document-topic list
# became the sweep's helpers: same draws in the same order, so the same bits.
INFERENCE_DIGESTS = {
    (8, 0.1, 12, 3): "dfc8b7463c8e4b05ae72eaf189f8d37bc7f36fece143c1ae11b70230c200f2dc",
    (3, 0.7, 6, 0): "c1a6cdeeef43b6b6197d438d12a0ed4b26b11beddd43e460f54c2f755982a8a2",
}


@pytest.mark.parametrize("run", sorted(INFERENCE_DIGESTS))
def test_inference_reproduces_its_recorded_output_bit_for_bit(run):
    assert inference_run_digest(*run) == INFERENCE_DIGESTS[run]
