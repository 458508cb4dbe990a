"""The PNAS titles of the DNTs paper: ten epochs of bags of words, with the paper's train/test split.

Hu, Ho, Dubey & Xing, "Large-scale Distributed Dependent Nonparametric Trees" (ICML 2015),
evaluate on titles of PNAS papers 1915–2005 cut into ten epochs (``T1`` … ``T10``, oldest
first), about every tenth title held out.  The files, from the authors' repository, are:

* ``pnas_vocab.text``: one word per line; line ``i`` (from 0) is word id ``i``;
* ``T{k}_train.dat`` and ``T{k}_test.dat``: a first line with the number of documents, then one
  document per line, ``N id count id count …`` (``N`` distinct words, then ``N`` pairs).
  The authors' ``T5_test.dat`` … ``T10_test.dat`` have no count line; a file whose first line
  holds more than one number is read as one without it.  ``T9_test.dat`` holds three empty
  titles (``0``), which the authors' pooled ``ALL_test.dat`` leaves out, and so does
  :func:`read_pnas` unless ``drop_empty=False``.

The data has no licence: read it where it lies (:func:`pnas_directory`), never copy it into a
project.

Example::

    >>> from deepdist.datasets.pnas import read_pnas
    >>> train = read_pnas(split="train")               # the ten epochs, pooled
    >>> indptr, indices, data = train.normalized_tf()  # unit rows, float64
    >>> train.bows()[0][:2]                            # gensim-style bag of words
    [(2, 1), (3, 1)]
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigurationError, CorpusError

log = logging.getLogger(__name__)

VOCAB_FILE = "pnas_vocab.text"
N_EPOCHS = 10
ENV_VAR = "DEEPDIST_PNAS_DIR"
SPLITS = ("train", "test")


def pnas_directory(directory: str | os.PathLike | None = None) -> Path:
    """The directory of the PNAS files: ``directory``, else ``$DEEPDIST_PNAS_DIR``, else ``<repo>/../shared/data/pnas``.

    Raises :class:`~deepdist.errors.CorpusError` naming every place looked in when none holds
    ``pnas_vocab.text``.

    Example::

        >>> pnas_directory()                      # doctest: +SKIP
        PosixPath('/work/shared/data/pnas')
    """
    if directory is not None:
        candidates = [("the directory given", Path(directory))]
    else:
        candidates = []
        if os.environ.get(ENV_VAR):
            candidates.append((f"${ENV_VAR}", Path(os.environ[ENV_VAR])))
        repo = Path(__file__).resolve().parents[2]
        candidates.append(("beside the repository", repo.parent / "shared" / "data" / "pnas"))
    for _, path in candidates:
        if (path / VOCAB_FILE).is_file():
            return path
    looked = "; ".join(f"{why}: {path}" for why, path in candidates)
    raise CorpusError(
        f"the PNAS data set (the DNTs paper's {VOCAB_FILE} and T1..T10 *_train.dat / *_test.dat) "
        f"was not found ({looked}). Get it from the authors' repository (ZhitingHu/DITREE, "
        f"data/data_pnas/pnas_heldout) and point ${ENV_VAR} at its directory.")


def _read_text(path: Path, encoding: str, what: str) -> str:
    try:
        return path.read_text(encoding=encoding)
    except (OSError, UnicodeDecodeError) as err:
        raise CorpusError(f"{path}: cannot read {what} ({err})") from err


def read_vocabulary(path: str | os.PathLike) -> list[str]:
    """The words of a vocabulary file, one a line; word id ``i`` is line ``i`` (from 0).

    Example::

        >>> words = read_vocabulary(pnas_directory() / "pnas_vocab.text")   # doctest: +SKIP
        >>> len(words)                                                       # doctest: +SKIP
        36901
    """
    path = Path(path)
    words = _read_text(path, "utf-8", "the vocabulary").split("\n")
    if words and words[-1] == "":
        words.pop()
    seen = {}
    for lineno, word in enumerate(words, start=1):
        word = word.rstrip("\r")
        if not word.strip():
            raise CorpusError(f"{path}, line {lineno}: empty word in the vocabulary")
        if word in seen:
            raise CorpusError(f"{path}, line {lineno}: word {word!r} repeats line {seen[word]}")
        seen[word] = lineno
    return list(seen)


def read_dat(path: str | os.PathLike, vocab_size: int | None = None):
    """Read one ``.dat`` file: ``(indptr, indices, counts, header)``, validated line by line.

    ``indptr`` (int64, one more than the documents), ``indices`` (word ids, int64) and ``counts``
    (int64) are the rows of a CSR matrix; ``header`` is the document count of the first line, or
    ``None`` for a file without one.  A malformed line raises
    :class:`~deepdist.errors.CorpusError` naming the file and the line: a count line that does not
    match the documents, ``N`` not followed by ``N`` pairs, a non-integer, a word id outside
    ``[0, vocab_size)``, a count below 1 or a word listed twice in one document.

    Example::

        >>> indptr, indices, counts, header = read_dat(pnas_directory() / "T1_train.dat", 36901)  # doctest: +SKIP
        >>> len(indptr) - 1 == header                                                             # doctest: +SKIP
        True
    """
    path = Path(path)
    lines = _read_text(path, "ascii", "the documents").split("\n")
    if lines and lines[-1].strip() == "":
        lines.pop()
    if not lines:
        raise CorpusError(f"{path}: the file is empty (expected a document count, then documents)")
    first = lines[0].split()
    header = None
    start = 0
    if len(first) == 1:
        header = _int(first[0], path, 1, "the document count")
        start = 1
        if header < 0:
            raise CorpusError(f"{path}, line 1: negative document count {header}")
        if header != len(lines) - 1:
            raise CorpusError(f"{path}, line 1: the count line says {header} documents, "
                              f"the file holds {len(lines) - 1}")
    else:
        log.debug("%s has no document count line; reading every line as a document", path)
    lengths = []
    ids: list[int] = []
    cnts: list[int] = []
    for lineno in range(start + 1, len(lines) + 1):
        parts = lines[lineno - 1].split()
        if not parts:
            raise CorpusError(f"{path}, line {lineno}: blank line (an empty document is written '0')")
        n = _int(parts[0], path, lineno, "the number of distinct words")
        if n < 0 or len(parts) != 1 + 2 * n:
            raise CorpusError(f"{path}, line {lineno}: says {parts[0]} distinct words, so "
                              f"{1 + 2 * max(n, 0)} numbers, but holds {len(parts)}")
        try:
            values = [int(p) for p in parts[1:]]
        except ValueError as err:
            raise CorpusError(f"{path}, line {lineno}: not an integer ({err})") from err
        word_ids, word_counts = values[0::2], values[1::2]
        if n:
            low, high = min(word_ids), max(word_ids)
            if low < 0 or (vocab_size is not None and high >= vocab_size):
                bad = low if low < 0 else high
                raise CorpusError(f"{path}, line {lineno}: word id {bad} outside the vocabulary "
                                  f"[0, {vocab_size})")
            if min(word_counts) < 1:
                raise CorpusError(f"{path}, line {lineno}: count {min(word_counts)} below 1")
            if len(set(word_ids)) != n:
                raise CorpusError(f"{path}, line {lineno}: a word id appears twice")
        lengths.append(n)
        ids.extend(word_ids)
        cnts.extend(word_counts)
    indptr = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    return indptr, np.asarray(ids, dtype=np.int64), np.asarray(cnts, dtype=np.int64), header


def _int(token: str, path: Path, lineno: int, what: str) -> int:
    try:
        return int(token)
    except ValueError as err:
        raise CorpusError(f"{path}, line {lineno}: {what} {token!r} is not an integer") from err


@dataclass(frozen=True)
class PnasData:
    """Documents of the PNAS data: a CSR matrix of word counts, with each document's epoch.

    Attributes
    ----------
    vocabulary : list of str
        Word id ``i`` is ``vocabulary[i]``.
    epochs : ndarray of int64, shape (n_docs,)
        The epoch of each document, 1 (1915 onwards) to 10.
    indptr, indices, counts : ndarray of int64
        Document ``d``'s words are ``indices[indptr[d]:indptr[d+1]]`` with counts ``counts[…]``.
    split : str
        ``"train"`` or ``"test"``.

    Example::

        >>> test = read_pnas(split="test", epochs=[1, 2])     # doctest: +SKIP
        >>> test.n_docs, test.n_words                        # doctest: +SKIP
        (310, 36901)
    """

    vocabulary: list
    epochs: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray
    counts: np.ndarray
    split: str = "train"

    @property
    def n_docs(self) -> int:
        """The number of documents."""
        return len(self.indptr) - 1

    @property
    def n_words(self) -> int:
        """The size of the vocabulary (the dimension of the tf vectors)."""
        return len(self.vocabulary)

    def __len__(self) -> int:
        return self.n_docs

    def id2word(self) -> dict:
        """``{word id: word}``, the mapping gensim's models take as ``id2word``."""
        return dict(enumerate(self.vocabulary))

    def bows(self) -> list:
        """Each document as a gensim bag of words: a list of ``(word id, count)`` of Python ints."""
        ids, cnts = self.indices.tolist(), self.counts.tolist()
        bounds = self.indptr.tolist()
        return [list(zip(ids[a:b], cnts[a:b])) for a, b in zip(bounds[:-1], bounds[1:])]

    def tokens(self) -> list:
        """Each document as a list of words, each repeated by its count (input for token-list APIs)."""
        words = self.vocabulary
        return [[words[i] for i, c in bow for _ in range(c)] for bow in self.bows()]

    def csr(self):
        """``(indptr, indices, counts)``: the count matrix in CSR form, without scipy."""
        return self.indptr, self.indices, self.counts

    def normalized_tf(self):
        """``(indptr, indices, data)``: each document's term frequencies scaled to unit L2 norm (float64).

        This is the paper's x.  An empty document keeps an empty (zero) row.
        ``scipy.sparse.csr_matrix((data, indices, indptr), shape=(n_docs, n_words))`` wraps it.
        """
        return normalize_rows(self.indptr, self.indices, self.counts)

    def subset(self, rows) -> "PnasData":
        """The documents ``rows`` (indices or a boolean mask), in that order."""
        rows = np.arange(self.n_docs)[np.asarray(rows)]
        starts, stops = self.indptr[rows], self.indptr[rows + 1]
        lengths = stops - starts
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        take = (np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])).astype(np.int64)
        return PnasData(self.vocabulary, self.epochs[rows], indptr, self.indices[take],
                        self.counts[take], self.split)


