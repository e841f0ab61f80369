"""The Gaussian mechanism and what an (ε, δ) guarantee means — the formulas behind chapter 1.

A mechanism M is (ε, δ)-DP if for all neighbouring datasets D, D' (one record added or removed) and
all output sets S: P[M(D) ∈ S] ≤ e^ε P[M(D') ∈ S] + δ (Dwork & Roth 2014, Def. 2.4).
The Gaussian mechanism releases f(D) + N(0, σ²Δ²) for a query f of L2-sensitivity Δ; σ is the noise
multiplier. Its exact privacy profile is known in closed form (Balle & Wang 2018), k-fold composition
is again Gaussian with σ/√k (Dong, Roth & Su 2022: μ-GDP with μ = √k/σ), and subsampled/DP-SGD
budgets come from the accountants in ``accounting.py``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq
from scipy.stats import norm

from trustml.privacy.validation import check_delta, check_positive, check_steps


def gaussian_mechanism(value, *, sensitivity: float, noise_multiplier: float, size=None, seed=None) -> np.ndarray:
    """``value + N(0, (σΔ)²)`` (``size`` independent releases when given)."""
    check_positive("sensitivity", sensitivity)
    check_positive("noise_multiplier", noise_multiplier)
    rng = np.random.default_rng(seed)
    shape = np.shape(value) if size is None else (size, *np.shape(value))
    return np.asarray(value, dtype=float) + rng.normal(0.0, noise_multiplier * sensitivity, shape)


def gaussian_delta(epsilon: float, *, noise_multiplier: float) -> float:
    """Smallest δ for which the Gaussian mechanism with noise multiplier σ is (ε, δ)-DP (exact).

    δ(ε) = Φ(1/(2σ) − εσ) − e^ε Φ(−1/(2σ) − εσ)  (Balle & Wang 2018, Thm. 8; Δ cancels).
    """
    if not epsilon >= 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon!r}")
    sigma = check_positive("noise_multiplier", noise_multiplier)
    return float(norm.cdf(0.5 / sigma - epsilon * sigma) - math.exp(epsilon) * norm.cdf(-0.5 / sigma - epsilon * sigma))


def gaussian_epsilon(delta: float, *, noise_multiplier: float, steps: int = 1) -> float:
    """Exact ε of ``steps``-fold composition of the Gaussian mechanism at δ.

    Composing k Gaussian mechanisms with noise multiplier σ is exactly one with σ/√k (their privacy
    loss is Gaussian; Dong, Roth & Su 2022, Cor. 2), so the profile above is inverted for σ/√k.
    """
    check_delta(delta)
    sigma = check_positive("noise_multiplier", noise_multiplier) / math.sqrt(check_steps(steps))
    if gaussian_delta(0.0, noise_multiplier=sigma) <= delta:
        return 0.0
    high = 1.0
    while gaussian_delta(high, noise_multiplier=sigma) > delta:
        high *= 2
    return float(brentq(lambda e: gaussian_delta(e, noise_multiplier=sigma) - delta, 0.0, high, xtol=1e-10))


def classic_gaussian_noise_multiplier(epsilon: float, delta: float) -> float:
    """σ = √(2 ln(1.25/δ)) / ε, the textbook calibration (Dwork & Roth 2014, Thm. A.1; proven for ε < 1)."""
    check_positive("epsilon", epsilon)
    check_delta(delta)
    return math.sqrt(2 * math.log(1.25 / delta)) / epsilon


def privacy_loss(output, *, value: float, neighbour_value: float, sensitivity: float, noise_multiplier: float):
    """L(o) = ln p_D(o) / p_D'(o) for the Gaussian mechanism: the evidence an output gives about D vs D'."""
    s = check_positive("noise_multiplier", noise_multiplier) * check_positive("sensitivity", sensitivity)
    o = np.asarray(output, dtype=float)
    return ((o - neighbour_value) ** 2 - (o - value) ** 2) / (2 * s * s)


def tpr_bound(fpr, *, epsilon: float, delta: float):
    """Most power any test of "D or D'?" can have at false-positive rate α under (ε, δ)-DP.

    TPR ≤ min(1, e^ε α + δ, 1 − e^{−ε}(1 − δ − α)) (Kairouz, Oh & Viswanath 2015, Thm. 2.1): the ceiling on
    any membership-inference attack.
    """
    if not epsilon >= 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon!r}")
    check_delta(delta)
    alpha = np.clip(np.asarray(fpr, dtype=float), 0.0, 1.0)
    bound = np.minimum(np.exp(epsilon) * alpha + delta, 1 - np.exp(-epsilon) * (1 - delta - alpha))
    return np.clip(bound, alpha, 1.0)


def max_advantage(*, epsilon: float, delta: float) -> float:
    """max_α (TPR − FPR) allowed by (ε, δ)-DP: (e^ε − 1 + 2δ)/(e^ε + 1) (Kairouz et al. 2015)."""
    if not epsilon >= 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon!r}")
    check_delta(delta)
    return (math.exp(epsilon) - 1 + 2 * delta) / (math.exp(epsilon) + 1)


__all__ = ["classic_gaussian_noise_multiplier", "gaussian_delta", "gaussian_epsilon", "gaussian_mechanism",
           "max_advantage", "privacy_loss", "tpr_bound"]
