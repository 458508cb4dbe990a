"""One Spark task's share of a Gibbs job: sweep a block of documents, exchange count deltas.

:class:`deepdist.lda.gibbs.GibbsLDA` runs one Spark job per ``sweeps_per_job`` sweeps; in it each
partition's :class:`_Task`

* pulls the counts n_wk (only the rows of its own words when that is smaller);
* runs SparseLDA sweeps (:mod:`deepdist.lda.sampler`) against its local copy;
* every ``sync_every`` sweeps pushes its change of n_wk as sparse int32 COO entries (with the
  K-vector change of n_k, so the driver does not derive it) and gets the
  other tasks' changes since its last sync back in the same round trip. That exchange runs on a
  background thread while the next sweep samples (the kernel releases the GIL); with other tasks
  to hear from, the sweep stops after its first eighth to merge the answer, which is back by
  then, rather than leaving it for the next sweep. In the first
  ``burn_in_sweeps`` sweeps it exchanges ``burn_in_syncs`` times a sweep, after each slice of
  its documents: shards that see each other only once a sweep settle on different labellings of
  the forming topics, and their words then keep more topics, and cost more per token, for tens of
  sweeps;
* reports its block's new assignments, with a 64-bit linear sketch of its contribution to n_wk
  that lets the driver check the server's counts exactly.

A task that runs after its job was settled is Spark recomputing a lost cached block from the
lineage (an executor died). The server refuses pushes to a settled epoch (409), and the counts
that sampling would need describe assignments that no longer exist, so such a task neither
samples nor pushes: the block passes through with the assignments it came with (those of the
last lineage cut, or of a block that survived), keeping the number of the job that produced
them. The next live task reports that number (``input_job``); when it is not the previous job's,
the task leaves the block unsampled for that job, and the job-end checksum rebuilds the
server's counts from the assignments the tasks actually hold.
"""

from __future__ import annotations

import contextlib
import time

import numpy as np

from ..errors import ConfigurationError, SupersededAttemptError
from ..sparse import SparseRows
from . import _delta_kernels, sampler
from .local_counts import LocalCounts

_SKETCH_KEY = 0x5EED5CE7C4
# A whole sweep whose exchange is in flight first samples 1/_HEAD_PARTS of its documents, long
# enough for the exchange's answer to be back, and then merges it.
_HEAD_PARTS = 8


def _sketch_weights(size: int) -> np.ndarray:
    """Pseudo-random uint64 weights of the linear sketch Σ weight[w*K+k] n_wk (mod 2^64), cached."""
    cached = _SKETCH_CACHE.get(size)
    if cached is None:
        _SKETCH_CACHE.clear()
        cached = _SKETCH_CACHE[size] = np.random.PCG64(_SKETCH_KEY).random_raw(size).astype(np.uint64)
    return cached


_SKETCH_CACHE: dict = {}


def _coo(index, value, size, num_topics=None):
    """An update of n_wk by the flat COO change ``(index, value)``; with ``num_topics``, the change
    of n_k travels with it (K numbers the task has at hand), so the driver need not derive it."""
    index = np.asarray(index, dtype=np.int64)
    value = np.asarray(value, dtype=np.int32)
    update = {}
    if num_topics is not None:
        totals = _delta_kernels.topic_totals_delta(index, value, num_topics)
        update["topic_totals"] = SparseRows(np.arange(num_topics, dtype=np.int32), totals, (num_topics,))
    if size < 2 ** 31:
        index = index.astype(np.int32)  # half the bytes on the wire
    update["word_topic_flat"] = SparseRows(index, value, (size,))
    return update


def _partition_counts(words, topics, num_topics):
    """This partition's n_wk as flat COO ``(index, count)``."""
    flat = words.astype(np.int64) * num_topics + topics
    index, count = np.unique(flat, return_counts=True)
    return index, count.astype(np.int32)


