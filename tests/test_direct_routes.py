"""The binary routes served without Flask (deepdist.direct_routes) answer as the Flask routes do.

Two live servers on loopback over twin stores: one with the direct path (the default), one
with every request through the Flask app (``direct=None``). The same requests, good and bad,
must get the same status, the same error and the same frames, and leave the same model.
"""

import http.client
import threading

import numpy as np
import pytest

from deepdist import ModelClient, wire
from deepdist.optim import add
from deepdist.server import ServerThread, create_app
from deepdist.sparse import SparseRows
from deepdist.store import ParameterStore

SECRET = "direct-secret"
AUTH = {"Authorization": f"Bearer {SECRET}", "Content-Type": wire.CONTENT_TYPE}
LIMIT = 1 << 16


class _CountingWSGI:
    """The Flask app's WSGI callable, counting the requests that reach it."""

    def __init__(self, wsgi_app):
        self.wsgi_app, self.calls = wsgi_app, []

    def __call__(self, environ, start_response):
        self.calls.append((environ["REQUEST_METHOD"], environ["PATH_INFO"]))
        return self.wsgi_app(environ, start_response)


class Served:
    def __init__(self, direct: bool):
        model = {"c": np.zeros((6, 2), np.int32), "t": np.zeros(3, np.int64), "w": np.arange(8, dtype=np.float32)}
        self.store = ParameterStore(model)
        self.store.set_descent(add, additive=True)
        self.store.start()
        app = create_app(self.store, SECRET, LIMIT)
        self.flask = app.wsgi_app = _CountingWSGI(app.wsgi_app)
        self.thread = ServerThread(app, "127.0.0.1", 0, **({} if direct else {"direct": None}))
        self.thread.start()
        self.conn = http.client.HTTPConnection("127.0.0.1", self.thread.port, timeout=10)

    def ask(self, method, target, body=None, headers=AUTH):
        self.conn.request(method, target, body=body, headers=headers)
        response = self.conn.getresponse()
        content = response.read()
        if response.will_close:
            self.conn.close()
        return response.status, response.getheader("Content-Type"), content, response.getheader("Retry-After")

    def stop(self):
        self.conn.close()
        self.thread.stop()
        self.store.stop()


@pytest.fixture
def twins():
    direct, flask = Served(direct=True), Served(direct=False)
    yield direct, flask
    direct.stop()
    flask.stop()


def _push(arrays, seq, partition=0, attempt=0, version=0, **pull):
    meta = wire.UpdateMeta(version=version, partition=partition, attempt=attempt, seq=seq).to_json()
    return wire.encode({**arrays, **{wire.PULL_PREFIX + n: r for n, r in pull.items()}}, meta)


def _same(direct, flask, method, target, body=None, headers=AUTH):
    """Ask both servers; the answers must match (frames by their meta and arrays)."""
    a, b = direct.ask(method, target, body, headers), flask.ask(method, target, body, headers)
    assert a[0] == b[0], (target, a, b)
    assert a[1] == b[1] and a[3] == b[3], (target, a[1], b[1], a[3], b[3])
    if a[1] == wire.CONTENT_TYPE:
        fa, fb = wire.decode(a[2]), wire.decode(b[2])
        assert fa.meta == fb.meta and fa.arrays.keys() == fb.arrays.keys()
        for name in fa.arrays:
            x, y = fa.arrays[name], fb.arrays[name]
            if isinstance(x, SparseRows):
                np.testing.assert_array_equal(x.indices, y.indices)
                x, y = x.values, y.values
            np.testing.assert_array_equal(x, y)
    else:
        assert a[2] == b[2], (target, a[2], b[2])
    return a


