"""Dependent trees over time (DNT(history=...), deepdist.dnt.timeline) on a real local Spark:
identities across epochs, exact statistics under failed tasks, a bound that never falls between
moves within an epoch, what the dependence does to the means, and the fitted series' API."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from dnt_hooks import FailOnce

from deepdist.dnt import DNT, DNTModel, DNTTimeline
from deepdist.dnt import fit as fit_
from deepdist.dnt import variational as vi
from deepdist.dnt.synthetic import synthetic_tree_corpus
from deepdist.dnt.timeline import neighbour_statistics, pseudo_statistics, split_epochs
from deepdist.dnt.tree import Tree
from deepdist.errors import ConfigurationError

V = 400
ID2WORD = [f"w{i}" for i in range(V)]


def _bows(counts):
    return [[(int(w), int(n)) for w, n in zip(np.flatnonzero(row), row[row > 0])] for row in counts]


@pytest.fixture(scope="module")
def series():
    """Three epochs of 400 training documents and 150 held-out ones each, all from one tree."""
    corpus = synthetic_tree_corpus(n_docs=3 * 550, vocab_size=V, kind="counts", seed=5, alpha=4.0, gamma=2.0,
                                   node_kappa=300.0)  # children far enough from parents for 400 documents to show them
    bows = _bows(corpus.counts)
    order = np.random.default_rng(0).permutation(len(bows))
    train, held = {}, {}
    for t in range(3):
        rows = order[t * 550:(t + 1) * 550]
        train[t + 1] = [bows[i] for i in rows[:400]]
        held[t + 1] = [bows[i] for i in rows[400:]]
    return train, held


def _pairs(sc, train):
    return sc.parallelize([(t, d) for t in sorted(train) for d in train[t]], 2)


def _params(**overrides):
    params = dict(max_nodes=16, epochs=4, beta=300.0, kappa1=300.0, kappa2=300.0, births_per_pass=3,
                  progress=False, seed=1, history=1)
    params.update(overrides)
    return params


@pytest.fixture(scope="module")
def fitted(sc, series, tmp_path_factory):
    marker = tmp_path_factory.mktemp("failures")
    dnt = DNT(verify="full", **_params())
    dnt._task_hook = FailOnce(str(marker), jobs={1, 4}, partition=1)
    dnt.fit(_pairs(sc, series[0]), id2word=ID2WORD)
    return dnt, len(os.listdir(marker))


def test_each_epoch_starts_from_the_last_and_nodes_keep_their_identity(fitted):
    dnt, failures = fitted
    timeline = dnt.model_
    assert isinstance(timeline, DNTTimeline) and timeline.times_ == [1, 2, 3]
    assert all(isinstance(timeline.tree_at(t), DNTModel) for t in timeline.times_)
    for before, after in zip(timeline.times_, timeline.times_[1:]):
        old, new = set(timeline.nodes_at(before).tolist()), set(timeline.nodes_at(after).tolist())
        born = {b for b, _ in timeline.births(after)}
        gone = {g for g, _ in timeline.merges(after)}
        assert new - old == born - gone  # every new identity was born in that epoch ...
        assert old - new <= gone  # ... and every lost one merged away
        assert len(new) == timeline.tree_at(after).n_nodes_  # identities are unique
    assert all(timeline.nodes_at(t)[0] == 0 for t in timeline.times_)  # the root is node 0 throughout
    assert timeline.tree_at(3).n_nodes_ > timeline.tree_at(1).n_nodes_ > 1  # grown over the epochs
    # a node's trajectory follows its identity
    trajectory = timeline.trajectory(0, num_words=5)
    assert [p["time"] for p in trajectory] == [1, 2, 3] and all(len(p["top_words"]) == 5 for p in trajectory)
    assert all(p["parent"] == -1 and p["mass"] > 0 for p in trajectory)
    assert {r["time"] for r in dnt.history_} == {1, 2, 3} and len(dnt.history_) == 3 * 4
    # exactness: the injected failures did not count twice, in any epoch
    assert failures == 2 and dnt.repairs_ == 0
    assert all(r["memo_error"] <= 1e-9 * 400 for r in dnt.history_)


def test_the_bound_never_falls_between_moves_within_an_epoch(fitted):
    dnt, _ = fitted
    epochs, current = [], []
    for entry in dnt.elbo_trace_:
        if current and entry[0] < current[-1][0]:  # job numbers restart with each epoch's fit
            epochs.append(current)
            current = []
        current.append(entry)
    epochs.append(current)
    assert len(epochs) == 3
    for trace in epochs:
        falls = [(a - b) / abs(a) for (_, a, _), (_, b, moved) in zip(trace, trace[1:]) if not moved]
        assert len(trace) >= 6 and max(falls, default=0.0) < 1e-13


def test_a_large_kappa2_pins_each_node_to_its_last_mean(sc, series):
    train = {t: series[0][t] for t in (1, 2)}
    means = {}
    for kappa2 in (0.0, 1e9):
        timeline = DNT(**_params(kappa2=kappa2, history=0, epochs=3)).fit(_pairs(sc, train), id2word=ID2WORD).model_
        first, second = timeline.tree_at(1), timeline.tree_at(2)
        ids1, ids2 = list(timeline.nodes_at(1)), list(timeline.nodes_at(2))
        kept = [i for i in ids1 if i in ids2]
        cosines = [float(first.mean_directions_[ids1.index(i)] @ second.mean_directions_[ids2.index(i)]) for i in kept]
        means[kappa2] = min(cosines)
    assert means[1e9] > 1 - 1e-6  # pinned
    assert means[0.0] < means[1e9]  # free to follow the epoch's own documents


def test_dependent_trees_score_above_independent_ones_on_held_out_documents(sc, series, fitted):
    """Each epoch holds 400 documents: the dependent tree borrows the earlier epochs' strength."""
    timeline = fitted[0].model_
    train, held = series
    for t in (2, 3):
        size = timeline.tree_at(t).n_nodes_
        alone = DNT(**_params(history=None, max_nodes=size)).fit(sc.parallelize(train[t], 2), id2word=ID2WORD).model_
        assert alone.n_nodes_ <= size
        assert timeline.score(held[t], t, kind="vmf") >= alone.score(held[t], kind="vmf")


