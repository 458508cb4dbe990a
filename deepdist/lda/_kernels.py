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
word's non-zero counts are kept during a sweep as a short (topic, count) list sorted by count,
so the hot loop reads a few contiguous integers per token rather than a (V, K) table.

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
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# fastmath lets LLVM reassociate the O(K) reductions; nothing here relies on NaN/inf semantics
# because α, β > 0 keep every weight finite and positive.
_FASTMATH = True

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
_AHEAD = 8  # tokens between a prefetch and the use of what it fetched


@intrinsic
def _prefetch(typingctx, arr, i, j):
    """Hint the CPU to fetch ``arr[i, j]`` into cache (LLVM's prefetch; no load, no fault)."""
    sig = types.void(arr, i, j)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        index = [context.cast(builder, v, t, types.intp)
                 for v, t in zip(args[1:], signature.args[1:])]
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, index, wraparound=False)
        i8p = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i8p] + [ir.IntType(32)] * 3)
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        const = [ir.Constant(ir.IntType(32), v) for v in (0, 3, 1)]  # read, keep, data
        builder.call(fn, [builder.bitcast(ptr, i8p)] + const)
        return context.get_dummy_value()

    return sig, codegen


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

# How the pieces compile, so that the split costs nothing against one hand-written loop:
#
# - A per-token step is inlined by LLVM (forceinline) into the loop that calls it, and runs
#   without Numba's reference counting (_nrt=False; it allocates nothing and its arrays belong
#   to the caller). Inlined by Numba instead (inline="always"), each array it takes would be
#   bound to a new name with a reference counted for it: an atomic add and subtract per array
#   per token, which Numba cannot prune across the helper's own loops.
# - The pieces of one sweep are spliced into :func:`sweep` by Numba (inline="always", once per
#   sweep, so their reference counts cost nothing). The arrays they allocate (the word lists,
#   1/(n_k + Vβ), ...) are then fresh allocations of the function that runs the loop, which
#   LLVM knows alias nothing else and have a constant row length; passed in as arguments, they
#   would make it reload and recompute addresses in the loop.
_token_step = njit(cache=True, nogil=True, fastmath=_FASTMATH, _nrt=False, forceinline=True)
_sweep_piece = njit(cache=True, nogil=True, fastmath=_FASTMATH, inline="always")


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


# ---- SparseLDA: the per-word (topic, count) lists ------------------------------------------
# During a sparse sweep each word of the range keeps its topics with n_wk > 0 as rows
# (topic, count) of ``wl``, sorted by decreasing count as in MALLET's SparseLDA, so the searches
# for a token's old topic and for u in the q bucket usually stop at the first row; ``wmeta[w]``
# is (start, length) of w's rows. These lists, not word_topic, hold the positive counts during
# the sweep: the q bucket then reads one short contiguous run per token instead of scattered
# entries of a (V, K) table that need not fit in cache. word_topic is written when an entry
# drops to 0 and for all listed entries at the end; entries that were <= 0 (only in a damaged
# copy) stay unlisted and are updated in word_topic itself. Only the range's words get lists,
# so a mini-batch does not pay O(V·K) for a large vocabulary.

@_sweep_piece
def _words_of_range(words, tok_lo, tok_hi, num_words):
    """(tokens of each word in words[tok_lo:tok_hi], the distinct words in first-seen order)."""
    local = np.zeros(num_words, np.int32)
    uniq = np.empty(min(num_words, tok_hi - tok_lo), np.int32)
    n_uniq = 0
    for i in range(tok_lo, tok_hi):
        w = words[i]
        if local[w] == 0:
            uniq[n_uniq] = w
            n_uniq += 1
        local[w] += 1
    return local, uniq[:n_uniq]


