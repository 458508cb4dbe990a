"""Compiled kernels for collapsed Gibbs sampling of LDA (private; see :mod:`.sampler`).

The sampler is SparseLDA (Yao, Mimno & McCallum, "Efficient Methods for Topic Model Inference
on Streaming Document Collections", KDD 2009). The collapsed Gibbs conditional of one token
``i`` of word ``w`` in document ``d``, with the token's own counts removed, is

    p(z_i = k | rest) ∝ (n_dk + α_k) (n_wk + β) / (n_k + Vβ)

and SparseLDA splits it into three buckets whose sum is the same unnormalised mass:

    s_k = α_k β / (n_k + Vβ)              dense but tiny; its sum s changes O(1) per token
    r_k = n_dk β / (n_k + Vβ)             non-zero only for the document's topics
    q_k = n_wk (n_dk + α_k) / (n_k + Vβ)  non-zero only for the word's topics

Only ``q`` is summed afresh per token, over the word's non-zero topics; ``s`` and ``r`` are
kept up to date incrementally, as is the coefficient ``(n_dk + α_k) / (n_k + Vβ)`` used by
``q``. With β small most of the mass sits in ``q``, and after burn-in a word has few topics,
so a token costs a handful of operations instead of the O(K) textbook loop. As in MALLET, each
word's non-zero counts are kept during a sweep as a short (topic, count) list sorted by count
(:mod:`._word_lists`), so the hot loop reads a few contiguous integers per token rather than a
(V, K) table.

Straight after a random start the counts are not sparse (every word has most topics), and
there the plain O(K) loop, which LLVM vectorises, beats SparseLDA's bookkeeping; :func:`sweep`
measures the mean list length and runs that loop until the counts have thinned out. Both
sample the same conditional.

Layout: a partition's documents are flat arrays, ``doc_offsets`` (int64, D+1), ``words`` and
``topics`` (int32, N). ``word_topic`` is (V, K) int32 row-major, so one word's counts share a
few cache lines; ``doc_topic`` (D, K) int32; ``topic_totals`` (K,) int32 or int64.

Tokens are visited in document order, so each token's word row (or list) is a random access
into a table that need not fit in cache; both loops issue LLVM prefetch hints a few tokens
ahead (``_prefetch``), which keeps throughput at large vocabularies close to that at small ones.

Randomness is a xorshift64* generator (Vigna, "An experimental exploration of Marsaglia's
xorshift generators, scrambled", 2016) held in a local uint64, seeded by the caller through
splitmix64, so a kernel call is a pure function of its inputs and its seed.

Every function here takes arrays and scalars only; validation lives in :mod:`.sampler`.
"""

import numpy as np
from numba import njit

from ._word_lists import (_AHEAD, _FASTMATH, _build_word_lists, _prefetch,
                          _prefetch_word_list, _store_word_lists, _sweep_piece, _token_step,
                          _word_list_add, _word_list_layout, _word_list_remove,
                          _words_of_range)

_S11 = np.uint64(11)
_S12 = np.uint64(12)
_S25 = np.uint64(25)
_S27 = np.uint64(27)
_S30 = np.uint64(30)
_S31 = np.uint64(31)
_XS_MUL = np.uint64(0x2545F4914F6CDD1D)
_SM_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_SM_M1 = np.uint64(0xBF58476D1CE4E5B9)
_SM_M2 = np.uint64(0x94D049BB133111EB)
_INV_2_53 = 1.0 / 9007199254740992.0


@njit(cache=True, nogil=True)
def _splitmix64(x):
    """One splitmix64 step: a bijective, well-mixed uint64 -> uint64 map."""
    z = x + _SM_GAMMA
    z = (z ^ (z >> _S30)) * _SM_M1
    z = (z ^ (z >> _S27)) * _SM_M2
    return z ^ (z >> _S31)


@njit(cache=True, nogil=True, inline="always")
def _next(state):
    # xorshift64*: the multiply scrambles the weak low bits; we keep the top 53.
    state ^= state >> _S12
    state ^= state << _S25
    state ^= state >> _S27
    return state


@njit(cache=True, nogil=True, inline="always")
def _uniform(state):
    return float((state * _XS_MUL) >> _S11) * _INV_2_53


@njit(cache=True, nogil=True)
def _seed_state(seed):
    # xorshift must not start at 0, and nearby seeds must not give nearby streams.
    state = _splitmix64(seed)
    if state == 0:
        state = _SM_GAMMA
    return state


