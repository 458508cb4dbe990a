"""Evaluating word vectors: analogies, word-similarity correlation, held-out SGNS loss.

* :func:`analogy` — accuracy on ``questions-words.txt`` (Mikolov et al. 2013) with
  gensim's ``evaluate_word_analogies``, as score and coverage.
* :func:`wordsim` — Spearman correlation with ``wordsim353.tsv`` (Finkelstein et al. 2002).
* :class:`HeldoutSGNSLoss` — the skip-gram negative-sampling objective on articles
  kept out of training: for every (center ``c``, context ``o``) pair within the
  window, ``-log σ(v_c·u_o) - Σ_n log σ(-v_c·u_n)`` with negatives ``n`` drawn once,
  with a fixed seed, from the unigram^0.75 distribution, so every model is scored
  on the very same pairs and negatives.  Reported per held-out word.

Example::

    >>> from deepdist.word2vec.evaluate import HeldoutSGNSLoss, analogy, wordsim
    >>> loss = HeldoutSGNSLoss(vocab_counts, heldout_sentences)      # doctest: +SKIP
    >>> loss(model), analogy(model.wv)["score"], wordsim(model.wv)["spearman"]  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging

import numpy as np

from ..errors import ConfigurationError, CorpusError

__all__ = ["HeldoutSGNSLoss", "analogy", "wordsim"]

log = logging.getLogger(__name__)


def _datapath(name: str) -> str:
    from gensim.test.utils import datapath
    return datapath(name)


@contextlib.contextmanager
def _quiet_gensim():
    """gensim's evaluations log every section at INFO: keep them to warnings while one runs."""
    gensim_logger = logging.getLogger("gensim.models.keyedvectors")
    level = gensim_logger.level
    gensim_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        gensim_logger.setLevel(level)


def analogy(wv, path: str | None = None, restrict_vocab: int = 30_000) -> dict:
    """Analogy accuracy: ``{"score", "correct", "covered", "total", "coverage"}``.

    ``score`` is correct / covered (gensim's number); ``coverage`` is the share of
    all questions whose four words are among the ``restrict_vocab`` most frequent.
    """
    path = path or _datapath("questions-words.txt")
    with open(path, encoding="utf-8") as handle:
        total = sum(1 for line in handle if line.strip() and not line.startswith(":"))
    with _quiet_gensim():
        score, sections = wv.evaluate_word_analogies(path, restrict_vocab=restrict_vocab)
    overall = next(s for s in sections if s["section"] == "Total accuracy")
    correct, covered = len(overall["correct"]), len(overall["correct"]) + len(overall["incorrect"])
    return {"score": float(score), "correct": correct, "covered": covered, "total": total,
            "coverage": covered / total if total else 0.0}


def wordsim(wv, path: str | None = None) -> dict:
    """Word-similarity correlation: ``{"spearman", "pearson", "oov"}`` (oov as a share of pairs)."""
    path = path or _datapath("wordsim353.tsv")
    with _quiet_gensim():
        try:
            pearson, spearman, oov = wv.evaluate_word_pairs(path)
        except ValueError as err:  # gensim's word for "every pair is out of vocabulary" (or a bad file)
            raise CorpusError(f"no word pair of {path} can be scored: {err}") from err
    return {"spearman": float(spearman[0]), "pearson": float(pearson[0]), "oov": float(oov) / 100.0}


def _neg_log_sigmoid(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, -x)


class HeldoutSGNSLoss:
    """The skip-gram negative-sampling loss per word on held-out sentences.

    Parameters:
        word_counts: ``{word: count}`` of the training vocabulary (e.g. the model's
            ``wv`` counts); negatives come from ``count ** ns_exponent``.
        sentences: held-out token lists; tokens outside the vocabulary are dropped
            first, as gensim does when training.
        window: every context within ``window`` positions (no window shrinking,
            no subsampling: the evaluation is deterministic).
        negative: negatives per pair.
        seed: the negatives' seed; keep it fixed to compare models.

    Attributes:
        words_: held-out center words; pairs_: (center, context) pairs.

    Calling the evaluator on a gensim ``Word2Vec`` (negative sampling, so it has
    ``syn1neg``) returns the mean loss per held-out word: the summed pair losses
    divided by ``words_``.
    """

    def __init__(self, word_counts: dict, sentences, *, window: int = 5, negative: int = 5,
                 ns_exponent: float = 0.75, seed: int = 0):
        self.words = list(word_counts)
        index = {w: i for i, w in enumerate(self.words)}
        centers, contexts = [], []
        n_words = 0
        for sentence in sentences:
            ids = np.array([index[w] for w in sentence if w in index], np.int64)
            n = len(ids)
            n_words += n
            for offset in range(1, window + 1):
                if offset >= n:
                    break
                centers += [ids[:-offset], ids[offset:]]
                contexts += [ids[offset:], ids[:-offset]]
        self.centers = np.concatenate(centers) if centers else np.zeros(0, np.int64)
        self.contexts = np.concatenate(contexts) if contexts else np.zeros(0, np.int64)
        weights = np.array([word_counts[w] for w in self.words], np.float64) ** ns_exponent
        rng = np.random.default_rng(seed)
        self.negatives = rng.choice(len(self.words), size=(len(self.centers), negative), p=weights / weights.sum())
        self.words_ = n_words
        self.pairs_ = len(self.centers)
        if not n_words:
            raise CorpusError("no held-out word is in the vocabulary")

    def loss(self, vectors: np.ndarray, output: np.ndarray, rows: np.ndarray, chunk: int = 65_536) -> float:
        """The loss for input ``vectors`` and output ``output`` matrices; ``rows[i]`` is word i's row."""
        total = 0.0
        for start in range(0, self.pairs_, chunk):
            c = rows[self.centers[start:start + chunk]]
            o = rows[self.contexts[start:start + chunk]]
            n = rows[self.negatives[start:start + chunk]]
            v = vectors[c].astype(np.float64)
            positive = np.einsum("pd,pd->p", v, output[o])
            negative = np.einsum("pd,pkd->pk", v, output[n])
            total += _neg_log_sigmoid(positive).sum() + _neg_log_sigmoid(-negative).sum()
        return total / self.words_

    def __call__(self, model) -> float:
        """The loss per held-out word of a gensim ``Word2Vec`` trained with negative sampling."""
        if getattr(model, "syn1neg", None) is None or not len(model.syn1neg):
            raise ConfigurationError("the held-out SGNS loss needs a model trained with negative sampling (syn1neg)")
        key_to_index = model.wv.key_to_index
        missing = [w for w in self.words if w not in key_to_index]
        if missing:
            raise ConfigurationError(f"{len(missing)} evaluation words are not in the model's vocabulary, e.g. {missing[:3]}")
        rows = np.array([key_to_index[w] for w in self.words], np.int64)
        return self.loss(model.wv.vectors, model.syn1neg, rows)
