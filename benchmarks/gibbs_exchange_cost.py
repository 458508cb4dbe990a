"""What one Gibbs count exchange costs in CPU, on the model server and on the task, next to raw TCP.

A GibbsLDA task exchanges counts with the server once a sweep: it pushes its change of n_wk
(sorted flat COO, int32, with n_k's change) and gets back what the other partitions pushed
since its last exchange, in one round trip (``POST /update?since=V``). On a two-core machine
every CPU second of that exchange, on the driver or in the task, is taken from a sampler; this
measures it without Spark: two client processes (two partitions) exchange deltas of the
size the issue's corpus produces (about 50,000 entries a push at V=4,806, K=100) with

* the deepdist server: Flask on deepdist's keep-alive server, wire decoding and validation,
  the attempt ledger, the additive descent ``GibbsLDA`` uses, and the ``/changes`` answer;
* a raw socket: a length-prefixed TCP server that returns the other partition's last bytes,
  the least a Python process can spend moving the same bytes both ways.

It prints exchanges per second and CPU milliseconds per exchange: the server's (split into
the request threads and the applier thread) and the client's (encoding, HTTP, decoding).

    python benchmarks/gibbs_exchange_cost.py                  # 2 x 400 exchanges
    python benchmarks/gibbs_exchange_cost.py --entries 200000 --exchanges 100
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import socket
import socketserver
import struct
import sys
import threading
import time
from pathlib import Path

import numpy as np
from procstat import thread_cpu

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SECRET = "bench-secret"


def _deltas(rng, size, entries, count=8):
    """``count`` count deltas as a task pushes them: sorted distinct flat indices, small int32 changes."""
    out = []
    for _ in range(count):
        index = np.sort(rng.choice(size, entries, replace=False)).astype(np.int64)
        out.append((index, rng.choice(np.array([-2, -1, 1, 2], np.int32), entries)))
    return out


def _thread_cpu() -> dict:
    """CPU seconds of this process's live threads, by Python thread name."""
    return thread_cpu(lambda name: "request threads" if "process_request" in name else name)


# -- clients (one process per partition) ------------------------------------------------------
def client_deepdist(port, partition, args, barrier, out):
    from deepdist import wire
    from deepdist.client import ModelClient
    from deepdist.lda.gibbs_task import _coo

    client = ModelClient(f"http://127.0.0.1:{port}", SECRET)
    deltas = _deltas(np.random.default_rng(partition), args.words * args.topics, args.entries)
    client.health()
    barrier.wait()
    wall, cpu, version, back = time.perf_counter(), time.process_time(), 0, 0
    for seq in range(args.exchanges):
        index, value = deltas[seq % len(deltas)]
        update = _coo(index, value, args.words * args.topics, args.topics)
        meta = wire.UpdateMeta(version=version, epoch=0, partition=partition, attempt=0, seq=seq)
        _, version, changes = client.push_pull_changes(update, meta, version)
        back += len(changes["word_topic_flat"].indices) if changes and "word_topic_flat" in changes else 0
    out.put((time.perf_counter() - wall, time.process_time() - cpu, back / args.exchanges))


def client_raw(port, partition, args, barrier, out):
    from deepdist import wire
    from deepdist.lda.gibbs_task import _coo

    deltas = _deltas(np.random.default_rng(partition), args.words * args.topics, args.entries)
    bodies = [wire.encode(_coo(i, v, args.words * args.topics, args.topics)) for i, v in deltas]
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    barrier.wait()
    wall, cpu = time.perf_counter(), time.process_time()
    for seq in range(args.exchanges):
        body = bodies[seq % len(bodies)]
        sock.sendall(struct.pack("<QQ", partition, len(body)) + body)
        (size,) = struct.unpack("<Q", _recv_exact(sock, 8))
        np.frombuffer(_recv_exact(sock, size), np.uint8)
    out.put((time.perf_counter() - wall, time.process_time() - cpu, float("nan")))
    sock.close()


