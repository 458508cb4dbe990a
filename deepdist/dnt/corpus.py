"""A DNT fit's documents on Spark: L2-normalised term frequencies, one shard per partition.

Each partition becomes one :class:`~deepdist.dnt.memo.Shard` holding ``batches_per_partition``
batches of about equal size (in the partition's order) and an empty memo per batch. Empty
documents (no word of the vocabulary) carry no direction and are left out.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigurationError, DeepDistError, find_tagged_error
from ..lda.corpus import to_word_ids
from .memo import Batch, Shard, empty_memo

__all__ = ["term_frequencies", "make_shards", "shard_summary", "collect_summaries"]


def _weighted_pairs(document):
    """``(ids, weights)`` of a bag of ``(word id, weight)`` pairs with real weights, else None."""
    if isinstance(document, tuple) and len(document) == 2 and not np.isscalar(document[1]):
        document = document[1]
    if not isinstance(document, (list, tuple)) or not document or not isinstance(document[0], (tuple, list)):
        return None
    pairs = np.asarray(document, dtype=np.float64).reshape(-1, 2)
    if np.all(pairs[:, 1] == np.round(pairs[:, 1])) and np.all(pairs[:, 1] >= 0):
        return None  # counts: the common path
    return pairs[:, 0].astype(np.int64), pairs[:, 1]


def term_frequencies(document, vocabulary, num_words: int):
    """``(word ids, weights)``: the document's distinct words and its tf vector scaled to unit norm.

    A bag of ``(word id, weight)`` with real weights (of either sign) is taken as the vector
    itself: the model lives on the sphere, and corpora drawn from it are such vectors.
    """
    weighted = _weighted_pairs(document)
    if weighted is not None:
        ids, values = weighted
        if ids.size and (ids.min() < 0 or ids.max() >= num_words):
            raise ConfigurationError(f"word ids must lie in [0, {num_words}), got [{ids.min()}, {ids.max()}]")
        if not np.all(np.isfinite(values)):
            raise ConfigurationError("document weights must be finite")
        words, inverse = np.unique(ids, return_inverse=True)
        sums = np.bincount(inverse, weights=values)
        norm = np.linalg.norm(sums)
        if norm == 0:
            return np.zeros(0, np.int64), np.zeros(0)
        return words, sums / norm
    ids = to_word_ids(document, vocabulary, num_words)
    if not ids.size:
        return np.zeros(0, np.int64), np.zeros(0)
    words, counts = np.unique(ids, return_counts=True)
    weights = counts.astype(np.float64)
    return words.astype(np.int64), weights / np.linalg.norm(weights)


def make_shards(docs_rdd, vocabulary, num_words: int, batches: int, capacity: int):
    """The RDD of shards (one per partition) of ``docs_rdd``."""

    def build(partition, docs):
        try:
            rows = [tf for tf in (term_frequencies(d, vocabulary, num_words) for d in docs) if tf[0].size]
        except DeepDistError as err:  # Spark passes the driver a string: the tag rebuilds the error there
            raise type(err)(err.tagged()) from None
        bounds = np.linspace(0, len(rows), batches + 1).astype(int)
        parts = [Batch.from_documents(rows[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        yield Shard(partition, parts, [empty_memo(capacity) for _ in parts])

    return docs_rdd.mapPartitionsWithIndex(build, preservesPartitioning=True)


def shard_summary(shard):
    """``(documents, words with a non-zero sum, their sums of x)``: for the data's centroid."""
    if not shard.batches:
        return 0, np.zeros(0, np.int64), np.zeros(0)
    ids = np.concatenate([b.words[b.cols] for b in shard.batches])
    values = np.concatenate([b.data for b in shard.batches])
    words, inverse = np.unique(ids, return_inverse=True)
    return sum(b.num_docs for b in shard.batches), words, np.bincount(inverse, weights=values)


def collect_summaries(shards) -> list:
    """:func:`shard_summary` of every shard (the job that builds and caches them), with a bad
    document's error raised as itself rather than as Spark's failure of the job."""
    try:
        return shards.map(shard_summary).collect()
    except Exception as err:
        tagged = find_tagged_error(str(err))
        if tagged is None:
            raise
        raise tagged from None
