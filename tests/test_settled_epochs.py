"""A push from an epoch that is already settled is refused, on real Spark, and the counts stay exact.

A zombie attempt is simulated faithfully: inside a real task, the attempt hands its open
``TaskChannel`` (its client, epoch, partition, attempt and push count) to a detached process
that outlives the task. After the epoch is settled on the driver, that process pushes through
the channel, exactly as a losing speculative copy or a task on an executor wrongly declared
lost would: the push must be refused (409), leave the model as it was and leave no trace in
the server's bookkeeping.
"""

import pickle
import subprocess
import sys
import time

import numpy as np
import pytest
from pyspark import TaskContext

from deepdist import DeepDist, SupersededAttemptError
from deepdist.optim import add
from deepdist.sparse import SparseRows

WORDS = 50

ZOMBIE = r"""
import pathlib, pickle, sys, time
state, go, out = map(pathlib.Path, sys.argv[1:4])
channel, update, version = pickle.loads(state.read_bytes())
deadline = time.monotonic() + 90
while not go.exists():
    if time.monotonic() > deadline:
        out.write_text("never told to push")
        sys.exit(1)
    time.sleep(0.05)
try:
    channel.push(update, version)
    result = "applied"
except Exception as err:
    result = f"{type(err).__name__}: {err}"
out.write_text(result)
"""


def _counts(words):
    counts = np.bincount(np.asarray(words, np.int64), minlength=WORDS)
    rows = np.flatnonzero(counts)
    return {"counts": SparseRows(rows, counts[rows], (WORDS,))}


def _leave_a_zombie(channel, update, version, folder):
    """Hand this attempt's channel to a process that pushes ``update`` once ``folder/go`` exists."""
    state = folder / f"zombie-{channel.partition}-{channel.attempt}.pickle"
    state.write_bytes(pickle.dumps((channel, update, version)))
    subprocess.Popen([sys.executable, "-c", ZOMBIE, str(state), str(folder / "go"), str(folder / "outcome")],
                     start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (folder / "zombie-started").write_text(f"{channel.partition} {channel.attempt}")


def _counting_epoch(dd, rdd, folder, zombie_partition, fail_first):
    """One additive epoch of word counts, each task pushing twice, through dd.channel/run_epoch.

    The first attempt of ``zombie_partition`` leaves a zombie; with ``fail_first`` that attempt
    then fails (Spark retries the partition and keeps the retry), else it finishes and wins.
    """
    channel = dd.channel(0)

    def task(words):
        words = list(words)
        with channel.open() as ch:
            version = ch.pull_into({"counts": np.zeros(WORDS, np.int64)})
            half = len(words) // 2
            ch.push(_counts(words[:half]), version)
            ch.push(_counts(words[half:]), version)
            first = not (folder / "zombie-started").exists()
            if TaskContext.get().partitionId() == zombie_partition and first:
                _leave_a_zombie(ch, _counts(words), version, folder)   # all its words, once more
                if fail_first:
                    raise RuntimeError("injected failure after two pushes")
            yield ch.report()

    dd.set_descent(add, additive=True)
    return dd.run_epoch(0, lambda: rdd.mapPartitions(task).collect())


def _zombie_outcome(folder, timeout=60):
    (folder / "go").touch()
    deadline = time.monotonic() + timeout
    while not (folder / "outcome").exists():
        assert time.monotonic() < deadline, "the zombie process never pushed"
        time.sleep(0.05)
    time.sleep(0.05)   # written in one call; let it land
    return (folder / "outcome").read_text()


@pytest.mark.parametrize("fail_first", [False, True], ids=["finished-attempt", "failed-attempt"])
def test_a_late_push_from_a_settled_epoch_is_refused_and_the_counts_stay_exact(sc, tmp_path, fail_first):
    data = np.random.default_rng(7).integers(0, WORDS, size=2000)
    rdd = sc.parallelize(data.tolist(), 4)
    expected = np.bincount(data, minlength=WORDS)
    with DeepDist({"counts": np.zeros(WORDS, np.int64)}, spark=sc, progress=False) as dd:
        reports = _counting_epoch(dd, rdd, tmp_path, zombie_partition=1, fail_first=fail_first)
        np.testing.assert_array_equal(dd.model["counts"], expected)
        partition, attempt = map(int, (tmp_path / "zombie-started").read_text().split())
        kept = {r["partition"]: r["attempt"] for r in reports}
        assert (kept[partition] == attempt) is not fail_first   # a failed attempt is not the one kept
        settled = dd.store.epoch
        version = dd.store.version

        outcome = _zombie_outcome(tmp_path)

        np.testing.assert_array_equal(dd.model["counts"], expected)    # exact: nothing applied
        assert dd.store.version == version
        assert outcome.startswith(SupersededAttemptError.__name__), outcome
        assert f"epoch {settled} is already settled" in outcome
        status = dd.status()
        assert status["rejected_by_reason"].get("settled_epoch") == 1, status["rejected_by_reason"]
        # the refusal left no bookkeeping behind for the closed epoch
        assert not [k for k in dd.store.senders.senders() if k[0] == settled]
        assert settled not in dd.store.ledger.epochs()
        if fail_first:
            assert status["rejected_by_reason"].get("superseded", 0) == 0
            assert status["updates_applied"] >= 4 * 2 + 2     # the failed attempt's two were applied, then rolled back
