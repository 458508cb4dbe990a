"""Checkpoints of a Gibbs fit: one file per checkpoint, in deepdist's one on-disk format.

``checkpoint_dir/sweep-NNNNNN.ddw`` (NNNNNN: sweeps done) is a :mod:`deepdist.persist` frame:
the arrays n_wk, n_k, α and every partition's assignments (gathered on the driver: N int32),
and in its header the vocabulary, the sweeps done, α, β, the seed and each topic's top words
(readable without deepdist: the header is JSON). ``resume=True`` continues from the latest one;
directories ``sweep-NNNNNN/`` written before the one format are still read, for one release.
"""

from __future__ import annotations

import glob
import gzip
import json
import logging
import os
import re
import warnings
from dataclasses import dataclass

import numpy as np

from .. import persist
from ..errors import ConfigurationError
from ..vocabulary import Vocabulary

__all__ = ["FORMAT", "Checkpoint", "latest", "read", "write"]

log = logging.getLogger("deepdist.lda.gibbs")  # the estimator's: one logger for all of a fit's messages

FORMAT = "deepdist.lda.GibbsLDA-checkpoint/1"
_NAME = re.compile(r"sweep-(\d+)(\.ddw)?$")
#: top words per topic in a checkpoint's header
_TOP_WORDS = 50


@dataclass
class Checkpoint:
    """A checkpoint as read back: enough to restart the fit where it stood."""

    path: str
    sweeps: int
    alpha: float
    vocabulary: Vocabulary
    topics: dict  # partition -> int32 assignments


def latest(directory) -> str | None:
    """The checkpoint of ``directory`` with the most sweeps done, or None."""
    found = []
    for path in glob.glob(os.path.join(glob.escape(os.fspath(directory)), "sweep-*")):
        match = _NAME.search(os.path.basename(path))
        if match and (match.group(2) or os.path.isdir(path)):
            found.append((int(match.group(1)), bool(match.group(2)), path))
    return max(found)[2] if found else None


def write(directory, model, state, sweeps: int, seed: int) -> str:
    """Write the checkpoint after ``sweeps`` sweeps: ``model`` (a :class:`.GibbsLDAModel` of the
    server's counts) and the assignments of the RDD of blocks ``state``; return its path."""
    parts = sorted(state.map(lambda b: (b.partition, b.topics)).collect(), key=lambda p: p[0])
    arrays = {"word_topic": model.word_topic_, "topic_totals": model.topic_totals_, "alpha": model.alpha_,
              "partitions": np.array([p for p, _ in parts], np.int64),
              "sizes": np.array([t.size for _, t in parts], np.int64),
              "topics": np.concatenate([t for _, t in parts]) if parts else np.zeros(0, np.int32)}
    meta = {"format": FORMAT, "sweeps": sweeps, "num_topics": model.num_topics, "alpha": float(model.alpha_[0]),
            "beta": model.beta, "seed": seed, "vocabulary": model.vocabulary.to_json(),
            "topics": [{"topic": k, "tokens": int(model.topic_totals_[k]), "words": words}
                       for k, words in model.show_topics(num_words=_TOP_WORDS)]}
    path = os.path.join(os.fspath(directory), f"sweep-{sweeps:06d}.ddw")
    persist.write_frame(path, arrays, meta)
    log.info("GibbsLDA checkpoint after %d sweeps in %s", sweeps, path)
    return path


def read(path: str, num_topics: int) -> Checkpoint:
    """The checkpoint in ``path``, refused if it was written for another number of topics."""
    if os.path.isdir(path):
        arrays, meta = _read_legacy(path)
    else:
        arrays, meta = persist.read_frame(path, expect=FORMAT)
    if meta["num_topics"] != num_topics:
        raise ConfigurationError(f"the checkpoint {path} has num_topics={meta['num_topics']}, "
                                 f"this estimator {num_topics}")
    cuts = np.concatenate([[0], np.cumsum(arrays["sizes"])])
    topics = {int(p): arrays["topics"][cuts[i]:cuts[i + 1]].copy() for i, p in enumerate(arrays["partitions"])}
    log.info("GibbsLDA: resuming from %s after %d sweeps", path, meta["sweeps"])
    return Checkpoint(path, int(meta["sweeps"]), float(meta["alpha"]), Vocabulary.from_json(meta["vocabulary"]),
                      topics)


def _read_legacy(path: str):
    """``(arrays, meta)`` of a checkpoint directory (state.npz, meta.json, vocabulary.json.gz)."""
    warnings.warn(f"{path} is a GibbsLDA checkpoint in the old directory format, which the next release will "
                  "not read", DeprecationWarning, stacklevel=3)
    with open(os.path.join(path, "meta.json"), encoding="utf-8") as f:
        meta = json.load(f)
    with gzip.open(os.path.join(path, "vocabulary.json.gz"), "rt", encoding="utf-8") as f:
        meta["vocabulary"] = json.load(f)
    with np.load(os.path.join(path, "state.npz"), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in ("partitions", "sizes", "topics")}
    return arrays, meta