def test_smoothing_refines_each_epoch_from_the_next_and_learns_from_later_documents(sc, series, fitted):
    """The backward sweep: every epoch ends with the last epoch's nodes, the forward sweep's trees
    stay in ``forward_model_`` as they were, and an early epoch scores better on held-out
    documents for having heard the later ones (the synthetic epochs share one tree)."""
    train, held = series
    dnt = DNT(smooth=2, **_params()).fit(_pairs(sc, train), id2word=ID2WORD)
    smoothed, forward = dnt.model_, dnt.forward_model_
    reference = fitted[0].model_
    for t in (1, 2, 3):  # the forward sweep is the unsmoothed fit, tree for tree
        np.testing.assert_array_equal(forward.nodes_at(t), reference.nodes_at(t))
        np.testing.assert_allclose(forward.tree_at(t).mean_directions_, reference.tree_at(t).mean_directions_)
    last = set(smoothed.nodes_at(3).tolist())
    assert len(last) > 1
    for t in (1, 2):
        assert set(smoothed.nodes_at(t).tolist()) == last  # the last tree's nodes, identities aligned
        parents = {int(i): int(smoothed.nodes_at(t)[p]) if p >= 0 else -1
                   for i, p in zip(smoothed.nodes_at(t), smoothed.tree_at(t).tree_)}
        assert parents == {int(i): int(smoothed.nodes_at(3)[p]) if p >= 0 else -1
                           for i, p in zip(smoothed.nodes_at(3), smoothed.tree_at(3).tree_)}
        assert smoothed.tree_at(t).mass_.sum() == pytest.approx(len(train[t]), rel=1e-9)
    np.testing.assert_allclose(smoothed.tree_at(3).mean_directions_, forward.tree_at(3).mean_directions_)
    assert smoothed.score(held[1], 1, kind="vmf") > forward.score(held[1], 1, kind="vmf")
    assert smoothed.score(held[1], 1, kind="paper") > forward.score(held[1], 1, kind="paper")
    # the backward passes are in the history, two per refined epoch, and no move was made in them
    backward = dnt.history_[3 * 4:]
    assert [r["time"] for r in backward] == [2, 2, 1, 1] and {r["sweep"] for r in backward} == {"backward"}
    assert {r["sweep"] for r in dnt.history_[:3 * 4]} == {"forward"}
    assert all(r["births"] == r["merges"] == r["moves"] == 0 for r in backward)
    assert dnt.repairs_ == 0 and smoothed.params_["smooth"] == 2


def test_a_list_of_rdds_is_one_rdd_per_epoch(sc, series):
    train = series[0]
    timeline = DNT(**_params(epochs=2)).fit([sc.parallelize(train[t], 2) for t in (1, 2)], id2word=ID2WORD).model_
    assert timeline.times_ == [0, 1] and timeline.tree_at(1).n_nodes_ >= 1


def test_each_epoch_of_time_ordered_pairs_is_spread_over_all_partitions(sc, series):
    # the pairs in time order put epoch 1 in partition 0 alone; its fit must not be one task
    epochs = split_epochs(_pairs(sc, series[0]))
    assert [label for label, _ in epochs] == [1, 2, 3]
    for label, rdd in epochs:
        sizes = rdd.glom().map(len).collect()
        assert len(sizes) == 2 and min(sizes) >= 0.4 * len(series[0][label]), (label, sizes)
        assert sorted(map(str, rdd.collect())) == sorted(map(str, series[0][label]))


def test_history_needs_epochs(sc, series):
    with pytest.raises(ConfigurationError, match="epoch, document"):
        DNT(**_params()).fit(sc.parallelize(series[0][1], 2), id2word=ID2WORD)
    with pytest.raises(ConfigurationError, match="history"):
        DNT(**_params(history=-1)).fit(_pairs(sc, series[0]), id2word=ID2WORD)


