"""``build_dictionary``: deprecated, a gensim ``Dictionary`` from :func:`deepdist.vocabulary.build_vocabulary`.

It kept gensim's filter names (``no_below``, ``no_above``, ``keep_n``, ``keep_tokens``); deepdist
now has one vocabulary builder with one set of names. The same dictionary, token ids included, is::

    build_vocabulary(tokens, min_df=no_below, max_df=no_above, max_vocab=keep_n, keep_words=keep_tokens,
                     rank_by="documents", allow_empty=True).to_dictionary(order="first_seen")

which is gensim's ``Dictionary(docs).filter_extremes(no_below, no_above, keep_n, keep_tokens)``.
"""

from __future__ import annotations

import warnings

from ..validation import check_int, check_real
from ..vocabulary import _words, build_vocabulary

__all__ = ["build_dictionary"]


def build_dictionary(tokens_rdd, no_below: int = 5, no_above: float = 0.5, keep_n: int | None = 100000,
                     keep_tokens=None):
    """Deprecated: use ``build_vocabulary(...).to_dictionary(order="first_seen")`` (above).

    Parameters (gensim's ``filter_extremes``):
        no_below: keep tokens found in at least this many documents (``min_df``).
        no_above: keep tokens found in at most this fraction of the documents (``max_df``;
            ``int(no_above * num_docs)`` documents, as gensim rounds it, since a count is an integer).
        keep_n: then keep only the ``keep_n`` tokens in most documents (``max_vocab`` with
            ``rank_by="documents"``; ``None``: all).
        keep_tokens: tokens kept whatever their frequency (``keep_words``).

    Returns:
        the :class:`gensim.corpora.Dictionary` gensim's ``Dictionary(docs).filter_extremes(...)``
        gives: ``token2id``, ``dfs``, ``cfs``, ``num_docs``, ``num_pos`` and ``num_nnz``.
    """
    warnings.warn("build_dictionary(no_below, no_above, keep_n, keep_tokens) is deprecated: use "
                  "deepdist.vocabulary.build_vocabulary(min_df=, max_df=, max_vocab=, keep_words=, "
                  "rank_by='documents').to_dictionary(order='first_seen')", DeprecationWarning, stacklevel=2)
    check_int("no_below", no_below, minimum=0)
    check_real("no_above", no_above, minimum=0, maximum=1)
    check_int("keep_n", keep_n, minimum=0, none=True)
    _words("keep_tokens", keep_tokens)
    vocabulary = build_vocabulary(tokens_rdd, min_df=no_below, max_df=float(no_above), max_vocab=keep_n,
                                  keep_words=keep_tokens, rank_by="documents", allow_empty=True)
    return vocabulary.to_dictionary(order="first_seen")
