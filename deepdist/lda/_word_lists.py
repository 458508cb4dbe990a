"""The per-word (topic, count) lists of a SparseLDA sweep (private; see :mod:`._kernels`).

During a sparse sweep each word of the range keeps its topics with n_wk > 0 as rows
(topic, count) of ``wl``, sorted by decreasing count as in MALLET's SparseLDA, so the searches
for a token's old topic and for u in the q bucket usually stop at the first row; ``wmeta[w]``
is (start, length) of w's rows. These lists, not word_topic, hold the positive counts during
the sweep: the q bucket then reads one short contiguous run per token instead of scattered
entries of a (V, K) table that need not fit in cache. word_topic is written when an entry
drops to 0 and for all listed entries at the end; entries that were <= 0 (only in a damaged
copy) stay unlisted and are updated in word_topic itself. Only the range's words get lists,
so a mini-batch does not pay O(V·K) for a large vocabulary.

This module also holds what every piece of the sweep shares, the compile settings and the
prefetch hint, because :mod:`._kernels` builds on it. Numba's on-disk cache checks only the
file a function is defined in, so after editing this module also touch ``_kernels.py`` (or
clear the cache): the cached sweep has these helpers compiled into it.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# fastmath lets LLVM reassociate the O(K) reductions; nothing here relies on NaN/inf semantics
# because α, β > 0 keep every weight finite and positive.
_FASTMATH = True

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


# How the pieces compile, so that the split costs nothing against one hand-written loop:
#
# - A per-token step is inlined by LLVM (forceinline) into the loop that calls it, and runs
#   without Numba's reference counting (_nrt=False; it allocates nothing and its arrays belong
#   to the caller). Inlined by Numba instead (inline="always"), each array it takes would be
#   bound to a new name with a reference counted for it: an atomic add and subtract per array
#   per token, which Numba cannot prune across the helper's own loops.
# - The pieces of one sweep are spliced into :func:`._kernels.sweep` by Numba (inline="always",
#   once per sweep, so their reference counts cost nothing). The arrays they allocate (the word
#   lists, 1/(n_k + Vβ), ...) are then fresh allocations of the function that runs the loop,
#   which LLVM knows alias nothing else and have a constant row length; passed in as
#   arguments, they would make it reload and recompute addresses in the loop.
_token_step = njit(cache=True, nogil=True, fastmath=_FASTMATH, _nrt=False, forceinline=True)
_sweep_piece = njit(cache=True, nogil=True, fastmath=_FASTMATH, inline="always")


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
    count of non-zero topics is what :func:`._kernels.sweep` compares against ``dense_above``.
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

