"""Synthetic corpora drawn from LDA's generative process, with the true topics returned.

The generative process (Blei, Ng & Jordan, "Latent Dirichlet Allocation", JMLR 2003):

    φ_k ~ Dirichlet(β)            for each topic k            (topic-word distributions)
    θ_d ~ Dirichlet(α)            for each document d         (document-topic proportions)
    z_di ~ Categorical(θ_d),  w_di ~ Categorical(φ_{z_di})   for each token i of d

Tests plant topics this way and check that training recovers them; benchmarks use it to
compare samplers on a corpus whose answer is known.

>>> docs, topic_word = synthetic_lda_corpus(100, 50, 5, 20, alpha=0.1, beta=0.01, seed=0)
>>> len(docs), topic_word.shape
(100, (5, 50))
"""

import numpy as np

from ..errors import ConfigurationError

__all__ = ["synthetic_lda_corpus", "topic_recovery"]


def _dirichlet(rng, concentration, size, dim):
    # numpy's Dirichlet can return an all-zero (then NaN) row for tiny concentrations; such a
    # row is a point mass in the limit, so put the mass on one random coordinate.
    out = rng.dirichlet(np.full(dim, concentration), size=size)
    bad = ~np.isfinite(out).all(axis=1) | (out.sum(axis=1) <= 0)
    if bad.any():
        out[bad] = 0.0
        out[bad, rng.integers(dim, size=int(bad.sum()))] = 1.0
    return out / out.sum(axis=1, keepdims=True)


def synthetic_lda_corpus(n_docs, vocab_size, num_topics, doc_length, alpha, beta, seed,
                         *, poisson_lengths=False):
    """Draw a corpus from LDA.

    Parameters
    ----------
    n_docs, vocab_size, num_topics : int
        D, V and K.
    doc_length : int
        Tokens per document; with ``poisson_lengths=True`` the mean of a Poisson length
        (documents that draw length 0 are kept, empty).
    alpha, beta : float
        Symmetric Dirichlet concentrations per component: α for θ_d, β for φ_k.
    seed : int
        Seed of the ``numpy.random.Generator``; the corpus is a pure function of all arguments.

    Returns
    -------
    docs : list of int32 arrays
        Word ids per document.
    topic_word : ndarray (num_topics, vocab_size), float64
        The true φ; rows sum to 1.
    """
    for name, value in (("n_docs", n_docs), ("vocab_size", vocab_size),
                        ("num_topics", num_topics)):
        if int(value) < 1:
            raise ConfigurationError(f"{name} must be >= 1, got {value!r}")
    if doc_length < 0:
        raise ConfigurationError(f"doc_length must be >= 0, got {doc_length!r}")
    if not (alpha > 0 and beta > 0):
        raise ConfigurationError(f"alpha and beta must be > 0, got alpha={alpha!r}, beta={beta!r}")
    rng = np.random.default_rng(seed)
    topic_word = _dirichlet(rng, beta, num_topics, vocab_size)
    theta = _dirichlet(rng, alpha, n_docs, num_topics)
    if poisson_lengths:
        lengths = rng.poisson(doc_length, size=n_docs)
    else:
        lengths = np.full(n_docs, int(doc_length))
    # z for all tokens: per-document topic counts, laid out topic by topic
    counts = np.stack([rng.multinomial(n, p) for n, p in zip(lengths, theta)])
    z = np.repeat(np.tile(np.arange(num_topics), n_docs), counts.ravel())
    # w | z for all tokens at once: shifting row k's CDF by k makes the stacked CDFs one
    # increasing array, so a single searchsorted samples every token from its own topic.
    cdf = np.cumsum(topic_word, axis=1)
    cdf[:, -1] = 1.0
    cdf += np.arange(num_topics)[:, None]
    u = rng.random(z.shape[0]) + z
    flat = np.searchsorted(cdf.ravel(), u, side="right")
    words = (flat - z * vocab_size).clip(0, vocab_size - 1).astype(np.int32)
    # tokens of a document were generated grouped by topic; shuffle within each document so
    # that position carries no information (document completion splits by position)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    docs = []
    for d in range(n_docs):
        doc = words[offsets[d]:offsets[d + 1]].copy()
        rng.shuffle(doc)
        docs.append(doc)
    return docs, topic_word


def topic_recovery(true_topic_word, learned_topic_word):
    """Mean over true topics of the best cosine similarity with any learned topic.

    Both arguments are (topics, V) arrays over the same vocabulary (rows need not sum to 1).
    """
    a = np.asarray(true_topic_word, dtype=np.float64)
    b = np.asarray(learned_topic_word, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ConfigurationError(f"expected two (topics, V) arrays with equal V, got {a.shape} and "
                         f"{b.shape}")
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-300)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-300)
    return float((a @ b.T).max(axis=1).mean())
