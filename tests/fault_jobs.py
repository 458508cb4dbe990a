"""Fault drills on a Spark standalone cluster: one executor SIGKILLed in the middle of a fit.

Each drill runs a fit once undisturbed and once with worker 0's executor killed (JVM and Python
workers, as a lost node) from a timer thread while a training stage runs with both tasks busy,
and returns the numbers to judge it by: exact counts for an additive ``dd.train``, held-out
perplexity for ``OnlineLDA``, held-out SGNS loss for ``DistributedWord2Vec``, and the seconds
the fault cost.

The drills are functions ``drill(cluster, spark, **sizes) -> dict``: tests/test_faults.py runs
them in a driver process of its own (a process holds one SparkContext, and the test session's
is a ``local`` one), through this file's ``main``, and benchmarks/fault_runs.py runs them with
larger sizes as its ``additive``, ``online`` and ``word2vec`` parts. Functions that run on the
executors are nested in the drills: cloudpickle then ships them by value, so the executors need
not import this module.

    python tests/fault_jobs.py --master spark://127.0.0.1:7077 --web-port 8080 \\
        --worker-pids 123,456 --drills additive,online,word2vec --output faults.json
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from types import SimpleNamespace

import numpy as np

log = logging.getLogger("fault_jobs")


class StageKiller:
    """Kills worker ``worker``'s executor once, ``after`` seconds into a training stage.

    A training stage is an active stage that ``dd.train`` started (its call site is in
    deepdist/core.py) with at least two tasks, one of them running, so the kill lands
    inside the stage. ``stage`` picks the n-th such stage (1 = the first); if a stage ends
    before ``after`` seconds the kill moves on to the next one. Polls ``sc.statusTracker()``.
    """

    def __init__(self, cluster, sc, *, after: float, stage: int = 1, worker: int = 0, poll: float = 0.05):
        self.cluster, self.sc, self.after, self.stage, self.worker, self.poll = cluster, sc, after, stage, worker, poll
        self.killed: list = []
        self.killed_in_stage = None     # which training stage (1-based) the kill landed in
        self.seconds_into_stage = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stage-killer", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)
        return False

    def _run(self):
        tracker = self.sc.statusTracker()
        busy_since: dict = {}   # stage id -> when a task of it was first seen running
        order: list = []        # training stages in the order they were seen
        skipped: set = set()
        after = self.after
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                active = tracker.getActiveStageIds()
                infos = {stage_id: tracker.getStageInfo(stage_id) for stage_id in active}
            except Exception as err:  # a busy gateway: try again rather than never kill
                log.warning("stage-killer: status tracker failed (%s); retrying", err)
                self._stop.wait(self.poll)
                continue
            # a target stage that ended before the kill: kill early in the next one instead,
            # so a run faster than the undisturbed one still gets its fault
            for stage_id in [s for s in busy_since if s not in active]:
                if order.index(stage_id) + 1 >= self.stage:
                    after = min(after, 0.25)
                    log.info("stage-killer: training stage %d ended before the kill; the next one gets it",
                             order.index(stage_id) + 1)
                del busy_since[stage_id]
            for stage_id, info in infos.items():
                if info is None or "core.py" not in (info.name or "") or info.numTasks < 2:
                    if info is not None and stage_id not in skipped:
                        skipped.add(stage_id)
                        log.info("stage-killer: not a training stage: %s (%d tasks)", info.name, info.numTasks)
                    continue
                if stage_id not in order:
                    order.append(stage_id)
                # one running task is enough: on a loaded machine the two tasks of a short
                # stage may never overlap long enough, and the kill must still land in the stage
                if info.numActiveTasks >= 1:
                    busy_since.setdefault(stage_id, now)
                index = order.index(stage_id) + 1
                if index >= self.stage and stage_id in busy_since and now - busy_since[stage_id] >= after:
                    for worker in (self.worker, 1 - self.worker):  # the other, if this one has none yet
                        self.killed = self.cluster.kill_executor(worker)
                        if self.killed:
                            break
                    if not self.killed:
                        continue
                    self.killed_in_stage, self.seconds_into_stage = index, now - busy_since[stage_id]
                    log.info("killed the executor of worker %d (pids %s) %.1fs into training stage %d",
                             worker, self.killed, self.seconds_into_stage, index)
                    return
            self._stop.wait(self.poll)

    def report(self) -> dict:
        return {"pids_killed": len(self.killed), "killed_in_stage": self.killed_in_stage,
                "seconds_into_stage": self.seconds_into_stage}


def faulted_fit(cluster, fit, make_killer, tries: int = 5, landed=None):
    """``fit(killer)`` until its kill lands (a fit that outran its kill is run again, the next
    time with the kill early in the first training stage); returns ``(result, killer)``.

    ``landed(result)`` says whether a kill that happened did what the drill needs (say, hit a
    task that had pushed): on a loaded machine the victim's task may still be starting when
    the kill comes, and such a run is repeated, with the kill as planned.
    """
    killer = make_killer()
    for attempt in range(tries):
        cluster.wait_for_workers()
        result = fit(killer)
        if killer.killed and (landed is None or landed(result)):
            break
        if killer.killed:
            log.warning("the kill hit a task before it had done what the drill needs (attempt %d); "
                        "running it again", attempt + 1)
            killer = make_killer()
            continue
        log.warning("the kill missed its fit (attempt %d); running it again with an early kill", attempt + 1)
        # online LDA's rounds run well under a second a stage on a loaded machine: kill at once
        killer = StageKiller(cluster, killer.sc, after=min(killer.after, 0.05), stage=1, worker=killer.worker)
    return result, killer


def warm_up(sc, partitions: int = 2) -> None:
    """One task per executor first, so both start their Python workers before a timed fit."""
    sc.parallelize(range(partitions), partitions).map(lambda x: x).collect()


# -- additive dd.train: exact counts ---------------------------------------------------------------
def additive_drill(cluster, spark, *, elements: int = 20_000, bins: int = 1000, batch: int = 100,
                   epochs: int = 2, sleep: float = 0.03, after: float = 1.5, stage: int = 1) -> dict:
    """Each element adds 1 to ``counts[element % bins]``: the counts must come out exact.

    The input has a shuffle (``repartition``), so a lost executor also loses map outputs and
    the retried task may run in a new stage attempt.
    """
    from deepdist import DeepDist

    sc = spark.sparkContext
    data = np.arange(elements)
    expected = epochs * np.bincount(data % bins, minlength=bins)
    rdd = sc.parallelize(data.tolist(), 4).repartition(2)

    def count(model, batch_):
        time.sleep(sleep)  # stretch the job so the kill lands inside a task
        return {"counts": np.bincount(np.asarray(batch_) % bins, minlength=bins).astype(np.int64)}

    def add(model, update):
        model["counts"] += update["counts"]

    def fit(killer=None):
        warm_up(sc)
        started = time.perf_counter()
        with DeepDist({"counts": np.zeros(bins, np.int64)}, spark=sc, progress=False) as dd:
            if killer is None:
                reports = dd.train(rdd, count, add, epochs=epochs, batch_size=batch, additive=True)
            else:
                with killer:
                    reports = dd.train(rdd, count, add, epochs=epochs, batch_size=batch, additive=True)
            status = dd.status()
        counts = dd.model["counts"]
        return {"seconds": time.perf_counter() - started, "exact": bool(np.array_equal(counts, expected)),
                "total": int(counts.sum()), "expected_total": int(expected.sum()),
                "max_error": int(np.abs(counts - expected).max()),
                "attempts": [sorted(r["attempt"] for r in epoch) for epoch in reports],
                "rejected": status["rejected_by_reason"], "updates_applied": status["updates_applied"]}

    base = fit()
    cluster.wait_for_workers()
    # the drill is about a lost attempt whose pushes were applied and must be rolled back
    faulted, killer = faulted_fit(cluster, fit, lambda: StageKiller(cluster, sc, after=after, stage=stage),
                                  landed=lambda r: r["updates_applied"] > base["updates_applied"])
    return {"undisturbed": base, "faulted": {**faulted, **killer.report()},
            "fault_seconds": faulted["seconds"] - base["seconds"]}


# -- online LDA: held-out perplexity ---------------------------------------------------------------
def lee_documents():
    """gensim's lee_background.cor as token lists (lower-cased, stop words and short words out)."""
    from gensim.parsing.preprocessing import STOPWORDS
    from gensim.test.utils import datapath
    from gensim.utils import simple_preprocess

    with open(datapath("lee_background.cor"), encoding="utf-8", errors="replace") as handle:
        return [[w for w in simple_preprocess(line) if w not in STOPWORDS] for line in handle if line.strip()]