# -- servers ----------------------------------------------------------------------------------
def start_deepdist(args):
    from deepdist.optim import add
    from deepdist.server import ServerThread, create_app
    from deepdist.store import ParameterStore

    word_topic = np.zeros((args.words, args.topics), np.int32)
    model = {"word_topic": word_topic, "topic_totals": np.zeros(args.topics, np.int64),
             "word_topic_flat": word_topic.reshape(-1)}
    store = ParameterStore(model)
    store.set_descent(add, additive=True)  # as GibbsLDA: the ledger books every push
    store.epoch = 0
    store.start()
    server = ServerThread(create_app(store, SECRET, 1 << 30), "127.0.0.1", 0)
    server.start()
    return store, server


def _recv_exact(sock, n: int) -> bytearray:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = sock.recv_into(view[got:])
        if not k:
            raise ConnectionError("peer closed")
        got += k
    return buf


class _RawExchange(socketserver.BaseRequestHandler):
    """Receive (partition, length, bytes); answer with the other partition's last bytes."""

    def handle(self):
        sock, last = self.request, self.server.last
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            try:
                partition, size = struct.unpack("<QQ", _recv_exact(sock, 16))
            except ConnectionError:
                return
            body = _recv_exact(sock, size)
            last[partition] = body
            answer = last.get(1 - partition, b"")
            sock.sendall(struct.pack("<Q", len(answer)) + answer)


def run(target, port, args):
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=target, args=(port, p, args, barrier, out)) for p in (0, 1)]
    for proc in procs:
        proc.start()
    barrier.wait()
    threads, cpu, wall = _thread_cpu(), time.process_time(), time.perf_counter()
    results = [out.get() for _ in procs]
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    by_thread = {name: seconds - threads.get(name, 0.0) for name, seconds in _thread_cpu().items()}
    for proc in procs:
        proc.join()
    n = 2 * args.exchanges
    return {"per_s": n / wall, "server_ms": cpu / n * 1e3, "client_ms": sum(r[1] for r in results) / n * 1e3,
            "back": np.mean([r[2] for r in results]),
            "threads": {k: v / n * 1e3 for k, v in by_thread.items() if k != "MainThread" and v / n * 1e3 >= 0.01}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--words", type=int, default=4806, help="V (the issue's synthetic corpus: 4,806)")
    p.add_argument("--topics", type=int, default=100)
    p.add_argument("--entries", type=int, default=50_000, help="entries of n_wk a push changes")
    p.add_argument("--exchanges", type=int, default=400, help="exchanges per client process")
    args = p.parse_args(argv)

    store, server = start_deepdist(args)
    ours = run(client_deepdist, server.port, args)
    store.drain()
    raw_server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _RawExchange)
    raw_server.daemon_threads, raw_server.last = True, {}
    threading.Thread(target=raw_server.serve_forever, daemon=True).start()
    raw = run(client_raw, raw_server.server_address[1], args)

    print(f"# gibbs_exchange_cost: V={args.words:,}, K={args.topics}, {args.entries:,} entries a push, "
          f"2 client processes x {args.exchanges} exchanges\n")
    print("| server | exchanges/s | server CPU ms/exchange | client CPU ms/exchange |")
    print("|---|---|---|---|")
    for name, r in (("deepdist (Flask, wire, ledger, descent, /changes)", ours), ("raw socket (bytes only)", raw)):
        print(f"| {name} | {r['per_s']:,.0f} | {r['server_ms']:.2f} | {r['client_ms']:.2f} |")
    print(f"\ndeepdist server CPU by thread, ms/exchange: "
          + ", ".join(f"{k} {v:.2f}" for k, v in sorted(ours["threads"].items(), key=lambda kv: -kv[1])))
    print(f"entries in each answer (the other partition's pushes): {ours['back']:,.0f}")
    print(f"deepdist vs raw socket: server CPU {ours['server_ms'] / raw['server_ms']:.1f}x, "
          f"client CPU {ours['client_ms'] / raw['client_ms']:.1f}x, exchanges/s {ours['per_s'] / raw['per_s']:.2f}x")
    status = store.status()
    print(f"server: {status['updates_applied']} updates applied, {status['updates_rejected']} rejected")
    server.stop()
    store.stop()
    raw_server.shutdown()


if __name__ == "__main__":
    main()
