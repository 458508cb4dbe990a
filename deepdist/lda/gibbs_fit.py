"""The steps of a :class:`~deepdist.lda.GibbsLDA` fit, over one small fit-state object.

A fit is one initialisation job and then jobs of ``sweeps_per_job`` sweeps each
(:func:`run_job`). A job is these steps, each a function of the estimator (its parameters) and
the :class:`FitState` (what the fit has built so far):

1. :func:`sample`: the job itself, every partition a :class:`.gibbs_task._Task`, with the
   lineage cut it is due for (:mod:`deepdist.lda.gibbs_lineage`);
2. :func:`rebuilt`: partitions Spark brought back from older assignments after a lost executor;
3. :func:`verify`: make the server's counts equal the counts implied by the assignments;
4. :func:`measure`: the job's record (log-likelihood, traffic, timings), α's update
   (:func:`minka_symmetric_alpha`), the held-out score;
5. a checkpoint (:mod:`deepdist.lda.gibbs_checkpoint`), then the record goes to the estimator's
   history and callbacks.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from ..vocabulary import Vocabulary
from . import evaluate, gibbs_checkpoint, gibbs_lineage, sampler
from .gibbs_model import GibbsLDAModel
from .gibbs_task import _partition_counts, _sketch_weights, _Task

__all__ = ["FitState", "run_job", "snapshot"]

log = logging.getLogger("deepdist.lda.gibbs")  # the estimator's: one logger for all of a fit's messages

_U64 = 1 << 64
#: A partition with more than this times the mean tokens gets a warning (it sets every job's length).
_IMBALANCE = 1.1
#: Partitions holding fewer tokens than this on average get a warning: a sweep of them takes about
#: as long as the count exchange after it (see benchmarks/lda_vs_peers.py).
_SMALL_PARTITION_TOKENS = 200_000


@dataclass
class FitState:
    """What a running fit holds between jobs (the estimator holds only its parameters).

    ``model`` is the server's model (n_wk as ``word_topic`` and its flat view, n_k, and with
    driver-held cuts ``cut_topics``); ``state`` the RDD of blocks the next job starts from;
    ``words`` the cached word-id blocks the first job and every driver-held cut start from.
    """

    vocabulary: Vocabulary
    model: dict
    words: object  # RDD of blocks without assignments
    state: object  # RDD of blocks the next job starts from
    alpha: float  # α as the fit runs (Minka's updates move it)
    done: int = 0  # sweeps done
    job: int = 0  # the next job's number (0: the initialisation)
    initial: object = None  # a broadcast of a checkpoint's assignments, for the initialisation job
    heldout: list | None = None  # held-out documents as word-id arrays
    cut_mode: str | None = None  # "reliable", "driver" or None: see gibbs_lineage.plan_cuts
    cut_layout: object = None  # gibbs_lineage.CutLayout of the driver-held cuts
    dd: object = None  # the DeepDist server, while it runs
    repairs: int = 0  # times verify() corrected the server's counts
    describe: str = "ll/token -"  # the progress line's note
    bytes_out_before: int = 0  # the server's bytes sent before the running job


def _block_report(block):
    return block.report


def run_job(lda, fit: FitState, sweeps: int) -> dict:
    """Run job ``fit.job`` of ``sweeps`` sweeps (0: the initialisation) and record it; return the record."""
    job = fit.job
    previous = fit.state
    reports, new_state, cut, seconds = sample(lda, fit, job, sweeps)
    if job:
        previous.unpersist()
    if not sweeps:
        check_balance(reports)
        check_size(reports)
    fit.state, cut_info = new_state, {}
    if cut == "driver":
        fit.state, cut_info = gibbs_lineage.cut(fit.dd, fit.model, fit.words, fit.cut_layout, reports, job)
        new_state.unpersist()
    elif cut == "reliable":
        cut_info = {"cut": "reliable"}
        fit.words.unpersist()  # nothing starts from the word ids any more
    lost = rebuilt(reports, job)
    repaired = verify(lda, fit, reports, job, lost)
    fit.done += sweeps
    record = measure(lda, fit, reports, job, sweeps, seconds, repaired)
    record.update(rebuilt_partitions=sorted(lost), rebuilt_from_jobs=sorted(set(lost.values())), **cut_info)
    final = fit.done >= lda.epochs
    if lda.checkpoint_every and sweeps and (job % lda.checkpoint_every == 0 or final):
        gibbs_checkpoint.write(lda.checkpoint_dir, snapshot(lda, fit), fit.state, fit.done, lda.seed)
    fit.job += 1
    fit.describe = f"ll/token {record['ll_per_token']:.4f}"
    fit.dd.store.metrics["log_likelihood"].add(record["log_likelihood"])  # shown on /status
    if sweeps:  # the dashboard's curves (the initialisation's numbers would dwarf the sweeps')
        fit.dd.store.metrics["ll_per_token"].add(record["ll_per_token"])
        fit.dd.store.metrics["repairs"].add(fit.repairs)
    log.info("GibbsLDA %s: log p(w,z) %.6g (%.4f per token)%s, %.2fs, pushed %d B, pulled %d B%s",
             _label(lda, fit.done, sweeps), record["log_likelihood"], record["ll_per_token"],
             f", held-out {record['heldout_ll_per_token']:.4f}" if "heldout_ll_per_token" in record else "",
             seconds, record["bytes_pushed"], record["bytes_pulled"], ", counts repaired" if repaired else "")
    if getattr(lda, "_callbacks", ()):
        lda.model_ = snapshot(lda, fit)  # the callbacks see the model as it stands
    return lda._record(record)


def _label(lda, done: int, sweeps: int) -> str:
    return f"sweep {done}/{lda.epochs}" if sweeps else "initialise"


def sample(lda, fit: FitState, job: int, sweeps: int):
    """Step 1: the Spark job. Returns the tasks' reports, the new state, its cut (None,
    ``"driver"`` or ``"reliable"``) and the job's seconds."""
    from pyspark import StorageLevel

    dd, state = fit.dd, fit.state
    K, V = lda.num_topics, len(fit.vocabulary)
    histograms = bool(lda.optimize_alpha_every and sweeps and fit.done + sweeps >= lda.optimize_alpha_after
                      and job % lda.optimize_alpha_every == 0)
    partitions = state.getNumPartitions()
    task = _Task(dd.channel(job), job=job, first_sweep=fit.done + 1, sweeps=sweeps, sync_every=lda.sync_every,
                 seed=lda.seed, num_topics=K, num_words=V, alpha=fit.alpha, beta=lda.beta,
                 pull_rows=lda.pull, histograms=histograms, burn_in_sweeps=lda.burn_in_sweeps,
                 burn_in_syncs=lda.burn_in_syncs if partitions > 1 or lda.threads > 1 else 1,
                 merge_early=partitions > 1,
                 initial=fit.initial if not sweeps else None, hook=lda._task_hook, threads=lda.threads)
    new_state = state.mapPartitions(task, preservesPartitioning=True).persist(StorageLevel.MEMORY_AND_DISK)
    final = fit.done + sweeps >= lda.epochs
    # the last job's state outlives the model server (keep_state), so it keeps its lineage
    cut = fit.cut_mode if job and job % lda.lineage_every == 0 and not final else None
    if cut == "reliable":
        new_state.checkpoint()
    fit.bytes_out_before = _bytes_out(dd)
    started = time.perf_counter()
    collect = gibbs_lineage.report_with_topics if cut == "driver" else _block_report
    reports = dd.run_epoch(job, lambda: new_state.map(collect).collect(), label=_label(lda, fit.done + sweeps, sweeps),
                           describe=lambda: fit.describe)
    if not sweeps and fit.initial is not None:
        fit.initial.unpersist()
        fit.initial = None
    return reports, new_state, cut, time.perf_counter() - started


