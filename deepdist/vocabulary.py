"""One Spark vocabulary builder for every model family: counted on the executors, filtered once.

:func:`build_vocabulary` counts, for every token of an RDD of token lists, its occurrences (the
collection frequency, cf), the documents that hold it (document frequency, df) and the first
document that holds it, plus the corpus totals (documents, tokens, distinct tokens per document
summed). It then keeps the tokens that pass one set of filters:

* ``min_count``: at least this many occurrences in all (word2vec's ``min_count``);
* ``min_df``: in at least this many documents (gensim's ``no_below``);
* ``max_df``: in at most this fraction (<= 1) or this number (> 1) of the documents (gensim's
  ``no_above``, scikit-learn's ``max_df``);
* ``stop_words``: never kept; ``keep_words``: kept whatever their counts (gensim's ``keep_tokens``);
* ``max_vocab``: then only the most frequent, ranked by occurrences or, as gensim's ``keep_n``
  does, by documents (``rank_by``).

With ``hash_buckets`` the vocabulary is bounded instead (dist_lda's "low-bit hash trick"): a
token's id is a stable hash (CRC-32, the same in every process) modulo the number of buckets,
the filters apply to the buckets' summed counts, and each bucket is labelled by its most
frequent tokens.

The result, a :class:`Vocabulary`, carries the counts and converts to what each family needs:
word ids for the Gibbs sampler (:meth:`Vocabulary.ids`), a gensim ``Dictionary`` for online LDA
(:meth:`Vocabulary.to_dictionary`, with gensim's own ids if asked), word frequencies for
word2vec (:attr:`Vocabulary.word_freq`), and JSON for model files.

The text never reaches the driver. With few partitions each one's counters do (one Spark stage,
merged on the driver); with many, a ``reduceByKey`` shuffle adds them up on the executors, the
filters run there, and only the surviving vocabulary is collected.

Example (``local[2]``)::

    >>> tokens = sc.textFile("docs.txt").map(str.split)                     # doctest: +SKIP
    >>> vocab = build_vocabulary(tokens, min_df=5, max_df=0.5)              # doctest: +SKIP
    >>> # gensim's Dictionary(docs).filter_extremes(5, 0.5, keep_n=None), its ids included:
    >>> dictionary = vocab.to_dictionary(order="first_seen")                # doctest: +SKIP
    >>> vocab.ids(["a", "b"]), vocab.word_freq["a"], vocab.num_docs         # doctest: +SKIP
"""

from __future__ import annotations

import logging
import zlib
from collections import Counter

import numpy as np

from .errors import ConfigurationError, CorpusError
from .validation import check_bool, check_choice, check_int, check_real

log = logging.getLogger(__name__)

__all__ = ["Vocabulary", "build_vocabulary", "vocabulary_from_id2word"]

#: Up to this many partitions each one's counters reach the driver and are merged there (one
#: Spark stage); beyond it a shuffle merges them, so the driver holds only the vocabulary.
_MERGE_ON_DRIVER_MAX = 8
#: A token's first document is one int: ``partition << _POSITION_BITS | position in the partition``.
_POSITION_BITS = 40
#: The shuffle key of a partition's totals (documents, tokens, non-zeros); no token is None.
_TOTALS = None


def _hash(token: str, buckets: int) -> int:
    return zlib.crc32(token.encode("utf-8")) % buckets


