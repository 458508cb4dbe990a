"""deepdist.dnt.vmf: log I_ν, the vMF normaliser, A_D and its inverse, Wood's sampler.

References: scipy.special.ive where it is finite; mpmath if installed; otherwise exact series in
Python's ``decimal`` (integer and half-integer orders) and the closed forms of half-integer orders.
"""

from __future__ import annotations

import functools
import math
from decimal import Decimal, localcontext
from fractions import Fraction

import numpy as np
import pytest

from deepdist.dnt.vmf import (kappa_from_resultant, log_bessel_iv, log_vmf_normalizer,
                              mean_resultant_length, sample_vmf)
from deepdist.errors import ConfigurationError

scipy_special = pytest.importorskip("scipy.special")

try:  # pragma: no cover - depends on the environment
    import mpmath
except ImportError:  # pragma: no cover
    mpmath = None

_PI = Decimal("3.14159265358979323846264338327950288419716939937510582097494459")
# Bernoulli numbers B_2..B_20 for Stirling's series of log Γ.
_BERNOULLI = [Fraction(1, 6), Fraction(-1, 30), Fraction(1, 42), Fraction(-1, 30), Fraction(5, 66),
              Fraction(-691, 2730), Fraction(7, 6), Fraction(-3617, 510), Fraction(43867, 798),
              Fraction(-174611, 330)]


def _dec_lgamma(z: Decimal) -> Decimal:
    """log Γ(z) to ~40 digits: shift z above 30, then Stirling's series."""
    shift = Decimal(0)
    while z < 30:
        shift += z.ln()
        z += 1
    total = (z - Decimal("0.5")) * z.ln() - z + (2 * _PI).ln() / 2
    for k, b in enumerate(_BERNOULLI, start=1):
        total += Decimal(b.numerator) / Decimal(b.denominator) / (2 * k * (2 * k - 1) * z ** (2 * k - 1))
    return total - shift


@functools.lru_cache(maxsize=None)
def _dec_log_iv(nu, x) -> Decimal:
    """log I_ν(x) from the power series, summed exactly enough in 50-digit decimal arithmetic."""
    with localcontext() as ctx:
        ctx.prec = 50
        nu, x = Decimal(repr(float(nu))), Decimal(repr(float(x)))
        if mpmath is not None:  # pragma: no cover - only where mpmath is installed
            mpmath.mp.dps = 40
            return Decimal(str(mpmath.log(mpmath.besseli(mpmath.mpf(str(nu)), mpmath.mpf(str(x))))))
        q = x * x / 4
        term, total, k = Decimal(1), Decimal(1), 0
        while True:
            k += 1
            term = term * q / (k * (nu + k))
            total += term
            if term < total * Decimal("1e-45") and k > q.sqrt():
                break
        return nu * (x / 2).ln() - _dec_lgamma(nu + 1) + total.ln()


def _half_order_log_sum(n: int, x: float) -> float:
    """log of Σ_k (−1)^k a_k/x^k, the finite factor of I_{n+½}(x) = e^x (2πx)^{-½} Σ (+ e^{−x} terms)."""
    xf = Fraction(x)
    total = sum(Fraction((-1) ** k * math.factorial(n + k), 2 ** k * math.factorial(k) * math.factorial(n - k))
                / xf ** k for k in range(n + 1))
    return math.log(total)


def _scaled_error(got, ref):
    """|Δ log I| / max(1, |log I|): the relative error of I where log I is small, of log I beyond."""
    got, ref = np.asarray(got, float), np.asarray(ref, float)
    return np.abs(got - ref) / np.maximum(1.0, np.abs(ref))