def _bytes_out(dd) -> int:
    """Bytes the model servers (every shard) have sent."""
    status = dd.status()
    return sum(s["bytes_out"] for s in status.get("shards", [status]))


def rebuilt(reports, job: int) -> dict:
    """Step 2: partitions whose task started from assignments older than the last job's: Spark lost
    their cached block with an executor and rebuilt it from the lineage (partition -> job)."""
    if not job:
        return {}
    lost = {r["partition"]: r["input_job"] for r in reports if r.get("input_job", job - 1) != job - 1}
    if lost:
        log.warning("GibbsLDA job %d: %d partitions lost their cached block with an executor and came back "
                    "with the assignments of an earlier job (%s); they sit this job out and the checksum "
                    "makes the counts match them", job, len(lost),
                    ", ".join(f"partition {p} from job {j}" for p, j in sorted(lost.items())))
    return lost


def check_balance(reports) -> None:
    """Warn when one partition holds much more than its share: every sweep waits for it."""
    tokens = [r["tokens"] for r in reports]
    mean = sum(tokens) / max(len(tokens), 1)
    if len(tokens) > 1 and max(tokens) > _IMBALANCE * mean:
        log.warning("GibbsLDA: the largest of %d partitions holds %d tokens, %.0f%% more than the mean; "
                    "each job lasts as long as its largest partition. Repartition the documents "
                    "(docs_rdd.repartition(n)) to spread them evenly",
                    len(tokens), max(tokens), 100 * (max(tokens) / mean - 1))


