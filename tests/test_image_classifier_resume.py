"""The image-classifier example killed by SIGKILL mid-training, then resumed from its checkpoint (slow)."""

import glob
import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("torch")

from deepdist.persist import read_frame  # noqa: E402
from test_word2vec_example import ROOT, SPARK_SUBMIT, _env  # noqa: E402

sys.path.insert(0, str(ROOT / "examples"))


def _completed(path: str) -> int:
    return int(read_frame(path)[1]["epochs_completed"])


@pytest.mark.slow
def test_a_killed_run_resumes_with_adam_and_batch_norm_state_and_ends_as_an_uninterrupted_one(spark, tmp_path):
    if not SPARK_SUBMIT.exists():
        pytest.skip(f"no spark-submit next to {sys.executable}")
    from image_classifier import load_rdds, run

    ckpt = tmp_path / "ckpt"
    # the driver is killed, not closed: no drain, no final checkpoint, no clean exit
    proc = subprocess.Popen([str(SPARK_SUBMIT), "--master", "local[2]", str(ROOT / "examples" / "image_classifier.py"),
                             "--epochs", "3", "--partitions", "1", "--checkpoint", str(ckpt)],
                            cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 600
    try:
        while not glob.glob(str(ckpt / "checkpoint-*.ddw")):
            assert proc.poll() is None, proc.stderr.read().decode()[-4000:]
            assert time.monotonic() < deadline, "no checkpoint after 600 s"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(60)
        proc.stderr.close()
    written = sorted(glob.glob(str(ckpt / "checkpoint-*.ddw")))
    assert [_completed(p) for p in written] == [1], "killed after epoch 1's checkpoint, before epoch 2's"

    # one partition: Downpour is sequential, so an uninterrupted run is the reference to the digit
    data = load_rdds(spark.sparkContext, 1)
    try:
        straight = run(spark, epochs=3, partitions=1, data=data, log=lambda *_: None)
        resumed = run(spark, epochs=3, partitions=1, data=data, checkpoint=str(ckpt), resume=True,
                      log=lambda *_: None)
    finally:
        for rdd in data:
            rdd.unpersist()
    assert [h["epoch"] for h in resumed["history"]] == [2, 3]
    assert resumed["accuracy"] >= 0.9
    # Adam's moments and the batch-norm statistics came back with the weights: the same network
    assert abs(resumed["accuracy"] - straight["accuracy"]) <= 0.005, (resumed["accuracy"], straight["accuracy"])
    for ours, theirs in zip(resumed["history"], straight["history"][1:]):   # (equal to the digit in our runs)
        assert abs(ours["accuracy"] - theirs["accuracy"]) <= 0.005, (resumed["history"], straight["history"])
