"""The executor-side client against a live server on loopback."""

import threading
import time

import numpy as np
import pytest

from deepdist import ModelClient, wire
from deepdist.config import ServerConfig
from deepdist.errors import AuthenticationError, InvalidUpdateError, ServerUnreachableError
from deepdist.server import ServerThread, create_app
from deepdist.optim import add
from deepdist.sparse import SparseRows
from deepdist.store import ParameterStore

SECRET = "live-secret"


@pytest.fixture
def live():
    def start(model, config=None, descent=add):
        store = ParameterStore(model, config=config)
        store.set_descent(descent)
        store.start()
        thread = ServerThread(create_app(store, SECRET, 1 << 26), "127.0.0.1", 0)
        thread.start()
        started.append((store, thread))
        return store, ModelClient(f"http://127.0.0.1:{thread.port}", SECRET)

    started = []
    yield start
    for store, thread in started:
        thread.stop()
        store.stop()


def test_eight_threads_of_integer_deltas_sum_exactly(live):
    store, client = live({"counts": np.zeros((100, 4), np.int64)})
    rng = np.random.default_rng(0)
    plans = [[(rng.integers(0, 100, 5), rng.integers(-3, 4, (5, 4))) for _ in range(500)] for _ in range(8)]
    expected = np.zeros((100, 4), np.int64)
    for plan in plans:
        for rows, values in plan:
            np.add.at(expected, rows, values)

    def pusher(tid):
        for seq, (rows, values) in enumerate(plans[tid]):
            update = {"counts": SparseRows(rows, values, (100, 4))} if seq % 2 else \
                {"counts": SparseRows(rows, values, (100, 4)).to_dense()}
            client.push(update, wire.UpdateMeta(version=0, partition=tid, seq=seq))

    threads = [threading.Thread(target=pusher, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.drain()
    np.testing.assert_array_equal(store.model["counts"], expected)
    status = client.status()
    assert status["updates_applied"] == 4000 and status["updates_rejected"] == 0


def test_pull_and_pull_rows(live):
    store, client = live({"w": np.arange(20, dtype=np.float32).reshape(10, 2)})
    version, arrays = client.pull()
    np.testing.assert_array_equal(arrays["w"], store.model["w"])
    target = {"w": np.zeros((10, 2), np.float32)}
    client.pull_rows_into(target, {"w": [7, 2]})
    assert target["w"][7].tolist() == [14, 15] and target["w"][0].tolist() == [0, 0]


def test_a_row_pull_can_wait_for_the_model_to_reach_a_state(live):
    """Bounded staleness: the server holds the answer until rounds[0] >= 2, without polling."""
    store, client = live({"w": np.zeros((4, 2)), "rounds": np.zeros(1)})
    answers = []
    waiter = threading.Thread(target=lambda: answers.append(
        client.pull_rows_when({"w": [1]}, "rounds", 2, timeout=30)))
    waiter.start()
    for seq in range(2):
        assert waiter.is_alive()  # not before the second update
        client.push({"w": np.ones((4, 2)), "rounds": np.ones(1)}, wire.UpdateMeta(version=0, seq=seq))
        store.drain()
    waiter.join(10)
    version, arrays, ready = answers[0]
    assert ready and version == 2 and arrays["w"].values.tolist() == [[2.0, 2.0]]
    started = time.perf_counter()
    version, _, ready = client.pull_rows_when({"w": [0]}, "rounds", 3, timeout=0.2)
    assert not ready and version == 2 and time.perf_counter() - started >= 0.2
    for query in ({"wait": "nope", "at_least": "1", "timeout": "1"}, {"wait": "rounds", "at_least": "x", "timeout": "1"},
                  {"wait": "rounds", "at_least": "nan", "timeout": "1"}, {"wait": "rounds", "at_least": "1", "timeout": "1e9"}):
        with pytest.raises(InvalidUpdateError):
            client._pull_rows({"w": [0]}, params=query)
    assert store.version == 2


def test_a_task_reads_its_own_writes():
    """A pull with ``after`` waits until the sender's queued update is applied."""
    store = ParameterStore({"w": np.zeros(3)})
    store.set_descent(add)
    thread = ServerThread(create_app(store, SECRET, 1 << 20), "127.0.0.1", 0)
    thread.start()
    try:
        client = ModelClient(f"http://127.0.0.1:{thread.port}", SECRET)
        for seq in range(2):  # queued: the applier has not started
            client.push({"w": np.ones(3)}, wire.UpdateMeta(version=0, epoch=0, partition=1, attempt=0, seq=seq))
        assert client.pull()[1]["w"].tolist() == [0, 0, 0]
        threading.Timer(0.3, store.start).start()
        started = time.perf_counter()
        version, arrays = client.pull_rows({"w": [0, 2]}, after=(0, 1, 0, 1))
        assert time.perf_counter() - started >= 0.25
        assert version == 2 and arrays["w"].values.tolist() == [2, 2]
        assert client.pull(after=(0, 1, 0, 0))[1]["w"].tolist() == [2, 2, 2]
        with pytest.raises(InvalidUpdateError, match="after must be"):
            client._request("GET", "/model", params={"after": "1:2"})
    finally:
        thread.stop()
        store.stop()


def test_a_push_and_the_next_pull_share_one_round_trip():
    """``push_pull_rows`` answers the rows with the push itself applied, and refuses bad requests whole."""
    store = ParameterStore({"w": np.zeros((4, 2)), "b": np.zeros(1)})
    store.set_descent(add)
    thread = ServerThread(create_app(store, SECRET, 1 << 20), "127.0.0.1", 0)
    thread.start()
    try:
        client = ModelClient(f"http://127.0.0.1:{thread.port}", SECRET)
        threading.Timer(0.3, store.start).start()  # the answer must wait for the applier
        meta = wire.UpdateMeta(version=0, epoch=0, partition=0, attempt=0, seq=0)
        update = {"w": SparseRows(np.array([1]), np.ones((1, 2)), (4, 2)), "b": np.ones(1)}
        nbytes, version, arrays = client.push_pull_rows(update, meta, {"w": [1, 3], "b": [0]})
        assert nbytes > 0 and version == 1
        assert arrays["w"].indices.tolist() == [1, 3] and arrays["w"].values.tolist() == [[1, 1], [0, 0]]
        assert arrays["b"].values.tolist() == [1]
        for rows in ({"w": [9]}, {"nope": [0]}):  # a bad row request: the update is not applied either
            with pytest.raises(InvalidUpdateError):
                client.push_pull_rows(update, wire.UpdateMeta(version=1, partition=0, seq=1), rows)
        with pytest.raises(InvalidUpdateError, match="then must be"):
            client._request("POST", "/update", data=wire.encode(update, meta.to_json()), params={"then": "x"})
        assert client.pull()[1]["w"].tolist() == [[0, 0], [1, 1], [0, 0], [0, 0]]
    finally:
        thread.stop()
        store.stop()


def test_backpressure_slows_clients_but_loses_nothing(live):
    slow = threading.Semaphore(0)
    store, client = live({"w": np.zeros(1)}, ServerConfig(queue_size=1, backpressure_timeout=0.05),
                         descent=lambda m, u: (slow.acquire(), add(m, u))[1])
    done = threading.Event()

    def push_all():
        for seq in range(6):
            client.push({"w": np.ones(1)}, wire.UpdateMeta(version=0, partition=0, seq=seq))
        done.set()

    pusher = threading.Thread(target=push_all)
    pusher.start()
    assert not done.wait(1.5), "client should have been held back by a full queue"
    for _ in range(6):
        slow.release()
    pusher.join(30)
    store.drain()
    assert store.model["w"][0] == 6.0


def test_errors_are_translated(live):
    store, client = live({"w": np.zeros(3)})
    with pytest.raises(InvalidUpdateError, match="shape"):
        client.push({"w": np.zeros(4)}, wire.UpdateMeta(version=0))
    with pytest.raises(AuthenticationError):
        ModelClient(client.url, "wrong").pull()


def test_dead_server_gives_one_clear_error():
    client = ModelClient("http://127.0.0.1:9", SECRET, retries=1, backoff=0.01, connect_timeout=0.5)
    with pytest.raises(ServerUnreachableError) as info:
        client.pull()
    message = str(info.value)
    assert "http://127.0.0.1:9" in message and "spark.driver.host" in message and "firewall" in message
    assert isinstance(info.value, ConnectionError)


def test_client_pickles_without_its_connection():
    import pickle

    client = ModelClient("http://127.0.0.1:1", SECRET)
    client._connection  # create one
    clone = pickle.loads(pickle.dumps(client))
    assert clone.url == client.url and clone.secret == SECRET


def test_a_connection_the_server_closed_while_idle_is_replaced_without_a_retry():
    store = ParameterStore({"w": np.zeros(3)})
    store.set_descent(add)
    store.start()
    thread = ServerThread(create_app(store, SECRET, 1 << 20), "127.0.0.1", 0)
    thread.server.idle_timeout = 0.2  # the server drops keep-alive connections idle this long
    thread.start()
    try:
        client = ModelClient(f"http://127.0.0.1:{thread.port}", SECRET, retries=0)
        first = client._connection
        assert client.status()["version"] == 0
        time.sleep(0.6)
        assert client.status()["version"] == 0  # retries=0: a failed try would have raised
        assert client._connection is not first
    finally:
        thread.stop()
        store.stop()
