"""DNT side by side (issue 26, Must show 4): a flat vMF mixture, tomotopy's hLDA, local[1] vs local[2].

One run, two corpora, every number compared only with numbers of the same run:

- ``pnas``: the DNTs paper's PNAS titles, the ten training epochs pooled
  (``read_pnas(split="train")``), scored on the pooled held-out titles (``split="test"``);
- ``synthetic``: ``synthetic_tree_corpus(n_docs=20000, vocab_size=2000, kind="counts", seed=0)``,
  a random 90% to train and the other 10% held out.

On each corpus:

1. **DNT against a flat vMF mixture.** DNT on ``local[2]`` (its own SparkSession; parameters
   from the flags, DNT's own defaults for the rest), then spherical k-means
   (:func:`deepdist.dnt.evaluate.spherical_kmeans`) with K = the tree's node count. Both are
   scored on the held-out documents by the normalised vMF mixture log-likelihood per document
   (κ = β; the tree's weights are its node masses, the flat model's its clusters' shares of the
   training documents) and by the paper's score β·µ_zᵀx (the tree: z its most probable node; the
   flat model: the centroid of largest cosine; the tree's largest-cosine score is printed too).
2. **DNT against tomotopy's HLDAModel** (nested-CRP hLDA by collapsed Gibbs sampling, depth 3,
   one worker, ``--hlda-iterations`` iterations) on the same training documents as token lists:
   wall seconds of the training, live nodes, and the mean c_npmi coherence of each node's top
   10 words (gensim ``CoherenceModel`` on the held-out token lists; one gensim ``Dictionary`` of
   the training and held-out tokens for both systems).
3. **DNT on local[1] against local[2]**: after the local[2] session stops, a new session on
   ``local[1]`` fits the same DNT (same seed, settings and partitions: ``--partitions``); the
   held-out scores of both and the speed-up (wall local[1] / wall local[2]). The local[2] fit
   is the one of item 1 (it runs first, so any warm-up of the process counts against it).

4. With ``--structure-speed`` (issue 27): the scale corpus of ``benchmarks/dnt_scale.py``
   (``--structure-docs``, V = 20,000) fitted twice on ``local[2]`` for ``--structure-passes``
   passes, births proposed on the driver alone (``structure="driver"``) and model-parallel
   (``structure="parallel"``): seconds of every pass's structure phase, and their ratio.

Wall seconds are the ``fit`` alone: session start and the caching of the input RDD are
excluded, the held-out scoring too. tomotopy runs on one core, DNT on ``local[2]`` on two.

Usage::

    .venv/bin/python benchmarks/dnt_vs_peers.py                           # the full run (long)
    .venv/bin/python benchmarks/dnt_vs_peers.py --quick --out /tmp/dnt_vs_peers.json   # smoke run
    .venv/bin/python benchmarks/dnt_vs_peers.py --corpora --structure-speed  # only the structure phase (issue 27)
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CORPORA = ("pnas", "synthetic")

log = logging.getLogger("dnt_vs_peers")


def _dnt_defaults() -> dict:
    """DNT's own parameter defaults, read from its signature (they are still being tuned)."""
    from deepdist.dnt import DNT

    return {name: p.default for name, p in inspect.signature(DNT.__init__).parameters.items()
            if p.kind == p.KEYWORD_ONLY and isinstance(p.default, (int, float, str)) and name != "progress"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpora", nargs="*", default=list(CORPORA), choices=CORPORA)
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: 5,000 PNAS titles, max_nodes 30, 4 epochs, 20 hLDA iterations, "
                        "2,000 synthetic documents, 10 k-means rounds")
    p.add_argument("--data", default=None, help="the PNAS directory (default: read_pnas's search)")
    p.add_argument("--pnas-docs", type=int, default=None, help="train on a random subset of this many titles")
    p.add_argument("--synthetic-docs", type=int, default=20000)
    p.add_argument("--synthetic-vocab", type=int, default=2000)
    p.add_argument("--max-nodes", type=int, default=400)
    p.add_argument("--epochs", type=int, default=None, help="DNT passes (default: DNT's own)")
    p.add_argument("--max-depth", type=int, default=None, help="default: DNT's own")
    p.add_argument("--batches-per-partition", type=int, default=None, help="default: DNT's own")
    p.add_argument("--alpha", type=float, default=None, help="default: DNT's own")
    p.add_argument("--gamma", type=float, default=None, help="default: DNT's own")
    p.add_argument("--beta", type=float, default=None, help="default: DNT's own (the paper's 1e4)")
    p.add_argument("--kappa1", type=float, default=None, help="default: DNT's own")
    p.add_argument("--partitions", type=int, default=2,
                   help="input partitions of both DNT runs, so local[1] and local[2] fit the same batches")
    p.add_argument("--kmeans-iterations", type=int, default=30)
    p.add_argument("--hlda-iterations", type=int, default=300,
                   help="tomotopy HLDAModel Gibbs iterations on PNAS (about 0.3 s each on the full "
                        "titles with one worker, as first measured)")
    p.add_argument("--synthetic-hlda-iterations", type=int, default=100,
                   help="the same on the synthetic corpus (0: skip tomotopy there)")
    p.add_argument("--structure-speed", action="store_true",
                   help="also (issue 27) time the structure phase on the scale corpus: births proposed on the "
                        "driver alone against model-parallel (structure='parallel') on local[2]")
    p.add_argument("--structure-docs", type=int, default=1_000_000, help="documents of that corpus (V = 20,000)")
    p.add_argument("--structure-passes", type=int, default=4, help="passes of each of its two fits")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the results as JSON to this file")
    p.add_argument("--verbose", action="store_true", help="log DNT's passes (INFO)")
    args = p.parse_args(argv)
    if args.quick:
        args.pnas_docs = args.pnas_docs or 5000
        args.synthetic_docs = 2000
        args.max_nodes = 30
        args.epochs = args.epochs or 4
        args.hlda_iterations = 20
        args.synthetic_hlda_iterations = min(args.synthetic_hlda_iterations, 20)
        args.kmeans_iterations = 10
        args.structure_docs = min(args.structure_docs, 20_000)
        args.structure_passes = min(args.structure_passes, 3)
    return args


