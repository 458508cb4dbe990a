"""Fuzz a live model server on 127.0.0.1 with hostile POST /update bodies and print what it answered.

    .venv/bin/python benchmarks/fuzz_server.py [--frames 20000] [--seed 0]

Sends ``--frames`` bodies, about a quarter of each kind:

* mutated valid updates: bit flips, cuts, inserted bytes, int64 extremes written over any 8 bytes;
* random bytes, half of them behind the right magic;
* hostile headers: nesting up to 100,000 deep, integers of 400 and 5,000 digits, shapes with 2**63
  and 2**64, header lengths past the body or near 2**32, NaN and Infinity, unknown dtypes and kinds,
  ``rows`` beyond int64, meta fields of the wrong type or out of int64;
* well-formed updates the model's dtypes cannot hold (1e300 into float32, 2**40 into int32) or that
  break its rules (rows out of range, wrong shapes, NaN values).

Each goes to ``/update``, ``/update?then=rows`` or ``/update?since=0``. It then checks that no answer
was a 5xx, that the server and applier threads are alive, and that the model is bit for bit the
initial one plus the accepted updates replayed in order: a refused body changed nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import logging
import random
import struct
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deepdist import wire  # noqa: E402
from deepdist.errors import InvalidUpdateError, WireFormatError  # noqa: E402
from deepdist.optim import add  # noqa: E402
from deepdist.server import ServerThread, create_app  # noqa: E402
from deepdist.sparse import SparseRows  # noqa: E402
from deepdist.store import ParameterStore  # noqa: E402

SECRET = "fuzz-secret"
HEADERS = {"Authorization": f"Bearer {SECRET}", "Content-Type": wire.CONTENT_TYPE}
PATHS = ("/update", "/update?then=rows", "/update?since=0")
INT64_EXTREMES = (-1, 0, 2**31, 2**62, 2**63 - 1, -2**63, 0x7FF0000000000000, 0x7FF8000000000001)
HOSTILE_INTS = (-1, 0, 2**31, 2**32, 2**62, 2**63, 2**64, -2**63 - 1, 10**30, 10**400)
HOSTILE_VALUES = HOSTILE_INTS + (None, True, "", "float32", [], {}, 0.5, 1e308)


def initial_model() -> dict:
    return {"w": np.arange(12, dtype=np.float32).reshape(4, 3), "c": np.arange(5, dtype=np.int32)}


def checksum(model: dict) -> str:
    digest = hashlib.sha256()
    for name in sorted(model):
        digest.update(name.encode() + np.ascontiguousarray(model[name]).tobytes())
    return digest.hexdigest()[:16]


def frame(header, data: bytes = b"", header_len: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    size = len(raw) if header_len is None else header_len
    return struct.pack("<4sI", b"DDW1", size) + raw + b"\0" * (-len(raw) % 8) + data


def meta(rng: random.Random) -> dict:
    return {"version": 0, "epoch": 0, "partition": rng.randrange(-1, 4), "attempt": 0,
            "seq": rng.randrange(0, 1 << 20), "metrics": {"loss": rng.random()}}


def valid_update(rng: random.Random) -> bytes:
    choice = rng.randrange(4)
    if choice == 0:
        arrays = {"w": np.float32(rng.uniform(-1, 1)) * np.ones((4, 3), np.float32)}
    elif choice == 1:
        k = rng.randrange(0, 4)
        arrays = {"w": SparseRows(np.array([rng.randrange(4) for _ in range(k)], np.int64),
                                  np.ones((k, 3), np.float64), (4, 3))}
    elif choice == 2:
        arrays = {"c": np.array([rng.randrange(-9, 10) for _ in range(5)], np.int64)}
    else:
        arrays = {"c": SparseRows(np.array([rng.randrange(5)], np.int32), np.array([1], np.int32), (5,)),
                  "pull:w": np.array([0, 3], np.int32)}
    return wire.encode(arrays, meta(rng))


def mutated(rng: random.Random) -> bytes:
    body = bytearray(valid_update(rng))
    for _ in range(rng.randrange(1, 5)):
        at = rng.randrange(0, len(body) + 1)
        op = rng.randrange(4)
        if op == 0 and at < len(body):
            body[at] ^= 1 << rng.randrange(8)
        elif op == 1:
            del body[at:at + rng.randrange(1, 65)]
        elif op == 2:
            body[at:at] = rng.randbytes(rng.randrange(1, 17))
        else:
            body[at:at + 8] = struct.pack("<q", rng.choice(INT64_EXTREMES))
    return bytes(body)


def random_bytes(rng: random.Random) -> bytes:
    body = rng.randbytes(rng.randrange(0, 512))
    return b"DDW1" + body if rng.random() < 0.5 else body


def _entry(rng: random.Random) -> dict:
    entry = {"name": rng.choice(["w", "c", "pull:w", "x", "", "\ud800"]),
             "kind": rng.choice(["dense", "rows", "sparse", "pickle"]),
             "dtype": rng.choice(["float32", "float64", "int32", "int64", "uint8", "object", "<f4", "complex64"]),
             "shape": [rng.choice((0, 1, 3, 4, 5) + HOSTILE_INTS[:-1]) for _ in range(rng.randrange(0, 5))],
             "rows": rng.choice((0, 1, 2) + HOSTILE_INTS[:-1]),
             "index_dtype": rng.choice(["int32", "int64", "float32", None])}
    for key in rng.sample(sorted(entry), rng.randrange(0, 3)):
        entry[key] = rng.choice(HOSTILE_VALUES)
    return entry


def hostile_header(rng: random.Random) -> bytes:
    choice = rng.randrange(10)
    data = rng.choice([b"", b"\0" * 8, b"\0" * 48, b"\xff" * 64])
    if choice == 0:    # deep nesting, in the entries or in meta
        depth = rng.choice([900, 1100, 10_000, 100_000])
        inner = b"[" * depth + b"]" * depth
        raw = rng.choice([inner, b'{"entries":' + inner + b"}", b'{"entries":[],"meta":{"a":' + inner + b"}}"])
        return frame(raw, data)
    if choice == 1:    # integers of hundreds and thousands of digits
        digits = rng.choice([b"9" * 400, b"9" * 5000, b"-" + b"9" * 400])
        raw = rng.choice([b'{"meta":{"version":' + digits + b'},"entries":[]}',
                          b'{"meta":{"version":0,"metrics":{"l":' + digits + b'}},"entries":[]}',
                          b'{"entries":[{"name":"w","kind":"dense","dtype":"float32","shape":[' + digits + b"]}]}"])
        return frame(raw, data)
    if choice == 2:    # NaN and Infinity where numbers go
        constant = rng.choice([b"NaN", b"Infinity", b"-Infinity"])
        raw = rng.choice([b'{"meta":{"version":' + constant + b'},"entries":[]}',
                          b'{"meta":{"version":0,"metrics":{"l":' + constant + b'}},"entries":[]}',
                          b'{"entries":[{"name":"w","kind":"dense","dtype":"float32","shape":[' + constant + b"]}]}"])
        return frame(raw, data)
    if choice == 3:    # header lengths that point past the body, or near 2**32
        header = json.dumps({"meta": meta(rng), "entries": [_entry(rng)]}).encode()
        return frame(header, data, header_len=rng.choice([len(header) + 1, len(header) + 4096, 2**20,
                                                          2**20 + 1, 2**31, 2**32 - 1, 0]))
    if choice == 4:    # meta fields of the wrong type or beyond int64
        bad = meta(rng)
        bad[rng.choice(["version", "epoch", "partition", "attempt", "seq", "metrics"])] = rng.choice(HOSTILE_VALUES)
        return frame({"meta": bad, "entries": [{"name": "w", "kind": "dense", "dtype": "float32",
                                                "shape": [4, 3]}]}, b"\0" * 48)
    header = {"meta": meta(rng), "entries": [_entry(rng) for _ in range(rng.randrange(1, 4))]}
    if rng.random() < 0.2:
        header = rng.choice([[], "entries", {"entries": {}}, {"meta": [], "entries": []}, {"entries": None}])
    return frame(header, data)


def unrepresentable(rng: random.Random) -> bytes:
    """Well-formed frames whose values or indices the model must refuse."""
    choice = rng.randrange(8)
    m = meta(rng)
    if choice == 0:
        arrays = {"w": np.full((4, 3), rng.choice([1e300, -1e39, 3.5e38, 1e308]))}
    elif choice == 1:
        arrays = {"w": SparseRows(np.array([1]), np.array([[0.0, rng.choice([4e38, -1e300]), 0.0]]), (4, 3))}
    elif choice == 2:
        arrays = {"c": np.full(5, rng.choice([2**40 + 7, 2**31, -2**31 - 1, 2**63 - 1]), np.int64)}
    elif choice == 3:
        arrays = {"c": SparseRows(np.array([2]), np.array([rng.choice([2**31, -2**40])], np.int64), (5,))}
    elif choice == 4:
        arrays = {"w": np.full((4, 3), rng.choice([np.nan, np.inf, -np.inf]), rng.choice([np.float32, np.float64]))}
    elif choice == 5:
        arrays = {"w": SparseRows(np.array([rng.choice([-1, 4, 2**31 - 1, -2**31])], np.int64),
                                  np.ones((1, 3), np.float32), (4, 3))}
    elif choice == 6:
        arrays = {"c": np.ones(5, np.float64)}                      # float into an integer parameter
    else:
        arrays = {"w": np.ones(rng.choice([(3, 4), (12,), (4, 3, 1), ()]), np.float32)}
    return wire.encode(arrays, m)


KINDS = {"mutated valid frame": mutated, "random bytes": random_bytes,
         "hostile JSON header": hostile_header, "value the dtype cannot hold": unrepresentable}


def replay(accepted: list, spec) -> tuple[dict, int]:
    """The model the accepted bodies make, applied in order as the store applies them."""
    model, seen, applied = initial_model(), set(), 0
    for body in accepted:
        frame_ = wire.decode(body)
        info = wire.parse_update_meta(frame_.meta)
        update, _ = wire.split_row_request(frame_)
        key = (info.epoch, info.partition, info.attempt, info.seq)
        if info.partition >= 0 and key in seen:     # the store drops a repeated sender sequence number
            continue
        seen.add(key)
        add(model, wire.validate_update(update, spec))
        applied += 1
    return model, applied


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    # every refusal is logged as a warning: 20,000 of them would bury the table; errors still show
    logging.basicConfig(level=logging.ERROR)
    rng = random.Random(args.seed)

    store = ParameterStore(initial_model())
    store.set_descent(add)
    store.start()
    server = ServerThread(create_app(store, SECRET, 1 << 20), "127.0.0.1", 0)
    server.start()
    before = checksum(initial_model())
    by_kind: dict = defaultdict(Counter)
    accepted, five_xx, reconnects = [], [], 0
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    started = time.monotonic()
    try:
        names = list(KINDS)
        for i in range(args.frames):
            kind = names[i % len(names)]
            body, path = KINDS[kind](rng), rng.choice(PATHS)
            conn.request("POST", path, body=body, headers=HEADERS)
            response = conn.getresponse()
            answer = response.read()
            by_kind[kind][f"{response.status // 100}xx"] += 1
            if response.status >= 500:
                five_xx.append((kind, path, response.status, answer[:200], body[:200]))
            elif response.status == 202:
                accepted.append(body)
            if response.will_close:
                conn.close()
                reconnects += 1
        elapsed = time.monotonic() - started
        store.drain(timeout=60)
        threads_alive = server.alive and store.alive and store.error is None
        after = checksum(store.params)
        finite = all(np.isfinite(a).all() for a in store.params.values())
        expected, applied = replay(accepted, store.spec)
        # a decoder that let any of them through would fail here: the accepted ones must all decode
        for body in accepted:
            try:
                wire.decode(body)
            except (WireFormatError, InvalidUpdateError):
                five_xx.append(("accepted but malformed", "", 202, b"", body[:200]))
        health = json.loads(_get(server.port, "/health"))["ok"]
    finally:
        conn.close()
        server.stop()
        store.stop()

    total = Counter()
    print(f"{'kind of frame':<30}{'sent':>8}{'2xx':>8}{'4xx':>8}{'5xx':>8}")
    for kind in KINDS:
        counts = by_kind[kind]
        total.update(counts)
        print(f"{kind:<30}{sum(counts.values()):>8,}{counts['2xx']:>8,}{counts['4xx']:>8,}{counts['5xx']:>8,}")
    print(f"{'all':<30}{sum(total.values()):>8,}{total['2xx']:>8,}{total['4xx']:>8,}{total['5xx']:>8,}")
    print()
    unchanged = after == checksum(expected) and store.version == applied
    rows = [("frames sent", f"{sum(total.values()):,} in {elapsed:.1f} s (seed {args.seed})"),
            ("responses 5xx", f"{total['5xx']:,}"),
            ("server and applier threads alive", "yes" if threads_alive else "NO"),
            ("server answers /health afterwards", "yes" if health else "NO"),
            ("connections the server closed", f"{reconnects:,}"),
            ("updates accepted (202) and applied", f"{len(accepted):,} accepted, {applied:,} applied "
                                                   f"(repeats dropped as duplicates)"),
            ("model checksum before / after", f"{before} / {after}"),
            ("model = initial + accepted updates replayed", "yes (bit for bit)" if unchanged else "NO"),
            ("refused frames that touched the model", "0" if unchanged else "SOME"),
            ("model values all finite", "yes" if finite else "NO (an accepted update overflowed)")]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    for kind, path, status, answer, body in five_xx[:10]:
        print(f"5xx: {kind} {path} {status} {answer!r} body={body!r}")
    return 0 if not five_xx and threads_alive and unchanged and health else 1


def _get(port: int, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=HEADERS)
        return conn.getresponse().read()
    finally:
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
