"""The transport-free parameter store: ordering, staleness policies, exact retries."""

import threading

import numpy as np
import pytest

from deepdist import ledger, wire
from deepdist.config import ServerConfig
from deepdist.changelog import ChangeLog
from deepdist.errors import ConfigurationError, DescentFailedError, DrainTimeoutError, SupersededAttemptError
from deepdist.optim import add
from deepdist.store import ParameterStore, QueueFullError, staleness_bucket
from deepdist.sparse import SparseRows
from deepdist.wire import UpdateMeta


def test_updates_apply_in_order_and_bump_version(store):
    seen = []
    store.set_descent(lambda m, u: seen.append(int(u["w"][0])) or add(m, u))
    for i in range(50):
        store.submit({"w": np.full(4, i, np.int64)}, UpdateMeta(version=0, partition=0, seq=i))
    store.drain()
    assert seen == list(range(50))
    assert store.version == 50
    assert store.model["w"].tolist() == [sum(range(50))] * 4
    status = store.status()
    assert status["updates_applied"] == 50 and status["queue_depth"] == 0


def test_duplicate_posts_are_applied_once(store):
    meta = UpdateMeta(version=0, partition=3, attempt=0, seq=7)
    store.submit({"w": np.ones(4, np.int64)}, meta)
    store.submit({"w": np.ones(4, np.int64)}, meta)
    store.drain()
    assert store.model["w"].tolist() == [1] * 4
    assert store.status()["rejected_by_reason"] == {"duplicate": 1}


def test_snapshot_is_encoded_once_per_version(store):
    v1, body1 = store.snapshot()
    v2, body2 = store.snapshot()
    assert body1 is body2 and v1 == v2
    store.submit({"w": np.ones(4, np.int64)}, UpdateMeta(version=0))
    store.drain()
    v3, body3 = store.snapshot()
    assert v3 == v1 + 1 and body3 is not body1


def test_drop_policy_refuses_stale_updates():
    s = ParameterStore({"w": np.zeros(2)}, config=ServerConfig(staleness="drop", max_staleness=2))
    s.set_descent(add)
    s.start()
    for _ in range(5):
        s.submit({"w": np.ones(2)}, UpdateMeta(version=0))
    s.drain()
    s.stop()
    # versions 0,1,2 pass (staleness 0,1,2); then staleness 3 and 3 are dropped
    assert s.model["w"].tolist() == [3.0, 3.0]
    assert s.status()["rejected_by_reason"] == {"too_stale": 2}


def test_scale_policy_divides_by_staleness():
    s = ParameterStore({"w": np.zeros(1)}, config=ServerConfig(staleness="scale"))
    s.set_descent(add)
    s.start()
    for _ in range(4):
        s.submit({"w": np.ones(1)}, UpdateMeta(version=0))
    s.drain()
    s.stop()
    assert s.model["w"][0] == pytest.approx(1 + 1 + 1 / 2 + 1 / 3)


def test_scale_policy_refuses_integer_models():
    s = ParameterStore({"c": np.zeros(2, np.int32)}, config=ServerConfig(staleness="scale"))
    with pytest.raises(ConfigurationError, match="integer"):
        s.set_descent(add)


def test_additive_retry_rolls_back_the_older_attempt(store):
    store.set_descent(add, additive=True)
    one = {"w": np.array([1, 0, 0, 0], np.int64)}
    # attempt 0 of partition 5 pushes twice, then dies; attempt 1 redoes the partition
    store.submit(one, UpdateMeta(version=0, epoch=0, partition=5, attempt=0, seq=0))
    store.submit(one, UpdateMeta(version=0, epoch=0, partition=5, attempt=0, seq=1))
    store.submit({"w": np.array([0, 1, 0, 0], np.int64)}, UpdateMeta(version=0, epoch=0, partition=6, seq=0))
    store.drain()
    assert store.model["w"].tolist() == [2, 1, 0, 0]
    for seq in range(3):
        store.submit(one, UpdateMeta(version=0, epoch=0, partition=5, attempt=1, seq=seq))
    with pytest.raises(SupersededAttemptError):
        store.submit(one, UpdateMeta(version=0, epoch=0, partition=5, attempt=0, seq=2))
    store.end_epoch(0, {5: (1, 3), 6: (0, 1)})
    assert store.model["w"].tolist() == [3, 1, 0, 0]