@contextlib.contextmanager
def _clock(timing: dict, name: str):
    """Add the wall and CPU seconds of the block to ``timing[name + "_seconds"]`` and ``_cpu_seconds``."""
    wall, cpu = time.perf_counter(), time.thread_time()
    try:
        yield
    finally:
        timing[name + "_seconds"] += time.perf_counter() - wall
        timing[name + "_cpu_seconds"] += time.thread_time() - cpu


_BACKGROUND = []


def _background():
    """This process's one background thread for count exchanges (its HTTP session is kept)."""
    if not _BACKGROUND:
        from concurrent.futures import ThreadPoolExecutor

        _BACKGROUND.append(ThreadPoolExecutor(1, thread_name_prefix="deepdist-gibbs-sync"))
    return _BACKGROUND[0]


class _EpochSettled(Exception):
    """The server refused a push: this task's job is already settled (the task is a recomputation)."""


class _Task:
    """One job's work on one partition (``mapPartitions``); carries configuration only."""

    def __init__(self, channel, *, job, first_sweep, sweeps, sync_every, seed, num_topics, num_words,
                 alpha, beta, pull_rows, histograms, burn_in_sweeps=0, burn_in_syncs=1, merge_early=False,
                 initial=None, hook=None, threads=1):
        self.channel, self.job, self.first_sweep, self.sweeps = channel, job, first_sweep, sweeps
        self.sync_every, self.seed, self.K, self.V = sync_every, seed, num_topics, num_words
        self.burn_in_sweeps, self.burn_in_syncs, self.merge_early = burn_in_sweeps, burn_in_syncs, merge_early
        self.alpha, self.beta, self.pull_rows, self.histograms = alpha, beta, pull_rows, histograms
        self.initial, self.hook, self.threads = initial, hook, threads

    def __call__(self, blocks):
        with self.channel.open() as ch:
            for block in blocks:
                yield self._run(block, ch)

    def _push(self, ch, update, version, live, changes=False):
        """Push ``update``; with ``changes``, return the other tasks' changes since ``version``."""
        if live:
            try:
                result = ch.push(update, version, changes_since=version if changes else None)
            except SupersededAttemptError as err:
                # the epoch settled between the liveness check and this push: the task is a
                # recomputation after all (say, of a block lost while the driver verified it)
                if "settled" in str(err):
                    raise _EpochSettled(str(err)) from err
                raise
            if self.hook is not None:
                self.hook(job=self.job, partition=ch.partition, attempt=ch.attempt, event="pushed")
            return result
        return None

    def _run(self, block, ch):
        # the server's epoch is the wire serial of the job running now (the channel's, for a
        # live task); any other value means Spark is recomputing a lost block of an older job
        live = ch.client.status()["epoch"] == ch.epoch
        if self.sweeps and not live:
            return block
        try:
            return self._sample(block, ch, live)
        except _EpochSettled:
            if self.sweeps:
                return block  # nothing of this attempt was applied: a settled epoch refuses all
            return self._sample(block, ch, False)

    def _sample(self, block, ch, live):
        K, V = self.K, self.V
        words, offsets = block.words, block.offsets
        timing = {"sweep_seconds": 0.0, "sweep_cpu_seconds": 0.0, "pulled_rows": 0, "changed_entries": 0,
                  "sync_seconds": 0.0, "sync_cpu_seconds": 0.0, "exchange_seconds": 0.0,
                  "exchange_cpu_seconds": 0.0, "early_merges": 0}
        doc_topic = None
        if self.sweeps == 0:  # the initialisation job: assign topics, push the partition's counts
            topics = self._initial_topics(block)
            if words.size:
                self._push(ch, _coo(*_partition_counts(words, topics, K), V * K, K), 0, live)
        elif block.job != self.job - 1:
            # Spark rebuilt this block from older assignments than the server's counts hold (the
            # newer ones died with an executor). Sampling it now would remove its tokens from
            # counts that never held them; this job leaves the block as it is, its checksum
            # brings the counts in line, and the next job samples it against the right counts.
            topics = block.topics
        elif self.threads > 1 and len(offsets) - 1 >= self.threads:
            topics = np.array(block.topics, copy=True)
            doc_topic = sampler.doc_topic_from_assignments(offsets, topics, K)
            from .gibbs_threads import sample_threaded   # it builds on this module's helpers

            sample_threaded(self, block, ch, live, timing, topics, doc_topic)
        else:
            topics = np.array(block.topics, copy=True)
            local = LocalCounts(words, topics, num_words=V, num_topics=K)
            doc_topic = sampler.doc_topic_from_assignments(offsets, topics, K)
            exchange = None  # the count exchange in flight: it overlaps the next step's sampling
            steps = self._steps(len(offsets) - 1, block.partition)
            for i, (docs, seed, sync) in enumerate(steps):
                if sync:
                    with _clock(timing, "sync"):
                        if i == 0:
                            version = self._first_pull(ch, block, local.arrays, timing)
                            local.mark_pushed()
                        else:
                            if exchange is not None:  # back-to-back syncs: the last one must land first
                                version = self._finish(exchange, ch, local, timing)
                            # push our change since the last sync and fetch only what the other tasks
                            # added meanwhile (a sweep's changes are far smaller than the tables); the
                            # answer is merged once it is back, after the next step or its head
                            index, value = local.take_unpushed()
                            exchange = _background().submit(self._exchange, ch, index, value, version, live, timing)
                split = self._head_end(docs, len(offsets) - 1) if sync and exchange is not None else None
                if split is None:
                    self._sweep(block, topics, doc_topic, local, docs, seed, timing)
                else:
                    # the exchange just sent usually lands while the head of the sweep samples:
                    # merged there rather than at the next sweep, the other tasks' changes reach
                    # the copy most of a sweep sooner, and stale copies keep words' topic lists long
                    self._sweep(block, topics, doc_topic, local, (docs[0], split), sampler.derive_seed(seed, 0), timing)
                    if exchange.done():
                        with _clock(timing, "sync"):
                            version = self._finish(exchange, ch, local, timing)
                        exchange = None
                        timing["early_merges"] += 1
                    self._sweep(block, topics, doc_topic, local, (split, docs[1]), sampler.derive_seed(seed, 1), timing)
                if exchange is not None and i + 1 < len(steps) and not steps[i + 1][2]:
                    with _clock(timing, "sync"):
                        version = self._finish(exchange, ch, local, timing)
                    exchange = None
            if exchange is not None:
                with _clock(timing, "sync"):
                    version = self._finish(exchange, ch, local, timing)
            index, value = local.take_unpushed()
            if index.size:
                self._push(ch, _coo(index, value, V * K, K), version, live)
        return block.evolve(topics, self._report(ch, block, topics, doc_topic, timing), self.job)

    def _first_pull(self, ch, block, arrays, timing) -> int:
        """The counts into ``arrays``: the rows of the block's words, or all of them when that
        is smaller (rows cost an 8-byte index each on top of the row); returns the version."""
        K, V = self.K, self.V
        if self.pull_rows == "rows" or (self.pull_rows == "auto" and len(block.rows) * (8 + 4 * K) < 0.9 * V * 4 * K):
            timing["pulled_rows"] += len(block.rows)
            return ch.pull_rows_into(arrays, {"word_topic": block.rows, "topic_totals": np.arange(K, dtype=np.int64)})
        return ch.pull_into(arrays, ["word_topic", "topic_totals"])

    def _sweep(self, block, topics, doc_topic, local, docs, seed, timing):
        with _clock(timing, "sweep"):
            sampler.sweep(block.offsets, block.words, topics, doc_topic, local.word_topic, local.topic_totals,
                          self.alpha, self.beta, seed=seed, docs=docs, validate=False)

    def _head_end(self, docs, num_docs):
        """Where a whole sweep that starts with an exchange in flight stops to merge it; None: it doesn't.

        Only with other tasks to hear from, and not in the burn-in's slices, which exchange anyway.
        """
        if not self.merge_early or docs != (0, num_docs) or num_docs < _HEAD_PARTS:
            return None
        return num_docs // _HEAD_PARTS

    def _steps(self, num_docs, partition):
        """This job's sampling steps ``(docs, seed, sync)``: a sweep each, or a slice of one in burn-in.

        A sweep of the first ``burn_in_sweeps`` is cut into ``burn_in_syncs`` slices of the
        documents with an exchange before each, so the shards' copies agree on the topics while
        they form; ``sync`` says whether an exchange starts before the step. A whole sweep is
        seeded by (seed, partition, sweep), a slice by that seed and the slice's number.
        """
        steps = []
        for j in range(self.sweeps):
            sweep_number = self.first_sweep + j
            seed = sampler.derive_seed(self.seed, partition, sweep_number)
            slices = self.burn_in_syncs if sweep_number <= self.burn_in_sweeps else 1
            if slices == 1:
                steps.append(((0, num_docs), seed, j % self.sync_every == 0))
                continue
            for c in range(slices):
                steps.append(((num_docs * c // slices, num_docs * (c + 1) // slices),
                              sampler.derive_seed(seed, c), True))
        return steps

    def _exchange(self, ch, index, value, version, live, timing):
        """Push a delta (if any) and fetch the other tasks' changes since ``version`` (background)."""
        with _clock(timing, "exchange"):
            answer = None
            if index.size:
                answer = self._push(ch, _coo(index, value, self.V * self.K, self.K), version, live, changes=True)
            return answer if answer is not None else ch.pull_changes(version)

    def _finish(self, exchange, ch, local, timing) -> int:
        """Merge a finished exchange into the local copy; return the version it brought it to."""
        version, changes = exchange.result()
        if changes is None:  # the server cannot tell what changed: take the counts, keep our own sweeps
            return local.rebase(lambda arrays: ch.pull_into(arrays, ["word_topic", "topic_totals"]))
        part = changes.get("word_topic_flat")  # n_k follows from it; the "topic_totals" parts are not needed
        if part is not None:
            local.merge(part.indices, part.values.astype(np.int32, copy=False))
            timing["changed_entries"] += len(part.indices)
        return version

    def _initial_topics(self, block):
        if self.initial is not None:
            topics = self.initial.value.get(block.partition)
            if topics is None or topics.shape != block.words.shape:
                raise ConfigurationError(
                    f"partition {block.partition} has {block.num_tokens} tokens but the checkpoint "
                    f"holds {None if topics is None else topics.size}: resume needs the same input and partitioning")
            return np.ascontiguousarray(topics, dtype=np.int32)
        seed = sampler.derive_seed(self.seed, block.partition, 0)
        return sampler.random_topics(block.num_tokens, self.K, seed)

    def _report(self, ch, block, topics, doc_topic, timing):
        """``doc_topic``: n_dk as the sweeps kept it in step with ``topics`` (None: count it)."""
        K = self.K
        weights = _sketch_weights(self.V * K)
        flat = block.words.astype(np.int64) * K + topics
        if doc_topic is None:
            doc_topic = sampler.doc_topic_from_assignments(block.offsets, topics, K)
        extra = {"tokens": block.num_tokens, "docs": len(block.offsets) - 1, "input_job": block.job,
                 "sketch": int(weights[flat].sum(dtype=np.uint64)),
                 "topic_counts": np.bincount(topics, minlength=K).astype(np.int64),
                 "log_prior": sampler.log_prior_assignments(doc_topic, self.alpha), **timing}
        if self.histograms:
            extra["ndk_hist"] = np.bincount(doc_topic.ravel())
            extra["length_hist"] = np.bincount(np.diff(block.offsets))
        return ch.report(**extra)
