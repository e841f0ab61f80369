"""Accounting against Opacus' accountants, noise-decay composition, the inverse, and bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.analysis import rdp as rdp_analysis
from opacus.accountants.analysis.prv import PoissonSubsampledGaussianPRV

from trustml.privacy import get_epsilon, get_noise_multiplier, noise_schedule
from trustml.privacy.accounting import history


@pytest.mark.parametrize("name, cls", [("rdp", RDPAccountant), ("prv", PRVAccountant)])
def test_constant_sigma_matches_opacus_stepped_accountant(name, cls):
    accountant = cls()
    for _ in range(300):
        accountant.step(noise_multiplier=1.1, sample_rate=0.01)
    expected = accountant.get_epsilon(delta=1e-5)
    assert get_epsilon(noise_multiplier=1.1, sample_rate=0.01, steps=300, delta=1e-5, accountant=name) == \
        pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("name, cls", [("rdp", RDPAccountant), ("prv", PRVAccountant)])
def test_noise_decay_matches_step_by_step_composition(name, cls):
    schedule = noise_schedule(1.5, steps=60, steps_per_epoch=20, noise_decay=0.8)
    assert schedule[0] == 1.5 and schedule[20] == pytest.approx(1.2) and schedule[59] == pytest.approx(1.5 * 0.64)
    accountant = cls()
    for sigma in schedule:
        accountant.step(noise_multiplier=sigma, sample_rate=0.05)
    expected = accountant.get_epsilon(delta=1e-5)
    got = get_epsilon(noise_multiplier=schedule, sample_rate=0.05, delta=1e-5, accountant=name)
    assert got == pytest.approx(expected, rel=1e-9)
    # It lies between the constant-σ budgets of the schedule's largest and smallest σ.
    low = get_epsilon(noise_multiplier=1.5, sample_rate=0.05, steps=60, delta=1e-5, accountant=name)
    high = get_epsilon(noise_multiplier=1.5 * 0.64, sample_rate=0.05, steps=60, delta=1e-5, accountant=name)
    assert low < got < high


def test_rdp_of_a_schedule_is_the_sum_of_per_step_rdp():
    """Independent of Opacus' history handling: compose the per-step RDP curves by hand."""
    schedule = noise_schedule(2.0, steps=30, steps_per_epoch=10, noise_decay=0.7)
    orders = RDPAccountant.DEFAULT_ALPHAS
    rdp = sum(rdp_analysis.compute_rdp(q=0.1, noise_multiplier=s, steps=1, orders=orders) for s in schedule)
    expected, _ = rdp_analysis.get_privacy_spent(orders=orders, rdp=np.asarray(rdp), delta=1e-6)
    assert get_epsilon(noise_multiplier=schedule, sample_rate=0.1, delta=1e-6) == pytest.approx(expected, rel=1e-9)
    expected_history = [(2.0, 0.1, 10), (pytest.approx(1.4), 0.1, 10), (pytest.approx(0.98), 0.1, 10)]
    assert history(schedule, 0.1, None) == expected_history


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
@pytest.mark.parametrize("decay", [1.0, 0.9])
def test_noise_multiplier_for_a_target_epsilon(accountant, decay):
    sigma = get_noise_multiplier(target_epsilon=3.0, sample_rate=0.02, epochs=2, delta=1e-5, accountant=accountant,
                                 noise_decay=decay)
    schedule = noise_schedule(sigma, steps=100, steps_per_epoch=50, noise_decay=decay)
    spent = get_epsilon(noise_multiplier=schedule, sample_rate=0.02, delta=1e-5, accountant=accountant)
    assert 3.0 - 0.02 <= spent <= 3.0
    if decay == 1.0:  # the constant case is Opacus' own search
        from opacus.accountants.utils import get_noise_multiplier as opacus_search
        assert sigma == opacus_search(target_epsilon=3.0, target_delta=1e-5, sample_rate=0.02, steps=100,
                                      accountant=accountant)


def test_prv_is_tighter_than_rdp():
    common = dict(noise_multiplier=1.0, sample_rate=0.01, steps=1000, delta=1e-5)
    assert get_epsilon(**common, accountant="prv") < get_epsilon(**common, accountant="rdp")


@pytest.mark.parametrize("kwargs, message", [
    (dict(noise_multiplier=0.0), "noise_multiplier"),
    (dict(noise_multiplier=-1.0), "noise_multiplier"),
    (dict(noise_multiplier=[1.0, 0.0], steps=None), r"noise_multiplier\[1\]"),
    (dict(delta=0.0), "delta"),
    (dict(delta=1.0), "delta"),
    (dict(sample_rate=0.0), "sample_rate"),
    (dict(sample_rate=1.5), "sample_rate"),
    (dict(steps=0), "steps"),
    (dict(accountant="gdp-ish"), "accountant"),
])
def test_bad_input_to_get_epsilon(kwargs, message):
    arguments = dict(noise_multiplier=1.0, sample_rate=0.01, steps=10, delta=1e-5) | kwargs
    with pytest.raises(ValueError, match=message):
        get_epsilon(**arguments)


@pytest.mark.parametrize("kwargs, message", [
    (dict(target_epsilon=0.0), "target_epsilon"),
    (dict(target_epsilon=-2.0), "target_epsilon"),
    (dict(delta=1.2), "delta"),
    (dict(sample_rate=0.0), "sample_rate"),
    (dict(steps=10), "exactly one of steps and epochs"),
])
def test_bad_input_to_get_noise_multiplier(kwargs, message):
    arguments = dict(target_epsilon=1.0, sample_rate=0.01, epochs=1, delta=1e-5) | kwargs
    with pytest.raises(ValueError, match=message):
        get_noise_multiplier(**arguments)