def online_drill(cluster, spark, *, docs: int = 6000, vocab: int = 400, topics: int = 8, length: int = 60,
                 passes: int = 4, chunksize: int = 100, heldout: int = 300, seed: int = 0,
                 points=(("mid-pass-2", 2, 0.3),)) -> dict:
    """OnlineLDA with default settings on a planted corpus, a kill inside pass ``stage``.

    The corpus is drawn from LDA's generative process (K planted topics), so two undisturbed
    fits with one seed land close together and a 2% bound on the held-out perplexity measures
    the fault, not the run-to-run spread of a corpus whose topics are ill-defined. A point
    ``(name, pass, fraction)`` kills ``fraction`` of the undisturbed run's shortest pass (not
    counting the first) into that pass (its training stage); ``faulted`` is the first point's run, ``faults`` all.
    """
    from deepdist.lda.evaluate import completion_perplexity
    from deepdist.lda.online import OnlineLDA
    from deepdist.lda.synthetic import synthetic_lda_corpus

    sc = spark.sparkContext
    corpus, _ = synthetic_lda_corpus(docs + heldout, vocab, topics, length, alpha=0.1, beta=0.01, seed=seed + 11,
                                     poisson_lengths=True)
    bow = [[(int(w), int(c)) for w, c in zip(*np.unique(d, return_counts=True))] for d in corpus[:docs]]
    test = [d.tolist() for d in corpus[docs:]]
    id2word = {i: f"w{i}" for i in range(vocab)}

    def fit(killer=None):
        warm_up(sc)
        rdd = sc.parallelize(bow, 2)
        lda = OnlineLDA(num_topics=topics, id2word=id2word, epochs=passes, chunksize=chunksize, seed=seed,
                        progress=False, spark=sc)
        started = time.perf_counter()
        if killer is None:
            model = lda.fit(rdd).model_
        else:
            with killer:
                model = lda.fit(rdd).model_
        seconds = time.perf_counter() - started
        history = lda.history_
        return {"seconds": seconds, "perplexity": completion_perplexity(test, model.get_topics(), model.alpha),
                "pass_seconds": [h["seconds"] for h in history], "msteps": sum(h["msteps"] for h in history),
                "chunks": sum(h["chunks"] for h in history),
                "repeated_chunks": sum(h.get("repeated_chunks", 0) for h in history),
                "wait_timeouts": sum(h["wait_timeouts"] for h in history),
                "docs_merged": [h["docs_merged"] for h in history], "docs": docs,
                "updates_applied": lda.status_["updates_applied"], "rejected": lda.status_["rejected_by_reason"]}

    base = fit()
    faults = []
    for name, stage, fraction in points:
        cluster.wait_for_workers()
        # passes after the first are the shorter (the first also starts the Python workers)
        killer = StageKiller(cluster, sc, after=fraction * min(base["pass_seconds"][1:] or base["pass_seconds"]),
                             stage=stage)
        run, killer = faulted_fit(cluster, fit, lambda: killer)
        faults.append({**run, **killer.report(), "point": name, "fault_seconds": run["seconds"] - base["seconds"],
                       "perplexity_ratio": run["perplexity"] / base["perplexity"]})
    return {"undisturbed": base, "faulted": faults[0], "faults": faults,
            "fault_seconds": faults[0]["fault_seconds"], "perplexity_ratio": faults[0]["perplexity_ratio"]}


