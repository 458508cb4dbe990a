"""How far one model server goes: M client processes against the real server in its own process.

Each client process is a task doing light work between exchanges (none), so the server is the
bottleneck. Two workloads, as the models use the server:

* ``gibbs``: a collapsed Gibbs exchange (``POST /update?since=V``, as ``GibbsLDA``'s tasks do):
  push a count delta of ``--entries`` sorted flat int32 entries of n_wk (V x K) with its n_k
  change, under a partition, attempt and sequence number (the attempt ledger books it), and get
  back what the other clients pushed since this one's last exchange; when the server answers
  ``"full"`` (the other changes outgrew its change log), pull n_wk and n_k as a task does.
* ``rows``: a word2vec pull (``POST /model``) of ``--rows`` random rows of a ``--vocab`` x
  ``--dim`` float32 matrix.

The server (``ParameterStore`` + ``create_app`` + ``ServerThread``, the additive ``add`` descent
``GibbsLDA`` uses) runs in a process of its own, so its CPU time is read from ``/proc`` alone:
server CPU per exchange is that time over the exchanges served. Latency is per exchange, as a
client sees it (``full`` pulls included). ``--shards N`` starts N server processes, each with
its rows of every matrix as ``DeepDist(servers=N)`` splits them (:class:`deepdist.shards.ShardLayout`:
contiguous row ranges, n_k whole on shard 0), and every client talks to them through
:class:`deepdist.shards.ShardedClient`, which sends each shard its piece of an exchange in parallel,
as a task of a sharded model does. (The servers are the benchmark's processes, not ``DeepDist``'s,
which needs a Spark context: the same store and HTTP server as a shard's process.)

``--paths flask,direct`` serves the binary routes through Flask (the route every request took
before the direct path) and through the server's direct path, in the same run: on a shared
machine only ratios within one run mean anything.

At the end, a projection from the measured costs to 1,000 partitions: the server CPU seconds a
round of exchanges (every partition once) takes.

    python benchmarks/server_scale.py                               # M = 1..64, both paths
    python benchmarks/server_scale.py --clients 2,16 --seconds 3 --shards 1,2
    python benchmarks/server_scale.py --workloads gibbs --paths direct --clients 8
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deepdist.procstat import read_stat, thread_cpu  # noqa: E402

SECRET = "bench-secret"


def _shapes(args, workload: str) -> dict:
    """``{name: (shape, dtype)}`` of the model of ``workload``: n_wk flat, as GibbsLDA's tasks address
    it, and n_k; or the word2vec matrix."""
    if workload == "gibbs":
        return {"word_topic_flat": ((args.words * args.topics,), np.int32), "topic_totals": ((args.topics,), np.int64)}
    return {"vectors": ((args.vocab, args.dim), np.float32)}


def _model(args, workload: str) -> dict:
    """The whole model of ``workload``: zero counts, or random vectors."""
    if workload == "gibbs":
        return {name: np.zeros(shape, dtype) for name, (shape, dtype) in _shapes(args, workload).items()}
    (shape, dtype), = _shapes(args, workload).values()
    return {"vectors": np.random.default_rng(0).normal(size=shape).astype(dtype)}


def _layout(args, workload: str):
    """The layout ``DeepDist(servers=N)`` would give the model; every client makes one, from the
    shapes alone (``np.empty`` touches no memory)."""
    from deepdist.shards import ShardLayout

    return ShardLayout.of({name: np.empty(shape, dtype) for name, (shape, dtype) in _shapes(args, workload).items()},
                          args.shards)


_GROUPS = {"deepdist-server": "I/O thread", "deepdist-applier": "applier", "deepdist-http": "request threads"}


def _thread_cpu() -> dict:
    """CPU seconds of this process's threads: the I/O thread, the request threads, the applier."""
    return thread_cpu(lambda name: next((g for prefix, g in _GROUPS.items() if name.startswith(prefix)), "other"))


