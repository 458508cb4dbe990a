"""Compiled kernels for inference with the topics held fixed (private; see :mod:`.sampler`).

Fold-in samples the topics of new documents against a fixed topic-word
distribution ``phi`` (only the document's counts change); document completion
scores the second half of each held-out document with theta estimated on the
first half; the document-topic prior log p(z) scores a training state's assignments.  The
sampling sweep itself lives in :mod:`._kernels`, whose RNG and list of a document's topics
these kernels share.

Every function here takes arrays and scalars only; validation lives in :mod:`.sampler`.
"""

import math

import numpy as np
from numba import njit

from ._kernels import (_FASTMATH, _list_doc_topic, _next, _seed_state, _uniform,
                       _unlist_doc_topic)


# --------------------------------------------------------------------------------------------
# fold-in and held-out scoring (topic-word distribution fixed)
# --------------------------------------------------------------------------------------------

@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _fold_in_doc(words, lo, hi, phi_wk, alpha_phi, alpha, iterations, burn_in, scratch,
                 theta_row, state):
    """Gibbs-sample one document's topics against fixed phi; accumulate theta samples.

    p(z=k) ∝ (n_dk + α_k) φ_kw splits into a document part Σ_{n_dk>0} n_dk φ_kw and a prior
    part α_k φ_kw whose total per word (``alpha_phi``) is precomputed. The document's topics
    are listed in dnz[:nd] with positions dpos, as in the sweep.
    """
    z, ndk, dnz, dpos, cum = scratch
    K = phi_wk.shape[1]
    n = hi - lo
    nd = 0
    for j in range(n):
        state = _next(state)
        t = np.int32(_uniform(state) * K)
        if t >= K:
            t = K - 1
        z[j] = t
        ndk[t] += 1
        if ndk[t] == 1:
            nd = _list_doc_topic(t, nd, dnz, dpos)
    samples = 0
    for it in range(iterations):
        for j in range(n):
            w = words[lo + j]
            t = z[j]
            ndk[t] -= 1
            if ndk[t] == 0:
                nd = _unlist_doc_topic(t, nd, dnz, dpos)
            r = 0.0
            for m in range(nd):
                k = dnz[m]
                r += ndk[k] * phi_wk[w, k]
                cum[m] = r
            state = _next(state)
            u = _uniform(state) * (r + alpha_phi[w])
            if u < r:
                m = 0
                while m < nd - 1 and cum[m] <= u:
                    m += 1
                new = dnz[m]
            else:
                u -= r
                acc = 0.0
                new = K - 1
                for k in range(K):
                    acc += alpha[k] * phi_wk[w, k]
                    if acc > u:
                        new = k
                        break
            ndk[new] += 1
            if ndk[new] == 1:
                nd = _list_doc_topic(new, nd, dnz, dpos)
            z[j] = new
        if it >= burn_in:
            for m in range(nd):
                k = dnz[m]
                theta_row[k] += ndk[k]
            samples += 1
    # clean the scratch arrays for the next document
    for m in range(nd):
        k = dnz[m]
        ndk[k] = 0
        dpos[k] = -1
    return samples, state


@njit(cache=True, nogil=True)
def _theta_finish(theta_row, samples, n, alpha, alpha_sum):
    # mean over samples of (n_dk + α_k) / (n_d + Σα)
    K = theta_row.shape[0]
    denom = n + alpha_sum
    if samples > 0:
        for k in range(K):
            theta_row[k] = (theta_row[k] / samples + alpha[k]) / denom
    else:
        for k in range(K):
            theta_row[k] = alpha[k] / alpha_sum


@njit(cache=True, nogil=True)
def _alpha_phi(phi_wk, alpha):
    V, K = phi_wk.shape
    out = np.zeros(V, np.float64)
    for w in range(V):
        a = 0.0
        for k in range(K):
            a += alpha[k] * phi_wk[w, k]
        out[w] = a
    return out