def test_additive_reconcile_reapplies_the_winner(store):
    """A speculative copy started after the original finished, and lost."""
    store.set_descent(add, additive=True)
    store.submit({"w": np.array([5, 0, 0, 0], np.int64)}, UpdateMeta(version=0, partition=0, attempt=0))
    store.submit({"w": np.array([0, 9, 0, 0], np.int64)}, UpdateMeta(version=0, partition=0, attempt=1))
    store.drain()
    assert store.model["w"].tolist() == [0, 9, 0, 0]
    store.end_epoch(0, {0: (0, 1)})  # Spark kept attempt 0's result
    assert store.model["w"].tolist() == [5, 0, 0, 0]


def test_backpressure_blocks_then_times_out_without_dropping():
    release = threading.Event()
    s = ParameterStore({"w": np.zeros(1)}, config=ServerConfig(queue_size=1))
    s.set_descent(lambda m, u: (release.wait(), add(m, u))[1])
    s.start()
    s.submit({"w": np.ones(1)}, UpdateMeta(version=0))      # taken by the applier, blocked
    s.submit({"w": np.ones(1)}, UpdateMeta(version=0))      # fills the queue
    with pytest.raises(QueueFullError):
        s.submit({"w": np.ones(1)}, UpdateMeta(version=0), timeout=0.2)
    release.set()
    s.drain()
    s.stop()
    assert s.model["w"][0] == 2.0


def test_descent_error_is_kept_and_later_updates_refused(store):
    store.set_descent(lambda m, u: 1 / 0)
    store.submit({"w": np.ones(4, np.int64)}, UpdateMeta(version=0))
    store.drain()
    assert isinstance(store.error, ZeroDivisionError)
    assert store.status()["descent_error"].startswith("ZeroDivisionError")
    with pytest.raises(DescentFailedError, match="ZeroDivisionError"):
        store.submit({"w": np.ones(4, np.int64)}, UpdateMeta(version=0))
    assert store.version == 0 and store.model["w"].tolist() == [0] * 4
    assert store.status()["updates_received"] == 1 and store.status()["updates_applied"] == 0


def test_descent_that_breaks_the_shape_is_caught(store):
    store.set_descent(lambda m, u: m.__setitem__("w", np.zeros(3)))
    store.submit({"w": np.ones(4, np.int64)}, UpdateMeta(version=0))
    store.drain()
    assert "should be (4,)" in str(store.error)


def test_staleness_buckets():
    assert [staleness_bucket(s) for s in (0, 1, 3, 4, 7, 8, 100)] == ["0", "1", "3", "4-7", "4-7", "8-15", "64-127"]


def _rows(index, value, size=64):
    return {"w": SparseRows(np.asarray(index, np.int64), np.asarray(value, np.int64), (size,))}