@_sweep_piece
def _word_list_layout(word_topic, uniq, local):
    """Place each word's list in one buffer: (wmeta, its size, Σ over tokens of n_nonzero).

    A list grows by at most one row per local token of its word (each token is resampled
    once), so room for min(K, nnz + local count) rows is never exceeded. The token-weighted
    count of non-zero topics is what :func:`sweep` compares against ``dense_above``.
    """
    K = word_topic.shape[1]
    wmeta = np.empty((word_topic.shape[0], 2), np.int64)  # rows of local words only
    size = 0
    weighted_nnz = 0.0
    for w in uniq:
        nnz = 0
        for k in range(K):
            if word_topic[w, k] > 0:
                nnz += 1
        wmeta[w, 0] = size
        wmeta[w, 1] = nnz
        size += min(K, nnz + local[w])
        weighted_nnz += nnz * local[w]
    return wmeta, size, weighted_nnz


@_token_step
def _float_up(wl, base, j, k, c):
    """Write row (k, c) at position j or, past smaller counts, nearer the front."""
    while j > 0 and wl[base + j - 1, 1] < c:
        wl[base + j, 0] = wl[base + j - 1, 0]
        wl[base + j, 1] = wl[base + j - 1, 1]
        j -= 1
    wl[base + j, 0] = k
    wl[base + j, 1] = c


@_sweep_piece
def _build_word_lists(word_topic, uniq, wmeta, size):
    wl = np.empty((size, 2), np.int32)
    for w in uniq:
        n = 0
        for k in range(word_topic.shape[1]):
            if word_topic[w, k] > 0:
                _float_up(wl, wmeta[w, 0], n, k, word_topic[w, k])
                n += 1
    return wl


@njit(cache=True, nogil=True)
def _store_word_lists(word_topic, uniq, wmeta, wl):
    for w in uniq:
        base = wmeta[w, 0]
        for m in range(wmeta[w, 1]):
            word_topic[w, wl[base + m, 0]] = wl[base + m, 1]


@_token_step
def _find_row(wl, base, L, k):
    """Position of topic k in a list of L rows, or L if it is not listed."""
    j = 0
    while j < L and wl[base + j, 0] != k:
        j += 1
    return j


@_token_step
def _word_list_remove(w, t, word_topic, wmeta, wl):
    """Take one token of word w out of topic t; return (start, length) of w's list after it.

    The decremented row sinks past larger counts to keep the order; a row that reaches 0 has
    sunk to the end, where shortening the list drops it.
    """
    base = wmeta[w, 0]
    L = wmeta[w, 1]
    j = _find_row(wl, base, L, t)
    if j < L:
        c = wl[base + j, 1] - 1
        while j + 1 < L and wl[base + j + 1, 1] > c:
            wl[base + j, 0] = wl[base + j + 1, 0]
            wl[base + j, 1] = wl[base + j + 1, 1]
            j += 1
        if c == 0:
            L -= 1
            wmeta[w, 1] = L
            word_topic[w, t] = 0
        else:
            wl[base + j, 0] = t
            wl[base + j, 1] = c
    else:
        word_topic[w, t] -= 1
    return base, L


@_token_step
def _word_list_add(w, k, j, base, L, word_topic, wmeta, wl):
    """Add one token of word w to topic k, found at row j of w's list (-1: not searched yet).

    A topic new to the word gets a row at the end, unless its count is still <= 0 (a damaged
    copy), which then stays in word_topic; the row then floats up to keep the order.
    """
    if j < 0:
        j = _find_row(wl, base, L, k)
    if j < L:
        c = wl[base + j, 1] + 1
    else:
        c = word_topic[w, k] + 1  # unlisted: word_topic holds the count
        if c <= 0:
            word_topic[w, k] = c
        else:
            wmeta[w, 1] = L + 1
    if c > 0:
        _float_up(wl, base, j, k, c)


@_token_step
def _prefetch_word_list(words, i, last_tok, wmeta, wl):
    # A word's list is two dependent loads away (wmeta, then wl): at a large V, two cache
    # misses in series per token. Prefetch the metadata _AHEAD tokens ahead and the list
    # half-way, so the misses overlap with the work on earlier tokens.
    _prefetch(wmeta, words[min(i + _AHEAD, last_tok)], 0)
    _prefetch(wl, wmeta[words[min(i + _AHEAD // 2, last_tok)], 0], 0)


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
