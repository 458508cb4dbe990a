"""Online variational Bayes LDA on Spark, trained by gensim's own E-step and M-step.

The algorithm is Hoffman, Blei & Bach, "Online Learning for Latent Dirichlet Allocation"
(NIPS 2010), as gensim's :class:`~gensim.models.LdaModel` implements it. The variational
topics λ (K × V; gensim's ``state.sstats`` plus the prior η) are refined chunk by chunk:

* **E-step, on the executors.** Each Spark partition is cut into chunks of ``chunksize``
  documents. For each chunk a task pulls from the DeepDist server only the rows of λ for the
  words the chunk contains, plus the K topic sums, which is enough to compute exactly those
  columns of ``expElogbeta = exp(E[log β])``. gensim's own ``LdaModel.inference`` then runs on
  the chunk. It pushes back the sufficient statistics, which are non-zero only in the chunk's
  columns, together with the chunk's document count.
* **M-step, on the driver, in rounds.** Round r is the r-th chunk of every partition (the RDD
  is coalesced to the cluster's task slots, so all partitions run at once). One applier thread
  merges the statistics of a round into a gensim ``LdaState`` (``merge``); once every chunk of
  ``update_every`` rounds has arrived (gensim's distributed mode: ``update_every × workers``
  chunks, workers = partitions) it blends them into the model with gensim's own
  ``LdaState.blend``. That step uses the weight ρ_t = (τ₀ + pass + t / chunksize)^(−κ) from
  gensim's ``LdaModel.update``, where τ₀ is ``offset``, κ is ``decay`` and t counts the
  documents merged during the first pass. It also stretches the statistics to the corpus size.

**Bounded staleness.** Before the E-step of a chunk in M-step block b, a task waits, on the
server and without polling, until block b − 1 − ``max_staleness`` has been blended. The default
``max_staleness=2`` is about the lag of ``LdaMulticore``'s job queue (2 × workers chunks
dispatched ahead with the topics of their time), and matches its held-out perplexity. With
``max_staleness=0`` every chunk starts from the topics of all earlier rounds, as in gensim's
distributed mode, and which statistics meet in which M-step no longer depends on task timing:
with a fixed ``seed`` and two partitions a fit is bit-for-bit reproducible (with more, only
float summation order varies).
The server counts each contribution's staleness (the model versions that passed between pull
and apply) in ``status()["staleness_histogram"]``.

**Lost executors.** If Spark retries a task (its executor died), the statistics its failed
attempt pushed stay merged, and each chunk is merged once a pass: the retried attempt starts its
partition over, skips the E-step of every chunk the driver marks as merged in this pass
(``chunk_pass``, pulled with the chunk's rows), and a chunk that arrives twice anyway (its first
copy was still queued when the retry looked) is dropped (``history_[i]["repeated_chunks"]``).
So no document weighs twice in the topics, and the rounds the other tasks wait for complete as
soon as the retry has delivered the lost chunks. A task that waits in vain (``wait_timeout``,
e.g. no executor came back) goes on without waiting and logs a warning.

The server stores the statistics transposed, V × K, so a chunk's column-sparse K × V statistics
travel as a few rows (:class:`~deepdist.SparseRows`) instead of the dense matrix that gensim's
distributed mode pickles to its workers.

Example (``local[2]``)::

    >>> from deepdist.vocabulary import build_vocabulary                 # doctest: +SKIP
    >>> from deepdist.lda.online import OnlineLDA                        # doctest: +SKIP
    >>> tokens = sc.textFile("docs.txt").map(str.split)                  # doctest: +SKIP
    >>> dictionary = build_vocabulary(tokens, min_df=5, max_df=0.5).to_dictionary()
    >>> bow = tokens.map(dictionary.doc2bow)
    >>> lda = OnlineLDA(num_topics=100, id2word=dictionary, epochs=5, chunksize=2000).fit(bow)
    >>> lda.model_.print_topics(5)       # a gensim.models.LdaModel
    >>> lda.update(more_bow)             # continue online on new documents
"""