class Vocabulary:
    """Maps tokens to word ids: a dictionary, or a hash into ``buckets`` buckets; with their counts.

    Dictionary ids are given by decreasing number of occurrences, ties by token, so they do not
    depend on the partitioning.

    Attributes:
        id2word: list, id -> token (for hashed vocabularies, the bucket's frequent tokens joined
            by ``|``).
        buckets: the number of hash buckets, or None for a dictionary.
        stop_words: tokens always dropped (hashed vocabularies drop them before hashing).
        kept: for a hashed vocabulary, a boolean mask of the buckets that passed the filters.
        cfs, dfs: int64 arrays, id -> occurrences and documents (a bucket's: its tokens' sums),
            or None for a vocabulary made from a list of words (``dfs`` also when the documents
            were not counted).
        first_doc: int64 array, id -> the first document that holds the token, in RDD order
            (``partition << 40 | position``), or None: it gives gensim's ids (:meth:`to_dictionary`).
        first_seen: int64 array, id -> the token's rank in the order tokens first appear, or None:
            word2vec's order (:attr:`word_freq`).
        num_docs, num_tokens, num_nnz: the documents, the tokens and the sum over documents of
            their distinct tokens (0 when the documents were not counted), counting the tokens
            the filters dropped (gensim's ``num_docs``, ``num_pos``, ``num_nnz``).
    """

    def __init__(self, id2word, buckets: int | None = None, stop_words=(), kept=None, *, cfs=None, dfs=None,
                 first_doc=None, first_seen=None, num_docs: int = 0, num_tokens: int = 0, num_nnz: int = 0):
        self.id2word = list(id2word)
        self.buckets = buckets
        self.stop_words = frozenset(stop_words or ())
        self.kept = None if kept is None else np.asarray(kept, dtype=bool)
        self.cfs = None if cfs is None else np.asarray(cfs, dtype=np.int64)
        self.dfs = None if dfs is None else np.asarray(dfs, dtype=np.int64)
        self.first_doc = None if first_doc is None else np.asarray(first_doc, dtype=np.int64)
        self.first_seen = None if first_seen is None else np.asarray(first_seen, dtype=np.int64)
        self.num_docs, self.num_tokens, self.num_nnz = int(num_docs), int(num_tokens), int(num_nnz)
        self._token2id = None

    def __len__(self) -> int:
        return len(self.id2word)

    def __repr__(self) -> str:
        kind = f"{self.buckets} hash buckets" if self.buckets else f"{len(self)} tokens"
        return f"<Vocabulary of {kind} from {self.num_docs} documents>"

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_token2id"] = None  # rebuilt on first use, smaller to ship
        return state

    def __setstate__(self, state):
        for name in ("cfs", "dfs", "first_doc", "first_seen"):  # pickled before the counts were kept
            state.setdefault(name, None)
        for name in ("num_docs", "num_tokens", "num_nnz"):
            state.setdefault(name, 0)
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

    # -- conversions ----------------------------------------------------------------------------
    def _needs_tokens(self, what: str) -> None:
        if self.buckets:
            raise ConfigurationError(f"{what} needs a dictionary of tokens; this vocabulary hashes tokens into "
                                     f"{self.buckets} buckets (build it without hash_buckets)")

    def _gensim_order(self) -> list:
        """The ids in the order gensim's ``Dictionary(docs)`` numbers the tokens: by first document,
        a document's new tokens sorted."""
        if self.first_doc is None:
            raise ConfigurationError("order='first_seen' needs the document each token first appears in; this "
                                     "vocabulary was not counted by build_vocabulary")
        words, first = self.id2word, self.first_doc.tolist()
        return sorted(range(len(words)), key=lambda i: (first[i], words[i]))

    @property
    def word_freq(self) -> dict:
        """``{token: occurrences}`` in order of first appearance (the order of gensim's raw
        vocabulary, which breaks ties in word2vec's frequency sort), for ``build_vocab_from_freq``."""
        self._needs_tokens("word_freq")
        if self.cfs is None:
            raise ConfigurationError("word_freq needs counts; this vocabulary was made from a list of words")
        order = range(len(self)) if self.first_seen is None else np.argsort(self.first_seen, kind="stable").tolist()
        words, cfs = self.id2word, self.cfs.tolist()
        return {words[i]: cfs[i] for i in order}

    def to_dictionary(self, order: str = "frequency"):
        """A gensim :class:`~gensim.corpora.Dictionary` with these tokens and counts.

        ``order="frequency"`` keeps this vocabulary's ids; ``order="first_seen"`` gives gensim's:
        tokens in order of the first document that holds them, a document's new tokens sorted,
        the order ``Dictionary(docs)`` gives and ``filter_extremes`` keeps.
        """
        from gensim.corpora import Dictionary

        check_choice("order", order, ("frequency", "first_seen"))
        self._needs_tokens("to_dictionary()")
        ids = self._gensim_order() if order == "first_seen" else range(len(self))
        dictionary = Dictionary()
        dictionary.token2id = {self.id2word[old]: new for new, old in enumerate(ids)}
        for name in ("cfs", "dfs"):
            counts = getattr(self, name)
            if counts is not None:
                counts = counts.tolist()
                setattr(dictionary, name, {new: counts[old] for new, old in enumerate(ids)})
        dictionary.num_docs, dictionary.num_pos, dictionary.num_nnz = self.num_docs, self.num_tokens, self.num_nnz
        return dictionary

    def to_json(self) -> dict:
        def listed(array):
            return None if array is None else array.tolist()

        return {"id2word": self.id2word, "buckets": self.buckets, "stop_words": sorted(self.stop_words),
                "kept": None if self.kept is None else np.flatnonzero(self.kept).tolist(),
                "cfs": listed(self.cfs), "dfs": listed(self.dfs), "first_doc": listed(self.first_doc),
                "first_seen": listed(self.first_seen),
                "num_docs": self.num_docs, "num_tokens": self.num_tokens, "num_nnz": self.num_nnz}

    @classmethod
    def from_json(cls, data: dict) -> "Vocabulary":
        """A vocabulary from :meth:`to_json` (files written before the counts were kept read too)."""
        kept = None
        if data.get("kept") is not None:
            kept = np.zeros(data["buckets"], dtype=bool)
            kept[np.asarray(data["kept"], dtype=np.int64)] = True
        return cls(data["id2word"], data.get("buckets"), data.get("stop_words", ()), kept,
                   cfs=data.get("cfs"), dfs=data.get("dfs"), first_doc=data.get("first_doc"),
                   first_seen=data.get("first_seen"), num_docs=data.get("num_docs", 0), num_tokens=data.get("num_tokens", 0),
                   num_nnz=data.get("num_nnz", 0))