def test_sample_rate_one_is_allowed():
    assert get_epsilon(noise_multiplier=1.0, sample_rate=1.0, steps=5, delta=1e-5) > 0


def test_large_delta_warns():
    with pytest.warns(UserWarning, match="1/N"):
        get_epsilon(noise_multiplier=1.0, sample_rate=0.1, steps=10, delta=0.01, dataset_size=1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_epsilon(noise_multiplier=1.0, sample_rate=0.1, steps=10, delta=1e-5, dataset_size=1000)


def test_epsilon_curve_matches_get_epsilon_at_each_mark():
    from trustml.privacy import epsilon_curve

    curve = epsilon_curve(noise_multiplier=1.0, sample_rate=0.05, steps=40, delta=1e-5, points=4)
    assert list(curve["step"].unique()) == [10, 20, 30, 40] and set(curve["accountant"]) == {"rdp", "prv"}
    row = curve[(curve.step == 30) & (curve.accountant == "prv")].iloc[0]
    assert row.epsilon == pytest.approx(get_epsilon(noise_multiplier=1.0, sample_rate=0.05, steps=30, delta=1e-5,
                                                    accountant="prv"))
    assert row.epoch == pytest.approx(1.5)
    rdp = curve[curve.accountant == "rdp"]["epsilon"].to_numpy()
    assert np.all(np.diff(rdp) > 0)


# ---------------------------------------------------------------- PRV's grid, histories (issue #15, item 6)

def test_prv_grid_points_is_opacus_own_domain():
    from trustml.privacy.accounting import prv_grid_points

    for sigma, q, steps in [(1.0, 0.01, 1000), (0.8, 0.05, 200), (2.0, 1.0, 10)]:
        domain = PRVAccountant()._get_domain(
            prvs=[PoissonSubsampledGaussianPRV(q, sigma)], num_self_compositions=[steps], eps_error=0.01,
            delta_error=1e-5 / 1000)
        assert prv_grid_points([(sigma, q, steps)], delta=1e-5) == pytest.approx(domain.size, rel=1e-3, abs=2)


@pytest.mark.parametrize("sigma", [1e-3, 0.1])
def test_prv_with_a_huge_grid_answers_with_rdp_at_once_and_says_so(sigma):
    """Before: Opacus' PRV built a ~10⁸–10¹³-point grid (> 60 s, 13 GB at σ = 0.1). Now RDP's ε, with a warning."""
    import time

    from trustml.privacy import PRVFallbackWarning

    start = time.process_time()  # CPU time: robust on a loaded machine
    with pytest.warns(PRVFallbackWarning, match="RDP"):
        spent = get_epsilon(noise_multiplier=sigma, sample_rate=0.01, steps=1000, delta=1e-5, accountant="prv")
    assert time.process_time() - start < 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert spent == get_epsilon(noise_multiplier=sigma, sample_rate=0.01, steps=1000, delta=1e-5, accountant="rdp")


def test_prv_within_the_grid_limit_is_prv_and_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = get_epsilon(noise_multiplier=1.0, sample_rate=0.01, steps=1000, delta=1e-5, accountant="prv")
    accountant = PRVAccountant()
    accountant.history = [(1.0, 0.01, 1000)]
    assert got == accountant.get_epsilon(delta=1e-5)


def test_noise_search_with_prv_past_the_grid_limit_is_still_within_the_target(monkeypatch):
    """With a tiny grid limit every PRV evaluation falls back: the σ found must still spend ≤ the target (by RDP)."""
    from trustml.privacy import PRVFallbackWarning, accounting

    monkeypatch.setattr(accounting, "MAX_PRV_GRID_POINTS", 10)
    accounting._search_noise_multiplier.cache_clear()
    with pytest.warns(PRVFallbackWarning):
        sigma = get_noise_multiplier(target_epsilon=3.0, sample_rate=0.02, steps=100, delta=1e-5, accountant="prv")
    accounting._search_noise_multiplier.cache_clear()
    rdp = get_epsilon(noise_multiplier=sigma, sample_rate=0.02, steps=100, delta=1e-5, accountant="rdp")
    assert 3.0 - 0.02 <= rdp <= 3.0


@pytest.mark.parametrize("entries, message", [
    ([(1.0, 0.01, -5)], "steps of history entry 0"),  # before: ε = −145.7
    ([(1.0, 0.01, 0)], "steps of history entry 0"),
    ([(1.0, 0.01, 10), (1.0, 0.01, 2.5)], "steps of history entry 1"),
    ([(float("nan"), 0.01, 5)], "noise_multiplier of history entry 0"),
    ([(-1.0, 0.01, 5)], "noise_multiplier of history entry 0"),
    ([(float("inf"), 0.01, 5)], "noise_multiplier of history entry 0"),
    ([(1.0, 0.0, 5)], "sample_rate of history entry 0"),
    ([(1.0, 1.5, 5)], "sample_rate of history entry 0"),
    ([(1.0, float("nan"), 5)], "sample_rate of history entry 0"),
    ([(1.0, 0.01)], "triple"),
])
@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_bad_history_is_refused(entries, message, accountant):
    from trustml.privacy import epsilon_of_history

    with pytest.raises(ValueError, match=message):
        epsilon_of_history(entries, delta=1e-5, accountant=accountant)


def test_history_of_numpy_integers_is_accepted():
    from trustml.privacy import epsilon_of_history

    assert epsilon_of_history([(1.0, 0.01, np.int64(100))], delta=1e-5) == \
        get_epsilon(noise_multiplier=1.0, sample_rate=0.01, steps=100, delta=1e-5)
    assert epsilon_of_history([], delta=1e-5) == 0.0
