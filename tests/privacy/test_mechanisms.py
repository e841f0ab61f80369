"""The Gaussian mechanism's exact profile against numerical integration and the accountants."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.stats import norm

from trustml.privacy import get_epsilon
from trustml.privacy.mechanisms import (
    classic_gaussian_noise_multiplier, gaussian_delta, gaussian_epsilon, gaussian_mechanism, max_advantage,
    privacy_loss, tpr_bound,
)


@pytest.mark.parametrize("sigma, epsilon", [(0.8, 0.5), (1.3, 0.7), (3.0, 0.1)])
def test_gaussian_delta_equals_the_hockey_stick_integral(sigma, epsilon):
    # δ(ε) = ∫ max(0, p_D(o) − e^ε p_D'(o)) do with D: N(1, σ²), D': N(0, σ²) (sensitivity 1).
    def integrand(o):
        return max(0.0, norm.pdf(o, 1, sigma) - math.exp(epsilon) * norm.pdf(o, 0, sigma))

    expected, _ = quad(integrand, -40, 40, points=[0.5 + epsilon * sigma ** 2], limit=200)
    assert gaussian_delta(epsilon, noise_multiplier=sigma) == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_gaussian_epsilon_inverts_delta_and_composes_like_sigma_over_root_k():
    eps = gaussian_epsilon(1e-5, noise_multiplier=2.0)
    assert gaussian_delta(eps, noise_multiplier=2.0) == pytest.approx(1e-5, rel=1e-6)
    assert gaussian_epsilon(1e-5, noise_multiplier=4.0, steps=16) == pytest.approx(
        gaussian_epsilon(1e-5, noise_multiplier=1.0))


@pytest.mark.parametrize("steps", [1, 10, 100])
def test_accountants_bound_the_exact_composition(steps):
    exact = gaussian_epsilon(1e-5, noise_multiplier=5.0, steps=steps)
    prv = get_epsilon(noise_multiplier=5.0, sample_rate=1.0, steps=steps, delta=1e-5, accountant="prv")
    rdp = get_epsilon(noise_multiplier=5.0, sample_rate=1.0, steps=steps, delta=1e-5, accountant="rdp")
    assert exact - 1e-6 <= prv <= exact + 0.03  # PRV: an upper bound within its error budget
    assert prv < rdp  # RDP's conversion to (ε, δ) is looser


def test_classic_calibration_is_conservative_for_small_epsilon():
    sigma = classic_gaussian_noise_multiplier(0.5, 1e-5)
    assert gaussian_delta(0.5, noise_multiplier=sigma) < 1e-5
    assert gaussian_epsilon(1e-5, noise_multiplier=sigma) < 0.5


def test_mechanism_noise_and_privacy_loss():
    draws = gaussian_mechanism(3.0, sensitivity=2.0, noise_multiplier=1.5, size=200_000, seed=0)
    assert draws.mean() == pytest.approx(3.0, abs=0.03) and draws.std() == pytest.approx(3.0, rel=0.01)
    loss = privacy_loss(np.array([0.5]), value=1.0, neighbour_value=0.0, sensitivity=1.0, noise_multiplier=1.0)
    assert loss[0] == pytest.approx(0.0)  # the midpoint says nothing


def test_hypothesis_testing_bound():
    alphas = np.linspace(0, 1, 100_001)
    bound = tpr_bound(alphas, epsilon=1.0, delta=1e-3)
    assert bound[0] == pytest.approx(1e-3) and bound[-1] == 1.0 and np.all(np.diff(bound) >= 0)
    assert (bound - alphas).max() == pytest.approx(max_advantage(epsilon=1.0, delta=1e-3), abs=1e-5)
    assert max_advantage(epsilon=0.0, delta=1e-9) == pytest.approx(0.0, abs=1e-8)


@pytest.mark.parametrize("call, message", [
    (lambda: gaussian_delta(-1.0, noise_multiplier=1.0), "epsilon"),
    (lambda: gaussian_delta(1.0, noise_multiplier=0.0), "noise_multiplier"),
    (lambda: gaussian_epsilon(0.0, noise_multiplier=1.0), "delta"),
    (lambda: classic_gaussian_noise_multiplier(0.0, 1e-5), "epsilon"),
    (lambda: gaussian_mechanism(1.0, sensitivity=-1.0, noise_multiplier=1.0), "sensitivity"),
])
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()