def test_good_requests_get_the_same_answers_and_skip_flask(twins):
    direct, flask = twins
    rows = SparseRows(np.array([1, 4], np.int32), np.array([[1, 2], [3, 4]], np.int32), (6, 2))
    totals = SparseRows(np.arange(3, dtype=np.int32), np.array([1, 1, 1], np.int64), (3,))
    assert _same(direct, flask, "POST", "/update", _push({"c": rows, "t": totals}, 0))[0] == 202
    for served in twins:
        served.store.drain()
    # another partition's push, answered with the first one's change
    status, _, content, _ = _same(direct, flask, "POST", "/update?since=0", _push({"c": rows}, 0, partition=1))
    assert status == 202 and wire.decode(content).meta["full"] is False
    _same(direct, flask, "POST", "/update?then=rows", _push({"t": totals}, 1, c=np.array([4, 1], np.int32)))
    _same(direct, flask, "GET", "/changes?since=1&partition=0&attempt=0")
    _same(direct, flask, "GET", "/model")
    _same(direct, flask, "GET", "/model?names=c,t&after=0:0:0:1")
    _same(direct, flask, "POST", "/model", wire.encode({"w": np.array([7, 0], np.int64)}))
    _same(direct, flask, "POST", "/model?wait=w&at_least=0&timeout=1", wire.encode({"w": np.array([3], np.int32)}))
    for served in twins:
        served.store.drain()
        np.testing.assert_array_equal(served.store.model["c"], direct.store.model["c"])
    assert direct.store.model["c"][4].tolist() == [6, 8] and direct.store.model["t"].tolist() == [2, 2, 2]
    assert direct.flask.calls == []  # every one of them answered without Flask
    assert len(flask.flask.calls) == 8


BAD = [
    ("POST", "/update?then=cols", lambda: _push({"t": np.ones(3, np.int64)}, 0)),
    ("POST", "/update?since=x", lambda: _push({"t": np.ones(3, np.int64)}, 0)),
    ("POST", "/update", lambda: b"DDW1 not a frame"),
    ("POST", "/update", lambda: _push({"nope": np.ones(3, np.int64)}, 0)),
    ("POST", "/update", lambda: _push({"c": np.ones((6, 2), np.float32)}, 0)),
    ("POST", "/update", lambda: _push({"c": np.full((6, 2), 2 ** 40, np.int64)}, 0)),  # wraps in c's int32
    ("POST", "/update", lambda: _push({"c": SparseRows(np.array([9]), np.ones((1, 2), np.int32), (6, 2))}, 0)),
    ("POST", "/update", lambda: _push({"w": np.full(8, np.nan, np.float32)}, 0)),
    ("POST", "/update", lambda: b"\0" * (LIMIT + 1)),                                  # over the limit: 413
    ("POST", "/update?then=rows", lambda: _push({"t": np.ones(3, np.int64)}, 0, c=np.array([6], np.int32))),
    ("GET", "/changes?since=0&partition=0", lambda: None),
    ("GET", "/changes?since=0&partition=a&attempt=0", lambda: None),
    ("GET", "/model?names=c,nope", lambda: None),
    ("GET", "/model?after=1:2", lambda: None),
    ("POST", "/model", lambda: wire.encode({"c": np.array([[1]], np.int32)})),
    ("POST", "/model?wait=nope&at_least=1&timeout=1", lambda: wire.encode({"c": np.array([1], np.int32)})),
    ("POST", "/model?wait=w&at_least=1&timeout=99999", lambda: wire.encode({"c": np.array([1], np.int32)})),
    ("POST", "/model?wait=w&at_least=x&timeout=1", lambda: wire.encode({"c": np.array([1], np.int32)})),
    ("PUT", "/update", lambda: b""),                                                    # 405, from Flask
    ("GET", "/update/", lambda: None),                                                  # 404, from Flask
]


@pytest.mark.parametrize("method, target, body", BAD, ids=[f"{m} {t}" for m, t, _ in BAD])
def test_bad_requests_get_the_same_refusals(twins, method, target, body):
    direct, flask = twins
    status = _same(direct, flask, method, target, body())[0]
    assert 400 <= status < 500
    for served in twins:
        served.store.drain()
        assert served.store.version == 0
    assert direct.store.status()["rejected_by_reason"] == flask.store.status()["rejected_by_reason"]


