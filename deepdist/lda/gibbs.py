"""Distributed LDA by collapsed Gibbs sampling with count deltas (AD-LDA) on Spark.

The algorithm is Newman et al., "Distributed Inference for Latent Dirichlet Allocation"
(NIPS 2007), as dist_lda runs it, with the shared counts on the DeepDist server instead of
Redis:

* the documents and their topic assignments z are sharded: one flat int32 block per RDD
  partition (:mod:`deepdist.lda.corpus`), cached across jobs;
* the word-topic counts n_wk (int32, V × K) and topic totals n_k are the shared model;
* a fit is a series of Spark jobs. In each, every task pulls the counts (only the rows of its
  own words when that is smaller), runs ``sweeps_per_job`` SparseLDA sweeps
  (:mod:`deepdist.lda.sampler`) against its local copy and every ``sync_every`` sweeps
  pushes the change of n_wk as sparse int32 COO entries and adds the other tasks' changes
  since its last sync (``/changes``: a sweep's deltas, not the dense tables), on a background
  thread while the next sweep samples (:mod:`deepdist.lda.gibbs_task`). Kernel randomness
  comes from (seed, partition, sweep), so runs are reproducible.

**Exactness.** Spark retries failed tasks, so a partition's deltas can arrive twice or
half-done. The server books every push under (job, partition, attempt) and, at the end
of the job, keeps exactly the attempt whose block Spark kept (:mod:`deepdist.ledger`). On top
of that each block reports a 64-bit linear sketch of its own contribution to n_wk (and its
n_k); the driver compares their sum with the server's counts, and if they differ it rebuilds
the exact counts from the assignments (one aggregate pass) and corrects the server, logging a
warning (``repairs_``). So at the end of every job the counts equal the counts implied
by the assignments, whatever Spark retried.

**Losing an executor.** Its cached blocks go with it, and Spark rebuilds them from the
lineage. A task of an old job that Spark re-runs for that does not sample again: its epoch is
settled, so it passes its block through with the assignments it came with (see
:mod:`deepdist.lda.gibbs_task`), and the next job's checksum repairs the server's counts from
the assignments the blocks hold. Every ``lineage_every`` jobs the lineage is cut
(:mod:`deepdist.lda.gibbs_lineage`), so a rebuild never reaches further back than that.

**Sharded servers.** With ``server_options={"servers": N}`` the count table is split by word
rows over N model servers (:mod:`deepdist.shards`); its flat view is cut at the same rows. The
driver's checks read the table gathered from the shards at the end of each job, and its repairs
and lineage cuts reach every shard through :meth:`deepdist.DeepDist.rewrote`.

The estimator keeps deepdist's contract (:mod:`deepdist.estimator`); the steps of a fit are in
:mod:`deepdist.lda.gibbs_fit`, its checkpoints in :mod:`deepdist.lda.gibbs_checkpoint`.

Example (``local[2]``)::

    >>> from deepdist.lda import GibbsLDA                                      # doctest: +SKIP
    >>> docs = spark.sparkContext.textFile("docs.txt").map(str.split)         # doctest: +SKIP
    >>> lda = GibbsLDA(num_topics=20, epochs=100, min_count=5, max_df=0.5, seed=0)
    >>> lda.fit(docs).model_.show_topics(num_words=8)                          # doctest: +SKIP
"""

from __future__ import annotations

import logging

import numpy as np

from .. import optim
from ..errors import ConfigurationError, DeepDistError
from ..estimator import Estimator
from ..executors import ensure_executors
from ..session import spark_context
from ..validation import check_bool, check_choice, check_int, check_mapping, check_real
from ..vocabulary import Vocabulary, build_vocabulary, vocabulary_from_id2word
from . import gibbs_checkpoint, gibbs_fit, gibbs_lineage
from .corpus import make_blocks, to_word_ids
from .gibbs_model import GibbsLDAModel

log = logging.getLogger(__name__)

__all__ = ["GibbsLDA", "GibbsLDAModel"]


