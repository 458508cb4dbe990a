"""Dependent nonparametric trees (DNT) on deepdist: hierarchical topics on the unit sphere.

The model is Hu, Ho, Dubey & Xing, "Large-scale Distributed Dependent Nonparametric Trees"
(ICML 2015): documents are L2-normalised term-frequency vectors drawn from von Mises-Fisher
distributions whose means sit at the nodes of a tree-structured stick-breaking process.  This
package holds, so far, its numerical foundations:

* :mod:`deepdist.dnt.vmf` — log I_ν, the vMF normaliser, the mean resultant length A_D and its
  inverse, and Wood's vMF sampler (numpy only);
* :mod:`deepdist.dnt.synthetic` — corpora drawn from the model's own generative process, with the
  true tree, for tests.

The DNT estimator (memoized variational inference with birth/merge moves) arrives later.  Nothing
is imported here, so ``import deepdist.dnt`` stays cheap.
"""