from __future__ import annotations

import logging
import time
import warnings

import numpy as np

from ..config import MAX_WAIT_SECONDS
from ..errors import ConfigurationError
from ..estimator import Estimator
from ..executors import ensure_executors
from ..session import task_slots
from ..validation import check_bool, check_callable, check_int, check_mapping, check_real
from .online_steps import _EStep, _LdaParams, _MStep, _Rounds, _Shell

log = logging.getLogger(__name__)

__all__ = ["OnlineLDA"]


def _count(documents):
    yield sum(1 for _ in documents)


class _OnPass:
    """The old hook ``on_pass(model, record)`` as a callback ``f(estimator, record)``; what it
    returns is kept in ``record["on_pass"]``, as before."""

    def __init__(self, function):
        self.function = function

    def __call__(self, estimator, record):
        record["on_pass"] = self.function(estimator.model_, record)

    def __repr__(self) -> str:
        return f"on_pass({self.function!r})"


class OnlineLDA(Estimator):
    """Online variational LDA on Spark whose result is a gensim ``LdaModel``.

    The parameters mean what they mean in :class:`gensim.models.LdaModel`. The model is the
    same and so are the E-step and the M-step; only the E-step runs on Spark.

    Parameters:
        num_topics: K, the number of topics.
        id2word: the vocabulary, e.g. a gensim ``Dictionary`` from
            ``deepdist.vocabulary.build_vocabulary(...).to_dictionary()``. If None, V is the
            largest word id in the corpus plus one.
        epochs: passes over the corpus per :meth:`fit` or :meth:`update` (gensim's ``passes``;
            the old name ``passes=`` warns).
        chunksize: documents per E-step. Each Spark partition is cut into chunks of this size.
        update_every: an M-step every ``update_every`` rounds, a round being one chunk of
            every partition: ``update_every × partitions`` chunks, as in gensim's distributed
            mode with one worker per partition. 0 means batch learning: one M-step per pass.
            The RDD is coalesced to the task slots of the cluster (N for ``local[N]``) when it
            has more partitions, so that all of them run at once.
        max_staleness: how many M-steps behind the previous block the topics a chunk's
            E-step starts from may be: 2 (default) is about ``LdaMulticore``'s lag; 0 waits
            for the previous block's M-step, as gensim's distributed mode does, and makes a
            seeded fit reproducible.
        wait_timeout: the longest a task waits for an M-step (seconds) before it gives up
            waiting and goes on with the topics it has (e.g. when executors were lost).
        alpha: the document-topic prior α: ``"symmetric"`` (1/K), ``"asymmetric"``, a float or
            K floats. ``"auto"`` is not available (gensim's distributed mode lacks it too).
        eta: the topic-word prior η: None or ``"symmetric"`` (1/K), a float, V floats or a
            K × V array.
        decay: κ, how fast old statistics are forgotten. gensim guarantees convergence for
            κ in (0.5, 1].
        offset: τ₀ > 0. It slows down the first steps: ρ_t = (τ₀ + pass + t/chunksize)^(−κ).
        iterations, gamma_threshold: per-document E-step limits (gensim's; ``iterations`` is
            not a number of passes over the data: that is ``epochs``).
        seed: seeds the initial topics (exactly as gensim's ``random_state``), and with the
            pass and the partition, each partition's own E-step random state. None draws one.
        dtype: the float type of the statistics (gensim's ``dtype``).
        spark: a SparkSession or SparkContext; the RDD's context by default.
        progress: show the progress line on the driver (with the perplexity estimate).
        server_options: further keyword arguments for :class:`~deepdist.DeepDist`
            (``host``, ``port``, ``queue_size`` …).
        callbacks: ``f(estimator, record)`` called on the driver after each pass with the
            estimator (its ``model_`` ready to use) and that pass's ``history_`` record, e.g. to
            add a held-out perplexity to the record. The old ``on_pass=f(model, record)`` warns
            and joins them; what it returns is kept in ``record["on_pass"]``.

    Memory: the driver holds three K × V arrays in ``dtype``: the model, the statistics
    waiting for the next M-step, and ``expElogbeta``. Each executor process holds one V × K copy.

    Attributes:
        model_: the trained :class:`gensim.models.LdaModel`.
        partitions_: the partitions (one chunk each per round) of the last fit/update.
        history_: one dict per pass: ``epoch`` (passes done since :meth:`fit`, also ``pass``),
            seconds, M-steps, last ρ, mean perplexity estimate of
            the chunks (from their variational bound, before their M-step), chunks, bytes pushed,
            seconds the tasks spent in row pulls that waited for an M-step, wait timeouts,
            ``repeated_chunks`` (chunks dropped because a retried task delivered them again) and
            ``docs_merged`` (documents whose statistics the pass merged: each once).
        status_: the DeepDist server's counters at the end of the last fit/update, including
            ``staleness_histogram``.
        n_iter_: passes over the data done since :meth:`fit`.

    Example::

        >>> lda = OnlineLDA(num_topics=20, id2word=dictionary, epochs=5).fit(bow_rdd)  # doctest: +SKIP
        >>> lda.model_.get_document_topics(bow_rdd.first())                           # doctest: +SKIP
    """

    _renamed = {"passes": "epochs"}

    def __init__(self, *, num_topics: int = 100, id2word=None, epochs: int = 1, chunksize: int = 2000,
                 update_every: int = 1, max_staleness: int = 2, wait_timeout: float = 60.0,
                 alpha="symmetric", eta=None, decay: float = 0.5, offset: float = 1.0, iterations: int = 50,
                 gamma_threshold: float = 0.001, seed: int | None = 0, dtype=np.float32, spark=None,
                 progress: bool = True, server_options: dict | None = None, callbacks=(), **renamed):
        self.num_topics = num_topics
        self.id2word = id2word
        self.epochs = epochs
        self.chunksize = chunksize
        self.update_every = update_every
        self.max_staleness = max_staleness
        self.wait_timeout = wait_timeout
        self.alpha = alpha
        self.eta = eta
        self.decay = decay
        self.offset = offset
        self.iterations = iterations
        self.gamma_threshold = gamma_threshold
        self.seed = seed
        self.dtype = dtype
        self.spark = spark
        self.progress = progress
        self.server_options = server_options
        self.callbacks = callbacks
        on_pass = renamed.pop("on_pass", None)
        self._init_renamed(renamed)
        if on_pass is not None:
            warnings.warn("OnlineLDA(on_pass=f(model, record)) is renamed callbacks=[f(estimator, record)] "
                          "(the model is estimator.model_); the old name goes in the next release",
                          DeprecationWarning, stacklevel=2)
            callbacks = self.callbacks
            self.callbacks = [*(callbacks if isinstance(callbacks, (list, tuple)) else [callbacks]), _OnPass(on_pass)]

    # -- validation ------------------------------------------------------------------
    def _validate(self) -> None:
        check_int("num_topics", self.num_topics)
        check_int("epochs", self.epochs)
        check_int("chunksize", self.chunksize)
        check_int("update_every", self.update_every, minimum=0)
        check_int("max_staleness", self.max_staleness, minimum=0)
        check_real("wait_timeout (seconds)", self.wait_timeout, above=0, maximum=MAX_WAIT_SECONDS)
        check_int("iterations", self.iterations)
        check_real("decay (κ)", self.decay, above=0, maximum=1)
        check_real("offset (τ₀)", self.offset, above=0)
        check_real("gamma_threshold", self.gamma_threshold, minimum=0)
        check_int("seed", self.seed, minimum=0, none=True)
        check_bool("progress", self.progress)
        check_int("servers", check_mapping("server_options", self.server_options).get("servers", 1))
        for name in ("alpha", "eta"):
            if isinstance(getattr(self, name), str) and getattr(self, name) == "auto":
                raise ConfigurationError(f"{name}='auto' is not supported: learning the prior needs every "
                                         "document's gamma on the driver (gensim's distributed mode "
                                         "refuses it too); give 'symmetric', a float or an array")
        for callback in self.callbacks if isinstance(self.callbacks, (list, tuple)) else ():
            if isinstance(callback, _OnPass):
                check_callable("on_pass", callback.function, none=False)

    def _new_model(self, bow_rdd):
        from gensim.models import LdaModel
        from gensim.utils import FakeDict

        id2word = self.id2word
        if id2word is None:
            largest = bow_rdd.flatMap(lambda doc: [w for w, _ in doc]).fold(-1, max)
            if largest < 0:
                raise ConfigurationError("id2word is None and the corpus has no words to size the vocabulary")
            id2word = FakeDict(int(largest) + 1)
        try:
            lda = LdaModel(num_topics=self.num_topics, id2word=id2word, chunksize=self.chunksize,
                           passes=self.epochs, update_every=self.update_every, alpha=self.alpha,
                           eta=self.eta, decay=self.decay, offset=self.offset, eval_every=None,
                           iterations=self.iterations, gamma_threshold=self.gamma_threshold,
                           random_state=self.seed, dtype=self.dtype)
        except (ValueError, AssertionError) as err:  # gensim's checks of alpha, eta, id2word
            raise ConfigurationError(f"gensim refused the model parameters: {err}") from err
        return lda

    # -- training --------------------------------------------------------------------
    def fit(self, bow_rdd) -> "OnlineLDA":
        """Train a new model on ``bow_rdd`` (an RDD of gensim bag-of-words lists); return the estimator.

        The trained :class:`gensim.models.LdaModel` is ``model_``.
        """
        self._validate()
        self._begin_fit()
        ensure_executors(bow_rdd.context)
        self.model_ = self._new_model(bow_rdd)
        self._base_seed = self.seed if self.seed is not None else int(np.random.SeedSequence().entropy % 2**32)
        self._passes_done = 0
        self._train(bow_rdd, self.epochs)
        return self

    def update(self, bow_rdd, epochs: int | None = None, **renamed) -> "OnlineLDA":
        """Continue training the fitted model on new documents; return the estimator.

        The new documents count towards the corpus size the statistics are stretched to, and
        ρ goes on decaying from where it was: gensim's ``LdaModel.update`` semantics. ``epochs``
        (default: the estimator's; the old name ``passes=`` warns) passes over ``bow_rdd``.
        """
        if "passes" in renamed:
            warnings.warn("OnlineLDA.update(passes=...) is renamed epochs=...; the old name goes in the next "
                          "release", DeprecationWarning, stacklevel=2)
            if epochs is not None:
                raise TypeError("OnlineLDA.update got both passes= and its new name epochs=")
            epochs = renamed.pop("passes")
        if renamed:
            raise TypeError(f"OnlineLDA.update() got an unexpected keyword argument {next(iter(renamed))!r}")
        epochs = check_int("epochs", self.epochs if epochs is None else epochs)
        self._check_fitted()
        self._train(bow_rdd, epochs)
        return self

    def _train(self, bow_rdd, passes):
        from pyspark import StorageLevel

        from ..core import DeepDist
        from ..session import spark_context

        lda = self.model_
        sc = spark_context(self.spark if self.spark is not None else bow_rdd.context)
        slots = task_slots(sc)
        if bow_rdd.getNumPartitions() > slots:
            # a round needs every partition's chunk: all partitions must run at once
            log.info("OnlineLDA: coalescing %d partitions to the %d task slots", bow_rdd.getNumPartitions(), slots)
            bow_rdd = bow_rdd.coalesce(slots)
        persisted = not bow_rdd.is_cached
        if persisted:
            bow_rdd = bow_rdd.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            sizes = bow_rdd.mapPartitions(_count).collect()
            num_docs = sum(sizes)
            if num_docs == 0:
                log.warning("OnlineLDA: the corpus is empty; nothing to train")
                return
            lda.state.numdocs += num_docs
            chunks = [-(-size // self.chunksize) for size in sizes]
            options = dict(self.server_options or {})
            options.setdefault("progress", self.progress)
            shell = _Shell(lda, partitions=len(sizes), rounds=max(chunks), servers=options.get("servers", 1))
            descent = _MStep(lda, chunksize=self.chunksize, chunks=chunks, update_every=self.update_every,
                             decay=self.decay, offset=self.offset)
            self.partitions_ = len(sizes)
            if sum(chunks) * passes < 10:
                log.warning("OnlineLDA: only %d chunks in %d passes; training might not converge: "
                            "consider more passes or a smaller chunksize", sum(chunks), passes)
            with DeepDist(shell, params=_LdaParams(), spark=sc, **options) as dd:
                for pass_ in range(passes):
                    self._one_pass(dd, bow_rdd, descent, shell, pass_, passes)
                self.status_ = dd.status()
        finally:
            if persisted:
                bow_rdd.unpersist()
        lda.sync_state()

    def _one_pass(self, dd, bow_rdd, descent, shell, pass_, passes):
        lda = shell.lda
        started = time.perf_counter()
        metric = dd.store.metrics.get("perplexity")
        before = (metric.total, metric.count) if metric is not None else (0.0, 0)
        descent.start_pass(pass_)
        msteps, repeated = descent.msteps, descent.repeated
        estep = _EStep(self._base_seed, self._passes_done, lda.num_topics, lda.num_terms,
                       partitions=shell.partitions, rounds=shell.rounds, marker=float(pass_ + 1),
                       servers=len(shell.sstats_sum))
        rounds = _Rounds(self.update_every, self.max_staleness, float(shell.msteps[0]))
        reports = dd.train(bow_rdd, estep, descent, epochs=1, batch_size=self.chunksize,
                           fetch_every=1, push_every=1, rows=estep.rows, wait_for=rounds,
                           wait_timeout=self.wait_timeout)[0]
        dd.call_descent("flush")  # on the server, or on every shard (readers see a new version)
        self._passes_done += 1
        metric = dd.store.metrics.get("perplexity")
        total, count = (metric.total, metric.count) if metric is not None else (0.0, 0)
        chunks = sum(r["batches"] for r in reports)
        record = {
            "epoch": self._passes_done, "pass": self._passes_done, "seconds": time.perf_counter() - started,
            "msteps": descent.msteps - msteps, "rho": descent.rho, "chunks": chunks,
            "repeated_chunks": descent.repeated - repeated, "docs_merged": descent.docs_merged,
            "perplexity": (total - before[0]) / (count - before[1]) if count > before[1] else None,
            "bytes_pushed": sum(r["bytes_pushed"] for r in reports),
            "wait_seconds": sum(r["wait_seconds"] for r in reports),
            "wait_timeouts": sum(r["wait_timeouts"] for r in reports),
            "dense_bytes_per_chunk": lda.num_topics * lda.num_terms * np.dtype(lda.dtype).itemsize,
        }
        if getattr(self, "_callbacks", ()):
            lda.sync_state()  # the callbacks see a usable model_
        self._record(record)
        log.info("OnlineLDA pass %d/%d: %.2fs, %d chunks, %d M-steps, rho %.4f, perplexity estimate %s",
                 pass_ + 1, passes, record["seconds"], chunks, record["msteps"], descent.rho or float("nan"),
                 "n/a" if record["perplexity"] is None else f"{record['perplexity']:.1f}")
