"""A DNT fit's data on Spark: batches of documents and each batch's memo of its responsibilities.

Memoized variational inference (Hughes & Sudderth, NIPS 2013) cuts the data into batches and
keeps, per batch, what its last local step found. Here a batch's memo is its responsibilities
λ (documents × node slots, sparse: with β in the thousands a document sits on one or two
nodes); the batch's statistics (Σλ, Σλx, −Σλ log λ per node) are a function of λ and the data,
so they are never stored apart from it and cannot drift from it.

One RDD element per partition, a :class:`Shard`: its batches (L2-normalised term frequencies as
CSR over the batch's own words) and their memos. A visit of batch b (:func:`local_step`) makes a
new λ and the change of the statistics, ΔS = S_b,new − S_b,old, which is what the task pushes.

A merge of node ``gone`` into ``keep`` renumbers memos (:func:`replay`): λ[:, keep] += λ[:, gone].
A birth changes no memo (the new slot holds nothing until a batch is visited).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import sparse

__all__ = ["Batch", "Memo", "Shard", "local_step", "memo_of", "mass_and_entropy", "merge_slots", "replay",
           "statistics", "sketch_weights",
           "pair_entropy", "collect_docs", "KEEP"]

#: responsibilities below this are dropped (and the rest renormalised); the bound moves by less
#: than about KEEP·(their log-odds) per document, far below a nat
KEEP = 1e-10
#: documents scored at once: bounds the (documents × nodes) block of a local step
_CHUNK = 4096


@dataclass
class Batch:
    """Documents as unit rows of a CSR matrix over ``words`` (the batch's global word ids, sorted)."""

    indptr: np.ndarray
    cols: np.ndarray  # int32 positions in ``words``
    data: np.ndarray  # float64
    words: np.ndarray  # int64 global word ids

    @property
    def num_docs(self) -> int:
        return len(self.indptr) - 1

    def matrix(self):
        return sparse.csr_matrix((self.data, self.cols, self.indptr), shape=(self.num_docs, len(self.words)))

    @classmethod
    def from_documents(cls, docs) -> "Batch":
        """``docs``: a list of ``(word ids, weights)`` pairs, each document's weights of unit norm."""
        lengths = [len(w) for w, _ in docs]
        indptr = np.zeros(len(docs) + 1, np.int64)
        np.cumsum(lengths, out=indptr[1:])
        ids = np.concatenate([w for w, _ in docs]) if docs else np.zeros(0, np.int64)
        data = np.concatenate([v for _, v in docs]) if docs else np.zeros(0)
        words, cols = np.unique(ids, return_inverse=True)
        return cls(indptr, cols.astype(np.int32), data.astype(np.float64), words.astype(np.int64))


@dataclass
class Memo:
    """A batch's responsibilities and the statistics they imply (None: the batch was never visited)."""

    lam: object  # scipy CSR (docs × capacity) or None
    mass: np.ndarray
    entropy: np.ndarray
    sketch: float  # Σ weight(index)·value over the batch's Σλx entries (see sketch_weights)


@dataclass
class Shard:
    """One partition: its batches, their memos, and the last task's report."""

    partition: int
    batches: list
    memos: list
    report: dict | None = None

    def evolve(self, memos, report) -> "Shard":
        return replace(self, memos=memos, report=report)


def empty_memo(capacity: int) -> Memo:
    return Memo(None, np.zeros(capacity), np.zeros(capacity), 0.0)


def sketch_weights(flat: np.ndarray) -> np.ndarray:
    """Pseudo-random weights in [−½, ½) of flat statistic indices (word·capacity + slot).

    A hash, not a table: the driver weighs V × capacity entries without holding a second copy.
    """
    x = np.asarray(flat, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    x ^= x >> np.uint64(31)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(29)
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53)) - 0.5


def _xlogx(values: np.ndarray) -> np.ndarray:
    out = np.zeros_like(values)
    positive = values > 0
    out[positive] = values[positive] * np.log(values[positive])
    return out


def statistics(batch: Batch, lam, capacity: int):
    """``(flat index, value)`` of the batch's Σ λ x (flat = word·capacity + slot), as COO."""
    if lam is None or lam.nnz == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    # (λᵀ X)ᵀ: λ is far sparser than X, and X is never transposed
    sums = (lam.T.tocsr() @ batch.matrix()).tocoo()
    flat = batch.words[sums.col] * capacity + sums.row
    return flat.astype(np.int64), sums.data


def mass_and_entropy(lam, capacity: int):
    """Σ_n λ_nε and −Σ_n λ_nε log λ_nε per slot, of responsibilities ``lam`` (a sparse matrix)."""
    coo = lam.tocoo()
    mass = np.bincount(coo.col, weights=coo.data, minlength=capacity)
    return mass, -np.bincount(coo.col, weights=_xlogx(coo.data), minlength=capacity)


