"""Births proposed model-parallel (Hu et al., section 4): tasks propose, the driver confirms in order.

The driver's own way (``structure="driver"``) proposes a pass's births one after the other,
each on the tree the previous ones left. Model-parallel, every proposal is made against the same
*base*: the tree, statistics and q after the pass's merges and moves. Each target is owned by
one task (targets dealt round-robin over ``partitions`` partitions); a task runs the restricted
VI of its targets' births (:func:`deepdist.dnt.moves.propose_birth`) on its copy of the base
(one Spark broadcast) and returns compact records: the target, the children's means, and the
statistics the birth moves, per batch (:class:`~deepdist.dnt.moves.Extra`), on the children's
provisional slots.

The driver then confirms the records in target order: each takes the lowest free slots (so
slots and node ids are a function of the records alone), its statistics are added, the means of
its neighbourhood updated, and it is kept only if the bound of the tree as it now stands rises.
A retried or speculative task returns the same records (a proposal is a pure function of the
base, its documents and a seed of its own), and Spark keeps one result per partition, so no
record is applied twice. ``structure="batch"`` makes the same proposals on the driver: the
reference the model-parallel tree equals, node for node.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from . import moves
from . import variational as vi

__all__ = ["BirthRecord", "propose", "confirm", "proposals_on_spark"]

log = logging.getLogger("deepdist.dnt")


@dataclass
class BirthRecord:
    """A proposed birth under ``target``: its children's provisional slots and means, the statistics
    it moves per batch (on those slots) and its gain against the base."""

    target: int
    born: list
    mu: np.ndarray  # (children, V)
    eta: np.ndarray
    extras: dict  # batch key -> moves.Extra
    gain: float


def _seed(seed: int, job: int, target: int):
    return np.random.default_rng([seed, job, target, 0xB1])


def propose(base, units, seed: int, job: int) -> list:
    """The records of ``units`` (``[(target, BirthDocs, most children)]``) against ``base`` = (tree, stats, hyper, q);
    refused proposals give none."""
    tree, stats, hyper, q = base
    records = []
    before = vi.elbo(tree, stats, hyper, q) if units else None  # every proposal leaves the base as it was
    for target, docs, room in units:
        room = min(room, len(tree.free_slots()) if target in tree.children else 0)
        if room <= 0:
            continue
        # restore: the base's sums come back bit for bit, so every proposal sees the same base
        # whatever ran before it in this task
        result = moves.propose_birth(tree, stats, hyper, q, target, docs, _seed(seed, job, target), children=room,
                                     before=before, restore=True)
        if result is None:
            continue
        _, _, new_q, gain, extras, born = result
        records.append(BirthRecord(int(target), list(born), new_q.mu[born].copy(), new_q.eta[born].copy(), extras,
                                   float(gain)))
    return records


def _remap(extra: moves.Extra, mapping: dict, cap: int) -> moves.Extra:
    """``extra`` with the provisional slots of ``mapping`` moved to their confirmed ones."""
    target = np.arange(cap)
    target[list(mapping)] = list(mapping.values())
    mass, entropy = np.zeros(cap), np.zeros(cap)
    np.add.at(mass, target, extra.mass)
    np.add.at(entropy, target, extra.entropy)
    return moves.Extra(extra.flat // cap * cap + target[extra.flat % cap], extra.values.copy(), mass, entropy)


def confirm(tree, stats, hyper, q, records, max_children: int, max_depth: int):
    """Apply ``records`` in target order where each still raises the bound: returns
    ``(tree, stats, q, accepted [(target, born slots, extras)])``. ``stats`` is updated in place."""
    cap = tree.capacity
    accepted = []
    before = vi.elbo(tree, stats, hyper, q)
    for record in sorted(records, key=lambda r: r.target):
        target = record.target
        if target not in tree.children or tree.depth(target) + 1 >= max_depth:
            continue
        k = min(len(record.born), max_children - len(tree.children[target]), len(tree.free_slots()))
        if k < len(record.born):
            continue  # the tree filled up since the base: a partial birth was never proposed
        new_tree = tree.copy()
        born = [new_tree.add_child(target) for _ in record.born]
        mapping = dict(zip(record.born, born))
        extras = {key: _remap(extra, mapping, cap) for key, extra in record.extras.items()}
        touched = np.unique(np.concatenate([e.flat % cap for e in extras.values()] + [np.array(born)]))
        saved = stats.sums[touched].copy(), stats.mass.copy(), stats.entropy.copy()
        for extra in extras.values():
            extra.add_to(stats)
        new_q = q.copy()
        new_q.mu[born], new_q.eta[born] = record.mu, record.eta
        moves._local_step(new_tree, stats, hyper, new_q, [target] + born)
        after = vi.elbo(new_tree, stats, hyper, new_q)
        if after > before:
            tree, q, before = new_tree, new_q, after
            accepted.append((target, born, extras))
        else:
            stats.sums[touched], stats.mass[...], stats.entropy[...] = saved
    return tree, stats, q, accepted


def _pack(base):
    """The base with only its instantiated slots' rows: free slots are zeros, and a tree of a few
    nodes in a large capacity should not ship the capacity."""
    tree, stats, hyper, q = base
    active = tree.active()
    return (tree, hyper, active, stats.mass, stats.entropy, stats.sums[active], q.mu[active], q.eta, q.nu, q.psi,
            q.log_prior)


def _unpack(packed):
    tree, hyper, active, mass, entropy, sums, mu, eta, nu, psi, log_prior = packed
    full_sums = np.zeros((tree.capacity, hyper.dim))
    full_mu = np.zeros((tree.capacity, hyper.dim))
    full_sums[active], full_mu[active] = sums, mu
    return (tree, vi.Stats(mass.copy(), full_sums, entropy.copy()), hyper,
            vi.Globals(full_mu, eta.copy(), nu.copy(), psi.copy(), log_prior.copy()))


def proposals_on_spark(sc, base, units, *, seed: int, job: int, partitions: int, hook=None) -> list:
    """:func:`propose` of ``units`` in ``partitions`` Spark tasks, each owning the targets dealt to
    it, the base broadcast once; the records of all, as one list."""
    if not units:
        return []
    owned = [[] for _ in range(max(1, min(partitions, len(units))))]
    for i, unit in enumerate(sorted(units, key=lambda u: u[0])):
        owned[i % len(owned)].append(unit)
    shared = sc.broadcast(_pack(base))

    def run(index, parts):
        records = []
        local = _unpack(shared.value)
        for part in parts:
            records.extend(propose(local, part, seed, job))
        if hook is not None:
            hook(partition=index, records=records)
        return records

    try:
        return sc.parallelize(owned, len(owned)).mapPartitionsWithIndex(run).collect()
    finally:
        shared.unpersist()
