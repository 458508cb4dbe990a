"""The DNT estimator on Spark: memoized exactness under task failures, a bound that never falls
between moves, structure moves judged by the bound, and recovery of a tree drawn from the model."""

from __future__ import annotations

import os

import numpy as np
import pytest
from scipy import sparse

from dnt_hooks import FailOnce, HoldFitState

from deepdist.dnt import DNT, DNTModel
from deepdist.dnt import memo as memo_
from deepdist.dnt import moves
from deepdist.dnt import variational as vi
from deepdist.dnt.fit import exact_stats
from deepdist.dnt.synthetic import synthetic_tree_corpus
from deepdist.dnt.tree import Tree


def _bows(counts):
    return [[(int(w), int(n)) for w, n in zip(np.flatnonzero(row), row[row > 0])] for row in counts]


@pytest.fixture(scope="module")
def counts_corpus():
    return synthetic_tree_corpus(n_docs=1500, vocab_size=400, kind="counts", seed=2, alpha=4.0, gamma=2.0)


def _relative_falls(trace):
    """The largest relative fall of the bound between consecutive global steps without a move."""
    falls = [(a - b) / abs(a) for (_, a, _), (_, b, moved) in zip(trace, trace[1:]) if not moved and a]
    return max(falls, default=0.0)


def test_statistics_equal_the_memos_after_every_pass_with_failed_and_retried_tasks(sc, counts_corpus, tmp_path):
    held = HoldFitState()
    seen = []
    dnt = DNT(max_nodes=16, epochs=5, beta=300.0, kappa1=300.0, births_per_pass=3, batches_per_partition=2,
              verify="full", progress=False, seed=1)
    dnt._task_hook = FailOnce(str(tmp_path), jobs={1, 4, 7}, partition=1)
    dnt._fit_hook = held

    def check(estimator, record):
        fit = held.fit
        stats, mass, entropy = exact_stats(fit.state, len(fit.vocabulary), fit.tree.capacity, fit.ops)
        with fit.dd.store.lock:
            server = fit.dd.store.params["stats"].copy(), fit.dd.store.params["mass"].copy()
        seen.append((np.abs(server[0] - stats).max() / max(np.abs(stats).max(), 1.0),
                     np.abs(server[1] - mass).max()))

    dnt.callbacks = [check]
    dnt.fit(sc.parallelize(_bows(counts_corpus.counts), 2), id2word=[f"w{i}" for i in range(400)])
    assert len(os.listdir(tmp_path)) == 3  # three attempts failed after pushing
    assert dnt.repairs_ == 0  # the ledger alone kept one attempt per partition
    assert len(seen) == 5
    for stats_error, mass_error in seen:
        assert stats_error < 1e-12 and mass_error < 1e-9
    assert all(r["memo_error"] <= 1e-9 * 1500 for r in dnt.history_)
    assert dnt.model_.n_nodes_ > 1


def test_a_bad_server_total_is_found_by_the_sketch_and_rebuilt_from_the_memos(sc, counts_corpus):
    """What a task Spark rebuilt from the lineage does to the server (counts it twice) is repaired."""
    held = HoldFitState()
    corrupted = []

    def corrupt(estimator, record):
        if not corrupted:
            with held.fit.dd.store.lock:
                held.fit.dd.store.params["stats"][3, 0] += 0.5
                held.fit.dd.store.params["mass"][0] += 1.0
            corrupted.append(True)

    dnt = DNT(max_nodes=8, epochs=3, beta=300.0, births_per_pass=1, progress=False, callbacks=[corrupt])
    dnt._fit_hook = held
    dnt.fit(sc.parallelize(_bows(counts_corpus.counts), 2), id2word=[f"w{i}" for i in range(400)])
    assert dnt.repairs_ == 1
    assert [r["repaired"] for r in dnt.history_] == [False, True, False]


def test_the_bound_never_falls_between_moves_and_moves_raise_it(sc, counts_corpus):
    dnt = DNT(max_nodes=20, epochs=8, beta=300.0, kappa1=300.0, births_per_pass=3, merge_every=2, max_depth=3,
              progress=False, seed=0)
    dnt.fit(sc.parallelize(_bows(counts_corpus.counts), 2), id2word=[f"w{i}" for i in range(400)])
    trace = dnt.elbo_trace_
    assert len(trace) > 10
    assert _relative_falls(trace) < 1e-13
    # moves: each pass's bound after its moves is above the bound before them
    moved = [r for r in dnt.history_ if "elbo_after_moves" in r]
    assert moved and all(r["elbo_after_moves"] > r["elbo"] for r in moved)
    assert sum(r["births"] for r in dnt.history_) >= 2
    assert isinstance(dnt.model_, DNTModel)
    assert dnt.model_.depth_.max() + 1 <= 3  # max_depth counts levels, the model's depth_ from the root's 0


