"""The attempt ledger's memory is bounded (sums past a budget go to disk) and it stays exact;
the store's per-sender bookkeeping is bounded too."""

import os
import tracemalloc

import numpy as np
import pytest

from deepdist import counters, ledger, senders
from deepdist.ledger import AttemptLedger
from deepdist.optim import add
from deepdist.sparse import SparseRows
from deepdist.errors import DescentFailedError, SupersededAttemptError
from deepdist.store import ParameterStore, PushRefusedError
from deepdist.wire import UpdateMeta


def _random_update(rng, shapes, kind):
    """One update touching every parameter: dense, sparse rows of a small table, sparse rows of a big one."""
    update = {}
    for name, shape in shapes.items():
        if kind == "dense" or (kind == "mixed" and rng.random() < 0.3):
            update[name] = rng.integers(-5, 6, shape).astype(np.int64)
        else:
            rows = rng.integers(0, shape[0], rng.integers(1, 6))
            update[name] = SparseRows(rows, rng.integers(-5, 6, (len(rows),) + shape[1:]).astype(np.int64), shape)
    return update


def _dense(part, shape):
    return part.to_dense() if isinstance(part, SparseRows) else part


@pytest.mark.parametrize("budget", [0, 3000, 1 << 30], ids=["all-spilled", "some-spilled", "in-memory"])
@pytest.mark.parametrize("kind", ["dense", "sparse", "mixed"])
def test_rollbacks_and_reapplies_stay_exact_whether_sums_are_in_memory_or_on_disk(budget, kind, monkeypatch, tmp_path):
    # "big" is sparse-summed as a list (past _DENSE_BYTES), "small" in a dense table
    monkeypatch.setattr(ledger, "_DENSE_BYTES", 200)
    monkeypatch.setattr(ledger, "_COMPACT_FLOOR", 0)
    shapes = {"small": (6, 2), "big": (40, 3)}
    rng = np.random.default_rng(hash((budget, kind)) % 2 ** 32)
    book = AttemptLedger(memory_budget=budget, spill_dir=str(tmp_path))
    model = {name: np.zeros(shape, np.int64) for name, shape in shapes.items()}
    sums = {}                          # (partition, attempt) -> what it pushed, in full
    pushed = {}
    # partition p: attempts 10, 20, 30 interleave; some attempts start after a newer one pushed
    schedule = [(p, a) for _ in range(6) for p in range(5) for a in (10, 20, 30)[: 1 + p % 3]]
    rng.shuffle(schedule)
    schedule += [(4, 10)]              # an older attempt pushing after the newest: booked, not applied
    for partition, attempt in schedule:
        if not book.admit(0, partition, attempt):
            continue
        update = _random_update(rng, shapes, kind)
        apply_it, corrections = book.record(0, partition, attempt, update)
        for step in corrections + ([update] if apply_it else []):
            add(model, step)
        total = sums.setdefault((partition, attempt), {n: np.zeros(s, np.int64) for n, s in shapes.items()})
        for name, part in update.items():
            total[name] += _dense(part, shapes[name])
        pushed[(partition, attempt)] = pushed.get((partition, attempt), 0) + 1
    if budget == 0:
        assert book.memory_bytes == 0 and book.spilled_attempts > 0 and os.listdir(tmp_path)
    winners = {}
    for partition in range(5):
        attempts = sorted(a for p, a in pushed if p == partition)
        win = attempts[rng.integers(len(attempts))]   # Spark may keep any attempt's result
        winners[partition] = (win, pushed[(partition, win)])
    for step in book.reconcile(0, winners):
        add(model, step)
    for name, shape in shapes.items():
        expected = sum(sums[(p, winners[p][0])][name] for p in range(5))
        np.testing.assert_array_equal(model[name], expected, err_msg=name)
    assert book.memory_bytes == 0 and not book._attempts and not book._in_memory
    assert not [f for d, _, fs in os.walk(tmp_path) for f in fs], "spilled sums are removed at epoch end"
    book.close()
    assert not os.listdir(tmp_path)


