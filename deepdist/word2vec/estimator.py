"""word2vec on Spark: gensim's compiled training loops, Downpour-trained by deepdist.

word2vec (Mikolov et al. 2013) learns a vector ``v_w`` (gensim's ``wv.vectors``)
and an output vector ``u_w`` (``syn1neg`` for negative sampling, ``syn1`` for the
inner nodes of hierarchical softmax) per word, by SGD over (center, context) pairs.
Here the SGD runs asynchronously on the Spark executors (Downpour SGD, Dean et al.
2012):

* Spark counts the vocabulary (a distributed word count with ``min_count``; the
  text never reaches the driver) and gensim builds the model from the counts
  (``Word2Vec.build_vocab_from_freq``).
* Sentences become *jobs* of about 10,000 words of vocabulary indices (gensim's
  ``batch_words``), built on the executors inside the first training job.  The
  model's static part (sampling tables, Huffman codes, configuration) reaches the
  executors by broadcast; the string vocabulary goes once, to build the jobs.
* For each batch of jobs a task pulls from the driver's model server only the rows
  of ``wv.vectors`` and ``syn1neg`` / ``syn1`` it will touch, trains with gensim's
  own ``train_batch_sg`` / ``train_batch_cbow`` and pushes the row deltas, sparse.
* The learning rate follows *global* progress: a one-element counter of the words
  processed by all tasks lives on the server next to the weights; every push adds
  to it, every pull reads it, and ``alpha = alpha0 - (alpha0 - min_alpha) * progress``
  exactly as gensim schedules it.
* On the driver the deltas are added (``descent="add"``) or scaled per row by
  AdaGrad (``descent="adagrad"``, Duchi et al. 2011).  Optionally a row's delta is
  divided by ``1 + its staleness`` (pushes applied to that row since the task
  pulled it, ``stale_rows``): rows all tasks move at once then get the mean of the
  concurrent deltas rather than their sum.  That tames the sum's overshoot on
  frequent words when batches are large, but halves the step of mid-frequency
  words; with the default batches of 4 jobs plain sums match gensim best.

Negative samples keep gensim's distribution without shipping all of ``syn1neg``: a
task draws a pool of negatives from the global unigram^0.75 table before it pulls,
pulls those rows, and gensim's kernel samples from the pool.  Each draw still has
the global distribution, so the expected gradient is gensim's (``negative_pool``).

The result, :attr:`DistributedWord2Vec.model_`, is an ordinary gensim ``Word2Vec``.

Example (``local[2]``)::

    >>> from deepdist.word2vec import DistributedWord2Vec
    >>> sentences = spark.sparkContext.parallelize(token_lists, 4)   # doctest: +SKIP
    >>> w2v = DistributedWord2Vec(vector_size=100, epochs=5).fit(sentences)  # doctest: +SKIP
    >>> w2v.wv_.most_similar("king")                                  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
import time
import zlib
from typing import NamedTuple

import numpy as np

from ..errors import ConfigurationError, NotFittedError
from ..sparse import SparseRows
from .descent import AddDeltas, RowAdaGrad
from .vocabulary import count_vocabulary
from ..worker import report

__all__ = ["AddDeltas", "DistributedWord2Vec", "RowAdaGrad", "count_vocabulary", "executor_cores"]

log = logging.getLogger(__name__)

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


def executor_cores(sc) -> int:
    """Tasks Spark runs at once: N for ``local[N]`` (all CPUs for ``local[*]``), else the default parallelism."""
    import os
    import re

    match = re.fullmatch(r"local(?:\[(\d+|\*)(?:,\d+)?\])?", sc.master)
    if match:
        n = match.group(1)
        return os.cpu_count() or 1 if n == "*" else int(n or 1)
    return max(1, sc.defaultParallelism)


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
    """

    def __init__(self, hs: bool, n_rows: int, pool: float | None, cum=None, points=None, seed: int = 1,
                 stale_rows: bool = False):
        self.hs, self.n_rows, self.pool, self.cum, self.points, self.seed = hs, n_rows, pool, cum, points, seed
        self.stale_rows = stale_rows  # pull and push the rows' push counters too
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
        where = (task.stageId(), task.partitionId(), task.attemptNumber()) if task else (0, 0, 0)
        self._drawn += 1
        rng = np.random.default_rng([self.seed, *where, self._drawn])
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