def normalize_rows(indptr, indices, values):
    """CSR rows scaled to unit L2 norm: ``(indptr, indices, data)`` with float64 ``data``; zero rows stay zero.

    Example::

        >>> import numpy as np
        >>> normalize_rows(np.array([0, 2]), np.array([0, 3]), np.array([3, 4]))[2]
        array([0.6, 0.8])
    """
    indptr = np.asarray(indptr, dtype=np.int64)
    data = np.asarray(values, dtype=np.float64)
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    norms = np.sqrt(np.bincount(rows, weights=data * data, minlength=len(indptr) - 1))
    return indptr, np.asarray(indices, dtype=np.int64), data / norms[rows]


def read_pnas(directory: str | os.PathLike | None = None, epochs=None, split: str = "train",
              drop_empty: bool = True) -> PnasData:
    """Read the PNAS titles of ``epochs`` (default: all ten, pooled in order) from one ``split``.

    ``directory`` defaults to :func:`pnas_directory`'s search.  ``split`` is ``"train"`` or
    ``"test"`` (the paper's held-out titles).  ``drop_empty`` leaves out documents without words
    (three in ``T9_test.dat``), as the authors' ``ALL_test.dat`` does.

    Example::

        >>> train = read_pnas(split="train")               # doctest: +SKIP
        >>> test = read_pnas(split="test")                 # doctest: +SKIP
        >>> train.n_docs, test.n_docs                      # doctest: +SKIP
        (71792, 7981)
    """
    if split not in SPLITS:
        raise ConfigurationError(f"split must be one of {SPLITS}, got {split!r}")
    if epochs is None:
        epochs = range(1, N_EPOCHS + 1)
    elif isinstance(epochs, (int, np.integer)):
        epochs = [epochs]
    epochs = list(epochs)
    for epoch in epochs:
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or not 1 <= epoch <= N_EPOCHS:
            raise ConfigurationError(f"epochs must be integers in [1, {N_EPOCHS}], got {epoch!r}")
    root = pnas_directory(directory)
    vocabulary = read_vocabulary(root / VOCAB_FILE)
    parts = []
    for epoch in epochs:
        path = root / f"T{epoch}_{split}.dat"
        if not path.is_file():
            raise CorpusError(f"{path}: missing (expected epoch {epoch}'s {split} documents)")
        parts.append(read_dat(path, len(vocabulary)))
    lengths = np.concatenate([np.diff(p[0]) for p in parts]) if parts else np.zeros(0, np.int64)
    indptr = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    doc_epochs = np.concatenate([np.full(len(p[0]) - 1, e, dtype=np.int64) for p, e in zip(parts, epochs)]
                                ) if parts else np.zeros(0, np.int64)
    data = PnasData(vocabulary, doc_epochs, indptr,
                    np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64),
                    np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, np.int64), split)
    if drop_empty:
        keep = lengths > 0
        if not keep.all():
            log.info("dropping %d empty %s documents", int((~keep).sum()), split)
            data = data.subset(keep)
    log.info("read %d %s documents of epochs %s from %s", data.n_docs, split, epochs, root)
    return data
