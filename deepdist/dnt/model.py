"""The fitted DNT model: a tree of vMF mean directions, posteriors of new documents, scores, save / load.

A :class:`DNTModel` is what the DNT estimator hands back: the tree (``parents``), each node's
mean direction µ_e on the unit sphere of R^V with its variational concentration η_e, the log
prior weight E_q[log π_e] of every node and the expected number of training documents at it.
With the documents' concentration β that is all inference needs:

* ``transform``: p(e | x) ∝ exp(E_q[log π_e] + β µ_eᵀx), the posterior over nodes of a document;
* ``score``: the properly normalised vMF-mixture log-likelihood, or the DNTs paper's score
  (:func:`deepdist.dnt.evaluate.paper_score`);
* reading the tree: ``top_words``, ``show_tree``, ``to_json``, ``plot_tree``.

It needs no Spark and saves to one file of deepdist's on-disk format (:mod:`deepdist.persist`:
the arrays, with the vocabulary, β, the history and the parameters in the header; no pickle).
"""

from __future__ import annotations

import logging
import math
import numbers
import os

import numpy as np
import scipy.sparse

from .. import persist
from ..datasets.pnas import normalize_rows
from ..errors import ConfigurationError, CorpusError
from ..lda.gibbs_model import plain
from .vmf import log_vmf_normalizer

__all__ = ["DNTModel", "FORMAT"]

log = logging.getLogger(__name__)

#: ``meta["format"]`` of a saved model
FORMAT = "deepdist.dnt.DNTModel/1"

# Rows per block of transform / scores are chosen so a block's (rows × K) float64 products stay
# near this many floats (8 MB): memory is bounded whatever the number of documents.
_BLOCK_FLOATS = 1 << 20
# means_ keeps a node's largest entries until they hold this share of the row's squared norm ...
_SPARSE_MASS = 0.99
# ... and never more than this many (a node's "top words" beyond a thousand say nothing).
_SPARSE_MAX = 1000
# Mean rows must be unit vectors to this tolerance (|‖µ‖ − 1|).
_UNIT_TOL = 1e-6


def _id2word_list(id2word) -> list:
    """``id2word`` as a list: a list / tuple, a dict id -> word, a gensim Dictionary or a Vocabulary."""
    if isinstance(id2word, dict):
        words = dict(id2word)
    elif hasattr(id2word, "token2id"):  # gensim Dictionary: its id2token may not be filled yet
        words = {i: w for w, i in id2word.token2id.items()}
    elif hasattr(id2word, "id2word") and not isinstance(id2word, (list, tuple)):  # deepdist Vocabulary
        return list(id2word.id2word)
    else:
        try:
            return list(id2word)
        except TypeError as err:
            raise ConfigurationError("id2word must be a list of words, a dict id -> word or a gensim "
                                     f"Dictionary, got {type(id2word).__name__}") from err
    if sorted(words) != list(range(len(words))):
        raise ConfigurationError(f"the ids of id2word must be 0..V-1 without gaps ({len(words)} ids given)")
    return [words[i] for i in range(len(words))]


def _vector(name, value, k, *, dtype=np.float64) -> np.ndarray:
    array = np.array(value, dtype=dtype)
    if array.shape != (k,):
        raise ConfigurationError(f"{name} must have shape (K,) = ({k},), one value per node, got {array.shape}")
    return array


def _logsumexp_rows(logits: np.ndarray) -> np.ndarray:
    """log Σ_e exp(logits[:, e]) per row; rows of only −inf give −inf."""
    top = logits.max(axis=1)
    safe = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return safe + np.log(np.exp(logits - safe[:, None]).sum(axis=1))


