"""deepdist.dnt.synthetic: corpora from the DNT generative process, with the true tree kept."""

from __future__ import annotations

import numpy as np
import pytest

from deepdist.dnt.synthetic import expected_node_masses, synthetic_tree_corpus
from deepdist.dnt.vmf import mean_resultant_length
from deepdist.errors import ConfigurationError


@pytest.fixture(scope="module", params=["vmf", "counts"])
def corpus(request):
    return synthetic_tree_corpus(n_docs=800, vocab_size=2000, kind=request.param, seed=11)


def _tree_depth(parents):
    depth = np.zeros(parents.size, dtype=int)
    for k in range(1, parents.size):
        assert 0 <= parents[k] < k  # a parent precedes its child: no cycles, one root
        depth[k] = depth[parents[k]] + 1
    return depth


def test_shapes_and_unit_documents(corpus):
    n_nodes = 1 + 3 + 6 + 12
    assert corpus.documents.shape == (800, 2000)
    assert corpus.parents.shape == corpus.depths.shape == corpus.node_masses.shape == (n_nodes,)
    assert corpus.node_means.shape == (n_nodes, 2000)
    assert corpus.doc_nodes.shape == (800,) and corpus.doc_nodes.min() >= 0 and corpus.doc_nodes.max() < n_nodes
    assert np.allclose(np.linalg.norm(corpus.documents, axis=1), 1.0)
    assert np.allclose(np.linalg.norm(corpus.node_means, axis=1), 1.0)
    assert corpus.node_masses.min() > 0 and corpus.node_masses.sum() == pytest.approx(1.0, abs=1e-12)
    if corpus.counts is not None:
        assert corpus.counts.shape == (800, 2000) and corpus.counts.min() >= 0
        assert np.all(corpus.counts.sum(axis=1) >= 1)
        assert np.allclose(corpus.word_probs.sum(axis=1), 1.0) and corpus.word_probs.min() > 0
        assert np.all(corpus.documents >= 0)
        tokens = corpus.tokens()
        assert [len(t) for t in tokens] == corpus.counts.sum(axis=1).tolist()
        assert sorted(tokens[0]) == sorted(f"w{w}" for w in np.repeat(np.arange(2000), corpus.counts[0]))
    else:
        with pytest.raises(ConfigurationError):
            corpus.tokens()


def test_parent_array_is_a_tree_of_the_asked_depth():
    for branching in [(3, 2, 2), (4,), (2, 1, 3, 2)]:
        c = synthetic_tree_corpus(n_docs=10, vocab_size=30, branching=branching, seed=0)
        depth = _tree_depth(c.parents)
        assert c.parents[0] == -1 and np.array_equal(depth, c.depths)
        assert depth.max() == len(branching)
        for level, width in enumerate(branching):
            inner = np.flatnonzero(depth == level)
            kids = np.bincount(c.parents[1:], minlength=c.parents.size)[inner]
            assert np.all(kids == width)
        assert np.all(np.bincount(c.parents[1:], minlength=c.parents.size)[depth == len(branching)] == 0)


def test_node_masses_match_stick_breaking_expectations():
    expected = expected_node_masses((3, 2, 2), alpha=2.0, gamma=1.0)
    assert expected.sum() == pytest.approx(1.0)
    assert expected[0] == pytest.approx(1 / 3)  # E[ν] = 1/(1+α) at the root
    assert expected[1:4] == pytest.approx([2 / 3 * 1 / 3 * 1 / 2, 2 / 3 * 1 / 3 * 1 / 4, 2 / 3 * 1 / 3 * 1 / 4])
    draws = np.array([synthetic_tree_corpus(n_docs=0, vocab_size=3, alpha=2.0, gamma=1.0, seed=s).node_masses
                      for s in range(120)])
    # Each mass is in [0, 1], so its standard error over 120 draws is at most 0.5/√120 ≈ 0.046;
    # use the sample spread for a sharper bound.
    se = draws.std(axis=0) / np.sqrt(len(draws))
    assert np.all(np.abs(draws.mean(axis=0) - expected) < 4 * se + 1e-3)
    # A different α moves mass to the root as 1/(1+α) says.
    root = np.mean([synthetic_tree_corpus(n_docs=0, vocab_size=3, alpha=0.5, seed=s).node_masses[0]
                    for s in range(100)])
    assert root == pytest.approx(1 / 1.5, abs=0.07)


def test_documents_follow_the_node_masses(corpus):
    counts = np.bincount(corpus.doc_nodes, minlength=corpus.node_masses.size)
    expected = 800 * corpus.node_masses
    sd = np.sqrt(expected * (1 - corpus.node_masses))
    assert np.all(np.abs(counts - expected) < 5 * sd + 2)


def test_documents_are_closest_to_their_own_node(corpus):
    sims = corpus.documents @ corpus.node_means.T
    own = sims[np.arange(sims.shape[0]), corpus.doc_nodes]
    others = np.where(np.eye(sims.shape[1], dtype=bool)[corpus.doc_nodes], np.nan, sims)
    assert own.mean() > np.nanmean(others) + 0.1
    assert own.mean() > np.nanmax(others, axis=1).mean() + 0.03
    # Per node as well: each populated node's documents sit nearer to it than to any other node.
    for k in np.unique(corpus.doc_nodes):
        rows = corpus.doc_nodes == k
        if rows.sum() >= 5:
            mean_sims = sims[rows].mean(axis=0)
            assert mean_sims.argmax() == k
    assert np.mean(sims.argmax(axis=1) == corpus.doc_nodes) > 0.9


def test_hierarchy_children_resemble_parents():
    c = synthetic_tree_corpus(n_docs=0, vocab_size=2000, seed=5)
    gram = c.node_means @ c.node_means.T
    kids = np.arange(1, c.parents.size)
    parent_sim = gram[kids, c.parents[kids]].mean()
    # In the vMF model, cos(child, parent) concentrates at A_V(κ).
    assert parent_sim == pytest.approx(float(mean_resultant_length(2000, 2000.0)), abs=0.03)
    grand = [gram[k, c.parents[c.parents[k]]] for k in kids if c.depths[k] >= 2]
    assert parent_sim > np.mean(grand) + 0.1


def test_vmf_documents_concentrate_as_beta_says():
    c = synthetic_tree_corpus(n_docs=400, vocab_size=500, beta=300.0, seed=2)
    own = np.einsum("nv,nv->n", c.documents, c.node_means[c.doc_nodes])
    a = float(mean_resultant_length(500, 300.0))
    assert own.mean() == pytest.approx(a, abs=4 * own.std() / np.sqrt(400))


def test_reproducible_and_seed_dependent():
    kwargs = dict(n_docs=50, vocab_size=100, kind="counts")
    a, b = synthetic_tree_corpus(seed=4, **kwargs), synthetic_tree_corpus(seed=4, **kwargs)
    for field in ("documents", "parents", "node_means", "doc_nodes", "node_masses", "counts", "word_probs"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.documents, synthetic_tree_corpus(seed=5, **kwargs).documents)


@pytest.mark.parametrize("kwargs", [dict(n_docs=-1), dict(vocab_size=1), dict(alpha=0.0), dict(gamma=-1.0),
                                    dict(beta=float("nan")), dict(branching=()), dict(branching=(2, 0)),
                                    dict(kind="dense"), dict(seed=np.random.default_rng(0)),
                                    dict(mean_length=0.5), dict(n_docs=2.5)])
def test_rejects_bad_parameters(kwargs):
    with pytest.raises(ConfigurationError):
        synthetic_tree_corpus(**kwargs)