class GibbsLDA(Estimator):
    """Latent Dirichlet allocation by distributed collapsed Gibbs sampling (AD-LDA) on Spark.

    Parameters (keyword-only):
        num_topics: K.
        alpha: the symmetric document-topic prior α (per topic).
        beta: the symmetric topic-word prior β (η in gensim).
        epochs: Gibbs sweeps over the corpus (passes over the data; formerly ``iterations``).
        sync_every: sweeps between a task's pushes of its deltas and pulls of fresh counts (after
            the first pull, only the other tasks' deltas since the last one: ``/changes``).
        sweeps_per_job: sweeps per Spark job (one job = one record of ``history_``, one
            exactness check, one chance of a checkpoint). More sweeps per job amortise Spark's
            per-job overhead; with ``sync_every`` < ``sweeps_per_job`` tasks still exchange
            counts between their sweeps. None (default): all iterations in one job, or one
            sweep per job when ``eval_every``, ``checkpoint_every``, ``optimize_alpha_every``
            or ``callbacks`` ask for work between jobs.
        burn_in_sweeps, burn_in_syncs: in the first ``burn_in_sweeps`` sweeps, each task
            exchanges counts ``burn_in_syncs`` times a sweep (after each slice of its documents)
            instead of once. Shards that see each other once a sweep settle on different labellings
            of the topics while they form, and then spend tens of sweeps reconciling them at a
            higher cost per token; a few sweeps of frequent exchanges avoid most of it. Ignored
            with one partition.
        threads: sampling threads in each task (:mod:`deepdist.lda.gibbs_threads`): a task
            samples slices of its documents at once, one thread each with its own copy of the
            counts, merges their changes in memory after every step, and exchanges their sum
            with the server once a round. One partition per executor host with ``threads`` = its
            cores combines the host's deltas before they reach the server (on a cluster, set
            ``spark.task.cpus`` to match so that Spark does not run other tasks beside it).
        seed: seed of the initial assignments and of every sweep.
        id2word: the vocabulary (list or dict id -> word, or a gensim Dictionary) when the
            documents are word ids or bags of words; otherwise Spark builds it from tokens.
        min_count, max_df, stop_words, max_vocab, hash_buckets: vocabulary filters, see
            :func:`deepdist.vocabulary.build_vocabulary`. ``max_vocab`` tokens (or
            ``hash_buckets`` labels) are held on the driver.
        optimize_alpha_every: re-estimate α every this many jobs by Minka's fixed point from the
            aggregated document-topic counts (0: never); starts after ``optimize_alpha_after``
            sweeps.
        eval_every: with held-out documents given to :meth:`fit`, score them every this many
            jobs (document completion, :mod:`deepdist.lda.evaluate`) and at the end.
        checkpoint_dir, checkpoint_every: write a checkpoint every this many jobs, one file
            ``sweep-NNNNNN.ddw`` (:mod:`deepdist.lda.gibbs_checkpoint`: counts, α, all
            assignments, gathered on the driver: N int32; the vocabulary and top words in its
            header). ``resume=True`` continues from the latest one (same input, same partitioning).
        lineage_every: cut the cached RDD's lineage every this many jobs, so that rebuilding a
            block lost with an executor never reaches further back: a reliable checkpoint if the
            SparkContext has a checkpoint directory, else the assignments are kept on the driver
            (in the model server) and the next job starts from them and the cached word ids.
        verify: ``"sketch"`` (compare a linear sketch of the counts every job, rebuild them on a
            mismatch), ``"full"`` (rebuild and compare every job) or ``"off"`` (only in a job
            where partitions lost with an executor came back rebuilt).
        pull: ``"rows"`` (each task pulls the rows of its words), ``"dense"`` or ``"auto"``.
        keep_state: keep the final RDD of blocks (``state_``, persisted) for inspection. Its lineage
            ends at the last cut, on a model server that is gone after ``fit``: a block of it lost
            later cannot be rebuilt unless a checkpoint directory was set.
        spark: a SparkSession or SparkContext for documents given as a local list (an RDD's own
            context is used otherwise); None: the active one.
        server_options: keyword arguments for :class:`deepdist.DeepDist` (the count server),
            e.g. ``{"host": ..., "max_body_bytes": ...}``; ``staleness`` must stay ``"apply"``.
        progress: show the driver's progress line.
        callbacks: ``f(estimator, record)`` after every job (``record`` as in ``history_``);
            ``model_`` is then a copy of the counts as they stand (formerly ``callback=f``).

    Attributes:
        model_: the fitted :class:`GibbsLDAModel`. Its ``alpha_`` is the (K,) array of α; the
            estimator has no ``alpha_`` of its own (α as the fit moves it is each record's
            ``alpha``, a float).
        history_: one dict per job: ``epoch`` (= ``sweeps``, sweeps done), ``job``, ``seconds``,
            ``elapsed``, the joint log-likelihood log p(w, z) (and per token), α, bytes pushed and pulled against their dense size, repairs
            (``repaired``, ``repaired_entries``), partitions rebuilt after a lost executor
            (``rebuilt_partitions``, and the jobs whose assignments they came back with:
            ``rebuilt_from_jobs``), and at lineage cuts ``cut`` (``"driver"`` or ``"reliable"``),
            ``cut_bytes`` (assignments sent to the driver), ``cut_held_bytes`` (driver memory
            holding them) and ``cut_seconds``.
        n_iter_: sweeps done.
        repairs_: how many times the exactness check had to correct the server's counts.
        status_: the server's counters at the end.
    """

    _renamed = {"iterations": "epochs", "callback": "callbacks"}
    #: tests: ``_task_hook(job=, partition=, attempt=, event=)`` runs in the tasks after each push,
    #: ``_fit_hook(fit_state)`` on the driver once the count server runs (it may keep the state)
    _task_hook = None
    _fit_hook = None

    def __init__(self, *, num_topics: int = 100, alpha: float = 0.1, beta: float = 0.01, epochs: int = 200,
                 sync_every: int = 1, sweeps_per_job: int | None = None, burn_in_sweeps: int = 20,
                 burn_in_syncs: int = 4, seed: int = 0, id2word=None, min_count: int = 1,
                 max_df: float = 1.0, stop_words=(), max_vocab: int | None = None, hash_buckets: int | None = None,
                 optimize_alpha_every: int = 0, optimize_alpha_after: int = 50, eval_every: int = 0,
                 checkpoint_dir=None, checkpoint_every: int = 0, resume: bool = False, lineage_every: int = 10,
                 verify: str = "sketch", pull: str = "auto", keep_state: bool = False, spark=None,
                 server_options: dict | None = None, progress: bool = True, callbacks=(), threads: int = 1,
                 **renamed):
        self.num_topics, self.alpha, self.beta, self.epochs = num_topics, alpha, beta, epochs
        self.sync_every, self.sweeps_per_job, self.seed, self.id2word = sync_every, sweeps_per_job, seed, id2word
        self.burn_in_sweeps, self.burn_in_syncs = burn_in_sweeps, burn_in_syncs
        self.min_count, self.max_df, self.stop_words = min_count, max_df, stop_words
        self.max_vocab, self.hash_buckets = max_vocab, hash_buckets
        self.optimize_alpha_every, self.optimize_alpha_after = optimize_alpha_every, optimize_alpha_after
        self.eval_every, self.checkpoint_dir, self.checkpoint_every = eval_every, checkpoint_dir, checkpoint_every
        self.resume, self.lineage_every, self.verify, self.pull = resume, lineage_every, verify, pull
        self.keep_state, self.spark, self.server_options = keep_state, spark, server_options
        self.progress, self.callbacks, self.threads = progress, callbacks, threads
        if "callback" in renamed and callbacks:
            raise TypeError("GibbsLDA got both callback= and callbacks=; give callbacks=[...] only")
        self._init_renamed(renamed)  # callback=f becomes callbacks=f, which fit takes as [f]

    # -- validation --------------------------------------------------------------------------
    def _validate(self) -> None:
        for name in ("num_topics", "epochs", "sync_every", "lineage_every", "burn_in_syncs", "threads"):
            check_int(name, getattr(self, name))
        check_int("sweeps_per_job", self.sweeps_per_job, none=True)
        for name in ("optimize_alpha_every", "optimize_alpha_after", "eval_every", "checkpoint_every", "seed",
                     "burn_in_sweeps"):
            check_int(name, getattr(self, name), minimum=0)
        for name in ("alpha", "beta"):
            check_real(name, getattr(self, name), above=0)
        check_choice("verify", self.verify, ("sketch", "full", "off"))
        check_choice("pull", self.pull, ("auto", "rows", "dense"))
        for name in ("resume", "keep_state", "progress"):
            check_bool(name, getattr(self, name))
        options = check_mapping("server_options", self.server_options)
        if "spark" in options or "progress" in options:
            raise ConfigurationError("server_options must not hold spark or progress: they are GibbsLDA's own "
                                     f"parameters, got {sorted(options)}")
        if (self.checkpoint_every or self.resume) and not self.checkpoint_dir:
            raise ConfigurationError("checkpoint_every and resume need checkpoint_dir")

    # -- vocabulary ----------------------------------------------------------------------------
    def _vocabulary(self, docs_rdd) -> Vocabulary:
        id2word = self.id2word
        if id2word is None:
            return build_vocabulary(docs_rdd, min_count=self.min_count, max_df=self.max_df,
                                    stop_words=self.stop_words, max_vocab=self.max_vocab,
                                    hash_buckets=self.hash_buckets)
        return vocabulary_from_id2word(id2word)

    # -- fitting ---------------------------------------------------------------------------------
    def fit(self, docs_rdd, heldout=None) -> "GibbsLDA":
        """Train on ``docs_rdd``; return the estimator, its fitted :class:`GibbsLDAModel` in ``model_``.

        ``docs_rdd`` holds token lists (str), or with ``id2word`` word-id lists, bags of words
        ``[(word_id, count), ...]`` or ``(doc_id, bag of words)``; its partitions are the shards
        (a local list is parallelised on ``spark``'s context). ``heldout`` are documents of the
        same kind (a local list) scored every ``eval_every`` jobs and at the end.
        """
        from ..core import DeepDist

        self._validate()
        self._begin_fit()
        self.__dict__.pop("model_", None)
        self.repairs_ = 0
        if not hasattr(docs_rdd, "mapPartitions"):
            docs_rdd = spark_context(self.spark).parallelize(list(docs_rdd))
        sc = docs_rdd.context
        ensure_executors(sc)  # the vocabulary job below already runs deepdist on them
        fit = self._start(sc, docs_rdd, heldout)
        try:
            with DeepDist(fit.model, spark=sc, progress=self.progress, **check_mapping(
                    "server_options", self.server_options)) as dd:
                dd.set_descent(optim.add, additive=True)
                fit.dd = dd
                if self._fit_hook is not None:
                    self._fit_hook(fit)
                gibbs_fit.run_job(self, fit, 0)
                while fit.done < self.epochs:
                    gibbs_fit.run_job(self, fit, min(self._sweeps_per_job(), self.epochs - fit.done))
                self.model_ = gibbs_fit.snapshot(self, fit)
                self.status_ = dd.status()
        except BaseException as err:
            self.__dict__.pop("model_", None)  # a failed fit leaves no half-fitted model
            translated = gibbs_lineage.unrecoverable(err) if isinstance(err, DeepDistError) else err
            if translated is err:
                raise
            raise translated from err
        finally:
            fit.dd = None
            self.repairs_ = fit.repairs
        if self.keep_state:
            self.state_ = fit.state
        else:
            fit.state.unpersist()
            fit.words.unpersist()
        log.info("GibbsLDA: %d sweeps in %.1fs, %d count repairs, %d partitions rebuilt after lost blocks",
                 fit.done, self.history_[-1]["elapsed"], self.repairs_,
                 sum(len(h.get("rebuilt_partitions", ())) for h in self.history_))
        return self

    def _start(self, sc, docs_rdd, heldout) -> gibbs_fit.FitState:
        """The fit's state before its first job: vocabulary, cached word ids, the server's model,
        the lineage plan, and what a checkpoint to resume from holds."""
        from pyspark import StorageLevel

        path = gibbs_checkpoint.latest(self.checkpoint_dir) if self.resume else None
        checkpoint = gibbs_checkpoint.read(path, self.num_topics) if path is not None else None
        vocabulary = checkpoint.vocabulary if checkpoint is not None else self._vocabulary(docs_rdd)
        V, K = len(vocabulary), self.num_topics
        # the word ids stay cached apart from the assignments: the first job and every lineage cut
        # start from them, and a lost one is rebuilt from the documents' own lineage
        words = make_blocks(docs_rdd, vocabulary, V).setName("GibbsLDA word ids").persist(
            StorageLevel.MEMORY_AND_DISK)
        word_topic = np.zeros((V, K), np.int32)
        model = {"word_topic": word_topic, "topic_totals": np.zeros(K, np.int64),
                 "word_topic_flat": word_topic.reshape(-1)}  # a view: deltas arrive as flat COO
        fit = gibbs_fit.FitState(vocabulary, model, words, words, float(self.alpha))
        if heldout is not None:
            fit.heldout = [to_word_ids(d, vocabulary, V) for d in heldout]
        if checkpoint is not None:
            fit.done, fit.alpha, fit.initial = checkpoint.sweeps, checkpoint.alpha, sc.broadcast(checkpoint.topics)
        jobs = -(-(self.epochs - fit.done) // self._sweeps_per_job())
        fit.cut_mode = gibbs_lineage.plan_cuts(sc, jobs, self.lineage_every)
        if fit.cut_mode == "driver":
            fit.cut_layout = gibbs_lineage.reserve(words, model, K, self.lineage_every)
        return fit

    def _sweeps_per_job(self) -> int:
        if self.sweeps_per_job is not None:
            return self.sweeps_per_job
        # a job costs a Spark job, a verification and a log-likelihood: run the whole fit as one
        # job unless something has to happen between jobs (evaluation, checkpoints, α, callbacks)
        per_job = self.eval_every or self.checkpoint_every or self.optimize_alpha_every or self.callbacks
        return 1 if per_job else self.epochs

    # -- convenience ---------------------------------------------------------------------------------
    def transform(self, docs, **options):
        """Fold-in θ for ``docs`` with the fitted model (see :meth:`GibbsLDAModel.transform`)."""
        self._check_fitted()
        return self.model_.transform(docs, **options)