def dnt_params(args) -> dict:
    params = {"max_nodes": args.max_nodes, "seed": args.seed, "progress": False}
    for name in ("epochs", "max_depth", "batches_per_partition", "alpha", "gamma", "beta", "kappa1"):
        if getattr(args, name) is not None:
            params[name] = getattr(args, name)
    return params


# -- corpora ------------------------------------------------------------------------------------
def _csr_rows(counts_csr):
    """``(indptr, indices, data)`` of L2-normalised rows of a scipy CSR count matrix."""
    from deepdist.datasets.pnas import normalize_rows

    return normalize_rows(counts_csr.indptr, counts_csr.indices, counts_csr.data)


def pnas_corpus(args) -> dict:
    from deepdist.datasets.pnas import read_pnas

    train, test = read_pnas(args.data, split="train"), read_pnas(args.data, split="test")
    if args.pnas_docs and args.pnas_docs < train.n_docs:
        rows = np.sort(np.random.default_rng(args.seed).choice(train.n_docs, args.pnas_docs, replace=False))
        train = train.subset(rows)
    return {"name": "pnas", "train_bows": train.bows(), "held_bows": test.bows(),
            "x_train": train.normalized_tf(), "x_held": test.normalized_tf(), "id2word": list(train.vocabulary),
            "train_tokens": train.tokens(), "held_tokens": test.tokens(), "hlda_iterations": args.hlda_iterations}


