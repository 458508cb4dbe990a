"""The passes of a :class:`~deepdist.dnt.DNT` fit, over one fit-state object.

A pass visits every batch once: ``batches_per_partition`` Spark jobs (*rounds*), each visiting
batch r of every partition (:class:`deepdist.dnt.task.RoundTask`). After each round the driver

1. drops the birth *extras* of the batches just visited (their memos now hold the new node);
2. checks that the server's statistics equal the sum of the memos (a linear sketch, or all of
   them with ``verify="full"``) and rebuilds them from the memos if not (a lost executor);
3. runs the global step (:func:`deepdist.dnt.variational.global_step`) on S + extras and
   writes the rows the next round's tasks pull: β A(η) µ (``weights``) and E[log π].

After a pass, structure moves (:mod:`deepdist.dnt.moves`): merges of the pass's candidates whose
merged entropies the last round reported, then births from the documents the rounds collected.
Merges renumber memos, so they travel to the next job's tasks as operations to replay.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np


from . import memo as memo_
from . import moves
from . import parallel
from . import variational as vi
from .task import RoundTask
from .tree import Tree

__all__ = ["FitState", "run_pass", "server_stats", "exact_stats", "compact"]

log = logging.getLogger("deepdist.dnt")


@dataclass
class FitState:
    vocabulary: object
    hyper: vi.Hyper
    tree: Tree
    q: vi.Globals
    model: dict  # the server's arrays
    state: object  # RDD of shards
    num_docs: int
    partitions: int
    dd: object = None
    job: int = 0
    done: int = 0  # passes done
    ops: list = field(default_factory=list)  # moves the next job's tasks replay
    extras: dict = field(default_factory=dict)  # (partition, batch) -> moves.Extra
    repairs: int = 0
    elbo_trace: list = field(default_factory=list)  # (job, elbo, moves since the previous entry)
    describe: str = "elbo -"
    heldout: object = None
    # epochs of a dependent fit (DNT(history=...)): the earlier epochs' pseudo-statistics (κ₂/β times
    # each node's last mean, and its document counts of the window) that the global step adds to S
    history: object = None
    past: list = field(default_factory=list)  # own masses of the window's epochs, per slot, oldest first
    ids: np.ndarray = None  # a node's identity per slot (−1: free), kept across epochs
    next_id: int = 1
    events: list = field(default_factory=list)  # ("birth", id, parent id) and ("merge", gone id, kept id)
    warm: bool = False  # started from an earlier epoch's tree

    def __post_init__(self):
        if self.ids is None:
            self.ids = np.full(self.tree.capacity, -1, np.int64)
            self.ids[0] = 0


# -- the server's statistics -------------------------------------------------------------------
def server_stats(fit: FitState) -> vi.Stats:
    """S as the server holds it, rows per slot (a copy)."""
    params = fit.dd.store.params
    with fit.dd.store.lock:
        return vi.Stats(params["mass"].copy(), np.ascontiguousarray(params["stats"].T), params["entropy"].copy())


def effective_stats(fit: FitState, history: bool = True) -> vi.Stats:
    """S plus the extras of births not yet seen by their batches' memos, plus (``history``) the
    earlier epochs' pseudo-statistics of a dependent fit."""
    stats = server_stats(fit)
    for extra in fit.extras.values():
        extra.add_to(stats)
    if history and fit.history is not None:
        stats.mass += fit.history.mass
        stats.sums += fit.history.sums
    return stats


def _shard_statistics(capacity, ops=()):
    def statistics(shard):
        flats, values = [], []
        mass, entropy = np.zeros(capacity), np.zeros(capacity)
        for batch, memo in zip(shard.batches, shard.memos):
            memo = memo_.replay(batch, memo, ops, capacity)
            f, v = memo_.statistics(batch, memo.lam, capacity)
            flats.append(f)
            values.append(v)
            mass += memo.mass
            entropy += memo.entropy
        return (np.concatenate(flats) if flats else np.zeros(0, np.int64),
                np.concatenate(values) if values else np.zeros(0), mass, entropy)
    return statistics


