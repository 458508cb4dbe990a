"""Dependent nonparametric trees (DNT) on deepdist: hierarchical topics on the unit sphere.

The model is Hu, Ho, Dubey & Xing, "Large-scale Distributed Dependent Nonparametric Trees"
(ICML 2015): documents are L2-normalised term-frequency vectors drawn from von Mises-Fisher
distributions whose means sit at the nodes of a tree-structured stick-breaking process.

* :class:`DNT` (:mod:`deepdist.dnt.estimator`) — the estimator: memoized variational inference
  on Spark with the statistics on the DeepDist server, and births, merges and moves that grow
  the tree; :class:`DNTModel` (:mod:`deepdist.dnt.model`) — the fitted tree;
  :class:`DNTTimeline` (:mod:`deepdist.dnt.timeline`) — dependent trees over epochs (``history=``);
* :mod:`deepdist.dnt.variational` (global step, bound), :mod:`deepdist.dnt.memo` (batches,
  memos, local step), :mod:`deepdist.dnt.moves`, :mod:`deepdist.dnt.tree`, :mod:`deepdist.dnt.fit`, :mod:`deepdist.dnt.plot`;
* :mod:`deepdist.dnt.vmf` — log I_ν, the vMF normaliser, A_D and its inverse, Wood's sampler;
* :mod:`deepdist.dnt.synthetic` — corpora drawn from the model's own generative process;
* :mod:`deepdist.dnt.evaluate` — the paper's score, vMF log-likelihoods, spherical k-means.

The exports are imported lazily, so ``import deepdist.dnt`` stays cheap.

Example::

    >>> from deepdist.dnt import DNT                                         # doctest: +SKIP
    >>> dnt = DNT(max_nodes=100, epochs=20).fit(docs_rdd, id2word=vocabulary)  # doctest: +SKIP
    >>> print(dnt.model_.show_tree(num_words=5))                             # doctest: +SKIP
"""

_EXPORTS = {"DNT": "estimator", "DNTModel": "model", "DNTTimeline": "timeline"}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
