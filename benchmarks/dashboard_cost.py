"""What watching the dashboard costs a fit: Gibbs LDA with and without a client polling its data.

Three ways to run the same ``GibbsLDA`` fit (synthetic LDA corpus, ``local[2]``, one
SparkSession for all runs, a warm-up fit first so numba's compilation is not timed):

- ``off``: the server without a dashboard (``server_options={"dashboard": False}``);
- ``quiet``: the dashboard on (its history sampled once a second), nobody watching;
- ``polled``: the dashboard on, and a client (a process of its own, as a browser would be)
  that logs in with the one-time token (the cookie) and then GETs ``/dashboard/data`` once a
  second, incrementally, as the page does (and the page itself every tenth time).

The modes alternate within each repeat (off, quiet, polled, then the next repeat starts with
another of them) so that a drift of a shared machine's speed hits all alike. Printed: each
mode's median wall seconds with its range, the ratios polled/quiet (the issue's question:
serving the page and its data while the fit runs) and quiet/off (the history's own cost),
and how many polls the client made. On a machine other work keeps busy the wall seconds of
a fit vary by more than the effect looked for, so two measures that such work hardly moves
come too: the CPU seconds of the driver process (the model server, its applier and the
dashboard; Spark's JVM and Python workers are other processes) per fit, median per mode, and
the driver CPU milliseconds that one answer of ``/dashboard/data`` costs (the server's
handler called in a loop at the end of a long history, timed by thread CPU time).

    python benchmarks/dashboard_cost.py                    # defaults: 5 repeats
    python benchmarks/dashboard_cost.py --docs 1000 --epochs 40 --repeats 2
"""

