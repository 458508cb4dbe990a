"""The Gibbs sampler's corpus on Spark: a vocabulary counted by Spark, one flat block per partition.

:func:`build_vocabulary` counts tokens on the executors (``reduceByKey``) and keeps those seen
at least ``min_count`` times, in at most ``max_df`` of the documents, and not stop words. Only
the surviving vocabulary reaches the driver. With ``hash_buckets`` the vocabulary is bounded
instead (dist_lda's "low-bit hash trick"): a token's id is a stable hash (CRC-32, the same in
every process) modulo the number of buckets, and each bucket is labelled by its most frequent
tokens.

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
import zlib

import numpy as np

from ..errors import ConfigurationError

log = logging.getLogger(__name__)

__all__ = ["Vocabulary", "Block", "build_vocabulary", "make_blocks", "to_word_ids"]


def _hash(token: str, buckets: int) -> int:
    return zlib.crc32(token.encode("utf-8")) % buckets


class Vocabulary:
    """Maps tokens to word ids: a dictionary, or a hash into ``buckets`` buckets.

    Attributes:
        id2word: list, column -> word (for hashed vocabularies, the bucket's frequent tokens
            joined by ``|``).
        buckets: the number of hash buckets, or None for a dictionary.
        stop_words: tokens always dropped (hashed vocabularies drop them before hashing).
        kept: for a hashed vocabulary, a boolean mask of the buckets that passed the filters.
    """

    def __init__(self, id2word, buckets: int | None = None, stop_words=(), kept=None):
        self.id2word = list(id2word)
        self.buckets = buckets
        self.stop_words = frozenset(stop_words or ())
        self.kept = None if kept is None else np.asarray(kept, dtype=bool)
        self._token2id = None if buckets else {w: i for i, w in enumerate(self.id2word)}

    def __len__(self) -> int:
        return len(self.id2word)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_token2id"] = None  # rebuilt on first use, smaller to ship
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    @property
    def token2id(self) -> dict:
        if self._token2id is None and not self.buckets:
            self._token2id = {w: i for i, w in enumerate(self.id2word)}
        return self._token2id

    def ids(self, tokens) -> np.ndarray:
        """The word ids (int32) of ``tokens``; unknown, filtered and stop-word tokens are dropped."""
        if self.buckets:
            stop, buckets, kept = self.stop_words, self.buckets, self.kept
            out = [_hash(t, buckets) for t in tokens if t not in stop]
            ids = np.asarray(out, dtype=np.int32)
            return ids[kept[ids]] if kept is not None and ids.size else ids
        lookup = self.token2id
        return np.fromiter((lookup[t] for t in tokens if t in lookup), dtype=np.int32)

    def to_json(self) -> dict:
        return {"id2word": self.id2word, "buckets": self.buckets, "stop_words": sorted(self.stop_words),
                "kept": None if self.kept is None else np.flatnonzero(self.kept).tolist()}

    @classmethod
    def from_json(cls, data: dict) -> "Vocabulary":
        kept = None
        if data.get("kept") is not None:
            kept = np.zeros(data["buckets"], dtype=bool)
            kept[np.asarray(data["kept"], dtype=np.int64)] = True
        return cls(data["id2word"], data.get("buckets"), data.get("stop_words", ()), kept)


def _count_tokens(documents, stop):
    counts: dict = {}
    for tokens in documents:
        seen = {}
        for t in tokens:
            if t in stop:
                continue
            seen[t] = seen.get(t, 0) + 1
        for t, c in seen.items():
            cf, df = counts.get(t, (0, 0))
            counts[t] = (cf + c, df + 1)
    return iter(counts.items())


def _check_filters(min_count, max_df, max_vocab, hash_buckets):
    if not isinstance(min_count, int) or min_count < 1:
        raise ConfigurationError(f"min_count must be an integer >= 1, got {min_count!r}")
    if not (isinstance(max_df, (int, float)) and 0 < max_df):
        raise ConfigurationError(f"max_df must be a fraction in (0, 1] of the documents or a number "
                                 f"of documents > 1, got {max_df!r}")
    if max_vocab is not None and (not isinstance(max_vocab, int) or max_vocab < 1):
        raise ConfigurationError(f"max_vocab must be None or an integer >= 1, got {max_vocab!r}")
    if hash_buckets is not None and (not isinstance(hash_buckets, int) or hash_buckets < 2):
        raise ConfigurationError(f"hash_buckets must be None or an integer >= 2, got {hash_buckets!r}")


def build_vocabulary(tokens_rdd, *, min_count: int = 1, max_df: float = 1.0, stop_words=(),
                     max_vocab: int | None = None, hash_buckets: int | None = None) -> Vocabulary:
    """Count the vocabulary of an RDD of token lists on Spark.

    Parameters:
        min_count: keep tokens (or buckets) seen at least this many times in all.
        max_df: keep tokens in at most this fraction of the documents (a float <= 1) or this
            many documents (> 1).
        stop_words: tokens dropped before counting.
        max_vocab: then keep the ``max_vocab`` most frequent tokens (dictionary only).
            At most this many tokens reach the driver.
        hash_buckets: hash tokens into this many ids instead of keeping a dictionary; the
            driver then holds only ``hash_buckets`` counts and labels.

    Dictionary ids are given by decreasing frequency, ties by token, so the vocabulary does
    not depend on the partitioning.
    """
    _check_filters(min_count, max_df, max_vocab, hash_buckets)
    stop = frozenset(stop_words or ())
    counts = tokens_rdd.mapPartitions(lambda docs: _count_tokens(docs, stop)).reduceByKey(
        lambda a, b: (a[0] + b[0], a[1] + b[1]))
    num_docs = tokens_rdd.count()
    df_limit = max_df * num_docs if max_df <= 1 else max_df
    if hash_buckets:
        def bucket(kv):
            token, (cf, df) = kv
            return _hash(token, hash_buckets), (cf, df, [(cf, token)])

        def merge(a, b):  # summed counts; the three most frequent tokens as the label
            return a[0] + b[0], a[1] + b[1], sorted(a[2] + b[2], key=lambda p: (-p[0], p[1]))[:3]

        buckets = counts.map(bucket).reduceByKey(merge).collect()
        id2word = [f"#{i}" for i in range(hash_buckets)]
        kept = np.zeros(hash_buckets, dtype=bool)
        for b, (cf, df, top) in buckets:
            id2word[b] = "|".join(t for _, t in top)
            # a bucket's df sums its tokens' dfs: an upper bound, so max_df filters conservatively
            kept[b] = cf >= min_count and df <= df_limit
        log.info("hashed vocabulary: %d of %d buckets used, %d kept, from %d documents",
                 len(buckets), hash_buckets, int(kept.sum()), num_docs)
        return Vocabulary(id2word, hash_buckets, stop, kept)
    survivors = counts.filter(lambda kv: kv[1][0] >= min_count and kv[1][1] <= df_limit)
    rank = lambda kv: (-kv[1][0], kv[0])  # noqa: E731
    kept = survivors.takeOrdered(max_vocab, key=rank) if max_vocab else sorted(survivors.collect(), key=rank)
    if not kept:
        raise ConfigurationError(f"no token is left in the vocabulary (min_count={min_count}, "
                                 f"max_df={max_df}, {len(stop)} stop words, {num_docs} documents)")
    log.info("vocabulary of %d tokens from %d documents", len(kept), num_docs)
    return Vocabulary([t for t, _ in kept], None, stop)


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
