"""Kernel-only throughput: deepdist's SparseLDA sweep against tomotopy, one thread each.

Both samplers train on the same synthetic LDA corpus (V=5000, 50 true topics, 4000 documents
of Poisson(100) tokens, α=0.1, β=0.01) for the same number of iterations. Reported per K:

- token-samples per second per core (training tokens × iterations / CPU seconds of the
  process, which a busy machine's time-slicing does not inflate; wall seconds are shown too),
  compile and initialisation excluded, and the ratio deepdist / tomotopy;
- held-out per-token log-likelihood by document completion on 10% of the documents, scored
  for both models by the same evaluator (``deepdist.lda.sampler.completion_log_likelihood``
  with each model's φ and the same α);
- topic recovery: mean over true topics of the best cosine with a learned topic.

tomotopy optimises α every 10 iterations by default; this runs it with ``optim_interval=0``
(fixed symmetric α, the same model as ours) unless ``--tomotopy-optim-interval`` says
otherwise.

    python benchmarks/gibbs_kernel_vs_tomotopy.py                     # the full run
    python benchmarks/gibbs_kernel_vs_tomotopy.py --docs 1000 --iterations 50   # quick
"""

import argparse
import time

import numpy as np

from deepdist.lda import sampler
from deepdist.lda.synthetic import synthetic_lda_corpus, topic_recovery