# ---- counts --------------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def word_topic_counts(words, topics, num_words, num_topics):
    out = np.zeros((num_words, num_topics), np.int32)
    for i in range(words.shape[0]):
        out[words[i], topics[i]] += 1
    return out


@njit(cache=True, nogil=True)
def doc_topic_counts(doc_offsets, topics, num_topics):
    num_docs = doc_offsets.shape[0] - 1
    out = np.zeros((num_docs, num_topics), np.int32)
    for d in range(num_docs):
        for i in range(doc_offsets[d], doc_offsets[d + 1]):
            out[d, topics[i]] += 1
    return out


@njit(cache=True, nogil=True)
def random_topics(n, num_topics, seed):
    state = _seed_state(seed)
    out = np.empty(n, np.int32)
    for i in range(n):
        state = _next(state)
        t = np.int32(_uniform(state) * num_topics)
        if t >= num_topics:  # u * K can round up to K when u is within an ulp of 1
            t = num_topics - 1
        out[i] = t
    return out


# ---- pieces shared by both sweeps ----------------------------------------------------------
# Per-token steps are _token_step and per-sweep pieces _sweep_piece, compiled as
# :mod:`._word_lists` explains, so that the pieces cost nothing against one hand-written loop.

@_sweep_piece
def _inverse_totals(topic_totals, vbeta):
    """1/(n_k + Vβ) per topic, the factor every weight of the conditional shares."""
    inv = np.empty(topic_totals.shape[0], np.float64)
    for k in range(topic_totals.shape[0]):
        inv[k] = 1.0 / (max(topic_totals[k], 0) + vbeta)
    return inv


@_token_step
def _draw_cumulative(weights, u):
    """The first k whose running sum of ``weights`` passes u (the last one if rounding misses)."""
    acc = 0.0
    for k in range(weights.shape[0]):
        acc += weights[k]
        if acc > u:
            return k
    return weights.shape[0] - 1


# ---- the dense O(K) sweep ------------------------------------------------------------------

@_token_step
def _count_dense(d, w, k, delta, doc_topic, word_topic, topic_totals, inv, vbeta):
    """Add (delta=+1) or remove (-1) one token of word w in document d to or from topic k."""
    doc_topic[d, k] += delta
    word_topic[w, k] += delta
    topic_totals[k] += delta
    inv[k] = 1.0 / (max(topic_totals[k], 0) + vbeta)


@_token_step
def _dense_weights(p, d, w, doc_topic, word_topic, alpha, beta, inv):
    """Fill p with the unnormalised conditional of a token of w in d; return its sum."""
    total = 0.0
    for k in range(p.shape[0]):
        x = (max(doc_topic[d, k], 0) + alpha[k]) * (max(word_topic[w, k], 0) + beta) * inv[k]
        p[k] = x
        total += x
    return total


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _sweep_dense(doc_start, doc_stop, doc_offsets, words, topics, doc_topic, word_topic,
                 topic_totals, alpha, beta, seed):
    """The textbook O(K) sweep, for when the word-topic counts are not yet sparse.

    Right after a random start every word has most topics, SparseLDA's lists are K long and
    its bookkeeping costs more than this loop, which LLVM vectorises (no branches, no
    indirection). Same conditional, so the two may alternate freely between sweeps.
    """
    num_words, K = word_topic.shape
    vbeta = num_words * beta
    inv = _inverse_totals(topic_totals, vbeta)
    p = np.empty(K, np.float64)
    state = _seed_state(seed)
    changed = 0
    last_tok = max(doc_offsets[doc_stop] - 1, 0)
    for d in range(doc_start, doc_stop):
        for i in range(doc_offsets[d], doc_offsets[d + 1]):
            w = words[i]
            t = topics[i]
            wa = words[min(i + _AHEAD, last_tok)]
            for kk in range(0, K, 16):
                _prefetch(word_topic, wa, kk)
            _count_dense(d, w, t, -1, doc_topic, word_topic, topic_totals, inv, vbeta)
            total = _dense_weights(p, d, w, doc_topic, word_topic, alpha, beta, inv)
            state = _next(state)
            new = _draw_cumulative(p, _uniform(state) * total)
            _count_dense(d, w, new, 1, doc_topic, word_topic, topic_totals, inv, vbeta)
            changed += new != t
            topics[i] = new
    return changed


