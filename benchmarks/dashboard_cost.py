"""What watching the dashboard costs a fit: Gibbs LDA with and without a client polling its data.

Three ways to run the same ``GibbsLDA`` fit (synthetic LDA corpus, ``local[2]``, one
SparkSession for all runs, a warm-up fit first so numba's compilation is not timed):

- ``off``: the server without a dashboard (``server_options={"dashboard": False}``);
- ``quiet``: the dashboard on (its history sampled once a second), nobody watching;
- ``polled``: the dashboard on, and a client that logs in with the one-time token (the
  cookie, as a browser) and then GETs ``/dashboard/data`` once a second, incrementally, as
  the page does (and the page itself every tenth time).

The modes alternate within each repeat (off, quiet, polled, then the next repeat starts with
another of them) so that a drift of a shared machine's speed hits all alike. Printed: each
mode's median wall seconds with its range, the ratios polled/quiet (the issue's question:
serving the page and its data while the fit runs) and quiet/off (the history's own cost),
and how many polls the client made.

    python benchmarks/dashboard_cost.py                    # defaults: 4 repeats
    python benchmarks/dashboard_cost.py --docs 1000 --epochs 40 --repeats 2
"""

import argparse
import http.cookiejar
import json
import os
import statistics
import threading
import time
import urllib.request

MODES = ("off", "quiet", "polled")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", type=int, default=5000)
    p.add_argument("--vocab", type=int, default=3000)
    p.add_argument("--topics", type=int, default=50)
    p.add_argument("--doc-length", type=int, default=200)
    p.add_argument("--epochs", type=int, default=100, help="Gibbs sweeps per fit")
    p.add_argument("--sweeps-per-job", type=int, default=10)
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--poll", type=float, default=1.0, help="seconds between the client's polls")
    p.add_argument("--master", default="local[2]")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


class Poller:
    """A client watching the dashboard: login with the token, then poll the data as the page does."""

    def __init__(self, url: str, every: float):
        self.url, self.every = url, every
        self.base = url.split("?")[0]
        self.polls = self.failures = 0
        self.bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-poller", daemon=True)
        self._thread.start()

    def _run(self):
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        opener.open(self.url).read()  # the token buys the cookie; the redirect serves the page
        after, generation = 0, None
        while not self._stop.wait(self.every):
            query = f"after={after}" + ("" if generation is None else f"&generation={generation}")
            try:
                if self.polls % 10 == 9:
                    self.bytes += len(opener.open(self.base).read())
                body = opener.open(f"{self.base}dashboard/data?{query}").read()
            except OSError:  # the fit ended and the server is gone
                self.failures += 1
                break
            data = json.loads(body)
            after, generation = data["history"]["last"], data["history"]["generation"]
            self.polls += 1
            self.bytes += len(body)

    def stop(self):
        self._stop.set()
        self._thread.join()


def fit_once(sc, docs, args, mode):
    from deepdist.lda import GibbsLDA

    lda = GibbsLDA(num_topics=args.topics, id2word=[str(i) for i in range(args.vocab)], epochs=args.epochs,
                   sweeps_per_job=args.sweeps_per_job, seed=args.seed, progress=False,
                   server_options={"dashboard": mode != "off"})
    pollers = []
    if mode == "polled":
        lda._fit_hook = lambda fit: pollers.append(Poller(fit.dd.dashboard_url(), args.poll))
    rdd = sc.parallelize(docs, 2).cache()
    rdd.count()
    started = time.perf_counter()
    lda.fit(rdd)
    seconds = time.perf_counter() - started
    rdd.unpersist()
    for poller in pollers:
        poller.stop()
    polls = pollers[0].polls if pollers else 0
    return seconds, polls, lda.history_[-1]["ll_per_token"]


def main(argv=None):
    from pyspark.sql import SparkSession

    from deepdist.lda.synthetic import synthetic_lda_corpus

    args = parse_args(argv)
    spark = (SparkSession.builder.master(args.master).appName("dashboard-cost")
             .config("spark.ui.enabled", "false").getOrCreate())
    sc = spark.sparkContext
    sc.setLogLevel("ERROR")
    corpus, _ = synthetic_lda_corpus(args.docs, args.vocab, args.topics, args.doc_length, alpha=0.1, beta=0.01,
                                     seed=args.seed)
    docs = [d.tolist() for d in corpus]
    load_before = os.getloadavg()[0]
    tokens = sum(len(d) for d in docs)
    warm = argparse.Namespace(**{**vars(args), "epochs": args.sweeps_per_job})
    fit_once(sc, docs, warm, "quiet")   # numba compiles, Python workers start: not timed
    seconds = {mode: [] for mode in MODES}
    polls = []
    for repeat in range(args.repeats):
        order = MODES[repeat % 3:] + MODES[:repeat % 3]
        for mode in order:
            wall, n, ll = fit_once(sc, docs, args, mode)
            seconds[mode].append(wall)
            if mode == "polled":
                polls.append(n)
            print(f"repeat {repeat + 1}/{args.repeats} {mode:>6}: {wall:7.2f} s  (ll/token {ll:.4f}"
                  f"{f', {n} polls' if mode == 'polled' else ''})", flush=True)
    spark.stop()
    median = {mode: statistics.median(v) for mode, v in seconds.items()}
    print(f"\nGibbs LDA: {args.docs} documents, {tokens} tokens, V={args.vocab}, K={args.topics}, "
          f"{args.epochs} sweeps ({args.sweeps_per_job} per job), {args.master}, {args.repeats} repeats, "
          f"client polling every {args.poll:g} s")
    print(f"{'mode':<8}{'median s':>10}{'min s':>9}{'max s':>9}")
    for mode in MODES:
        print(f"{mode:<8}{median[mode]:>10.2f}{min(seconds[mode]):>9.2f}{max(seconds[mode]):>9.2f}")
    print(f"polled / quiet (serving the page and its data): {median['polled'] / median['quiet']:.4f} "
          f"({100 * (median['polled'] / median['quiet'] - 1):+.2f}%)")
    print(f"quiet / off (the history sampler alone):         {median['quiet'] / median['off']:.4f} "
          f"({100 * (median['quiet'] / median['off'] - 1):+.2f}%)")
    print(f"polled / off (all of the dashboard):             {median['polled'] / median['off']:.4f} "
          f"({100 * (median['polled'] / median['off'] - 1):+.2f}%)")
    print(f"polls per polled fit: {polls}")
    print(f"load average (1 min) at the start and the end: {load_before:.2f}, {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} cores (other work on the machine slows all modes alike, on average)")


if __name__ == "__main__":
    main()
