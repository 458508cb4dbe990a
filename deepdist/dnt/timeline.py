"""Dependent trees over time (Hu et al., ICML 2015, section 2): one DNT per epoch, each from the last.

``DNT(history=h).fit(docs)`` with documents that carry an epoch fits the epochs in order. The
tree of epoch t starts as the tree of t−1 (same nodes, same identities, same means) and then
grows, merges and refines on epoch t's documents alone. The dependence enters as
*pseudo-statistics* that the driver adds to the statistics of the epoch's own documents before
every global step (:func:`deepdist.dnt.fit.effective_stats`), never to the server's:

* a node's mean gets the prior factor exp(κ₂ E[θ_{t−1}]ᵀθ) from its own mean of the last epoch,
  which is κ₂/β times that mean added to its Σλx; with the parent's factor this is the paper's
  θ_t ~ vMF(κ₁·θ_parent + κ₂·θ_{t−1}) up to the normaliser, which depends on the parent only;
* its sticks count the documents it held in epochs t−h … t−1: those counts added to Σλ give
  the paper's ν ~ Beta(1 + ΣX, α + ΣY) and ψ ~ Beta(1 + ..., γ + ...).

Because they are statistics, merges add them up and births leave them with the node that had
them, so the bound the moves test stays the one the global step raises. Earlier trees are not
relearned (the paper's forward, online inference).

Example::

    >>> from deepdist.dnt import DNT                                               # doctest: +SKIP
    >>> docs = sc.parallelize([(year, tokens) for year, tokens in titles])      # doctest: +SKIP
    >>> timeline = DNT(history=2, max_nodes=100, epochs=10).fit(docs).model_   # doctest: +SKIP
    >>> timeline.tree_at(1990).show_tree(5)                                       # doctest: +SKIP
    >>> timeline.plot_evolution().savefig("evolution.png")                       # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
import os

import numpy as np

from .. import persist
from ..errors import ConfigurationError
from ..executors import ensure_executors
from ..lda.gibbs_model import plain
from ..session import spark_context
from . import fit as fit_
from . import variational as vi
from .model import DNTModel
from .vmf import mean_resultant_length

__all__ = ["DNTTimeline", "fit_over_time", "split_epochs"]

log = logging.getLogger("deepdist.dnt")

FORMAT = "deepdist.dnt.DNTTimeline/1"


# -- fitting ------------------------------------------------------------------------------------
def split_epochs(docs, spark=None) -> list:
    """``[(epoch, rdd of documents)]`` in order, from a list (or dict) of RDDs, one per epoch, or
    from one RDD (or local list) of ``(epoch, document)`` pairs (each epoch then spread over as
    many partitions as that RDD has)."""
    if isinstance(docs, dict):
        return [(label, docs[label]) for label in sorted(docs)]
    if isinstance(docs, (list, tuple)) and docs and all(hasattr(d, "mapPartitions") for d in docs):
        return list(enumerate(docs))
    if not hasattr(docs, "mapPartitions"):
        docs = list(docs)
        _check_pairs(docs[:1])
        docs = spark_context(spark).parallelize(docs)
    else:
        _check_pairs(docs.take(1))
    labels = sorted(docs.keys().distinct().collect())
    # Pairs usually arrive in time order, so each epoch's documents sit in one or two of the
    # RDD's partitions; a partition is a shard of the fit, and an epoch left as it is would be
    # fitted by one task. Spread each epoch over all the partitions instead.
    width = docs.getNumPartitions()
    return [(label, docs.filter(lambda pair, label=label: pair[0] == label).values().repartition(width))
            for label in labels]


def _check_pairs(first) -> None:
    if first and not (isinstance(first[0], (tuple, list)) and len(first[0]) == 2):
        raise ConfigurationError("DNT(history=...) fits (epoch, document) pairs, or a list of RDDs, one per "
                                 f"epoch; got an element {type(first[0]).__name__} {str(first[0])[:60]!r}")


def fit_over_time(dnt, docs, id2word, heldout):
    """The dependent fit of :meth:`DNT.fit` with ``history`` set (see the module)."""
    epochs = split_epochs(docs, dnt.spark)
    if not epochs:
        raise ConfigurationError("no epoch to fit: the documents are empty")
    first = epochs[0][1]
    ensure_executors(first.context)
    union = first.context.union([rdd for _, rdd in epochs]) if id2word is None else first
    vocabulary = dnt._vocabulary(union, id2word)
    heldout = dict(heldout or {})
    rng = np.random.default_rng(dnt.seed)
    models, ids, events, previous = [], [], [], None
    try:
        for label, rdd in epochs:
            fit = dnt._start(rdd, vocabulary, heldout.get(label), warm=previous)
            if previous is not None:
                fit.past = [mass.copy() for mass in previous.past]
                fit.history = pseudo_statistics(fit, previous, dnt.kappa2 / dnt.beta)
            log.info("DNT epoch %s (%d of %d): %d documents, starting from %d nodes", label, len(models) + 1,
                     len(epochs), fit.num_docs, len(fit.tree))
            dnt._run(fit, rng, time_label=label, extra={"sweep": "forward"} if dnt.smooth else None)
            models.append(dnt.model_)
            _, slots = fit_.compact(fit)
            ids.append(fit.ids[slots].copy())
            events.extend((label,) + event for event in fit.events)
            own = np.zeros(fit.tree.capacity)
            own[slots] = dnt.model_.mass_
            fit.past = (fit.past + [own])[-dnt.history:] if dnt.history else []
            previous = fit
        params = {name: getattr(dnt, name) for name in ("alpha", "gamma", "kappa0", "kappa1", "kappa2", "history",
                                                         "smooth", "max_nodes", "max_depth", "epochs", "seed")}
        times = [label for label, _ in epochs]
        if dnt.smooth and len(epochs) > 1:
            dnt.forward_model_ = DNTTimeline(times, list(models), list(ids), events, params=params)
            _smooth(dnt, epochs, vocabulary, heldout, models, ids, previous)
    except BaseException:
        dnt.__dict__.pop("model_", None)
        raise
    dnt.model_ = DNTTimeline(times, models, ids, events, params=params)
    return dnt


def _smooth(dnt, epochs, vocabulary, heldout, models, ids, last) -> None:
    """The backward sweep of ``DNT(smooth=k)``: epochs T−1 … 1 refined in turn (``models`` and
    ``ids`` replaced in place).

    The forward sweep is filtering: epoch t's means only hear from t−1. The posterior of all the
    epochs' means given all the documents is the smoothing one, where θ_t also hears θ_{t+1} (its
    factor exp(κ₂ θ_tᵀθ_{t+1}) is symmetric in the two). So epoch t starts again from epoch t+1's
    smoothed tree (its structure, identities and means: nodes found later cover epoch t's
    documents too), gets κ₂/β times both neighbours' expected means as pseudo-statistics, its
    sticks the counts of both windows (t−h … t−1 and t+1 … t+h), and runs ``k`` passes that
    refine without structure moves: the tree it ends with is the one it started from, so the
    identities stay aligned.
    """
    sweep = copy.copy(dnt)  # shallow: it shares history_ and the callbacks, so its records are the estimator's
    sweep.epochs, sweep.grow_epochs, sweep.move_candidates = dnt.smooth, 0, 0
    sweep.repairs_, sweep.elbo_trace_ = 0, []
    masses = [dict(zip(i.tolist(), m.mass_.tolist())) for i, m in zip(ids, models)]
    scale = dnt.kappa2 / dnt.beta
    following = last
    try:
        for t in range(len(epochs) - 2, -1, -1):
            label, rdd = epochs[t]
            fit = sweep._start(rdd, vocabulary, heldout.get(label), warm=following)
            neighbours = [(models[t + 1], ids[t + 1])] + ([(models[t - 1], ids[t - 1])] if t else [])
            window = range(max(0, t - dnt.history), min(len(epochs), t + dnt.history + 1)) if dnt.history else ()
            fit.history = neighbour_statistics(fit, neighbours, [masses[u] for u in window if u != t], scale)
            log.info("DNT smoothing epoch %s (%d of %d, backwards): %d documents, %d nodes", label, t + 1,
                     len(epochs), fit.num_docs, len(fit.tree))
            sweep._run(fit, np.random.default_rng([dnt.seed, t]), time_label=label, extra={"sweep": "backward"})
            models[t] = sweep.model_
            _, slots = fit_.compact(fit)
            ids[t] = fit.ids[slots].copy()
            following = fit
    finally:
        dnt.repairs_ += sweep.repairs_
        dnt.elbo_trace_ += sweep.elbo_trace_


def neighbour_statistics(fit, neighbours, window: list, scale: float) -> vi.Stats:
    """Pseudo-statistics for ``fit`` from fitted epochs, matched to its slots by node identity:
    ``scale`` times each ``(model, ids)`` neighbour's expected mean, and the masses of ``window``
    (one ``{id: mass}`` per epoch)."""
    cap, V = fit.tree.capacity, fit.hyper.dim
    slot_of = {int(fit.ids[s]): int(s) for s in fit.tree.active()}
    sums, mass = np.zeros((cap, V)), np.zeros(cap)
    for model, node_ids in neighbours:
        expected = mean_resultant_length(V, model.kappas_)[:, None] * model.mean_directions_
        for e, i in enumerate(node_ids.tolist()):
            if i in slot_of:
                sums[slot_of[i]] += scale * expected[e]
    for epoch in window:
        for i, m in epoch.items():
            if i in slot_of:
                mass[slot_of[i]] += m
    return vi.Stats(mass, sums, np.zeros(cap))


def pseudo_statistics(fit, previous, scale: float) -> vi.Stats:
    """The earlier epochs' statistics for ``fit`` (see the module): per slot, ``scale`` times the
    node's expected mean at the end of ``previous``, and its masses of the window."""
    cap, V = fit.tree.capacity, fit.hyper.dim
    sums = np.zeros((cap, V))
    active = previous.tree.active()
    expected = mean_resultant_length(V, previous.q.eta[active])[:, None] * previous.q.mu[active]
    sums[active] = scale * expected
    mass = np.sum(previous.past, axis=0) if previous.past else np.zeros(cap)
    return vi.Stats(mass, sums, np.zeros(cap))