# ---- SparseLDA: the document's topics and the three buckets --------------------------------
# The document's non-zero topics are kept as a list dnz[:nd] with positions dpos for O(1)
# removal; dpos[k] >= 0 iff k is listed, which keeps the list free of duplicates even if
# doc_topic disagrees with topics. coef_k = (n_dk + α_k)/(n_k + Vβ) is kept for every k: α_k
# inv_k off the document's topics, and restored to that when the document is done.

@_token_step
def _list_doc_topic(k, nd, dnz, dpos):
    dnz[nd] = k
    dpos[k] = nd
    return nd + 1


@_token_step
def _unlist_doc_topic(k, nd, dnz, dpos):
    p = dpos[k]
    nd -= 1
    last = dnz[nd]
    dnz[p] = last
    dpos[last] = p
    dpos[k] = -1
    return nd


@_token_step
def _open_document(d, lo, hi, topics, doc_topic, alpha, beta, inv, coef, dnz, dpos):
    """List document d's topics and set their coef; return (nd, r).

    The topics come from the document's tokens (O(n_d), not O(K)); r is summed afresh per
    document, so its floating-point drift never outlives one document.
    """
    nd = 0
    r = 0.0
    for i in range(lo, hi):
        k = topics[i]
        c = doc_topic[d, k]
        if c > 0 and dpos[k] < 0:
            nd = _list_doc_topic(k, nd, dnz, dpos)
            r += c * inv[k]
            coef[k] = (c + alpha[k]) * inv[k]
    return nd, r * beta


@_token_step
def _close_document(nd, dnz, dpos, alpha, inv, coef):
    for j in range(nd):
        k = dnz[j]
        coef[k] = alpha[k] * inv[k]
        dpos[k] = -1


@_token_step
def _smoothing_mass(alpha, beta, inv):
    """s = β Σ_k α_k/(n_k + Vβ), summed afresh."""
    s = 0.0
    for k in range(alpha.shape[0]):
        s += alpha[k] * inv[k]
    return s * beta


@_token_step
def _count_sparse(d, k, delta, doc_topic, topic_totals, alpha, beta, vbeta, inv, coef, s, r):
    """Add (delta=+1) or remove (-1) one token of document d to or from topic k.

    Keeps inv_k, coef_k and the bucket masses s and r in step with the changed n_dk and n_k
    (clamped at 0 in the weights, like every count); returns (new n_dk, s, r).
    """
    ndk = doc_topic[d, k] + delta
    doc_topic[d, k] = ndk
    nk = topic_totals[k] + delta
    topic_totals[k] = nk
    old_inv = inv[k]
    new_inv = 1.0 / (max(nk, 0) + vbeta)
    inv[k] = new_inv
    s += beta * alpha[k] * (new_inv - old_inv)
    ndk_c = max(ndk, 0)
    r += beta * (ndk_c * new_inv - max(ndk - delta, 0) * old_inv)
    coef[k] = (ndk_c + alpha[k]) * new_inv
    return ndk, s, r


@_token_step
def _word_mass(wl, base, L, coef, qcum):
    """q = Σ over the word's topics of n_wk coef_k, with its running sums in qcum[:L]."""
    q = 0.0
    for j in range(L):
        q += coef[wl[base + j, 0]] * wl[base + j, 1]
        qcum[j] = q
    return q


@_token_step
def _draw_sparse(u, q, r, d, doc_topic, alpha, beta, inv, dnz, nd, wl, base, L, qcum):
    """The topic that u ∈ [0, q + r + s) falls on, and its row in the word's list (-1 if the
    draw did not read the list)."""
    if u < q:
        j = 0
        while j < L - 1 and qcum[j] <= u:
            j += 1
        return np.int64(wl[base + j, 0]), j
    u -= q
    if u < r and nd > 0:
        acc = 0.0
        for j in range(nd):
            k = dnz[j]
            acc += beta * doc_topic[d, k] * inv[k]
            if acc > u:
                return np.int64(k), -1
        return np.int64(dnz[nd - 1]), -1
    u -= r
    acc = 0.0
    for k in range(alpha.shape[0]):
        acc += beta * alpha[k] * inv[k]
        if acc > u:
            return k, -1
    return alpha.shape[0] - 1, -1


