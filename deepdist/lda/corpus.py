"""The Gibbs sampler's corpus on Spark: one flat block per partition.

The vocabulary is deepdist's one Spark vocabulary builder, :func:`deepdist.vocabulary.build_vocabulary`
(re-exported here with :class:`~deepdist.vocabulary.Vocabulary`, where the sampler has always
imported them from).

:func:`make_blocks` turns an RDD of documents into an RDD with exactly one :class:`Block` per
partition: the documents as flat int32 arrays (offsets, word ids, topic assignments), which
the kernels of :mod:`deepdist.lda.sampler` read without any per-token Python work.

Example (``local[2]``)::

    >>> tokens = sc.textFile("docs.txt").map(str.split)                 # doctest: +SKIP
    >>> vocab = build_vocabulary(tokens, min_count=5, max_df=0.5)       # doctest: +SKIP
    >>> blocks = make_blocks(tokens, vocab, num_topics=20, seed=0)      # doctest: +SKIP
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import ConfigurationError
from ..vocabulary import Vocabulary, build_vocabulary

log = logging.getLogger(__name__)

__all__ = ["Vocabulary", "Block", "build_vocabulary", "make_blocks", "to_word_ids"]


def to_word_ids(document, vocabulary: Vocabulary | None, num_words: int) -> np.ndarray:
    """One document as int32 word ids.

    A document is a list of string tokens (mapped through ``vocabulary``), of word ids, of
    ``(word_id, count)`` pairs (a gensim bag of words), or ``(doc_id, one of those)``.
    """
    if isinstance(document, tuple) and len(document) == 2 and not np.isscalar(document[1]):
        document = document[1]
    if isinstance(document, np.ndarray):
        ids = document.astype(np.int32, copy=False).ravel()
    else:
        document = list(document)
        if not document:
            return np.zeros(0, np.int32)
        first = document[0]
        if isinstance(first, str):
            if vocabulary is None:
                raise ConfigurationError("documents of string tokens need a vocabulary")
            return vocabulary.ids(document)
        if isinstance(first, (tuple, list)):
            pairs = np.asarray(document, dtype=np.int64).reshape(-1, 2)
            if (pairs[:, 1] < 0).any():
                raise ConfigurationError("bag-of-words counts must be >= 0")
            ids = np.repeat(pairs[:, 0], pairs[:, 1]).astype(np.int32)
        else:
            ids = np.asarray(document, dtype=np.int64).astype(np.int32)
    if ids.size and (ids.min() < 0 or ids.max() >= num_words):
        raise ConfigurationError(f"word ids must lie in [0, {num_words}), got [{ids.min()}, {ids.max()}]")
    return ids


def topic_dtype(num_topics: int):
    """The narrowest unsigned type that holds topics 0..num_topics-1 (int32 beyond uint16)."""
    return np.uint8 if num_topics <= 0x100 else np.uint16 if num_topics <= 0x10000 else np.int32


def _narrow(ids: np.ndarray) -> np.ndarray:
    """Non-negative int32 ids as uint8 or uint16 when they fit (unchanged otherwise)."""
    if ids.dtype != np.int32 or not ids.size:
        return ids
    top = int(ids.max())
    if int(ids.min()) < 0 or top > 0xFFFF:
        return ids
    return ids.astype(np.uint8 if top <= 0xFF else np.uint16)


class Block:
    """One partition's documents and topic assignments, as flat arrays.

    Attributes:
        partition: the RDD partition it belongs to.
        offsets: int64 (D+1,); document d is ``words[offsets[d]:offsets[d+1]]``.
        words: int32 (N,) word ids.
        topics: int32 (N,) topic assignments z.

    Pickled (Spark's cache and its transfers), ``words`` and ``topics`` take the narrowest
    unsigned type that holds them.
        rows: int64 sorted distinct word ids of the partition (the rows it pulls).
        report: what the last iteration's task reported (a dict), or None.
        job: the Gibbs job whose sampling produced ``topics`` (-1: none yet). A block Spark
            rebuilt after losing it carries an older job than its neighbours.
    """

    __slots__ = ("partition", "offsets", "words", "topics", "rows", "report", "job")

    def __init__(self, partition, offsets, words, topics, rows=None, report=None, job=-1):
        self.partition = partition
        self.offsets = offsets
        self.words = words
        self.topics = topics
        self.rows = rows
        self.report = report
        self.job = job

    def __getstate__(self):
        state = {name: getattr(self, name) for name in self.__slots__}
        # Spark copies a cached block between the JVM and Python workers about three times a job
        # and holds it in executor memory: word ids and topics travel in the narrowest unsigned
        # type that holds them (K <= 256: a byte a topic), and widen back to int32 on arrival
        for name in ("words", "topics"):
            state[name] = _narrow(state[name])
        return state

    def __setstate__(self, state):
        self.job = -1
        for name, value in state.items():
            if name in ("words", "topics") and value.dtype != np.int32:
                value = value.astype(np.int32)
            setattr(self, name, value)

    def evolve(self, topics, report, job=None) -> "Block":
        return Block(self.partition, self.offsets, self.words, topics, self.rows, report,
                     self.job if job is None else job)

    @property
    def num_tokens(self) -> int:
        return int(self.words.shape[0])


def make_blocks(documents_rdd, vocabulary: Vocabulary | None, num_words: int):
    """An RDD with one :class:`Block` per partition of ``documents_rdd`` (topics all zero).

    Empty documents (after the vocabulary's filters) are dropped.
    """
    def build(index, documents):
        arrays = [to_word_ids(d, vocabulary, num_words) for d in documents]
        arrays = [a for a in arrays if a.size]
        lengths = np.fromiter((a.size for a in arrays), dtype=np.int64, count=len(arrays))
        offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        words = np.ascontiguousarray(np.concatenate(arrays) if arrays else np.zeros(0, np.int32), np.int32)
        rows = np.flatnonzero(np.bincount(words, minlength=num_words)).astype(np.int64)
        yield Block(index, offsets, words, np.zeros_like(words), rows)

    return documents_rdd.mapPartitionsWithIndex(build, preservesPartitioning=True)
