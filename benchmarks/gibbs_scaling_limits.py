"""Where GibbsLDA's local[2]-over-local[1] speed-up goes: the machine and AD-LDA, without Spark.

``lda_vs_peers.py`` times GibbsLDA end to end. This splits the gap between its two-core
speed-up and 2.0 into the parts no server or Spark code can remove, by running the sampling
kernel alone (no Spark, no HTTP), on the issue's synthetic corpus, in four ways:

- ``one chain``: one process sweeps the whole corpus (what local[1] samples);
- ``one shard alone`` / ``two shards at once``: half of the documents each, first one process
  alone, then two processes at the same time on the two cores, each an independent chain on its
  half. The ratio of their sampling CPU per token is what the hardware gives a second core
  (shared caches, memory bandwidth, a host's sibling threads);
- ``AD-LDA, lag 0`` / ``lag 1``: both shards in one process, in turn, each sweeping against its
  own copy of the counts and merging the other's change after every sweep (Newman et al.'s
  AD-LDA with one exchange per sweep), either before its next sweep (lag 0) or one sweep later
  (lag 1: an exchange that runs while the next sweep samples, merged after it);
- ``AD-LDA as GibbsLDA``: GibbsLDA's schedule. Each shard pushes its change at the start of a
  sweep and gets back what the other pushed so far (one shard asks first, so one answer lacks
  the other's newest change), and merges the answer after the first eighth of the sweep.
  The sampling CPU of these against ``one chain`` is what the algorithm costs: a chain whose
  copy is stale keeps longer per-word topic lists and pays for them in SparseLDA.

It prints the sampling CPU of each, the training log-likelihood per token at the end (log p(w, z)),
the mean number of topics of a token's word at the end (what SparseLDA pays for), and the speed-up
ceiling for local[2] these two factors leave: 2 / (hardware ratio × GibbsLDA's AD-LDA ratio).
Whatever GibbsLDA falls short of that ceiling is the driver, the JVM and the exchanges
competing with the samplers for the two cores (``lda_vs_peers.py``'s ``all CPU s``).

    python benchmarks/gibbs_scaling_limits.py                      # the issue's corpus, 200 sweeps
    python benchmarks/gibbs_scaling_limits.py --docs 4000 --sweeps 100
"""

import argparse
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deepdist.lda import sampler  # noqa: E402
from deepdist.lda.gibbs_task import _HEAD_PARTS  # noqa: E402
from deepdist.lda.local_counts import LocalCounts  # noqa: E402
from deepdist.lda.synthetic import synthetic_lda_corpus  # noqa: E402

K, V, ALPHA, BETA = 100, 5000, 0.1, 0.01


class Shard:
    """One shard's documents, assignments and its own copy of the counts (at first, of its own tokens)."""

    def __init__(self, docs, seed, index):
        self.offsets, self.words = sampler.pack_documents(docs)
        self.index, self.seed = index, seed
        self.topics = sampler.random_topics(self.words.size, K, sampler.derive_seed(seed, index, 0))
        self.doc_topic = sampler.doc_topic_from_assignments(self.offsets, self.topics, K)
        self.local = LocalCounts(self.words, self.topics, num_words=V, num_topics=K)
        self.start_from(sampler.counts_from_assignments(self.words, self.topics, V, K))

    def start_from(self, counts):
        """Set the copy to ``counts`` (V, K), with nothing of its own unpushed."""
        self.local.word_topic[...] = counts
        self.local.topic_totals[...] = counts.sum(axis=0)
        self.local.mark_pushed()

    def sweep(self, it, docs=None, part=None) -> float:
        """One sweep (or its documents ``docs``, seeded by ``part``); returns its thread CPU seconds."""
        seed = sampler.derive_seed(self.seed, self.index, it)
        cpu = time.thread_time()
        sampler.sweep(self.offsets, self.words, self.topics, self.doc_topic, self.local.word_topic,
                      self.local.topic_totals, ALPHA, BETA, seed=seed if part is None else sampler.derive_seed(seed, part),
                      docs=docs, validate=False)
        return time.thread_time() - cpu


def _counts(shards):
    return sum(sampler.counts_from_assignments(s.words, s.topics, V, K) for s in shards)


def _topics_per_token(shards):
    """Mean number of topics with n_wk > 0 of a token's word: the length of SparseLDA's lists."""
    nonzero = (_counts(shards) > 0).sum(axis=1)
    freq = np.bincount(np.concatenate([s.words for s in shards]), minlength=V)
    return float((nonzero * freq).sum() / freq.sum())


def _ll(shards):
    word_topic = _counts(shards)
    ll = sampler.log_likelihood(word_topic, word_topic.sum(axis=0, dtype=np.int64), BETA)
    ll += sum(sampler.log_prior_assignments(s.doc_topic, ALPHA) for s in shards)
    return ll / sum(s.words.size for s in shards)


def independent(docs, sweeps, index, seed, out=None):
    """An independent chain on ``docs``; returns (sampling CPU s, tokens, ll/token)."""
    shard = Shard(docs, seed, index)
    cpu = sum(shard.sweep(it) for it in range(1, sweeps + 1))
    result = (cpu, shard.words.size, _ll([shard]), _topics_per_token([shard]))
    if out is not None:
        out.put((index, result))
    return result