# ---- the SparseLDA sweep -------------------------------------------------------------------

@_sweep_piece
def _sweep_sparse(doc_start, doc_stop, doc_offsets, words, topics, doc_topic, word_topic,
                  topic_totals, alpha, beta, seed, wmeta, wl):
    """SparseLDA over the word lists (wmeta, wl) built by :func:`sweep`."""
    num_words, K = word_topic.shape
    vbeta = num_words * beta
    inv = _inverse_totals(topic_totals, vbeta)
    coef = alpha * inv
    dnz = np.empty(K, np.int32)
    dpos = np.full(K, -1, np.int32)
    qcum = np.empty(K, np.float64)
    # s changes O(1) per token and is updated so; it is re-summed every ~K tokens so that
    # floating-point drift stays bounded without an O(K) cost per short document.
    s = _smoothing_mass(alpha, beta, inv)
    since_resum = 0
    state = _seed_state(seed)
    changed = 0
    last_tok = max(doc_offsets[doc_stop] - 1, 0)
    for d in range(doc_start, doc_stop):
        lo = doc_offsets[d]
        hi = doc_offsets[d + 1]
        if lo == hi:
            continue
        if since_resum >= K:
            s = _smoothing_mass(alpha, beta, inv)
            since_resum = 0
        since_resum += hi - lo
        nd, r = _open_document(d, lo, hi, topics, doc_topic, alpha, beta, inv, coef, dnz, dpos)
        for i in range(lo, hi):
            w = words[i]
            t = topics[i]
            _prefetch_word_list(words, i, last_tok, wmeta, wl)
            ndt, s, r = _count_sparse(d, t, -1, doc_topic, topic_totals, alpha, beta, vbeta,
                                      inv, coef, s, r)
            if ndt == 0 and dpos[t] >= 0:
                nd = _unlist_doc_topic(t, nd, dnz, dpos)
                if nd == 0:
                    r = 0.0  # exact: no document topics left
            base, L = _word_list_remove(w, t, word_topic, wmeta, wl)
            q = _word_mass(wl, base, L, coef, qcum)
            state = _next(state)
            u = _uniform(state) * (s + r + q)
            new, jnew = _draw_sparse(u, q, r, d, doc_topic, alpha, beta, inv, dnz, nd, wl,
                                     base, L, qcum)
            ndk, s, r = _count_sparse(d, new, 1, doc_topic, topic_totals, alpha, beta, vbeta,
                                      inv, coef, s, r)
            if ndk > 0 and dpos[new] < 0:
                nd = _list_doc_topic(new, nd, dnz, dpos)
            _word_list_add(w, new, jnew, base, L, word_topic, wmeta, wl)
            changed += new != t
            topics[i] = new
        _close_document(nd, dnz, dpos, alpha, inv, coef)
    return changed


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def sweep(doc_start, doc_stop, doc_offsets, words, topics, doc_topic, word_topic,
          topic_totals, alpha, beta, seed, dense_above):
    """Resample every token of documents [doc_start, doc_stop) once, in place.

    Runs the dense O(K) loop when the tokens' words have on average more than
    ``dense_above * K`` non-zero topics (measured here, in the set-up SparseLDA needs anyway),
    else SparseLDA. ``dense_above`` 0 forces dense, ``inf`` forces sparse.
    Returns the number of tokens whose topic changed.
    """
    num_words, K = word_topic.shape
    tok_lo = doc_offsets[doc_start]
    tok_hi = doc_offsets[doc_stop]
    local, uniq = _words_of_range(words, tok_lo, tok_hi, num_words)
    wmeta, size, weighted_nnz = _word_list_layout(word_topic, uniq, local)
    # Dense wins while words still carry a sizeable share of the K topics, a share that falls
    # as K grows; the caller's dense_above sets the crossover.
    if weighted_nnz >= dense_above * K * (tok_hi - tok_lo):
        return _sweep_dense(doc_start, doc_stop, doc_offsets, words, topics, doc_topic,
                            word_topic, topic_totals, alpha, beta, seed)
    wl = _build_word_lists(word_topic, uniq, wmeta, size)
    changed = _sweep_sparse(doc_start, doc_stop, doc_offsets, words, topics, doc_topic,
                            word_topic, topic_totals, alpha, beta, seed, wmeta, wl)
    _store_word_lists(word_topic, uniq, wmeta, wl)
    return changed
