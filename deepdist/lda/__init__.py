"""Latent Dirichlet allocation on deepdist.

Two trainers grow here: AD-LDA, the distributed collapsed Gibbs sampler of Newman et al.
("Distributed Inference for Latent Dirichlet Allocation", NIPS 2007), whose compiled sampling
kernels live in :mod:`deepdist.lda._kernels` behind the Python layer :mod:`deepdist.lda.sampler`;
and online variational Bayes through gensim. Public exports are added as the trainers land;
importing this package stays cheap (no numba compilation, no Spark).
"""

# -- GibbsLDA (deepdist.lda.gibbs): exported lazily, so importing deepdist.lda stays cheap --------
_GIBBS_EXPORTS = {"GibbsLDA": "gibbs", "GibbsLDAModel": "gibbs_model",
                  "OnlineLDA": "online", "build_dictionary": "dictionary",
                  # deepdist's one vocabulary builder (deepdist.vocabulary), where LDA users look for it
                  "build_vocabulary": "corpus", "Vocabulary": "corpus"}


def __getattr__(name):
    if name in _GIBBS_EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_GIBBS_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
# -- end GibbsLDA -------------------------------------------------------------------------------------