def ad_lda(halves, sweeps, lag, seed):
    """Two shards sampled in turn against their own copies, exchanging every sweep (see the module doc)."""
    shards = [Shard(h, seed, i) for i, h in enumerate(halves)]
    start = _counts(shards)  # every copy starts from the counts of all the assignments
    for shard in shards:
        shard.start_from(start)
    cpu, pending = 0.0, []
    for it in range(1, sweeps + 1):
        cpu += sum(s.sweep(it) for s in shards)
        pending.append([s.local.take_unpushed() for s in shards])
        if len(pending) > lag:  # deliver each shard's change to the other shard
            deltas = pending.pop(0)
            for i, s in enumerate(shards):
                for j, (index, value) in enumerate(deltas):
                    if j != i:
                        s.local.merge(index, value)
    if lag == 0:  # every change was delivered: each copy must equal the counts of all the assignments
        truth = _counts(shards)
        assert all(np.array_equal(s.local.word_topic, truth) for s in shards), "a shard's copy drifted"
    return cpu, sum(s.words.size for s in shards), _ll(shards), _topics_per_token(shards)


def ad_lda_as_gibbs_lda(halves, sweeps, seed):
    """Two shards on GibbsLDA's exchange schedule (see the module doc; no burn-in, as above)."""
    shards = [Shard(h, seed, i) for i, h in enumerate(halves)]
    start = _counts(shards)
    for shard in shards:
        shard.start_from(start)
    log, seen, answers, cpu = [], [0, 0], [[], []], 0.0

    def merge(i):
        for index, value in answers[i]:
            shards[i].local.merge(index, value)
        answers[i] = []

    for it in range(1, sweeps + 1):
        for i in (1, 0):  # the server's order: shard 0's answer holds shard 1's newest push, not vice versa
            log.append((i, shards[i].local.take_unpushed()))
            answers[i] = [delta for j, delta in log[seen[i]:] if j != i]
            seen[i] = len(log)
        for i, shard in enumerate(shards):
            head = (len(shard.offsets) - 1) // _HEAD_PARTS
            cpu += shard.sweep(it, (0, head), 0)
            merge(i)
            cpu += shard.sweep(it, (head, len(shard.offsets) - 1), 1)
    return cpu, sum(s.words.size for s in shards), _ll(shards), _topics_per_token(shards)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", type=int, default=20000)
    p.add_argument("--sweeps", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    docs, _ = synthetic_lda_corpus(args.docs, V, 50, 100, ALPHA, BETA, 2026, poisson_lengths=True)
    docs = [d for d in docs if len(d)]
    halves = [docs[0::2], docs[1::2]]
    sampler.load_kernels()
    print(f"synthetic corpus: {len(docs)} documents, {sum(map(len, docs)):,} tokens, V={V}, K={K}, "
          f"{args.sweeps} sweeps\n")
    rows = {}
    rows["one chain"] = independent(docs, args.sweeps, 0, args.seed)
    rows["one shard alone"] = independent(halves[0], args.sweeps, 0, args.seed)
    fork = multiprocessing.get_context("fork")
    queue = fork.Queue()
    procs = [fork.Process(target=independent, args=(h, args.sweeps, i, args.seed, queue)) for i, h in enumerate(halves)]
    for proc in procs:
        proc.start()
    together = dict(queue.get() for _ in procs)
    for proc in procs:
        proc.join()
    rows["two shards at once (shard 0)"] = together[0]
    rows["two shards at once (shard 1)"] = together[1]
    for lag in (0, 1):
        rows[f"AD-LDA, 2 shards, lag {lag}"] = ad_lda(halves, args.sweeps, lag, args.seed)
    rows["AD-LDA, 2 shards, as GibbsLDA"] = ad_lda_as_gibbs_lda(halves, args.sweeps, args.seed)
    print("| run | sampling CPU s | tokens | ns/token-sample | ll/token | topics a token's word has |\n"
          "|---|---|---|---|---|---|")
    per = {}
    for name, (cpu, tokens, ll, topics) in rows.items():
        per[name] = cpu / (tokens * args.sweeps) * 1e9
        print(f"| {name} | {cpu:.2f} | {tokens:,} | {per[name]:.1f} | {ll:.4f} | {topics:.2f} |")
    hardware = per["two shards at once (shard 0)"] / per["one shard alone"]
    algorithm = per["AD-LDA, 2 shards, as GibbsLDA"] / per["one chain"]
    print(f"\nhardware: co-running costs {hardware:.3f}x per token (shard 0 with and without shard 1 beside it)")
    print(f"AD-LDA: lag 0 costs {per['AD-LDA, 2 shards, lag 0'] / per['one chain']:.3f}x, "
          f"lag 1 {per['AD-LDA, 2 shards, lag 1'] / per['one chain']:.3f}x, "
          f"GibbsLDA's schedule {algorithm:.3f}x per token against one chain")
    print(f"ceiling for local[2] / local[1] from these two alone: {2 / (hardware * algorithm):.2f}x")


if __name__ == "__main__":
    main()