# -- counting, on the executors ----------------------------------------------------------------------
def _count_partition(index, documents, count_documents=True):
    """One partition's counts: ``(cfs, dfs, first_docs, (documents, tokens, non-zeros))``.

    ``cfs`` and ``dfs`` are Counters of occurrences and documents (``dfs`` empty and non-zeros 0
    unless ``count_documents``); ``first_docs`` lists, in the Counter's order, each token's first
    document (offset by the partition: ``index << 40``). The loops over tokens are Counter's and
    set's, in C: the order in which tokens first appear is the Counter's own, and a document's
    new tokens are the Counter's growth.
    """
    cfs, dfs = Counter(), Counter()
    grown, grown_in = [0], [-1]  # the Counter's size after each document that brought new tokens, that document
    position, tokens, nnz = -1, 0, 0
    for position, document in enumerate(documents):
        if isinstance(document, (str, bytes)):
            raise CorpusError(f"a document must be a list of tokens, got a string: {document[:40]!r}")
        cfs.update(document)
        tokens += len(document)
        if count_documents:
            distinct = set(document)
            dfs.update(distinct)
            nnz += len(distinct)
        if len(cfs) != grown[-1]:
            grown.append(len(cfs))
            grown_in.append(position)
    docs = np.asarray(grown_in, np.int64)[np.searchsorted(np.asarray(grown), np.arange(len(cfs)), side="right")]
    counts = cfs, dfs, (docs + (index << _POSITION_BITS)).tolist()
    if not all(isinstance(token, str) for token in cfs):
        counts = _decoded(*counts)
    return (*counts, (position + 1, tokens, nnz))


def _decoded(cfs, dfs, first_docs):
    """The counts with bytes tokens as UTF-8 strings (gensim's ``doc2bow`` decodes them too)."""
    out_cfs, out_dfs, out_docs = Counter(), Counter(), {}
    for token, first in zip(cfs, first_docs):  # in order of first appearance, so the output is too
        text = token if isinstance(token, str) else str(token, "utf-8")
        out_cfs[text] += cfs[token]
        out_dfs[text] += dfs[token]
        out_docs[text] = min(first, out_docs.get(text, first))
    return out_cfs, out_dfs, list(out_docs.values())


def _token_pairs(index, documents, count_documents=True):
    """``(token, (cf, df, first_doc, first_seen))`` for the shuffle, and the partition's totals
    ``(None, (documents, tokens, non-zeros))`` (three numbers: :func:`_add_counts` tells them apart)."""
    cfs, dfs, first_docs, totals = _count_partition(index, documents, count_documents)
    yield _TOTALS, totals
    offset = index << _POSITION_BITS
    for rank, (token, cf, first) in enumerate(zip(cfs, cfs.values(), first_docs), offset):
        yield token, (cf, dfs[token], first, rank)