# -- the server (one process per shard) ---------------------------------------------------------
def serve(args, workload: str, shard: int, path: str, pipe) -> None:
    from deepdist.optim import add
    from deepdist.server import ServerThread, create_app
    from deepdist.store import ParameterStore

    # one model a workload: the change log is bounded by the model's size
    model = {name: np.array(a) for name, a in _layout(args, workload).slices(_model(args, workload), shard).items()}
    store = ParameterStore(model)
    store.set_descent(add, additive=True)  # as GibbsLDA: the attempt ledger books every push
    store.start()
    app = create_app(store, SECRET, 1 << 30)
    server = ServerThread(app, "127.0.0.1", 0, **({"direct": None} if path == "flask" else {}))
    server.start()
    pipe.send(server.port)
    while pipe.recv() == "cpu":
        pipe.send(_thread_cpu())
    store.drain()
    status = store.status()
    server.stop()
    store.stop()
    pipe.send({"applied": status["updates_applied"], "rejected": status["updates_rejected"]})


# -- the clients (one process each: a task) -----------------------------------------------------
def _gibbs_parts(args, partition: int) -> list:
    """``--deltas`` pushes of this partition (the client splits them by shard)."""
    from deepdist.lda.gibbs_task import _coo

    rng = np.random.default_rng(1000 + partition)
    K = args.topics
    out = []
    for _ in range(args.deltas):
        index = np.sort(rng.choice(args.words * K, args.entries, replace=False)).astype(np.int64)
        value = rng.choice(np.array([-2, -1, 1, 2], np.int32), args.entries)
        out.append(_coo(index, value, args.words * K, K))
    return out


def _row_parts(args, partition: int) -> list:
    rng = np.random.default_rng(2000 + partition)
    return [{"vectors": np.sort(rng.choice(args.vocab, args.rows, replace=False))} for _ in range(args.deltas)]


def client(args, workload: str, ports: list, partition: int, start_at, barrier, out) -> None:
    from deepdist import wire
    from deepdist.client import ModelClient
    from deepdist.shards import ShardedClient

    clients = [ModelClient(f"http://127.0.0.1:{port}", SECRET) for port in ports]
    # one server: the plain client, as DeepDist(servers=1) gives its tasks
    c = clients[0] if len(clients) == 1 else ShardedClient(clients, _layout(args, workload))
    parts = _gibbs_parts(args, partition) if workload == "gibbs" else _row_parts(args, partition)
    version, seq = 0, 0
    c.health()
    barrier.wait()
    while not start_at.value or time.time() < start_at.value:  # the parent sets it once all are ready
        time.sleep(0.001)
    deadline = start_at.value + args.seconds
    latencies, entries, full = [], 0, 0
    cpu = time.process_time()
    n = 0
    while time.time() < deadline:
        t0 = time.perf_counter()
        update = parts[n % len(parts)]
        if workload == "rows":
            c.pull_rows(update)
        else:
            meta = wire.UpdateMeta(version=version, epoch=0, partition=partition, attempt=0, seq=seq)
            seq += 1
            _, version, changes = c.push_pull_changes(update, meta, version)
            if changes is None:  # as a Gibbs task: the server cannot tell, so pull the counts
                full += 1
                version, _ = c.pull(["word_topic_flat", "topic_totals"])
            elif "word_topic_flat" in changes:
                entries += len(changes["word_topic_flat"].indices)
        latencies.append(time.perf_counter() - t0)
        n += 1
    out.put((n, time.process_time() - cpu, latencies, entries, full))