# -- word2vec: held-out SGNS loss ------------------------------------------------------------------
def word2vec_drill(cluster, spark, *, epochs: int = 5, vector_size: int = 50, heldout: int = 30, repeat: int = 6,
                   job_words: int = 2000, seed: int = 1, partitions: int | None = None,
                   points=(("mid-training", 0.25),)) -> dict:
    """DistributedWord2Vec (default settings but the sizes) on lee_background, a kill mid-training.

    A point ``(name, fraction)`` kills ``fraction`` of the undisturbed run's training time into
    the training stage; ``faulted`` is the first point's run, ``faults`` all.
    """
    from deepdist.word2vec import DistributedWord2Vec
    from deepdist.word2vec.evaluate import HeldoutSGNSLoss

    sc = spark.sparkContext
    docs = lee_documents()
    train, test = docs[:-heldout] * repeat, docs[-heldout:]

    def fit(killer=None):
        warm_up(sc)
        # four slices, two training partitions: the fit repartitions (a shuffle), as it does for
        # most inputs
        rdd = sc.parallelize(train, 4)
        w2v = DistributedWord2Vec(vector_size=vector_size, epochs=epochs, seed=seed, job_words=job_words,
                                  partitions=partitions, spark=sc, progress=False)
        started = time.perf_counter()
        if killer is None:
            w2v.fit(rdd)
        else:
            with killer:
                w2v.fit(rdd)
        return w2v, time.perf_counter() - started

    base_model, base_seconds = fit()
    counts = {w: base_model.wv_.get_vecattr(w, "count") for w in base_model.wv_.index_to_key}
    loss = HeldoutSGNSLoss(counts, test)
    base = {"seconds": base_seconds, "training_seconds": base_model.timings_["training"],
            "heldout_loss": float(loss(base_model.model_))}
    faults = []
    for name, fraction in points:
        cluster.wait_for_workers()
        (model, seconds), killer = faulted_fit(
            cluster, fit, lambda: StageKiller(cluster, sc, after=fraction * base["training_seconds"]))
        heldout_loss = float(loss(model.model_))
        faults.append({"seconds": seconds, "training_seconds": model.timings_["training"],
                       "heldout_loss": heldout_loss, **killer.report(), "point": name,
                       "fault_seconds": seconds - base_seconds, "loss_ratio": heldout_loss / base["heldout_loss"]})
    return {"undisturbed": base, "faulted": faults[0], "faults": faults,
            "fault_seconds": faults[0]["fault_seconds"], "loss_ratio": faults[0]["loss_ratio"]}