# -- the fitted series ----------------------------------------------------------------------------
class DNTTimeline:
    """The trees of a dependent DNT fit, one per epoch, whose nodes keep their identity.

    Attributes:
        times_: the epochs, in order.
        models_: one :class:`~deepdist.dnt.model.DNTModel` per epoch (its nodes numbered breadth first).
        node_ids_: per epoch, the identity of each of its tree's nodes (``node_ids_[i][e]``).
        events_: ``(epoch, "birth", node id, parent id)`` and ``(epoch, "merge", gone id, kept id)``.

    Example::

        >>> timeline = DNT(history=2, epochs=10).fit(pairs).model_    # doctest: +SKIP
        >>> timeline.trajectory(0)[-1]["top_words"]                     # doctest: +SKIP
        ['cell', 'protein', ...]
        >>> timeline.births(1995), timeline.merges(1995)               # doctest: +SKIP
    """

    def __init__(self, times, models, node_ids, events=(), *, params=None):
        if not (len(times) == len(models) == len(node_ids)) or not len(times):
            raise ConfigurationError(f"a timeline needs one model and one id array per epoch, got {len(times)} "
                                     f"epochs, {len(models)} models, {len(node_ids)} id arrays")
        self.times_ = list(times)
        self.models_ = list(models)
        self.node_ids_ = [np.asarray(ids, np.int64) for ids in node_ids]
        for model, ids in zip(self.models_, self.node_ids_):
            if ids.shape != (model.n_nodes_,):
                raise ConfigurationError(f"node ids of shape {ids.shape} for a tree of {model.n_nodes_} nodes")
        self.events_ = [tuple(e) for e in events]
        self.params_ = dict(params or {})

    def __repr__(self) -> str:
        sizes = ", ".join(f"{t}: {m.n_nodes_}" for t, m in zip(self.times_, self.models_))
        return f"DNTTimeline({len(self.times_)} epochs; nodes {sizes})"

    def _index(self, time) -> int:
        try:
            return self.times_.index(time)
        except ValueError:
            raise ConfigurationError(f"no epoch {time!r}: the epochs are {self.times_}") from None

    def tree_at(self, time) -> DNTModel:
        """The tree of epoch ``time``."""
        return self.models_[self._index(time)]

    def nodes_at(self, time) -> np.ndarray:
        """The identities of the nodes of epoch ``time``'s tree, in its node order."""
        return self.node_ids_[self._index(time)]

    def trajectory(self, node_id: int, num_words: int = 10) -> list:
        """Node ``node_id`` over the epochs it lives in: one dict per epoch with ``time``,
        ``node`` (its index in that epoch's tree), ``parent`` (the parent's identity, −1 for the
        root), ``mass`` (documents of that epoch), ``share`` (of the epoch's documents) and
        ``top_words``."""
        out = []
        for time, model, ids in zip(self.times_, self.models_, self.node_ids_):
            where = np.flatnonzero(ids == node_id)
            if not where.size:
                continue
            e = int(where[0])
            parent = int(model.tree_[e])
            out.append({"time": time, "node": e, "parent": int(ids[parent]) if parent >= 0 else -1,
                        "mass": float(model.mass_[e]), "share": float(model.mass_[e] / max(model.mass_.sum(), 1e-300)),
                        "top_words": [w for w, _ in model.top_words(e, num_words)]})
        if not out:
            raise ConfigurationError(f"node {node_id} lives in no epoch of this timeline")
        return out

    def births(self, time) -> list:
        """``(node id, parent id)`` of the nodes born in epoch ``time``."""
        self._index(time)
        return [(e[2], e[3]) for e in self.events_ if e[0] == time and e[1] == "birth"]

    def merges(self, time) -> list:
        """``(gone id, kept id)`` of the merges in epoch ``time``."""
        self._index(time)
        return [(e[2], e[3]) for e in self.events_ if e[0] == time and e[1] == "merge"]

    def score(self, docs, time, kind: str = "vmf") -> float:
        """Held-out score per document of ``docs`` under epoch ``time``'s tree
        (:meth:`DNTModel.score`)."""
        return self.tree_at(time).score(docs, kind=kind)

    def to_json(self, num_words: int = 10) -> dict:
        """Every epoch's nested tree (:meth:`DNTModel.to_json`, with ``id`` the node's identity and
        ``node`` its index in that epoch), plus the births and merges."""
        def tag(node, ids):  # the tree's own "id" is the node's index in that epoch
            node["node"], node["id"] = node["id"], int(ids[node["id"]])
            for child in node.get("children", ()):
                tag(child, ids)
            return node

        return {"epochs": [{"time": plain(t), "tree": tag(m.to_json(num_words), ids),
                            "births": [list(map(int, b)) for b in self.births(t)],
                            "merges": [list(map(int, g)) for g in self.merges(t)]}
                           for t, m, ids in zip(self.times_, self.models_, self.node_ids_)]}

    # -- picture --------------------------------------------------------------------------------
    def plot_evolution(self, times=None, num_words: int = 2, max_nodes: int = 25, fig=None):
        """The trees of ``times`` (default: up to four epochs spread over the series) side by
        side: a node keeps its colour across epochs, its label is ``#id`` and its top words,
        nodes born in that epoch have a ``+``; the ``max_nodes`` heaviest nodes per epoch (with
        their ancestors) are drawn. Returns the matplotlib Figure::

            >>> timeline.plot_evolution([1, 5, 10]).savefig("evolution.png")    # doctest: +SKIP
        """
        from matplotlib.figure import Figure
        from matplotlib import colormaps

        if times is None:
            picks = np.unique(np.linspace(0, len(self.times_) - 1, min(4, len(self.times_))).round().astype(int))
            times = [self.times_[i] for i in picks]
        times = list(times)
        for t in times:
            self._index(t)
        palette = colormaps["tab20"]
        if fig is None:
            fig = Figure(figsize=(min(9.0 * len(times), 48.0), 9.0))
        axes = fig.subplots(1, len(times), squeeze=False)[0]
        for ax, time in zip(axes, times):
            model, ids = self.tree_at(time), self.nodes_at(time)
            born = {b for b, _ in self.births(time)}
            colors = [palette(int(i) % 20) for i in ids]

            def label(e, model=model, ids=ids, born=born):
                words = "\n".join(w for w, _ in model.top_words(e, num_words))
                return f"{'+' if ids[e] in born else ''}#{ids[e]}\n{words}"

            model.plot_tree(num_words, ax=ax, max_nodes=max_nodes, colors=colors, label=label,
                            title=f"epoch {time}: {model.n_nodes_} nodes, +{len(born)} born, "
                                  f"-{len(self.merges(time))} merged")
        return fig

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write the timeline to the file ``path`` (:mod:`deepdist.persist`, atomically)."""
        path = os.fspath(path)
        if os.path.isdir(path):
            raise ConfigurationError(f"{path} is a directory; DNTTimeline.save writes one file: give a file name")
        arrays, models = {}, []
        for i, (model, ids) in enumerate(zip(self.models_, self.node_ids_)):
            arrays.update({f"{i}/parents": model.tree_, f"{i}/means": model.mean_directions_,
                           f"{i}/kappas": model.kappas_, f"{i}/log_weights": model.log_weights_,
                           f"{i}/mass": model.mass_, f"{i}/ids": ids})
            models.append({"beta": model.beta, "history": plain(model.history_), "params": plain(model.params_)})
        meta = {"format": FORMAT, "times": plain(self.times_), "models": models,
                "id2word": plain(self.models_[0].id2word), "events": plain([list(e) for e in self.events_]),
                "params": plain(self.params_)}
        persist.write_frame(path, arrays, meta)

    @classmethod
    def load(cls, path) -> "DNTTimeline":
        """Read a timeline written by :meth:`save`."""
        arrays, meta = persist.read_frame(os.fspath(path), expect=FORMAT)
        models, ids = [], []
        for i, info in enumerate(meta["models"]):
            models.append(DNTModel(arrays[f"{i}/parents"], arrays[f"{i}/means"], arrays[f"{i}/kappas"],
                                   arrays[f"{i}/log_weights"], arrays[f"{i}/mass"], info["beta"], meta["id2word"],
                                   history=info.get("history") or (), params=info.get("params")))
            ids.append(arrays[f"{i}/ids"])
        return cls(meta["times"], models, ids, [tuple(e) for e in meta["events"]], params=meta.get("params"))