def merge_slots(sums, mass, entropy, keep: int, gone: int, merged_entropy: float) -> None:
    """Fold slot ``gone``'s statistics into ``keep`` in place: sums and masses add up, the entropy
    is the merged node's (it does not add). ``sums`` is indexed by slot on its first axis."""
    sums[keep] += sums[gone]
    sums[gone] = 0.0
    mass[keep] += mass[gone]
    mass[gone] = 0.0
    entropy[keep] = merged_entropy
    entropy[gone] = 0.0


def memo_of(batch: Batch, lam, capacity: int) -> Memo:
    """The memo of responsibilities ``lam`` (a CSR over slots)."""
    if lam is None:
        return empty_memo(capacity)
    mass, entropy = mass_and_entropy(lam, capacity)
    flat, values = statistics(batch, lam, capacity)
    return Memo(lam, mass, entropy, float(sketch_weights(flat) @ values))


def responsibilities(batch: Batch, weights_rows: np.ndarray, log_prior: np.ndarray, active: np.ndarray,
                     capacity: int):
    """λ ∝ exp(E log π_ε + wᵀx) over the ``active`` slots, as CSR (documents × capacity).

    ``weights_rows`` (batch words × capacity) are the rows of β A(η) µ for the batch's words.
    """
    x = batch.matrix()
    w = np.ascontiguousarray(weights_rows[:, active])
    prior = log_prior[active]
    rows, cols, vals = [], [], []
    for start in range(0, batch.num_docs, _CHUNK):
        stop = min(start + _CHUNK, batch.num_docs)
        scores = np.asarray(x[start:stop] @ w) + prior
        scores -= scores.max(axis=1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=1, keepdims=True)
        r, c = np.nonzero(scores >= KEEP)
        rows.append(r + start)
        cols.append(active[c])
        vals.append(scores[r, c])
    if not rows:
        return sparse.csr_matrix((batch.num_docs, capacity))
    r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    lam = sparse.csr_matrix((v, (r, c)), shape=(batch.num_docs, capacity))
    # rows renormalised after the drop, so each document's λ sums to one
    totals = np.asarray(lam.sum(axis=1)).ravel()
    lam = sparse.diags(1.0 / totals) @ lam
    lam.sort_indices()
    return lam.tocsr()


def local_step(batch: Batch, memo: Memo, weights_rows, log_prior, active, capacity: int):
    """Visit a batch: its new memo, and the change of the statistics as
    ``(flat index, Δ value, Δ mass, Δ entropy, documents moved)`` — only documents whose λ moved
    contribute."""
    lam = responsibilities(batch, weights_rows, log_prior, active, capacity)
    new = memo_of(batch, lam, capacity)
    change = lam if memo.lam is None else (lam - memo.lam)
    change = sparse.csr_matrix(change)
    change.eliminate_zeros()
    flat, values = statistics(batch, change, capacity)
    keep = values != 0
    moved = int((np.diff(change.indptr) > 0).sum())
    return new, (flat[keep], values[keep], new.mass - memo.mass, new.entropy - memo.entropy, moved)


def replay(batch: Batch, memo: Memo, ops, capacity: int) -> Memo:
    """The memo after the structure moves ``ops`` (``("merge", keep, gone)``, in order)."""
    merges = [op for op in ops if op[0] == "merge"]
    if memo.lam is None or not merges:
        return memo
    target = np.arange(capacity)
    for _, keep, gone in merges:
        target[target == gone] = keep
    coo = memo.lam.tocoo()
    lam = sparse.csr_matrix((coo.data, (coo.row, target[coo.col])), shape=memo.lam.shape)
    lam.sum_duplicates()
    return memo_of(batch, lam, capacity)


def pair_entropy(lam, pairs) -> np.ndarray:
    """−Σ_n (λ_ni + λ_nj) log(λ_ni + λ_nj) for each pair (i, j): a merged node's entropy."""
    out = np.zeros(len(pairs))
    if lam is None or not len(pairs):
        return out
    csc = lam.tocsc()
    for k, (i, j) in enumerate(pairs):
        merged = csc[:, i] + csc[:, j]
        out[k] = -_xlogx(merged.data).sum()
    return out


def collect_docs(batch: Batch, lam, targets, limit: int, rng=None) -> dict:
    """Up to ``limit`` documents whose most responsible node is each target, with their λ:
    ``{target: (indptr, word ids, values, λ indptr, λ slots, λ values)}`` (what a birth needs)."""
    out = {}
    if lam is None or not len(targets) or limit <= 0:
        return out
    best = np.asarray(lam.argmax(axis=1)).ravel()
    x = batch.matrix()
    for target in targets:
        rows = np.flatnonzero(best == target)
        if rows.size > limit:  # a random subset: batches keep the input's order (often by date)
            rows = np.sort((rng or np.random.default_rng(0)).choice(rows, limit, replace=False))
        if not rows.size:
            continue
        sub, sub_lam = x[rows], lam[rows]
        out[int(target)] = (sub.indptr.astype(np.int64), batch.words[sub.indices], sub.data.copy(),
                            sub_lam.indptr.astype(np.int64), sub_lam.indices.astype(np.int64), sub_lam.data.copy())
    return out