# --------------------------------------------------------------------------------------- log I_ν
@pytest.mark.parametrize("nu", [0.0, 0.5, 1.0, 2.5, 7.0, 20.0, 39.5, 40.0, 60.0, 300.0, 2000.0, 18499.0, 1e5])
def test_log_bessel_matches_scipy_where_finite(nu):
    kappa = np.logspace(-8, 7, 400)
    with np.errstate(all="ignore"):
        ive = scipy_special.ive(nu, kappa)
    ok = np.isfinite(ive) & (ive > 1e-280)
    assert ok.sum() >= 3
    err = _scaled_error(log_bessel_iv(nu, kappa)[ok], np.log(ive[ok]) + kappa[ok])
    # Largest where log I crosses 0 at large ν (cancellation of two ~ν-sized terms, see module doc).
    assert err.max() < 1e-13 * max(1.0, nu / 100.0)


@pytest.mark.parametrize("nu,kappa", [(0, 1e-8), (3, 1e-6), (0.5, 2.0), (7, 50.0), (20.5, 200.0),
                                      (45, 1e-3), (1000, 700.0), (18499, 1e4), (1e5, 1e3), (1e5, 3e4)])
def test_log_bessel_matches_high_precision_series(nu, kappa):
    ref = float(_dec_log_iv(nu, kappa))
    got = float(log_bessel_iv(nu, kappa))
    assert _scaled_error(got, ref) < 2e-14 * max(1.0, nu / 1000.0), (got, ref)


@pytest.mark.parametrize("n", [0, 1, 5, 30])
@pytest.mark.parametrize("x", [60.0, 1e3, 1e7])
def test_log_bessel_half_orders_at_large_kappa(n, x):
    ref = x - 0.5 * math.log(2 * math.pi * x) + _half_order_log_sum(n, x)  # e^{-2x} part negligible
    assert abs(float(log_bessel_iv(n + 0.5, x)) - ref) <= 4e-16 * abs(ref) + 1e-14
    # The ratio is the sharper test at large κ: the e^x factors cancel exactly.
    ratio_ref = math.exp(_half_order_log_sum(n + 1, x) - _half_order_log_sum(n, x))
    assert abs(float(mean_resultant_length(2 * n + 3, x)) - ratio_ref) < 3e-15


def test_log_bessel_at_zero_and_tiny_kappa():
    assert float(log_bessel_iv(0.0, 0.0)) == 0.0
    assert float(log_bessel_iv(3.0, 0.0)) == -np.inf
    # log I_ν(κ) → ν log(κ/2) − log Γ(ν+1) as κ → 0.
    for nu in (0.5, 5.0, 80.0, 18499.0):
        lead = nu * math.log(0.5e-8) - math.lgamma(nu + 1)
        assert abs(float(log_bessel_iv(nu, 1e-8)) - lead) <= 1e-14 * abs(lead) + 1e-15


def test_log_bessel_recurrence_identity_at_extremes():
    # I_{ν−1} − I_{ν+1} = (2ν/κ) I_ν checks the pieces against each other where no library reaches.
    for nu, kappa in [(1e5, 1e7), (1e5, 1e-6), (18499.0, 1e4), (40.0, 1e4), (3.0, 1e-8)]:
        lm, l0, lp = (float(log_bessel_iv(nu + d, kappa)) for d in (-1.0, 0.0, 1.0))
        lhs = lm + math.log1p(-math.exp(lp - lm))
        rhs = math.log(2 * nu / kappa) + l0
        # lp − lm carries ulp(log I) of absolute error, magnified by 1/(1 − e^{lp−lm}) ≈ κ/2ν.
        assert abs(lhs - rhs) <= 1e-15 * abs(l0) * max(1.0, kappa / (2 * nu)) + 1e-13 * max(1.0, abs(rhs))
    # The same identity on the ratios, 1/A_{D−2} − A_D = 2ν/κ with ν = D/2 − 1, even at ν ≪ κ.
    for dim, kappa in [(200002, 1e7), (83, 1e7), (83, 1e-8), (37000, 1e4), (5, 1e6), (4, 0.3)]:
        nu = dim / 2 - 1
        lhs = 1 / float(mean_resultant_length(dim - 2, kappa)) - float(mean_resultant_length(dim, kappa))
        assert lhs == pytest.approx(2 * nu / kappa, rel=2e-16 * max(1.0, kappa / nu) * 10)


