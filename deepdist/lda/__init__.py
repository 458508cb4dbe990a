"""Latent Dirichlet allocation on deepdist.

Two trainers grow here: AD-LDA, the distributed collapsed Gibbs sampler of Newman et al.
("Distributed Inference for Latent Dirichlet Allocation", NIPS 2007), whose compiled sampling
kernels live in :mod:`deepdist.lda._kernels` behind the Python layer :mod:`deepdist.lda.sampler`;
and online variational Bayes through gensim. Public exports are added as the trainers land;
importing this package stays cheap (no numba compilation, no Spark).
"""
