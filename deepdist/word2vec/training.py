"""The task side of word2vec training: what the server holds, the rows a batch reads, the gradient.

Each piece reaches the executors in a Spark closure or broadcast, so each carries
configuration and small arrays, never a socket or the string vocabulary.
"""

from __future__ import annotations

import copy
import time
import zlib
from typing import NamedTuple

import numpy as np

from ..sparse import SparseRows
from ..worker import report

#: gensim's cum_table scale (``Word2Vec.make_cum_table``).
_CUM_DOMAIN = 2 ** 31 - 1
#: ``_Served.task_totals``: sum of alpha x raw words, seconds in gensim's loop, batches.
_TASK_TOTALS = ("alpha_words", "gradient_seconds", "batches")


def _jobs_of(sentences, key_to_index, job_words: int):
    """Group a partition's sentences into gensim-sized jobs of vocabulary indices.

    A job is ``(raw_words, [int32 arrays])``; sentences join a job while its raw
    word count stays within ``job_words``, as in gensim's ``_job_producer``.
    """
    job, size = [], 0
    for sentence in sentences:
        n = len(sentence)
        indices = np.fromiter((key_to_index.get(w, -1) for w in sentence), np.int32, n)
        indices = indices[indices >= 0]
        if job and size + n > job_words:
            yield size, job
            job, size = [], 0
        job.append(indices)
        size += n
    if job:
        yield size, job


# -- what the server holds -----------------------------------------------------------------------
class _Served:
    """The DeepDist model: a gensim ``Word2Vec`` plus the global word counter.

    Pickling (the Spark broadcast of the skeleton) keeps only what training
    needs: the string vocabulary is replaced by ``range(V)``, since jobs already
    hold vocabulary indices.
    """

    def __init__(self, model):
        self.w2v = model
        self.words_done = np.zeros(1, np.int64)
        # pushes applied to each row of the input and output matrices (per-row staleness)
        self.updates_in = np.zeros(len(model.wv), np.int64)
        self.updates_out = np.zeros(len(model.wv), np.int64)
        # what the tasks did, summed on the driver: the per-epoch records and the learning-rate
        # schedule tests read the rate the tasks really applied, not the driver's formula
        self.task_totals = np.zeros(len(_TASK_TOTALS), np.float64)

    def __getstate__(self):
        model = copy.copy(self.w2v)
        model.wv = copy.copy(self.w2v.wv)
        model.wv.key_to_index = range(len(self.w2v.wv.index_to_key))
        model.wv.index_to_key = []
        model.wv.expandos = {k: v for k, v in self.w2v.wv.expandos.items() if k != "count"}
        return {"w2v": model, "words_done": self.words_done, "updates_in": self.updates_in,
                "updates_out": self.updates_out, "task_totals": self.task_totals}


def _output_name(hs: bool) -> str:
    return "w2v.syn1" if hs else "w2v.syn1neg"


class _Plan(NamedTuple):
    """What one batch of jobs reads and writes: input rows, output rows, negative pool counts."""

    words: np.ndarray
    out_rows: np.ndarray
    pool: np.ndarray | None  # per output row: how often the pool holds it (negative sampling)


class _Rows:
    """``rows(batch)``: the rows a batch of jobs reads and writes.

    For negative sampling the task first draws a *pool* of ``pool`` negatives per
    raw word of the batch from the global unigram^0.75 distribution, pulls those
    rows, and lets gensim's kernel sample from the pool.  Every single draw then
    still has the exact global distribution (the pool is an i.i.d. sample of it),
    so the expected gradient is gensim's; only rows the pool holds travel.  The
    pool is drawn as its counts, one multinomial over the vocabulary.
    ``pool=None`` pulls all of ``syn1neg`` and keeps gensim's table.  For
    hierarchical softmax, ``points`` is a CSR of each word's path of inner nodes,
    shipped by broadcast.  The plan made for the pull is kept for the gradient.

    A pool's draws are seeded by (seed, ``job``, partition, attempt, draw): the fit numbers
    its Spark jobs in ``job``, rather than Spark's stage ids, which grow from fit to fit, so
    that the same seed draws the same pools again.
    """

    def __init__(self, hs: bool, n_rows: int, pool: float | None, cum=None, points=None, seed: int = 0,
                 stale_rows: bool = False):
        self.hs, self.n_rows, self.pool, self.cum, self.points, self.seed = hs, n_rows, pool, cum, points, seed
        self.stale_rows = stale_rows  # pull and push the rows' push counters too
        self.job = 0
        self._plans: dict = {}
        self._drawn = 0
        self._p = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_plans"], state["_drawn"], state["_p"] = {}, 0, None
        return state

    def _unigram(self) -> np.ndarray:
        """gensim's negative-sampling distribution, from its ``cum_table``."""
        if self._p is None:
            cum = self.cum.value.astype(np.float64)
            self._p = np.diff(cum, prepend=0.0) / cum[-1]
        return self._p

    def _pool_counts(self, batch) -> np.ndarray:
        from pyspark import TaskContext

        task = TaskContext.get()
        where = (task.partitionId(), task.attemptNumber()) if task else (0, 0)
        self._drawn += 1
        rng = np.random.default_rng([self.seed, self.job, *where, self._drawn])
        size = max(1, int(self.pool * sum(raw for raw, _ in batch)))
        return rng.multinomial(size, self._unigram())

    def plan(self, batch, keep: bool = True) -> _Plan:
        """This batch's rows: made by ``rows`` before the pull, taken by ``gradient`` (``keep=False``)."""
        plan = self._plans.get(id(batch)) if keep else self._plans.pop(id(batch), None)
        if plan is not None:
            return plan
        arrays = [a for _, job in batch for a in job]
        seen = np.bincount(np.concatenate(arrays), minlength=self.n_rows) if arrays else np.zeros(self.n_rows, np.int64)
        words = np.flatnonzero(seen)
        pool = None
        if self.hs:
            indptr, flat = self.points.value
            parts = [flat[indptr[w]:indptr[w + 1]] for w in words]
            out_rows = np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
        elif self.pool is None:
            out_rows = np.arange(self.n_rows)
        else:
            pool = self._pool_counts(batch)
            out_rows = np.flatnonzero(seen + pool)
        plan = _Plan(words, out_rows, pool)
        if keep:
            self._plans[id(batch)] = plan
        return plan

    def __call__(self, batch) -> dict:
        plan = self.plan(batch)
        wanted = {"w2v.wv.vectors": plan.words, _output_name(self.hs): plan.out_rows,
                  "words_done": np.zeros(1, np.int64)}
        if self.stale_rows:
            wanted.update(updates_in=plan.words, updates_out=plan.out_rows)
        return wanted