@njit(cache=True, nogil=True)
def _fold_in_scratch(doc_offsets, num_topics):
    """(z, ndk, dnz, dpos, cum) for :func:`_fold_in_doc`, sized for the longest document and K.

    Allocated once per call and reused by every document: no topic counted (ndk 0) or listed
    (dpos -1), the state _fold_in_doc leaves them in.
    """
    maxlen = 0
    for d in range(doc_offsets.shape[0] - 1):
        maxlen = max(maxlen, doc_offsets[d + 1] - doc_offsets[d])
    return (np.empty(maxlen, np.int32), np.zeros(num_topics, np.int32),
            np.empty(num_topics, np.int32), np.full(num_topics, -1, np.int32),
            np.empty(num_topics, np.float64))


@njit(cache=True, nogil=True)
def fold_in(doc_offsets, words, phi_wk, alpha, iterations, burn_in, seed):
    """theta (D, K) for documents sampled against fixed phi_wk = p(w | k), shape (V, K)."""
    K = phi_wk.shape[1]
    D = doc_offsets.shape[0] - 1
    theta = np.zeros((D, K), np.float64)
    alpha_phi = _alpha_phi(phi_wk, alpha)
    alpha_sum = alpha.sum()
    scratch = _fold_in_scratch(doc_offsets, K)
    state = _seed_state(seed)
    for d in range(D):
        lo = doc_offsets[d]
        hi = doc_offsets[d + 1]
        samples = 0
        if hi > lo:
            samples, state = _fold_in_doc(words, lo, hi, phi_wk, alpha_phi, alpha, iterations,
                                          burn_in, scratch, theta[d], state)
        _theta_finish(theta[d], samples, hi - lo, alpha, alpha_sum)
    return theta


@njit(cache=True, nogil=True)
def completion_log_likelihood(doc_offsets, words, phi_wk, alpha, iterations, burn_in, seed):
    """Document completion (Wallach et al. 2009): theta from each document's first half,
    then Σ log Σ_k θ_dk φ_kw over its second half. Returns (total, scored tokens)."""
    K = phi_wk.shape[1]
    D = doc_offsets.shape[0] - 1
    alpha_phi = _alpha_phi(phi_wk, alpha)
    alpha_sum = alpha.sum()
    scratch = _fold_in_scratch(doc_offsets, K)
    theta = np.empty(K, np.float64)
    state = _seed_state(seed)
    total = 0.0
    scored = 0
    for d in range(D):
        lo = doc_offsets[d]
        hi = doc_offsets[d + 1]
        mid = lo + (hi - lo) // 2
        if hi - mid == 0:
            continue
        theta[:] = 0.0
        samples = 0
        if mid > lo:
            samples, state = _fold_in_doc(words, lo, mid, phi_wk, alpha_phi, alpha, iterations,
                                          burn_in, scratch, theta, state)
        _theta_finish(theta, samples, mid - lo, alpha, alpha_sum)
        for i in range(mid, hi):
            w = words[i]
            p = 0.0
            for k in range(K):
                p += theta[k] * phi_wk[w, k]
            total += math.log(p)
            scored += 1
    return total, scored


# --------------------------------------------------------------------------------------------
# collapsed joint log-likelihood
# --------------------------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def log_likelihood_topics(doc_topic, alpha):
    """log p(z) = Σ_d [lgΓ(Σα) - lgΓ(n_d + Σα) + Σ_k (lgΓ(n_dk + α_k) - lgΓ(α_k))]."""
    D, K = doc_topic.shape
    alpha_sum = 0.0
    lg_alpha = np.empty(K, np.float64)
    for k in range(K):
        alpha_sum += alpha[k]
        lg_alpha[k] = math.lgamma(alpha[k])
    lg_alpha_sum = math.lgamma(alpha_sum)
    total = 0.0
    for d in range(D):
        nd = 0
        for k in range(K):
            c = doc_topic[d, k]
            if c > 0:
                nd += c
                total += math.lgamma(c + alpha[k]) - lg_alpha[k]
        total += lg_alpha_sum - math.lgamma(nd + alpha_sum)
    return total