def test_log_bessel_broadcasts_and_rejects_bad_input():
    out = log_bessel_iv(np.array([[0.5], [50.0]]), np.array([1.0, 10.0, 100.0]))
    assert out.shape == (2, 3) and np.all(np.isfinite(out))
    with pytest.raises(ConfigurationError):
        log_bessel_iv(-1.0, 1.0)
    with pytest.raises(ConfigurationError):
        log_bessel_iv(1.0, -1.0)


# ---------------------------------------------------------------------------- vMF normaliser
def test_normalizer_limit_at_zero_is_minus_log_sphere_area():
    for dim in (2, 3, 50, 37000):
        log_area = math.log(2) + dim / 2 * math.log(math.pi) - math.lgamma(dim / 2)
        assert float(log_vmf_normalizer(dim, 0.0)) == pytest.approx(-log_area, rel=1e-14)
        assert float(log_vmf_normalizer(dim, 1e-8)) == pytest.approx(-log_area, rel=1e-12, abs=1e-12)
    assert float(log_vmf_normalizer(3, 1.0)) == pytest.approx(-math.log(4 * math.pi * math.sinh(1.0)), rel=1e-14)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigurationError):
            log_vmf_normalizer(3, bad)
    with pytest.raises(ConfigurationError):
        log_vmf_normalizer(1, 1.0)


def test_normalizer_against_scipy_and_finite_at_vocabulary_scale():
    stats = pytest.importorskip("scipy.stats")
    for dim, kappa in [(3, 5.0), (50, 20.0), (300, 150.0)]:
        mu = np.zeros(dim)
        mu[0] = 1.0
        ref = stats.vonmises_fisher(mu, kappa).logpdf(mu) - kappa
        assert float(log_vmf_normalizer(dim, kappa)) == pytest.approx(ref, rel=1e-11)
    value = float(log_vmf_normalizer(37000, 1e4))
    ref = 18499 * math.log(1e4) - 18500 * math.log(2 * math.pi) - float(_dec_log_iv(18499, 1e4))
    assert math.isfinite(value) and value == pytest.approx(ref, rel=1e-13)


# ------------------------------------------------------------------------------------ A_D(κ)
@pytest.mark.parametrize("dim", [2, 3, 50, 2000, 37000])
def test_mean_resultant_length_is_in_unit_interval_and_increasing(dim):
    kappa = np.logspace(-6, 7, 500)
    a = mean_resultant_length(dim, kappa)
    assert np.all((a > 0) & (a < 1))
    assert np.all(np.diff(a) > 0)
    assert float(mean_resultant_length(dim, 0.0)) == 0.0
    # Small-κ limit A_D(κ) ≈ κ/D.
    assert float(mean_resultant_length(dim, 1e-6)) == pytest.approx(1e-6 / dim, rel=1e-6)


def test_mean_resultant_length_closed_form_d3_and_scipy_ratio():
    kappa = np.logspace(-3, 3, 200)
    expect = 1 / np.tanh(kappa) - 1 / kappa
    ok = kappa > 0.1  # the closed form itself cancels below; its Taylor series takes over
    assert np.allclose(mean_resultant_length(3, kappa)[ok], expect[ok], rtol=5e-14, atol=0)
    small = kappa[kappa < 1e-2]
    taylor = small / 3 - small ** 3 / 45 + 2 * small ** 5 / 945 - small ** 7 / 4725
    assert np.allclose(mean_resultant_length(3, small), taylor, rtol=1e-14, atol=0)
    for dim in (10, 51, 400):
        nu = dim / 2 - 1
        kappa = np.logspace(-2, 4, 100)
        top, bottom = scipy_special.ive(nu + 1, kappa), scipy_special.ive(nu, kappa)
        ok = (top > 1e-280) & (bottom > 1e-280)  # scipy underflows below
        assert ok.sum() > 50
        assert np.allclose(mean_resultant_length(dim, kappa)[ok], top[ok] / bottom[ok], rtol=1e-12, atol=0)


