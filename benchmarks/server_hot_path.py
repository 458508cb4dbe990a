"""Where the model server's CPU goes in one Gibbs exchange, piece by piece, in one process.

``benchmarks/server_scale.py`` measures the whole server (its process's CPU over many
exchanges, and by thread). This takes one exchange apart, as the server runs it, and times
each piece alone with ``time.thread_time`` (the median of ``--repeat`` runs): a
``POST /update?since=V`` of a 50,000-entry count delta whose answer holds another partition's
delta of the same size.

* I/O thread: parsing the request head;
* request thread: reading the body off a socket, the dispatch (the Flask app around the same
  handler, or the direct route), decoding the frame, checking it against the model, queueing
  it, the ``/changes`` answer (merging the log's entries, encoding the frame) and sending it;
* applier thread: the attempt ledger's booking, the descent (``optim.add``), the change log.

The dispatch is what a route costs beyond the pieces it calls: the time of the whole request
through Flask (or the direct route), less the pieces measured alone.

    python benchmarks/server_hot_path.py [--entries 50000] [--repeat 300]
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deepdist import wire  # noqa: E402
from deepdist.changelog import ChangeLog  # noqa: E402
from deepdist.direct_routes import DirectRoutes  # noqa: E402
from deepdist.http_request import RequestBody, parse_head  # noqa: E402
from deepdist.http_workers import make_environ, run_app  # noqa: E402
from deepdist.lda.gibbs_task import _coo  # noqa: E402
from deepdist.ledger import AttemptLedger  # noqa: E402
from deepdist.optim import add  # noqa: E402
from deepdist.server import create_app  # noqa: E402
from deepdist.store import ParameterStore  # noqa: E402

SECRET = "bench-secret"


class _Conn:
    """What RequestBody reads from: a socket and the bytes that came with the head (none)."""

    def __init__(self, sock):
        self.sock, self.buf, self.address = sock, bytearray(), ("127.0.0.1", 0)


def _loaded(body: bytes):
    """A socket with ``body`` on its way in (sent from a thread: it outgrows the buffers)."""
    a, b = socket.socketpair()
    threading.Thread(target=b.sendall, args=(body,), daemon=True).start()
    return a, b


def _model(words, topics):
    word_topic = np.zeros((words, topics), np.int32)
    return {"word_topic": word_topic, "topic_totals": np.zeros(topics, np.int64), "word_topic_flat": word_topic.reshape(-1)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--words", type=int, default=4806)
    p.add_argument("--topics", type=int, default=100)
    p.add_argument("--entries", type=int, default=50_000)
    p.add_argument("--repeat", type=int, default=300)
    args = p.parse_args(argv)
    V, K = args.words, args.topics
    rng = np.random.default_rng(0)

    def delta():
        index = np.sort(rng.choice(V * K, args.entries, replace=False)).astype(np.int64)
        return _coo(index, rng.choice(np.array([-2, -1, 1, 2], np.int32), args.entries), V * K, K)

    mine, other = delta(), delta()
    times: dict = {}

    def timed(name, fn, *a):
        t0 = time.thread_time()
        out = fn(*a)
        times.setdefault(name, []).append(time.thread_time() - t0)
        return out

    # the pieces, alone
    model, spec_store = _model(V, K), ParameterStore(_model(V, K))
    spec = spec_store.spec
    ledger, log = AttemptLedger(), ChangeLog(limit_bytes=spec.nbytes)
    left, right = socket.socketpair()
    left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    right.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sink = threading.Thread(target=lambda: [None for _ in iter(lambda: right.recv(1 << 20), b"")], daemon=True)
    for seq in range(args.repeat):
        body = wire.encode(mine, wire.UpdateMeta(version=seq, partition=0, seq=seq).to_json())
        head = (f"POST /update?since={seq} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                f"Authorization: Bearer {SECRET}\r\nContent-Type: {wire.CONTENT_TYPE}").encode()
        timed("I/O: parse the head", parse_head, head)
        a, b = _loaded(body)
        timed("request: read the body (a copy: Flask)", RequestBody(_Conn(a), len(body), False,
                                                                  time.monotonic() + 10).read, len(body))
        a.close(), b.close()
        a, b = _loaded(body)
        data = timed("request: read the body (a view: direct)", RequestBody(_Conn(a), len(body), False,
                                                                      time.monotonic() + 10).read, len(body), True)
        a.close(), b.close()
        frame = timed("request: decode", wire.decode, data)
        meta = timed("request: check (meta)", wire.parse_update_meta, frame.meta)
        update = timed("request: check (arrays)", wire.validate_update, frame, spec)
        timed("applier: ledger", ledger.record, 0, 0, 0, update)
        timed("applier: descent (add)", add, model, update)
        log.reset(seq)
        log.append((1, 0), other)
        merged = timed("request: /changes merge", log.since, seq, 0, 0)
        part = merged["word_topic_flat"]
        timed("request: /changes merge (before: concatenated)", lambda: [np.concatenate([p]) for p in
                                                                         (part.indices, part.values)])
        answer_meta = {"version": seq + 1, "epoch": 0, "full": False}
        answer = timed("request: /changes encode (joined: Flask)", wire.encode, merged, answer_meta)
        timed("request: /changes encode (parts: direct)", wire.encode_parts, merged, answer_meta)
        if seq == 0:
            sink.start()
        timed("request: send the answer", left.sendall, answer)
        del meta
    left.close()

    # whole requests through each route (a store that applies them, as served)
    for route in ("flask", "direct"):
        store = ParameterStore(_model(V, K))
        store.set_descent(add, additive=True)
        store.start()
        app = create_app(store, SECRET, 1 << 30)
        routes = DirectRoutes(store, SECRET, 1 << 30)
        for seq in range(args.repeat):
            store.drain()
            with store.lock:  # the other partition's delta, in the log for the answer
                store._changelog.reset(store.version)
                store._changelog.append((1, 0), other)
            version = store.version
            body = wire.encode(mine, wire.UpdateMeta(version=version, partition=0, seq=seq).to_json())
            head = (f"POST /update?since={version} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                    f"Authorization: Bearer {SECRET}\r\nContent-Type: {wire.CONTENT_TYPE}").encode()
            request = parse_head(head)
            a, b = _loaded(body)
            reader = RequestBody(_Conn(a), len(body), False, time.monotonic() + 10)
            if route == "flask":
                t0 = time.thread_time()
                environ = make_environ(("127.0.0.1", 0), "http", ("127.0.0.1", 0), request, reader)
                status = run_app(app, environ, request)[0]
            else:
                t0 = time.thread_time()
                status = routes(request, reader)[0]
            times.setdefault(f"whole request: {route}", []).append(time.thread_time() - t0)
            a.close(), b.close()
            assert status.startswith("202"), status
        store.stop()

    ms = {name: float(np.median(v)) * 1e3 for name, v in times.items()}
    shared = sum(v for k, v in ms.items() if k.startswith("request:") and "(" not in k and "send" not in k)
    handler = {"flask": shared + ms["request: read the body (a copy: Flask)"] + ms["request: /changes encode (joined: Flask)"],
               "direct": shared + ms["request: read the body (a view: direct)"] + ms["request: /changes encode (parts: direct)"]}
    print(f"# server_hot_path: one POST /update?since= of {args.entries:,} entries (V={V:,}, K={K}), "
          f"answered with another {args.entries:,}; median of {args.repeat}\n")
    print("| piece | CPU ms |")
    print("|---|---|")
    for name, value in ms.items():
        if not name.startswith("whole"):
            print(f"| {name} | {value:.3f} |")
    for route in ("flask", "direct"):
        whole = ms[f"whole request: {route}"]
        print(f"| request: dispatch and queueing, {route} (its whole request, {whole:.3f}, less its pieces above) | "
              f"{max(0.0, whole - handler[route]):.3f} |")


if __name__ == "__main__":
    main()