def exact_stats(state, num_words: int, capacity: int, ops=()):
    """The sum of all memos' statistics: ``(stats (V, capacity), mass, entropy)``, by one Spark job.

    ``ops``: merges the driver made since the memos' last job (the next job's tasks replay them;
    the server's statistics already hold them), applied first so the two compare."""
    stats = np.zeros(num_words * capacity)
    mass, entropy = np.zeros(capacity), np.zeros(capacity)
    for flat, values, m, h in state.map(_shard_statistics(capacity, list(ops))).collect():
        np.add.at(stats, flat, values)
        mass += m
        entropy += h
    return stats.reshape(num_words, capacity), mass, entropy


def _sketch_of_server(fit: FitState) -> tuple[float, float]:
    params, cap = fit.dd.store.params, fit.tree.capacity
    active = fit.tree.active()
    total = scale = 0.0
    with fit.dd.store.lock:
        stats = params["stats"]
        step = max(1, 4_000_000 // max(len(active), 1))
        for start in range(0, stats.shape[0], step):
            rows = np.arange(start, min(start + step, stats.shape[0]))
            block = stats[start:start + len(rows)][:, active]
            weights = memo_.sketch_weights((rows[:, None] * cap + active[None, :]).ravel())
            total += float(weights @ block.ravel())
            scale += float(np.abs(block).sum())
    return total, scale


def verify(dnt, fit: FitState, reports, job: int) -> dict:
    """Step 2: compare the server's statistics with the memos'; repair them from the memos when
    they differ. Returns what the check found (for the record)."""
    params = fit.dd.store.params
    mass = np.sum([r["mass"] for r in reports], axis=0)
    entropy = np.sum([r["entropy"] for r in reports], axis=0)
    memo_sketch = sum(r["sketch"] for r in reports)
    server_sketch, scale = _sketch_of_server(fit)
    with fit.dd.store.lock:
        mass_error = float(np.abs(params["mass"] - mass).max())
        entropy_error = float(np.abs(params["entropy"] - entropy).max())
    tolerance = 1e-9 * max(scale, 1.0)
    found = {"sketch_error": abs(server_sketch - memo_sketch), "mass_error": mass_error,
             "entropy_error": entropy_error}
    wrong = (found["sketch_error"] > tolerance or mass_error > 1e-8 * max(fit.num_docs, 1)
             or entropy_error > 1e-8 * max(fit.num_docs, 1))
    if dnt.verify == "full" or wrong:
        stats, mass, entropy = exact_stats(fit.state, len(fit.vocabulary), fit.tree.capacity)
        with fit.dd.store.lock:
            found["memo_error"] = float(np.abs(params["stats"] - stats).max())
            found["memo_scale"] = float(np.abs(stats).max())
            if wrong:
                params["stats"][...] = stats
                params["mass"][...] = mass
                params["entropy"][...] = entropy
    if wrong:
        fit.repairs += 1
        log.warning("DNT job %d: the server's statistics differed from the batches' memos (sketch off by %.3g, "
                    "mass by %.3g); rebuilt from the memos (repair %d). A lost executor or a task Spark "
                    "rebuilt from the lineage does this", job, found["sketch_error"], mass_error, fit.repairs)
    found["repaired"] = bool(wrong)
    return found


def publish(fit: FitState) -> None:
    """Write what the tasks pull: β A(η) µ per word (``weights``) and E[log π] (``log_prior``)."""
    weights = vi.node_weights(fit.tree, fit.hyper, fit.q)
    params = fit.dd.store.params
    with fit.dd.store.lock:
        params["weights"][...] = weights.T
        params["log_prior"][...] = fit.q.log_prior


def global_step(dnt, fit: FitState, moved: bool, trace: bool = True) -> float:
    """Step 3: the global step on S + extras, published; returns the bound."""
    stats = effective_stats(fit)
    vi.global_step(fit.tree, stats, fit.hyper, fit.q, sweeps=dnt.mean_sweeps)
    bound = vi.elbo(fit.tree, stats, fit.hyper, fit.q)
    if trace:
        fit.elbo_trace.append((fit.job, bound, moved))
    publish(fit)
    return bound


# -- one pass ------------------------------------------------------------------------------------
def run_pass(dnt, fit: FitState, rng) -> dict:
    """One pass over the data (a round per batch), then the structure moves; returns the record."""
    from pyspark import StorageLevel

    started = time.perf_counter()
    final = fit.done + 1 >= dnt.epochs
    cap, V = fit.tree.capacity, len(fit.vocabulary)
    pass_number = fit.done + 1
    # the extras of the last births are gone by the end of this pass; the last passes refine
    grow = dnt.grow_epochs if dnt.grow_epochs is not None else max(1, 2 * dnt.epochs // 3)
    may_move = not final and pass_number <= grow
    birth_pass = may_move and dnt.birth_every and pass_number % dnt.birth_every == 0
    merge_pass = may_move and dnt.merge_every and pass_number % dnt.merge_every == 0 and len(fit.tree) > 1
    if fit.warm and not fit.done:
        birth_pass = False  # an epoch's first pass has no statistics of its own documents to aim births
    stats_now = effective_stats(fit, history=False)
    targets = moves.birth_targets(fit.tree, stats_now, dnt.births_per_pass, dnt.max_depth,
                                  dnt.max_children, rng) if birth_pass else []
    if birth_pass and not fit.done and len(fit.tree) == 1 and dnt.max_depth > 1:
        targets = [0]  # the first pass starts with no statistics, and the root holds every document
    candidates = moves.merge_candidates(fit.tree, fit.q, dnt.merge_candidates, stats_now.mass) if merge_pass else []
    limit = -(-dnt.birth_docs // (fit.partitions * dnt.batches_per_partition)) if targets else 0
    bytes_out_before = fit.dd.store.status()["bytes_out"]
    collected, checks, reports = [], [], []
    pushed = changed = 0
    moved = bool(fit.ops)
    for r in range(dnt.batches_per_partition):
        task = RoundTask(fit.dd.channel(fit.job), job=fit.job, batch=r, ops=fit.ops, capacity=cap, num_words=V,
                         seed=dnt.seed, birth_targets=targets, birth_limit=limit,
                         merge_pairs=candidates if r == dnt.batches_per_partition - 1 else (), hook=dnt._task_hook)
        previous = fit.state
        new_state = previous.mapPartitions(task, preservesPartitioning=True).persist(StorageLevel.MEMORY_AND_DISK)
        label = f"pass {pass_number}/{dnt.epochs}" + (f" batch {r + 1}/{dnt.batches_per_partition}"
                                                       if dnt.batches_per_partition > 1 else "")
        fit.state = new_state
        reports = fit.dd.run_epoch(fit.job, lambda: new_state.map(_report).collect(), label=label,
                                   describe=lambda: fit.describe)
        previous.unpersist()
        fit.ops = []
        for key in [k for k in fit.extras if k[1] == r]:
            del fit.extras[key]
        checks.append(verify(dnt, fit, reports, fit.job))
        for report in reports:
            pushed += report["bytes_pushed"]
            changed += report["changed_docs"]
            for target, piece in report["collected"].items():
                collected.append((target, ((report["partition"], r), piece)))
        # in the first pass the bound grows as batches join S, not by inference: traced once all have
        bound = global_step(dnt, fit, moved, trace=fit.done > 0 or r == dnt.batches_per_partition - 1)
        moved = False
        fit.describe = f"elbo {bound:.6g}, {len(fit.tree)} nodes"
        fit.job += 1
    fit.done += 1
    record = {"epoch": fit.done, "elbo": bound, "nodes": len(fit.tree), "changed_docs": changed,
              "bytes_pushed": pushed, "bytes_pulled": fit.dd.store.status()["bytes_out"] - bytes_out_before,
              "repaired": any(c["repaired"] for c in checks),
              "memo_error": max((c.get("memo_error", 0.0) for c in checks), default=0.0),
              "births_proposed": len(targets), "births": 0, "merges_proposed": len(candidates), "merges": 0,
              "moves": 0}
    structure_started = time.perf_counter()
    moving = candidates or targets or (not final and dnt.move_candidates and len(fit.tree) > 2)
    stats = effective_stats(fit) if moving else None  # one copy, kept in step with every move made
    if candidates:
        record["merges"], stats = _merges(dnt, fit, candidates, reports, stats)
    if not final and dnt.move_candidates and len(fit.tree) > 2:
        # moves change no memo, so they go on while the tree refines: parent links settle late,
        # once the means they are judged by have
        record["moves"] = _moves(dnt, fit, stats)
    births_started = time.perf_counter()
    if targets:
        record["births"] = _births(dnt, fit, targets, collected, rng, stats)
    record["birth_seconds"] = time.perf_counter() - births_started
    record["structure_seconds"] = time.perf_counter() - structure_started
    if record["births"] or record["merges"] or record["moves"]:
        record["elbo_after_moves"] = global_step(dnt, fit, True)
        record["nodes"] = len(fit.tree)
        fit.describe = f"elbo {record['elbo_after_moves']:.6g}, {len(fit.tree)} nodes"
    record["seconds"] = time.perf_counter() - started
    shown = fit.dd.store.metrics  # on /status and the dashboard's curves
    for name, value in (("elbo", record.get("elbo_after_moves", record["elbo"])), ("nodes", record["nodes"]),
                        ("births", record["births"]), ("merges", record["merges"])):
        shown[name].add(float(value))
    return record


def _report(shard):
    return shard.report


def _merges(dnt, fit: FitState, candidates, reports, stats):
    """Try the pass's merge candidates; returns how many were made and the statistics after them."""
    merged_entropy = np.sum([r["pair_entropy"] for r in reports], axis=0)
    before = vi.elbo(fit.tree, stats, fit.hyper, fit.q)
    touched, accepted = set(), 0
    for (keep, gone), entropy in zip(candidates, merged_entropy):
        tree = fit.tree
        if keep in touched or gone in touched or gone not in tree.children or keep not in tree.children:
            continue
        if tree.parent[gone] != keep and tree.parent[gone] != tree.parent[keep]:
            continue
        result = moves.try_merge(tree, stats, fit.hyper, fit.q, keep, gone, float(entropy), before)
        if result is None:
            continue
        fit.tree, stats, fit.q, gain = result
        before += gain
        touched.update((keep, gone))
        accepted += 1
        fit.ops.append(("merge", keep, gone))
        _merge_on_server(fit, keep, gone, float(entropy))
        _merge_identity(fit, keep, gone)
        log.info("DNT: merged node %d into %d (bound +%.4g)", gone, keep, gain)
    return accepted, stats


def _moves(dnt, fit: FitState, stats) -> int:
    before = vi.elbo(fit.tree, stats, fit.hyper, fit.q)
    accepted = 0
    for kind, a, b in moves.move_candidates(fit.tree, fit.q, dnt.move_candidates):
        tree = fit.tree
        if a not in tree.children or b not in tree.children:
            continue
        if kind == "swap" and (tree.parent[b] != a or len(tree.children[b]) >= dnt.max_children):
            continue
        result = moves.try_move(tree, stats, fit.hyper, fit.q, kind, a, b, before, dnt.max_depth)
        if result is None:
            continue
        fit.tree, fit.q, gain = result
        before += gain
        accepted += 1
        log.info("DNT: %s %d %s %d (bound +%.4g)", kind, a, "under" if kind == "move" else "with", b, gain)
    return accepted


def _merge_on_server(fit: FitState, keep: int, gone: int, entropy: float) -> None:
    params = fit.dd.store.params
    with fit.dd.store.lock:  # the server's statistics are word-major: slots are its columns
        memo_.merge_slots(params["stats"].T, params["mass"], params["entropy"], keep, gone, entropy)


def _merge_identity(fit: FitState, keep: int, gone: int) -> None:
    """A merge in the records a dependent fit keeps per slot: the history and the window's masses
    of ``gone`` join ``keep``'s, and ``gone``'s identity ends."""
    if fit.history is not None:
        memo_.merge_slots(fit.history.sums, fit.history.mass, fit.history.entropy, keep, gone, 0.0)
    for mass in fit.past:
        mass[keep] += mass[gone]
        mass[gone] = 0.0
    fit.events.append(("merge", int(fit.ids[gone]), int(fit.ids[keep])))
    fit.ids[gone] = -1


def _birth_identity(fit: FitState, parent: int, born) -> None:
    for slot in born:
        fit.ids[slot] = fit.next_id
        fit.events.append(("birth", fit.next_id, int(fit.ids[parent])))
        fit.next_id += 1
        for mass in fit.past:
            mass[slot] = 0.0


def _births(dnt, fit: FitState, targets, collected, rng, stats) -> int:
    cap, V = fit.tree.capacity, len(fit.vocabulary)
    merged_away = {op[2] for op in fit.ops}
    units = []
    for target in targets:
        pieces = [piece for t, piece in collected if t == target]
        if not pieces or target in merged_away or target not in fit.tree.children:
            continue
        if fit.tree.depth(target) + 1 >= dnt.max_depth or len(fit.tree.children[target]) >= dnt.max_children:
            continue
        docs = moves.BirthDocs.gather(pieces, V, cap)
        docs.renumber(fit.ops, cap)
        units.append((target, docs, min(dnt.birth_children, dnt.max_children - len(fit.tree.children[target]))))
    if dnt.structure != "driver":
        return _births_from_records(dnt, fit, units, stats)
    accepted = 0
    before = vi.elbo(fit.tree, stats, fit.hyper, fit.q) if units else None
    for target, docs, room in units:
        result = moves.propose_birth(fit.tree, stats, fit.hyper, fit.q, target, docs, rng, children=room,
                                     before=before)
        if result is None:
            continue
        fit.tree, stats, fit.q, gain, extras, born = result
        before = vi.elbo(fit.tree, stats, fit.hyper, fit.q)
        _keep_extras(fit, extras)
        accepted += len(born)
        _birth_identity(fit, target, born)
        log.info("DNT: nodes %s born under %d from %d documents (bound +%.4g)", born, target, docs.x.shape[0], gain)
    return accepted


def _births_from_records(dnt, fit: FitState, units, stats) -> int:
    """Births proposed against one base (on Spark with ``structure="parallel"``, on the driver with
    ``"batch"``) and confirmed in target order (:mod:`deepdist.dnt.parallel`)."""
    base = (fit.tree, stats, fit.hyper, fit.q)
    if dnt.structure == "parallel":
        records = parallel.proposals_on_spark(fit.state.context, base, units, seed=dnt.seed, job=fit.job,
                                              partitions=fit.partitions, hook=dnt._structure_hook)
    else:
        records = parallel.propose(base, units, dnt.seed, fit.job)
    fit.tree, stats, fit.q, accepted = parallel.confirm(fit.tree, stats, fit.hyper, fit.q, records,
                                                        dnt.max_children, dnt.max_depth)
    for target, born, extras in accepted:
        _keep_extras(fit, extras)
        _birth_identity(fit, target, born)
        log.info("DNT: nodes %s born under %d (confirmed in order)", born, target)
    return sum(len(born) for _, born, _ in accepted)


def _keep_extras(fit: FitState, extras: dict) -> None:
    for key, extra in extras.items():
        if key in fit.extras:
            old = fit.extras[key]
            extra = moves.Extra(np.concatenate([old.flat, extra.flat]), np.concatenate([old.values, extra.values]),
                                old.mass + extra.mass, old.entropy + extra.entropy)
        fit.extras[key] = extra


def compact(fit: FitState):
    """The fitted tree renumbered breadth first: ``(parents, slots)`` (slots[i] is node i's slot)."""
    slots = fit.tree.breadth_first()
    number = {slot: i for i, slot in enumerate(slots)}
    parents = np.array([-1 if fit.tree.parent[s] < 0 else number[int(fit.tree.parent[s])] for s in slots], np.int64)
    return parents, np.array(slots, np.int64)