def test_mean_resultant_length_matches_series_at_large_order():
    for nu, kappa in [(18499, 1e4), (1e5, 3e4), (45, 1e-3)]:
        ref = math.exp(float(_dec_log_iv(nu + 1, kappa) - _dec_log_iv(nu, kappa)))
        assert float(mean_resultant_length(int(2 * nu + 2), kappa)) == pytest.approx(ref, rel=1e-13)


@pytest.mark.parametrize("dim", [3, 50, 2000, 37000])
def test_kappa_from_resultant_round_trip(dim):
    kappa = np.logspace(-2, 6, 60)
    back = kappa_from_resultant(dim, mean_resultant_length(dim, kappa))
    # D=3, κ=1e6: 1 − A ≈ 1e-6 carries only ~10 digits of κ.
    assert np.allclose(back, kappa, rtol=1e-8, atol=0)
    assert float(kappa_from_resultant(dim, 0.0)) == 0.0


def test_kappa_from_resultant_rejects_out_of_range():
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(ConfigurationError):
            kappa_from_resultant(10, bad)
    with pytest.raises(ConfigurationError):
        kappa_from_resultant(1, 0.5)


# ----------------------------------------------------------------------------------- sampler
@pytest.mark.parametrize("dim,kappa", [(3, 5.0), (50, 40.0), (2000, 500.0), (2000, 5000.0)])
def test_sample_vmf_mean_resultant_matches_theory(dim, kappa):
    rng = np.random.default_rng(1234)
    mu = rng.standard_normal(dim)
    mu /= np.linalg.norm(mu)
    n = 2000
    x = sample_vmf(mu, kappa, n, rng=rng)
    assert x.shape == (n, dim)
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-12)
    w = x @ mu
    a = float(mean_resultant_length(dim, kappa))
    se = w.std() / math.sqrt(n)
    assert abs(w.mean() - a) < 4 * se
    # ‖x̄‖ adds the orthogonal noise's (1 − E w²)/n to A² in expectation.
    expect = math.sqrt(a * a + (1 - np.mean(w * w)) / n)
    assert abs(np.linalg.norm(x.mean(axis=0)) - expect) < 5 * se


def test_sample_vmf_cosine_distribution_d3():
    stats = pytest.importorskip("scipy.stats")
    kappa = 3.0
    w = sample_vmf(np.array([0.0, 1.0, 0.0]), kappa, 4000, rng=7)[:, 1]

    def cdf(t):  # D=3: the density of w is ∝ e^{κw} on [−1, 1]
        return (np.exp(kappa * t) - np.exp(-kappa)) / (np.exp(kappa) - np.exp(-kappa))

    assert stats.kstest(w, cdf).pvalue > 1e-3


def test_sample_vmf_uniform_at_zero_kappa_and_reproducible():
    x = sample_vmf(np.ones(5), 0.0, 3000, rng=3)
    assert np.linalg.norm(x.mean(axis=0)) < 4 / math.sqrt(3000)
    assert np.array_equal(sample_vmf(np.ones(5), 2.0, 10, rng=3), sample_vmf(np.ones(5), 2.0, 10, rng=3))
    assert sample_vmf(np.ones(5), 2.0, 0, rng=3).shape == (0, 5)
    with pytest.raises(ConfigurationError):
        sample_vmf(np.zeros(5), 1.0, 3)
    with pytest.raises(ConfigurationError):
        sample_vmf(np.ones(5), -1.0, 3)


def test_sample_vmf_extremes():
    # Vocabulary-sized sphere at the paper's scale of κ.
    mu = np.zeros(37000)
    mu[5] = 1.0
    w = sample_vmf(mu, 1e4, 200, rng=2)[:, 5]
    assert abs(w.mean() - float(mean_resultant_length(37000, 1e4))) < 4 * w.std() / math.sqrt(200)
    # Very concentrated on S²: 1 − w is exponential with mean ≈ 1/κ.
    gap = 1.0 - sample_vmf(np.array([0.0, 0.0, 1.0]), 1e7, 20000, rng=1)[:, 2]
    assert np.all(gap >= 0) and abs(gap.mean() * 1e7 - 1.0) < 4 / math.sqrt(20000)