def _add_counts(a, b):
    if len(a) == 4:  # a token: sum cf and df, the earliest first appearance
        return a[0] + b[0], a[1] + b[1], min(a[2], b[2]), min(a[3], b[3])
    return tuple(x + y for x, y in zip(a, b))  # the totals


def _merge_on_driver(parts):
    """Each partition's counts (in partition order) merged: ``(cfs, dfs, first_doc, totals)``.

    The merged Counter's order is the order in which tokens first appear in the whole RDD (a
    partition's new tokens come after the earlier partitions'): it stands for ``first_seen``.
    """
    cfs, dfs, first_doc, totals = Counter(), Counter(), {}, (0, 0, 0)
    for part_cfs, part_dfs, part_docs, part_totals in parts:
        cfs.update(part_cfs)
        dfs.update(part_dfs)
        part_doc = dict(zip(part_cfs, part_docs))
        part_doc.update(first_doc)  # an earlier partition's first document wins
        first_doc = part_doc
        totals = tuple(x + y for x, y in zip(totals, part_totals))
    return cfs, dfs, first_doc, totals


class _Filters:
    """Which tokens (or buckets) survive; it travels to the executors in the shuffle path."""

    def __init__(self, min_count, min_df, df_limit, stop, keep, num_docs):
        self.min_count, self.min_df, self.df_limit = min_count, min_df, df_limit
        self.stop, self.keep = stop, keep
        #: whether any filter but min_count can drop a token
        self.more = bool(stop or keep) or min_df > 1 or df_limit < num_docs

    def token(self, item) -> bool:
        token = item[0]
        if token is _TOTALS or token in self.stop:
            return False
        cf, df = item[1][0], item[1][1]
        return token in self.keep or (cf >= self.min_count and self.min_df <= df <= self.df_limit)

    def select(self, cfs, dfs, first_doc) -> list:
        """The items that pass, from the counts merged on the driver (the rare tokens, most of a
        vocabulary, are dropped by one comprehension before any item is built); ``first_seen`` is
        the rank in ``cfs``, whose order is the order of first appearance."""
        least = self.min_count
        chosen = [(rank, token) for rank, (token, cf) in enumerate(cfs.items()) if cf >= least]
        if self.keep:
            chosen += [(rank, token) for rank, token in enumerate(cfs) if token in self.keep and cfs[token] < least]
        items = [(token, (cfs[token], dfs[token], first_doc[token], rank)) for rank, token in chosen]
        return [item for item in items if self.token(item)] if self.more else items

    def bucket(self, cf, df, has_keep) -> bool:
        return has_keep or (cf >= self.min_count and self.min_df <= df <= self.df_limit)


def _ranking(rank_by: str, keep, num_docs: int, num_tokens: int):
    """The key ``max_vocab`` keeps the smallest of: occurrences, ties by token; or, as gensim's
    ``keep_n``, documents, ties by first appearance. Kept words rank as if in every document
    (or as every token), as gensim ranks its ``keep_tokens``."""
    if rank_by == "count":
        return lambda item: (-(num_tokens if item[0] in keep else item[1][0]), item[0])
    return lambda item: (-(num_docs if item[0] in keep else item[1][1]), item[1][2], item[0])


# -- hashing -----------------------------------------------------------------------------------------
def _bucket_pair(buckets: int, keep):
    def pair(item):
        token, (cf, df, _, _) = item
        return _hash(token, buckets), (cf, df, [(cf, token)], token in keep)
    return pair


def _merge_buckets(a, b):
    """Summed counts; the three most frequent tokens as the label; whether a kept word is in."""
    return a[0] + b[0], a[1] + b[1], sorted(a[2] + b[2], key=lambda p: (-p[0], p[1]))[:3], a[3] or b[3]


def _hashed(buckets_counts, hash_buckets, filters, max_vocab, rank_by, stop, totals, count_documents) -> Vocabulary:
    id2word = [f"#{i}" for i in range(hash_buckets)]
    cfs, dfs = np.zeros(hash_buckets, np.int64), np.zeros(hash_buckets, np.int64)
    kept = np.zeros(hash_buckets, dtype=bool)
    for b, (cf, df, top, has_keep) in buckets_counts:
        id2word[b] = "|".join(t for _, t in top)
        cfs[b], dfs[b] = cf, df
        # a bucket's df sums its tokens' dfs: an upper bound, so max_df filters conservatively
        kept[b] = filters.bucket(cf, df, has_keep)
    if max_vocab is not None and kept.sum() > max_vocab:
        survivors = np.flatnonzero(kept)
        score = cfs if rank_by == "count" else dfs
        order = np.lexsort((survivors, -score[survivors]))  # most frequent, ties by bucket
        kept[survivors[order[max_vocab:]]] = False
    log.info("hashed vocabulary: %d of %d buckets used, %d kept, from %d documents",
             len(buckets_counts), hash_buckets, int(kept.sum()), totals[0])
    return Vocabulary(id2word, hash_buckets, stop, kept, cfs=cfs, dfs=dfs if count_documents else None,
                      num_docs=totals[0],
                      num_tokens=totals[1], num_nnz=totals[2])