DRILLS = {"additive": additive_drill, "online": online_drill, "word2vec": word2vec_drill}


def attach(master: str, web_port: int, worker_pids: list) -> object:
    """A handle on a running :class:`~deepdist.testing.LocalCluster` started by another process:
    enough to kill its executors and wait for its workers."""
    from deepdist.testing import LocalCluster

    cluster = LocalCluster.__new__(LocalCluster)
    cluster.url, cluster.web_port, cluster.master, cluster.timeout = master, web_port, None, 90.0
    cluster.workers = len(worker_pids)
    cluster.worker_procs = [SimpleNamespace(pid=pid) for pid in worker_pids]
    return cluster


def main(argv=None) -> int:
    from pyspark.sql import SparkSession

    from deepdist.testing import LocalCluster

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--master", required=True)
    parser.add_argument("--web-port", type=int, required=True)
    parser.add_argument("--worker-pids", required=True)
    parser.add_argument("--drills", default=",".join(DRILLS))
    parser.add_argument("--sizes", default="{}", help="JSON: {drill: {keyword: value}}")
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cluster = attach(args.master, args.web_port, [int(p) for p in args.worker_pids.split(",")])
    builder = SparkSession.builder.master(args.master).appName("deepdist-fault-drills")
    # the repo's spark-defaults.conf says 4 (for local[*] runs); this cluster has two cores,
    # and the fits size their partitions to the cores
    for key, value in {**LocalCluster.driver_conf, "spark.default.parallelism": "2"}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    logging.getLogger("gensim").setLevel(logging.WARNING)
    sizes = json.loads(args.sizes)
    results = {}
    try:
        for name in args.drills.split(","):
            started = time.perf_counter()
            results[name] = DRILLS[name](cluster, spark, **sizes.get(name, {}))
            log.info("drill %s: %.0fs: %s", name, time.perf_counter() - started, results[name])
            with open(args.output, "w") as handle:  # what finished survives a later drill's hang
                json.dump(results, handle, indent=1, default=str)
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