def synthetic_corpus(args) -> dict:
    import scipy.sparse

    from deepdist.dnt.synthetic import synthetic_tree_corpus

    corpus = synthetic_tree_corpus(n_docs=args.synthetic_docs, vocab_size=args.synthetic_vocab, kind="counts",
                                   seed=args.seed)
    counts = scipy.sparse.csr_matrix(corpus.counts)
    del corpus  # two dense (n_docs, V) arrays: 640 MB at the default size
    order = np.random.default_rng(args.seed).permutation(counts.shape[0])
    cut = int(0.9 * counts.shape[0])
    train, held = counts[np.sort(order[:cut])], counts[np.sort(order[cut:])]
    id2word = [f"w{i}" for i in range(counts.shape[1])]

    def bows(m):
        return [list(zip(m.indices[a:b].tolist(), m.data[a:b].tolist())) for a, b in zip(m.indptr[:-1], m.indptr[1:])]

    def tokens(m):
        return [[id2word[w] for w, c in zip(m.indices[a:b], m.data[a:b]) for _ in range(int(c))]
                for a, b in zip(m.indptr[:-1], m.indptr[1:])]

    return {"name": "synthetic", "train_bows": bows(train), "held_bows": bows(held), "x_train": _csr_rows(train),
            "x_held": _csr_rows(held), "id2word": id2word, "train_tokens": tokens(train), "held_tokens": tokens(held),
            "hlda_iterations": args.synthetic_hlda_iterations}


# -- contestants ----------------------------------------------------------------------------------
def run_dnt(corpus, master, args) -> dict:
    """DNT on its own SparkSession on ``master`` (stopped at the end); fit wall seconds and scores."""
    from deepdist.dnt import DNT
    from deepdist.dnt.evaluate import paper_score
    from deepdist.session import spark_session

    spark = spark_session(f"dnt-vs-peers-{corpus['name']}-{master}", master)
    try:
        spark.sparkContext.setLogLevel("ERROR")
        rdd = spark.sparkContext.parallelize(corpus["train_bows"], args.partitions).cache()
        rdd.count()
        estimator = DNT(**dnt_params(args))
        wall = time.perf_counter()
        estimator.fit(rdd, id2word=corpus["id2word"])
        wall = time.perf_counter() - wall
        rdd.unpersist()
    finally:
        spark.stop()
    model = estimator.model_
    history = estimator.history_
    return {"master": master, "seconds": wall, "nodes": model.n_nodes_, "depth": int(model.depth_.max()) + 1,
            "passes": len(history), "births": sum(h["births"] for h in history),
            "merges": sum(h["merges"] for h in history),
            "vmf": model.score(corpus["x_held"], kind="vmf"), "paper": model.score(corpus["x_held"], kind="paper"),
            "paper_max_cosine": paper_score(corpus["x_held"], model.mean_directions_, model.beta),
            "elbo": [h["elbo"] for h in history], "model": model}


def run_kmeans(corpus, k, beta, args) -> dict:
    from deepdist.dnt.evaluate import paper_score, spherical_kmeans, vmf_loglik

    n_words = len(corpus["id2word"])
    wall = time.perf_counter()
    centroids, assignments = spherical_kmeans(corpus["x_train"], k, args.kmeans_iterations, args.seed,
                                              n_words=n_words)
    wall = time.perf_counter() - wall
    sizes = np.bincount(assignments, minlength=k)
    loglik = vmf_loglik(corpus["x_held"], centroids, beta, sizes / sizes.sum())
    return {"seconds": wall, "nodes": k, "vmf": float(loglik.mean()),
            "paper": paper_score(corpus["x_held"], centroids, beta)}