def test_the_timeline_saves_loads_draws_and_serialises(fitted, series, tmp_path):
    timeline = fitted[0].model_
    path = tmp_path / "timeline.dd"
    timeline.save(path)
    again = DNTTimeline.load(path)
    assert again.times_ == timeline.times_ and again.events_ == timeline.events_
    for t in timeline.times_:
        np.testing.assert_array_equal(again.nodes_at(t), timeline.nodes_at(t))
        np.testing.assert_array_equal(again.tree_at(t).tree_, timeline.tree_at(t).tree_)
        assert again.score(series[1][t], t) == pytest.approx(timeline.score(series[1][t], t), rel=1e-12)
    with pytest.raises(ConfigurationError, match="DNTTimeline"):
        DNTModel.load(path)
    tree_json = json.loads(json.dumps(timeline.to_json(num_words=3)))
    assert [e["time"] for e in tree_json["epochs"]] == [1, 2, 3]
    assert tree_json["epochs"][0]["tree"]["id"] == 0 and tree_json["epochs"][0]["tree"]["node"] == 0
    figure = timeline.plot_evolution([1, 3])
    assert len(figure.axes) == 2 and "epoch 3" in figure.axes[1].get_title()
    figure.savefig(tmp_path / "evolution.png")
    assert (tmp_path / "evolution.png").stat().st_size > 10_000
    with pytest.raises(ConfigurationError, match="no epoch 7"):
        timeline.tree_at(7)


# -- the pseudo-statistics, without Spark --------------------------------------------------------
def test_pseudo_statistics_are_the_last_means_and_the_windows_counts_and_merges_add_them():
    cap, dim = 6, 5
    tree = Tree(cap)
    a, b = tree.add_child(0), tree.add_child(0)
    q = vi.Globals.empty(cap, dim)
    q.mu[[0, a, b]] = np.eye(dim)[:3]
    q.eta[[0, a, b]] = [1e6, 1e6, 1e6]
    hyper = vi.Hyper(0.5, 0.5, 1.0, 1.0, 10.0, dim, np.eye(dim)[0])
    previous = fit_.FitState(None, hyper, tree, q, {}, None, 0, 1)
    previous.past = [np.array([1.0, 2, 3, 0, 0, 0]), np.array([4.0, 5, 6, 0, 0, 0])]
    current = fit_.FitState(None, hyper, tree.copy(), q.copy(), {}, None, 0, 1)
    history = pseudo_statistics(current, previous, 0.5)
    np.testing.assert_allclose(history.mass, [5, 7, 9, 0, 0, 0])
    np.testing.assert_allclose(history.sums[:3], 0.5 * np.eye(dim)[:3], atol=1e-5)  # A(1e6) ≈ 1 at V = 5
    assert not history.sums[3:].any()
    current.history, current.past = history, [m.copy() for m in previous.past]
    current.ids[[a, b]] = [7, 8]
    fit_._merge_identity(current, a, b)
    np.testing.assert_allclose(current.history.mass, [5, 16, 0, 0, 0, 0])
    np.testing.assert_allclose(current.history.sums[a], 0.5 * (np.eye(dim)[1] + np.eye(dim)[2]), atol=1e-5)
    assert current.past[1][a] == 11 and current.past[1][b] == 0
    assert current.ids[b] == -1 and current.events == [("merge", 8, 7)]


def test_neighbour_statistics_match_slots_by_identity():
    cap, dim = 5, 4
    tree = Tree(cap)
    a, b = tree.add_child(0), tree.add_child(0)
    hyper = vi.Hyper(0.5, 0.5, 1.0, 1.0, 10.0, dim, np.eye(dim)[0])
    fit = fit_.FitState(None, hyper, tree, vi.Globals.empty(cap, dim), {}, None, 0, 1)
    fit.ids[[a, b]] = [7, 9]
    # a neighbour whose nodes come in another order, one of them (id 4) unknown to this tree
    neighbour = DNTModel(np.array([-1, 0, 0, 0]), np.eye(dim), np.full(4, 1e6), np.zeros(4), np.ones(4), 10.0,
                         [f"w{i}" for i in range(dim)])
    history = neighbour_statistics(fit, [(neighbour, np.array([0, 9, 4, 7]))], [{0: 2.0, 7: 3.0, 4: 5.0}, {7: 1.0}],
                                   0.5)
    np.testing.assert_allclose(history.sums[0], 0.5 * np.eye(dim)[0], atol=1e-5)
    np.testing.assert_allclose(history.sums[a], 0.5 * np.eye(dim)[3], atol=1e-5)  # id 7 was the neighbour's node 3
    np.testing.assert_allclose(history.sums[b], 0.5 * np.eye(dim)[1], atol=1e-5)
    assert not history.sums[3:].any()
    np.testing.assert_allclose(history.mass, [2.0, 4.0, 0.0, 0.0, 0.0])