def check_size(reports) -> None:
    """Warn when the partitions are so small that exchanging counts costs as much as sampling."""
    tokens = sum(r["tokens"] for r in reports)
    if len(reports) > 1 and tokens < _SMALL_PARTITION_TOKENS * len(reports):
        log.warning("GibbsLDA: %d partitions hold %d tokens, %d each on average; below about %d a "
                    "sweep takes about as long as the count exchange after it, so more partitions "
                    "make the fit slower, not faster. Use fewer partitions: docs_rdd.coalesce(%d)",
                    len(reports), tokens, tokens // len(reports), _SMALL_PARTITION_TOKENS,
                    max(1, tokens // _SMALL_PARTITION_TOKENS))


# -- exactness --------------------------------------------------------------------------------
def verify(lda, fit: FitState, reports, job: int, lost: dict) -> int:
    """Step 3: make the server's counts equal the counts implied by the assignments; return how
    many entries it fixed.

    A job with rebuilt partitions is checked even with ``verify="off"``: their counts are known
    to be off.
    """
    if lda.verify == "off" and not lost:
        return 0
    # fit.model is the whole table between jobs, on one server or gathered from its shards
    K, store, params = lda.num_topics, fit.dd.store, fit.model
    if lda.verify == "sketch" and _sketch_matches(store, params, reports, K):
        return 0
    exact = np.zeros(params["word_topic_flat"].size, np.int64)
    for index, count in fit.state.map(lambda b: _partition_counts(b.words, b.topics, K)).collect():
        exact[index] += count
    with store.lock:
        changed = np.flatnonzero(exact != params["word_topic_flat"])
        totals = exact.reshape(-1, K).sum(axis=0)
        if not changed.size and np.array_equal(params["topic_totals"], totals):
            return 0
        params["word_topic_flat"][changed] = exact[changed]
        params["topic_totals"][...] = totals
    fit.dd.rewrote("word_topic", "topic_totals")
    fit.repairs += 1
    log.warning("GibbsLDA: the server's counts differed from the assignments in %d entries after job %d%s; "
                "corrected from the assignments (repair %d)", changed.size, job,
                f" ({len(lost)} partitions rebuilt after a lost executor)" if lost else "", fit.repairs)
    return max(int(changed.size), 1)


def _sketch_matches(store, params, reports, num_topics: int) -> bool:
    """Whether the server's counts have the linear sketch (and n_k) the blocks report."""
    weights = _sketch_weights(params["word_topic_flat"].size)
    with store.lock:
        server = int((weights * params["word_topic_flat"].astype(np.int64).view(np.uint64)).sum(dtype=np.uint64))
        totals = params["topic_totals"].copy()
    expected = sum(r["sketch"] for r in reports) % _U64
    expected_totals = np.sum([r["topic_counts"] for r in reports], axis=0) if reports else np.zeros(num_topics)
    return server == expected and np.array_equal(totals, expected_totals)


# -- the record ----------------------------------------------------------------------------------
def measure(lda, fit: FitState, reports, job: int, sweeps: int, seconds: float, repaired: int) -> dict:
    """Step 4: the job's record (see ``GibbsLDA.history_``), after α's update and the held-out score."""
    store = fit.dd.store
    V, K = len(fit.vocabulary), lda.num_topics
    if reports and "ndk_hist" in reports[0]:
        fit.alpha = minka_symmetric_alpha(fit.alpha, K, _sum_hist(reports, "ndk_hist"),
                                          _sum_hist(reports, "length_hist"))
    with store.lock:
        ll_words = sampler.log_likelihood(fit.model["word_topic"], fit.model["topic_totals"], lda.beta)
    tokens = sum(r["tokens"] for r in reports)
    ll = ll_words + sum(r["log_prior"] for r in reports)
    pushes = sum(r["pushed"] for r in reports)
    pulls = sum(r["pulls"] for r in reports)
    by_partition = sorted(reports, key=lambda r: r["partition"])

    def each(name):
        return [round(r[name], 4) for r in by_partition]

    record = {"epoch": fit.done, "job": job, "sweeps": fit.done, "seconds": seconds, "tokens": tokens,
              "log_likelihood": ll, "ll_per_token": ll / max(tokens, 1), "alpha": fit.alpha,
              "sweep_seconds": each("sweep_seconds"),
              "sweep_cpu_seconds": sum(r["sweep_cpu_seconds"] for r in reports),
              "sync_seconds": each("sync_seconds"), "sync_cpu_seconds": each("sync_cpu_seconds"),
              "exchange_seconds": each("exchange_seconds"), "exchange_cpu_seconds": each("exchange_cpu_seconds"),
              "pushes": pushes, "pulls": pulls, "bytes_pushed": sum(r["bytes_pushed"] for r in reports),
              "bytes_pulled": _bytes_out(fit.dd) - fit.bytes_out_before,
              "dense_bytes_pushed": pushes * V * K * 4, "dense_bytes_pulled": pulls * (V * K * 4 + K * 8),
              "repaired": bool(repaired), "repaired_entries": int(repaired)}
    final = fit.done >= lda.epochs
    if fit.heldout is not None and sweeps and ((lda.eval_every and job % lda.eval_every == 0) or final):
        with store.lock:
            phi = sampler.topic_word_distribution(fit.model["word_topic"], fit.model["topic_totals"], lda.beta)
        total, scored = evaluate.completion_log_likelihood(fit.heldout, phi, fit.alpha)
        record["heldout_ll_per_token"] = total / max(scored, 1)
    return record


def snapshot(lda, fit: FitState) -> GibbsLDAModel:
    """A :class:`.GibbsLDAModel` of the server's counts as they stand (copied under its lock)."""
    with fit.dd.store.lock:
        counts = fit.model["word_topic"].copy(), fit.model["topic_totals"].copy()
    return GibbsLDAModel(counts[0], counts[1], fit.alpha, lda.beta, fit.vocabulary, getattr(lda, "history_", ()))


def minka_symmetric_alpha(alpha, num_topics, ndk_hist, length_hist, iterations=50):
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