# -- the driver's pieces, without Spark ---------------------------------------------------------
def _state(corpus, capacity=8, beta=300.0, kappa1=300.0):
    x = sparse.csr_matrix(corpus.documents)
    centroid = np.asarray(x.sum(axis=0)).ravel()
    hyper = vi.Hyper(0.5, 0.5, 10.0, kappa1, beta, x.shape[1], centroid / np.linalg.norm(centroid))
    tree = Tree(capacity)
    q = vi.Globals.empty(capacity, x.shape[1])
    q.mu[0] = hyper.root_prior
    lam = sparse.csr_matrix((np.ones(x.shape[0]), (np.arange(x.shape[0]), np.zeros(x.shape[0], int))),
                            shape=(x.shape[0], capacity))
    stats = vi.Stats(np.asarray(lam.sum(axis=0)).ravel(), (lam.T @ x).toarray(), np.zeros(capacity))
    vi.global_step(tree, stats, hyper, q)
    return x, hyper, tree, q, lam, stats


def test_the_global_step_raises_the_bound_and_a_birth_that_splits_real_structure_is_accepted(counts_corpus):
    x, hyper, tree, q, lam, stats = _state(counts_corpus)
    before = vi.elbo(tree, stats, hyper, q)
    q2 = q.copy()
    q2.mu[0] = np.ones(x.shape[1]) / np.sqrt(x.shape[1])
    assert vi.elbo(tree, stats, hyper, q2) < before  # the step's mean beats another one
    docs = moves.BirthDocs(x, lam, [(0, 0)] * x.shape[0])
    original = stats.copy()
    result = moves.propose_birth(tree, stats, hyper, q, 0, docs, np.random.default_rng(0))
    assert result is not None
    new_tree, new_stats, new_q, gain, extras, (child,) = result
    assert gain > 0 and new_tree.parent[child] == 0
    assert vi.elbo(new_tree, new_stats, hyper, new_q) == pytest.approx(before + gain, rel=1e-12)
    # a refused birth leaves the statistics as they were (they are changed in place while tried)
    kept = new_stats.copy()
    assert moves.propose_birth(new_tree, new_stats, hyper, new_q, child, moves.BirthDocs(x[:3], lam[:3], [(0, 0)] * 3),
                               np.random.default_rng(0)) is None
    np.testing.assert_array_equal(new_stats.sums, kept.sums)
    # the extras are exactly the moved documents' statistics: S + extras = the proposal's S
    rebuilt = original.copy()
    for extra in extras.values():
        extra.add_to(rebuilt)
    np.testing.assert_allclose(rebuilt.sums, new_stats.sums, atol=1e-9)
    np.testing.assert_allclose(rebuilt.mass, new_stats.mass, atol=1e-9)


def test_a_birth_of_several_children_at_once_raises_the_bound_more_than_one_child(counts_corpus):
    x, hyper, tree, q, lam, stats = _state(counts_corpus, capacity=12)
    docs = moves.BirthDocs(x, lam, [(0, 0)] * x.shape[0])
    one = moves.propose_birth(tree, stats.copy(), hyper, q, 0, docs, np.random.default_rng(0), children=1)
    three = moves.propose_birth(tree, stats.copy(), hyper, q, 0, docs, np.random.default_rng(0), children=3)
    assert len(one[5]) == 1 and len(three[5]) == 3
    assert all(three[0].parent[c] == 0 for c in three[5])
    assert three[3] > one[3] > 0


def test_merging_a_node_with_its_copy_raises_the_bound_and_a_real_split_is_kept(counts_corpus):
    x, hyper, tree, q, lam, stats = _state(counts_corpus)
    docs = moves.BirthDocs(x, lam, [(0, 0)] * x.shape[0])
    tree, stats, q, _, _, (child,) = moves.propose_birth(tree, stats, hyper, q, 0, docs, np.random.default_rng(0))
    before = vi.elbo(tree, stats, hyper, q)
    # a real split: merging it back lowers the bound, so it is refused
    merged_entropy = float(stats.entropy[0] + stats.entropy[child])  # near-hard λ: entropies add
    assert moves.try_merge(tree, stats, hyper, q, 0, child, merged_entropy, before) is None
    # a copy: a second child holding nothing but the first child's mean merges away
    copy = tree.add_child(0)
    q.mu[copy], q.eta[copy] = q.mu[child], hyper.kappa1
    vi.global_step(tree, stats, hyper, q)
    before = vi.elbo(tree, stats, hyper, q)
    result = moves.try_merge(tree, stats, hyper, q, child, copy, float(stats.entropy[child]), before)
    assert result is not None and result[3] > 0 and copy not in result[0].children