class _EpochClock:
    """Per-epoch records, closed where each epoch really ends.

    One job per epoch: at the end of each job, with the tasks' own reports.  One job for
    all epochs: when the words all tasks pushed reach k times the corpus, the k-th epoch
    ends (the boundary :meth:`_Gradient.epoch_at` uses); that is seen by the applier
    thread, push by push, and the traffic, time and the rate the tasks applied are read
    there.  Either way a record holds what happened in its epoch only.
    """

    def __init__(self, dd, served, gradient, epoch_words: int, epochs: int, fetch_every: int,
                 at_word_boundaries: bool):
        self.dd, self.served, self.gradient = dd, served, gradient
        self.epoch_words, self.epochs, self.fetch_every = epoch_words, epochs, fetch_every
        self.at_word_boundaries = at_word_boundaries
        self.matrices = dd.store.spec.nbytes
        self.records: list[dict] = []
        self.pushes = 0
        self._base = None

    def _snapshot(self) -> dict:
        status = self.dd.store.status()
        return {"time": time.perf_counter(), "bytes_in": status["bytes_in"], "bytes_out": status["bytes_out"],
                "words_done": int(self.served.words_done[0]), "totals": self.served.task_totals.copy(),
                "pushes": self.pushes}

    def start(self) -> None:
        """A job starts: the time between jobs (callbacks, scheduling) belongs to no epoch."""
        self._base = self._snapshot()

    def after_push(self) -> None:
        """Called by the descent on the applier thread after each applied push."""
        self.pushes += 1
        if (self.at_word_boundaries and len(self.records) < self.epochs - 1
                and self.served.words_done[0] >= (len(self.records) + 1) * self.epoch_words):
            self._close()

    def finish(self, reports: list) -> None:
        """A job ended and its updates are applied: close its (last) epoch."""
        if len(self.records) < self.epochs:
            self._close(None if self.at_word_boundaries else reports)

    def _close(self, reports=None) -> None:
        now, base = self._snapshot(), self._base
        self._base = now
        seconds = now["time"] - base["time"]
        words = now["words_done"] - base["words_done"]
        totals = dict(zip(_TASK_TOTALS, now["totals"] - base["totals"]))
        pushes = now["pushes"] - base["pushes"]
        # a pull precedes every fetch_every batches; in one job for all epochs no task report
        # splits them by epoch, so they are counted from the batches the pushes carried
        pulls = (sum(r["pulls"] for r in reports) if reports is not None
                 else round(totals["batches"] / self.fetch_every))
        record = {"epoch": len(self.records) + 1, "seconds": seconds, "words": words,
                  "words_per_sec": words / seconds if seconds > 0 else 0.0,
                  "bytes_pulled": now["bytes_out"] - base["bytes_out"],
                  "bytes_pushed": now["bytes_in"] - base["bytes_in"],
                  "pulls": pulls, "pushes": pushes,
                  "dense_bytes_pulled": pulls * self.matrices, "dense_bytes_pushed": pushes * self.matrices,
                  "words_done": now["words_done"],
                  # the schedule's rate where the epoch ended, and the mean rate the tasks applied
                  "alpha": self.gradient.alpha_at(now["words_done"]),
                  "alpha_mean": float(totals["alpha_words"] / words) if words else None,
                  "gradient_seconds": float(totals["gradient_seconds"])}
        if reports is not None:  # summed over the tasks: where their time went
            record.update(task_seconds=sum(r["seconds"] for r in reports),
                          network_seconds=sum(r["network_seconds"] for r in reports))
        self.records.append(record)
        log.info("word2vec epoch %d/%d: %.2fs, %.0f words/s, mean alpha %.5f, pulled %.1f MB, pushed %.1f MB",
                 record["epoch"], self.epochs, seconds, record["words_per_sec"], record["alpha_mean"] or 0.0,
                 record["bytes_pulled"] / 1e6, record["bytes_pushed"] / 1e6)


class _Clocked:
    """The driver's descent, then the epoch clock's look at the counters it just moved."""

    def __init__(self, descent, clock: _EpochClock):
        self.descent, self.clock = descent, clock

    def __call__(self, served, update: dict) -> None:
        self.descent(served, update)
        self.clock.after_push()