# -- the builder -------------------------------------------------------------------------------------
def _words(name: str, value) -> frozenset:
    if value is None:
        return frozenset()
    if isinstance(value, (str, bytes)):
        raise ConfigurationError(f"{name} must be a collection of tokens, got one string {value!r}")
    try:
        return frozenset(value)
    except TypeError as err:
        raise ConfigurationError(f"{name} must be a collection of tokens, got {type(value).__name__}") from err


def build_vocabulary(tokens_rdd, *, min_count: int = 1, min_df: int = 1, max_df: float = 1.0,
                     max_vocab: int | None = None, stop_words=(), keep_words=(), hash_buckets: int | None = None,
                     rank_by: str = "count", count_documents: bool = True, allow_empty: bool = False) -> Vocabulary:
    """Count the vocabulary of an RDD of token lists on Spark and filter it.

    Parameters:
        tokens_rdd: an RDD whose elements are documents, each a list of string tokens.
        min_count: keep tokens seen at least this many times in all.
        min_df: keep tokens in at least this many documents.
        max_df: keep tokens in at most this fraction of the documents (<= 1) or this many
            documents (> 1).
        max_vocab: then keep only the ``max_vocab`` highest ranked (``rank_by``); at most this
            many tokens (or bucket labels) reach the driver in the shuffle path.
        stop_words: tokens never kept (and not hashed).
        keep_words: tokens kept whatever their counts (those in the corpus; not stop words).
        hash_buckets: hash tokens into this many ids instead of keeping a dictionary; the
            driver then holds only ``hash_buckets`` counts and labels.
        rank_by: ``"count"`` (occurrences, ties by token) or ``"documents"`` (as gensim's
            ``keep_n``: documents, ties by first appearance).
        count_documents: count each token's documents (``dfs``, ``num_nnz``). Without them
            (word2vec needs none) the count makes no set of each document's tokens and takes
            about half the time; ``min_df``, ``max_df`` and ``rank_by="documents"`` need them.
        allow_empty: return an empty vocabulary when no token passes, instead of refusing.

    Returns:
        a :class:`Vocabulary` with the counts (``cfs``, ``dfs``) of the tokens kept and the
        corpus totals (``num_docs``, ``num_tokens``, ``num_nnz``) of all tokens.
    """
    check_int("min_count", min_count, minimum=0)
    check_int("min_df", min_df, minimum=0)
    check_real("max_df", max_df, minimum=0)
    check_int("max_vocab", max_vocab, minimum=0, none=True)
    check_int("hash_buckets", hash_buckets, minimum=2, none=True)
    check_choice("rank_by", rank_by, ("count", "documents"))
    check_bool("count_documents", count_documents)
    check_bool("allow_empty", allow_empty)
    if not count_documents and (min_df > 1 or max_df != 1.0 or rank_by == "documents"):
        raise ConfigurationError(f"min_df, max_df and rank_by='documents' need count_documents=True, got "
                                 f"min_df={min_df!r}, max_df={max_df!r}, rank_by={rank_by!r}")
    stop = _words("stop_words", stop_words)
    keep = _words("keep_words", keep_words) - stop

    merged, counts, totals = _count(tokens_rdd, count_documents)
    try:
        num_docs = totals[0]
        df_limit = max_df * num_docs if max_df <= 1 else max_df
        filters = (_Filters(min_count, min_df, df_limit, stop, keep, num_docs) if count_documents
                   else _Filters(min_count, 0, float("inf"), stop, keep, num_docs))  # every df is 0
        if hash_buckets:
            return _hashed(_bucket_counts(merged, counts, hash_buckets, stop, keep), hash_buckets, filters,
                           max_vocab, rank_by, stop, totals, count_documents)
        kept = _select(merged, counts, filters, max_vocab, _ranking(rank_by, keep, num_docs, totals[1]))
    finally:
        if counts is not None:
            counts.unpersist()
    if not kept and not allow_empty:
        raise ConfigurationError(f"no token is left in the vocabulary (min_count={min_count}, min_df={min_df}, "
                                 f"max_df={max_df}, max_vocab={max_vocab}, {len(stop)} stop words, "
                                 f"{num_docs} documents)")
    kept.sort()  # by token (each is there once), then stably by decreasing count: C comparisons
    kept = [kept[i] for i in np.argsort([-c[0] for _, c in kept], kind="stable")]
    log.info("vocabulary of %d tokens from %d documents (%d tokens)", len(kept), num_docs, totals[1])
    columns = list(zip(*(c for _, c in kept))) or [(), (), (), ()]
    return Vocabulary([token for token, _ in kept], None, stop, cfs=columns[0],
                      dfs=columns[1] if count_documents else None, first_doc=columns[2], first_seen=columns[3],
                      num_docs=num_docs, num_tokens=totals[1], num_nnz=totals[2])


