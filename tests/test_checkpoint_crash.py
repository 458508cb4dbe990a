"""Checkpoints survive a driver killed mid-write: the newest one is whole, and what the dead
writer left behind is cleaned up by the next one."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np

from deepdist import persist
from deepdist.checkpoint import Checkpointer

WRITER = r"""
import sys, numpy as np
from deepdist import persist
from deepdist.checkpoint import Checkpointer

class Store:                 # what Checkpointer.write reads of a ParameterStore
    def __init__(self):
        import threading
        self.lock, self.version = threading.RLock(), 0
        self.params = {"w": np.zeros(6_000_000)}     # 48 MB: a write takes a while

store, ckpt = Store(), Checkpointer(sys.argv[1], keep=2)
print("ready", flush=True)
while True:
    store.version += 1
    store.params["w"][...] = store.version            # every value names its checkpoint
    ckpt.write(store, epochs_completed=store.version)
"""


def _kill_mid_write(proc, directory, after, timeout=20.0):
    """SIGKILL ``proc`` while one of its checkpoint files is partly written (after ``after`` s)."""
    time.sleep(after)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            sizes = [entry.stat().st_size for entry in os.scandir(directory)]
        except FileNotFoundError:
            sizes = []
        if any(0 < size < 40_000_000 for size in sizes):
            break
    proc.send_signal(signal.SIGKILL)


def test_a_writer_killed_mid_write_leaves_a_whole_newest_checkpoint(tmp_path):
    rng = random.Random(0)
    directory = str(tmp_path / "ckpt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, directory], stdout=subprocess.PIPE, env=env)
        assert proc.stdout.readline().strip() == b"ready"
        _kill_mid_write(proc, directory, after=rng.random() * 0.3)
        proc.wait(timeout=30)
        frame = Checkpointer(directory).latest()
        if frame is None:
            continue                                   # killed before the first rename
        version = frame.meta["version"]
        w = frame.arrays["w"]
        assert w.shape == (6_000_000,) and np.all(w == version), "a torn checkpoint"
        assert frame.meta["epochs_completed"] == version
    # the next writer in the directory removes what the killed ones left half-written
    Checkpointer(directory)
    assert not [name for name in os.listdir(directory) if name.startswith(persist.TMP_PREFIX)]
    assert len([name for name in os.listdir(directory) if name.endswith(".ddw")]) <= 2