# -- the estimator -------------------------------------------------------------------------------
class DistributedWord2Vec:
    """Train a gensim ``Word2Vec`` on an RDD of token lists with deepdist.

    gensim's parameters keep gensim's names and defaults, except ``sg=1``:

    Parameters:
        vector_size, window, min_count, sg, hs, negative, ns_exponent, sample,
            alpha, min_alpha, cbow_mean, epochs, seed, shrink_windows: as
            :class:`gensim.models.Word2Vec` (``alpha`` is the literature's η0).
        partitions: training partitions (Spark tasks per epoch); by default one per
            executor core.
        job_words: raw words per job handed to gensim's compiled loop (gensim's
            ``batch_words``; at most 10,000).
        batch_jobs: jobs per pull/push round: a task pulls the rows of this many
            jobs, trains on them, then pushes (and pulls the next rows in the same round
            trip); smaller is fresher, larger is less HTTP. By default 2 (20,000 words),
            but small enough that a task makes at least 5 rounds per epoch: with 4 the
            summed deltas of concurrent tasks overshoot on frequent words, and the
            held-out loss is 2-3% above gensim's, with an occasional diverged run.
        fetch_every, push_every: as :meth:`deepdist.DeepDist.train`.
        descent: ``"add"`` (add the deltas) or ``"adagrad"`` (:class:`RowAdaGrad`).
        adagrad_lr: AdaGrad's step scale.
        negative_pool: negatives drawn per raw word of a batch into the pool the
            batch's negative samples come from; only the pool's rows are pulled.
            None pulls all of ``syn1neg`` and samples from gensim's own table.
        stale_rows: scale each pushed row delta by ``1 / (1 + staleness)``, where a
            row's staleness counts the pushes applied to it since the task pulled it:
            rows several tasks move at once get the mean of their deltas, not the sum.
            Use it with large ``batch_jobs`` (>= 8), where summed deltas overshoot.
        sync_epochs: True runs one Spark job per epoch (a barrier between epochs).
            False runs one Spark job in which each task passes over its partition
            ``epochs`` times: less scheduling overhead, and the global learning-rate
            schedule stays balanced as long as all partitions run at once
            (``partitions`` <= executor cores).  None (default) picks False when
            the partitions fit on the cores and there are no callbacks.
        compute_loss: report gensim's running training loss per word.
        spark: a SparkSession or SparkContext (the active one by default).
        progress: show deepdist's progress line while training.
        deepdist_options: more keyword arguments for :class:`deepdist.DeepDist`.
        callbacks: functions ``f(epoch, model)`` called on the driver after each epoch.

    Attributes:
        model_: the trained ``gensim.models.Word2Vec``.
        wv_: its ``KeyedVectors``.
        corpus_words_: raw words per epoch; ``corpus_count_``: sentences.
        epochs_: one record per epoch, of that epoch alone: seconds, words, words/s,
            bytes pulled/pushed and what whole matrices would have cost, pulls, pushes,
            ``alpha_mean`` (the mean learning rate the tasks applied, per word) and
            ``alpha`` (the schedule's rate where the epoch ended).  With one job for
            all epochs, epoch k ends when all tasks together have processed k times
            the corpus.
        timings_: seconds spent counting the vocabulary, building jobs, training.
    """

    def __init__(self, *, vector_size: int = 100, window: int = 5, min_count: int = 5, sg: int = 1,
                 hs: int = 0, negative: int = 5, ns_exponent: float = 0.75, sample: float = 1e-3,
                 alpha: float = 0.025, min_alpha: float = 1e-4, cbow_mean: int = 1, epochs: int = 5,
                 seed: int = 1, shrink_windows: bool = True, partitions: int | None = None,
                 job_words: int = 10_000, batch_jobs: int | None = None, fetch_every: int = 1, push_every: int = 1,
                 descent: str = "add", adagrad_lr: float = 0.05, negative_pool: float | None = 2.0,
                 stale_rows: bool = False, sync_epochs: bool | None = None, compute_loss: bool = False, spark=None, progress: bool = True,
                 deepdist_options: dict | None = None, callbacks=()):
        self.vector_size, self.window, self.min_count, self.sg, self.hs = vector_size, window, min_count, sg, hs
        self.negative, self.ns_exponent, self.sample = negative, ns_exponent, sample
        self.alpha, self.min_alpha, self.cbow_mean, self.epochs = alpha, min_alpha, cbow_mean, epochs
        self.seed, self.shrink_windows, self.partitions = seed, shrink_windows, partitions
        self.job_words, self.batch_jobs, self.fetch_every, self.push_every = job_words, batch_jobs, fetch_every, push_every
        self.descent, self.adagrad_lr, self.negative_pool = descent, adagrad_lr, negative_pool
        self.stale_rows = stale_rows
        self.sync_epochs, self.compute_loss, self.spark, self.progress = sync_epochs, compute_loss, spark, progress
        self.deepdist_options, self.callbacks = deepdist_options, callbacks

    def _validate(self) -> None:
        def check(name, ok, accepted):
            if not ok:
                raise ConfigurationError(f"{name} must be {accepted}, got {getattr(self, name)!r}")

        check("vector_size", isinstance(self.vector_size, int) and self.vector_size >= 1, "an integer >= 1")
        check("window", isinstance(self.window, int) and self.window >= 1, "an integer >= 1")
        check("min_count", isinstance(self.min_count, int) and self.min_count >= 1, "an integer >= 1")
        check("epochs", isinstance(self.epochs, int) and self.epochs >= 1, "an integer >= 1")
        check("sg", self.sg in (0, 1), "0 (CBOW) or 1 (skip-gram)")
        check("hs", self.hs in (0, 1), "0 or 1")
        check("negative", isinstance(self.negative, int) and self.negative >= 0, "an integer >= 0")
        if self.hs == 1 and self.negative > 0:
            raise ConfigurationError("choose one output layer: hs=1 with negative=0, or hs=0 with negative > 0 "
                                     f"(got hs={self.hs}, negative={self.negative})")
        check("negative", self.hs == 1 or self.negative > 0, "> 0 when hs=0")
        check("alpha", self.alpha > 0, "> 0")
        check("min_alpha", 0 <= self.min_alpha <= self.alpha, "in [0, alpha]")
        check("job_words", isinstance(self.job_words, int) and 1 <= self.job_words <= 10_000,
              "an integer in [1, 10000] (gensim's MAX_WORDS_IN_BATCH)")
        check("batch_jobs", self.batch_jobs is None or (isinstance(self.batch_jobs, int) and self.batch_jobs >= 1),
              "None or an integer >= 1")
        check("partitions", self.partitions is None or (isinstance(self.partitions, int) and self.partitions >= 1),
              "None or an integer >= 1")
        check("descent", self.descent in ("add", "adagrad"), "'add' or 'adagrad'")
        check("push_every", self.push_every == 1 or not self.stale_rows,
              "1 with stale_rows=True (row push counts cannot be summed)")
        check("negative_pool", self.negative_pool is None or self.negative_pool > 0, "None or > 0")

    # -- steps ---------------------------------------------------------------------------
    def build_vocab(self, sentences):
        """Count the vocabulary on Spark; return the untrained gensim ``Word2Vec``."""
        from gensim.models import Word2Vec

        word_freq, total, count = count_vocabulary(sentences, self.min_count)
        if not word_freq:
            raise ConfigurationError(f"no word occurs min_count={self.min_count} times; lower min_count")
        model = Word2Vec(vector_size=self.vector_size, window=self.window, min_count=self.min_count,
                         sg=self.sg, hs=self.hs, negative=self.negative, ns_exponent=self.ns_exponent,
                         sample=self.sample, alpha=self.alpha, min_alpha=self.min_alpha,
                         cbow_mean=self.cbow_mean, epochs=self.epochs, seed=self.seed, workers=1,
                         shrink_windows=self.shrink_windows)
        model.build_vocab_from_freq(word_freq, corpus_count=count)
        model.corpus_total_words = total
        self.corpus_words_, self.corpus_count_ = total, count
        return model

    def _points(self, sc, model):
        if not self.hs:
            return None
        points = model.wv.expandos["point"]
        indptr = np.zeros(len(points) + 1, np.int64)
        indptr[1:] = np.cumsum([len(p) for p in points])
        return sc.broadcast((indptr, np.concatenate(points).astype(np.int64)))

    def fit(self, sentences):
        """Count the vocabulary, then train for ``epochs`` passes; return ``self``.

        ``sentences`` is an RDD of token lists (or a list, parallelized here).
        """
        from ..core import DeepDist
        from ..session import spark_context

        self._validate()
        sc = spark_context(self.spark)
        if not hasattr(sentences, "mapPartitions"):
            sentences = sc.parallelize(list(sentences), self.partitions or 2 * sc.defaultParallelism)
        self.timings_ = {}
        started = time.perf_counter()
        model = self.build_vocab(sentences)
        self.timings_["vocabulary"] = time.perf_counter() - started

        started = time.perf_counter()
        cores = executor_cores(sc)
        partitions = self.partitions or cores
        self.sync_epochs_ = (bool(self.callbacks) or partitions > cores if self.sync_epochs is None
                             else bool(self.sync_epochs))
        if not self.sync_epochs_ and partitions > cores:
            log.warning("sync_epochs=False with %d partitions on %d cores: later partitions start after "
                        "earlier ones finished all epochs, at a lower learning rate", partitions, cores)
        vocab = sc.broadcast(model.wv.key_to_index)
        job_words = self.job_words
        if sentences.getNumPartitions() != partitions:
            sentences = sentences.repartition(partitions)
        # built inside the first training job (no extra Spark pass), cached for the next epochs
        jobs = sentences.mapPartitions(lambda part: _jobs_of(part, vocab.value, job_words))
        if self.sync_epochs_ and self.epochs > 1:
            jobs = jobs.cache()
        log.info("vocabulary %d words; %d raw words in %d sentences; %d partitions on %d cores",
                 len(model.wv), self.corpus_words_, self.corpus_count_, partitions, cores)

        served = _Served(model)
        points = self._points(sc, model)
        per_partition = self.corpus_words_ / (partitions * self.job_words)
        self.batch_jobs_ = self.batch_jobs or int(min(2, max(1, per_partition // 5)))
        cum = sc.broadcast(model.cum_table) if self.negative and self.negative_pool is not None else None
        rows = _Rows(bool(self.hs), len(model.wv), self.negative_pool, cum, points, self.seed, self.stale_rows)
        concurrency = max(1, min(partitions, cores))
        gradient = _Gradient(rows, sg=bool(self.sg), alpha=self.alpha, min_alpha=self.min_alpha,
                             total_words=self.epochs * self.corpus_words_, concurrency=concurrency,
                             seed=self.seed, adagrad=self.descent == "adagrad", compute_loss=self.compute_loss,
                             epochs=self.epochs)
        descent = (RowAdaGrad(self.adagrad_lr, stale_rows=self.stale_rows) if self.descent == "adagrad"
                   else AddDeltas(stale_rows=self.stale_rows))
        names = ["w2v.wv.vectors", _output_name(bool(self.hs)), "words_done", "updates_in", "updates_out",
                 "task_totals"]
        started = time.perf_counter()
        try:
            with DeepDist(served, params=names, spark=sc, progress=self.progress,
                          **(self.deepdist_options or {})) as dd:
                clock = _EpochClock(dd, served, gradient, self.corpus_words_, self.epochs, self.fetch_every,
                                    at_word_boundaries=not self.sync_epochs_)
                self.epochs_ = clock.records
                descent = _Clocked(descent, clock)
                rounds = self.epochs if self.sync_epochs_ else 1
                data = jobs if self.sync_epochs_ else jobs.mapPartitions(_Repeat(self.epochs))
                for _ in range(rounds):
                    clock.start()
                    reports = dd.train(data, gradient, descent, epochs=1, batch_size=self.batch_jobs_,
                                       fetch_every=self.fetch_every, push_every=self.push_every, rows=rows,
                                       check_reachable=False)[0]  # an unreachable server fails the task clearly
                    dd.store.drain()
                    clock.finish(reports)
                    self._call_back(model, len(clock.records))
        finally:
            jobs.unpersist()
            vocab.unpersist()
            for shipped in (points, cum):
                if shipped is not None:
                    shipped.unpersist()
        self.timings_["training"] = time.perf_counter() - started
        model.train_count = self.epochs
        model.wv.norms = None
        self.model_ = model
        return self

    def _call_back(self, model, epoch: int) -> None:
        for callback in self.callbacks:
            # gensim caches the unit vectors on first use (fill_norms) and never refreshes them:
            # an evaluation in one callback would leave the next epoch's callbacks ranking by the
            # last epoch's norms
            model.wv.norms = None
            callback(epoch, model)
        model.wv.norms = None

    @property
    def wv_(self):
        if not hasattr(self, "model_"):
            raise NotFittedError("this DistributedWord2Vec is not fitted yet; call fit(sentences) first")
        return self.model_.wv
