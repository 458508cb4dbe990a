"""Synthetic corpora drawn from the DNT model's own generative process, with the true tree kept.

One epoch of the model of Hu, Ho, Dubey & Xing (ICML 2015), on a fixed, known tree:

1. Node means (hierarchical vMF).  The root's pseudo-parent θ₋₁ is fixed (the uniform direction
   1/√V, standing in for "the centroid of the data"); every node draws θ_child ~ vMF(θ_parent, κ)
   with κ = ``node_kappa`` (the paper's κ₀κ₁; with one epoch there is no previous tree, so its
   κ₂ term is absent) and the root θ_∅ ~ vMF(θ₋₁, ``root_kappa``).
2. Node masses by the tree-structured stick-breaking process (Adams, Ghahramani & Jordan 2010):
   each node stops with ν_ε ~ Beta(1, α) and its children split the rest with ψ_εi ~ Beta(1, γ),
   π_ε = ν_ε φ_ε Π_{ε' ancestor of ε} (1 − ν_ε') φ_ε', φ_εi = ψ_εi Π_{j<i} (1 − ψ_εj).
   The tree is finite (the paper's nested truncation), so leaves stop with ν = 1 and each node's
   last child takes what its siblings left (ψ = 1): the masses sum to one.
3. Documents: z_n ~ Discrete(π), then

   * ``kind="vmf"`` — what the model assumes: x_n ~ vMF(θ_{z_n}, β), a unit vector in R^V
     (entries of either sign; no counts);
   * ``kind="counts"`` — what data looks like: word counts ~ Multinomial(L_n, φ_{z_n}) with
     L_n = 1 + Poisson(mean_length − 1) and the node's word distribution
     φ_k = softmax(``sharpness``·√V·θ_k), a positive distribution that keeps the tree's
     similarities; x_n is the L2-normalised term-frequency vector, the input the paper feeds to
     the vMF model.  ``node_means`` are then the directions φ_k/‖φ_k‖ such an x points to.

>>> c = synthetic_tree_corpus(n_docs=50, vocab_size=100, seed=1)
>>> c.documents.shape, c.parents[:4].tolist(), round(float(c.node_masses.sum()), 12)
((50, 100), [-1, 0, 0, 0], 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepdist.dnt.vmf import sample_vmf
from deepdist.errors import ConfigurationError

__all__ = ["SyntheticTreeCorpus", "synthetic_tree_corpus", "expected_node_masses"]


@dataclass(frozen=True)
class SyntheticTreeCorpus:
    """A corpus drawn from the DNT model with its ground truth (fields in the paper's symbols).

    Attributes
    ----------
    documents : (n_docs, V) float array of unit rows x_n (the model's input).
    parents : (K,) int array; ``parents[k]`` is node k's parent, -1 for the root (node 0).  Nodes
        are numbered breadth first, so a parent always precedes its children.
    depths : (K,) int array, the root at depth 0.
    node_means : (K, V) unit rows, the directions θ_k the model should recover.
    doc_nodes : (n_docs,) int array, the true node z_n of every document.
    node_masses : (K,) the stick-breaking masses π_k drawn for this corpus (sum 1).
    counts : (n_docs, V) int array of word counts (``kind="counts"``), else None.
    word_probs : (K, V) the nodes' word distributions φ_k (``kind="counts"``), else None.
    """

    documents: np.ndarray
    parents: np.ndarray
    depths: np.ndarray
    node_means: np.ndarray
    doc_nodes: np.ndarray
    node_masses: np.ndarray
    counts: np.ndarray | None = None
    word_probs: np.ndarray | None = None

    def tokens(self) -> list[list[str]]:
        """Each document as a token list ("w0", "w17", … repeated by count), for pipeline tests.

        >>> synthetic_tree_corpus(n_docs=3, vocab_size=20, kind="counts", seed=0).tokens()[0][:2]
        ['w0', 'w0']
        """
        if self.counts is None:
            raise ConfigurationError("tokens() needs word counts: draw the corpus with kind='counts'")
        return [[f"w{w}" for w in np.repeat(np.arange(row.size), row)] for row in self.counts]


def _build_tree(branching):
    """Parent and depth arrays of the complete tree with ``branching[d]`` children per depth-d node."""
    parents, depths = [-1], [0]
    frontier = [0]
    for level, width in enumerate(branching, start=1):
        nxt = []
        for node in frontier:
            for _ in range(width):
                parents.append(node)
                depths.append(level)
                nxt.append(len(parents) - 1)
        frontier = nxt
    return np.array(parents), np.array(depths)


def _stick_masses(parents, stop, split):
    """π from per-node stop fractions ν and per-node split fractions ψ (the TSSB products)."""
    n = parents.size
    reach = np.ones(n)  # φ_ε Π(1 − ν_anc) φ_anc: the share of the stick that arrives at node ε
    left = np.ones(n)  # what a node's earlier children left for the next one
    for k in range(1, n):
        p = parents[k]
        reach[k] = reach[p] * (1.0 - stop[p]) * left[p] * split[k]
        left[p] *= 1.0 - split[k]
    return reach * stop


def _truncate(parents, stop, split):
    """Leaves stop for sure and last children take the remainder, so the finite tree holds all mass."""
    has_child = np.zeros(parents.size, dtype=bool)
    has_child[parents[1:]] = True
    stop = np.where(has_child, stop, 1.0)
    last = np.zeros(parents.size, dtype=bool)
    for k in range(1, parents.size):
        last[k] = k == parents.size - 1 or parents[k + 1] != parents[k]
    return stop, np.where(last, 1.0, split)


def expected_node_masses(branching=(3, 2, 2), alpha=2.0, gamma=1.0):
    """E[π_k] for the truncated stick-breaking process on the tree ``branching`` describes.

    The Beta draws are independent, so the expectation of each product is the product of the
    expectations: E[ν] = 1/(1+α), E[ψ] = 1/(1+γ).

    >>> expected_node_masses((2,), alpha=1.0, gamma=1.0).tolist()
    [0.5, 0.25, 0.25]
    """
    parents, _ = _build_tree(tuple(branching))
    stop = np.full(parents.size, 1.0 / (1.0 + alpha))
    split = np.full(parents.size, 1.0 / (1.0 + gamma))
    return _stick_masses(parents, *_truncate(parents, stop, split))


def _check(name, value, low, kind=float, allow_equal=False):
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if kind is int:
        ok = ok and float(value).is_integer()
    if not ok or not (value >= low if allow_equal else value > low) or not np.isfinite(value):
        rel = ">=" if allow_equal else ">"
        raise ConfigurationError(f"{name} must be a finite {kind.__name__} {rel} {low}, got {value!r}")


def synthetic_tree_corpus(*, n_docs=1000, vocab_size=2000, branching=(3, 2, 2), alpha=2.0, gamma=1.0,
                          root_kappa=2000.0, node_kappa=2000.0, beta=1000.0, kind="vmf",
                          mean_length=100.0, sharpness=1.0, seed=0):
    """Draw a corpus from the DNT generative process on a known tree (see the module docstring).

    Parameters
    ----------
    n_docs, vocab_size : the number of documents N and the dimension V.
    branching : children per node at each depth below the root; the default (3, 2, 2) is a
        22-node tree of depth 3.
    alpha, gamma : the stick-breaking concentrations α (ν ~ Beta(1, α), larger = deeper mass) and
        γ (ψ ~ Beta(1, γ), larger = more even siblings).  The paper uses α = γ = 0.5; the defaults
        spread the documents more evenly over the nodes.
    root_kappa, node_kappa : concentrations of θ_∅ about θ₋₁ and of each θ_child about θ_parent.
    beta : β, the documents' concentration about their node's mean (``kind="vmf"``).
    kind : "vmf" (unit vectors x ~ vMF(θ_z, β), the model's assumption) or "counts" (word counts,
        returned with their L2-normalised tf vectors as ``documents``).
    mean_length, sharpness : document length and peakedness of φ for ``kind="counts"``.
    seed : an int; the result is a pure function of the arguments.

    >>> c = synthetic_tree_corpus(n_docs=20, vocab_size=50, kind="counts", seed=3)
    >>> c.counts.shape, bool(np.all(c.counts.sum(axis=1) >= 1))
    ((20, 50), True)
    """
    _check("n_docs", n_docs, 0, int, allow_equal=True)
    _check("vocab_size", vocab_size, 2, int, allow_equal=True)
    for name, value in (("alpha", alpha), ("gamma", gamma), ("beta", beta), ("sharpness", sharpness)):
        _check(name, value, 0.0)
    for name, value in (("root_kappa", root_kappa), ("node_kappa", node_kappa)):
        _check(name, value, 0.0, allow_equal=True)
    _check("mean_length", mean_length, 1.0, allow_equal=True)
    branching = tuple(branching)
    if not branching or not all(isinstance(b, (int, np.integer)) and b >= 1 for b in branching):
        raise ConfigurationError(f"branching must be a non-empty sequence of ints >= 1, got {branching!r}")
    if kind not in ("vmf", "counts"):
        raise ConfigurationError(f"kind must be 'vmf' or 'counts', got {kind!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigurationError(f"seed must be an int, got {seed!r}")
    n_docs, vocab_size = int(n_docs), int(vocab_size)
    rng = np.random.default_rng(seed)

    parents, depths = _build_tree(branching)
    n_nodes = parents.size
    theta = np.empty((n_nodes, vocab_size))
    pseudo_parent = np.full(vocab_size, 1.0 / np.sqrt(vocab_size))
    theta[0] = sample_vmf(pseudo_parent, root_kappa, 1, rng)[0]
    for k in range(1, n_nodes):  # breadth first: the parent is already drawn
        theta[k] = sample_vmf(theta[parents[k]], node_kappa, 1, rng)[0]

    stop = rng.beta(1.0, alpha, size=n_nodes)
    split = rng.beta(1.0, gamma, size=n_nodes)
    masses = _stick_masses(parents, *_truncate(parents, stop, split))
    masses = masses / masses.sum()  # rounding only: the truncation already makes them sum to 1
    doc_nodes = rng.choice(n_nodes, size=n_docs, p=masses)

    counts = word_probs = None
    if kind == "vmf":
        means = theta
        documents = np.empty((n_docs, vocab_size))
        for k in range(n_nodes):
            rows = np.flatnonzero(doc_nodes == k)
            if rows.size == 0:
                continue
            documents[rows] = sample_vmf(theta[k], beta, rows.size, rng)
    else:
        logits = sharpness * np.sqrt(vocab_size) * theta
        word_probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        word_probs /= word_probs.sum(axis=1, keepdims=True)
        means = word_probs / np.linalg.norm(word_probs, axis=1, keepdims=True)
        lengths = 1 + rng.poisson(mean_length - 1.0, size=n_docs)
        counts = np.empty((n_docs, vocab_size), dtype=np.int64)
        for n in range(n_docs):
            counts[n] = rng.multinomial(lengths[n], word_probs[doc_nodes[n]])
        documents = counts / np.linalg.norm(counts, axis=1, keepdims=True)
    return SyntheticTreeCorpus(documents=documents, parents=parents, depths=depths, node_means=means,
                               doc_nodes=doc_nodes, node_masses=masses, counts=counts,
                               word_probs=word_probs)
