"""The fitted Gibbs LDA model: topics, fold-in, held-out scoring, save / load, gensim export.

A :class:`GibbsLDAModel` is the ``model_`` of a fitted :class:`deepdist.lda.GibbsLDA`. It holds the exact
word-topic counts n_wk of the last iteration and derives everything else from them:
φ_kw = (n_wk + β) / (n_k + Vβ) (``topic_word_``), fold-in of new documents with φ fixed
(``transform``), and held-out scoring by document completion (``log_perplexity``). It needs no
Spark and no server; it saves to one file of deepdist's on-disk format (:mod:`deepdist.persist`:
the arrays, with the vocabulary and the history in the header; no pickle).
"""

from __future__ import annotations

import gzip
import json
import math
import os
import warnings

import numpy as np

from .. import persist
from ..errors import ConfigurationError
from ..vocabulary import Vocabulary
from . import evaluate, sampler
from .corpus import to_word_ids

__all__ = ["GibbsLDAModel"]

#: ``meta["format"]`` of a saved model
FORMAT = "deepdist.lda.GibbsLDAModel/1"
#: the directory layout :meth:`GibbsLDAModel.save` wrote before the one format (read for one release)
_LEGACY_FORMAT = 1


def plain(value):
    """``value`` with numpy scalars as Python numbers and non-finite floats as None: JSON for a header."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class GibbsLDAModel:
    """LDA topics learned by collapsed Gibbs sampling.

    Attributes:
        word_topic_: int32 (V, K), n_wk, the number of training tokens of word w assigned to
            topic k at the last iteration.
        topic_totals_: int64 (K,), n_k = Σ_w n_wk.
        topic_word_: float64 (K, V), φ; row k is p(w | k) = (n_wk + β) / (n_k + Vβ) and sums to 1.
        alpha_: float64 (K,), the document-topic prior α (symmetric; optimised if asked).
        beta: the topic-word prior β (η in gensim).
        id2word: list, column -> word.
        vocabulary: the :class:`~deepdist.lda.corpus.Vocabulary` that maps tokens to columns.
        history_: one dict per training job (epoch, log-likelihood, seconds, traffic, ...).
    """

    def __init__(self, word_topic, topic_totals, alpha, beta, vocabulary: Vocabulary, history=None):
        self.word_topic_ = np.ascontiguousarray(word_topic, dtype=np.int32)
        self.topic_totals_ = np.asarray(topic_totals, dtype=np.int64)
        self.alpha_ = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (self.num_topics,)).copy()
        self.beta = float(beta)
        self.vocabulary = vocabulary
        self.history_ = list(history or [])
        self._phi = None

    @property
    def num_topics(self) -> int:
        return int(self.word_topic_.shape[1])

    @property
    def num_words(self) -> int:
        return int(self.word_topic_.shape[0])

    @property
    def id2word(self) -> list:
        return self.vocabulary.id2word

    @property
    def topic_word_(self) -> np.ndarray:
        if self._phi is None:
            self._phi = sampler.topic_word_distribution(self.word_topic_, self.topic_totals_, self.beta)
        return self._phi

    # -- reading the topics -----------------------------------------------------------------
    def show_topics(self, num_topics: int | None = None, num_words: int = 10, formatted: bool = False):
        """The top words of each topic, largest topics first.

        Returns ``[(topic, [(word, p(word | topic)), ...]), ...]``, or with ``formatted=True``
        ``[(topic, "0.031*word + 0.020*other + ..."), ...]`` as gensim's ``show_topics``.
        """
        order = np.argsort(-self.topic_totals_, kind="stable")
        if num_topics is not None:
            order = order[:num_topics]
        phi = self.topic_word_
        result = []
        for k in order:
            top = np.argsort(-phi[k], kind="stable")[:num_words]
            words = [(self.id2word[w], float(phi[k, w])) for w in top]
            if formatted:
                words = " + ".join(f"{p:.3f}*{w}" for w, p in words)
            result.append((int(k), words))
        return result

    def _documents(self, docs):
        arrays = [to_word_ids(d, self.vocabulary, self.num_words) for d in docs]
        return sampler.pack_documents(arrays)

    # -- inference ------------------------------------------------------------------------------
    def transform(self, docs, *, iterations: int = 50, burn_in: int = 10, seed: int = 0) -> np.ndarray:
        """Document-topic distributions θ (D, K) of new documents, by Gibbs fold-in with φ fixed.

        ``docs`` are token lists (mapped through the vocabulary; unknown tokens are dropped),
        word-id lists or gensim bags of words. Rows sum to 1.
        """
        offsets, words = self._documents(docs)
        return sampler.fold_in(offsets, words, self.topic_word_, self.alpha_, iterations=iterations,
                               burn_in=burn_in, seed=seed)

    def log_perplexity(self, docs, *, method: str = "em", **options) -> float:
        """Held-out log-likelihood per token by document completion (Wallach et al. 2009).

        θ is estimated on the first half of each document with φ fixed, and the second half is
        scored. ``method="em"`` folds in by EM (:mod:`deepdist.lda.evaluate`, the evaluator
        shared by every trainer and the benchmarks); ``"gibbs"`` by Gibbs sampling
        (:func:`deepdist.lda.sampler.completion_log_likelihood`). Perplexity is
        ``exp(-log_perplexity)``.
        """
        arrays = [to_word_ids(d, self.vocabulary, self.num_words) for d in docs]
        if method == "em":
            total, tokens = evaluate.completion_log_likelihood(arrays, self.topic_word_, self.alpha_, **options)
        elif method == "gibbs":
            offsets, words = sampler.pack_documents(arrays)
            total, tokens = sampler.completion_log_likelihood(offsets, words, self.topic_word_, self.alpha_,
                                                              **options)
        else:
            raise ConfigurationError(f"method must be 'em' or 'gibbs', got {method!r}")
        if tokens == 0:
            raise ConfigurationError("the held-out documents have no tokens to score")
        return total / tokens

    # -- persistence ------------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write the model to the file ``path`` (:mod:`deepdist.persist`, atomically)."""
        path = os.fspath(path)
        if os.path.isdir(path):
            raise ConfigurationError(f"{path} is a directory (a model saved by an older version?); "
                                     "GibbsLDAModel.save writes one file: give a file name")
        arrays = {"word_topic": self.word_topic_, "topic_totals": self.topic_totals_, "alpha": self.alpha_}
        meta = {"format": FORMAT, "num_topics": self.num_topics, "num_words": self.num_words,
                "beta": self.beta, "vocabulary": self.vocabulary.to_json(), "history": plain(self.history_)}
        persist.write_frame(path, arrays, meta)

    @classmethod
    def load(cls, path) -> "GibbsLDAModel":
        """Read a model written by :meth:`save` (or, for one release, an older version's directory)."""
        path = os.fspath(path)
        if os.path.isdir(path):
            return cls._load_legacy(path)
        arrays, meta = persist.read_frame(path, expect=FORMAT)
        return cls(arrays["word_topic"], arrays["topic_totals"], arrays["alpha"], meta["beta"],
                   Vocabulary.from_json(meta["vocabulary"]), meta.get("history"))

    @classmethod
    def _load_legacy(cls, path: str) -> "GibbsLDAModel":
        """A directory of ``model.json``, ``model.npz`` and ``vocabulary.json.gz`` (the format before
        :mod:`deepdist.persist`)."""
        warnings.warn(f"{path} holds a GibbsLDAModel in the old directory format, which the next release "
                      "will not read; load it and save() it again to convert it", DeprecationWarning, stacklevel=3)
        with open(os.path.join(path, "model.json"), encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("format") != _LEGACY_FORMAT:
            raise ConfigurationError(f"{path} holds a model of format {meta.get('format')!r}; "
                                     f"this version reads format {_LEGACY_FORMAT} directories and {FORMAT!r} files")
        with gzip.open(os.path.join(path, "vocabulary.json.gz"), "rt", encoding="utf-8") as f:
            vocabulary = Vocabulary.from_json(json.load(f))
        with np.load(os.path.join(path, "model.npz"), allow_pickle=False) as arrays:
            return cls(arrays["word_topic"], arrays["topic_totals"], arrays["alpha"], meta["beta"],
                       vocabulary, meta.get("history"))

    def to_gensim(self):
        """A :class:`gensim.models.LdaModel` whose topics equal these (``get_topics()`` == φ).

        Its variational λ is set to n_wk + β (``state.sstats`` = n_wk transposed, η = β), so
        gensim's normalised topics are exactly φ; ``expElogbeta`` follows from λ as gensim
        computes it. Useful for pyLDAvis and ``CoherenceModel``.
        """
        from gensim.corpora import Dictionary
        from gensim.models import LdaModel

        dictionary = Dictionary()
        dictionary.token2id = {word: i for i, word in enumerate(self.id2word)}
        dictionary.id2token = dict(enumerate(self.id2word))
        dictionary.num_docs = 0
        model = LdaModel(id2word=dictionary, num_topics=self.num_topics, alpha=self.alpha_.copy(),
                         eta=self.beta, dtype=np.float64)
        model.state.sstats = self.word_topic_.T.astype(np.float64)
        model.sync_state()
        return model
