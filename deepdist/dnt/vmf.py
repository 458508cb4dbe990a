"""Von Mises-Fisher numerics for the DNT model: log I_ν, the vMF normaliser, A_D and its inverse, Wood's sampler.

A document of the DNT model (Hu, Ho, Dubey & Xing, ICML 2015) is a point on the unit sphere
S^{D-1} (its L2-normalised term-frequency vector, D = vocabulary size) drawn from

    f(x; μ, κ) = C_D(κ) exp(κ μᵀx),   C_D(κ) = κ^{D/2-1} / ((2π)^{D/2} I_{D/2-1}(κ)),

with I_ν the modified Bessel function of the first kind.  With D in the tens of thousands and κ
in the thousands, I_ν(κ) over- or underflows every float format, so everything here works with
logarithms and ratios.

How log I_ν(κ) is computed (regions; κ ≥ 0, ν ≥ 0):

* ν ≥ 40: Debye's uniform asymptotic expansion (DLMF 10.41.3) with ``_N_TERMS`` correction
  polynomials u_k(t), t = ν/√(ν²+κ²), generated exactly at import.  The expansion is uniform in
  κ/ν, so its truncation error depends on ν alone and is below 1e-16 from ν = 40 up.
* ν < 40, κ > 10: the expansion at μ = ν + m ≥ 40, then the ratio recurrence
  I_{k-1}/I_k = 2k/κ + I_{k+1}/I_k run m steps down.  Downward recurrence for I is stable (I_ν is
  the recessive solution as ν grows) and every term is positive, so nothing cancels.
* ν < 40, κ ≤ 10: the power series Σ (κ²/4)^k / (k! Γ(ν+k+1)) (positive terms), because there
  the recurrence would end in a small log I made by cancelling large logs.

Accuracy, as max |Δ log I| / max(1, |log I|) (the relative error of I where |log I| < 1) against
exact 50-digit series (tests/test_dnt_vmf.py has the reference), 1e-8 ≤ κ ≤ 3e4, ν ≤ 1e5:

    =====================  ===========  ===================
    region                 log I_ν(κ)   A_D(κ) (relative)
    =====================  ===========  ===================
    ν < 40, κ ≤ 10         3e-16        2e-15
    ν < 40, κ > 10         7e-16        1e-15
    ν ≥ 40, κ ≤ ν          6e-15        4e-15
    ν ≥ 40, κ > ν          2e-16        2e-16
    =====================  ===========  ===================

The worst case is where log I_ν(κ) crosses 0 at large ν (two terms of size ~ν cancel, so the
absolute error there is ~ν·ε).  For κ up to 1e7, against scipy's ``ive`` and the closed forms of
half-integer orders, log I agrees to a few ulps.

The ratio A_D(κ) = I_{D/2}(κ)/I_{D/2-1}(κ) is carried along the same path (the expansion's
difference log I_{μ+1} − log I_μ written in cancellation-free form, then the recurrence), so it
is accurate to a few ulps even where log I itself is ~1e7.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from deepdist.errors import ConfigurationError

__all__ = ["log_bessel_iv", "log_vmf_normalizer", "mean_resultant_length",
           "kappa_from_resultant", "sample_vmf"]

_LOG_2PI = math.log(2.0 * math.pi)
# Below this order the expansion is not used directly (see the module docstring).
_DEBYE_MIN_ORDER = 40.0
_N_TERMS = 10
# Where the power series replaces the recurrence's end value (small orders only): with
# _SERIES_TERMS terms its truncation error at κ = 10 is below 1e-70.
_SERIES_MAX_KAPPA = 10.0
_SERIES_TERMS = 60


def _debye_polynomials(n_terms):
    """Coefficients (low degree first) of Debye's u_0..u_{n_terms}, built exactly from DLMF 10.41.9.

    u_{k+1}(t) = ½ t²(1−t²) u_k'(t) + ⅛ ∫₀ᵗ (1−5s²) u_k(s) ds, u_0 = 1.  Generating them with
    rational arithmetic avoids copying long coefficient tables by hand.
    """
    polys = [[Fraction(1)]]
    for _ in range(n_terms):
        u = polys[-1]
        deriv = [Fraction(i) * c for i, c in enumerate(u)][1:]
        new = [Fraction(0)] * (len(u) + 3)
        for i, c in enumerate(deriv):  # ½ (t² − t⁴) u'
            new[i + 2] += c / 2
            new[i + 4] -= c / 2
        for i, c in enumerate(u):  # ⅛ ∫ (1 − 5 s²) u
            new[i + 1] += c / (8 * (i + 1))
            new[i + 3] -= 5 * c / (8 * (i + 3))
        while new and new[-1] == 0:
            new.pop()
        polys.append(new)
    return [np.array([float(c) for c in p]) for p in polys]


_U = _debye_polynomials(_N_TERMS)


def _log_debye_sum(order, t):
    """log Σ_k u_k(t)/order^k, k = 0.._N_TERMS (the sum is 1 + small, so log1p keeps its digits)."""
    tail = np.zeros(np.broadcast(order, t).shape)
    for k in range(_N_TERMS, 0, -1):  # Horner in 1/order, smallest terms first
        tail = (np.polynomial.polynomial.polyval(t, _U[k]) + tail) / order
    return np.log1p(tail)


def _log_x_over(order, x, s):
    """log(x / (order + s)) with s = √(order² + x²), without cancellation when x ≫ order."""
    return -np.log1p((order + order * order / (s + x)) / x)


def _debye(order, x):
    """(log I_order(x), I_{order+1}(x)/I_order(x)) by the uniform expansion; order ≥ _DEBYE_MIN_ORDER, x > 0."""
    s0 = np.hypot(order, x)
    s1 = np.hypot(order + 1.0, x)
    l0 = _log_x_over(order, x, s0)
    l1 = _log_x_over(order + 1.0, x, s1)
    sum0 = _log_debye_sum(order, order / s0)
    sum1 = _log_debye_sum(order + 1.0, (order + 1.0) / s1)
    log_i = s0 + order * l0 - 0.5 * _LOG_2PI - 0.5 * np.log(s0) + sum0
    # log I_{order+1} − log I_order, each large piece differenced analytically.
    ds = (2.0 * order + 1.0) / (s0 + s1)
    log_ratio = (ds + l1 - order * np.log1p((1.0 + ds) / (order + s0))
                 - 0.5 * np.log1p(ds / s0) + sum1 - sum0)
    return log_i, np.exp(log_ratio)


def _log_bessel_and_ratio(nu, kappa):
    """log I_ν(κ) and I_{ν+1}(κ)/I_ν(κ) for ν ≥ 0, κ ≥ 0 (broadcast); the shared engine."""
    nu, kappa = np.broadcast_arrays(np.asarray(nu, dtype=float), np.asarray(kappa, dtype=float))
    if np.any(~np.isfinite(nu)) or np.any(nu < 0):
        raise ConfigurationError(f"the Bessel order nu must be finite and >= 0, got {nu}")
    if np.any(np.isnan(kappa)) or np.any(kappa < 0) or np.any(np.isinf(kappa)):
        raise ConfigurationError(f"kappa must be finite and >= 0, got {kappa}")
    zero = kappa == 0
    x = np.where(zero, 1.0, kappa)  # placeholder, overwritten below
    steps = np.where(nu < _DEBYE_MIN_ORDER, np.ceil(_DEBYE_MIN_ORDER - nu), 0.0)
    order = nu + steps
    log_i, ratio = _debye(order, x)
    # Downward recurrence: R_{k-1} = 1 / (2k/κ + R_k), log I_{k-1} = log I_k − log R_{k-1}.
    for step in range(int(steps.max()) if steps.size else 0):
        active = steps > step
        k = order - step
        new_ratio = 1.0 / (2.0 * k / x + ratio)
        log_i = np.where(active, log_i - np.log(new_ratio), log_i)
        ratio = np.where(active, new_ratio, ratio)
    # For small κ the recurrence ends in a small log I made by cancelling large logs; the power
    # series (positive terms, few of them here) keeps the relative accuracy of I itself.
    small = (kappa <= _SERIES_MAX_KAPPA) & (nu < _DEBYE_MIN_ORDER) & ~zero
    if np.any(small):
        log_i = np.where(small, _log_series(nu, np.where(small, x, 1.0)), log_i)
    log_i = np.where(zero, np.where(nu == 0, 0.0, -np.inf), log_i)
    ratio = np.where(zero, 0.0, ratio)
    return log_i, ratio


def _log_series(nu, x):
    """log I_ν(x) = ν log(x/2) − log Γ(ν+1) + log Σ_k (x²/4)^k / (k! (ν+1)_k), for x ≤ _SERIES_MAX_KAPPA."""
    q = 0.25 * x * x
    term = np.ones_like(x)
    tail = np.zeros_like(x)
    for k in range(1, _SERIES_TERMS + 1):
        term = term * q / (k * (nu + k))
        tail = tail + term
    lgamma = np.vectorize(math.lgamma, otypes=[float])(nu + 1.0)
    return nu * np.log(0.5 * x) - lgamma + np.log1p(tail)


def log_bessel_iv(nu, kappa):
    """log I_ν(κ), the log of the modified Bessel function of the first kind, without overflow.

    ``nu`` (ν ≥ 0) and ``kappa`` (κ ≥ 0) broadcast against each other; a scalar comes back as a
    0-d float.  Accurate to about 1e-15 relative over 0 ≤ ν ≤ 1e5 and 1e-8 ≤ κ ≤ 1e7 (see the
    module docstring for the method).  log I_ν(0) is −inf for ν > 0 and 0 for ν = 0.

    >>> round(float(log_bessel_iv(18499.0, 1e4)), 2)   # scipy.special.iv underflows to 0 here
    -4402.44
    """
    return _log_bessel_and_ratio(nu, kappa)[0]


def _check_dim(dim):
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 2:
        raise ConfigurationError(f"dim (the sphere's ambient dimension D) must be an integer >= 2, got {dim!r}")
    return int(dim)


def log_vmf_normalizer(dim, kappa):
    """log C_D(κ) = (D/2−1) log κ − (D/2) log 2π − log I_{D/2−1}(κ), the vMF log normaliser.

    At κ = 0 it is the limit, −log of the area of S^{D−1} = −log(2π^{D/2}/Γ(D/2)).  Stays finite
    where scipy's ``vonmises_fisher`` overflows (D ≈ 37,000, κ = 10⁴).

    >>> round(float(log_vmf_normalizer(3, 1.0)), 6)   # D=3: log(κ / (4π sinh κ))
    -2.692464
    """
    dim = _check_dim(dim)
    kappa = np.asarray(kappa, dtype=float)
    if np.any(~np.isfinite(kappa)) or np.any(kappa < 0):
        raise ConfigurationError(f"kappa must be finite and >= 0, got {kappa}")
    nu = dim / 2.0 - 1.0
    log_area = math.log(2.0) + (dim / 2.0) * math.log(math.pi) - math.lgamma(dim / 2.0)
    positive = kappa > 0
    safe = np.where(positive, kappa, 1.0)
    value = nu * np.log(safe) - (dim / 2.0) * _LOG_2PI - log_bessel_iv(nu, safe)
    return np.where(positive, value, -log_area)


def mean_resultant_length(dim, kappa):
    """A_D(κ) = I_{D/2}(κ)/I_{D/2−1}(κ), the vMF's expected ‖E x‖ (0 at κ = 0, → 1 as κ → ∞).

    It is the derivative of −log C_D(κ) in κ, which the variational vMF updates need.

    >>> round(float(mean_resultant_length(3, 2.0)), 10)   # D=3: coth κ − 1/κ
    0.5373147207
    """
    dim = _check_dim(dim)
    return _log_bessel_and_ratio(dim / 2.0 - 1.0, kappa)[1]


def kappa_from_resultant(dim, rbar, *, max_iter=30):
    """Invert A_D: the κ with A_D(κ) = r̄, for 0 ≤ r̄ < 1 (maximum-likelihood κ of a vMF).

    Starts from Banerjee et al. (JMLR 2005), κ ≈ r̄(D − r̄²)/(1 − r̄²), and refines with Newton
    steps on A_D(κ) − r̄, using A_D'(κ) = 1 − A_D² − (D−1)A_D/κ.  r̄ = 0 gives κ = 0.

    >>> k = kappa_from_resultant(50, float(mean_resultant_length(50, 123.0)))
    >>> round(float(k), 6)
    123.0
    """
    dim = _check_dim(dim)
    rbar = np.asarray(rbar, dtype=float)
    if np.any(~np.isfinite(rbar)) or np.any(rbar < 0) or np.any(rbar >= 1):
        raise ConfigurationError(f"rbar (a mean resultant length) must lie in [0, 1), got {rbar}")
    positive = rbar > 0
    r = np.where(positive, rbar, 0.5)
    kappa = r * (dim - r * r) / ((1.0 - r) * (1.0 + r))
    for _ in range(max_iter):
        a = mean_resultant_length(dim, kappa)
        # 1 − A² − (D−1)A/κ loses digits for κ ≪ D; A/κ → 1/D there, so the slope is still ≥ ε·D.
        slope = (1.0 - a) * (1.0 + a) - (dim - 1.0) * a / kappa
        slope = np.maximum(slope, 1e-300)
        step = (a - r) / slope
        new = kappa - step
        # A_D is concave, so a step may overshoot below zero from the right; halve instead.
        new = np.where(new <= 0, 0.5 * kappa, new)
        done = np.abs(new - kappa) <= 1e-14 * kappa
        kappa = new
        if np.all(done):
            break
    return np.where(positive, kappa, 0.0)


def sample_vmf(mu, kappa, size, rng=None):
    """Draw ``size`` points from vMF(μ, κ) on S^{D−1} with Wood's (1994) rejection sampler.

    ``mu`` is a length-D direction (normalised here), ``kappa`` ≥ 0, ``rng`` a
    ``numpy.random.Generator`` or a seed.  Returns a (size, D) float array of unit rows.  Wood's
    scheme samples the cosine w = μᵀx from its exact one-dimensional density by rejection from a
    transformed Beta((D−1)/2, (D−1)/2) proposal (acceptance stays high for any D and κ), then adds
    a uniform direction orthogonal to μ.

    >>> x = sample_vmf([0.0, 0.0, 1.0], 50.0, 1000, rng=0)
    >>> x.shape, bool(abs(np.linalg.norm(x.mean(0)) - 0.98) < 0.01)
    ((1000, 3), True)
    """
    rng = np.random.default_rng(rng)
    mu = np.asarray(mu, dtype=float)
    if mu.ndim != 1 or mu.size < 2 or not np.all(np.isfinite(mu)) or not np.any(mu):
        raise ConfigurationError(f"mu must be a finite non-zero vector of length >= 2, got shape {mu.shape}")
    kappa = float(kappa)
    if not math.isfinite(kappa) or kappa < 0:
        raise ConfigurationError(f"kappa must be finite and >= 0, got {kappa}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 0:
        raise ConfigurationError(f"size must be an integer >= 0, got {size!r}")
    mu = mu / np.linalg.norm(mu)
    dim = mu.size
    w = _sample_cosine(dim, kappa, int(size), rng)
    # Uniform direction orthogonal to μ: a Gaussian with its μ-component removed.
    v = rng.standard_normal((int(size), dim))
    v -= np.outer(v @ mu, mu)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return w[:, None] * mu + np.sqrt((1.0 - w) * (1.0 + w))[:, None] * v


def _sample_cosine(dim, kappa, size, rng):
    """Wood's rejection step: ``size`` draws of w = μᵀx under vMF_D(κ)."""
    m1 = dim - 1.0
    # b = (−2κ + √(4κ² + (D−1)²))/(D−1), written without the cancellation at large κ.
    b = m1 / (2.0 * kappa + math.sqrt(4.0 * kappa * kappa + m1 * m1))
    x0 = (1.0 - b) / (1.0 + b)
    c = kappa * x0 + m1 * math.log((1.0 - x0) * (1.0 + x0))
    out = np.empty(size)
    todo = np.arange(size)
    while todo.size:
        z = rng.beta(m1 / 2.0, m1 / 2.0, size=todo.size)
        w = (1.0 - (1.0 + b) * z) / (1.0 - (1.0 - b) * z)
        u = rng.random(todo.size)
        accept = kappa * w + m1 * np.log1p(-x0 * w) - c >= np.log(u)
        out[todo[accept]] = w[accept]
        todo = todo[~accept]
    return np.clip(out, -1.0, 1.0)