class _Gradient:
    """``gradient(model, batch)``: train a batch of jobs locally, return the row deltas."""

    def __init__(self, rows: _Rows, *, sg: bool, alpha: float, min_alpha: float, total_words: int,
                 concurrency: int, seed: int, adagrad: bool, compute_loss: bool, epochs: int = 1):
        self.rows = rows
        self.sg, self.alpha, self.min_alpha = sg, alpha, min_alpha
        self.total_words, self.concurrency, self.epochs = total_words, concurrency, epochs
        self.seed, self.adagrad, self.compute_loss = seed, adagrad, compute_loss

    def alpha_at(self, words_done: float) -> float:
        """gensim's linear schedule over all epochs, at ``words_done`` words processed by all tasks."""
        progress = min(1.0, words_done / self.total_words)
        return max(self.min_alpha, self.alpha - (self.alpha - self.min_alpha) * progress)

    def epoch_at(self, words_done: float) -> int:
        """The epoch (from 1) that global progress is in: the k-th ends when all tasks together
        have processed k times the corpus, which is also where a one-job-per-epoch job ends."""
        return min(self.epochs, int(words_done * self.epochs // self.total_words) + 1)

    def __call__(self, served, batch) -> dict:
        from gensim.models.word2vec_inner import train_batch_cbow, train_batch_sg
        from pyspark import TaskContext

        model = served.w2v
        out_name = _output_name(self.rows.hs)
        output = model.syn1 if self.rows.hs else model.syn1neg
        words, out_rows, pool = self.rows.plan(batch, keep=False)
        old_in, old_out = model.wv.vectors[words], output[out_rows]
        if pool is not None:  # gensim samples from the pool's empirical distribution
            model.cum_table = np.round(np.cumsum(pool) * (_CUM_DOMAIN / pool.sum())).astype(np.uint32)
        done = int(served.words_done[0])
        task = TaskContext.get()
        partition = task.partitionId() if task else 0
        model.random = np.random.RandomState(zlib.crc32(f"{self.seed}:{partition}:{done}".encode()))
        model.running_training_loss = 0.0
        work = np.zeros(model.wv.vector_size, np.float32)
        neu1 = np.zeros(model.wv.vector_size, np.float32)
        started, raw, effective, alpha_sum = time.perf_counter(), 0, 0, 0.0
        for raw_words, job in batch:
            alpha = self.alpha_at(done + self.concurrency * raw)
            sentences = [a.tolist() for a in job]
            if self.sg:
                effective += train_batch_sg(model, sentences, alpha, work, self.compute_loss)
            else:
                effective += train_batch_cbow(model, sentences, alpha, work, neu1, self.compute_loss)
            raw += raw_words
            alpha_sum += alpha * raw_words
        seconds = time.perf_counter() - started
        d_in = model.wv.vectors[words] - old_in
        d_out = output[out_rows] - old_out
        if self.adagrad:  # push the step direction, without the learning rate it was taken with
            scale = raw / alpha_sum if alpha_sum > 0 else 1.0
            d_in *= scale
            d_out *= scale
        metrics = {"words_per_sec": raw / max(seconds, 1e-9), "alpha": alpha,
                   "progress": min(1.0, (done + self.concurrency * raw) / self.total_words),
                   # the progress line shows "epoch k/n" from these (deepdist.progress)
                   "epoch": self.epoch_at(done), "epochs": self.epochs}
        if self.compute_loss:
            metrics["loss"] = model.running_training_loss / max(effective, 1)
        report(**metrics)
        update = {"words_done": np.array([raw], np.int64),
                  "task_totals": np.array([alpha_sum, seconds, 1.0], np.float64)}
        index_type = np.int32 if self.rows.n_rows < 2 ** 31 else np.int64  # half the index bytes
        for name, seen, rows, delta, full in (("w2v.wv.vectors", served.updates_in, words, d_in, model.wv.vectors),
                                              (out_name, served.updates_out, out_rows, d_out, output)):
            moved = np.any(delta != 0, axis=1)
            touched = rows[moved].astype(index_type)
            update[name] = SparseRows(touched, delta[moved], full.shape)
            if self.rows.stale_rows:  # the rows' push counts as pulled: the driver learns how stale each row was
                update["updates_in" if name == "w2v.wv.vectors" else "updates_out"] = SparseRows(
                    touched, seen[touched], seen.shape)
        return update


class _Repeat:
    """``mapPartitions`` function: a partition's jobs ``epochs`` times over (sync_epochs=False)."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def __call__(self, iterator):
        jobs = list(iterator)
        for _ in range(self.epochs):
            yield from jobs