def test_memos_local_step_replay_and_pair_entropy():
    rng = np.random.default_rng(0)
    capacity, words = 5, 30
    docs = []
    for _ in range(40):
        ids = np.sort(rng.choice(words, 6, replace=False))
        values = rng.random(6)
        docs.append((ids, values / np.linalg.norm(values)))
    batch = memo_.Batch.from_documents(docs)
    active = np.array([0, 1, 3])
    log_prior = np.full(capacity, -np.inf)
    log_prior[active] = np.log([0.5, 0.3, 0.2])
    weights = rng.normal(size=(words, capacity)) * 3
    first, delta = memo_.local_step(batch, memo_.empty_memo(capacity), weights[batch.words], log_prior, active,
                                    capacity)
    flat, values = memo_.statistics(batch, first.lam, capacity)
    np.testing.assert_allclose(np.bincount(delta[0], delta[1], minlength=words * capacity),
                               np.bincount(flat, values, minlength=words * capacity))
    np.testing.assert_allclose(first.lam.sum(axis=1), 1.0)
    assert set(first.lam.indices) <= set(active)
    # a second visit with other weights: ΔS is the difference of the two memos' statistics
    second, delta2 = memo_.local_step(batch, first, weights[batch.words] * 0.5, log_prior, active, capacity)
    f2, v2 = memo_.statistics(batch, second.lam, capacity)
    expect = np.bincount(f2, v2, minlength=words * capacity) - np.bincount(flat, values, minlength=words * capacity)
    np.testing.assert_allclose(np.bincount(delta2[0], delta2[1], minlength=words * capacity), expect, atol=1e-12)
    np.testing.assert_allclose(delta2[2], second.mass - first.mass)
    # merging 3 into 1: the memo's mass adds up, and its entropy is the pair's merged entropy
    merged = memo_.replay(batch, second, [("merge", 1, 3)], capacity)
    assert merged.mass[3] == 0 and merged.mass[1] == pytest.approx(second.mass[1] + second.mass[3])
    assert merged.entropy[1] == pytest.approx(memo_.pair_entropy(second.lam, [(1, 3)])[0])


# -- recovery --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_births_merges_and_moves_recover_a_tree_drawn_from_the_model(sc):
    corpus = synthetic_tree_corpus(n_docs=3000, vocab_size=2000, kind="vmf", seed=0, alpha=4.0, gamma=2.0)
    docs = [list(zip(range(2000), row.tolist())) for row in corpus.documents]
    dnt = DNT(max_nodes=40, epochs=16, batches_per_partition=1, beta=1000.0, kappa0=2000.0, kappa1=2000.0,
              births_per_pass=4, progress=False, seed=0)
    dnt.fit(sc.parallelize(docs, 2), id2word=[f"w{i}" for i in range(2000)])
    model = dnt.model_
    assert dnt.history_[0]["nodes"] <= 3
    cosine = corpus.node_means @ model.mean_directions_.T
    match, best = cosine.argmax(axis=1), cosine.max(axis=1)
    big = np.flatnonzero(corpus.node_masses >= 0.01)
    assert (best[big] >= 0.9).mean() >= 0.9
    matched = [k for k in big if best[k] >= 0.9 and corpus.parents[k] >= 0]
    agree = [model.tree_[match[k]] == match[corpus.parents[k]] for k in matched]
    assert np.mean(agree) >= 0.8, (model.show_tree(3), match, best)


def test_a_word_id_outside_the_vocabulary_is_one_clear_error(sc):
    from deepdist.errors import ConfigurationError

    docs = [[(0, 2), (1, 1)], [(2, 1), (7, 3)]]
    with pytest.raises(ConfigurationError, match=r"word ids must lie in \[0, 3\)") as info:
        DNT(epochs=2, progress=False).fit(sc.parallelize(docs, 2), id2word=["a", "b", "c"])
    assert "Py4J" not in str(info.value) and "Traceback" not in str(info.value)
