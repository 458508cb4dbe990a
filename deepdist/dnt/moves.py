"""Structure moves of a DNT fit, made on the driver between passes: births and merges.

Both are judged by the evidence lower bound of a *valid* q before and after
(:func:`deepdist.dnt.variational.elbo`), so an accepted move always raises it:

* **Birth** at node ε (:func:`propose_birth`): documents whose most responsible node is ε were
  collected during the pass (a random subset of them, ``birth_docs``). New children c of ε
  (``birth_children`` of them) start at the spherical k-means centroids of those documents
  furthest from µ_ε; restricted VI then alternates their responsibilities between ε and its new
  children with updates of their means. The statistics of the proposal are the memos' with those documents moved:
  S' = S − S_old(docs) + S_new(docs). If the bound of (tree + c, S') beats the bound of (tree,
  S), the birth is kept and the difference S_new − S_old stays on the driver, per batch, as an
  *extra* until the batch's next visit makes its memo reflect c (bnpy's birth, with the
  double-counting removed: the moved documents count once, where the proposal put them).
* **Move** of a node with its subtree (:func:`try_move`) under a sibling or its grandparent whose
  mean is closer to its own than its parent's: a birth places a child under the node whose
  documents it split, which is its true parent only if the tree above it is already right.
  A move changes no document's responsibilities, so neither the memos nor the server's
  statistics; only the tree, the sticks and the means' coupling, which the bound judges.
* **Merge** of a pair (:func:`try_merge`): siblings, or a parent and a child, proposed by the
  cosine of their means before a pass (:func:`merge_candidates`); the tasks report the merged
  node's entropy −Σ(λ_i + λ_j) log(λ_i + λ_j) for each candidate during the pass, the other
  statistics add up. Accepted only if the bound, after a global step, rises.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from . import variational as vi
from .memo import KEEP, mass_and_entropy, merge_slots
from .tree import Tree

__all__ = ["Extra", "BirthDocs", "propose_birth", "merge_candidates", "try_merge", "birth_targets",
           "move_candidates", "try_move"]

log = logging.getLogger("deepdist.dnt")

#: alternations of responsibilities and means in a birth's restricted VI
_RESTRICTED_ITERATIONS = 8


@dataclass
class Extra:
    """Statistics that a birth moved but no memo holds yet (one batch's share)."""

    flat: np.ndarray  # indices word·capacity + slot
    values: np.ndarray
    mass: np.ndarray  # (capacity,)
    entropy: np.ndarray  # (capacity,)

    def add_to(self, stats: vi.Stats, sign: float = 1.0) -> None:
        cap = stats.mass.size
        np.add.at(stats.sums, (self.flat % cap, self.flat // cap), sign * self.values)
        stats.mass += sign * self.mass
        stats.entropy += sign * self.entropy


@dataclass
class BirthDocs:
    """Documents collected for a birth at one node: their rows over the vocabulary (unit), their
    current λ (documents × capacity) and the batch ``(partition, batch)`` each came from."""

    x: sparse.csr_matrix
    lam: sparse.csr_matrix
    batch_of: list

    @classmethod
    def gather(cls, pieces, num_words: int, capacity: int) -> "BirthDocs":
        """From ``[((partition, batch), (indptr, words, values, λ indptr, λ slots, λ values)), ...]``."""
        xs, lams, keys = [], [], []
        for key, (indptr, words, values, lptr, lslots, lvals) in pieces:
            n = len(indptr) - 1
            xs.append(sparse.csr_matrix((values, words, indptr), shape=(n, num_words)))
            lams.append(sparse.csr_matrix((lvals, lslots, lptr), shape=(n, capacity)))
            keys.extend([key] * n)
        return cls(sparse.vstack(xs).tocsr(), sparse.vstack(lams).tocsr(), keys)

    def renumber(self, ops, capacity: int) -> None:
        """Apply merges made since the documents were collected to their λ."""
        target = np.arange(capacity)
        for _, keep, gone in ops:
            target[target == gone] = keep
        coo = self.lam.tocoo()
        self.lam = sparse.csr_matrix((coo.data, (coo.row, target[coo.col])), shape=self.lam.shape)
        self.lam.sum_duplicates()


def _stats_of(x, lam, capacity):
    """(sums as (capacity, V) sparse, mass (capacity,), entropy (capacity,)) of documents x with λ."""
    return ((lam.T @ x).tocsr(), *mass_and_entropy(lam, capacity))


def _split_centres(x, mu, children, rng, iterations=10):
    """Spherical (children + 1)-means of the rows of x, seeded by k-means++ among the documents
    (each next seed drawn ∝ 1 − its largest cosine with the seeds so far); returns the
    ``children`` centres least similar to ``mu`` (unit rows), the one nearest ``mu`` staying with
    the parent. (Seeding with ``mu`` itself fails: the parent's mean is nearer almost every
    document than any single document is, and the other clusters start empty.)"""
    n = x.shape[0]
    first = int(rng.integers(n))
    centres = [x[first].toarray().ravel()]
    best = np.asarray(x @ centres[0]).ravel()
    for _ in range(children):
        weights = np.maximum(1.0 - best, 0.0)
        total = weights.sum()
        pick = int(rng.choice(n, p=weights / total)) if total > 0 else int(rng.integers(n))
        centres.append(x[pick].toarray().ravel())
        best = np.maximum(best, np.asarray(x @ centres[-1]).ravel())
    centres = np.vstack(centres)
    for _ in range(iterations):
        side = np.asarray(x @ centres.T).argmax(axis=1)
        for k in range(len(centres)):
            members = x[side == k]
            if members.shape[0]:
                total = np.asarray(members.sum(axis=0)).ravel()
                norm = np.linalg.norm(total)
                if norm > 0:
                    centres[k] = total / norm
    order = np.argsort(centres @ mu)  # least similar to the parent first
    return centres[order[:children]]


def _local_step(tree: Tree, stats: vi.Stats, hyper: vi.Hyper, q: vi.Globals, nodes) -> None:
    """The global step where a move changed the tree: the sticks, and the means of ``nodes``, their
    parents and children. Every other mean keeps its value, so q stays a valid (if not fully
    updated) distribution and the bound compares two valid q's; the pass's next global step
    updates the rest."""
    near = set()
    for node in nodes:
        near.add(node)
        near.update(tree.children[node])
        if tree.parent[node] >= 0:
            near.add(int(tree.parent[node]))
    vi.sticks(tree, stats.mass, hyper, q)
    vi.means(tree, stats, hyper, q, sweeps=2, nodes=sorted(near))


def _add_sparse(dense: np.ndarray, sp, sign: float = 1.0) -> None:
    coo = sp.tocoo()
    np.add.at(dense, (coo.row, coo.col), sign * coo.data)


def propose_birth(tree: Tree, stats: vi.Stats, hyper: vi.Hyper, q: vi.Globals, target: int, docs: BirthDocs,
                  rng, min_docs: int = 4, children: int = 1, before: float | None = None, restore: bool = False):
    """A birth of ``children`` new children under ``target`` from ``docs``:
    ``(tree, stats, q, gain, extras, new nodes)`` when it raises the bound (``extras``:
    ``{batch key: Extra}``), else None.

    ``stats.sums`` is changed in place, in the rows the documents touch, and put back if the
    birth is refused: a copy of the (capacity × V) array per proposal would cost more than the
    restricted VI itself. ``before``: the bound of (tree, stats, q) if the caller has it (a
    refused proposal leaves the state as it found it, so one evaluation serves a run of them).
    ``restore=True`` puts the sums back for a birth it keeps too (proposals against one base): the
    returned statistics are then None and the birth's change is in its extras alone."""
    cap = tree.capacity
    n = docs.x.shape[0]
    children = min(children, len(tree.free_slots()), max(n // min_docs - 1, 0))
    if children < 1:
        return None
    if before is None:
        before = vi.elbo(tree, stats, hyper, q)
    new_tree = tree.copy()
    born = [new_tree.add_child(target) for _ in range(children)]
    new_q = q.copy()
    new_q.mu[born] = _split_centres(docs.x, q.mu[target], children, rng)
    new_q.eta[born] = hyper.kappa1
    group = np.array([target] + born)
    # the statistics without the collected documents; the restricted VI puts them back on the group
    old_sums, old_mass, old_entropy = _stats_of(docs.x, docs.lam, cap)
    touched = np.union1d(np.flatnonzero(np.diff(old_sums.indptr)), group)
    saved = stats.sums[touched].copy()
    trial = vi.Stats(stats.mass.copy(), stats.sums, stats.entropy.copy())
    _add_sparse(trial.sums, old_sums, -1.0)
    base_mass, base_entropy = trial.mass - old_mass, trial.entropy - old_entropy
    base_rows = trial.sums[group].copy()
    # start from the split (each document to the nearest of the parent's and the centres' means):
    # a child at its prior concentration would draw no document at all
    nearest = np.asarray(docs.x @ np.vstack([q.mu[target], new_q.mu[born]]).T).argmax(axis=1)
    resp = np.eye(len(group))[nearest]
    for iteration in range(_RESTRICTED_ITERATIONS):
        if iteration:
            weights = vi.node_weights(new_tree, hyper, new_q, nodes=group)
            scores = np.asarray(docs.x @ weights.T) + new_q.log_prior[group]
            scores -= scores.max(axis=1, keepdims=True)
            resp = np.exp(scores)
            resp /= resp.sum(axis=1, keepdims=True)
            resp[resp < KEEP] = 0.0
            resp /= resp.sum(axis=1, keepdims=True)
        r, c = np.nonzero(resp)
        lam = sparse.csr_matrix((resp[r, c], (r, group[c])), shape=(n, cap))
        sums, mass, entropy = _stats_of(docs.x, lam, cap)
        trial.sums[group] = base_rows + sums[group].toarray()
        trial.mass, trial.entropy = base_mass + mass, base_entropy + entropy
        vi.sticks(new_tree, trial.mass, hyper, new_q)
        vi.means(new_tree, trial, hyper, new_q, sweeps=2, nodes=group)
    _local_step(new_tree, trial, hyper, new_q, list(group))
    after = vi.elbo(new_tree, trial, hyper, new_q)
    moved = float(lam[:, born].sum())
    kept = after > before and not moved < 1.0
    if restore or not kept:
        stats.sums[touched] = saved
    if not kept:
        return None
    return new_tree, None if restore else trial, new_q, after - before, _extras(docs, lam, cap), born


def _extras(docs: BirthDocs, lam, cap) -> dict:
    """Per batch, the statistics of its documents under the birth's λ minus under their memo's."""
    extras = {}
    for key in dict.fromkeys(docs.batch_of):
        rows = np.array([i for i, k in enumerate(docs.batch_of) if k == key])
        x = docs.x[rows]
        new_sums, new_mass, new_entropy = _stats_of(x, lam[rows], cap)
        old_sums, old_mass, old_entropy = _stats_of(x, docs.lam[rows], cap)
        diff = (new_sums - old_sums).tocoo()
        extras[key] = Extra((diff.col.astype(np.int64) * cap + diff.row), diff.data.copy(),
                            new_mass - old_mass, new_entropy - old_entropy)
    return extras


def birth_targets(tree: Tree, stats: vi.Stats, count: int, max_depth: int, max_children: int, rng) -> list:
    """Up to ``count`` distinct nodes that may take a child, drawn ∝ how badly their mean fits
    their documents, Σλ(1 − cos) = M − ‖s‖ (the spherical k-means loss a split can reduce)."""
    depths = tree.depths()
    nodes = [n for n in tree.breadth_first()
             if depths[n] + 1 < max_depth and len(tree.children[n]) < max_children and stats.mass[n] >= 1.0]
    count = min(count, len(nodes), len(tree.free_slots()))
    if count <= 0:
        return []
    weights = np.array([stats.mass[n] - np.linalg.norm(stats.sums[n]) for n in nodes], float)
    weights = np.maximum(weights, 1e-12)
    count = min(count, int(np.count_nonzero(weights > 1e-12)) or 1)
    return sorted(int(n) for n in rng.choice(nodes, size=count, replace=False, p=weights / weights.sum()))


def merge_candidates(tree: Tree, q: vi.Globals, limit: int, mass=None) -> list:
    """Up to ``limit`` pairs ``(keep, gone)`` — a parent and its child, or two siblings — by the
    cosine of their means, most similar first; with ``mass``, as many again of the lightest
    leaves into their parents (a node that kept almost no documents is all cost to the bound)."""
    pairs = [(p, c) for p, c in tree.edges()] + tree.sibling_pairs()
    if not pairs:
        return []
    cosines = np.array([float(q.mu[a] @ q.mu[b]) for a, b in pairs])
    order = np.argsort(-cosines, kind="stable")[:limit]
    chosen = [tuple(int(v) for v in pairs[i]) for i in order]
    if mass is not None:
        leaves = [n for n in tree.breadth_first()[1:] if not tree.children[n]]
        light = sorted(leaves, key=lambda n: mass[n])[:limit]
        chosen += [(int(tree.parent[n]), int(n)) for n in light if (int(tree.parent[n]), int(n)) not in chosen]
    return chosen


def try_merge(tree: Tree, stats: vi.Stats, hyper: vi.Hyper, q: vi.Globals, keep: int, gone: int,
              merged_entropy: float, before: float):
    """Merge ``gone`` into ``keep`` if the bound rises: ``(tree, stats, q, gain)`` or None."""
    new_tree = tree.copy()
    new_tree.merge(keep, gone)
    new_stats = stats.copy()
    merge_slots(new_stats.sums, new_stats.mass, new_stats.entropy, keep, gone, merged_entropy)
    new_q = q.copy()
    new_q.mu[gone] = 0.0
    new_q.eta[gone] = 0.0
    _local_step(new_tree, new_stats, hyper, new_q, [keep])
    after = vi.elbo(new_tree, new_stats, hyper, new_q)
    if after > before:
        return new_tree, new_stats, new_q, after - before
    return None


def move_candidates(tree: Tree, q: vi.Globals, limit: int) -> list:
    """Up to ``limit`` moves, the largest gain in cosine first:

    * ``("move", node, new parent)``: the sibling or grandparent whose mean is most similar to the
      node's, when more similar than its parent's;
    * ``("swap", parent, child)``: a child whose mean is more similar to its grandparent's than its
      parent's is: the two exchange places (a heavy leaf born before its true parent ends up above it).
    """
    found = []
    for node in tree.breadth_first()[1:]:
        parent = int(tree.parent[node])
        here = float(q.mu[parent] @ q.mu[node])
        options = [s for s in tree.children[parent] if s != node]
        grand = int(tree.parent[parent])
        if grand >= 0:
            options.append(grand)
            gain = float(q.mu[grand] @ q.mu[node] - q.mu[grand] @ q.mu[parent])
            if gain > 0:
                found.append((gain, "swap", parent, node))
        if options:
            cosines = q.mu[options] @ q.mu[node]
            best = int(np.argmax(cosines))
            if cosines[best] > here:
                found.append((float(cosines[best] - here), "move", node, options[best]))
    found.sort(key=lambda f: -f[0])
    return [f[1:] for f in found[:limit]]


def try_move(tree: Tree, stats: vi.Stats, hyper: vi.Hyper, q: vi.Globals, kind: str, a: int, b: int,
             before: float, max_depth: int | None = None):
    """Make the move ``(kind, a, b)`` if the bound rises (and the tree keeps at most ``max_depth``
    levels): ``(tree, q, gain)`` or None."""
    new_tree = tree.copy()
    if kind == "move":
        if b in tree.subtree(a):
            return None
        new_tree.move(a, b)
    else:
        new_tree.swap(a, b)
    if max_depth is not None and max(new_tree.depths().values()) + 1 > max_depth:
        return None
    new_q = q.copy()
    _local_step(new_tree, stats, hyper, new_q, [a, b])
    after = vi.elbo(new_tree, stats, hyper, new_q)
    if after > before:
        return new_tree, new_q, after - before
    return None
