"""A Gibbs task that samples its block on several threads and exchanges with the server once.

With ``GibbsLDA(threads=T)`` a task cuts its block's documents into T slices and samples them at
the same time on T threads (the sampling kernels release the GIL), each against its own copy of
the counts. After every step the threads' changes are merged into each other's copies, in memory
(AD-LDA between the threads, with no lag), and the task exchanges the sum of its threads' changes
with the model server once a round, on a background thread while the next step samples (the
other tasks' changes it brings back are merged after that step). So the server sees one exchange per task where T
single-threaded partitions would each make one: with one partition per executor host and as many
threads as the host has cores, the host's deltas are combined before they reach the server.

Exactness under retries and speculative copies is the argument the attempt ledger already makes
for a single sender: the combined pushes are this task attempt's own, booked under its
(job, partition, attempt), and settled with Spark's winning attempts at the job's end.

The threads' slices and seeds depend only on the block and T, and the merges happen at fixed
points, so a task's result does not depend on how its threads were scheduled.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import _delta_kernels, sampler
from .gibbs_task import _background, _clock, _coo
from .local_counts import LocalCounts

__all__ = ["sample_threaded"]


class _Slice:
    """One thread's documents (views into the block's arrays) and its copy of the counts."""

    def __init__(self, block, topics, doc_topic, first: int, stop: int, num_words: int, num_topics: int):
        offsets = block.offsets
        lo, hi = int(offsets[first]), int(offsets[stop])
        self.offsets = offsets[first:stop + 1] - lo
        self.words = block.words[lo:hi]
        self.topics = topics[lo:hi]            # a view: the thread's sweeps write the block's topics
        self.doc_topic = doc_topic[first:stop]
        self.num_docs = stop - first
        self.counts = LocalCounts(self.words, self.topics, num_words=num_words, num_topics=num_topics)


def _coalesce(deltas) -> tuple[np.ndarray, np.ndarray]:
    """The sum of sorted, coalesced flat COO changes, sorted, coalesced, without zeros."""
    index, value = np.zeros(0, np.int64), np.zeros(0, np.int32)
    for i, v in deltas:
        if len(i):
            index, value = _delta_kernels.add_sorted(index, value, np.asarray(i, np.int64),
                                                     np.asarray(v, np.int32))
    return index, value


def sample_threaded(task, block, ch, live, timing, topics, doc_topic):
    """Run ``task``'s sweeps of ``block`` on ``task.threads`` threads (see the module); update
    ``topics`` and ``doc_topic`` in place, exchanging with the server through ``ch``."""
    K, V, T = task.K, task.V, task.threads
    num_docs = len(block.offsets) - 1
    bounds = [num_docs * t // T for t in range(T + 1)]
    slices = [_Slice(block, topics, doc_topic, bounds[t], bounds[t + 1], V, K) for t in range(T)]
    with _clock(timing, "sync"):
        version = task._first_pull(ch, block, slices[0].counts.arrays, timing)
        _copy_counts(slices)
    steps = [task._steps(s.num_docs, block.partition) for s in slices]   # as many steps for every slice
    last = len(steps[0]) - 1
    pending = _coalesce([])   # the threads' summed changes since the last push (in every copy already)
    exchange = None           # the push in flight, on the background thread while the next step samples
    with ThreadPoolExecutor(T, thread_name_prefix="deepdist-gibbs-thread") as pool:
        for i in range(last + 1):
            _, seed, sync = steps[0][i]
            wall = time.perf_counter()
            cpus = list(pool.map(lambda t: _sweep(task, slices[t], steps[t][i][0], sampler.derive_seed(seed, t)),
                                 range(T)))
            timing["sweep_seconds"] += time.perf_counter() - wall
            timing["sweep_cpu_seconds"] += sum(c for c, _ in cpus)
            with _clock(timing, "sync"):
                deltas = [d for _, d in cpus]
                # each thread adds the others' changes to its own copy: the copies are the threads' own
                timing["sync_cpu_seconds"] += sum(pool.map(lambda u: _merge_others(slices[u], u, deltas), range(T)))
                pending = _coalesce([pending, *deltas])
                if sync or i == last:
                    index, value = pending
                    pending = _coalesce([])
                    if exchange is not None:   # the last push's answer: the other tasks' changes
                        version = _finish(exchange, ch, slices, (index, value), timing)
                        exchange = None
                    if i == last:
                        if len(index):
                            task._push(ch, _coo(index, value, V * K, K), version, live)
                    else:
                        exchange = _background().submit(task._exchange, ch, index, value, version, live, timing)


def _copy_counts(slices) -> None:
    """Every thread's copy as the first one's (after a pull); all of them marked pushed."""
    first = slices[0].counts
    first.mark_pushed()
    for s in slices[1:]:
        s.counts.word_topic[...] = first.word_topic
        s.counts.topic_totals[...] = first.topic_totals
        s.counts.mark_pushed()


def _sweep(task, part: _Slice, docs, seed):
    """One thread's step and its change since the last one; returns (its CPU seconds, the change)."""
    cpu = time.thread_time()
    sampler.sweep(part.offsets, part.words, part.topics, part.doc_topic, part.counts.word_topic,
                  part.counts.topic_totals, task.alpha, task.beta, seed=seed, docs=docs, validate=False)
    delta = part.counts.take_unpushed()
    return time.thread_time() - cpu, delta


def _merge_others(part: _Slice, mine: int, deltas) -> float:
    """The other threads' changes into this thread's copy (not its own to push); its CPU seconds."""
    cpu = time.thread_time()
    for t, (index, value) in enumerate(deltas):
        if t != mine and len(index):
            part.counts.merge(index, value)
    return time.thread_time() - cpu


def _finish(exchange, ch, slices, pending, timing) -> int:
    """Merge a finished exchange's answer into every thread's copy; returns the version they are at.

    ``pending`` is the summed change the threads made since that push, in every copy and not yet
    pushed. When the server cannot tell what changed, every copy becomes the server's counts plus
    ``pending``.
    """
    version, changes = exchange.result()
    if changes is None:
        version = ch.pull_into(slices[0].counts.arrays, ["word_topic", "topic_totals"])
        index, value = pending
        if len(index):
            _delta_kernels.apply_sparse_delta(slices[0].counts.word_topic, slices[0].counts.topic_totals,
                                              index, value)
        _copy_counts(slices)
        return version
    part = changes.get("word_topic_flat")
    if part is not None and len(part.indices):
        values = part.values.astype(np.int32, copy=False)
        for s in slices:
            s.counts.merge(part.indices, values)
        timing["changed_entries"] += len(part.indices)
    return version
