"""Model-server throughput: deepdist's HTTP path against raw baselines, side by side.

Two client processes hammer one server with a 50,000 x 100 float32 model
(20 MB): whole-model GETs and POSTs, and the same with 5% of the rows as sparse
rows.  The same run measures two baselines moving the same bytes:

* raw socket: a length-prefixed TCP server and ``np.frombuffer`` clients,
  the fastest a Python process moves these bytes;
* raw-bytes Flask: Flask + werkzeug + requests serving pre-encoded bytes,
  i.e. the HTTP stack without deepdist's encoding, validation and queueing.

The "deepdist TLS" rows are the same deepdist server and client over TLS (a self-signed
certificate pinned by fingerprint, as DeepDist serves off loopback): what encryption costs.

    python benchmarks/server_throughput.py [--requests 20] [--rows 50000] [--dim 100]

MB/s counts payload bytes (the model or update) over the wall time of a phase.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import socket
import socketserver
import struct
import threading
import time

import numpy as np

SECRET = "bench-secret"


# -- servers ---------------------------------------------------------------------------
def start_deepdist(rows: int, dim: int, use_tls: bool = False):
    from deepdist.server import ServerThread, create_app
    from deepdist.sparse import SparseRows
    from deepdist.store import ParameterStore
    from deepdist.config import ServerConfig

    model = {"w": np.random.default_rng(0).normal(size=(rows, dim)).astype(np.float32)}

    def add(m, update):
        part = update["w"]
        if isinstance(part, SparseRows):
            m["w"][part.indices] += part.values     # rows are distinct: no need for add.at
        else:
            m["w"] += part

    store = ParameterStore(model, config=ServerConfig(queue_size=64))
    store.set_descent(add)
    store.start()
    ctx = fingerprint = None
    if use_tls:
        from deepdist import tls
        cert, key, fingerprint = tls.self_signed("127.0.0.1")
        ctx = tls.server_context(cert, key)
    server = ServerThread(create_app(store, SECRET, 1 << 30), "127.0.0.1", 0, ssl_context=ctx)
    server.start()
    scheme = "https" if use_tls else "http"
    return store, server, (f"{scheme}://127.0.0.1:{server.port}", fingerprint)


def start_raw_flask(payload: bytes):
    from flask import Flask, Response, request
    from deepdist.server import ServerThread

    app = Flask("raw")

    @app.get("/blob")
    def blob():
        return Response(payload, mimetype="application/octet-stream")

    @app.post("/blob")
    def sink():
        return {"n": len(request.get_data(cache=False))}

    server = ServerThread(app, "127.0.0.1", 0)
    server.start()
    return server


class _RawHandler(socketserver.BaseRequestHandler):
    """b'G' -> send the payload; b'P' + length + bytes -> receive, ack."""

    def handle(self):
        sock = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            op = _recv_exact(sock, 1)
            if not op:
                return
            if op == b"G":
                sock.sendall(struct.pack("<Q", len(self.server.payload)))
                sock.sendall(self.server.payload)
            else:
                (n,) = struct.unpack("<Q", _recv_exact(sock, 8))
                np.frombuffer(_recv_exact(sock, n), np.float32)
                sock.sendall(b"k")


def _recv_exact(sock, n: int):
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if not k:
            return b"" if got == 0 else bytes(buf[:got])
        got += k
    return buf


def start_raw_socket(payload: bytes):
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _RawHandler)
    server.daemon_threads = True
    server.payload = payload
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# -- clients (each runs in its own process) --------------------------------------------------
def client_deepdist(port, phase, n, rows, dim, barrier, out):
    from deepdist import ModelClient, wire
    from deepdist.sparse import SparseRows

    url, fingerprint = port
    client = ModelClient(url, SECRET, fingerprint=fingerprint)
    rng = np.random.default_rng()
    k = rows // 20
    picked = np.sort(rng.choice(rows, k, replace=False))
    dense = (1e-3 * rng.normal(size=(rows, dim))).astype(np.float32)
    sparse = SparseRows(picked, dense[picked], (rows, dim))
    local = {"w": np.zeros((rows, dim), np.float32)}
    client.health()
    barrier.wait()
    start = time.perf_counter()
    payload = 0
    for seq in range(n):
        if phase == "get":
            client.pull_into(local)
            payload += local["w"].nbytes
        elif phase == "post":
            client.push({"w": dense}, wire.UpdateMeta(version=0))
            payload += dense.nbytes
        elif phase == "get-rows":
            client.pull_rows_into(local, {"w": picked})
            payload += sparse.values.nbytes
        elif phase == "post-rows":
            client.push({"w": sparse}, wire.UpdateMeta(version=0))
            payload += sparse.values.nbytes
    out.put((time.perf_counter() - start, payload, n, start))


def client_raw_flask(port, phase, n, rows, dim, barrier, out):
    import requests

    session = requests.Session()
    body = (1e-3 * np.random.default_rng().normal(size=(rows, dim))).astype(np.float32).tobytes()
    url = f"http://127.0.0.1:{port}/blob"
    session.get(url).content
    barrier.wait()
    start = time.perf_counter()
    payload = 0
    for _ in range(n):
        if phase == "get":
            data = session.get(url).content
            np.frombuffer(data, np.float32)
            payload += len(data)
        else:
            session.post(url, data=body).json()
            payload += len(body)
    out.put((time.perf_counter() - start, payload, n, start))


def client_raw_socket(port, phase, n, rows, dim, barrier, out):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = (1e-3 * np.random.default_rng().normal(size=(rows, dim))).astype(np.float32).tobytes()
    barrier.wait()
    start = time.perf_counter()
    payload = 0
    for _ in range(n):
        if phase == "get":
            sock.sendall(b"G")
            (size,) = struct.unpack("<Q", _recv_exact(sock, 8))
            np.frombuffer(_recv_exact(sock, size), np.float32)
            payload += size
        else:
            sock.sendall(b"P" + struct.pack("<Q", len(body)))
            sock.sendall(body)
            _recv_exact(sock, 1)
            payload += len(body)
    out.put((time.perf_counter() - start, payload, n, start))
    sock.close()


def run_phase(target, port, phase, n, rows, dim, procs):
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(procs), ctx.Queue()
    workers = [ctx.Process(target=target, args=(port, phase, n, rows, dim, barrier, out)) for _ in range(procs)]
    for w in workers:
        w.start()
    results = [out.get() for _ in workers]
    for w in workers:
        w.join()
    starts = [r[3] for r in results]
    wall = max(r[3] + r[0] for r in results) - min(starts)
    payload = sum(r[1] for r in results)
    requests_done = sum(r[2] for r in results)
    return {"req/s": requests_done / wall, "MB/s": payload / wall / 1e6, "wall": wall}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20, help="requests per client process and phase")
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--procs", type=int, default=2)
    args = parser.parse_args(argv)

    store, dd_server, dd_endpoint = start_deepdist(args.rows, args.dim)
    payload = store.model["w"].tobytes()
    flask_server = start_raw_flask(payload)
    raw_server = start_raw_socket(payload)
    raw_port = raw_server.server_address[1]

    rows = []
    common = (args.requests, args.rows, args.dim, args.procs)
    for phase in ("get", "post", "get-rows", "post-rows"):
        result = run_phase(client_deepdist, dd_endpoint, phase, *common)
        store.drain()
        rows.append(("deepdist", phase, result))
    tls_store, tls_server, tls_endpoint = start_deepdist(args.rows, args.dim, use_tls=True)
    for phase in ("get", "post", "get-rows", "post-rows"):
        result = run_phase(client_deepdist, tls_endpoint, phase, *common)
        tls_store.drain()
        rows.append(("deepdist TLS", phase, result))
    tls_server.stop()
    tls_store.stop()
    for phase in ("get", "post"):
        rows.append(("raw-bytes Flask", phase, run_phase(client_raw_flask, flask_server.port, phase, *common)))
        rows.append(("raw socket", phase, run_phase(client_raw_socket, raw_port, phase, *common)))

    mb = args.rows * args.dim * 4 / 1e6
    print(f"\nModel {args.rows:,} x {args.dim} float32 = {mb:.1f} MB; sparse = 5% of rows "
          f"({mb / 20:.2f} MB); {args.procs} client processes x {args.requests} requests per phase\n")
    print(f"{'server':<17}{'phase':<11}{'req/s':>9}{'MB/s':>10}")
    for name, phase, r in rows:
        print(f"{name:<17}{phase:<11}{r['req/s']:>9.1f}{r['MB/s']:>10.0f}")
    by = {(n, p): r for n, p, r in rows}
    print("\nRatios (deepdist / baseline, MB/s):")
    for phase in ("get", "post"):
        for base in ("raw socket", "raw-bytes Flask"):
            ratio = by[("deepdist", phase)]["MB/s"] / by[(base, phase)]["MB/s"]
            print(f"  {phase:<5} vs {base:<16} {ratio:5.2f}x")
    print("\nTLS cost (deepdist TLS / deepdist, MB/s):")
    for phase in ("get", "post", "get-rows", "post-rows"):
        ratio = by[("deepdist TLS", phase)]["MB/s"] / by[("deepdist", phase)]["MB/s"]
        print(f"  {phase:<10} {ratio:5.2f}x")
    target = by[("deepdist", "get")]["MB/s"] / by[("raw socket", "get")]["MB/s"]
    print(f"\nTarget: model GET >= 0.5x the raw socket's MB/s -> {target:.2f}x "
          f"({'met' if target >= 0.5 else 'NOT met'})")
    status = store.status()
    print(f"server: {status['updates_applied']} updates applied, {status['updates_rejected']} rejected, "
          f"{status['bytes_out'] / 1e9:.2f} GB out, {status['bytes_in'] / 1e9:.2f} GB in")

    dd_server.stop()
    store.stop()
    flask_server.stop()
    raw_server.shutdown()


if __name__ == "__main__":
    main()
