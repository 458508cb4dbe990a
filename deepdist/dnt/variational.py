"""The DNT's global variational step and its evidence lower bound, from summed statistics.

Model (Hu et al., ICML 2015, one epoch): a tree-structured stick-breaking prior over nodes
(ν_ε ~ Beta(1, α) stops at ε, ψ_ε ~ Beta(1, γ) picks among siblings), node means on the unit
sphere θ_root ~ vMF(m₀, κ₀) with m₀ the data's normalised centroid and θ_child ~ vMF(θ_parent, κ₁),
and documents x_n ~ vMF(θ_{z_n}, β).

Variational family: q(ν_ε) = Beta(a, b), q(ψ_ε) = Beta(c, d), q(θ_ε) = vMF(µ_ε, η_ε) and a
multinomial λ_n over the instantiated nodes per document. Sticks of nodes that are not
instantiated keep their prior (they hold no documents), so the bound needs no renormalising
truncation and a birth or a merge changes it only through the nodes involved.

Everything global is a function of the statistics summed over documents, per node ε:
``M`` = Σ_n λ_nε, ``s`` = Σ_n λ_nε x_n (a V-vector) and ``H`` = −Σ_n λ_nε log λ_nε.
:func:`global_step` maximises the bound over the sticks (in closed form) and the means (one
node at a time, top-down: each update is the exact optimum given its neighbours), so the bound
never falls; :func:`elbo` evaluates it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import betaln, digamma

from .tree import Tree
from .vmf import log_vmf_normalizer, mean_resultant_length

__all__ = ["Hyper", "Globals", "Stats", "global_step", "sticks", "elbo", "node_weights"]


@dataclass(frozen=True)
class Hyper:
    """The model's fixed hyperparameters (see the module docstring); ``dim`` is V."""

    alpha: float
    gamma: float
    kappa0: float
    kappa1: float
    beta: float
    dim: int
    root_prior: np.ndarray  # m₀, unit V-vector


@dataclass
class Stats:
    """Summed statistics per slot: ``mass`` (M), ``sums`` (s, one row per slot), ``entropy`` (H)."""

    mass: np.ndarray  # (capacity,)
    sums: np.ndarray  # (capacity, V) float64
    entropy: np.ndarray  # (capacity,)

    def copy(self) -> "Stats":
        return Stats(self.mass.copy(), self.sums.copy(), self.entropy.copy())


@dataclass
class Globals:
    """q's global factors per slot (free slots hold zeros; their ``log_prior`` is −inf)."""

    mu: np.ndarray  # (capacity, V) unit rows
    eta: np.ndarray  # (capacity,)
    nu: np.ndarray = field(default=None)  # (capacity, 2) Beta parameters of q(ν)
    psi: np.ndarray = field(default=None)  # (capacity, 2) Beta parameters of q(ψ) (root: unused)
    log_prior: np.ndarray = field(default=None)  # (capacity,) E_q[log π_ε]

    def copy(self) -> "Globals":
        return Globals(self.mu.copy(), self.eta.copy(), None if self.nu is None else self.nu.copy(),
                       None if self.psi is None else self.psi.copy(),
                       None if self.log_prior is None else self.log_prior.copy())

    @classmethod
    def empty(cls, capacity: int, dim: int) -> "Globals":
        return cls(np.zeros((capacity, dim)), np.zeros(capacity))


def _subtree_mass(tree: Tree, mass: np.ndarray) -> np.ndarray:
    total = np.zeros_like(mass)
    for node in reversed(tree.breadth_first()):
        total[node] += mass[node]
        parent = tree.parent[node]
        if parent >= 0:
            total[parent] += total[node]
    return total


def sticks(tree: Tree, mass: np.ndarray, hyper: Hyper, q: Globals) -> None:
    """Set q(ν), q(ψ) to their optimum given the node masses, and E[log π] (into ``q``)."""
    cap = tree.capacity
    below = _subtree_mass(tree, mass)
    nu, psi = np.ones((cap, 2)), np.ones((cap, 2))
    nu[:, 1] = hyper.alpha
    psi[:, 1] = hyper.gamma
    log_prior = np.full(cap, -np.inf)
    order = tree.breadth_first()
    for node in order:
        nu[node] = (1.0 + mass[node], hyper.alpha + below[node] - mass[node])
        younger = 0.0
        for child in reversed(tree.children[node]):
            psi[child] = (1.0 + below[child], hyper.gamma + younger)
            younger += below[child]
    e_log_nu, e_log_1m_nu = _beta_expectations(nu)
    e_log_psi, e_log_1m_psi = _beta_expectations(psi)
    # path[ε]: E log of the probability of reaching ε (not yet stopping there)
    path = np.zeros(cap)
    for node in order:
        log_prior[node] = path[node] + e_log_nu[node]
        reach = path[node] + e_log_1m_nu[node]
        passed = 0.0
        for child in tree.children[node]:
            path[child] = reach + passed + e_log_psi[child]
            passed += e_log_1m_psi[child]
    q.nu, q.psi, q.log_prior = nu, psi, log_prior


def _beta_expectations(ab):
    total = digamma(ab.sum(axis=1))
    return digamma(ab[:, 0]) - total, digamma(ab[:, 1]) - total