import argparse
import http.cookiejar
import json
import math
import os
import resource
import signal
import statistics
import subprocess
import sys
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
    p.add_argument("--epochs", type=int, default=200, help="Gibbs sweeps per fit")
    p.add_argument("--sweeps-per-job", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--poll", type=float, default=1.0, help="seconds between the client's polls")
    p.add_argument("--master", default="local[2]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--poller", help=argparse.SUPPRESS)  # internal: be the watching client of this URL
    return p.parse_args(argv)


def poll(url: str, every: float) -> None:
    """The watching client (run in a process of its own): log in with the token, then poll the
    data as the page does until SIGTERM; print how many polls were answered."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    base = url.split("?")[0]
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    opener.open(url).read()  # the token buys the cookie; the redirect serves the page
    after, generation, mark, polls = 0, None, 0, 0
    while not stop.wait(every):
        query = f"after={after}&mark={mark}" + ("" if generation is None else f"&generation={generation}")
        try:
            if polls % 10 == 9:
                opener.open(base).read()
            data = json.loads(opener.open(f"{base}dashboard/data?{query}").read())
        except OSError:  # the fit ended and the server is gone
            break
        history = data["history"]
        after, generation = history["last"], history["generation"]
        mark = history["marks"][-1]["i"] if history["marks"] else mark
        polls += 1
    print(polls, flush=True)


class Poller:
    """The watching client's process."""

    def __init__(self, url: str, every: float):
        # The client stands in for a browser on the user's own machine, which takes no CPU from
        # the fit's cores; here it shares the two cores the fit saturates, so it runs at the
        # lowest priority and its own CPU is measured apart (cpu below).
        self._cpu = _children_cpu()
        self._process = subprocess.Popen(["nice", "-n", "19", sys.executable, os.path.abspath(__file__),
                                          "--poller", url, "--poll", str(every)], stdout=subprocess.PIPE, text=True)
        self.cpu = 0.0

    def stop(self) -> int:
        """Stop it; how many polls it made (its CPU seconds in ``cpu``)."""
        self._process.terminate()
        out, _ = self._process.communicate(timeout=30)
        self.cpu = _children_cpu() - self._cpu  # the only child that ends while a fit runs
        return int(out.strip() or 0)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _driver_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def answer_cost(points: int = 2000, partitions: int = 8, calls: int = 200) -> float:
    """Driver CPU milliseconds of one ``/dashboard/data`` answer (handler and JSON) at the end of
    a history of ``points`` points (a long fit's), as the page asks: what is new since its last poll."""
    import numpy as np

    from deepdist.dashboard import Dashboard
    from deepdist.server import create_app
    from deepdist.store import ParameterStore

    store = ParameterStore({"n_wk": np.zeros((3000, 50), np.int32)})
    dashboard = Dashboard(store, name="bench")
    for i in range(points):
        store.metrics["ll_per_token"].add(-7.0 + i * 1e-4)
        dashboard.history.sample()
    for p in range(partitions):
        dashboard.partitions.contact(epoch=1, partition=p, attempt=p, pushed=True)
    client = create_app(store, "s", 1 << 20, dashboard=dashboard).test_client()
    headers = {"Authorization": "Bearer s"}
    last = dashboard.history.since(0)
    query = f"/dashboard/data?after={last['last'] - 1}&generation={last['generation']}&mark=0"
    started = time.thread_time()
    for _ in range(calls):
        assert client.get(query, headers=headers).status_code == 200
    return 1000 * (time.thread_time() - started) / calls


def fit_once(sc, docs, args, mode):
    """One fit in ``mode``: wall seconds, driver CPU seconds, polls, the client's CPU seconds, ll/token."""
    from deepdist.lda import GibbsLDA

    lda = GibbsLDA(num_topics=args.topics, id2word=[str(i) for i in range(args.vocab)], epochs=args.epochs,
                   sweeps_per_job=args.sweeps_per_job, seed=args.seed, progress=False,
                   server_options={"dashboard": mode != "off"})
    pollers = []
    if mode == "polled":
        lda._fit_hook = lambda fit: pollers.append(Poller(fit.dd.dashboard_url(), args.poll))
    rdd = sc.parallelize(docs, 2).cache()
    rdd.count()
    cpu, started = _driver_cpu(), time.perf_counter()
    lda.fit(rdd)
    seconds, cpu = time.perf_counter() - started, _driver_cpu() - cpu
    rdd.unpersist()
    polls = sum(poller.stop() for poller in pollers)
    client = sum(poller.cpu for poller in pollers)
    return seconds, cpu, polls, client, lda.history_[-1]["ll_per_token"]


def paired_ratio(a: list, b: list) -> tuple:
    """Geometric mean of a[i]/b[i] over repeats, with a 95% t interval on the log scale.

    Pairing by repeat takes out what drifts between repeats (other work on a shared machine),
    which the medians of each mode keep.
    """
    logs = [math.log(x / y) for x, y in zip(a, b)]
    mean = statistics.fmean(logs)
    if len(logs) < 2:
        return math.exp(mean), float("nan"), float("nan")
    from scipy.stats import t

    half = t.ppf(0.975, len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def main(argv=None):
    from pyspark.sql import SparkSession

    from deepdist.lda.synthetic import synthetic_lda_corpus

    args = parse_args(argv)
    if args.poller:
        return poll(args.poller, args.poll)
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
    cpus = {mode: [] for mode in MODES}
    polls, clients = [], []
    for repeat in range(args.repeats):
        order = MODES[repeat % 3:] + MODES[:repeat % 3]
        for mode in order:
            wall, cpu, n, client, ll = fit_once(sc, docs, args, mode)
            seconds[mode].append(wall)
            cpus[mode].append(cpu)
            if mode == "polled":
                polls.append(n)
                clients.append(client)
            print(f"repeat {repeat + 1}/{args.repeats} {mode:>6}: {wall:7.2f} s, driver CPU {cpu:6.2f} s  (ll/token {ll:.4f}"
                  f"{f', {n} polls, client CPU {client:.2f} s' if mode == 'polled' else ''})", flush=True)
    spark.stop()
    median = {mode: statistics.median(v) for mode, v in seconds.items()}
    cpu = {mode: statistics.median(v) for mode, v in cpus.items()}
    per_answer = answer_cost()
    print(f"\nGibbs LDA: {args.docs} documents, {tokens} tokens, V={args.vocab}, K={args.topics}, "
          f"{args.epochs} sweeps ({args.sweeps_per_job} per job), {args.master}, {args.repeats} repeats, "
          f"client polling every {args.poll:g} s")
    print(f"{'mode':<8}{'median s':>10}{'min s':>9}{'max s':>9}{'driver CPU s':>14}")
    for mode in MODES:
        print(f"{mode:<8}{median[mode]:>10.2f}{min(seconds[mode]):>9.2f}{max(seconds[mode]):>9.2f}{cpu[mode]:>14.2f}")
    print(f"polled / quiet (serving the page and its data): {median['polled'] / median['quiet']:.4f} "
          f"({100 * (median['polled'] / median['quiet'] - 1):+.2f}%)")
    print(f"quiet / off (the history sampler alone):         {median['quiet'] / median['off']:.4f} "
          f"({100 * (median['quiet'] / median['off'] - 1):+.2f}%)")
    print(f"polled / off (all of the dashboard):             {median['polled'] / median['off']:.4f} "
          f"({100 * (median['polled'] / median['off'] - 1):+.2f}%)")
    for a, b, what in (("polled", "quiet", "serving the page and its data"), ("polled", "off", "all of the dashboard")):
        mean, low, high = paired_ratio(seconds[a], seconds[b])
        print(f"{a} / {b} paired by repeat ({what}): geometric mean {mean:.4f} ({100 * (mean - 1):+.2f}%), "
              f"95% interval {low:.4f} .. {high:.4f}")
    print(f"polls per polled fit: {polls}; the watching client's own CPU per fit: median "
          f"{statistics.median(clients):.2f} s (on the same cores, at nice 19)")
    print(f"driver CPU, polled - quiet: {cpu['polled'] - cpu['quiet']:+.2f} s per fit "
          f"({100 * (cpu['polled'] - cpu['quiet']) / median['quiet']:+.2f}% of a core over the quiet fit's wall time)")
    print(f"one /dashboard/data answer at the end of a 2000-point history: {per_answer:.2f} ms of driver CPU "
          f"(at one poll a second: {per_answer / 10:.3f}% of a core)")
    print(f"load average (1 min) at the start and the end: {load_before:.2f}, {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} cores (other work on the machine slows all modes alike, on average)")


if __name__ == "__main__":
    main()
