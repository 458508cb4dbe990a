"""The word2vec vocabulary counted on Spark: word frequencies, raw words and sentences.

The counting is deepdist's one vocabulary builder, :func:`deepdist.vocabulary.build_vocabulary`;
this is the shape gensim's ``Word2Vec.build_vocab_from_freq`` takes.
"""

from __future__ import annotations

from ..vocabulary import build_vocabulary

__all__ = ["count_vocabulary"]


def count_vocabulary(sentences, min_count: int = 5) -> tuple[dict, int, int]:
    """``(word_freq, total_words, sentence_count)``: a distributed word count.

    ``word_freq`` holds the words seen at least ``min_count`` times, in order of first
    appearance, as gensim's ``build_vocab`` counts them (its frequency sort keeps that order
    among equal counts); ``total_words`` counts every word, the rare ones too. The text itself
    never reaches the driver.
    """
    vocabulary = build_vocabulary(sentences, min_count=min_count, count_documents=False, allow_empty=True)
    return vocabulary.word_freq, vocabulary.num_tokens, vocabulary.num_docs