def run(args, workload: str, path: str, m: int) -> dict:
    ctx = mp.get_context("spawn")
    pipes, servers = [], []
    for shard in range(args.shards):
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(target=serve, args=(args, workload, shard, path, theirs), daemon=True)
        proc.start()
        pipes.append(mine)
        servers.append(proc)
    ports = [p.recv() for p in pipes]
    start_at, barrier, out = ctx.Value("d", 0.0), ctx.Barrier(m + 1), ctx.Queue()
    procs = [ctx.Process(target=client, args=(args, workload, ports, i, start_at, barrier, out), daemon=True)
             for i in range(m)]
    for proc in procs:
        proc.start()
    barrier.wait()
    start_at.value = time.time() + 0.1
    while time.time() < start_at.value:
        time.sleep(0.001)
    cpu0 = [read_stat(f"/proc/{s.pid}/stat")[2] for s in servers]
    threads0 = _ask_cpu(pipes)
    wall0 = time.perf_counter()
    results = [out.get() for _ in procs]
    wall = time.perf_counter() - wall0
    server_cpu = [read_stat(f"/proc/{s.pid}/stat")[2] - c for s, c in zip(servers, cpu0)]
    threads = {g: v - threads0.get(g, 0.0) for g, v in _ask_cpu(pipes).items()}
    for proc in procs:
        proc.join()
    counts = []
    for pipe in pipes:
        pipe.send("stop")
        counts.append(pipe.recv())
    for proc in servers:
        proc.join()
    n = sum(r[0] for r in results)
    latencies = np.concatenate([r[2] for r in results]) * 1e3
    return {"workload": workload, "path": path, "M": m, "N": args.shards, "n": n, "per_s": n / wall,
            "server_ms": sum(server_cpu) / n * 1e3, "busiest": max(server_cpu) / wall,
            # the most exchanges a second the busiest server process could serve with a core of its own
            "ceiling": n / max(server_cpu),
            "client_ms": sum(r[1] for r in results) / n * 1e3,
            "p50": float(np.percentile(latencies, 50)), "p99": float(np.percentile(latencies, 99)),
            "entries": sum(r[3] for r in results) / n, "full": sum(r[4] for r in results) / n,
            "rejected": sum(c["rejected"] for c in counts),
            "threads": {g: v / n * 1e3 for g, v in threads.items()}}


def _ask_cpu(pipes) -> dict:
    """CPU seconds by thread group, summed over the server processes."""
    total: dict = {}
    for pipe in pipes:
        pipe.send("cpu")
        for group, seconds in pipe.recv().items():
            total[group] = total.get(group, 0.0) + seconds
    return total


