"""Held-out scores of directional topic models, and the flat spherical k-means baseline.

A document is its L2-normalised term-frequency vector x (a unit row of a CSR matrix); a node
(or cluster) has a unit mean µ.  Two held-out scores per document:

* :func:`paper_score`: the score of Table 3 of Hu et al. (ICML 2015), β·µ_zᵀx with β = 10⁴ and
  z the document's most probable node.  The vMF normaliser is left out, so it is a scaled
  cosine, not a log-likelihood; it is kept to compare with the paper.
* :func:`vmf_loglik`: the properly normalised log-likelihood of a vMF mixture,
  log Σ_k w_k C_D(κ_k) exp(κ_k µ_kᵀx).

Both take ``x_csr`` as ``(indptr, indices, data)`` or anything with those attributes (a
``scipy.sparse.csr_matrix``).  The products xᵀµ are computed a block of same-length documents
at a time, gathering the means' values of each document's words, so memory stays at one dense
(V × K) copy of the means plus a bounded block, whatever the number of documents.

Example::

    >>> import numpy as np
    >>> from deepdist.dnt.evaluate import paper_score, spherical_kmeans
    >>> x = (np.array([0, 1, 2]), np.array([0, 1]), np.array([1.0, 1.0]))   # two documents, V = 2
    >>> centroids, assignments = spherical_kmeans(x, 2, n_words=2, seed=0)
    >>> paper_score(x, centroids)
    10000.0
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import ConfigurationError, CorpusError

log = logging.getLogger(__name__)

# Upper bound on the floats of one gathered block (nnz of the block × K): 8M floats = 64 MB.
_BLOCK_FLOATS = 8_000_000


def _as_csr(x_csr, n_words: int | None = None, *, unit: bool = True):
    """``(indptr, indices, data, n_words)`` from a tuple or a CSR-like object, validated."""
    if all(hasattr(x_csr, name) for name in ("indptr", "indices", "data")):
        indptr, indices, data = x_csr.indptr, x_csr.indices, x_csr.data
        if n_words is None and getattr(x_csr, "shape", None) is not None:
            n_words = int(x_csr.shape[1])
    else:
        try:
            indptr, indices, data = x_csr
        except (TypeError, ValueError) as err:
            raise ConfigurationError("x_csr must be (indptr, indices, data) or a CSR matrix, "
                                     f"got {type(x_csr).__name__}") from err
    indptr = np.asarray(indptr, dtype=np.int64)
    indices = np.asarray(indices, dtype=np.int64)
    data = np.asarray(data, dtype=np.float64)
    if indptr.ndim != 1 or len(indptr) < 1 or indptr[0] != 0 or np.any(np.diff(indptr) < 0) \
            or indptr[-1] != len(indices) or len(indices) != len(data):
        raise ConfigurationError("x_csr is not a consistent CSR matrix (indptr must start at 0, "
                                 "not decrease, and end at len(indices) == len(data))")
    if n_words is None:
        n_words = int(indices.max()) + 1 if len(indices) else 0
    if len(indices) and (indices.min() < 0 or indices.max() >= n_words):
        raise ConfigurationError(f"x_csr has word ids outside [0, {n_words}) (the dimension V of the means)")
    lengths = np.diff(indptr)
    if np.any(lengths == 0):
        raise CorpusError(f"{int((lengths == 0).sum())} of {len(lengths)} documents have no words "
                          "(the first is row {}); leave empty documents out".format(
                              int(np.flatnonzero(lengths == 0)[0])))
    if unit:
        rows = np.repeat(np.arange(len(lengths)), lengths)
        norms = np.bincount(rows, weights=data * data, minlength=len(lengths))
        bad = np.flatnonzero(np.abs(norms - 1.0) > 1e-6)
        if len(bad):
            raise ConfigurationError(f"x_csr rows must have unit L2 norm (the paper's x); row {bad[0]} "
                                     f"has squared norm {norms[bad[0]]:.6g}")
    return indptr, indices, data, n_words


def _unit_means_t(means, n_words: int, name: str = "means") -> np.ndarray:
    """The transpose (V, K) of ``means`` in float64, C-contiguous, each mean scaled to unit norm.

    One copy of the means, laid out so a word's K values are adjacent for the gathers; zero
    means are refused.
    """
    means = np.asarray(means, dtype=np.float64)
    if means.ndim == 1:
        means = means[None, :]
    if means.ndim != 2 or means.shape[1] != n_words or means.shape[0] < 1:
        raise ConfigurationError(f"{name} must have shape (K >= 1, {n_words}), got {means.shape}")
    norms = np.sqrt(np.einsum("ij,ij->i", means, means))
    if np.any(~np.isfinite(norms)) or np.any(norms == 0):
        raise ConfigurationError(f"{name} rows must be finite and nonzero (a mean direction each)")
    means_t = np.array(means.T, dtype=np.float64, order="C")
    means_t /= norms
    return means_t


def _blocks(indptr: np.ndarray, k: int):
    """Groups of documents of one length: ``(rows, positions)``, ``positions[i, j]`` the j-th entry of ``rows[i]``.

    Grouping by length turns X·Mᵀ into a few whole-block gathers and adds (one per word slot),
    far cheaper than a segmented sum over ragged rows; a block's (rows × k) product stays under
    the memory bound.
    """
    lengths = np.diff(indptr)
    per_block = max(1, _BLOCK_FLOATS // max(k, 1))
    order = np.argsort(lengths, kind="stable")
    bounds = np.flatnonzero(np.diff(lengths[order])) + 1
    for group in np.split(order, bounds):
        length = int(lengths[group[0]])
        for start in range(0, len(group), per_block):
            rows = group[start:start + per_block]
            yield rows, indptr[rows][:, None] + np.arange(length)


def _block_products(indices, data, means_t, positions) -> np.ndarray:
    """X[rows]·Mᵀ for one block of :func:`_blocks`, with ``means_t`` the (V, K) transpose of the means."""
    values = data.astype(means_t.dtype, copy=False)
    out = means_t[indices[positions[:, 0]]] * values[positions[:, 0], None]
    for j in range(1, positions.shape[1]):
        out += means_t[indices[positions[:, j]]] * values[positions[:, j], None]
    return out


def similarities(x_csr, means, *, n_words: int | None = None):
    """Iterate ``(rows, block)`` with ``block = X[rows] · Mᵀ`` (cosines, for unit x and unit means).

    The blocks cover every document once, grouped by length (not in document order).

    Example::

        >>> import numpy as np
        >>> x = (np.array([0, 1]), np.array([1]), np.array([1.0]))
        >>> [(rows.tolist(), blk.tolist()) for rows, blk in similarities(x, np.eye(2))]
        [([0], [[0.0, 1.0]])]
    """
    indptr, indices, data, n_words = _as_csr(x_csr, n_words if n_words is not None
                                             else np.shape(means)[-1])
    yield from _iter_products(indptr, indices, data, _unit_means_t(means, n_words))


def _iter_products(indptr, indices, data, means_t):
    for rows, positions in _blocks(indptr, means_t.shape[1]):
        yield rows, _block_products(indices, data, means_t, positions)


def paper_scores(x_csr, means, beta: float = 1e4, posteriors=None) -> np.ndarray:
    """Per-document β·µ_zᵀx (see :func:`paper_score`); float64 array of length n_docs.

    Example::

        >>> import numpy as np
        >>> x = (np.array([0, 1, 2]), np.array([0, 1]), np.array([1.0, 1.0]))
        >>> paper_scores(x, np.array([[3.0, 4.0]]), beta=10).tolist()
        [6.0, 8.0]
    """
    beta = _positive("beta", beta)
    indptr, indices, data, n_words = _as_csr(x_csr, np.shape(means)[-1])
    means_t = _unit_means_t(means, n_words)
    n_docs = len(indptr) - 1
    if posteriors is None:
        out = np.empty(n_docs, dtype=np.float64)
        for rows, block in _iter_products(indptr, indices, data, means_t):
            out[rows] = block.max(axis=1)
        return beta * out
    posteriors = np.asarray(posteriors, dtype=np.float64)
    if posteriors.shape != (n_docs, means_t.shape[1]):
        raise ConfigurationError(f"posteriors must have shape (n_docs, K) = ({n_docs}, "
                                 f"{means_t.shape[1]}), got {posteriors.shape}")
    z = posteriors.argmax(axis=1)
    rows = np.repeat(np.arange(n_docs), np.diff(indptr))
    return beta * np.bincount(rows, weights=data * means_t[indices, z[rows]], minlength=n_docs)


def paper_score(x_csr, means, beta: float = 1e4, posteriors=None) -> float:
    """The DNTs paper's held-out score: the average over documents of β·µ_zᵀx.

    ``x_csr`` holds unit rows (L2-normalised term frequencies, the paper's x); ``means`` (K, V)
    the node means µ (rescaled to unit norm here).  z is the node of largest posterior when
    ``posteriors`` (n_docs, K) is given, else the node whose mean has the largest cosine with x.
    β (the paper's vMF concentration of documents around their node) is 10⁴ as in the authors'
    code.  With one mean, the data's normalised centroid, this is the score of no structure.

    Example::

        >>> import numpy as np
        >>> x = (np.array([0, 1, 2]), np.array([0, 1]), np.array([1.0, 1.0]))
        >>> paper_score(x, np.array([[1.0, 1.0]]))          # cos 45° for both documents
        7071.067811865475
    """
    return float(paper_scores(x_csr, means, beta, posteriors).mean())


def vmf_loglik(x_csr, means, kappa, weights=None) -> np.ndarray:
    """Per-document log-likelihood under a vMF mixture: log Σ_k w_k C_D(κ_k) exp(κ_k µ_kᵀx).

    D is the vocabulary size (``means.shape[1]``), C_D(κ) the vMF normaliser on the unit sphere
    of R^D (from :func:`deepdist.dnt.vmf.log_vmf_normalizer`), ``kappa`` a scalar or one κ per
    component, ``weights`` the mixture weights (default uniform; they must sum to 1).  For a
    tree, the components are the nodes and the weights their stick-breaking masses.

    Example::

        >>> import numpy as np
        >>> x = (np.array([0, 1]), np.array([0]), np.array([1.0]))
        >>> ll = vmf_loglik(x, np.eye(3)[:2], kappa=10.0)    # doctest: +SKIP
    """
    from .vmf import log_vmf_normalizer

    means = np.asarray(means, dtype=np.float64)
    if means.ndim != 2:
        raise ConfigurationError(f"means must be 2-D (K, V), got shape {means.shape}")
    k, dim = means.shape
    kappa = np.broadcast_to(np.asarray(kappa, dtype=np.float64), (k,)) if np.ndim(kappa) == 0 \
        else np.asarray(kappa, dtype=np.float64)
    if kappa.shape != (k,) or np.any(~np.isfinite(kappa)) or np.any(kappa < 0):
        raise ConfigurationError(f"kappa must be a non-negative scalar or {k} non-negative values, got {kappa!r}")
    if weights is None:
        weights = np.full(k, 1.0 / k)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (k,) or np.any(weights < 0) or abs(weights.sum() - 1.0) > 1e-6:
        raise ConfigurationError(f"weights must be {k} non-negative values summing to 1, "
                                 f"got shape {weights.shape} and sum {weights.sum():.6g}")
    log_c = np.array([float(log_vmf_normalizer(dim, float(c))) for c in kappa])
    with np.errstate(divide="ignore"):
        offset = np.log(weights) + log_c
    indptr, indices, data, _ = _as_csr(x_csr, dim)
    out = np.empty(len(indptr) - 1, dtype=np.float64)
    for rows, block in _iter_products(indptr, indices, data, _unit_means_t(means, dim)):
        logits = offset + kappa * block
        top = logits.max(axis=1)
        out[rows] = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
    return out


def spherical_kmeans(x_csr, k: int, iterations: int = 20, seed: int = 0, *, init: str = "k-means++",
                     n_words: int | None = None):
    """Spherical k-means (Dhillon & Modha, 2001): ``(centroids, assignments)``.

    Each document goes to the unit centroid of largest cosine; each centroid becomes the
    normalised sum of its documents.  Starts from ``k`` distinct documents drawn with ``seed``:
    by k-means++ (each next one with probability ∝ 1 − its largest cosine with those drawn, as
    in Arthur & Vassilvitskii, 2007, for the cosine distance) or uniformly (``init="random"``);
    a cluster left empty takes the document farthest from its own centroid.  Stops after
    ``iterations`` rounds or when no assignment changes.  ``centroids`` is (k, V) float64 with
    unit rows, ``assignments`` int64 per document.

    Example::

        >>> import numpy as np
        >>> x = (np.array([0, 1, 2, 3]), np.array([0, 0, 1]), np.array([1.0, 1.0, 1.0]))
        >>> centroids, assignments = spherical_kmeans(x, 2, n_words=2, seed=1)
        >>> sorted(np.bincount(assignments).tolist())
        [1, 2]
    """
    indptr, indices, data, n_words = _as_csr(x_csr, n_words)
    n_docs = len(indptr) - 1
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n_docs:
        raise ConfigurationError(f"k must be an integer in [1, n_docs={n_docs}], got {k!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 1:
        raise ConfigurationError(f"iterations must be an integer >= 1, got {iterations!r}")
    if init not in ("k-means++", "random"):
        raise ConfigurationError(f"init must be 'k-means++' or 'random', got {init!r}")
    rng = np.random.default_rng(seed)
    entry_doc = np.repeat(np.arange(n_docs), np.diff(indptr))
    start = (_kmeanspp_seeds(indptr, indices, data, entry_doc, n_words, k, rng) if init == "k-means++"
             else rng.choice(n_docs, size=k, replace=False))
    centroids_t = np.zeros((n_words, k), dtype=np.float64)
    for j, d in enumerate(start):
        centroids_t[indices[indptr[d]:indptr[d + 1]], j] = data[indptr[d]:indptr[d + 1]]
    centroids_t /= np.sqrt(np.einsum("ij,ij->j", centroids_t, centroids_t))
    assignments = np.full(n_docs, -1, dtype=np.int64)
    best = np.empty(n_docs, dtype=np.float64)
    blocks = list(_blocks(indptr, k))
    for iteration in range(iterations):
        new = np.empty(n_docs, dtype=np.int64)
        # float32 products: the argmax needs no more, and they halve the memory traffic
        means32 = centroids_t.astype(np.float32)
        for rows, positions in blocks:
            block = _block_products(indices, data, means32, positions)
            new[rows] = block.argmax(axis=1)
            best[rows] = block[np.arange(len(rows)), new[rows]]
        changed = int((new != assignments).sum())
        assignments = new
        log.info("spherical k-means iteration %d: %d assignments changed, mean cosine %.6f",
                 iteration + 1, changed, best.mean())
        if changed == 0:
            break
        sizes = np.bincount(assignments, minlength=k)
        empty = np.flatnonzero(sizes == 0)
        if len(empty):
            # the documents worst served by their centroid seed the empty clusters
            far = np.argsort(best, kind="stable")[:len(empty)]
            assignments[far] = empty
            best[far] = 1.0
        sums = np.bincount(indices * k + assignments[entry_doc], weights=data,
                           minlength=n_words * k)
        centroids_t = sums.reshape(n_words, k)
        norms = np.sqrt(np.einsum("ij,ij->j", centroids_t, centroids_t))
        centroids_t /= np.where(norms > 0, norms, 1.0)
    return np.ascontiguousarray(centroids_t.T), assignments


def _kmeanspp_seeds(indptr, indices, data, entry_doc, n_words, k, rng) -> np.ndarray:
    """k-means++ seeding for the cosine distance: ``k`` distinct document ids."""
    n_docs = len(indptr) - 1
    chosen = np.empty(k, dtype=np.int64)
    chosen[0] = rng.integers(n_docs)
    closest = np.zeros(n_docs)
    dense = np.zeros(n_words)
    for j in range(k):
        if j:
            gap = np.clip(1.0 - closest, 0.0, None)
            gap[chosen[:j]] = 0.0
            total = gap.sum()
            if total > 0:
                chosen[j] = min(int(np.searchsorted(np.cumsum(gap), rng.random() * total, side="right")),
                                n_docs - 1)
            else:  # every document coincides with a seed: draw among the others
                rest = np.setdiff1d(np.arange(n_docs), chosen[:j])
                chosen[j] = rng.choice(rest)
        d = chosen[j]
        words = indices[indptr[d]:indptr[d + 1]]
        dense[words] = data[indptr[d]:indptr[d + 1]]
        np.maximum(closest, np.bincount(entry_doc, weights=data * dense[indices], minlength=n_docs),
                   out=closest)
        dense[words] = 0.0
    return chosen


def _positive(name: str, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError) as err:
        raise ConfigurationError(f"{name} must be a positive number, got {value!r}") from err
    if not np.isfinite(value) or value <= 0:
        raise ConfigurationError(f"{name} must be a positive number, got {value!r}")
    return value