def _count(tokens_rdd, count_documents: bool):
    """``(merged, None, totals)`` merged on the driver, or ``(None, counts RDD, totals)`` by a shuffle.

    ``merged`` is ``(cfs, dfs, first_doc)``, dicts keyed by token; the counts RDD
    holds items ``(token, (cf, df, first_doc, first_seen))`` (and the totals), persisted: the
    caller unpersists it.
    """
    from .executors import ensure_executors

    ensure_executors(tokens_rdd.context)  # the counting runs deepdist's code on them
    partitions = tokens_rdd.getNumPartitions()
    if partitions <= _MERGE_ON_DRIVER_MAX:
        parts = tokens_rdd.mapPartitionsWithIndex(
            lambda index, docs: [_count_partition(index, docs, count_documents)]).collect()
        *merged, totals = _merge_on_driver(parts)
        return merged, None, totals
    counts = tokens_rdd.mapPartitionsWithIndex(lambda index, docs: _token_pairs(index, docs, count_documents))
    counts = counts.reduceByKey(_add_counts, partitions).persist()
    # (not lookup(): it hashes the key on the driver, which needs PYTHONHASHSEED set there)
    totals = (counts.filter(lambda item: item[0] is _TOTALS).values().collect() or [(0, 0, 0)])[0]
    return None, counts, totals


def _select(merged, counts, filters, max_vocab, rank) -> list:
    """The items that pass ``filters``, at most ``max_vocab`` of them, smallest ``rank`` first."""
    if counts is not None:
        survivors = counts.filter(filters.token)
        return survivors.collect() if max_vocab is None else survivors.takeOrdered(max_vocab, key=rank)
    survivors = filters.select(*merged)
    return survivors if max_vocab is None else sorted(survivors, key=rank)[:max_vocab]


def _bucket_counts(merged, counts, hash_buckets: int, stop, keep) -> list:
    """``(bucket, (cf, df, label tokens, holds a kept word))`` of the buckets that tokens fell in."""
    pair = _bucket_pair(hash_buckets, keep)
    if counts is not None:
        return (counts.filter(lambda item: item[0] is not _TOTALS and item[0] not in stop)
                .map(pair).reduceByKey(_merge_buckets).collect())
    cfs, dfs, _ = merged
    buckets: dict = {}
    for bucket, value in (pair((token, (cf, dfs[token], 0, 0))) for token, cf in cfs.items() if token not in stop):
        buckets[bucket] = _merge_buckets(buckets[bucket], value) if bucket in buckets else value
    return list(buckets.items())


def vocabulary_from_id2word(id2word) -> Vocabulary:
    """A :class:`Vocabulary` of a given id → word map: a list, a dict ``{id: word}`` or a gensim
    ``Dictionary`` (what estimators take as ``id2word`` when the documents are word ids)."""
    if hasattr(id2word, "token2id"):  # a gensim Dictionary
        words = [None] * len(id2word.token2id)
        for token, i in id2word.token2id.items():
            words[i] = token
    elif isinstance(id2word, dict):
        words = [str(id2word[i]) for i in range(len(id2word))]
    else:
        words = [str(w) for w in id2word]
    return Vocabulary(words)