def _prior_direction(tree: Tree, node: int, hyper: Hyper, q: Globals, resultant: np.ndarray):
    """κ E[θ_parent] for ``node`` (κ₀ m₀ for the root)."""
    parent = tree.parent[node]
    if parent < 0:
        return hyper.kappa0 * hyper.root_prior
    return (hyper.kappa1 * resultant[parent]) * q.mu[parent]


def means(tree: Tree, stats: Stats, hyper: Hyper, q: Globals, sweeps: int = 2, nodes=None) -> None:
    """Coordinate ascent on q(θ): each node's µ, η is the exact optimum given its neighbours.

    q(θ_ε) ∝ exp(nᵀθ) with n = β s_ε + κ E[θ_parent] + Σ_children κ₁ E[θ_child]: a vMF of mean
    n/‖n‖ and concentration ‖n‖. ``nodes`` limits the updates to those slots (a move's
    neighbourhood); the others stay as they are.
    """
    chosen = None if nodes is None else {int(n) for n in nodes}
    order = tree.breadth_first() if chosen is None else [n for n in tree.breadth_first() if n in chosen]
    resultant = np.zeros(tree.capacity)
    active = tree.active()
    resultant[active] = mean_resultant_length(hyper.dim, q.eta[active])
    for _ in range(sweeps):
        for node in order:
            natural = hyper.beta * stats.sums[node] + _prior_direction(tree, node, hyper, q, resultant)
            for child in tree.children[node]:
                natural += (hyper.kappa1 * resultant[child]) * q.mu[child]
            norm = float(np.linalg.norm(natural))
            if norm > 0:
                q.mu[node] = natural / norm
            q.eta[node] = norm
            resultant[node] = mean_resultant_length(hyper.dim, norm)


def global_step(tree: Tree, stats: Stats, hyper: Hyper, q: Globals, sweeps: int = 2) -> Globals:
    """Sticks, then means (each step raises the bound or leaves it); returns ``q``."""
    sticks(tree, stats.mass, hyper, q)
    means(tree, stats, hyper, q, sweeps)
    return q


def node_weights(tree: Tree, hyper: Hyper, q: Globals, nodes=None) -> np.ndarray:
    """β A(η_ε) µ_ε per slot (capacity, V): a document's expected log-likelihood under ε is
    ``weights[ε] · x`` plus a constant. Free slots hold zeros. With ``nodes``, only those rows,
    in that order."""
    if nodes is not None:
        nodes = np.asarray(nodes)
        return (hyper.beta * mean_resultant_length(hyper.dim, q.eta[nodes]))[:, None] * q.mu[nodes]
    out = np.zeros_like(q.mu)
    active = tree.active()
    out[active] = (hyper.beta * mean_resultant_length(hyper.dim, q.eta[active]))[:, None] * q.mu[active]
    return out


def _stick_bound(ab, prior_b):
    """Σ E[log Beta(v; 1, b₀)] − E[log q(v)] over the rows ``ab`` of q's Beta parameters."""
    e_log, e_log_1m = _beta_expectations(ab)
    a, b = ab[:, 0], ab[:, 1]
    prior = np.log(prior_b) + (prior_b - 1.0) * e_log_1m
    entropy_neg = -betaln(a, b) + (a - 1.0) * e_log + (b - 1.0) * e_log_1m
    return float((prior - entropy_neg).sum())


def elbo(tree: Tree, stats: Stats, hyper: Hyper, q: Globals, parts: bool = False):
    """The evidence lower bound of q (with the statistics ``stats``); ``parts=True`` returns its terms."""
    nodes = np.asarray(tree.breadth_first())
    V = hyper.dim
    resultant = mean_resultant_length(V, q.eta[nodes])
    mu = q.mu[nodes]
    log_c_beta = float(log_vmf_normalizer(V, hyper.beta))
    data = float(stats.mass[nodes] @ (q.log_prior[nodes] + log_c_beta)
                 + hyper.beta * (resultant * np.einsum("kv,kv->k", mu, stats.sums[nodes])).sum())
    entropy = float(stats.entropy[nodes].sum())
    # E log p(θ | parent) − E log q(θ)
    position = {int(n): i for i, n in enumerate(nodes)}
    coupling = np.empty(len(nodes))
    kappa = np.empty(len(nodes))
    for i, node in enumerate(nodes):
        parent = tree.parent[node]
        if parent < 0:
            kappa[i] = hyper.kappa0
            coupling[i] = hyper.kappa0 * resultant[i] * float(hyper.root_prior @ mu[i])
        else:
            j = position[int(parent)]
            kappa[i] = hyper.kappa1
            coupling[i] = hyper.kappa1 * resultant[i] * resultant[j] * float(mu[j] @ mu[i])
    theta = float((log_vmf_normalizer(V, kappa) + coupling
                   - log_vmf_normalizer(V, q.eta[nodes]) - q.eta[nodes] * resultant).sum())
    stick = _stick_bound(q.nu[nodes], hyper.alpha) + (
        _stick_bound(q.psi[nodes[1:]], hyper.gamma) if len(nodes) > 1 else 0.0)
    total = data + entropy + theta + stick
    if parts:
        return {"elbo": total, "data": data, "entropy": entropy, "theta": theta, "sticks": stick}
    return total