def test_without_the_secret_the_direct_path_leaves_the_refusal_to_bearer_auth(twins):
    direct, flask = twins
    body = _push({"t": np.ones(3, np.int64)}, 0)
    for headers, code in (({}, 401), ({"Authorization": "Bearer wrong"}, 403), ({"Authorization": SECRET}, 403)):
        status, _, content, _ = _same(direct, flask, "POST", "/update?since=0", body, headers)
        assert status == code and b"error" in content
    assert direct.store.version == 0 and direct.store.status()["updates_received"] == 0


def test_a_full_queue_is_a_503_with_retry_after(twins):
    direct, _ = twins
    direct.store.config.backpressure_timeout = 0.0
    blocker = threading.Event()
    direct.store.set_descent(lambda model, update: blocker.wait(10), additive=True)
    try:
        answers = [direct.ask("POST", "/update", _push({"t": np.ones(3, np.int64)}, seq))
                   for seq in range(direct.store.config.queue_size + 3)]
    finally:
        blocker.set()
    full = [a for a in answers if a[0] == 503]
    assert full and full[0][3] == "1" and b"retry later" in full[0][2]


def test_the_model_client_works_through_the_direct_path(twins):
    direct, _ = twins
    client = ModelClient(f"http://127.0.0.1:{direct.thread.port}", SECRET)
    update = {"c": SparseRows(np.array([2], np.int32), np.array([[5, 6]], np.int32), (6, 2))}
    _, version, changes = client.push_pull_changes(update, wire.UpdateMeta(version=0, partition=3, seq=0), 0)
    assert changes == {}  # no other partition pushed
    _, version, rows = client.push_pull_rows(update, wire.UpdateMeta(version=0, partition=3, seq=1), {"c": [2]})
    assert rows["c"].values.tolist() == [[10, 12]]
    assert client.pull_changes(0, 4, 0)[1]["c"].values.sum() == 22
    assert direct.flask.calls == []


def test_a_superseded_attempt_gets_the_same_409(twins):
    direct, flask = twins
    update = {"t": SparseRows(np.arange(3, dtype=np.int32), np.ones(3, np.int64), (3,))}
    assert _same(direct, flask, "POST", "/update", _push(update, 0, attempt=1))[0] == 202
    status, _, content, _ = _same(direct, flask, "POST", "/update?since=0", _push(update, 0, attempt=0))
    assert status == 409 and b"superseded" in content


def test_a_failing_direct_handler_is_a_clean_500_and_the_server_goes_on():
    store = ParameterStore({"w": np.zeros(3)})
    failing = {"calls": 0}

    def direct(request, body):
        failing["calls"] += 1
        if failing["calls"] == 1:
            raise RuntimeError("boom")
        return None  # then: to the app

    thread = ServerThread(create_app(store, SECRET, LIMIT), "127.0.0.1", 0, direct=direct)
    thread.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", thread.port, timeout=10)
        conn.request("GET", "/health", headers=AUTH)
        response = conn.getresponse()
        assert response.status == 500 and response.read() == b"internal error" and response.will_close
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", thread.port, timeout=10)
        conn.request("GET", "/health", headers=AUTH)
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        thread.stop()
        store.stop()


def test_send_parts_delivers_every_byte_in_order_through_partial_sends():
    import socket
    import time

    from deepdist.http_request import send_parts

    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 256, size, dtype=np.uint8).tobytes() for size in (0, 1, 7, 300_000, 5, 2_000_000, 64)]
    parts.append(memoryview(np.arange(1000, dtype=np.int32)).cast("B"))
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # many partial sends
    got = bytearray()

    def read():
        while chunk := b.recv(1 << 16):
            got.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    send_parts(a, parts, time.monotonic() + 30)
    a.close()
    reader.join(30)
    b.close()
    assert bytes(got) == b"".join(bytes(p) for p in parts)