class Clock:
    """Wall and process-CPU seconds of a section (both samplers run on one busy thread)."""

    def __init__(self):
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def stop(self, scale=1.0):
        return ((time.perf_counter() - self.wall) * scale,
                (time.process_time() - self.cpu) * scale)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", type=int, default=4000)
    p.add_argument("--vocab", type=int, default=5000)
    p.add_argument("--true-topics", type=int, default=50)
    p.add_argument("--doc-length", type=float, default=100)
    p.add_argument("--topics", type=int, nargs="+", default=[20, 100])
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--alpha", type=float, default=0.1)
    p.add_argument("--beta", type=float, default=0.01)
    p.add_argument("--heldout", type=float, default=0.1, help="fraction of documents held out")
    p.add_argument("--eval-iterations", type=int, default=50,
                   help="fold-in sweeps per held-out document (the first 10 are burn-in)")
    p.add_argument("--tomotopy-optim-interval", type=int, default=0)
    p.add_argument("--skip-tomotopy", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def make_data(args):
    docs, true_phi = synthetic_lda_corpus(args.docs, args.vocab, args.true_topics,
                                          args.doc_length, args.alpha, args.beta, args.seed,
                                          poisson_lengths=True)
    rng = np.random.default_rng(args.seed + 1)
    perm = rng.permutation(len(docs))
    n_held = int(round(args.heldout * len(docs)))
    held = [docs[i] for i in perm[:n_held]]
    train = [docs[i] for i in perm[n_held:]]
    # Both models see the training vocabulary only, densely renumbered; held-out tokens of
    # unseen words are dropped, since neither model can score them on equal terms.
    vocab = np.unique(np.concatenate(train))
    remap = np.full(args.vocab, -1, np.int64)
    remap[vocab] = np.arange(vocab.size)
    train = [remap[d].astype(np.int32) for d in train]
    held = [remap[d][remap[d] >= 0].astype(np.int32) for d in held]
    return train, held, true_phi[:, vocab], vocab.size


def warm_up():
    # compile (or load from numba's cache) every kernel the timed sections call
    docs, _ = synthetic_lda_corpus(20, 30, 3, 10, 0.1, 0.01, 0)
    off, words = sampler.pack_documents(docs)
    topics = sampler.random_topics(words.size, 3, 1)
    wt = sampler.counts_from_assignments(words, topics, 30, 3)
    dt = sampler.doc_topic_from_assignments(off, topics, 3)
    tt = wt.sum(axis=0, dtype=np.int64)
    sampler.sweep(off, words, topics, dt, wt, tt, 0.1, 0.01, seed=2)
    phi = sampler.topic_word_distribution(wt, tt, 0.01)
    sampler.completion_log_likelihood(off, words, phi, 0.1, iterations=2, burn_in=1)


def run_deepdist(train_off, train_words, V, K, args):
    topics = sampler.random_topics(train_words.size, K, sampler.derive_seed(args.seed, 0, 0))
    wt = sampler.counts_from_assignments(train_words, topics, V, K)
    dt = sampler.doc_topic_from_assignments(train_off, topics, K)
    tt = wt.sum(axis=0, dtype=np.int64)
    sampler.sweep(train_off, train_words, topics, dt, wt, tt, args.alpha, args.beta,
                  seed=sampler.derive_seed(args.seed, 0, 1))
    ll_first = sampler.log_likelihood(wt, tt, args.beta, doc_topic=dt, alpha=args.alpha)
    clock = Clock()
    for it in range(2, args.iterations + 1):
        sampler.sweep(train_off, train_words, topics, dt, wt, tt, args.alpha, args.beta,
                      seed=sampler.derive_seed(args.seed, 0, it), validate=False)
    # iteration 1 (with its validation) ran outside the clock; count the rest at its rate
    seconds = clock.stop(scale=args.iterations / max(args.iterations - 1, 1))
    ll_last = sampler.log_likelihood(wt, tt, args.beta, doc_topic=dt, alpha=args.alpha)
    phi = sampler.topic_word_distribution(wt, tt, args.beta)
    return seconds, phi, (ll_first, ll_last)


def run_tomotopy(train, V, K, args):
    import tomotopy as tp

    mdl = tp.LDAModel(tw=tp.TermWeight.ONE, min_cf=0, rm_top=0, k=K, alpha=args.alpha,
                      eta=args.beta, seed=args.seed)
    for doc in train:
        mdl.add_doc([str(w) for w in doc])
    mdl.optim_interval = args.tomotopy_optim_interval
    mdl.train(0, workers=1)  # initialisation, outside the timing
    clock = Clock()
    mdl.train(args.iterations, workers=1)
    seconds = clock.stop()
    cols = np.array([int(w) for w in mdl.used_vocabs])
    phi = np.zeros((K, V))
    for k in range(K):
        phi[k, cols] = mdl.get_topic_word_dist(k)
    return seconds, phi, mdl.num_words


def main(argv=None):
    args = parse_args(argv)
    train, held, true_phi, V = make_data(args)
    train_off, train_words = sampler.pack_documents(train)
    held_off, held_words = sampler.pack_documents(held)
    N = int(train_words.size)
    print(f"corpus: {len(train)} training documents, {N} tokens, V={V}; {len(held)} held-out "
          f"documents; {args.iterations} iterations, 1 thread each")
    warm_up()

    def heldout(phi):
        total, count = sampler.completion_log_likelihood(
            held_off, held_words, phi, args.alpha, iterations=args.eval_iterations,
            burn_in=min(10, args.eval_iterations - 1), seed=args.seed)
        return total / count

    rows = []
    for K in args.topics:
        seconds, phi, (ll1, lln) = run_deepdist(train_off, train_words, V, K, args)
        ours = dict(K=K, name="deepdist", rate=N * args.iterations / seconds[1], sec=seconds,
                    held=heldout(phi), rec=topic_recovery(true_phi, phi))
        rows.append(ours)
        print(f"  K={K}: deepdist log p(w,z) after 1 iteration {ll1:.6g}, after "
              f"{args.iterations} {lln:.6g}")
        if not args.skip_tomotopy:
            seconds, phi, n_tp = run_tomotopy(train, V, K, args)
            assert n_tp == N, (n_tp, N)
            rows.append(dict(K=K, name="tomotopy", rate=N * args.iterations / seconds[1],
                             sec=seconds, held=heldout(phi), rec=topic_recovery(true_phi, phi)))

    print()
    header = (f"{'K':>4} {'sampler':<10} {'wall s':>7} {'CPU s':>7} {'Mtok/s/core':>12} "
              f"{'ours/tomotopy':>14} "
              f"{'heldout ll/tok':>15} {'rel. diff':>10} {'recovery':>9}")
    print(header)
    print("-" * len(header))
    for K in args.topics:
        ours = next(r for r in rows if r["K"] == K and r["name"] == "deepdist")
        tomo = next((r for r in rows if r["K"] == K and r["name"] == "tomotopy"), None)
        for r in (ours, tomo):
            if r is None:
                continue
            ratio = f"{ours['rate'] / tomo['rate']:.2f}x" if (tomo and r is ours) else ""
            diff = (f"{(r['held'] - tomo['held']) / abs(tomo['held']):+.2%}"
                    if (tomo and r is ours) else "")
            print(f"{K:>4} {r['name']:<10} {r['sec'][0]:>7.2f} {r['sec'][1]:>7.2f} "
                  f"{r['rate'] / 1e6:>12.2f} "
                  f"{ratio:>14} {r['held']:>15.4f} {diff:>10} {r['rec']:>9.3f}")


if __name__ == "__main__":
    main()