def run_hlda(corpus, args) -> dict:
    import tomotopy as tp

    mdl = tp.HLDAModel(depth=3, seed=args.seed)
    for doc in corpus["train_tokens"]:
        if doc:
            mdl.add_doc(doc)
    mdl.train(0, workers=1)  # builds the model's state, outside the timing
    wall = time.perf_counter()
    mdl.train(corpus["hlda_iterations"], workers=1)
    wall = time.perf_counter() - wall
    live = [k for k in range(mdl.k) if mdl.is_live_topic(k)]
    topics = [[w for w, _ in mdl.get_topic_words(k, top_n=30)] for k in live]
    return {"seconds": wall, "nodes": len(live), "iterations": corpus["hlda_iterations"],
            "depth": 1 + max(mdl.level(k) for k in live), "topics": topics}


def coherence(topics, corpus, dictionary) -> float:
    """Mean c_npmi of ``topics`` (lists of words, best first) on the held-out token lists.

    A word that no held-out document contains has probability 0 there and makes NPMI infinite,
    so each topic keeps its 10 best words among those the held-out documents contain; a topic
    with fewer than 2 left is skipped (the same rule for every system).
    """
    from gensim.models.coherencemodel import CoherenceModel

    seen = {w for doc in corpus["held_tokens"] for w in doc}
    kept = [[w for w in t if w in seen][:10] for t in topics]
    kept = [t for t in kept if len(t) >= 2]
    if not kept:
        return float("nan")
    cm = CoherenceModel(topics=kept, texts=corpus["held_tokens"], dictionary=dictionary, coherence="c_npmi",
                        topn=10, processes=1)
    values = np.asarray(cm.get_coherence_per_topic(), float)
    return float(np.mean(values[np.isfinite(values)]))