def test_dense_additive_training_keeps_the_ledger_within_its_budget(tmp_path, monkeypatch):
    """32 partitions of a 2 MB dense model, budget 8 MB: memory stays near the budget, not 32 x 2 MB.

    Before the budget, every attempt kept its running sum (and often one update besides) in
    memory (benchmarks/ledger_memory.py measures both designs).
    """
    size = 2 << 20
    budget = 8 << 20
    monkeypatch.setattr(ledger, "MEMORY_BUDGET", budget, raising=False)
    monkeypatch.setattr(ledger, "SPILL_DIR", str(tmp_path), raising=False)
    s = ParameterStore({"w": np.zeros(size // 8, np.int64)})
    s.set_descent(add, additive=True)
    s.start()
    try:
        update = {"w": np.ones(size // 8, np.int64)}
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            for partition in range(32):
                for seq in range(2):
                    s.submit(update, UpdateMeta(version=0, epoch=1, partition=partition, attempt=5, seq=seq))
            s.drain()
            during = tracemalloc.get_traced_memory()[1] - base
            # partition 3 was retried: its first attempt lost, and the retry is the one kept
            s.submit({"w": np.full(size // 8, 3, np.int64)}, UpdateMeta(version=0, epoch=1, partition=3, attempt=9))
            winners = {p: (5, 2) for p in range(32)}
            winners[3] = (9, 1)
            s.end_epoch(1, winners)
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        # the budget, plus the model-sized running sum being spilled, the changes log (up to a
        # model) and a correction read back: never 32 sums
        assert during < budget + 4 * size, f"{during / 1e6:.0f} MB traced while pushing"
        assert peak < budget + 4 * size, f"{peak / 1e6:.0f} MB traced at the epoch's end"
        expected = np.full(size // 8, 2 * 31 + 3, np.int64)
        np.testing.assert_array_equal(s.model["w"], expected)
        assert s.ledger.peak_memory_bytes <= budget + size
        assert s.ledger.spilled_attempts >= 32 - budget // size
        assert not os.listdir(s.ledger.spill_directory)
    finally:
        s.stop()


def test_a_spilled_attempt_keeps_taking_pushes_and_is_read_back_as_its_rows(tmp_path):
    book = AttemptLedger(memory_budget=0, spill_dir=str(tmp_path))
    book.record(0, 0, 1, {"t": SparseRows(np.array([2, 2, 7]), np.array([1, 1, 5], np.int64), (10,))})
    book.record(0, 0, 1, {"t": SparseRows(np.array([7]), np.array([-5], np.int64), (10,))})
    entry = book._attempts[(0, 0)][1]
    assert entry.spilled and book.memory_bytes == 0
    total = entry.total()["t"]
    assert isinstance(total, SparseRows)                 # sparse in, sparse out
    assert total.indices.tolist() == [2] and total.values.tolist() == [2]
    negated = entry.total(-1)["t"]
    assert negated.values.tolist() == [-2]
    book.record(0, 0, 1, {"t": np.ones(10, np.int64)})   # a dense part: the sum becomes dense
    assert entry.total()["t"].tolist() == [1, 1, 3, 1, 1, 1, 1, 1, 1, 1]
    book.close()
    assert not os.listdir(tmp_path)


def test_least_recently_pushed_attempts_are_the_ones_spilled(tmp_path):
    book = AttemptLedger(memory_budget=3 * 800, spill_dir=str(tmp_path))
    for partition in (0, 1, 2, 0, 3, 4):   # 800 bytes each; partition 0 pushes again
        book.record(0, partition, 0, {"w": np.ones(100, np.int64)})
    spilled = {p for (_, p), attempts in book._attempts.items() if attempts[0].spilled}
    assert spilled == {1, 2} and book.memory_bytes == 3 * 800
    book.close()


def test_retried_tasks_are_exact_with_every_sum_on_disk(sc, tmp_path, monkeypatch):
    """tests/test_train.py's retry test, with a ledger that keeps nothing in memory."""
    import test_train

    monkeypatch.setattr(ledger, "MEMORY_BUDGET", 0)
    monkeypatch.setattr(ledger, "SPILL_DIR", str(tmp_path))
    test_train.test_retried_tasks_leave_an_exact_additive_model(sc, tmp_path)
    leftovers = [f for d, _, fs in os.walk(tmp_path) if "deepdist-ledger" in d for f in fs]
    assert leftovers == []


# -- the store's per-sender bookkeeping ------------------------------------------------------------

def test_seen_pushes_are_a_floor_per_sender_not_a_set_of_every_push(store):
    one = {"w": np.ones(4, np.int64)}
    for seq in range(500):
        store.submit(one, UpdateMeta(version=0, epoch=3, partition=1, attempt=2, seq=seq))
    store.submit(one, UpdateMeta(version=0, epoch=3, partition=1, attempt=2, seq=123))   # a retried POST
    store.drain()
    assert store.senders.senders() == {(3, 1, 2)} and store.senders.arrived((3, 1, 2)) == [500]
    assert store.model["w"].tolist() == [500] * 4
    assert store.status()["rejected_by_reason"] == {"duplicate": 1}


def test_out_of_order_pushes_are_bounded_per_sender(store, monkeypatch):
    monkeypatch.setattr(senders, "MAX_SEQS_AHEAD", 4)
    one = {"w": np.ones(4, np.int64)}
    for seq in (1, 3, 2, 5):       # push 0 has not arrived
        store.submit(one, UpdateMeta(version=0, partition=0, seq=seq))
    with pytest.raises(PushRefusedError, match="out of order"):
        store.submit(one, UpdateMeta(version=0, partition=0, seq=10**9))
    store.submit(one, UpdateMeta(version=0, partition=0, seq=0))       # the gap closes
    store.submit(one, UpdateMeta(version=0, partition=0, seq=3))       # a duplicate
    store.drain()
    assert store.senders.arrived((0, 0, 0)) == [4, 5]
    assert store.model["w"].tolist() == [5] * 4


def test_senders_of_unsettled_epochs_are_capped_and_forgotten_when_settled(store, monkeypatch):
    monkeypatch.setattr(senders, "MAX_SENDERS", 50)
    one = {"w": np.ones(4, np.int64)}
    for partition in range(50):
        store.submit(one, UpdateMeta(version=0, epoch=7, partition=partition))
    with pytest.raises(PushRefusedError, match="50 task attempts"):
        store.submit(one, UpdateMeta(version=0, epoch=8, partition=0))
    store.submit(one, UpdateMeta(version=0, epoch=7, partition=0, seq=1))   # a known sender goes on
    store.drain()
    assert store.senders.senders() == {(7, p, 0) for p in range(50)}
    store.end_epoch(7, {})
    assert store.senders.senders() == set()
    store.submit(one, UpdateMeta(version=0, epoch=8, partition=0))          # room again
    store.drain()
    assert store.model["w"].tolist() == [52] * 4
    # pushes that are not a task's (partition -1) are not tracked at all
    for epoch in range(100):
        store.submit(one, UpdateMeta(version=0, epoch=100 + epoch, attempt=epoch))
    store.drain()
    assert store.senders.senders() == {(8, 0, 0)}


def test_a_settled_epochs_pushes_leave_no_trace(store):
    store.set_descent(add, additive=True)
    one = {"w": np.ones(4, np.int64)}
    store.submit(one, UpdateMeta(version=0, epoch=1, partition=0))
    store.end_epoch(1, {0: (0, 1)})
    for seq in range(1, 200):      # a zombie attempt keeps pushing
        with pytest.raises(SupersededAttemptError, match="already settled"):
            store.submit(one, UpdateMeta(version=0, epoch=1, partition=0, seq=seq))
    store.drain()
    assert store.senders.senders() == set() and store.ledger.epochs() == set()
    assert store.status()["rejected_by_reason"] == {"settled_epoch": 199}
    # a pull that waits for a settled epoch's push is answered at once, not after a timeout
    assert store.wait_finished(1, 0, 0, 150, timeout=30) is True


def test_metric_names_are_capped(store, monkeypatch):
    monkeypatch.setattr(counters, "MAX_METRICS", 8)
    one = {"w": np.ones(4, np.int64)}
    for seq in range(20):
        store.submit(one, UpdateMeta(version=0, partition=0, seq=seq, metrics={f"m{seq}": 1.0, "loss": 0.5}))
    store.submit(one, UpdateMeta(version=0, partition=0, seq=20, metrics={"x" * 1000: 1.0}))
    store.drain()
    status = store.status()
    assert len(status["metrics"]) == 8 and status["metrics"]["loss"]["count"] == 20
    assert status["metrics_ignored"] == 20 - 7 + 1
    assert status["updates_applied"] == 21   # the updates themselves are taken


def test_a_spill_that_fails_keeps_the_sums_in_memory_and_exact(tmp_path, caplog):
    book = AttemptLedger(memory_budget=0, spill_dir=str(tmp_path / "no-such-dir"))
    model = np.zeros(8, np.int64)
    for attempt in (1, 2):
        apply_it, corrections = book.record(0, 0, attempt, {"w": np.full(8, attempt, np.int64)})
        for step in corrections + [{"w": np.full(8, attempt, np.int64)}]:
            model += step["w"]
    assert book.spill_failures == 2 and book.memory_bytes == 2 * 64
    assert "cannot spill ledger sums" in caplog.text
    for step in book.reconcile(0, {0: (1, 1)}):
        model += step["w"]
    assert model.tolist() == [1] * 8 and book.memory_bytes == 0


def test_a_ledger_that_cannot_write_stops_training_with_its_error(tmp_path):
    import shutil

    s = ParameterStore({"w": np.zeros(4, np.int64), "v": np.zeros(4, np.int64)},
                       ledger=AttemptLedger(memory_budget=0, spill_dir=str(tmp_path)))
    s.set_descent(add, additive=True)
    s.start()
    try:
        s.submit({"w": np.ones(4, np.int64)}, UpdateMeta(version=0, epoch=1, partition=0))
        s.drain()
        shutil.rmtree(s.ledger.spill_directory)            # the disk goes away
        s.submit({"v": np.ones(4, np.int64)}, UpdateMeta(version=0, epoch=1, partition=0, seq=1))
        s.drain()
        assert isinstance(s.error, OSError)
        with pytest.raises(DescentFailedError):
            s.submit({"v": np.ones(4, np.int64)}, UpdateMeta(version=0, epoch=1, partition=0, seq=2))
    finally:
        s.stop()
