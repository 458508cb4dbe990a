"""One Spark task's share of a DNT round: visit one batch of its partition, push ΔS.

In every job each partition's :class:`RoundTask`

* replays the structure moves the driver made since the last job on all of its memos
  (:func:`deepdist.dnt.memo.replay`), so memos and the server's statistics stay indexed alike;
* pulls the rows of β A(η) µ for the batch's words only, and E[log π] (``log_prior``);
* runs the batch's local step and pushes ΔS = S_b,new − S_b,old (sparse, additive: the server's
  ledger keeps exactly the attempt Spark kept, so retries and speculative copies stay exact);
* reports its partition's totals (mass, entropy and a sketch of Σλx over all its memos) so
  the driver can check the server's statistics, and, when asked, the merged entropies of merge
  candidates and documents of birth targets.

A task that runs for a job already settled is Spark rebuilding a lost cached shard from its
lineage: it replays the moves but neither visits nor pushes (the server refuses a settled job),
and the driver's check repairs the statistics from the memos the shards then hold.
"""

from __future__ import annotations

import time

import numpy as np

from ..errors import SupersededAttemptError
from ..sparse import SparseRows
from . import memo as memos_

__all__ = ["RoundTask"]


class _Settled(Exception):
    pass


class RoundTask:
    """``mapPartitions`` over shards for one job (configuration only; no data)."""

    def __init__(self, channel, *, job, batch, ops, capacity, num_words, seed, birth_targets=(), birth_limit=0,
                 merge_pairs=(), hook=None):
        self.channel, self.job, self.batch, self.ops = channel, job, batch, list(ops)
        self.capacity, self.num_words, self.seed = capacity, num_words, seed
        self.birth_targets, self.birth_limit = list(birth_targets), birth_limit
        self.merge_pairs, self.hook = list(merge_pairs), hook

    def __call__(self, shards):
        with self.channel.open() as ch:
            for shard in shards:
                yield self._run(shard, ch)

    def _run(self, shard, ch):
        started = time.perf_counter()
        cap = self.capacity
        memos = [memos_.replay(b, m, self.ops, cap) for b, m in zip(shard.batches, shard.memos)]
        live = ch.client.status()["epoch"] == ch.epoch
        extra = {"visited": False, "collected": {}, "bytes_pulled_rows": 0, "changed_docs": 0}
        if live and self.batch < len(shard.batches):
            try:
                extra.update(self._visit(shard, memos, ch))
            except _Settled:
                pass
        totals_mass = np.sum([m.mass for m in memos], axis=0) if memos else np.zeros(cap)
        totals_entropy = np.sum([m.entropy for m in memos], axis=0) if memos else np.zeros(cap)
        report = ch.report(
            docs=sum(b.num_docs for b in shard.batches), batch=self.batch, mass=totals_mass, entropy=totals_entropy,
            sketch=float(sum(m.sketch for m in memos)),
            pair_entropy=np.sum([memos_.pair_entropy(m.lam, self.merge_pairs) for m in memos], axis=0)
            if self.merge_pairs and memos else np.zeros(len(self.merge_pairs)),
            task_seconds=time.perf_counter() - started, **extra)
        return shard.evolve(memos, report)

    def _visit(self, shard, memos, ch) -> dict:
        cap, b = self.capacity, self.batch
        batch = shard.batches[b]
        version, arrays = ch.pull_rows({"weights": batch.words, "log_prior": np.arange(cap, dtype=np.int64)})
        weights = arrays["weights"].values
        log_prior = np.asarray(arrays["log_prior"].values, dtype=np.float64)
        active = np.flatnonzero(np.isfinite(log_prior))
        step = time.perf_counter()
        new, (flat, values, d_mass, d_entropy, changed) = memos_.local_step(
            batch, memos[b], weights, log_prior, active, cap)
        step = time.perf_counter() - step
        update = {"mass": d_mass, "entropy": d_entropy}
        if flat.size:
            index = flat.astype(np.int32) if self.num_words * cap < 2 ** 31 else flat
            update["stats_flat"] = SparseRows(index, values, (self.num_words * cap,))
        try:
            ch.push(update, version)
        except SupersededAttemptError as err:
            if "settled" in str(err):
                raise _Settled(str(err)) from err
            raise
        if self.hook is not None:
            self.hook(job=self.job, partition=ch.partition, attempt=ch.attempt, event="pushed")
        memos[b] = new
        rng = np.random.default_rng([self.seed, shard.partition, b, self.job])
        return {"visited": True, "step_seconds": step, "changed_docs": changed,
                "bytes_pulled_rows": int(weights.nbytes),
                "collected": memos_.collect_docs(batch, new.lam, self.birth_targets, self.birth_limit, rng)}