def run_structure_speed(args) -> dict:
    """Issue 27, Must show 3: the same fit of the scale corpus (``benchmarks/dnt_scale.py``'s
    generator: ``--structure-docs`` documents, V = 20,000, generated on the executors) twice on
    ``local[2]``, births proposed on the driver and model-parallel; seconds of each pass's
    structure phase (the merges, moves and births after it)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from dnt_scale import _generate

    from deepdist.dnt import DNT
    from deepdist.dnt.synthetic import synthetic_tree_corpus
    from deepdist.session import spark_session

    scale = argparse.Namespace(docs=args.structure_docs, vocab=20_000, length=40.0, partitions=2, seed=args.seed)
    truth = synthetic_tree_corpus(n_docs=1, vocab_size=scale.vocab, kind="counts", seed=args.seed,
                                  branching=(8, 6, 4), alpha=4.0, gamma=2.0)
    word_cdf, node_cdf = np.cumsum(truth.word_probs, axis=1), np.cumsum(truth.node_masses)
    out = {"docs": scale.docs, "passes": args.structure_passes}
    for mode in ("driver", "parallel"):
        spark = spark_session(f"dnt-structure-{mode}", "local[2]")
        try:
            spark.sparkContext.setLogLevel("ERROR")
            docs = spark.sparkContext.parallelize(range(2), 2).mapPartitionsWithIndex(
                _generate(scale, word_cdf, node_cdf))
            dnt = DNT(max_nodes=700, epochs=args.structure_passes, grow_epochs=args.structure_passes,
                      births_per_pass=150, birth_children=3, structure=mode, seed=args.seed, progress=False)
            started = time.perf_counter()
            dnt.fit(docs, id2word=[f"w{i}" for i in range(scale.vocab)])
            out[mode] = {"seconds": time.perf_counter() - started, "nodes": dnt.model_.n_nodes_,
                         "phases": [{k: r[k] for k in ("epoch", "births", "merges", "moves", "structure_seconds",
                                                          "birth_seconds", "nodes")} for r in dnt.history_]}
        finally:
            spark.stop()
        print(f"  structure={mode}: {out[mode]['seconds']:.0f}s, {out[mode]['nodes']} nodes", flush=True)
    report_structure(out)
    return out


def report_structure(out) -> None:
    print(f"\n### Structure phase on {out['docs']:,} synthetic documents (V = 20,000), local[2]: births proposed "
          f"on the driver alone against model-parallel\n")
    rows = []
    for a, b in zip(out["driver"]["phases"], out["parallel"]["phases"]):
        if a["births"] or b["births"] or a["structure_seconds"] > 0.5:
            rows.append([a["epoch"], f"{a['structure_seconds']:.1f}", f"{a['birth_seconds']:.1f}", a["births"],
                         f"{b['structure_seconds']:.1f}", f"{b['birth_seconds']:.1f}", b["births"],
                         f"{a['structure_seconds'] / max(b['structure_seconds'], 1e-9):.2f}"])
    _table(["pass", "driver: phase s", "births s", "born", "parallel: phase s", "births s", "born",
            "driver s / parallel s"], rows)
    driver = sum(p["structure_seconds"] for p in out["driver"]["phases"])
    parallel = sum(p["structure_seconds"] for p in out["parallel"]["phases"])
    print(f"\nstructure phases in all: driver {driver:.1f}s, model-parallel {parallel:.1f}s "
          f"(speed-up {driver / max(parallel, 1e-9):.2f}x); trees of {out['driver']['nodes']} and "
          f"{out['parallel']['nodes']} nodes")


# -- the run ------------------------------------------------------------------------------------
def run_corpus(corpus, args) -> dict:
    from gensim.corpora import Dictionary

    print(f"\n## {corpus['name']}: {len(corpus['train_bows']):,} training documents, {len(corpus['held_bows']):,} "
          f"held out, V = {len(corpus['id2word']):,}; DNT {dnt_params(args)}", flush=True)
    two = run_dnt(corpus, "local[2]", args)
    print(f"  DNT local[2]: {two['seconds']:.1f}s, {two['nodes']} nodes", flush=True)
    one = run_dnt(corpus, "local[1]", args)
    print(f"  DNT local[1]: {one['seconds']:.1f}s, {one['nodes']} nodes", flush=True)
    beta = two["model"].beta
    flat = run_kmeans(corpus, two["nodes"], beta, args)
    print(f"  spherical k-means, K = {two['nodes']}: {flat['seconds']:.1f}s", flush=True)
    dictionary = Dictionary(corpus["train_tokens"] + corpus["held_tokens"])
    model = two.pop("model")
    one.pop("model")
    dnt_topics = [[w for w, _ in model.top_words(e, 30)] for e in range(model.n_nodes_)]
    two["coherence"] = coherence(dnt_topics, corpus, dictionary)
    hlda = None
    if corpus["hlda_iterations"] > 0:
        hlda = run_hlda(corpus, args)
        hlda["coherence"] = coherence(hlda["topics"], corpus, dictionary)
        print(f"  tomotopy HLDAModel: {hlda['seconds']:.1f}s, {hlda['nodes']} live nodes", flush=True)
    result = {"corpus": corpus["name"], "train_docs": len(corpus["train_bows"]), "held_docs": len(corpus["held_bows"]),
              "vocabulary": len(corpus["id2word"]), "dnt_local2": two, "dnt_local1": one, "kmeans": flat, "hlda": hlda,
              "dnt_params": {k: v for k, v in dnt_params(args).items()}}
    report(result)
    return result


def _table(head, rows):
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")


def report(r) -> None:
    two, one, flat, hlda = r["dnt_local2"], r["dnt_local1"], r["kmeans"], r["hlda"]
    print(f"\n### {r['corpus']} 1. DNT against a flat vMF mixture with as many components (held-out, per "
          f"document, κ = β)\n")
    _table(["model", "nodes", "train s", "vMF log-lik", "paper score", "paper, max cosine"],
           [["DNT local[2]", two["nodes"], f"{two['seconds']:.1f}", f"{two['vmf']:,.1f}", f"{two['paper']:,.1f}",
             f"{two['paper_max_cosine']:,.1f}"],
            [f"spherical k-means K={flat['nodes']}", flat["nodes"], f"{flat['seconds']:.1f}", f"{flat['vmf']:,.1f}",
             f"{flat['paper']:,.1f}", f"{flat['paper']:,.1f}"]])
    print(f"\nDNT - k-means: vMF log-lik {two['vmf'] - flat['vmf']:+,.1f} per document "
          f"({'DNT no worse' if two['vmf'] >= flat['vmf'] else 'DNT WORSE'}), paper score "
          f"{two['paper'] - flat['paper']:+,.1f} (ratio {two['paper'] / flat['paper']:.3f})")
    print(f"\n### {r['corpus']} 2. DNT against tomotopy HLDAModel (coherence: mean c_npmi of each node's top 10 "
          f"words on the held-out documents)\n")
    rows = [["DNT local[2] (2 cores)", f"{two['seconds']:.1f}", two["nodes"], two["depth"], f"{two['coherence']:.4f}",
             "1.00"]]
    if hlda:
        rows.append([f"tomotopy HLDAModel, {hlda['iterations']} it (1 core)", f"{hlda['seconds']:.1f}", hlda["nodes"],
                     hlda["depth"], f"{hlda['coherence']:.4f}", f"{hlda['seconds'] / two['seconds']:.2f}"])
    _table(["system", "wall s", "nodes", "levels", "c_npmi", "wall / DNT local[2] wall"], rows)
    print(f"\n### {r['corpus']} 3. DNT on local[1] against local[2] (same seed, settings and "
          f"{r['dnt_params'].get('max_nodes')}-node cap)\n")
    _table(["master", "wall s", "nodes", "vMF log-lik", "paper score"],
           [[d["master"], f"{d['seconds']:.1f}", d["nodes"], f"{d['vmf']:,.2f}", f"{d['paper']:,.2f}"]
            for d in (one, two)])

    def same(key):
        return "identical" if one[key] == two[key] else f"differs by {two[key] - one[key]:+.3g}"

    print(f"\nspeed-up local[2] over local[1]: {one['seconds'] / two['seconds']:.2f}x; held-out vMF {same('vmf')}, "
          f"paper {same('paper')}")


def summary(results) -> None:
    print("\n## Summary (ratios within this run)\n")
    rows = []
    for r in results:
        two, one, flat, hlda = r["dnt_local2"], r["dnt_local1"], r["kmeans"], r["hlda"]
        rows.append([r["corpus"], two["nodes"], f"{two['vmf'] - flat['vmf']:+,.1f}",
                     f"{two['paper'] / flat['paper']:.3f}",
                     f"{one['seconds'] / two['seconds']:.2f}",
                     f"{hlda['seconds'] / two['seconds']:.2f}" if hlda else "-",
                     f"{two['coherence']:.4f}", f"{hlda['coherence']:.4f}" if hlda else "-",
                     f"{hlda['nodes']}" if hlda else "-"])
    _table(["corpus", "DNT nodes", "vMF ll DNT - k-means", "paper DNT / k-means", "local[1] s / local[2] s",
            "hLDA s / DNT s", "c_npmi DNT", "c_npmi hLDA", "hLDA nodes"], rows)


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("SPARK_CONF_DIR", str(ROOT / "spark-conf"))
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    started = time.perf_counter()
    print(f"# dnt_vs_peers{' --quick' if args.quick else ''}: load average {os.getloadavg()[0]:.1f} at start, "
          f"{os.cpu_count()} cores; DNT defaults {_dnt_defaults()}", flush=True)
    results = []
    for name in args.corpora:
        corpus = pnas_corpus(args) if name == "pnas" else synthetic_corpus(args)
        results.append(run_corpus(corpus, args))
        del corpus
    summary(results)
    structure = run_structure_speed(args) if args.structure_speed else None
    print(f"\nload average {os.getloadavg()[0]:.1f} at end; {time.perf_counter() - started:.0f}s in all")
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "results": results, "structure": structure}, indent=1, default=float))
        print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
