"""A gensim ``Dictionary`` counted on Spark: frequencies are reduced by key, text never leaves the executors.

gensim builds a :class:`~gensim.corpora.Dictionary` by streaming every document through one
process. Here each partition counts its own documents, ``reduceByKey`` adds the counts up per
token, the rare and the too-common tokens are dropped on the executors, and only the surviving
vocabulary (at most ``keep_n`` tokens with their counts) reaches the driver.

The result is the dictionary gensim would build, token ids included::

    Dictionary(docs).filter_extremes(no_below, no_above, keep_n)

gensim gives ids in order of first appearance (a document's new tokens in sorted order) and
keeps that order when it compacts the ids after filtering; here every token carries the
position of the first document that holds it, so the same order is rebuilt.

Example (``local[2]``)::

    >>> tokens = spark.sparkContext.parallelize([["a", "b"], ["b", "c"]] * 5)  # doctest: +SKIP
    >>> dictionary = build_dictionary(tokens, no_below=2, no_above=0.9)        # doctest: +SKIP
    >>> bow = tokens.map(dictionary.doc2bow)                                   # doctest: +SKIP
"""

from __future__ import annotations

import logging

from ..errors import ConfigurationError
from ..executors import ensure_executors

log = logging.getLogger(__name__)

__all__ = ["build_dictionary"]


def _count_partition(index, documents):
    """``(token, (df, cf, first_document))`` for each (document, distinct token) of a partition.

    One more pair, keyed ``None``, counts the partition's documents.
    """
    position = -1
    for position, document in enumerate(documents):
        counts = {}
        for token in document:
            if not isinstance(token, str):
                token = str(token, "utf-8")
            counts[token] = counts.get(token, 0) + 1
        first = (index, position)
        for token, count in counts.items():
            yield token, (1, count, first)
    yield None, (position + 1, 0, (index, 0))


def _add_counts(left, right):
    return left[0] + right[0], left[1] + right[1], min(left[2], right[2])


def _check(no_below, no_above, keep_n, keep_tokens):
    if not isinstance(no_below, int) or no_below < 0:
        raise ConfigurationError(f"no_below must be an integer >= 0 (documents), got {no_below!r}")
    if not 0.0 <= float(no_above) <= 1.0:
        raise ConfigurationError(f"no_above must be a fraction in [0, 1] of the documents, got {no_above!r}")
    if keep_n is not None and (not isinstance(keep_n, int) or keep_n < 0):
        raise ConfigurationError(f"keep_n must be None or an integer >= 0, got {keep_n!r}")
    if keep_tokens is not None and isinstance(keep_tokens, str):
        raise ConfigurationError("keep_tokens must be a collection of tokens, not one string")


def build_dictionary(tokens_rdd, no_below: int = 5, no_above: float = 0.5, keep_n: int | None = 100000,
                     keep_tokens=None):
    """Count a gensim ``Dictionary`` over an RDD of token lists, then filter it like gensim.

    Parameters:
        tokens_rdd: an RDD whose elements are documents, each a list of string tokens.
        no_below: keep tokens found in at least this many documents.
        no_above: keep tokens found in at most this fraction of the documents
            (``int(no_above * num_docs)``, as gensim rounds it).
        keep_n: then keep only the ``keep_n`` tokens in most documents (``None``: all).
            At most this many tokens and their counts are collected on the driver.
        keep_tokens: tokens kept whatever their frequency (gensim's ``keep_tokens``).

    Returns:
        a :class:`gensim.corpora.Dictionary` with ``token2id``, ``dfs``, ``cfs``, ``num_docs``,
        ``num_pos`` and ``num_nnz`` as gensim's ``Dictionary(docs).filter_extremes(...)`` has them.
    """
    from gensim.corpora import Dictionary

    _check(no_below, no_above, keep_n, keep_tokens)
    ensure_executors(tokens_rdd.context)
    counts = tokens_rdd.mapPartitionsWithIndex(_count_partition).reduceByKey(_add_counts)
    counts = counts.persist()
    try:
        # documents, and totals over all (token, document) pairs: non-zeros and positions
        num_docs, num_nnz, num_pos = counts.map(
            lambda kv: (kv[1][0], 0, 0) if kv[0] is None else (0, kv[1][0], kv[1][1])).fold(
            (0, 0, 0), lambda a, b: (a[0] + b[0], a[1] + b[1], a[2] + b[2]))
        no_above_abs = int(no_above * num_docs)
        keep = frozenset(keep_tokens or ())

        def good(kv):
            token, (df, _, _) = kv
            return token is not None and no_below <= df <= no_above_abs or token in keep

        def rank(kv):  # gensim: most documents first, ties in order of first appearance
            token, (df, _, first) = kv
            return (-(num_docs if token in keep else df), first, token)

        survivors = counts.filter(good)
        kept = survivors.collect() if keep_n is None else survivors.takeOrdered(keep_n, key=rank)
    finally:
        counts.unpersist()
    # compactify keeps the order of the ids gensim first gave: first appearance, then token
    kept.sort(key=lambda kv: (kv[1][2], kv[0]))
    dictionary = Dictionary()
    dictionary.token2id = {token: i for i, (token, _) in enumerate(kept)}
    dictionary.dfs = {i: df for i, (_, (df, _, _)) in enumerate(kept)}
    dictionary.cfs = {i: cf for i, (_, (_, cf, _)) in enumerate(kept)}
    dictionary.num_docs, dictionary.num_pos, dictionary.num_nnz = num_docs, num_pos, num_nnz
    log.info("dictionary of %d tokens from %d documents (%d positions); kept tokens in %d..%d documents",
             len(kept), num_docs, num_pos, no_below, no_above_abs)
    return dictionary
