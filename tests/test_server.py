"""The HTTP layer, through Flask's test client: authentication and hostile input."""

import os
import pickle

import numpy as np
import pytest

from deepdist import wire
from deepdist.optim import add
from deepdist.server import create_app
from deepdist.sparse import SparseRows
from deepdist.store import ParameterStore

SECRET = "test-secret"
AUTH = {"Authorization": f"Bearer {SECRET}"}


class _MakeFile:
    """A pickle that would create a file when unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def served():
    model = {"w": np.arange(12, dtype=np.float32).reshape(4, 3), "c": np.zeros(5, np.int64)}
    store = ParameterStore(model)
    store.set_descent(add)
    store.start()
    app = create_app(store, SECRET, max_body_bytes=64 * 1024)
    yield store, app.test_client()
    store.stop()


def _update(arrays, version=0, **meta):
    return wire.encode(arrays, {"version": version, **meta})


def test_health_and_status_need_the_secret(served):
    store, client = served
    assert client.get("/health").status_code == 401
    assert client.get("/health", headers={"Authorization": "Bearer nope"}).status_code == 403
    assert client.get("/status", headers={"Authorization": SECRET}).status_code == 403
    assert client.get("/health", headers=AUTH).json["ok"] is True
    assert client.get("/status", headers=AUTH).json["version"] == 0


def test_model_round_trip_and_selected_rows(served):
    store, client = served
    response = client.get("/model", headers=AUTH)
    frame = wire.decode(response.data)
    np.testing.assert_array_equal(frame.arrays["w"], store.model["w"])
    assert frame.meta["version"] == 0
    only_c = wire.decode(client.get("/model?names=c", headers=AUTH).data)
    assert list(only_c.arrays) == ["c"]
    rows = wire.decode(client.post("/model", headers=AUTH,
                                   data=wire.encode({"w": np.array([3, 1])})).data)
    np.testing.assert_array_equal(rows.arrays["w"].values, store.model["w"][[3, 1]])
    assert client.get("/model?names=zzz", headers=AUTH).status_code == 400
    assert client.post("/model", headers=AUTH, data=wire.encode({"w": np.array([9])})).status_code == 400


def test_good_update_is_applied(served):
    store, client = served
    response = client.post("/update", headers=AUTH,
                           data=_update({"c": SparseRows(np.array([1, 1]), np.array([2, 3]), (5,))}, partition=0))
    assert response.status_code == 202
    store.drain()
    assert store.model["c"].tolist() == [0, 5, 0, 0, 0]


def _hostile_bodies(tmp_path):
    good = _update({"w": np.ones((4, 3), np.float32)})
    marker = tmp_path / "pwned"
    return marker, {
        "garbage": os.urandom(200),
        "empty": b"",
        "truncated frame": good[: len(good) - 5],
        "truncated header": good[:12],
        "wrong name": _update({"nope": np.ones((4, 3), np.float32)}),
        "wrong dtype": _update({"c": np.ones(5, np.float64)}),
        "wrong shape": _update({"w": np.ones((3, 4), np.float32)}),
        "out-of-range rows": _update({"w": SparseRows(np.array([4]), np.ones((1, 3), np.float32), (4, 3))}),
        "negative rows": _update({"w": SparseRows(np.array([-1]), np.ones((1, 3), np.float32), (4, 3))}),
        "NaN": _update({"w": np.full((4, 3), np.nan, np.float32)}),
        "Inf": _update({"w": np.full((4, 3), -np.inf, np.float32)}),
        "bad header field": _update({"w": np.ones((4, 3), np.float32)}, version=-3),
        "oversized": b"DDW1" + b"\0" * (65 * 1024),
        "pickle of a file-creating object": pickle.dumps(_MakeFile(str(marker))),
        "pickle of a dict of arrays": pickle.dumps({"w": np.ones((4, 3), np.float32)}),
        "numpy .npy header": b"\x93NUMPY\x01\x00" + b"\0" * 40,
    }


def test_hostile_input_is_refused_and_leaves_the_model_untouched(served, tmp_path):
    store, client = served
    before = {n: a.copy() for n, a in store.model.items()}
    marker, bodies = _hostile_bodies(tmp_path)
    for label, body in bodies.items():
        for path in ("/update", "/model"):
            response = client.post(path, headers=AUTH, data=body, content_type="application/octet-stream")
            assert 400 <= response.status_code < 500, (label, path, response.status_code)
            assert "error" in response.json, label
        response = client.post("/update", data=body)               # and without the secret
        assert response.status_code == 401, label
    store.drain()
    for name, array in before.items():
        np.testing.assert_array_equal(store.model[name], array)
    assert store.version == 0
    assert not marker.exists(), "a pickle payload was executed"
    assert client.get("/health", headers=AUTH).status_code == 200      # still serving


def test_error_messages_name_the_problem(served):
    _, client = served
    response = client.post("/update", headers=AUTH, data=_update({"w": np.ones((3, 4), np.float32)}))
    assert response.status_code == 400
    assert "shape (3, 4)" in response.json["error"] and "'w'" in response.json["error"]
    response = client.post("/update", headers=AUTH, data=b"DDW1" + b"\0" * (65 * 1024))
    assert response.status_code == 413


def test_unknown_route_and_method(served):
    _, client = served
    assert client.get("/nope", headers=AUTH).status_code == 404
    assert client.delete("/model", headers=AUTH).status_code == 405


def test_changes_since_a_version_alone_or_with_a_push(served):
    store, client = served
    store.set_descent(add, additive=True)
    rows = lambda i, v: SparseRows(np.array([i]), np.array([v], np.int64), (5,))  # noqa: E731
    response = client.post("/update", headers=AUTH, data=_update({"c": rows(1, 4)}, partition=1, seq=0))
    assert response.status_code == 202
    store.drain()
    # partition 0 pushes and asks, in the same request, what others added since version 0
    response = client.post("/update?since=0", headers=AUTH, data=_update({"c": rows(2, 7)}, partition=0, seq=0))
    assert response.status_code == 202
    frame = wire.decode(response.data)
    assert frame.meta["full"] is False and frame.arrays["c"].to_dense().tolist() == [0, 4, 0, 0, 0]
    store.drain()
    frame = wire.decode(client.get("/changes?since=0&partition=1&attempt=0", headers=AUTH).data)
    assert frame.meta["version"] == 2 and frame.arrays["c"].to_dense().tolist() == [0, 0, 7, 0, 0]
    assert client.get("/changes?since=x&partition=1&attempt=0", headers=AUTH).status_code == 400
    assert client.post("/update?since=x", headers=AUTH, data=_update({"c": rows(2, 1)}, partition=0, seq=1)
                       ).status_code == 400


def _push(client, arrays, **meta):
    return client.post("/update", headers=AUTH, data=_update(arrays, **meta))


def test_each_refusal_of_a_push_has_its_status_and_says_why():
    import threading

    from deepdist.config import ServerConfig

    release = threading.Event()
    store = ParameterStore({"c": np.zeros(5, np.int64)}, config=ServerConfig(queue_size=1, backpressure_timeout=0.1))
    client = create_app(store, SECRET, max_body_bytes=64 * 1024).test_client()
    one = {"c": np.ones(5, np.int64)}

    response = _push(client, one)                                # no descent yet: not training
    assert response.status_code == 409 and "no descent function" in response.json["error"]

    store.set_descent(lambda m, u: (release.wait(10), add(m, u))[1])
    store.start()
    try:
        assert _push(client, one).status_code == 202             # taken by the applier, which blocks
        assert _push(client, one, partition=0, seq=0).status_code == 202    # fills the queue
        response = _push(client, one, partition=0, seq=1)
        assert response.status_code == 503 and response.headers["Retry-After"] == "1"
        assert "update queue full (1 waiting); retry later" in response.json["error"]
        release.set()
        store.drain()
        assert _push(client, one, partition=0, seq=1).status_code == 202    # its retry is taken
        store.end_epoch(0, {})
        response = _push(client, one, partition=0, seq=2)
        assert response.status_code == 409 and "epoch 0 is already settled" in response.json["error"]

        response = _push(client, {"c": np.ones(4, np.int64)}, epoch=1)
        assert response.status_code == 400 and "shape (4,)" in response.json["error"]
        response = client.post("/update?since=x", headers=AUTH, data=_update(one, epoch=1))
        assert response.status_code == 400 and "since must be an integer" in response.json["error"]

        store.set_descent(lambda m, u: 1 / 0)
        assert _push(client, one, epoch=1).status_code == 202
        store.drain()
        response = _push(client, one, epoch=1)
        assert response.status_code == 503 and "descent failed" in response.json["error"]
        assert "Retry-After" not in response.headers              # retrying cannot help
        store.drain()
        assert store.model["c"].tolist() == [3] * 5
        assert store.status()["rejected_by_reason"] == {"settled_epoch": 1, "invalid": 1}
    finally:
        release.set()
        store.stop()
