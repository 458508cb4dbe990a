"""Gibbs LDA side by side: deepdist GibbsLDA on local[1] and local[2] against its peers.

Contestants, on the same training documents, in one run:

- deepdist ``GibbsLDA`` on ``local[1]`` and ``local[2]`` (each in its own process and
  SparkSession; session start and input caching excluded), ``sweeps_per_job`` sweeps per Spark
  job (by default GibbsLDA's own: all sweeps in one job) and counts exchanged with the server every
  ``sync_every`` sweep; and on ``local[2]`` with one partition sampled on 2 threads (``threads=2``:
  the threads merge in memory, the task exchanges with the server once a round), and with
  ``--servers2`` on 2 model servers;
- tomotopy ``LDAModel`` (collapsed Gibbs), fixed symmetric α (``optim_interval=0``), with 1 worker
  and with 2 (its default parallel scheme, in shared memory): the second is the two-core speed-up
  a user gets from the peer, next to deepdist's local[2] over local[1];
- the ``lda`` package (Cython collapsed Gibbs);
- gensim ``LdaMulticore`` (online VB, 1 worker, 10 passes);
- Spark MLlib LDA, ``online`` (learningOffset=10, maxIter 50, subsampling 0.2) and ``em``
  (maxIter 50), each in its own process and session.

Corpora: ``synthetic`` (drawn from LDA: V=5000, 50 true topics, Poisson(100) tokens, α=0.1,
β=0.01; 10% of documents held out) and ``wiki`` (the articles of gensim's test Wikipedia dump,
tokenised by ``WikiCorpus`` rules, gensim's stop words removed; every 10th article held out).

Every model is scored by ONE evaluator, :func:`deepdist.lda.evaluate.completion_log_likelihood`
(document completion: θ folded in by EM on the first half of each held-out document with the
model's φ and α fixed, the second half scored), as in BASELINES.md section B.

Rates: ``token-passes/s`` = training tokens × iterations (passes) / wall seconds;
``per core`` divides by the cores the tool used (1, or 2 for local[2]). For the Gibbs samplers
``kernel /s/core`` = token-samples / CPU seconds of the sampling itself (deepdist: CPU time of
the sweeps inside the tasks; tomotopy / lda: process CPU time), which a busy shared machine
does not inflate. ``all CPU s`` (Spark contestants) = CPU seconds of every process of the
fit: the Python driver with its model server, the JVM and the Python workers. On a machine
with as many cores as ``local[N]`` asks for, the driver and the JVM have no core of their
own, so wall ≈ all CPU / cores; with ``local[1]`` on two cores they run on the idle one. A line
per deepdist run splits those seconds by process: the driver, the JVM and the Python workers.
Traffic: bytes deepdist pushed and pulled per sweep, against the dense V × K int32 tables
the same exchanges would have moved.

With ``--sweeps-per-job N`` (fewer sweeps than the whole fit) each deepdist run also prints its
sampling CPU per token-sample job by job: how the cost per token falls as the topics form, and
how far local[2]'s stays above local[1]'s.

Small partitions: GibbsLDA warns when the partitions hold fewer than about 200,000 tokens each
(``deepdist.lda.gibbs_fit._SMALL_PARTITION_TOKENS``), where a sweep costs about as much as the
count exchange after it. The threshold rests on runs of this script with K=100 on a 2-core
machine, local[2] against local[1], at 90k, 180k, 360k and 900k tokens a partition
(``--docs``): local[2] ran 0.76x, 1.04x, 1.31x and 1.52x as fast as local[1].

``--repeats N`` runs the deepdist pair N times, local[1] and local[2] alternating so that a
drift of the machine's speed hits both alike, and reports the median run of each (and the
range of its wall seconds).

    python benchmarks/lda_vs_peers.py                                  # full run (long)
    python benchmarks/lda_vs_peers.py --docs 1000 --iterations 50 --skip lda mllib-online mllib-em
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from procstat import read_stat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("SPARK_CONF_DIR", str(ROOT / "spark-conf"))
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])

from deepdist.lda.evaluate import completion_log_likelihood  # noqa: E402
from deepdist.lda.synthetic import synthetic_lda_corpus, topic_recovery  # noqa: E402

TOOLS = ["deepdist-1", "deepdist-2", "deepdist-2-threads", "deepdist-2-servers2", "tomotopy", "tomotopy-2", "lda", "multicore", "mllib-online", "mllib-em"]
LABELS = {"deepdist-1": "deepdist GibbsLDA local[1]", "deepdist-2": "deepdist GibbsLDA local[2]",
          "deepdist-2-servers2": "deepdist GibbsLDA local[2], 2 model servers",
          "deepdist-2-threads": "deepdist GibbsLDA local[2], 1 partition x 2 threads",
          "tomotopy": "tomotopy LDAModel workers=1", "tomotopy-2": "tomotopy LDAModel workers=2", "lda": "`lda` package (Cython CGS)",
          "multicore": "gensim LdaMulticore workers=1, 10 passes",
          "mllib-online": "Spark MLlib LDA online (tau0=10), 50 it", "mllib-em": "Spark MLlib LDA em, 50 it"}
CORES = {"deepdist-2": 2, "deepdist-2-servers2": 2, "deepdist-2-threads": 2, "tomotopy-2": 2, "mllib-online": 2, "mllib-em": 2}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpora", nargs="+", default=["synthetic", "wiki"], choices=["synthetic", "wiki"])
    p.add_argument("--docs", type=int, default=4000, help="synthetic documents (BASELINES B(ii): 4000)")
    p.add_argument("--topics", type=int, nargs="+", default=[100])
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--sweeps-per-job", type=int, default=None,
                   help="deepdist sweeps per Spark job; default: GibbsLDA's (the whole fit in one job)")
    p.add_argument("--sync-every", type=int, default=1)
    p.add_argument("--skip", nargs="*", default=[], choices=TOOLS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1,
                   help="runs of each deepdist contestant, interleaved; the median one is reported")
    p.add_argument("--servers2", action="store_true",
                   help="also run deepdist local[2] with its counts split over 2 model servers (servers=2)")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one Spark contestant
    p.add_argument("--job", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# -- corpora ------------------------------------------------------------------------------------
def _renumber(train, held):
    vocab = np.unique(np.concatenate(train))
    remap = np.full(int(vocab.max()) + 1 if vocab.size else 0, -1, np.int64)
    remap[vocab] = np.arange(vocab.size)
    held = [remap[d[d <= vocab.max()]] for d in held]
    return [remap[d].astype(np.int32) for d in train], [d[d >= 0].astype(np.int32) for d in held], vocab


def synthetic(args):
    docs, phi = synthetic_lda_corpus(args.docs, 5000, 50, 100, 0.1, 0.01, 2026, poisson_lengths=True)
    docs = [d for d in docs if len(d)]
    cut = int(0.9 * len(docs))
    train, held, vocab = _renumber(docs[:cut], docs[cut:])
    return {"name": "synthetic", "train": train, "held": held, "V": len(vocab), "true": phi[:, vocab]}


def wiki():
    from gensim.corpora.wikicorpus import WikiCorpus
    from gensim.parsing.preprocessing import STOPWORDS
    from gensim.test.utils import datapath

    path = datapath("enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
    texts = [[t for t in tokens if t not in STOPWORDS] for tokens in WikiCorpus(path, dictionary={}, processes=1).get_texts()]
    train_texts = [t for i, t in enumerate(texts) if i % 10 != 9]
    counts = {}
    for text in train_texts:
        for t in set(text):
            counts[t] = counts.get(t, 0) + 1
    words = sorted(t for t, df in counts.items() if df >= 2)
    ids = {t: i for i, t in enumerate(words)}
    encode = lambda text: np.array([ids[t] for t in text if t in ids], np.int32)  # noqa: E731
    train = [encode(t) for t in train_texts]
    held = [encode(t) for i, t in enumerate(texts) if i % 10 == 9]
    return {"name": "wiki", "train": [d for d in train if d.size], "held": [d for d in held if d.size],
            "V": len(words), "true": None}


# -- contestants ----------------------------------------------------------------------------------
def run_tomotopy(corpus, K, args, workers=1):
    import tomotopy as tp

    mdl = tp.LDAModel(tw=tp.TermWeight.ONE, min_cf=0, rm_top=0, k=K, alpha=0.1, eta=0.01, seed=args.seed)
    for doc in corpus["train"]:
        mdl.add_doc([str(w) for w in doc])
    mdl.optim_interval = 0
    mdl.train(0, workers=workers)
    wall, cpu = time.perf_counter(), time.process_time()
    mdl.train(args.iterations, workers=workers)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    phi = np.zeros((K, corpus["V"]))
    cols = np.array([int(w) for w in mdl.used_vocabs])
    for k in range(K):
        phi[k, cols] = mdl.get_topic_word_dist(k)
    return {"seconds": wall, "kernel_cpu": cpu, "phi": phi, "alpha": 0.1, "passes": args.iterations}


def run_lda_package(corpus, K, args):
    import lda
    import scipy.sparse as sp

    rows = np.repeat(np.arange(len(corpus["train"])), [len(d) for d in corpus["train"]])
    X = sp.csr_matrix((np.ones(rows.size, np.int64), (rows, np.concatenate(corpus["train"]))),
                      shape=(len(corpus["train"]), corpus["V"]))
    X.sum_duplicates()
    model = lda.LDA(n_topics=K, n_iter=args.iterations, alpha=0.1, eta=0.01, random_state=args.seed, refresh=10 ** 9)
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(X)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"seconds": wall, "kernel_cpu": cpu, "phi": model.topic_word_, "alpha": 0.1, "passes": args.iterations}


def run_multicore(corpus, K, args):
    from gensim.models import LdaMulticore

    bow = []
    for d in corpus["train"]:
        w, c = np.unique(d, return_counts=True)
        bow.append(list(zip(w.tolist(), c.tolist())))
    id2word = {i: str(i) for i in range(corpus["V"])}
    wall = time.perf_counter()
    model = LdaMulticore(bow, num_topics=K, id2word=id2word, workers=1, passes=10, random_state=args.seed,
                         eval_every=None, chunksize=2000)
    wall = time.perf_counter() - wall
    return {"seconds": wall, "phi": model.get_topics(), "alpha": model.alpha, "passes": 10}


def _process_tree_cpu() -> dict:
    """CPU seconds (user + system) so far of this process and all its descendants (Linux /proc), by
    kind: ``driver`` (this process: Py4J and the model server), ``jvm`` and ``python workers``."""
    parent, cpu, program = {}, {}, {}
    for pid in os.listdir("/proc"):
        stat = read_stat(f"/proc/{pid}/stat") if pid.isdigit() else None
        if stat is not None:
            program[int(pid)], parent[int(pid)], cpu[int(pid)] = stat
    mine, frontier = set(), [os.getpid()]
    while frontier:
        pid = frontier.pop()
        mine.add(pid)
        frontier.extend(child for child, up in parent.items() if up == pid and child not in mine)
    kinds = {"driver": 0.0, "jvm": 0.0, "python workers": 0.0}
    for pid in mine:
        kind = "driver" if pid == os.getpid() else "jvm" if program.get(pid) == "java" else "python workers"
        kinds[kind] += cpu.get(pid, 0.0)
    # children this process has waited for: the model server shards (servers=2), which have exited
    # by the time the fit's CPU is read (the JVM and the workers are waited for only at spark.stop)
    times = os.times()
    kinds["server shards"] = times.children_user + times.children_system
    return kinds


def _cpu_since(before: dict) -> dict:
    """CPU seconds by kind (:func:`_process_tree_cpu`) spent since ``before``."""
    after = _process_tree_cpu()
    return {kind: after[kind] - before[kind] for kind in after}


def spark_worker(job_path):
    """In a subprocess: one Spark contestant on its own SparkSession; writes its result next to the job."""
    import logging

    from pyspark.sql import SparkSession

    logging.basicConfig(level=logging.WARNING)
    job = json.loads(Path(job_path).read_text())
    with np.load(job["corpus"]) as data:
        offsets, words = data["offsets"], data["words"]
    train = [words[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
    tool, K, V = job["tool"], job["K"], job["V"]
    cores = CORES.get(tool, 1)
    started = time.perf_counter()
    spark = (SparkSession.builder.master(f"local[{cores}]").appName(tool)
             .config("spark.ui.enabled", "false").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    session = time.perf_counter() - started
    result = {"session_seconds": session}
    if tool.startswith("deepdist"):
        from deepdist.lda import GibbsLDA

        docs = [d.tolist() for d in train]
        # parallelize slices a list in batches of 1,024 documents, which gave partition 0 of
        # local[2] 51% of them; one list per partition gives each exactly its share
        threads = cores if tool.endswith("threads") else 1   # one task sampling on the cores' threads
        partitions = cores // threads
        shards = [docs[len(docs) * i // partitions:len(docs) * (i + 1) // partitions] for i in range(partitions)]
        rdd = spark.sparkContext.parallelize(shards, partitions).flatMap(lambda shard: shard).cache()
        rdd.count()
        lda = GibbsLDA(num_topics=K, alpha=0.1, beta=0.01, epochs=job["iterations"], seed=job["seed"],
                       sweeps_per_job=job["sweeps_per_job"], sync_every=job["sync_every"],
                       id2word=[str(i) for i in range(V)], progress=False,
                       server_options={"servers": 2 if tool.endswith("servers2") else 1}, threads=threads)
        wall, before = time.perf_counter(), _process_tree_cpu()
        model = lda.fit(rdd).model_
        wall, by_kind = time.perf_counter() - wall, _cpu_since(before)
        cpu = sum(by_kind.values())
        sweeps = lda.history_[1:]
        per_job = [h["sweeps"] - p["sweeps"] for h, p in zip(sweeps, lda.history_)]  # sweeps each job ran
        n = sum(per_job)
        traffic = {key: sum(h[key] for h in sweeps) / n for key in
                   ("bytes_pushed", "bytes_pulled", "dense_bytes_pushed", "dense_bytes_pulled")}
        result.update(seconds=wall, all_cpu=cpu, cpu_by_kind=by_kind,
                      kernel_cpu=sum(h["sweep_cpu_seconds"] for h in sweeps), alpha=0.1,
                      exchange_cpu=sum(sum(h["exchange_cpu_seconds"]) for h in sweeps),
                      sync_cpu=sum(sum(h["sync_cpu_seconds"]) for h in sweeps),
                      # sampling CPU per token-sample of each job: where a run's sweeps got dearer
                      profile=[h["sweep_cpu_seconds"] / (h["tokens"] * k) * 1e9 for h, k in zip(sweeps, per_job)],
                      passes=job["iterations"], traffic=traffic, repairs=lda.repairs_,
                      pushes_per_sweep=sum(h["pushes"] for h in sweeps) / n,
                      ll_first=lda.history_[1]["ll_per_token"], ll_last=lda.history_[-1]["ll_per_token"],
                      jobs=len(sweeps))
        phi = model.topic_word_
    else:
        from pyspark.ml.clustering import LDA
        from pyspark.ml.linalg import Vectors

        rows = []
        for i, d in enumerate(train):
            w, c = np.unique(d, return_counts=True)
            rows.append((i, Vectors.sparse(V, w.tolist(), c.astype(float).tolist())))
        frame = spark.createDataFrame(rows, ["id", "features"]).cache()
        frame.count()
        if tool == "mllib-online":
            est = LDA(k=K, maxIter=50, optimizer="online", learningOffset=10.0, subsamplingRate=0.2, seed=job["seed"])
        else:
            est = LDA(k=K, maxIter=50, optimizer="em", seed=job["seed"])
        wall, before = time.perf_counter(), _process_tree_cpu()
        fitted = est.fit(frame)
        phi = fitted.topicsMatrix().toArray().T
        wall, cpu = time.perf_counter() - wall, sum(_cpu_since(before).values())
        result.update(seconds=wall, all_cpu=cpu, alpha=fitted.estimatedDocConcentration().toArray().tolist(),
                      passes=50 * (0.2 if tool == "mllib-online" else 1.0))
    spark.stop()
    np.save(job["out"] + ".npy", phi)
    Path(job["out"] + ".json").write_text(json.dumps(result))


def run_spark(tool, corpus, K, args, tmp):
    from deepdist.lda.sampler import pack_documents

    corpus_path = os.path.join(tmp, f"{corpus['name']}.npz")
    if not os.path.exists(corpus_path):
        offsets, words = pack_documents(corpus["train"])
        np.savez(corpus_path, offsets=offsets, words=words)
    out = os.path.join(tmp, f"{corpus['name']}-{tool}-{K}")
    job = {"tool": tool, "K": K, "V": corpus["V"], "corpus": corpus_path, "out": out, "seed": args.seed,
           "iterations": args.iterations, "sweeps_per_job": args.sweeps_per_job, "sync_every": args.sync_every}
    Path(out + ".job.json").write_text(json.dumps(job))
    done = subprocess.run([sys.executable, __file__, "--worker", "spark", "--job", out + ".job.json"],
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{tool} failed:\n{done.stderr[-3000:]}")
    result = json.loads(Path(out + ".json").read_text())
    result["phi"] = np.load(out + ".npy")
    return result


# -- the run ------------------------------------------------------------------------------------
def run_corpus(corpus, args, tmp):
    tokens = int(sum(len(d) for d in corpus["train"]))
    held_tokens = int(sum(len(d) - len(d) // 2 for d in corpus["held"]))
    print(f"\n## {corpus['name']}: {len(corpus['train'])} training documents, {tokens:,} tokens, V={corpus['V']:,}; "
          f"held out {len(corpus['held'])} documents ({held_tokens:,} scored tokens); {args.iterations} Gibbs "
          f"iterations", flush=True)
    for K in args.topics:
        rows = {}
        pair = [t for t in ("deepdist-1", "deepdist-2", "deepdist-2-threads", "deepdist-2-servers2")
                if t not in args.skip and (t != "deepdist-2-servers2" or args.servers2)]
        runs = {tool: [] for tool in pair}
        for _ in range(args.repeats):  # alternating, so a drift of the machine's speed hits both
            for tool in pair:
                runs[tool].append(run_spark(tool, corpus, K, args, tmp))
        for tool in [t for t in TOOLS if t not in args.skip and (t in runs or not t.startswith("deepdist"))]:
            if tool in runs:
                by_wall = sorted(runs[tool], key=lambda r: r["seconds"])
                result = by_wall[len(by_wall) // 2]
                result["range"] = (by_wall[0]["seconds"], by_wall[-1]["seconds"])
            elif tool.startswith("mllib"):
                result = run_spark(tool, corpus, K, args, tmp)
            else:
                result = {"tomotopy": run_tomotopy, "tomotopy-2": lambda *a: run_tomotopy(*a, workers=2),
                          "lda": run_lda_package, "multicore": run_multicore}[tool](corpus, K, args)
            total, n = completion_log_likelihood(corpus["held"], result["phi"], result["alpha"])
            result["heldout"] = total / n
            if corpus["true"] is not None:
                result["recovery"] = topic_recovery(corpus["true"], result["phi"])
            rows[tool] = result
            print(f"  K={K} {tool:13s} {result['seconds']:8.2f}s  held-out ll/token {result['heldout']:.4f}", flush=True)
        report(corpus, K, rows, tokens)


def report(corpus, K, rows, tokens):
    print(f"\n### {corpus['name']}, K={K}\n")
    head = ("| tool | train s | all CPU s | token-passes/s | per core | kernel /s/core | held-out ll/token "
            "| vs tomotopy |")
    line = "|---|---|---|---|---|---|---|---|"
    if corpus["true"] is not None:
        head, line = head + " recovery |", line + "---|"
    print(head)
    print(line)
    tomo = rows.get("tomotopy")
    for tool, r in rows.items():
        rate = tokens * r["passes"] / r["seconds"]
        kernel = f"{tokens * r['passes'] / r['kernel_cpu']:,.0f}" if r.get("kernel_cpu") else "n/a"
        diff = f"{(r['heldout'] - tomo['heldout']) / abs(tomo['heldout']):+.2%}" if tomo else "n/a"
        seconds = f"{r['seconds']:.2f}"
        if "range" in r and r["range"][0] != r["range"][1]:
            seconds += f" ({r['range'][0]:.2f}-{r['range'][1]:.2f})"
        all_cpu = f"{r['all_cpu']:.2f}" if "all_cpu" in r else "n/a"
        cells = [LABELS[tool], seconds, all_cpu, f"{rate:,.0f}", f"{rate / CORES.get(tool, 1):,.0f}", kernel,
                 f"{r['heldout']:.4f}", diff]
        if corpus["true"] is not None:
            cells.append(f"{r['recovery']:.3f}")
        print("| " + " | ".join(cells) + " |")
    one, two = rows.get("deepdist-1"), rows.get("deepdist-2")
    print()
    if one and two:
        print(f"deepdist local[2] vs local[1]: {one['seconds'] / two['seconds']:.2f}x faster (wall)")
    threaded = rows.get("deepdist-2-threads")
    if two and threaded:
        print(f"deepdist local[2], 1 partition x 2 threads vs 2 partitions: {two['seconds'] / threaded['seconds']:.2f}x "
              f"faster (wall), {threaded['pushes_per_sweep']:.1f} vs {two['pushes_per_sweep']:.1f} server exchanges "
              f"a sweep, held-out ll/token {threaded['heldout']:.4f} vs {two['heldout']:.4f}")
    sharded = rows.get("deepdist-2-servers2")
    if two and sharded:
        print(f"deepdist local[2] with 2 model servers vs one: {two['seconds'] / sharded['seconds']:.2f}x faster "
              f"(wall), held-out ll/token {sharded['heldout']:.4f} vs {two['heldout']:.4f}")
    if "tomotopy" in rows and "tomotopy-2" in rows:
        print(f"tomotopy workers=2 vs workers=1: {rows['tomotopy']['seconds'] / rows['tomotopy-2']['seconds']:.2f}x "
              f"faster (wall)")
    for tool in ("tomotopy", "tomotopy-2", "lda", "mllib-online", "mllib-em"):
        for name, ours in (("local[2]", two), ("local[2] x 2 threads", threaded)):
            if tool in rows and ours:
                print(f"deepdist {name} vs {LABELS[tool]}: "
                      f"{rows[tool]['seconds'] / ours['seconds']:.2f}x faster, held-out ll/token "
                      f"{ours['heldout']:.4f} vs {rows[tool]['heldout']:.4f}")
        if tool in rows and one and not two:
            print(f"deepdist local[1] vs {LABELS[tool]}: {rows[tool]['seconds'] / one['seconds']:.2f}x faster, "
                  f"held-out ll/token {one['heldout']:.4f} vs {rows[tool]['heldout']:.4f}")
    for tool in ("deepdist-1", "deepdist-2", "deepdist-2-threads", "deepdist-2-servers2"):
        if tool in rows:
            t = rows[tool]["traffic"]
            print(f"{LABELS[tool]} traffic per sweep: pushed {t['bytes_pushed'] / 1e3:,.1f} kB sparse vs "
                  f"{t['dense_bytes_pushed'] / 1e3:,.1f} kB dense ({t['bytes_pushed'] / t['dense_bytes_pushed']:.1%}); "
                  f"pulled {t['bytes_pulled'] / 1e3:,.1f} kB (rows or dense, per task) vs {t['dense_bytes_pulled'] / 1e3:,.1f} kB dense "
                  f"({t['bytes_pulled'] / t['dense_bytes_pulled']:.1%}); {rows[tool]['jobs']} Spark jobs, "
                  f"count repairs {rows[tool]['repairs']}, train ll/token {rows[tool]['ll_first']:.4f} -> "
                  f"{rows[tool]['ll_last']:.4f}")
    for tool in ("deepdist-1", "deepdist-2"):
        profile = rows.get(tool, {}).get("profile", [])
        if len(profile) > 1:
            print(f"{LABELS[tool]} sampling ns per token-sample, job by job: " + " ".join(f"{x:.1f}" for x in profile))
    for tool in ("deepdist-1", "deepdist-2", "deepdist-2-threads", "deepdist-2-servers2"):
        by_kind = rows.get(tool, {}).get("cpu_by_kind")
        if by_kind:
            # on local[1] the driver and the JVM have the second core to themselves; on local[2]
            # every one of these seconds is taken from the sampling tasks
            print(f"{LABELS[tool]} CPU seconds of the fit: " + ", ".join(f"{kind} {v:.2f}" for kind, v in by_kind.items())
                  + f" (of the workers', sampling {rows[tool]['kernel_cpu']:.2f}, count exchanges "
                  f"{rows[tool]['exchange_cpu']:.2f} on their threads and {rows[tool]['sync_cpu']:.2f} on the tasks')")


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return spark_worker(args.job)
    print(f"# lda_vs_peers: load average {os.getloadavg()[0]:.1f} at start, {os.cpu_count()} cores; "
          f"K={args.topics}, {args.iterations} iterations, deepdist sweeps_per_job={args.sweeps_per_job} "
          f"sync_every={args.sync_every}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.corpora:
            run_corpus(synthetic(args) if name == "synthetic" else wiki(), args, tmp)
    print(f"\nload average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
