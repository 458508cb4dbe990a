"""Cutting the lineage of a Gibbs fit's cached state, so a lost block is never rebuilt from far back.

Every ``lineage_every`` jobs :mod:`deepdist.lda.gibbs_fit` cuts the lineage of the RDD of blocks:

* with a checkpoint directory set on the SparkContext, by a reliable ``checkpoint()``
  (``"reliable"``);
* otherwise (``"driver"``) the assignments of the cut come to the driver with the job's reports
  (one byte a token for K <= 256) and sit in a parameter of the DeepDist server, and the next
  job's input is the cached word-id blocks (recomputable from the documents' own lineage) with
  each partition's assignments pulled back from the server (:class:`Restore`). No shared file
  system is needed; the cost is N bytes up to the driver and back per cut, and N bytes of driver
  memory. Spark's ``localCheckpoint()`` is not used: its blocks die with their executor, and a
  fit that lost one could not continue.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from .corpus import topic_dtype

__all__ = ["CutLayout", "Restore", "cut", "plan_cuts", "reserve", "unrecoverable"]

log = logging.getLogger("deepdist.lda.gibbs")  # the estimator's: one logger for all of a fit's messages

#: The assignments of a lineage cut sit on the server in rows of this many bytes: a partition's
#: pull then names a handful of rows, not one index per token.
_CUT_ROW_BYTES = 4096
#: Assignments held on the driver beyond this many bytes get a warning naming the reliable checkpoint.
_CUT_WARN_BYTES = 1 << 30


def plan_cuts(sc, jobs: int, lineage_every: int) -> str | None:
    """How a fit of ``jobs`` sampling jobs cuts the lineage: ``"reliable"``, ``"driver"`` or None
    (it runs too few jobs to need a cut)."""
    if jobs <= lineage_every:  # the last job is never cut: its state outlives the server
        return None
    return "reliable" if sc.getCheckpointDir() else "driver"


class CutLayout:
    """Where each partition's assignments sit in the server's ``cut_topics`` parameter.

    The parameter is an int64 (rows, ``_CUT_ROW_BYTES`` / 8) array holding the narrowed
    assignments as bytes; each partition starts on a row of its own.
    """

    def __init__(self, tokens_by_partition: dict, num_topics: int):
        self.dtype = np.dtype(topic_dtype(num_topics))
        self.first_row, row = {}, 0
        for partition in sorted(tokens_by_partition):
            self.first_row[partition] = row
            row += -(-tokens_by_partition[partition] * self.dtype.itemsize // _CUT_ROW_BYTES)
        self.shape = (max(row, 1), _CUT_ROW_BYTES // 8)

    @property
    def nbytes(self) -> int:
        return self.shape[0] * _CUT_ROW_BYTES

    def store(self, params, topics_by_partition) -> int:
        """Write the assignments into the server's array (under its lock); return the bytes written."""
        flat = params["cut_topics"].view(np.uint8).reshape(-1)
        written = 0
        for partition, topics in topics_by_partition.items():
            data = np.ascontiguousarray(topics, dtype=self.dtype).view(np.uint8)
            start = self.first_row[partition] * _CUT_ROW_BYTES
            flat[start:start + data.size] = data
            written += data.size
        return written


def _block_tokens(block):
    return block.partition, block.num_tokens


def reserve(words, model: dict, num_topics: int, lineage_every: int) -> CutLayout:
    """Lay out the driver-held cuts of the blocks ``words`` and reserve their parameter in ``model``."""
    layout = CutLayout(dict(words.map(_block_tokens).collect()), num_topics)
    model["cut_topics"] = np.zeros(layout.shape, np.int64)
    log.info("GibbsLDA: lineage cuts every %d jobs keep the assignments on the driver (%.1f MB "
             "reserved in the model server); set a checkpoint directory on the SparkContext "
             "for reliable checkpoints instead", lineage_every, layout.nbytes / 1e6)
    if layout.nbytes > _CUT_WARN_BYTES:
        log.warning("GibbsLDA: the driver holds %.1f GB of assignments for lineage cuts; "
                    "sc.setCheckpointDir(a directory every node reads, e.g. on HDFS) cuts the "
                    "lineage with reliable checkpoints instead", layout.nbytes / 1e9)
    return layout


class Restore:
    """``mapPartitions`` over the word-id blocks: each block with the assignments of the cut after
    job ``job``, pulled from the server (what a lineage cut's RDD computes)."""

    def __init__(self, client, layout: CutLayout, job: int):
        self.client, self.layout, self.job = client, layout, job

    def __call__(self, blocks):
        for block in blocks:
            yield self._restore(block)

    def _restore(self, block):
        layout = self.layout
        size = block.num_tokens * layout.dtype.itemsize
        if not size:
            return block.evolve(np.zeros(0, np.int32), None, self.job)
        first = layout.first_row[block.partition]
        rows = np.arange(first, first + -(-size // _CUT_ROW_BYTES), dtype=np.int64)
        _, arrays = self.client.pull_rows({"cut_topics": rows})
        data = np.ascontiguousarray(arrays["cut_topics"].values).view(np.uint8).reshape(-1)[:size]
        return block.evolve(data.view(layout.dtype).astype(np.int32), None, self.job)


def report_with_topics(block):
    """The job's report plus the block's assignments, narrowed: a driver-held cut keeps them."""
    dtype = topic_dtype(int(block.report["topic_counts"].shape[0]))
    return {**block.report, "cut_topics": block.topics.astype(dtype)}


def cut(dd, model: dict, words, layout: CutLayout, reports, job: int):
    """Cut the lineage after ``job``: the assignments in ``reports`` go to the server (``model``
    is its whole model on the driver), and the next job starts from the cached word ids plus
    those. Returns the new state and what it cost."""
    started = time.perf_counter()
    topics = {r["partition"]: r.pop("cut_topics") for r in reports}
    with dd.store.lock:
        written = layout.store(model, topics)
    dd.rewrote("cut_topics")
    state = words.mapPartitions(Restore(dd.client, layout, job), preservesPartitioning=True)
    info = {"cut": "driver", "cut_bytes": written, "cut_held_bytes": layout.nbytes,
            "cut_seconds": time.perf_counter() - started}
    log.info("GibbsLDA: lineage cut after job %d: %d partitions' assignments (%.2f MB) held by the "
             "model server, %.3fs", job, len(topics), written / 1e6, info["cut_seconds"])
    return state, info


def unrecoverable(err):
    """``err``, or when Spark lost a block that no lineage can rebuild, an error naming the fix."""
    text = str(err)
    if "CHECKPOINT_RDD_BLOCK_ID_NOT_FOUND" not in text and "Checkpoint block" not in text:
        return err
    from ..core import TrainingFailedError

    return TrainingFailedError(
        "GibbsLDA: an executor was lost with a block of the documents that was cut with localCheckpoint(), "
        "which only that executor held, so Spark cannot rebuild it. Give fit() documents whose lineage "
        "Spark can recompute (persist() them rather than localCheckpoint()), or checkpoint them reliably "
        "(sc.setCheckpointDir on storage every node reads, then docs.checkpoint()).\n"
        f"Spark said: {text[:1000]}")
