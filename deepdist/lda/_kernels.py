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


# --------------------------------------------------------------------------------------------
# counts
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# the SparseLDA sweep
# --------------------------------------------------------------------------------------------

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
    inv = np.empty(K, np.float64)
    for k in range(K):
        inv[k] = 1.0 / (max(topic_totals[k], 0) + vbeta)
    p = np.empty(K, np.float64)
    state = _seed_state(seed)
    changed = 0
    last_tok = max(doc_offsets[doc_stop] - 1, 0)
    for d in range(doc_start, doc_stop):
        for i in range(doc_offsets[d], doc_offsets[d + 1]):
            w = words[i]
            t = topics[i]
            ahead = min(i + _AHEAD, last_tok)
            wa = words[ahead]
            for kk in range(0, K, 16):
                _prefetch(word_topic, wa, kk)
            doc_topic[d, t] -= 1
            word_topic[w, t] -= 1
            topic_totals[t] -= 1
            inv[t] = 1.0 / (max(topic_totals[t], 0) + vbeta)
            total = 0.0
            for k in range(K):
                x = ((max(doc_topic[d, k], 0) + alpha[k]) * (max(word_topic[w, k], 0) + beta)
                     * inv[k])
                p[k] = x
                total += x
            state = _next(state)
            u = _uniform(state) * total
            acc = 0.0
            new = K - 1
            for k in range(K):
                acc += p[k]
                if acc > u:
                    new = k
                    break
            doc_topic[d, new] += 1
            word_topic[w, new] += 1
            topic_totals[new] += 1
            inv[new] = 1.0 / (max(topic_totals[new], 0) + vbeta)
            changed += new != t
            topics[i] = new
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
    vbeta = num_words * beta

    # 1/(n_k + Vβ) and coef_k = (n_dk + α_k)/(n_k + Vβ), maintained under every count change.
    # Counts are clamped at 0 wherever they enter a weight: a stale or corrupted copy must
    # give a valid (if approximate) distribution, never a negative one.
    inv = np.empty(K, np.float64)
    coef = np.empty(K, np.float64)
    for k in range(K):
        nk = topic_totals[k]
        if nk < 0:
            nk = 0
        inv[k] = 1.0 / (nk + vbeta)
        coef[k] = alpha[k] * inv[k]

    # Per-word lists of (topic, count) for the topics with n_wk > 0, for the words of this
    # range only (a mini-batch must not pay O(V·K) for a large vocabulary), in decreasing count
    # order as in MALLET's SparseLDA, so the searches for a token's old topic and for u in the
    # q bucket usually stop at the first entry. During the sweep these lists, not word_topic,
    # hold the positive counts: the q bucket then reads one short contiguous run per token
    # instead of scattered entries of a (V, K) table that need not fit in cache. word_topic
    # is written when an entry drops to 0 and for all listed entries at the end; entries that
    # were <= 0 (only in a damaged copy) stay unlisted and are updated in word_topic itself.
    # A list grows by at most one entry per local token of its word (each token is resampled
    # once), so capacity min(K, nnz + local count) is never exceeded.
    tok_lo = doc_offsets[doc_start]
    tok_hi = doc_offsets[doc_stop]
    local = np.zeros(num_words, np.int32)
    uniq = np.empty(min(num_words, tok_hi - tok_lo), np.int32)
    n_uniq = 0
    for i in range(tok_lo, tok_hi):
        w = words[i]
        if local[w] == 0:
            uniq[n_uniq] = w
            n_uniq += 1
        local[w] += 1
    wmeta = np.empty((num_words, 2), np.int64)  # (start, length) in wl; local words only
    total = 0
    weighted_nnz = 0.0
    for j in range(n_uniq):
        w = uniq[j]
        nnz = 0
        for k in range(K):
            if word_topic[w, k] > 0:
                nnz += 1
        wmeta[w, 0] = total
        wmeta[w, 1] = nnz
        total += min(K, nnz + local[w])
        weighted_nnz += nnz * local[w]
    # Measured crossover on this machine: dense wins above ~0.3 K topics per word at K=20
    # and ~0.12 K at K=100; the sampler's default sits between.
    if weighted_nnz >= dense_above * K * (tok_hi - tok_lo):
        return _sweep_dense(doc_start, doc_stop, doc_offsets, words, topics, doc_topic,
                            word_topic, topic_totals, alpha, beta, seed)
    wl = np.empty((total, 2), np.int32)  # rows (topic, count)
    for j in range(n_uniq):
        w = uniq[j]
        base = wmeta[w, 0]
        n = 0
        for k in range(K):
            c = word_topic[w, k]
            if c > 0:
                m = n
                while m > 0 and wl[base + m - 1, 1] < c:
                    wl[base + m, 0] = wl[base + m - 1, 0]
                    wl[base + m, 1] = wl[base + m - 1, 1]
                    m -= 1
                wl[base + m, 0] = k
                wl[base + m, 1] = c
                n += 1

    # The document's non-zero topics, with positions for O(1) removal; dpos[k] >= 0 iff k is
    # listed, which keeps the list free of duplicates even if doc_topic disagrees with topics.
    dnz = np.empty(K, np.int32)
    dpos = np.full(K, -1, np.int32)
    qcum = np.empty(K, np.float64)

    # s = β Σ_k α_k/(n_k + Vβ) is updated per count change and re-summed every ~K tokens so
    # floating-point drift stays bounded without an O(K) cost per short document.
    s = 0.0
    for k in range(K):
        s += alpha[k] * inv[k]
    s *= beta
    since_resum = 0

    state = _seed_state(seed)
    changed = 0
    last_tok = max(tok_hi - 1, 0)

    for d in range(doc_start, doc_stop):
        lo = doc_offsets[d]
        hi = doc_offsets[d + 1]
        if lo == hi:
            continue
        if since_resum >= K:
            s = 0.0
            for k in range(K):
                s += alpha[k] * inv[k]
            s *= beta
            since_resum = 0
        since_resum += hi - lo
        # The document's topics come from its tokens (O(n_d), not O(K)); r is summed afresh
        # per document, so its drift never outlives one document.
        nd = 0
        r = 0.0
        for i in range(lo, hi):
            k = topics[i]
            c = doc_topic[d, k]
            if c > 0 and dpos[k] < 0:
                dnz[nd] = k
                dpos[k] = nd
                nd += 1
                r += c * inv[k]
                coef[k] = (c + alpha[k]) * inv[k]
        r *= beta

        for i in range(lo, hi):
            w = words[i]
            t = topics[i]
            # A word's list is two dependent loads away (wmeta, then wl): at a large V, two
            # cache misses in series per token. Prefetch the metadata _AHEAD tokens ahead and
            # the list half-way, so the misses overlap with the work on earlier tokens.
            far = min(i + _AHEAD, last_tok)
            _prefetch(wmeta, words[far], 0)
            near = min(i + _AHEAD // 2, last_tok)
            wn = words[near]
            _prefetch(wl, wmeta[wn, 0], 0)

            # ---- remove token i: document and topic totals
            ndt = doc_topic[d, t] - 1
            doc_topic[d, t] = ndt
            nt = topic_totals[t] - 1
            topic_totals[t] = nt
            old_inv = inv[t]
            new_inv = 1.0 / (max(nt, 0) + vbeta)
            inv[t] = new_inv
            s += beta * alpha[t] * (new_inv - old_inv)
            ndt_c = max(ndt, 0)
            r += beta * (ndt_c * new_inv - max(ndt + 1, 0) * old_inv)
            coef[t] = (ndt_c + alpha[t]) * new_inv
            if ndt == 0 and dpos[t] >= 0:
                p = dpos[t]
                nd -= 1
                last = dnz[nd]
                dnz[p] = last
                dpos[last] = p
                dpos[t] = -1
                if nd == 0:
                    r = 0.0  # exact: no document topics left

            # ---- remove token i: word list (sink the decremented entry to keep the order)
            base = wmeta[w, 0]
            L = wmeta[w, 1]
            j = 0
            while j < L and wl[base + j, 0] != t:
                j += 1
            if j < L:
                c = wl[base + j, 1] - 1
                while j + 1 < L and wl[base + j + 1, 1] > c:
                    wl[base + j, 0] = wl[base + j + 1, 0]
                    wl[base + j, 1] = wl[base + j + 1, 1]
                    j += 1
                if c == 0:
                    L -= 1  # the emptied entry has sunk to the end
                    wmeta[w, 1] = L
                    word_topic[w, t] = 0
                else:
                    wl[base + j, 0] = t
                    wl[base + j, 1] = c
            else:
                word_topic[w, t] -= 1

            # ---- q bucket over the word's topics
            q = 0.0
            for j in range(L):
                q += coef[wl[base + j, 0]] * wl[base + j, 1]
                qcum[j] = q

            state = _next(state)
            u = _uniform(state) * (s + r + q)
            jnew = -1
            if u < q:
                j = 0
                while j < L - 1 and qcum[j] <= u:
                    j += 1
                new = wl[base + j, 0]
                jnew = j
            else:
                u -= q
                if u < r and nd > 0:
                    acc = 0.0
                    new = dnz[nd - 1]
                    for j in range(nd):
                        k = dnz[j]
                        acc += beta * doc_topic[d, k] * inv[k]
                        if acc > u:
                            new = k
                            break
                else:
                    u -= r
                    acc = 0.0
                    new = K - 1
                    for k in range(K):
                        acc += beta * alpha[k] * inv[k]
                        if acc > u:
                            new = k
                            break

            # ---- add token i back with its new topic: document and topic totals
            ndk = doc_topic[d, new] + 1
            doc_topic[d, new] = ndk
            nk = topic_totals[new] + 1
            topic_totals[new] = nk
            old_inv = inv[new]
            new_inv = 1.0 / (max(nk, 0) + vbeta)
            inv[new] = new_inv
            s += beta * alpha[new] * (new_inv - old_inv)
            ndk_c = max(ndk, 0)
            r += beta * (ndk_c * new_inv - max(ndk - 1, 0) * old_inv)
            coef[new] = (ndk_c + alpha[new]) * new_inv
            if ndk > 0 and dpos[new] < 0:
                dnz[nd] = new
                dpos[new] = nd
                nd += 1

            # ---- add token i back: word list (float the incremented entry forward)
            if jnew < 0:
                j = 0
                while j < L and wl[base + j, 0] != new:
                    j += 1
                jnew = j
            if jnew < L:
                c = wl[base + jnew, 1] + 1
            else:
                c = word_topic[w, new] + 1  # unlisted: word_topic holds the count
                if c <= 0:
                    word_topic[w, new] = c
                else:
                    L += 1
                    wmeta[w, 1] = L
            if c > 0:
                j = jnew
                while j > 0 and wl[base + j - 1, 1] < c:
                    wl[base + j, 0] = wl[base + j - 1, 0]
                    wl[base + j, 1] = wl[base + j - 1, 1]
                    j -= 1
                wl[base + j, 0] = new
                wl[base + j, 1] = c
            if new != t:
                changed += 1
            topics[i] = new

        # leave coef and dpos clean for the next document
        for j in range(nd):
            k = dnz[j]
            coef[k] = alpha[k] * inv[k]
            dpos[k] = -1

    for j in range(n_uniq):
        w = uniq[j]
        base = wmeta[w, 0]
        for m in range(wmeta[w, 1]):
            word_topic[w, wl[base + m, 0]] = wl[base + m, 1]
    return changed
