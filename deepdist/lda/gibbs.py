"""Distributed LDA by collapsed Gibbs sampling with count deltas (AD-LDA) on Spark.

The algorithm is Newman et al., "Distributed Inference for Latent Dirichlet Allocation"
(NIPS 2007), as dist_lda runs it, with the shared counts on the DeepDist server instead of
Redis:

* the documents and their topic assignments z are sharded: one flat int32 block per RDD
  partition (:mod:`deepdist.lda.corpus`), cached across iterations;
* the word-topic counts n_wk (int32, V × K) and topic totals n_k are the shared model;
* each iteration is one Spark job. Every task pulls the counts (only the rows of its own
  words when that is smaller), runs ``sweeps_per_job`` SparseLDA sweeps
  (:mod:`deepdist.lda.sampler`) against its local copy and every ``sync_every`` sweeps
  pushes the change of n_wk as sparse int32 COO entries and adds the other tasks' changes
  since its last sync (``/changes``: a sweep's deltas, not the dense tables), on a background
  thread while the next sweep samples (:mod:`deepdist.lda.gibbs_task`). Kernel randomness
  comes from (seed, partition, sweep), so runs are reproducible.

**Exactness.** Spark retries failed tasks, so a partition's deltas can arrive twice or
half-done. The server books every push under (iteration, partition, attempt) and, at the end
of the job, keeps exactly the attempt whose block Spark kept (:mod:`deepdist.ledger`). On top
of that each block reports a 64-bit linear sketch of its own contribution to n_wk (and its
n_k); the driver compares their sum with the server's counts, and if they differ it rebuilds
the exact counts from the assignments (one aggregate pass) and corrects the server, logging a
warning (``repairs_``). So at the end of every iteration the counts equal the counts implied
by the assignments, whatever Spark retried.

**Losing an executor.** Its cached blocks go with it, and Spark rebuilds them from the
lineage. A task of an old job that Spark re-runs for that does not sample again: its epoch is
settled, so it passes its block through with the assignments it came with (see
:mod:`deepdist.lda.gibbs_task`), and the next job's checksum repairs the server's counts from
the assignments the blocks hold. Every ``lineage_every`` jobs the lineage is cut, so a rebuild
never reaches further back than that:

* with a checkpoint directory set on the SparkContext, by a reliable ``checkpoint()``;
* otherwise the driver keeps the assignments of the cut (collected with the job's reports, one
  byte a token for K <= 256) in a parameter of the DeepDist server, and the next job's input is
  the cached word-id blocks (recomputable from the documents' own lineage) with each partition's
  assignments pulled back from the server. No shared file system is needed; the cost is N bytes
  up to the driver and N bytes back per cut, and N bytes of driver memory (``history_``:
  ``cut_bytes``, ``cut_held_bytes``). Spark's ``localCheckpoint()`` is not used: its blocks die
  with their executor, and a fit that lost one could not continue.

Example (``local[2]``)::

    >>> from deepdist.lda import GibbsLDA                                      # doctest: +SKIP
    >>> docs = spark.sparkContext.textFile("docs.txt").map(str.split)         # doctest: +SKIP
    >>> lda = GibbsLDA(num_topics=20, iterations=100, min_count=5, max_df=0.5, seed=0)
    >>> model = lda.fit(docs)                                                  # doctest: +SKIP
    >>> model.show_topics(num_words=8)                                         # doctest: +SKIP
"""

from __future__ import annotations

import glob
import gzip
import json
import logging
import math
import os
import shutil
import time

import numpy as np

from ..errors import ConfigurationError, DeepDistError, NotFittedError
from ..executors import ensure_executors
from . import evaluate, sampler
from .corpus import Vocabulary, build_vocabulary, make_blocks, to_word_ids, topic_dtype
from .gibbs_model import GibbsLDAModel
from .gibbs_task import _coo, _partition_counts, _sketch_weights, _Task

log = logging.getLogger(__name__)

__all__ = ["GibbsLDA", "GibbsLDAModel"]

_U64 = 1 << 64
#: A partition with more than this times the mean tokens gets a warning (it sets every job's length).
_IMBALANCE = 1.1
#: Partitions holding fewer tokens than this on average get a warning: a sweep of them takes about
#: as long as the count exchange after it. Measured with K=100 on 2 cores, local[2] against local[1]
#: at 90k, 180k, 360k and 900k tokens a partition: 0.76x, 1.04x, 1.31x, 1.52x.
_SMALL_PARTITION_TOKENS = 200_000
#: The assignments of a lineage cut sit on the server in rows of this many bytes: a partition's
#: pull then names a handful of rows, not one index per token.
_CUT_ROW_BYTES = 4096
#: Assignments held on the driver beyond this many bytes get a warning naming the reliable checkpoint.
_CUT_WARN_BYTES = 1 << 30


