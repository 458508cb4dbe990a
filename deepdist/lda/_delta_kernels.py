"""Compiled kernels for count deltas between a Gibbs task and the server (private).

A task pushes the change of n_wk since its last push as sorted flat COO ``(index, value)``
(``index = w * K + k``) and adds the other tasks' changes to its copy. Two ways to find its
own change: from the assignments before and after (:func:`sparse_delta`, O(tokens)) or from
the table before and after (:func:`take_table_delta`, O(V·K)); :mod:`.local_counts` picks.
Validation lives in :mod:`.sampler` and :mod:`.local_counts`.
"""

import numpy as np
from numba import njit

#: Above this many V*K cells (64 MB of int32) sparse_delta buckets by word instead of scattering.
_DENSE_DELTA_CELLS = 1 << 24


@njit(cache=True, nogil=True)
def sparse_delta(words, old_topics, new_topics, num_topics):
    """Coalesced COO delta of word_topic between two assignments of the same tokens.

    The output is sorted by flat index ``w * K + k``. When the V × K table is small next to
    the tokens (the usual case), the moved tokens are scattered into a dense scratch table,
    which is then scanned: two sequential passes, and the scratch stays in cache. Otherwise
    they are bucketed by word with a counting sort (O(N + moved + V), no comparison sort)
    and each word's few touched topics are accumulated and emitted in order.
    """
    n = words.shape[0]
    moved = 0
    num_words = 0
    for i in range(n):
        if old_topics[i] != new_topics[i]:
            moved += 1
            if words[i] >= num_words:
                num_words = words[i] + 1
    index = np.empty(2 * moved, np.int64)
    value = np.empty(2 * moved, np.int32)
    if moved == 0:
        return index, value
    cells = np.int64(num_words) * num_topics
    if cells <= _DENSE_DELTA_CELLS and cells <= 8 * moved + 4096:
        scratch = np.zeros(cells, np.int32)
        for i in range(n):
            a = old_topics[i]
            b = new_topics[i]
            if a != b:
                row = np.int64(words[i]) * num_topics
                scratch[row + a] -= 1
                scratch[row + b] += 1
        out = 0
        for c in range(cells):
            if scratch[c] != 0:
                index[out] = c
                value[out] = scratch[c]
                out += 1
        return index[:out], value[:out]
    start = np.zeros(num_words + 1, np.int64)
    for i in range(n):
        if old_topics[i] != new_topics[i]:
            start[words[i] + 1] += 1
    for w in range(num_words):
        start[w + 1] += start[w]
    fill = start[:-1].copy()
    bucket = np.empty(moved, np.int64)
    for i in range(n):
        if old_topics[i] != new_topics[i]:
            w = words[i]
            bucket[fill[w]] = i
            fill[w] += 1
    acc = np.zeros(num_topics, np.int32)
    seen = np.zeros(num_topics, np.bool_)
    touched = np.empty(num_topics, np.int32)
    out = 0
    for w in range(num_words):
        nt = 0
        for j in range(start[w], start[w + 1]):
            tok = bucket[j]
            a = old_topics[tok]
            b = new_topics[tok]
            acc[a] -= 1
            acc[b] += 1
            if not seen[a]:
                seen[a] = True
                touched[nt] = a
                nt += 1
            if not seen[b]:
                seen[b] = True
                touched[nt] = b
                nt += 1
        if nt > 0:
            # insertion sort: a word's touched topics are few
            for x in range(1, nt):
                v = touched[x]
                y = x - 1
                while y >= 0 and touched[y] > v:
                    touched[y + 1] = touched[y]
                    y -= 1
                touched[y + 1] = v
            for x in range(nt):
                k = touched[x]
                if acc[k] != 0:
                    index[out] = np.int64(w) * num_topics + k
                    value[out] = acc[k]
                    out += 1
                acc[k] = 0
                seen[k] = False
    return index[:out], value[:out]


@njit(cache=True, nogil=True)
def apply_sparse_delta(word_topic, topic_totals, index, value):
    K = word_topic.shape[1]
    flat = word_topic.reshape(-1)
    start = np.int64(0)
    stop = np.int64(0)
    for j in range(index.shape[0]):
        c = np.int64(index[j])
        flat[c] += value[j]
        # a division a row, not an entry: deltas come sorted (or as a few sorted runs), a word's
        # topics side by side, and a 64-bit division costs more than the rest of the loop
        if c < start or c >= stop:
            start = c // K * K
            stop = start + K
        topic_totals[c - start] += value[j]


@njit(cache=True, nogil=True)
def take_table_delta(current, pushed):
    """COO of ``current - pushed`` (flat int32 tables of equal size), sorted; then pushed = current.

    Two sequential passes over the tables, whatever the number of tokens: cheaper than
    comparing assignments when the table is small next to the partition's tokens. The second
    pass writes every cell's difference and advances only past non-zero ones: after a sweep
    about one cell in twelve differs, at random, and a branch on it would mispredict often.
    """
    n = current.shape[0]
    count = 0
    for c in range(n):
        count += current[c] != pushed[c]
    index = np.empty(count + 1, np.int64)  # + 1: the last cell's write lands past the changes
    value = np.empty(count + 1, np.int32)
    out = 0
    for c in range(n):
        d = current[c] - pushed[c]
        index[out] = c
        value[out] = d
        out += d != 0
    for j in range(count):
        pushed[index[j]] += value[j]
    return index[:count], value[:count]


@njit(cache=True, nogil=True)
def add_sparse(flat, index, value):
    for j in range(index.shape[0]):
        flat[index[j]] += value[j]


@njit(cache=True, nogil=True)
def topic_totals_delta(index, value, num_topics):
    """The change of n_k implied by a flat COO change of n_wk (``index = w * K + k``)."""
    totals = np.zeros(num_topics, np.int64)
    start = np.int64(0)
    stop = np.int64(0)
    for j in range(index.shape[0]):
        c = np.int64(index[j])
        if c < start or c >= stop:  # one division a row, as in apply_sparse_delta
            start = c // num_topics * num_topics
            stop = start + num_topics
        totals[c - start] += value[j]
    return totals


@njit(cache=True, nogil=True)
def add_sorted(index_a, value_a, index_b, value_b):
    """The sum of two sorted, coalesced flat COO deltas, sorted and coalesced, zeros dropped:
    one merge pass (a task's threads' changes, combined into the one push it makes)."""
    na, nb = index_a.shape[0], index_b.shape[0]
    index = np.empty(na + nb, np.int64)
    value = np.empty(na + nb, np.int32)
    i = j = n = 0
    while i < na or j < nb:
        if j >= nb or (i < na and index_a[i] < index_b[j]):
            w, v = index_a[i], value_a[i]
            i += 1
        elif i >= na or index_b[j] < index_a[i]:
            w, v = index_b[j], value_b[j]
            j += 1
        else:
            w, v = index_a[i], value_a[i] + value_b[j]
            i += 1
            j += 1
        if v != 0:
            index[n] = w
            value[n] = v
            n += 1
    return index[:n], value[:n]