def test_changes_hold_the_other_tasks_updates_since_a_version():
    store = ParameterStore({"w": np.zeros(64, np.int64)})  # the log keeps up to the model's size
    store.set_descent(add, additive=True)
    store.start()
    try:
        store.submit(_rows([0], [1]), UpdateMeta(version=0, epoch=0, partition=0, seq=0))
        store.drain()
        since = store.version
        store.submit(_rows([1, 2], [2, 3]), UpdateMeta(version=1, epoch=0, partition=1, seq=0))
        store.submit(_rows([0, 5], [4, 4]), UpdateMeta(version=1, epoch=0, partition=0, seq=1))
        store.submit(_rows([2], [-1]), UpdateMeta(version=1, epoch=0, partition=2, seq=0))
        store.drain()
        version, body = store.changes(since, partition=0, attempt=0)
        frame = wire.decode(body)
        assert version == store.version == 4 and frame.meta["full"] is False
        local = np.zeros(64, np.int64)
        frame.arrays["w"].add_to(local)
        assert local[:6].tolist() == [0, 2, 2, 0, 0, 0] and not local[6:].any()  # partition 0's own updates left out
        # a correction (rollback or repair) cannot be told apart: the task must pull everything
        store.apply_corrections([_rows([3], [1])])
        assert wire.decode(store.changes(since, 0, 0)[1]).meta["full"] is True
        assert wire.decode(store.changes(store.version, 0, 0)[1]).meta["full"] is False
        store.end_epoch(0, {0: (0, 2), 1: (0, 1), 2: (0, 1)})
        assert wire.decode(store.changes(since, 0, 0)[1]).meta["full"] is True  # older than the log
    finally:
        store.stop()


def test_retry_rolls_back_many_sparse_updates_exactly(monkeypatch):
    """The ledger sums an attempt's updates lazily, compacting as it goes: the rollback stays exact."""
    monkeypatch.setattr(ledger, "_COMPACT_FLOOR", 0)
    store = ParameterStore({"w": np.zeros(64, np.int64)})
    store.set_descent(add, additive=True)
    store.start()
    try:
        rng = np.random.default_rng(0)
        for seq in range(40):
            store.submit(_rows(rng.integers(0, 6, 3), rng.integers(-3, 4, 3)),
                         UpdateMeta(version=0, epoch=0, partition=0, attempt=0, seq=seq))
        store.submit(_rows([4], [7]), UpdateMeta(version=0, epoch=0, partition=0, attempt=1, seq=0))
        store.end_epoch(0, {0: (1, 1)})
        assert store.model["w"][:6].tolist() == [0, 0, 0, 0, 7, 0] and not store.model["w"][6:].any()
    finally:
        store.stop()


def test_the_change_log_is_bounded_by_the_model_size_and_says_when_to_pull():
    log = ChangeLog(limit_bytes=4 * 32, version=5)         # four updates of two int64 rows (indices + values)
    for i in range(4):                                     # versions 6..9
        log.append((i % 2, 0), _rows([i, i + 1], [1, 1]))
    assert log.floor == 5 and len(log) == 4 and log.nbytes == 4 * 32
    merged = log.since(6, partition=0, attempt=0)          # versions 7..9 of others: partition 1's (7, 9)
    assert merged["w"].indices.tolist() == [1, 2, 3, 4] and merged["w"].values.tolist() == [1, 1, 1, 1]
    assert log.since(9, 0, 0) == {} and log.since(10, 0, 0) is None and log.since(4, 0, 0) is None
    log.append((1, 0), _rows(list(range(10)), [1] * 10))   # 160 more bytes: past the limit, the older half goes
    assert log.floor == 7 and len(log) == 3 and log.since(6, 0, 0) is None
    assert log.since(7, 0, 0)["w"].indices.tolist() == [3, 4] + list(range(10))
    log.append(None, _rows([0], [1]))                      # a correction: nobody can skip it
    assert log.since(7, 0, 0) is None and log.since(log.floor + len(log), 0, 0) == {}


def test_drain_times_out_with_a_deepdist_error_and_the_applier_stops_cleanly():
    release = threading.Event()
    s = ParameterStore({"w": np.zeros(1)}, ledger=ledger.AttemptLedger())
    s.set_descent(lambda m, u: (release.wait(), add(m, u))[1])
    assert not s.alive
    s.start()
    assert s.alive
    s.submit({"w": np.ones(1)}, UpdateMeta(version=0))
    with pytest.raises(DrainTimeoutError, match="1 updates still pending"):
        s.drain(timeout=0.2)
    assert isinstance(DrainTimeoutError("x"), TimeoutError)   # callers catching TimeoutError still do
    release.set()
    s.drain(timeout=10)
    s.stop()
    assert not s.alive and s.model["w"][0] == 1.0