def _descent(model, update):
    """Add a sparse count delta (flat COO over V × K, and n_k's change if sent) to n_wk and n_k, in place.

    numpy, not the compiled kernel: the driver then never waits for numba to load, and
    ``np.add.at`` on the flat view is exact for repeated indices (a ledger correction may hold them).
    Tasks send n_k's change along (:func:`.gibbs_task._coo`); deriving it here from the flat
    indices cost the driver about half a millisecond a push.
    """
    part = update.get("word_topic_flat")
    if part is not None:
        part.add_to(model["word_topic_flat"])
    totals = model["topic_totals"]
    if "topic_totals" in update:
        update["topic_totals"].add_to(totals)
    elif part is not None:  # a correction: only n_wk's entries
        K = totals.shape[0]
        totals += np.bincount(np.asarray(part.indices) % K, weights=part.values, minlength=K).astype(totals.dtype)


def _block_report(block):
    return block.report


def _report_with_topics(block):
    """The job's report plus the block's assignments, narrowed: a lineage cut keeps them on the driver."""
    dtype = topic_dtype(int(block.report["topic_counts"].shape[0]))
    return {**block.report, "cut_topics": block.topics.astype(dtype)}


def _block_tokens(block):
    return block.partition, block.num_tokens


class _CutLayout:
    """Where each partition's assignments sit in the server's ``cut_topics`` parameter.

    The parameter is an int64 (rows, ``_CUT_ROW_BYTES`` / 8) array holding the narrowed
    assignments as bytes; each partition starts on a row of its own.
    """

    def __init__(self, tokens_by_partition: dict, num_topics: int):
        self.dtype = np.dtype(topic_dtype(num_topics))
        self.first_row, row = {}, 0
        for partition in sorted(tokens_by_partition):
            self.first_row[partition] = row
            row += -(-tokens_by_partition[partition] * self.dtype.itemsize // _CUT_ROW_BYTES)
        self.shape = (max(row, 1), _CUT_ROW_BYTES // 8)

    @property
    def nbytes(self) -> int:
        return self.shape[0] * _CUT_ROW_BYTES

    def store(self, params, topics_by_partition) -> int:
        """Write the assignments into the server's array (under its lock); return the bytes written."""
        flat = params["cut_topics"].view(np.uint8).reshape(-1)
        written = 0
        for partition, topics in topics_by_partition.items():
            data = np.ascontiguousarray(topics, dtype=self.dtype).view(np.uint8)
            start = self.first_row[partition] * _CUT_ROW_BYTES
            flat[start:start + data.size] = data
            written += data.size
        return written


class _Restore:
    """``mapPartitions`` over the word-id blocks: each block with the assignments of the cut after
    job ``job``, pulled from the server (what a lineage cut's RDD computes)."""

    def __init__(self, client, layout: _CutLayout, job: int):
        self.client, self.layout, self.job = client, layout, job

    def __call__(self, blocks):
        for block in blocks:
            yield self._restore(block)

    def _restore(self, block):
        layout = self.layout
        size = block.num_tokens * layout.dtype.itemsize
        if not size:
            return block.evolve(np.zeros(0, np.int32), None, self.job)
        first = layout.first_row[block.partition]
        rows = np.arange(first, first + -(-size // _CUT_ROW_BYTES), dtype=np.int64)
        _, arrays = self.client.pull_rows({"cut_topics": rows})
        data = np.ascontiguousarray(arrays["cut_topics"].values).view(np.uint8).reshape(-1)[:size]
        return block.evolve(data.view(layout.dtype).astype(np.int32), None, self.job)


def _unrecoverable(err):
    """``err``, or when Spark lost a block that no lineage can rebuild, an error naming the fix."""
    text = str(err)
    if "CHECKPOINT_RDD_BLOCK_ID_NOT_FOUND" not in text and "Checkpoint block" not in text:
        return err
    from ..core import TrainingFailedError

    return TrainingFailedError(
        "GibbsLDA: an executor was lost with a block of the documents that was cut with localCheckpoint(), "
        "which only that executor held, so Spark cannot rebuild it. Give fit() documents whose lineage "
        "Spark can recompute (persist() them rather than localCheckpoint()), or checkpoint them reliably "
        "(sc.setCheckpointDir on storage every node reads, then docs.checkpoint()).\n"
        f"Spark said: {text[:1000]}")


def _minka_symmetric_alpha(alpha, num_topics, ndk_hist, length_hist, iterations=50):
    """Minka's fixed point for a symmetric Dirichlet α from count histograms.

    α ← α Σ_c H_c [ψ(c + α) − ψ(α)] / (K Σ_n L_n [ψ(n + Kα) − ψ(Kα)]), where H_c counts the
    (document, topic) pairs with n_dk = c and L_n the documents of length n.
    """
    from scipy.special import digamma

    c = np.arange(len(ndk_hist))[1:]
    n = np.arange(len(length_hist))[1:]
    h, ln = np.asarray(ndk_hist[1:], float), np.asarray(length_hist[1:], float)
    for _ in range(iterations):
        num = (h * (digamma(c + alpha) - digamma(alpha))).sum()
        den = num_topics * (ln * (digamma(n + num_topics * alpha) - digamma(num_topics * alpha))).sum()
        if den <= 0 or num <= 0:
            return alpha
        new = alpha * num / den
        converged = abs(new - alpha) < 1e-7 * alpha
        alpha = new
        if converged:
            break
    return float(alpha)


def _sum_hist(reports, key):
    size = max(len(r[key]) for r in reports)
    total = np.zeros(size, np.int64)
    for r in reports:
        total[:len(r[key])] += r[key]
    return total


class GibbsLDA:
    """Latent Dirichlet allocation by distributed collapsed Gibbs sampling (AD-LDA) on Spark.

    Parameters (keyword-only):
        num_topics: K.
        alpha: the symmetric document-topic prior α (per topic).
        beta: the symmetric topic-word prior β (η in gensim).
        iterations: Gibbs sweeps over the corpus.
        sync_every: sweeps between a task's pushes of its deltas and pulls of fresh counts (after
            the first pull, only the other tasks' deltas since the last one: ``/changes``).
        sweeps_per_job: sweeps per Spark job (one job = one "iteration" of the progress line,
            the exactness check and the checkpoints). More sweeps per job amortise Spark's
            per-job overhead; with ``sync_every`` < ``sweeps_per_job`` tasks still exchange
            counts between their sweeps. None (default): all iterations in one job, or one
            sweep per job when ``eval_every``, ``checkpoint_every``, ``optimize_alpha_every``
            or ``callback`` ask for work between jobs.
        burn_in_sweeps, burn_in_syncs: in the first ``burn_in_sweeps`` sweeps, each task
            exchanges counts ``burn_in_syncs`` times a sweep (after each slice of its documents)
            instead of once. Shards that see each other once a sweep settle on different labellings
            of the topics while they form, and then spend tens of sweeps reconciling them at a
            higher cost per token; a few sweeps of frequent exchanges avoid most of it. Ignored
            with one partition.
        seed: seed of the initial assignments and of every sweep.
        id2word: the vocabulary (list or dict id -> word, or a gensim Dictionary) when the
            documents are word ids or bags of words; otherwise Spark builds it from tokens.
        min_count, max_df, stop_words, max_vocab, hash_buckets: vocabulary filters, see
            :func:`deepdist.lda.corpus.build_vocabulary`. ``max_vocab`` tokens (or
            ``hash_buckets`` labels) are held on the driver.
        optimize_alpha_every: re-estimate α every this many jobs by Minka's fixed point from the
            aggregated document-topic counts (0: never); starts after ``optimize_alpha_after``
            sweeps.
        eval_every: with held-out documents given to :meth:`fit`, score them every this many
            jobs (document completion, :mod:`deepdist.lda.evaluate`) and at the end.
        checkpoint_dir, checkpoint_every: write a checkpoint every this many jobs: the topics
            as gzipped JSON and the arrays (counts, α, all assignments, gathered on the driver:
            N int32). ``resume=True`` continues from the latest one (same input, same
            partitioning).
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
        progress: show the driver's progress line.
        callback: ``callback(estimator, entry)`` after every job (``entry`` as in ``history_``).

    Attributes:
        model_: the fitted :class:`GibbsLDAModel`.
        history_: one dict per job: sweeps done, seconds, the joint log-likelihood log p(w, z)
            (and per token), α, bytes pushed and pulled against their dense size, repairs
            (``repaired``, ``repaired_entries``), partitions rebuilt after a lost executor
            (``rebuilt_partitions``, and the jobs whose assignments they came back with:
            ``rebuilt_from_jobs``), and at lineage cuts ``cut`` (``"driver"`` or ``"reliable"``),
            ``cut_bytes`` (assignments sent to the driver), ``cut_held_bytes`` (driver memory
            holding them) and ``cut_seconds``.
        repairs_: how many times the exactness check had to correct the server's counts.
        status_: the server's counters at the end.
    """

    def __init__(self, *, num_topics: int = 100, alpha: float = 0.1, beta: float = 0.01, iterations: int = 200,
                 sync_every: int = 1, sweeps_per_job: int | None = None, burn_in_sweeps: int = 20,
                 burn_in_syncs: int = 4, seed: int = 0, id2word=None, min_count: int = 1,
                 max_df: float = 1.0, stop_words=(), max_vocab: int | None = None, hash_buckets: int | None = None,
                 optimize_alpha_every: int = 0, optimize_alpha_after: int = 50, eval_every: int = 0,
                 checkpoint_dir=None, checkpoint_every: int = 0, resume: bool = False, lineage_every: int = 10,
                 verify: str = "sketch", pull: str = "auto", keep_state: bool = False, progress: bool = True,
                 callback=None):
        self.num_topics, self.alpha, self.beta, self.iterations = num_topics, alpha, beta, iterations
        self.sync_every, self.sweeps_per_job, self.seed, self.id2word = sync_every, sweeps_per_job, seed, id2word
        self.burn_in_sweeps, self.burn_in_syncs = burn_in_sweeps, burn_in_syncs
        self.min_count, self.max_df, self.stop_words = min_count, max_df, stop_words
        self.max_vocab, self.hash_buckets = max_vocab, hash_buckets
        self.optimize_alpha_every, self.optimize_alpha_after = optimize_alpha_every, optimize_alpha_after
        self.eval_every, self.checkpoint_dir, self.checkpoint_every = eval_every, checkpoint_dir, checkpoint_every
        self.resume, self.lineage_every, self.verify, self.pull = resume, lineage_every, verify, pull
        self.keep_state, self.progress, self.callback = keep_state, progress, callback
        self._task_hook = None  # tests: called in tasks after each push

    # -- validation --------------------------------------------------------------------------
    def _validate(self) -> None:
        for name in ("num_topics", "iterations", "sync_every", "sweeps_per_job", "lineage_every", "burn_in_syncs"):
            value = getattr(self, name)
            if name == "sweeps_per_job" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigurationError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("optimize_alpha_every", "optimize_alpha_after", "eval_every", "checkpoint_every", "seed",
                     "burn_in_sweeps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigurationError(f"{name} must be an integer >= 0, got {value!r}")
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigurationError(f"{name} must be a finite number > 0, got {value!r}")
        if self.verify not in ("sketch", "full", "off"):
            raise ConfigurationError(f"verify must be 'sketch', 'full' or 'off', got {self.verify!r}")
        if self.pull not in ("auto", "rows", "dense"):
            raise ConfigurationError(f"pull must be 'auto', 'rows' or 'dense', got {self.pull!r}")
        if (self.checkpoint_every or self.resume) and not self.checkpoint_dir:
            raise ConfigurationError("checkpoint_every and resume need checkpoint_dir")

    # -- vocabulary ----------------------------------------------------------------------------
    def _vocabulary(self, docs_rdd) -> Vocabulary:
        id2word = self.id2word
        if id2word is None:
            return build_vocabulary(docs_rdd, min_count=self.min_count, max_df=self.max_df,
                                    stop_words=self.stop_words, max_vocab=self.max_vocab,
                                    hash_buckets=self.hash_buckets)
        if hasattr(id2word, "token2id"):  # a gensim Dictionary
            words = [None] * len(id2word.token2id)
            for token, i in id2word.token2id.items():
                words[i] = token
        elif isinstance(id2word, dict):
            words = [str(id2word[i]) for i in range(len(id2word))]
        else:
            words = [str(w) for w in id2word]
        return Vocabulary(words)

    # -- fitting ---------------------------------------------------------------------------------
    def fit(self, docs_rdd, heldout=None) -> GibbsLDAModel:
        """Train on ``docs_rdd`` and return the fitted :class:`GibbsLDAModel` (also ``model_``).

        ``docs_rdd`` holds token lists (str), or with ``id2word`` word-id lists, bags of words
        ``[(word_id, count), ...]`` or ``(doc_id, bag of words)``. Its partitions are the shards.
        ``heldout`` are documents of the same kind (a local list) scored every ``eval_every`` jobs.
        """
        from pyspark import StorageLevel

        from ..core import DeepDist

        self._validate()
        sc = docs_rdd.context
        ensure_executors(sc)  # the vocabulary job below already runs deepdist on them
        checkpoint = self._latest_checkpoint() if self.resume else None
        if checkpoint is not None:
            with gzip.open(os.path.join(checkpoint, "vocabulary.json.gz"), "rt", encoding="utf-8") as f:
                vocabulary = Vocabulary.from_json(json.load(f))
        else:
            vocabulary = self._vocabulary(docs_rdd)
        V, K = len(vocabulary), self.num_topics
        heldout_ids = None if heldout is None else [to_word_ids(d, vocabulary, V) for d in heldout]
        # the word ids stay cached apart from the assignments: the first job and every lineage cut
        # start from them, and a lost one is rebuilt from the documents' own lineage
        words = make_blocks(docs_rdd, vocabulary, V).setName("GibbsLDA word ids").persist(
            StorageLevel.MEMORY_AND_DISK)
        word_topic = np.zeros((V, K), np.int32)
        model = {"word_topic": word_topic, "topic_totals": np.zeros(K, np.int64),
                 "word_topic_flat": word_topic.reshape(-1)}  # a view: deltas arrive as flat COO
        self.alpha_ = float(self.alpha)
        self.history_, self.repairs_ = [], 0
        done, initial = 0, None
        if checkpoint is not None:
            done, initial = self._load_checkpoint(checkpoint, sc)
        self._cut_mode, self._cut_layout, self._words = self._plan_cuts(sc, words, done), None, words
        if self._cut_mode == "driver":
            self._cut_layout = _CutLayout(dict(words.map(_block_tokens).collect()), K)
            model["cut_topics"] = np.zeros(self._cut_layout.shape, np.int64)
            log.info("GibbsLDA: lineage cuts every %d jobs keep the assignments on the driver (%.1f MB "
                     "reserved in the model server); set a checkpoint directory on the SparkContext "
                     "for reliable checkpoints instead", self.lineage_every, self._cut_layout.nbytes / 1e6)
            if self._cut_layout.nbytes > _CUT_WARN_BYTES:
                log.warning("GibbsLDA: the driver holds %.1f GB of assignments for lineage cuts; "
                            "sc.setCheckpointDir(a directory every node reads, e.g. on HDFS) cuts the "
                            "lineage with reliable checkpoints instead", self._cut_layout.nbytes / 1e9)
        started = time.perf_counter()
        try:
            with DeepDist(model, spark=sc, progress=self.progress) as dd:
                dd.set_descent(_descent, additive=True)
                self._dd, self._vocab = dd, vocabulary
                self._describe = "ll/token -"
                state = self._run_job(dd, words, 0, done, 0, initial, started, heldout_ids)
                if initial is not None:
                    initial.unpersist()
                while done < self.iterations:
                    sweeps = min(self._sweeps_per_job(), self.iterations - done)
                    state = self._run_job(dd, state, len(self.history_), done, sweeps, None, started, heldout_ids)
                    done += sweeps
                with dd.store.lock:
                    counts = word_topic.copy(), model["topic_totals"].copy()
                self.status_ = dd.status()
        except DeepDistError as err:
            raise _unrecoverable(err) from None
        finally:
            self._dd = self._words = None
        self.model_ = GibbsLDAModel(counts[0], counts[1], self.alpha_, self.beta, vocabulary, self.history_)
        if self.keep_state:
            self.state_ = state
        else:
            state.unpersist()
            words.unpersist()
        log.info("GibbsLDA: %d sweeps in %.1fs, %d count repairs, %d partitions rebuilt after lost blocks",
                 done, time.perf_counter() - started, self.repairs_,
                 sum(len(h.get("rebuilt_partitions", ())) for h in self.history_))
        return self.model_

    def _plan_cuts(self, sc, words, done) -> str | None:
        """How this fit cuts the lineage: ``"reliable"``, ``"driver"`` or None (it runs too few jobs)."""
        jobs = -(-(self.iterations - done) // self._sweeps_per_job())
        if jobs <= self.lineage_every:  # the last job is never cut: its state outlives the server
            return None
        return "reliable" if sc.getCheckpointDir() else "driver"

    def _sweeps_per_job(self) -> int:
        if self.sweeps_per_job is not None:
            return self.sweeps_per_job
        # a job costs a Spark job, a verification and a log-likelihood: run the whole fit as one
        # job unless something has to happen between jobs (evaluation, checkpoints, α, callback)
        per_job = self.eval_every or self.checkpoint_every or self.optimize_alpha_every or self.callback
        return 1 if per_job else self.iterations

    def _run_job(self, dd, state, job, done, sweeps, initial, started, heldout_ids):
        from pyspark import StorageLevel

        V, K = len(self._vocab), self.num_topics
        histograms = bool(self.optimize_alpha_every and sweeps and done + sweeps >= self.optimize_alpha_after
                          and (job % self.optimize_alpha_every == 0))
        task = _Task(dd.channel(job), job=job, first_sweep=done + 1, sweeps=sweeps, sync_every=self.sync_every,
                     seed=self.seed, num_topics=K, num_words=V, alpha=self.alpha_, beta=self.beta,
                     pull_rows=self.pull, histograms=histograms, burn_in_sweeps=self.burn_in_sweeps,
                     burn_in_syncs=self.burn_in_syncs if state.getNumPartitions() > 1 else 1,
                     merge_early=state.getNumPartitions() > 1,
                     initial=initial, hook=self._task_hook)
        new_state = state.mapPartitions(task, preservesPartitioning=True).persist(StorageLevel.MEMORY_AND_DISK)
        final = done + sweeps >= self.iterations
        # the last job's state outlives the model server (keep_state), so it keeps its lineage
        cut = self._cut_mode if job and job % self.lineage_every == 0 and not final else None
        if cut == "reliable":
            new_state.checkpoint()
        out_before = dd.store.status()["bytes_out"]
        job_started = time.perf_counter()
        label = "initialise" if not sweeps else f"sweep {done + sweeps}/{self.iterations}"
        collect = _report_with_topics if cut == "driver" else _block_report
        reports = dd.run_epoch(job, lambda: new_state.map(collect).collect(), label=label,
                               describe=lambda: self._describe)
        seconds = time.perf_counter() - job_started
        if job:
            state.unpersist()
        if not sweeps:
            self._check_balance(reports)
            self._check_size(reports)
        rebuilt = self._rebuilt(reports, job)
        next_state, cut_info = new_state, {}
        if cut == "driver":
            next_state, cut_info = self._cut(dd, reports, job)
            new_state.unpersist()
        elif cut == "reliable":
            cut_info = {"cut": "reliable"}
            self._words.unpersist()  # nothing starts from the word ids any more
        repaired = self._verify(dd, next_state, reports, rebuilt)
        entry = self._history_entry(dd, reports, job, done + sweeps, seconds, out_before, repaired)
        entry.update(rebuilt_partitions=sorted(rebuilt), rebuilt_from_jobs=sorted(set(rebuilt.values())), **cut_info)
        if histograms:
            self.alpha_ = _minka_symmetric_alpha(self.alpha_, K, _sum_hist(reports, "ndk_hist"),
                                                 _sum_hist(reports, "length_hist"))
            entry["alpha"] = self.alpha_
        if heldout_ids is not None and sweeps and ((self.eval_every and job % self.eval_every == 0) or final):
            total, tokens = evaluate.completion_log_likelihood(heldout_ids, self._phi(dd), self.alpha_)
            entry["heldout_ll_per_token"] = total / max(tokens, 1)
        if self.checkpoint_every and sweeps and (job % self.checkpoint_every == 0 or final):
            self._write_checkpoint(dd, next_state, done + sweeps)
        entry["elapsed"] = time.perf_counter() - started
        self.history_.append(entry)
        self._describe = f"ll/token {entry['ll_per_token']:.4f}"
        dd.store.metrics["log_likelihood"].add(entry["log_likelihood"])  # shown on /status
        log.info("GibbsLDA %s: log p(w,z) %.6g (%.4f per token)%s, %.2fs, pushed %d B, pulled %d B%s",
                 label, entry["log_likelihood"], entry["ll_per_token"],
                 f", held-out {entry['heldout_ll_per_token']:.4f}" if "heldout_ll_per_token" in entry else "",
                 seconds, entry["bytes_pushed"], entry["bytes_pulled"], ", counts repaired" if repaired else "")
        if self.callback is not None:
            self.callback(self, entry)
        return next_state

    @staticmethod
    def _rebuilt(reports, job) -> dict:
        """Partitions whose task started from assignments older than the last job's: Spark lost
        their cached block with an executor and rebuilt it from the lineage (partition -> job)."""
        if not job:
            return {}
        rebuilt = {r["partition"]: r["input_job"] for r in reports if r.get("input_job", job - 1) != job - 1}
        if rebuilt:
            log.warning("GibbsLDA job %d: %d partitions lost their cached block with an executor and came back "
                        "with the assignments of an earlier job (%s); they sit this job out and the checksum "
                        "makes the counts match them", job, len(rebuilt),
                        ", ".join(f"partition {p} from job {j}" for p, j in sorted(rebuilt.items())))
        return rebuilt

    def _cut(self, dd, reports, job):
        """Cut the lineage after ``job``: the assignments go to the server, and the next job starts
        from the cached word ids plus those; returns the new state and what it cost."""
        started = time.perf_counter()
        topics = {r["partition"]: r.pop("cut_topics") for r in reports}
        with dd.store.lock:
            written = self._cut_layout.store(dd.store.params, topics)
        state = self._words.mapPartitions(_Restore(dd.client, self._cut_layout, job), preservesPartitioning=True)
        info = {"cut": "driver", "cut_bytes": written, "cut_held_bytes": self._cut_layout.nbytes,
                "cut_seconds": time.perf_counter() - started}
        log.info("GibbsLDA: lineage cut after job %d: %d partitions' assignments (%.2f MB) held by the "
                 "model server, %.3fs", job, len(topics), written / 1e6, info["cut_seconds"])
        return state, info

    @staticmethod
    def _check_balance(reports):
        """Warn when one partition holds much more than its share: every sweep waits for it."""
        tokens = [r["tokens"] for r in reports]
        mean = sum(tokens) / max(len(tokens), 1)
        if len(tokens) > 1 and max(tokens) > _IMBALANCE * mean:
            log.warning("GibbsLDA: the largest of %d partitions holds %d tokens, %.0f%% more than the mean; "
                        "each job lasts as long as its largest partition. Repartition the documents "
                        "(docs_rdd.repartition(n)) to spread them evenly",
                        len(tokens), max(tokens), 100 * (max(tokens) / mean - 1))

    @staticmethod
    def _check_size(reports):
        """Warn when the partitions are so small that exchanging counts costs as much as sampling."""
        tokens = sum(r["tokens"] for r in reports)
        if len(reports) > 1 and tokens < _SMALL_PARTITION_TOKENS * len(reports):
            log.warning("GibbsLDA: %d partitions hold %d tokens, %d each on average; below about %d a "
                        "sweep takes about as long as the count exchange after it, so more partitions "
                        "make the fit slower, not faster. Use fewer partitions: docs_rdd.coalesce(%d)",
                        len(reports), tokens, tokens // len(reports), _SMALL_PARTITION_TOKENS,
                        max(1, tokens // _SMALL_PARTITION_TOKENS))

    def _phi(self, dd):
        with dd.store.lock:
            return sampler.topic_word_distribution(dd.store.params["word_topic"],
                                                   dd.store.params["topic_totals"], self.beta)

    # -- exactness --------------------------------------------------------------------------------
    def _verify(self, dd, state, reports, rebuilt=None) -> int:
        """Make the server's counts equal the counts implied by the assignments; how many entries it fixed.

        A job with rebuilt partitions is checked even with ``verify="off"``: their counts are
        known to be off.
        """
        if self.verify == "off" and not rebuilt:
            return 0
        K = self.num_topics
        params = dd.store.params
        if self.verify == "sketch":
            weights = _sketch_weights(params["word_topic_flat"].size)
            with dd.store.lock:
                server = int((weights * params["word_topic_flat"].astype(np.int64).view(np.uint64)).sum(
                    dtype=np.uint64))
                totals = params["topic_totals"].copy()
            expected = sum(r["sketch"] for r in reports) % _U64
            expected_totals = np.sum([r["topic_counts"] for r in reports], axis=0) if reports else np.zeros(K)
            if server == expected and np.array_equal(totals, expected_totals):
                return 0
        exact = np.zeros(params["word_topic_flat"].size, np.int64)
        for index, count in state.map(lambda b: _partition_counts(b.words, b.topics, K)).collect():
            exact[index] += count
        with dd.store.lock:
            diff = exact - params["word_topic_flat"]
            totals_ok = np.array_equal(params["topic_totals"], exact.reshape(-1, K).sum(axis=0))
        changed = np.flatnonzero(diff)
        if not changed.size and totals_ok:
            return 0
        dd.store.apply_corrections([_coo(changed, diff[changed], exact.size)])
        with dd.store.lock:  # n_k follows n_wk after the correction
            params["topic_totals"][...] = params["word_topic"].sum(axis=0, dtype=np.int64)
        self.repairs_ += 1
        log.warning("GibbsLDA: the server's counts differed from the assignments in %d entries after job %d%s; "
                    "corrected from the assignments (repair %d)", changed.size, len(self.history_),
                    f" ({len(rebuilt)} partitions rebuilt after a lost executor)" if rebuilt else "", self.repairs_)
        return max(int(changed.size), 1)

    def _history_entry(self, dd, reports, job, done, seconds, out_before, repaired):
        V, K = len(self._vocab), self.num_topics
        with dd.store.lock:
            ll_words = sampler.log_likelihood(dd.store.params["word_topic"], dd.store.params["topic_totals"],
                                              self.beta)
        tokens = sum(r["tokens"] for r in reports)
        ll = ll_words + sum(r["log_prior"] for r in reports)
        pushes = sum(r["pushed"] for r in reports)
        pulls = sum(r["pulls"] for r in reports)
        by_partition = sorted(reports, key=lambda r: r["partition"])
        return {"job": job, "sweeps": done, "seconds": seconds, "tokens": tokens,
                "log_likelihood": ll, "ll_per_token": ll / max(tokens, 1), "alpha": self.alpha_,
                "sweep_seconds": [round(r["sweep_seconds"], 4) for r in by_partition],
                "sweep_cpu_seconds": sum(r["sweep_cpu_seconds"] for r in reports),
                "sync_seconds": [round(r["sync_seconds"], 4) for r in by_partition],
                "sync_cpu_seconds": [round(r["sync_cpu_seconds"], 4) for r in by_partition],
                "exchange_seconds": [round(r["exchange_seconds"], 4) for r in by_partition],
                "exchange_cpu_seconds": [round(r["exchange_cpu_seconds"], 4) for r in by_partition],
                "pushes": pushes, "pulls": pulls, "bytes_pushed": sum(r["bytes_pushed"] for r in reports),
                "bytes_pulled": dd.store.status()["bytes_out"] - out_before,
                "dense_bytes_pushed": pushes * V * K * 4, "dense_bytes_pulled": pulls * (V * K * 4 + K * 8),
                "repaired": bool(repaired), "repaired_entries": int(repaired)}

    # -- checkpoints --------------------------------------------------------------------------------
    def _latest_checkpoint(self):
        found = sorted(glob.glob(os.path.join(os.fspath(self.checkpoint_dir), "sweep-*[0-9]")))
        return found[-1] if found else None

    def _write_checkpoint(self, dd, state, done):
        """``checkpoint_dir/sweep-NNNNNN/``: topics.json.gz, state.npz, vocabulary.json.gz, meta.json."""
        directory = os.fspath(self.checkpoint_dir)
        final = os.path.join(directory, f"sweep-{done:06d}")
        tmp = final + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        parts = sorted(state.map(lambda b: (b.partition, b.topics)).collect(), key=lambda p: p[0])
        with dd.store.lock:
            model = GibbsLDAModel(dd.store.params["word_topic"].copy(), dd.store.params["topic_totals"].copy(),
                                  self.alpha_, self.beta, self._vocab)
        np.savez_compressed(os.path.join(tmp, "state.npz"), word_topic=model.word_topic_,
                            topic_totals=model.topic_totals_, alpha=model.alpha_,
                            partitions=np.array([p for p, _ in parts], np.int64),
                            sizes=np.array([t.size for _, t in parts], np.int64),
                            topics=np.concatenate([t for _, t in parts]) if parts else np.zeros(0, np.int32))
        with gzip.open(os.path.join(tmp, "topics.json.gz"), "wt", encoding="utf-8") as f:
            json.dump([{"topic": k, "tokens": int(model.topic_totals_[k]), "words": words}
                       for k, words in model.show_topics(num_words=50)], f)
        with gzip.open(os.path.join(tmp, "vocabulary.json.gz"), "wt", encoding="utf-8") as f:
            json.dump(self._vocab.to_json(), f)
        with open(os.path.join(tmp, "meta.json"), "w", encoding="utf-8") as f:
            json.dump({"sweeps": done, "num_topics": self.num_topics, "alpha": self.alpha_, "beta": self.beta,
                       "seed": self.seed}, f)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        log.info("GibbsLDA checkpoint after %d sweeps in %s", done, final)

    def _load_checkpoint(self, path, sc):
        with open(os.path.join(path, "meta.json"), encoding="utf-8") as f:
            meta = json.load(f)
        if meta["num_topics"] != self.num_topics:
            raise ConfigurationError(f"the checkpoint {path} has num_topics={meta['num_topics']}, "
                                     f"this estimator {self.num_topics}")
        with np.load(os.path.join(path, "state.npz"), allow_pickle=False) as arrays:
            cuts = np.concatenate([[0], np.cumsum(arrays["sizes"])])
            topics = {int(p): arrays["topics"][cuts[i]:cuts[i + 1]].copy()
                      for i, p in enumerate(arrays["partitions"])}
        self.alpha_ = float(meta["alpha"])
        log.info("GibbsLDA: resuming from %s after %d sweeps", path, meta["sweeps"])
        return int(meta["sweeps"]), sc.broadcast(topics)

    # -- convenience ---------------------------------------------------------------------------------
    def transform(self, docs, **options):
        """Fold-in θ for ``docs`` with the fitted model (see :meth:`GibbsLDAModel.transform`)."""
        if not hasattr(self, "model_"):
            raise NotFittedError("this GibbsLDA is not fitted yet; call fit(docs_rdd) first")
        return self.model_.transform(docs, **options)
