"""Collapsed Gibbs sampling for LDA: the Python layer over the compiled kernels.

Collapsed Gibbs sampling (Griffiths & Steyvers, "Finding scientific topics", PNAS 2004)
integrates out the topic-word distributions φ (prior β) and the document-topic proportions θ
(prior α) and resamples each token's topic z from

    p(z_i = k | z_-i, w) ∝ (n_dk + α_k) (n_wk + β) / (n_k + Vβ),

where n_dk, n_wk and n_k count the other tokens assigned to topic k in the token's document,
for the token's word, and overall. One *sweep* resamples every token once. The kernel is
SparseLDA (Yao, Mimno & McCallum, KDD 2009), which costs O(#topics of the word) per token once
the counts are sparse rather than O(K), with a vectorised O(K) loop for the first sweeps after
a random start; see :mod:`deepdist.lda._kernels`.

AD-LDA (Newman et al., NIPS 2007) runs sweeps on shards of the documents in parallel, each
against its own copy of the word-topic counts n_wk, and merges the count changes. The pieces a
partition needs are here:

- a partition holds ``doc_offsets`` (int64, D+1), ``words`` and ``topics`` (int32, N);
- :func:`sweep` updates ``topics``, ``doc_topic`` (D, K), ``word_topic`` (V, K) and
  ``topic_totals`` (K,) in place; randomness comes from :func:`derive_seed` (seed, partition,
  iteration), so a partition's sweep is reproducible and a retried task redoes the same work;
- :func:`sparse_delta` turns the assignments before and after some sweeps into the sparse
  int32 change of ``word_topic`` to push, and :func:`apply_sparse_delta` merges one;
- :func:`log_likelihood` scores the training state, :func:`fold_in` infers θ for new
  documents against fixed topics, and :func:`completion_log_likelihood` scores held-out
  documents by document completion.

Example (single process)::

    import numpy as np
    from deepdist.lda import sampler
    from deepdist.lda.synthetic import synthetic_lda_corpus

    docs, true_phi = synthetic_lda_corpus(500, 200, 5, 50, alpha=0.1, beta=0.01, seed=0)
    offsets, words = sampler.pack_documents(docs)
    K, V = 5, 200
    topics = sampler.random_topics(len(words), K, seed=sampler.derive_seed(0, 0, 0))
    word_topic = sampler.counts_from_assignments(words, topics, V, K)
    doc_topic = sampler.doc_topic_from_assignments(offsets, topics, K)
    totals = word_topic.sum(axis=0, dtype=np.int64)
    for it in range(1, 51):
        sampler.sweep(offsets, words, topics, doc_topic, word_topic, totals, 0.1, 0.01,
                      seed=sampler.derive_seed(0, 0, it))
    phi = sampler.topic_word_distribution(word_topic, totals, 0.01)
"""

import math

import numpy as np
from scipy.special import gammaln

from ..errors import ConfigurationError, CorpusError
from . import _delta_kernels, _inference_kernels, _kernels

__all__ = [
    "derive_seed",
    "pack_documents",
    "random_topics",
    "counts_from_assignments",
    "doc_topic_from_assignments",
    "sweep",
    "sparse_delta",
    "apply_sparse_delta",
    "topic_word_distribution",
    "fold_in",
    "completion_log_likelihood",
    "log_likelihood",
    "log_prior_assignments",
    "load_kernels",
]

_MASK64 = (1 << 64) - 1


def _splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


# Dense when the tokens' words average more than this fraction of K non-zero topics.
_DENSE_ABOVE = {"auto": 0.2, "sparse": np.inf, "dense": 0.0}