def _projection(rows: list, partitions: int) -> list:
    """Lines projecting the measured server CPU to ``partitions`` partitions, one exchange each a round."""
    lines = []
    for workload in ("gibbs", "rows"):
        for path in ("flask", "direct"):
            mine = [r for r in rows if r["workload"] == workload and r["path"] == path and r["N"] == 1]
            if not mine:
                continue
            big = max(mine, key=lambda r: r["M"])
            small = min(mine, key=lambda r: r["M"])
            round_s = partitions * big["server_ms"] / 1e3
            lines.append(f"- {workload}, {path}: {big['server_ms']:.2f} ms of server CPU an exchange at M={big['M']} "
                         f"({small['server_ms']:.2f} at M={small['M']}): {partitions:,} partitions exchanging once "
                         f"cost {round_s:.2f} s of one server core a round; one core serves at most "
                         f"{1e3 / big['server_ms']:,.0f} exchanges/s, so {partitions:,} partitions can each "
                         f"exchange once every {round_s:.2f} s")
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", default="1,2,4,8,16,32,64", help="client process counts M")
    p.add_argument("--shards", default="1", help="server process counts N (rows split as DeepDist(servers=N) splits)")
    p.add_argument("--paths", default="flask,direct", help="flask: binary routes through Flask; direct: skip it")
    p.add_argument("--workloads", default="gibbs,rows")
    p.add_argument("--seconds", type=float, default=3.0, help="measured seconds per configuration")
    p.add_argument("--repeat", type=int, default=1, help="runs of each configuration (the best is kept)")
    p.add_argument("--words", type=int, default=4806, help="V of n_wk (the Gibbs issue's corpus: 4,806)")
    p.add_argument("--topics", type=int, default=100, help="K")
    p.add_argument("--entries", type=int, default=50_000, help="entries of n_wk a push changes")
    p.add_argument("--deltas", type=int, default=8, help="distinct pushes each client cycles through")
    p.add_argument("--vocab", type=int, default=100_000, help="rows of the word2vec matrix")
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--rows", type=int, default=1_000, help="rows a word2vec pull asks for")
    p.add_argument("--project", type=int, default=1_000, help="partitions to project to")
    args = p.parse_args(argv)

    rows, shard_counts = [], args.shards
    print(f"# server_scale: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the start; "
          f"gibbs: V={args.words:,} K={args.topics} {args.entries:,} entries a push; rows: {args.rows:,} of "
          f"{args.vocab:,} x {args.dim} float32; {args.seconds:g} s a configuration, best of {args.repeat}\n")
    print("| workload | path | N | M | exchanges/s | server CPU ms/exch | busiest server core | ceiling exch/s "
          "| client CPU ms/exch | p50 ms | p99 ms | entries back | full pulls |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for workload in args.workloads.split(","):
        for shards in (int(s) for s in shard_counts.split(",")):
            args.shards = shards
            for m in (int(x) for x in args.clients.split(",")):
                for path in args.paths.split(","):
                    r = min((run(args, workload, path, m) for _ in range(args.repeat)), key=lambda r: r["server_ms"])
                    rows.append(r)
                    print(f"| {workload} | {path} | {r['N']} | {m} | {r['per_s']:,.0f} | {r['server_ms']:.3f} | "
                          f"{r['busiest']:.0%} | {r['ceiling']:,.0f} | {r['client_ms']:.2f} | {r['p50']:.1f} | {r['p99']:.1f} | "
                          f"{r['entries']:,.0f} | {r['full']:.0%} |", flush=True)
    print("\nserver CPU by thread, ms/exchange:")
    for r in rows:
        print(f"  {r['workload']:<6} {r['path']:<7} N={r['N']} M={r['M']:<3} " + ", ".join(
            f"{g} {v:.3f}" for g, v in sorted(r["threads"].items(), key=lambda kv: -kv[1]) if v >= 0.001))
    paths = args.paths.split(",")
    if "flask" in paths and "direct" in paths:
        print("\nserver CPU per exchange, direct / flask (same run):")
        for r in rows:
            if r["path"] == "direct":
                base = next((b for b in rows if b["path"] == "flask" and
                             (b["workload"], b["N"], b["M"]) == (r["workload"], r["N"], r["M"])), None)
                if base is not None:
                    print(f"  {r['workload']:<6} N={r['N']} M={r['M']:<3} {r['server_ms'] / base['server_ms']:.2f}x "
                          f"(exchanges/s {r['per_s'] / base['per_s']:.2f}x)")
    sharded = [r for r in rows if r["N"] > 1]
    if sharded:
        print("\nN shards against one server (same run): exchanges/s on these cores, and the ceiling (the busiest "
              "server process's CPU per exchange: what it could serve with a core of its own):")
        for r in sharded:
            base = next((b for b in rows if b["N"] == 1 and (b["workload"], b["path"], b["M"]) ==
                         (r["workload"], r["path"], r["M"])), None)
            if base is not None:
                print(f"  {r['workload']:<6} {r['path']:<7} N={r['N']} M={r['M']:<3} exchanges/s "
                      f"{r['per_s'] / base['per_s']:.2f}x, ceiling {r['ceiling'] / base['ceiling']:.2f}x, client CPU "
                      f"{r['client_ms'] / base['client_ms']:.2f}x")
    print(f"\nprojection to {args.project:,} partitions (one server, the measured CPU per exchange):")
    print("\n".join(_projection(rows, args.project)))
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
