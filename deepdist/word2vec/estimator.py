"""The :class:`DistributedWord2Vec` estimator: its parameters, their checks, and the fit that runs them.

How the training works is told in :mod:`deepdist.word2vec`; the pieces the tasks run are in
:mod:`.training`, the per-epoch records in :mod:`.clock`, the driver's descents in :mod:`.descent`.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from ..errors import ConfigurationError
from ..estimator import Estimator
from ..validation import check_bool, check_choice, check_int, check_mapping, check_real
from .clock import _Clocked, _EpochClock
from .descent import AddDeltas, RowAdaGrad
from .training import _Gradient, _jobs_of, _output_name, _Repeat, _Rows, _Served
from .vocabulary import count_vocabulary

__all__ = ["DistributedWord2Vec"]

log = logging.getLogger(__name__)

#: gensim's cap on the words of one job (``MAX_WORDS_IN_BATCH``): its compiled loops' buffers
_MAX_JOB_WORDS = 10_000


def _check_flag(name: str, value):
    # gensim's 0/1 switches (sg, hs, cbow_mean), where True and False mean the same
    return value if isinstance(value, bool) else check_choice(name, value, (0, 1))


class DistributedWord2Vec(Estimator):
    """Train a gensim ``Word2Vec`` on an RDD of token lists with deepdist.

    gensim's parameters keep gensim's names and defaults, except ``sg=1`` and ``seed=0``:

    Parameters:
        vector_size, window, min_count, sg, hs, negative, ns_exponent, sample,
            alpha, min_alpha, cbow_mean, epochs, seed, shrink_windows: as
            :class:`gensim.models.Word2Vec` (``alpha`` is the literature's η0).
        partitions: training partitions (Spark tasks per epoch); by default one per
            task slot (:func:`deepdist.session.task_slots`).
        job_words: raw words per job handed to gensim's compiled loop (gensim's
            ``batch_words``; at most 10,000).
        batch_jobs: jobs per pull/push round: a task pulls the rows of this many
            jobs, trains on them, then pushes (and pulls the next rows in the same round
            trip); smaller is fresher, larger is less HTTP. By default 2 (20,000 words),
            but small enough that a task makes at least 5 rounds per epoch: with more
            jobs per round the summed deltas of concurrent tasks overshoot on frequent
            words (``benchmarks/word2vec_vs_peers.py`` tells by how much).
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
            (``partitions`` <= task slots).  None (default) picks False when
            the partitions fit on the task slots and there are no callbacks.
        compute_loss: report gensim's running training loss per word.
        spark: a SparkSession or SparkContext (the active one by default); an RDD of
            sentences brings its own.
        progress: show deepdist's progress line while training.
        server_options: more keyword arguments for :class:`deepdist.DeepDist`
            (``deepdist_options`` is its old name, warned about).
        callbacks: called on the driver after each epoch: functions ``f(estimator, record)``
            (``record`` is the epoch's entry of ``history_``; ``estimator.model_`` is the model
            as that epoch left it), or gensim ``CallbackAny2Vec`` objects, whose
            ``on_epoch_end(model)`` is called then, and ``on_train_begin(model)`` /
            ``on_train_end(model)`` around the training (the batch hooks are not: batches
            run on the executors).  Callbacks make one Spark job per epoch (``sync_epochs``
            None); with ``sync_epochs=False`` they run after the single job, on the final model.

    Attributes:
        model_: the trained ``gensim.models.Word2Vec``.
        wv_: its ``KeyedVectors``.
        corpus_words_: raw words per epoch; ``corpus_count_``: sentences.
        history_: one record per epoch, of that epoch alone: ``epoch``, ``seconds``,
            ``elapsed`` (since fit began), words, words/s, bytes pulled/pushed and what
            whole matrices would have cost, pulls, pushes, ``alpha_mean`` (the mean
            learning rate the tasks applied, per word) and ``alpha`` (the schedule's rate
            where the epoch ended).  With one job for all epochs, epoch k ends when all
            tasks together have processed k times the corpus.  (``epochs_`` is its old
            name, warned about.)
        n_iter_: epochs done.
        sync_epochs_, batch_jobs_: the values ``sync_epochs`` and ``batch_jobs`` took.
        timings_: seconds spent counting the vocabulary and training.
    """

    _renamed = {"deepdist_options": "server_options"}
    _renamed_attributes = {"epochs_": "history_"}
    _callback_hooks = ("on_epoch_end",)

    def __init__(self, *, vector_size: int = 100, window: int = 5, min_count: int = 5, sg: int = 1,
                 hs: int = 0, negative: int = 5, ns_exponent: float = 0.75, sample: float = 1e-3,
                 alpha: float = 0.025, min_alpha: float = 1e-4, cbow_mean: int = 1, epochs: int = 5,
                 seed: int = 0, shrink_windows: bool = True, partitions: int | None = None,
                 job_words: int = 10_000, batch_jobs: int | None = None, fetch_every: int = 1,
                 push_every: int = 1, descent: str = "add", adagrad_lr: float = 0.05,
                 negative_pool: float | None = 2.0, stale_rows: bool = False, sync_epochs: bool | None = None,
                 compute_loss: bool = False, spark=None, progress: bool = True, server_options: dict | None = None,
                 callbacks=(), **renamed):
        self.vector_size, self.window, self.min_count, self.sg, self.hs = vector_size, window, min_count, sg, hs
        self.negative, self.ns_exponent, self.sample = negative, ns_exponent, sample
        self.alpha, self.min_alpha, self.cbow_mean, self.epochs = alpha, min_alpha, cbow_mean, epochs
        self.seed, self.shrink_windows, self.partitions = seed, shrink_windows, partitions
        self.job_words, self.batch_jobs, self.fetch_every, self.push_every = job_words, batch_jobs, fetch_every, push_every
        self.descent, self.adagrad_lr, self.negative_pool = descent, adagrad_lr, negative_pool
        self.stale_rows = stale_rows
        self.sync_epochs, self.compute_loss, self.spark, self.progress = sync_epochs, compute_loss, spark, progress
        self.server_options, self.callbacks = server_options, callbacks
        self._init_renamed(renamed)

    def _validate(self) -> None:
        for name in ("vector_size", "window", "min_count", "epochs"):
            check_int(name, getattr(self, name))
        for name in ("sg", "hs", "cbow_mean"):
            _check_flag(name, getattr(self, name))
        check_int("negative", self.negative, 0)
        if self.hs and self.negative > 0:
            raise ConfigurationError("choose one output layer: hs=1 with negative=0, or hs=0 with negative > 0 "
                                     f"(got hs={self.hs}, negative={self.negative})")
        if not self.hs:
            check_int("negative", self.negative, 1)  # hs=0 needs negative sampling as its output layer
        check_real("ns_exponent", self.ns_exponent)
        check_real("sample", self.sample, minimum=0)
        check_real("alpha", self.alpha, above=0)
        check_real("min_alpha", self.min_alpha, minimum=0, maximum=self.alpha)
        check_int("seed", self.seed, 0)
        check_int("job_words", self.job_words, 1, _MAX_JOB_WORDS)
        for name in ("partitions", "batch_jobs"):
            check_int(name, getattr(self, name), none=True)
        for name in ("fetch_every", "push_every"):
            check_int(name, getattr(self, name))
        check_choice("descent", self.descent, ("add", "adagrad"))
        check_real("adagrad_lr", self.adagrad_lr, above=0)
        check_real("negative_pool", self.negative_pool, above=0, none=True)
        for name in ("shrink_windows", "stale_rows", "compute_loss", "progress"):
            check_bool(name, getattr(self, name))
        check_bool("sync_epochs", self.sync_epochs, none=True)
        if self.stale_rows and self.push_every != 1:
            raise ConfigurationError(f"push_every must be 1 with stale_rows=True (row push counts cannot be "
                                     f"summed), got {self.push_every!r}")
        check_mapping("server_options", self.server_options)

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

        ``sentences`` is an RDD of token lists, or a list of them (parallelized on ``spark``'s context).
        """
        from ..session import spark_context, task_slots

        self._validate()
        self._begin_fit()
        self.__dict__.pop("model_", None)
        if hasattr(sentences, "mapPartitions"):
            sc = sentences.context
        else:
            sc = spark_context(self.spark)
            sentences = sc.parallelize(list(sentences), self.partitions or 2 * sc.defaultParallelism)
        self.timings_ = {}
        started = time.perf_counter()
        model = self.build_vocab(sentences)
        self.timings_["vocabulary"] = time.perf_counter() - started

        slots = task_slots(sc)
        partitions = self.partitions or slots
        self.sync_epochs_ = (bool(self._callbacks) or partitions > slots if self.sync_epochs is None
                             else bool(self.sync_epochs))
        if not self.sync_epochs_ and partitions > slots:
            log.warning("sync_epochs=False with %d partitions on %d task slots: later partitions start after "
                        "earlier ones finished all epochs, at a lower learning rate", partitions, slots)
        if not self.sync_epochs_ and self._callbacks:
            log.warning("sync_epochs=False: the callbacks see each epoch's record after the single Spark job, "
                        "with the final model")
        if sentences.getNumPartitions() != partitions:
            sentences = sentences.repartition(partitions)
        log.info("vocabulary %d words; %d raw words in %d sentences; %d partitions on %d task slots",
                 len(model.wv), self.corpus_words_, self.corpus_count_, partitions, slots)
        per_partition = self.corpus_words_ / (partitions * self.job_words)
        self.batch_jobs_ = self.batch_jobs or int(min(2, max(1, per_partition // 5)))
        try:
            self._train(sc, sentences, model, partitions, slots)
        except BaseException:
            self.__dict__.pop("model_", None)  # a fit that failed leaves no half-trained model behind
            raise
        return self

    def _train(self, sc, sentences, model, partitions: int, slots: int) -> None:
        """Train ``model`` on the server, one Spark job per epoch or one for all; record each epoch."""
        from ..core import DeepDist

        vocab = sc.broadcast(model.wv.key_to_index)
        job_words = self.job_words
        # built inside the first training job (no extra Spark pass), cached for the next epochs
        jobs = sentences.mapPartitions(lambda part: _jobs_of(part, vocab.value, job_words))
        if self.sync_epochs_ and self.epochs > 1:
            jobs = jobs.cache()
        served = _Served(model)
        points = self._points(sc, model)
        cum = sc.broadcast(model.cum_table) if self.negative and self.negative_pool is not None else None
        rows = _Rows(bool(self.hs), len(model.wv), self.negative_pool, cum, points, self.seed, self.stale_rows)
        gradient = _Gradient(rows, sg=bool(self.sg), alpha=self.alpha, min_alpha=self.min_alpha,
                             total_words=self.epochs * self.corpus_words_, concurrency=max(1, min(partitions, slots)),
                             seed=self.seed, adagrad=self.descent == "adagrad", compute_loss=self.compute_loss,
                             epochs=self.epochs)
        descent = (RowAdaGrad(self.adagrad_lr, stale_rows=self.stale_rows) if self.descent == "adagrad"
                   else AddDeltas(stale_rows=self.stale_rows))
        names = ["w2v.wv.vectors", _output_name(bool(self.hs)), "words_done", "updates_in", "updates_out",
                 "task_totals"]
        started = time.perf_counter()
        self.model_ = model  # callbacks read it; fit removes it again if training fails
        self._hook("on_train_begin")
        try:
            with DeepDist(served, params=names, spark=sc, progress=self.progress,
                          **(self.server_options or {})) as dd:
                clock = _EpochClock(dd, served, gradient, self.corpus_words_, self.epochs, self.fetch_every,
                                    at_word_boundaries=not self.sync_epochs_, fit_started=self._fit_started)
                descent = _Clocked(descent, clock)
                data = jobs if self.sync_epochs_ else jobs.mapPartitions(_Repeat(self.epochs))
                for job in range(self.epochs if self.sync_epochs_ else 1):
                    rows.job = job
                    clock.start()
                    reports = dd.train(data, gradient, descent, epochs=1, batch_size=self.batch_jobs_,
                                       fetch_every=self.fetch_every, push_every=self.push_every, rows=rows,
                                       check_reachable=False)[0]  # an unreachable server fails the task clearly
                    dd.store.drain()
                    clock.finish(reports)
                    for record in clock.records[len(self.history_):]:
                        self._record(record)
        finally:
            jobs.unpersist()
            vocab.unpersist()
            for shipped in (points, cum):
                if shipped is not None:
                    shipped.unpersist()
        self.timings_["training"] = time.perf_counter() - started
        model.train_count = self.epochs
        model.wv.norms = None
        self._hook("on_train_end")

    # -- callbacks -----------------------------------------------------------------------
    def _call_back(self, callback, record: dict) -> None:
        # gensim caches the unit vectors on first use (fill_norms) and never refreshes them: an
        # evaluation in one callback would leave the next epoch's callbacks ranking by old norms
        self.model_.wv.norms = None
        on_epoch_end = getattr(callback, "on_epoch_end", None)
        if on_epoch_end is not None:
            on_epoch_end(self.model_)
        else:
            callback(self, record)
        self.model_.wv.norms = None

    def _hook(self, name: str) -> None:
        """Call gensim-style callbacks' ``name`` hook (``on_train_begin``/``on_train_end``) where they have it."""
        for callback in self._callbacks:
            hook = getattr(callback, name, None)
            if hook is not None:
                self.model_.wv.norms = None
                hook(self.model_)

    @property
    def wv_(self):
        """The trained ``KeyedVectors`` (``model_.wv``)."""
        self._check_fitted()
        return self.model_.wv

