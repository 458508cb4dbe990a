"""Held-out evaluation of topic models by document completion, the same for every trainer.

Any model that gives topics φ (a K × V matrix of p(w | k)) and a document-topic prior α can be
scored, whatever trained it: gensim's online VB, the Gibbs sampler, Spark MLlib, tomotopy.
For each held-out document (Wallach et al., "Evaluation Methods for Topic Models", ICML 2009):

1. θ_d is folded in on the first ⌊n/2⌋ tokens by EM with φ fixed::

       r_ik ∝ θ_dk φ_k,w_i            (E-step, for each token i)
       θ_dk ∝ α_k + Σ_i r_ik           (M-step: the posterior mean of θ_d given r)

2. the remaining tokens are scored: ``Σ_i log Σ_k θ_dk φ_k,w_i``.

Perplexity is ``exp(-total / tokens)``. :func:`deepdist.lda.sampler.completion_log_likelihood`
does step 1 by Gibbs sampling instead of EM; both split documents the same way and return
``(total, tokens)`` so totals from several parts add up.

Example::

    >>> import numpy as np
    >>> phi = np.array([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]])
    >>> total, n = completion_log_likelihood([[0, 1, 0, 1], [2, 3, 3, 2]], phi, alpha=0.1)
    >>> n, round(float(np.exp(-total / n)), 2)
    (4, 2.1)
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigurationError, CorpusError

__all__ = ["completion_log_likelihood", "completion_perplexity", "fold_in_em", "split_documents"]


def _topics_and_prior(topic_word, alpha):
    phi = np.array(topic_word, dtype=np.float64)
    if phi.ndim != 2:
        raise ConfigurationError(f"topic_word must be a (K, V) array, got shape {phi.shape}")
    if not (np.isfinite(phi).all() and (phi >= 0).all()):
        raise ConfigurationError("topic_word must be finite and non-negative")
    totals = phi.sum(axis=1, keepdims=True)
    if (totals <= 0).any():
        raise ConfigurationError("every topic (row of topic_word) needs some mass")
    phi /= totals
    alpha = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (phi.shape[0],)).copy()
    if not (alpha > 0).all():
        raise ConfigurationError(f"alpha must be > 0, got {alpha}")
    return phi, alpha


def split_documents(docs):
    """``(first halves, second halves)``: the first ⌊n/2⌋ tokens of each document, and the rest."""
    docs = [np.asarray(doc, dtype=np.int64).ravel() for doc in docs]
    return [doc[: len(doc) // 2] for doc in docs], [doc[len(doc) // 2:] for doc in docs]


def _counts(docs, num_words):
    """A (documents × V) CSR matrix of token counts."""
    lengths = np.array([len(doc) for doc in docs], dtype=np.int64)
    rows = np.repeat(np.arange(len(docs)), lengths)
    cols = np.concatenate(docs) if len(docs) else np.zeros(0, np.int64)
    if len(cols) and (cols.min() < 0 or cols.max() >= num_words):
        raise CorpusError(f"word ids must lie in [0, {num_words}), got [{cols.min()}, {cols.max()}]")
    import scipy.sparse as sp  # here, not at the top: Spark tasks import this module without needing it

    matrix = sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(len(docs), num_words))
    matrix.sum_duplicates()
    return matrix


def _pointwise(theta, phi_t, counts):
    """``p[j] = θ[row_j] · φ[:, col_j]`` for each non-zero j of ``counts``."""
    rows = np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))
    return np.einsum("ij,ij->i", theta[rows], phi_t[counts.indices])


def fold_in_em(docs, topic_word, alpha, *, iterations: int = 100, tol: float = 1e-6):
    """θ for each document, by EM with the topics fixed (see the module docstring).

    Returns a (D, K) float64 array whose rows sum to 1; a document without tokens gets α / Σα.
    """
    phi, alpha = _topics_and_prior(topic_word, alpha)
    return _fold_in(_counts(list(docs), phi.shape[1]), phi.T.copy(), alpha, iterations, tol)


def _fold_in(counts, phi_t, alpha, iterations, tol):
    theta = np.full((counts.shape[0], phi_t.shape[1]), 1.0 / phi_t.shape[1])
    if counts.nnz == 0:
        return np.tile(alpha / alpha.sum(), (counts.shape[0], 1))
    for _ in range(int(iterations)):
        ratio = counts.copy()
        ratio.data = counts.data / np.maximum(_pointwise(theta, phi_t, counts), 1e-300)
        new = alpha + theta * (ratio @ phi_t)
        new /= new.sum(axis=1, keepdims=True)
        change = np.abs(new - theta).max()
        theta = new
        if change < tol:
            break
    return theta


def completion_log_likelihood(docs, topic_word, alpha, *, iterations: int = 100, tol: float = 1e-6,
                              batch_docs: int = 512):
    """Held-out log-likelihood of ``docs`` by document completion (see the module docstring).

    Parameters:
        docs: held-out documents, each a sequence of word ids in reading order.
        topic_word: φ, a (K, V) array; rows are normalised here (so λ works too).
        alpha: α, a float or a (K,) array (in gensim: ``model.alpha``).
        iterations, tol: EM stops after ``iterations`` or when no θ entry moves by ``tol``.
        batch_docs: documents folded in together (memory ~ batch non-zeros × K floats).

    Returns:
        ``(total, tokens)``: the summed log-likelihood of the second halves and their length.
    """
    phi, alpha = _topics_and_prior(topic_word, alpha)
    phi_t = phi.T.copy()
    firsts, seconds = split_documents(docs)
    total, tokens = 0.0, 0
    for start in range(0, len(firsts), batch_docs):
        first = _counts(firsts[start:start + batch_docs], phi.shape[1])
        second = _counts(seconds[start:start + batch_docs], phi.shape[1])
        theta = _fold_in(first, phi_t, alpha, iterations, tol)
        p = _pointwise(theta, phi_t, second)
        total += float(np.dot(second.data, np.log(np.maximum(p, 1e-300))))
        tokens += int(second.data.sum())
    return total, tokens


def completion_perplexity(docs, topic_word, alpha, **options) -> float:
    """``exp(-total / tokens)`` of :func:`completion_log_likelihood`."""
    total, tokens = completion_log_likelihood(docs, topic_word, alpha, **options)
    if tokens == 0:
        raise CorpusError("the held-out documents have no tokens to score")
    return float(np.exp(-total / tokens))
