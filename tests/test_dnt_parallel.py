"""Model-parallel births (DNT(structure="parallel"), deepdist.dnt.parallel) on a real local Spark:
the tree equals the one the same proposals give on the driver, node for node, even when a task of
the structure phase fails after proposing and Spark runs it again."""

from __future__ import annotations

import os

import numpy as np
import pytest
from dnt_hooks import FailFirstProposal

from deepdist.dnt import DNT
from deepdist.dnt.synthetic import synthetic_tree_corpus

V = 400
ID2WORD = [f"w{i}" for i in range(V)]


@pytest.fixture(scope="module")
def docs():
    corpus = synthetic_tree_corpus(n_docs=1500, vocab_size=V, kind="counts", seed=2, alpha=4.0, gamma=2.0)
    return [[(int(w), int(n)) for w, n in zip(np.flatnonzero(row), row[row > 0])] for row in corpus.counts]


PARAMS = dict(max_nodes=24, epochs=6, beta=300.0, kappa1=300.0, births_per_pass=6, birth_children=2,
              verify="full", progress=False, seed=3)


@pytest.fixture(scope="module")
def batch(sc, docs):
    return DNT(structure="batch", **PARAMS).fit(sc.parallelize(docs, 2), id2word=ID2WORD)


def test_model_parallel_births_equal_the_same_proposals_on_the_driver(sc, docs, batch, tmp_path):
    parallel = DNT(structure="parallel", **PARAMS)
    parallel._structure_hook = FailFirstProposal(str(tmp_path))
    parallel.fit(sc.parallelize(docs, 2), id2word=ID2WORD)
    assert os.listdir(tmp_path) == ["failed-1"]  # a structure task failed after proposing, and ran again
    a, b = batch.model_, parallel.model_
    assert a.n_nodes_ == b.n_nodes_ > 6
    np.testing.assert_array_equal(a.tree_, b.tree_)
    np.testing.assert_allclose(a.mean_directions_, b.mean_directions_, rtol=0, atol=1e-12)
    np.testing.assert_allclose(a.mass_, b.mass_, rtol=1e-12)
    assert [r["births"] for r in batch.history_] == [r["births"] for r in parallel.history_]
    assert sum(r["births"] for r in parallel.history_) >= 6
    # every birth moved statistics that the memos then held: no record was applied twice
    assert all(r["memo_error"] <= 1e-9 * len(docs) for r in parallel.history_)
    assert parallel.repairs_ == 0 and all(r["structure_seconds"] >= 0 for r in parallel.history_)


def test_confirmed_births_raise_the_bound_like_the_drivers_own(sc, docs, batch):
    driver = DNT(structure="driver", **PARAMS).fit(sc.parallelize(docs, 2), id2word=ID2WORD)
    for fitted in (driver, batch):
        moved = [r for r in fitted.history_ if "elbo_after_moves" in r]
        assert moved and all(r["elbo_after_moves"] > r["elbo"] for r in moved)
    # the two ways grow trees of a like size and bound on the same documents
    assert abs(driver.model_.n_nodes_ - batch.model_.n_nodes_) <= 6
    final = [f.history_[-1]["elbo"] for f in (driver, batch)]
    assert abs(final[0] - final[1]) <= 1e-3 * abs(final[0])
