"""The word2vec vocabulary counted on Spark: word frequencies, raw words and sentences."""

from __future__ import annotations

__all__ = ["count_vocabulary"]

_TOTAL = ("", "total words")
_COUNT = ("", "sentences")


# -- vocabulary ----------------------------------------------------------------------------------
#: Up to this many partitions the word counts are merged in one stage (their counters reach the
#: driver); beyond it, by a shuffle (reduceByKey), so the driver never holds more than the vocabulary.
_MERGE_ON_DRIVER_MAX = 8


def count_vocabulary(sentences, min_count: int = 5) -> tuple[dict, int, int]:
    """``(word_freq, total_words, sentence_count)``: a distributed word count.

    ``word_freq`` holds the words seen at least ``min_count`` times. With few partitions
    each one's counter goes to the driver (one Spark stage: half the time of a shuffle
    on a small corpus); with many, a ``reduceByKey`` shuffle sums them on the executors
    and only the vocabulary is collected. The text itself never reaches the driver.
    """
    from collections import Counter
    from operator import add

    def counter(partition):
        counts, total, n = Counter(), 0, 0
        for sentence in partition:
            counts.update(sentence)
            total += len(sentence)
            n += 1
        return counts, total, n

    if sentences.getNumPartitions() <= _MERGE_ON_DRIVER_MAX:
        word_freq, total, n = Counter(), 0, 0
        for counts, words, count in sentences.mapPartitions(lambda part: [counter(part)]).collect():
            word_freq.update(counts)
            total += words
            n += count
        return {w: c for w, c in word_freq.items() if c >= min_count}, int(total), int(n)

    def pairs(partition):
        counts, total, n = counter(partition)
        yield _TOTAL, total
        yield _COUNT, n
        yield from counts.items()

    kept = (sentences.mapPartitions(pairs).reduceByKey(add, sentences.getNumPartitions())
            .filter(lambda kv: kv[1] >= min_count or kv[0] in (_TOTAL, _COUNT)).collect())
    word_freq = dict(kept)
    total, n = word_freq.pop(_TOTAL, 0), word_freq.pop(_COUNT, 0)
    return word_freq, int(total), int(n)