class DNTModel:
    """A tree of topics on the unit sphere, fitted by the DNT estimator (Hu et al., ICML 2015).

    Parameters
    ----------
    parents : (K,) ints, ``parents[e]`` the parent of node e, -1 for the root (node 0); a parent
        precedes its children (the estimator numbers them breadth first).
    means : (K, V) float64 unit rows µ_e, the nodes' mean directions.
    kappas : (K,) the variational concentrations η_e of the means (informational).
    log_weights : (K,) E_q[log π_e], the log prior weight of each node (used by ``transform``).
    mass : (K,) the expected number of training documents at each node.
    beta : β, the documents' vMF concentration about their node's mean.
    id2word : V words: a list, a dict id -> word, a gensim Dictionary or a deepdist Vocabulary
        (kept as a list).
    history : the estimator's ``history_`` (one dict per job), kept in the saved file.
    params : the estimator's parameters (alpha, gamma, kappa0, ...), kept in the saved file.

    Attributes
    ----------
    tree_ : the parents array; ``n_nodes_`` K; ``depth_`` (K,) node depths (root 0).
    mean_directions_ : the dense (K, V) means; ``means_`` a sparse (K, V) CSR copy holding each
        node's top words only (see :attr:`means_`).
    kappas_, log_weights_, mass_ : the arrays above; ``weights_`` = mass / Σ mass, the mixture
        weights of ``score``.
    beta, id2word, history_, params_ : as given.

    Example::

        >>> import numpy as np
        >>> from deepdist.dnt.model import DNTModel
        >>> means = np.array([[0.6, 0.8, 0.0], [1.0, 0.0, 0.0], [0.0, 0.6, 0.8]])
        >>> model = DNTModel([-1, 0, 0], means, kappas=[50.0] * 3, log_weights=np.log([0.2, 0.4, 0.4]),
        ...                  mass=[20.0, 40.0, 40.0], beta=20.0, id2word=["gene", "cell", "brain"])
        >>> model
        DNTModel(n_nodes=3, depth=1, vocabulary=3, beta=20)
        >>> print(model.show_tree(num_words=2))
        0 (20.0%) cell gene
          1 (40.0%) gene cell
          2 (40.0%) brain cell
        >>> model.transform([["gene", "gene"], ["brain"]]).argmax(axis=1).tolist()
        [1, 2]
        >>> model.save("/tmp/dnt-model.ddw"); DNTModel.load("/tmp/dnt-model.ddw").n_nodes_   # doctest: +SKIP
        3
    """

    def __init__(self, parents, means, kappas, log_weights, mass, beta, id2word, *, history=(), params=None):
        parents_in = np.asarray(parents)
        if parents_in.ndim != 1 or parents_in.size < 1:
            raise ConfigurationError(f"parents must be a non-empty 1-D array (K,), got shape {parents_in.shape}")
        if parents_in.dtype.kind not in "iu" and not (parents_in.dtype.kind == "f"
                                                      and np.all(np.mod(parents_in, 1) == 0)):
            raise ConfigurationError(f"parents must hold integers, got dtype {parents_in.dtype}")
        self.tree_ = parents_in.astype(np.int64)
        k = self.tree_.size
        if self.tree_[0] != -1:
            raise ConfigurationError(f"node 0 must be the root (parents[0] == -1), got parents[0] = {self.tree_[0]}")
        later = self.tree_[1:]
        bad = np.flatnonzero((later < 0) | (later >= np.arange(1, k)))
        if bad.size:
            e = int(bad[0]) + 1
            raise ConfigurationError(f"every node but the root needs a parent numbered before it; "
                                     f"node {e} has parent {self.tree_[e]}")
        self.mean_directions_ = np.array(means, dtype=np.float64)
        if self.mean_directions_.ndim != 2 or self.mean_directions_.shape[0] != k \
                or self.mean_directions_.shape[1] < 1:
            raise ConfigurationError(f"means must have shape (K, V) = ({k}, V >= 1), one row per node, "
                                     f"got {self.mean_directions_.shape}")
        norms = np.sqrt(np.einsum("ij,ij->i", self.mean_directions_, self.mean_directions_))
        if not np.all(np.abs(norms - 1.0) <= _UNIT_TOL):  # NaN fails too
            e = int(np.flatnonzero(~(np.abs(norms - 1.0) <= _UNIT_TOL))[0])
            raise ConfigurationError(f"means must be finite unit rows (vMF mean directions); "
                                     f"row {e} has norm {norms[e]!r}")
        self.kappas_ = _vector("kappas", kappas, k)
        if not np.all(np.isfinite(self.kappas_)) or np.any(self.kappas_ < 0):
            raise ConfigurationError("kappas must be finite and >= 0")
        self.log_weights_ = _vector("log_weights", log_weights, k)
        if np.any(np.isnan(self.log_weights_)) or np.any(self.log_weights_ == np.inf) \
                or not np.any(np.isfinite(self.log_weights_)):
            raise ConfigurationError("log_weights must be < +inf, not NaN, and finite for at least one node")
        self.mass_ = _vector("mass", mass, k)
        if not np.all(np.isfinite(self.mass_)) or np.any(self.mass_ < 0) or self.mass_.sum() <= 0:
            raise ConfigurationError("mass must be finite, >= 0 and not all zero")
        if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not math.isfinite(beta) or beta <= 0:
            raise ConfigurationError(f"beta must be a finite number > 0, got {beta!r}")
        self.beta = float(beta)
        self.id2word = _id2word_list(id2word)
        if len(self.id2word) != self.mean_directions_.shape[1]:
            raise ConfigurationError(f"id2word has {len(self.id2word)} words but means have "
                                     f"V = {self.mean_directions_.shape[1]} columns")
        self.history_ = list(history or [])
        self.params_ = dict(params or {})
        self.depth_ = np.zeros(k, dtype=np.int64)
        self._children = [[] for _ in range(k)]
        for e in range(1, k):  # parents precede children, so the parent's depth is known
            self.depth_[e] = self.depth_[self.tree_[e]] + 1
            self._children[self.tree_[e]].append(e)
        self._sparse_means = None
        self._means_t = None
        self._word2id = None

    # -- the tree -------------------------------------------------------------------------------------
    @property
    def n_nodes_(self) -> int:
        return int(self.tree_.size)

    @property
    def n_words_(self) -> int:
        return int(self.mean_directions_.shape[1])

    @property
    def weights_(self) -> np.ndarray:
        """The mixture weights of ``score``: ``mass_ / mass_.sum()``."""
        return self.mass_ / self.mass_.sum()

    def children(self, node) -> list:
        """The children of ``node``, in order (ascending node numbers)."""
        return list(self._children[self._node(node)])

    def _node(self, node) -> int:
        if isinstance(node, bool) or not isinstance(node, numbers.Integral) or not 0 <= node < self.n_nodes_:
            raise ConfigurationError(f"node must be an integer in [0, {self.n_nodes_}), got {node!r}")
        return int(node)

    def _depth_first(self):
        """Node numbers depth first, children in order (iterative: trees may be deep)."""
        stack = [0]
        while stack:
            e = stack.pop()
            yield e
            stack.extend(reversed(self._children[e]))

    @property
    def means_(self) -> scipy.sparse.csr_matrix:
        """(K, V) CSR: per node, its largest entries (by value) until they hold >= 99% of the row's
        squared norm, at most 1000 of them; computed once and cached."""
        if self._sparse_means is None:
            rows, cols, vals = [], [], []
            for e, row in enumerate(self.mean_directions_):
                top = self._top(row, min(_SPARSE_MAX, row.size))
                share = np.cumsum(row[top] ** 2)
                keep = min(int(np.searchsorted(share, _SPARSE_MASS * float(row @ row))) + 1, top.size)
                chosen = np.sort(top[:keep])
                rows.append(np.full(chosen.size, e))
                cols.append(chosen)
                vals.append(row[chosen])
            self._sparse_means = scipy.sparse.csr_matrix(
                (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                shape=self.mean_directions_.shape)
        return self._sparse_means

    @staticmethod
    def _top(row: np.ndarray, n: int) -> np.ndarray:
        """Indices of the ``n`` largest entries of ``row``, largest first (ties: lower index first)."""
        n = max(0, min(int(n), row.size))
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        part = np.argpartition(-row, n - 1)[:n] if n < row.size else np.arange(row.size)
        return part[np.lexsort((part, -row[part]))]

    def top_words(self, node, num_words: int = 10) -> list:
        """``[(word, µ_e[word]), ...]``: the ``num_words`` largest entries of node ``node``'s mean."""
        row = self.mean_directions_[self._node(node)]
        return [(self.id2word[w], float(row[w])) for w in self._top(row, num_words)]

    def show_tree(self, num_words: int = 8) -> str:
        """The tree as text, one line per node, depth first, indented two spaces per level::

            0 (8.3%) the of and ...
              1 (31.2%) protein binding cell ...
        """
        weights = self.weights_
        lines = []
        for e in self._depth_first():
            words = " ".join(str(w) for w, _ in self.top_words(e, num_words))
            lines.append(f"{'  ' * int(self.depth_[e])}{e} ({100.0 * weights[e]:.1f}%) {words}".rstrip())
        return "\n".join(lines)

    def to_json(self, num_words: int = 10) -> dict:
        """The tree as nested dicts ``{"id", "mass", "weight", "words", "children"}`` from the root
        (Python types only, so ``json.dumps`` takes it)."""
        weights = self.weights_
        nodes = [{"id": e, "mass": float(self.mass_[e]), "weight": float(weights[e]),
                  "words": plain([w for w, _ in self.top_words(e, num_words)]), "children": []}
                 for e in range(self.n_nodes_)]
        for e in range(1, self.n_nodes_):  # ascending, so each node's children come in order
            nodes[self.tree_[e]]["children"].append(nodes[e])
        return nodes[0]

    def __repr__(self) -> str:
        return (f"DNTModel(n_nodes={self.n_nodes_}, depth={int(self.depth_.max())}, "
                f"vocabulary={self.n_words_}, beta={self.beta:g})")

    # -- documents ------------------------------------------------------------------------------------
    def _unit_rows(self, docs) -> scipy.sparse.csr_matrix:
        """``docs`` as a CSR matrix (n_docs, V) of L2-normalised rows (empty documents: empty rows)."""
        v = self.n_words_
        if scipy.sparse.issparse(docs) or (isinstance(docs, np.ndarray) and docs.ndim == 2):
            counts = scipy.sparse.csr_matrix(docs, dtype=np.float64)
            if counts.shape[1] != v:
                raise ConfigurationError(f"a matrix of documents must have V = {v} columns, got {counts.shape}")
            return self._normalise(counts.copy())
        if isinstance(docs, tuple) and len(docs) == 3 and all(isinstance(a, np.ndarray) and a.ndim == 1
                                                                for a in docs):
            return self._csr_triple(*docs)
        if isinstance(docs, (str, bytes)):
            raise ConfigurationError("docs must be a collection of documents, not one string")
        rows, ids, weights = [], [], []
        n = 0
        for n, doc in enumerate(docs, start=1):
            doc_ids, doc_weights = self._document(doc)
            rows.append(np.full(doc_ids.size, n - 1, dtype=np.int64))
            ids.append(doc_ids)
            weights.append(doc_weights)
        if n == 0:
            return scipy.sparse.csr_matrix((0, v), dtype=np.float64)
        counts = scipy.sparse.csr_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(ids))),
                                         shape=(n, v), dtype=np.float64)
        return self._normalise(counts)

    @staticmethod
    def _normalise(counts: scipy.sparse.csr_matrix) -> scipy.sparse.csr_matrix:
        # One canonical layout (summed, sorted, no stored zeros) whatever the input form, so every
        # form of the same documents gives bit-identical products.
        counts.sum_duplicates()
        counts.eliminate_zeros()
        if not np.all(np.isfinite(counts.data)) or np.any(counts.data < 0):
            raise ConfigurationError("document counts must be finite and >= 0")
        indptr, indices, data = normalize_rows(counts.indptr, counts.indices, counts.data)
        return scipy.sparse.csr_matrix((data, indices, indptr), shape=counts.shape)

    def _csr_triple(self, indptr, indices, data) -> scipy.sparse.csr_matrix:
        v = self.n_words_
        indptr = np.asarray(indptr, dtype=np.int64)
        indices = np.asarray(indices, dtype=np.int64)
        data = np.asarray(data, dtype=np.float64)
        if indptr.size < 1 or indptr[0] != 0 or np.any(np.diff(indptr) < 0) or indptr[-1] != indices.size \
                or indices.size != data.size:
            raise ConfigurationError("a CSR triple (indptr, indices, data) must have indptr starting at 0, "
                                     "not decreasing, and ending at len(indices) == len(data)")
        if indices.size and (indices.min() < 0 or indices.max() >= v):
            raise ConfigurationError(f"the CSR triple has word ids outside [0, {v})")
        n = indptr.size - 1
        lengths = np.diff(indptr)
        norms = np.bincount(np.repeat(np.arange(n), lengths), weights=data * data, minlength=n)
        bad = np.flatnonzero((lengths > 0) & ~(np.abs(norms - 1.0) <= _UNIT_TOL))
        if bad.size:
            raise ConfigurationError(f"a CSR triple must hold L2-normalised rows; row {bad[0]} has squared norm "
                                     f"{norms[bad[0]]:.6g} (pass counts as a scipy sparse matrix to normalise them)")
        return scipy.sparse.csr_matrix((data, indices, indptr), shape=(n, v))

    def _document(self, doc):
        """(word ids, weights) of one document: tokens, a bag of words, word ids or (doc_id, one of those)."""
        if isinstance(doc, tuple) and len(doc) == 2 and np.isscalar(doc[0]) \
                and not np.isscalar(doc[1]) and not isinstance(doc[1], (str, bytes)):
            doc = doc[1]  # (doc_id, bow)
        doc = list(doc)
        if not doc:
            return np.zeros(0, np.int64), np.zeros(0)
        first = doc[0]
        if isinstance(first, str):
            if self._word2id is None:
                self._word2id = {}
                for i, w in enumerate(self.id2word):
                    self._word2id.setdefault(w, i)
            lookup = self._word2id
            ids = np.array([lookup[t] for t in doc if t in lookup], dtype=np.int64)  # unknown words dropped
            return ids, np.ones(ids.size)
        if isinstance(first, (tuple, list)):
            try:
                pairs = np.asarray(doc, dtype=np.float64).reshape(-1, 2)
            except (TypeError, ValueError) as err:
                raise ConfigurationError("a bag of words must be a list of (word_id, count) pairs") from err
            ids, weights = pairs[:, 0], pairs[:, 1]
        else:
            try:
                ids = np.asarray(doc, dtype=np.float64)
            except (TypeError, ValueError) as err:
                raise ConfigurationError("a document must be a list of tokens, a bag of words "
                                         f"[(word_id, count), ...] or word ids, got {first!r} in one") from err
            weights = np.ones(ids.size)
        if np.any(ids != np.floor(ids)) or np.any(ids < 0) or np.any(ids >= self.n_words_):
            raise ConfigurationError(f"word ids must be integers in [0, {self.n_words_})")
        return ids.astype(np.int64), weights

    def _blocks(self, x: scipy.sparse.csr_matrix):
        """``(start, stop, s)`` with ``s = X[start:stop] · Mᵀ`` (cosines), a bounded block at a time."""
        if self._means_t is None:
            # one C-ordered (V, K) copy, so each block is one sparse-times-dense product
            self._means_t = np.ascontiguousarray(self.mean_directions_.T)
        step = max(1, _BLOCK_FLOATS // self.n_nodes_)
        for start in range(0, x.shape[0], step):
            stop = min(start + step, x.shape[0])
            yield start, stop, np.asarray(x[start:stop] @ self._means_t)

    # -- inference and scores ---------------------------------------------------------------------
    def transform(self, docs) -> np.ndarray:
        """(n_docs, K) float64 posteriors p(e | x) ∝ exp(log_weights_e + β µ_eᵀx); rows sum to 1.

        ``docs``: token lists (unknown words dropped), bags of words ``[(word_id, count), ...]``,
        ``(doc_id, bag)`` pairs, word-id lists, a scipy sparse (or dense 2-D) matrix of counts
        (rows normalised here), or a CSR triple ``(indptr, indices, data)`` of L2-normalised rows.
        An empty document gets the prior, softmax(log_weights).
        """
        x = self._unit_rows(docs)
        out = np.empty((x.shape[0], self.n_nodes_), dtype=np.float64)
        for start, stop, s in self._blocks(x):
            logits = self.beta * s
            logits += self.log_weights_
            logits -= logits.max(axis=1, keepdims=True)
            np.exp(logits, out=logits)
            logits /= logits.sum(axis=1, keepdims=True)
            out[start:stop] = logits
        return out

    def scores(self, docs, kind: str = "vmf") -> np.ndarray:
        """Per-document scores (see :meth:`score`); NaN for empty documents (no point on the sphere)."""
        if kind not in ("vmf", "paper"):
            raise ConfigurationError(f"kind must be 'vmf' or 'paper', got {kind!r}")
        x = self._unit_rows(docs)
        out = np.empty(x.shape[0], dtype=np.float64)
        if kind == "vmf":
            with np.errstate(divide="ignore"):
                offset = np.log(self.weights_)
            log_c = float(log_vmf_normalizer(self.n_words_, self.beta))
            for start, stop, s in self._blocks(x):
                out[start:stop] = log_c + _logsumexp_rows(offset + self.beta * s)
        else:
            for start, stop, s in self._blocks(x):
                # z = argmax of the posterior = argmax of its logits (softmax is monotone)
                z = (self.log_weights_ + self.beta * s).argmax(axis=1)
                out[start:stop] = self.beta * s[np.arange(stop - start), z]
        out[np.diff(x.indptr) == 0] = np.nan
        return out

    def score(self, docs, kind: str = "vmf") -> float:
        """The average score per document of ``docs`` (any form ``transform`` takes).

        ``kind="vmf"``: log Σ_e w_e C_V(β) exp(β µ_eᵀx) with w = ``weights_``, the properly
        normalised vMF-mixture log-likelihood.  ``kind="paper"``: the DNTs paper's β µ_zᵀx, z the
        node of largest posterior (as :func:`deepdist.dnt.evaluate.paper_score` with the
        posteriors of ``transform``).  Empty documents are left out (with a warning in the log).
        """
        values = self.scores(docs, kind)
        empty = np.isnan(values)
        if empty.all():
            raise CorpusError("no document to score: every document is empty (or has only unknown words)")
        if empty.any():
            log.warning("score: %d of %d documents are empty (no known words) and are left out",
                        int(empty.sum()), values.size)
        return float(values[~empty].mean())

    # -- persistence ------------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write the model to the file ``path`` (:mod:`deepdist.persist`, atomically)."""
        path = os.fspath(path)
        if os.path.isdir(path):
            raise ConfigurationError(f"{path} is a directory; DNTModel.save writes one file: give a file name")
        arrays = {"parents": self.tree_, "means": self.mean_directions_, "kappas": self.kappas_,
                  "log_weights": self.log_weights_, "mass": self.mass_}
        meta = {"format": FORMAT, "n_nodes": self.n_nodes_, "n_words": self.n_words_, "beta": self.beta,
                "id2word": plain(self.id2word), "history": plain(self.history_), "params": plain(self.params_)}
        persist.write_frame(path, arrays, meta)

    @classmethod
    def load(cls, path) -> "DNTModel":
        """Read a model written by :meth:`save`; another kind of file raises ConfigurationError."""
        arrays, meta = persist.read_frame(os.fspath(path), expect=FORMAT)
        return cls(arrays["parents"], arrays["means"], arrays["kappas"], arrays["log_weights"], arrays["mass"],
                   meta["beta"], meta["id2word"], history=meta.get("history") or (), params=meta.get("params"))

    # -- picture ----------------------------------------------------------------------------------
    def plot_tree(self, num_words: int = 3, ax=None, max_nodes: int = 200, *, colors=None, label=None, title=None):
        """A matplotlib Figure of the tree: top-down by depth, leaves spread evenly, a parent centred
        over its children, marker area ∝ mass, each node labelled with its top ``num_words`` words
        (one per line; the label's gid is ``"node-<e>"``).

        With more than ``max_nodes`` nodes only the ``max_nodes`` heaviest and their ancestors are
        drawn.  Draws on ``ax`` if given (returning its figure), else on a new
        :class:`matplotlib.figure.Figure` (no pyplot state). ``colors`` (one matplotlib colour per
        node; default: by depth), ``label`` (node -> text) and ``title`` override the defaults::

            >>> model.plot_tree().savefig("tree.png")          # doctest: +SKIP
        """
        from .plot import plot_tree

        return plot_tree(self, num_words, ax, max_nodes, colors=colors, label=label, title=title)

    def _label(self, node: int, num_words: int) -> str:
        """A node's label in ``plot_tree``: its top words, one per line."""
        return "\n".join(str(w) for w, _ in self.top_words(node, num_words))