def derive_seed(seed, partition=0, iteration=0):
    """A 64-bit seed for one (seed, partition, iteration), by chained splitmix64 mixing.

    Each argument goes through a full mixing round, so neighbouring partitions or iterations
    get unrelated streams. Returns a Python int in [0, 2**64).
    """
    for name, value in (("seed", seed), ("partition", partition), ("iteration", iteration)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    x = _splitmix64(int(seed) & _MASK64)
    x = _splitmix64(x ^ (int(partition) & _MASK64))
    return _splitmix64(x ^ (int(iteration) & _MASK64))


def _as_seed(seed):
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    return np.uint64(int(seed) & _MASK64)


def _require(name, a, dtypes, ndim, writable=False):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype not in dtypes:
        allowed = " or ".join(str(np.dtype(t)) for t in dtypes)
        raise TypeError(f"{name} must have dtype {allowed}, got {a.dtype}")
    if a.ndim != ndim:
        raise ConfigurationError(f"{name} must be {ndim}-dimensional, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ConfigurationError(f"{name} must be C-contiguous")
    if writable and not a.flags.writeable:
        raise ConfigurationError(f"{name} must be writable: it is updated in place")


def _alpha_vector(alpha, num_topics):
    a = np.asarray(alpha, dtype=np.float64)
    if a.ndim == 0:
        a = np.full(num_topics, float(a))
    elif a.shape != (num_topics,):
        raise ConfigurationError(f"alpha must be a scalar or have shape ({num_topics},), got shape "
                         f"{a.shape}")
    if not (np.all(np.isfinite(a)) and np.all(a > 0)):
        raise ConfigurationError(f"alpha must be finite and > 0, got {alpha!r}")
    return np.ascontiguousarray(a)


def _beta_scalar(beta):
    b = float(beta)
    if not (np.isfinite(b) and b > 0):
        raise ConfigurationError(f"beta must be finite and > 0, got {beta!r}")
    return b


def _check_corpus(doc_offsets, words, num_words):
    _require("doc_offsets", doc_offsets, (np.int64,), 1)
    _require("words", words, (np.int32,), 1)
    if doc_offsets.shape[0] < 1 or doc_offsets[0] != 0 or doc_offsets[-1] != words.shape[0]:
        raise CorpusError(f"doc_offsets must start at 0 and end at len(words)="
                         f"{words.shape[0]}")
    if doc_offsets.shape[0] > 1 and np.any(np.diff(doc_offsets) < 0):
        raise CorpusError("doc_offsets must be non-decreasing")
    if words.size and (words.min() < 0 or words.max() >= num_words):
        raise CorpusError(f"word ids must lie in [0, {num_words}), got range "
                         f"[{words.min()}, {words.max()}]")


def pack_documents(docs):
    """Flatten an iterable of word-id sequences into ``(doc_offsets int64, words int32)``."""
    arrays = [np.asarray(d, dtype=np.int32).ravel() for d in docs]
    lengths = np.fromiter((a.shape[0] for a in arrays), dtype=np.int64, count=len(arrays))
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    words = np.concatenate(arrays) if arrays else np.zeros(0, np.int32)
    return offsets, np.ascontiguousarray(words, dtype=np.int32)


def random_topics(num_tokens, num_topics, seed):
    """Uniform initial topic assignments (int32) from a 64-bit seed (see :func:`derive_seed`)."""
    if int(num_topics) < 1:
        raise ConfigurationError(f"num_topics must be >= 1, got {num_topics!r}")
    if int(num_tokens) < 0:
        raise ConfigurationError(f"num_tokens must be >= 0, got {num_tokens!r}")
    return _kernels.random_topics(int(num_tokens), int(num_topics), _as_seed(seed))


def counts_from_assignments(words, topics, num_words, num_topics):
    """n_wk: the (num_words, num_topics) int32 word-topic counts implied by the assignments."""
    _require("words", words, (np.int32,), 1)
    _require("topics", topics, (np.int32,), 1)
    if words.shape != topics.shape:
        raise CorpusError(f"words and topics must have equal length, got {words.shape[0]} and "
                         f"{topics.shape[0]}")
    if words.size:
        if words.min() < 0 or words.max() >= num_words:
            raise CorpusError(f"word ids must lie in [0, {num_words})")
        if topics.min() < 0 or topics.max() >= num_topics:
            raise CorpusError(f"topics must lie in [0, {num_topics})")
    return _kernels.word_topic_counts(words, topics, int(num_words), int(num_topics))


def doc_topic_from_assignments(doc_offsets, topics, num_topics):
    """n_dk: the (D, num_topics) int32 document-topic counts implied by the assignments."""
    _require("doc_offsets", doc_offsets, (np.int64,), 1)
    _require("topics", topics, (np.int32,), 1)
    if doc_offsets.shape[0] < 1 or doc_offsets[0] != 0 or doc_offsets[-1] != topics.shape[0]:
        raise CorpusError(f"doc_offsets must start at 0 and end at len(topics)="
                         f"{topics.shape[0]}")
    if topics.size and (topics.min() < 0 or topics.max() >= num_topics):
        raise CorpusError(f"topics must lie in [0, {num_topics})")
    return _kernels.doc_topic_counts(doc_offsets, topics, int(num_topics))


def sweep(doc_offsets, words, topics, doc_topic, word_topic, topic_totals, alpha, beta, seed,
          *, docs=None, method="auto", validate=True):
    """Resample every token's topic once (one collapsed Gibbs sweep), updating counts in place.

    Parameters
    ----------
    doc_offsets : int64 array (D+1,)
        Document d's tokens are ``words[doc_offsets[d]:doc_offsets[d+1]]``.
    words, topics : int32 arrays (N,)
        Word ids and their topic assignments z; ``topics`` is overwritten.
    doc_topic : int32 array (D, K)
        n_dk, consistent with ``topics`` (see :func:`doc_topic_from_assignments`).
    word_topic : int32 array (V, K)
        n_wk, this partition's copy of the shared counts; V sets the Vβ of the conditional.
    topic_totals : int32 or int64 array (K,)
        n_k, the column sums of ``word_topic``.
    alpha : float or float array (K,)
        Document-topic prior α (symmetric scalar or per-topic).
    beta : float
        Topic-word prior β.
    seed : int
        64-bit seed of this sweep, normally ``derive_seed(seed, partition, iteration)``.
    docs : (start, stop), optional
        Only resample documents ``start <= d < stop`` (a mini-batch); default all.
    method : {"auto", "sparse", "dense"}
        "sparse" is SparseLDA, fast once the counts are sparse (after a few dozen sweeps);
        "dense" is the vectorised O(K) loop, faster straight after a random start; "auto"
        picks per call from the mean number of non-zero topics of the tokens' words. All
        three sample the same conditional; only speed and the random stream differ.
    validate : bool
        Check ids and assignments are in range (O(N)). Shapes and dtypes are always checked;
        skip the O(N) part in a loop once the arrays are known to be good.

    Returns
    -------
    int
        How many tokens changed topic.

    Negative counts (which a consistent copy never has) are clamped to zero in the weights,
    so a damaged copy still yields topics in range.
    """
    _require("doc_offsets", doc_offsets, (np.int64,), 1)
    _require("words", words, (np.int32,), 1)
    _require("topics", topics, (np.int32,), 1, writable=True)
    _require("doc_topic", doc_topic, (np.int32,), 2, writable=True)
    _require("word_topic", word_topic, (np.int32,), 2, writable=True)
    _require("topic_totals", topic_totals, (np.int32, np.int64), 1, writable=True)
    num_words, num_topics = word_topic.shape
    num_docs = doc_offsets.shape[0] - 1
    if words.shape != topics.shape:
        raise CorpusError(f"words and topics must have equal length, got {words.shape[0]} and "
                         f"{topics.shape[0]}")
    if doc_topic.shape != (num_docs, num_topics):
        raise ConfigurationError(f"doc_topic must have shape ({num_docs}, {num_topics}), got "
                         f"{doc_topic.shape}")
    if topic_totals.shape != (num_topics,):
        raise ConfigurationError(f"topic_totals must have shape ({num_topics},), got "
                         f"{topic_totals.shape}")
    if num_docs < 0 or doc_offsets[-1] != words.shape[0]:
        raise CorpusError("doc_offsets must end at len(words)")
    alpha = _alpha_vector(alpha, num_topics)
    beta = _beta_scalar(beta)
    try:
        dense_above = _DENSE_ABOVE[method]
    except (KeyError, TypeError) as err:
        raise ConfigurationError(f"method must be one of {sorted(_DENSE_ABOVE)}, got {method!r}") from err
    start, stop = (0, num_docs) if docs is None else (int(docs[0]), int(docs[1]))
    if not 0 <= start <= stop <= num_docs:
        raise ConfigurationError(f"docs must satisfy 0 <= start <= stop <= {num_docs}, got {docs!r}")
    if validate:
        _check_corpus(doc_offsets, words, num_words)
        if topics.size and (topics.min() < 0 or topics.max() >= num_topics):
            raise CorpusError(f"topics must lie in [0, {num_topics})")
    return int(_kernels.sweep(start, stop, doc_offsets, words, topics, doc_topic, word_topic,
                              topic_totals, alpha, beta, _as_seed(seed), dense_above))


def sparse_delta(words, old_topics, new_topics, num_topics):
    """The change of n_wk between two assignments of the same tokens, as sparse COO.

    A partition keeps a copy of ``topics`` from its last push; after one or more sweeps this
    gives the count change to push, in O(N + changed tokens + V) without sorting.

    Returns ``(index, value)``: int64 flat indices into a C-ordered (V, num_topics) table
    (``row, col = divmod(index, num_topics)``), strictly increasing, and int32 non-zero
    values, such that ``counts(new) - counts(old)`` equals the scattered values. The change
    of n_k is implied (``np.bincount(index % num_topics, value)``).
    """
    _require("words", words, (np.int32,), 1)
    _require("old_topics", old_topics, (np.int32,), 1)
    _require("new_topics", new_topics, (np.int32,), 1)
    if not words.shape == old_topics.shape == new_topics.shape:
        raise ConfigurationError("words, old_topics and new_topics must have equal length")
    num_topics = int(num_topics)
    for name, z in (("old_topics", old_topics), ("new_topics", new_topics)):
        if z.size and (z.min() < 0 or z.max() >= num_topics):
            raise ConfigurationError(f"{name} must lie in [0, {num_topics})")
    if words.size and words.min() < 0:
        raise ConfigurationError("word ids must be >= 0")
    return _delta_kernels.sparse_delta(words, old_topics, new_topics, num_topics)


def apply_sparse_delta(word_topic, topic_totals, index, value):
    """Add a coalesced sparse delta (from :func:`sparse_delta`) to n_wk and n_k in place."""
    _require("word_topic", word_topic, (np.int32,), 2, writable=True)
    _require("topic_totals", topic_totals, (np.int32, np.int64), 1, writable=True)
    _require("index", index, (np.int64,), 1)
    _require("value", value, (np.int32,), 1)
    if index.shape != value.shape:
        raise ConfigurationError("index and value must have equal length")
    if index.size and (index.min() < 0 or index.max() >= word_topic.size):
        raise ConfigurationError(f"index must lie in [0, {word_topic.size})")
    _delta_kernels.apply_sparse_delta(word_topic, topic_totals, index, value)


def topic_word_distribution(word_topic, topic_totals, beta):
    """φ as a (K, V) float64 array: φ_kw = (n_wk + β) / (n_k + Vβ), the posterior mean."""
    beta = _beta_scalar(beta)
    num_words = word_topic.shape[0]
    nwk = np.maximum(np.asarray(word_topic, dtype=np.float64), 0.0)
    nk = np.maximum(np.asarray(topic_totals, dtype=np.float64), 0.0)
    return ((nwk + beta) / (nk + num_words * beta)).T.copy()


def _phi_wk(topic_word):
    phi = np.asarray(topic_word, dtype=np.float64)
    if phi.ndim != 2:
        raise ConfigurationError(f"topic_word must be a (K, V) array, got shape {phi.shape}")
    if not (np.all(np.isfinite(phi)) and np.all(phi >= 0)):
        raise ConfigurationError("topic_word must be finite and non-negative")
    # the kernels read one word's K probabilities per token: store them contiguously
    return np.ascontiguousarray(phi.T)


def _check_sampling_schedule(iterations, burn_in):
    if int(iterations) < 1:
        raise ConfigurationError(f"iterations must be >= 1, got {iterations!r}")
    if not 0 <= int(burn_in) < int(iterations):
        raise ConfigurationError(f"burn_in must lie in [0, iterations={iterations}), got {burn_in!r}")


def fold_in(doc_offsets, words, topic_word, alpha, *, iterations=50, burn_in=10, seed=0):
    """Infer θ for documents by Gibbs sampling their topics against fixed topics.

    Each document's topics are resampled ``iterations`` times from
    p(z = k) ∝ (n_dk + α_k) φ_kw; after ``burn_in`` sweeps every sample contributes
    (n_dk + α_k) / (n_d + Σα) to the average returned.

    Parameters
    ----------
    topic_word : (K, V) array
        φ, rows p(w | k) (e.g. :func:`topic_word_distribution`, or another model's topics).
    alpha : float or (K,) array
        The document-topic prior α.

    Returns
    -------
    theta : (D, K) float64, rows sum to 1 (an empty document gets α / Σα).
    """
    phi_wk = _phi_wk(topic_word)
    num_words, num_topics = phi_wk.shape
    alpha = _alpha_vector(alpha, num_topics)
    _check_sampling_schedule(iterations, burn_in)
    _check_corpus(doc_offsets, words, num_words)
    return _inference_kernels.fold_in(doc_offsets, words, phi_wk, alpha, int(iterations), int(burn_in),
                            _as_seed(seed))


def completion_log_likelihood(doc_offsets, words, topic_word, alpha, *, iterations=50,
                              burn_in=10, seed=0):
    """Held-out log-likelihood by document completion (Wallach et al., ICML 2009).

    For each document, θ is folded in (see :func:`fold_in`) on its first ⌊n/2⌋ tokens, and its
    remaining tokens are scored by log Σ_k θ_dk φ_kw.

    Returns
    -------
    (total, num_tokens) : (float, int)
        The summed log-likelihood and the number of scored tokens; the per-token
        log-likelihood is ``total / num_tokens`` and perplexity ``exp(-total / num_tokens)``.
        Totals from several partitions add up.
    """
    phi_wk = _phi_wk(topic_word)
    num_words, num_topics = phi_wk.shape
    alpha = _alpha_vector(alpha, num_topics)
    _check_sampling_schedule(iterations, burn_in)
    _check_corpus(doc_offsets, words, num_words)
    total, count = _inference_kernels.completion_log_likelihood(doc_offsets, words, phi_wk, alpha,
                                                      int(iterations), int(burn_in),
                                                      _as_seed(seed))
    return float(total), int(count)


def log_likelihood(word_topic, topic_totals, beta, *, doc_topic=None, alpha=None):
    """Collapsed log-likelihood of the training state.

    Always log p(w | z) = K[lnΓ(Vβ) - V lnΓ(β)] + Σ_k [Σ_w lnΓ(n_wk + β) - lnΓ(n_k + Vβ)]
    (only non-zero n_wk are visited). With ``doc_topic`` and ``alpha`` also adds
    log p(z) (see :func:`log_prior_assignments`), giving the joint log p(w, z).
    """
    _require("word_topic", word_topic, (np.int32,), 2)
    _require("topic_totals", topic_totals, (np.int32, np.int64), 1)
    if topic_totals.shape != (word_topic.shape[1],):
        raise ConfigurationError(f"topic_totals must have shape ({word_topic.shape[1]},), got "
                         f"{topic_totals.shape}")
    # numpy and scipy, not a compiled kernel: the driver calls this after every job, and the
    # first call of any numba kernel in a process costs about a second of CPU (numba's lazy set-up)
    # that would compete with the tasks for the driver's cores
    beta = _beta_scalar(beta)
    V, K = word_topic.shape
    # lnΓ(β) of the zero counts cancels against the constant: only the non-zero ones are visited
    counts = word_topic[word_topic > 0]
    total = (K * math.lgamma(V * beta) + gammaln(counts + beta).sum() - counts.size * math.lgamma(beta)
             - gammaln(np.maximum(topic_totals, 0) + V * beta).sum())
    if doc_topic is not None:
        if alpha is None:
            raise ConfigurationError("alpha is required with doc_topic")
        total += log_prior_assignments(doc_topic, alpha)
    return float(total)


def log_prior_assignments(doc_topic, alpha):
    """log p(z) = Σ_d [lnΓ(Σα) - lnΓ(n_d + Σα) + Σ_k (lnΓ(n_dk + α_k) - lnΓ(α_k))].

    A sum over documents, so each partition computes its own and the driver adds them.
    """
    _require("doc_topic", doc_topic, (np.int32,), 2)
    alpha = _alpha_vector(alpha, doc_topic.shape[1])
    return float(_inference_kernels.log_likelihood_topics(doc_topic, alpha))


def load_kernels():
    """Compile (or load from numba's cache) every kernel a Gibbs task runs, on a tiny corpus.

    numba compiles a kernel on its first call; :mod:`deepdist.daemon` calls this once so that
    the Python workers it forks start with the kernels loaded. Both sweep methods and the
    int32 and int64 topic totals are covered.
    """
    from .local_counts import LocalCounts  # it builds on the kernels this module wraps

    offsets = np.array([0, 3, 6], np.int64)
    words = np.array([0, 1, 2, 2, 1, 3], np.int32)
    num_words, num_topics = 4, 2
    topics = random_topics(words.size, num_topics, 1)
    word_topic = counts_from_assignments(words, topics, num_words, num_topics)
    doc_topic = doc_topic_from_assignments(offsets, topics, num_topics)
    for totals in (word_topic.sum(axis=0, dtype=np.int64), word_topic.sum(axis=0, dtype=np.int32)):
        for method in ("sparse", "dense"):
            old = topics.copy()
            sweep(offsets, words, topics, doc_topic, word_topic, totals, 0.1, 0.01, 2, method=method)
            index, value = sparse_delta(words, old, topics, num_topics)
            apply_sparse_delta(word_topic.copy(), totals.copy(), index, value)
    for method in ("table", "tokens"):
        local = LocalCounts(words, topics, num_words=num_words, num_topics=num_topics, method=method)
        local.mark_pushed()
        index, value = local.take_unpushed()
        local.merge(index, value)
        local.merge(index.astype(np.int32), value)  # other tasks' changes arrive with int32 indices
    _delta_kernels.topic_totals_delta(index, value, num_topics)
    log_likelihood(word_topic, totals, 0.01, doc_topic=doc_topic, alpha=0.1)
    phi = topic_word_distribution(word_topic, totals, 0.01)
    completion_log_likelihood(offsets, words, phi, 0.1, iterations=2, burn_in=1)
    fold_in(offsets, words, phi, 0.1, iterations=2, burn_in=1)
