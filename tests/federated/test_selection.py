"""Device selection: sampling distributions (property tests), weights, and bad input."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustml.federated.selection import (
    Selection,
    aggregation_weights,
    collapse,
    round_rng,
    sample_devices,
    selection_probabilities,
    top_devices,
    unbiased_activity,
)

counts_strategy = st.lists(st.integers(min_value=0, max_value=500), min_size=2, max_size=12).filter(
    lambda c: sum(1 for n in c if n > 0) >= 2)
gammas = st.sampled_from([0.0, 0.5, 1.0, 2.0])


@settings(max_examples=40, deadline=None)
@given(counts=counts_strategy, gamma=gammas, seed=st.integers(0, 2**32 - 1))
def test_with_replacement_frequencies_match_p(counts, gamma, seed):
    """Empirical frequencies of N draws with replacement are within 5 binomial standard errors of p."""
    counts = np.array(counts)
    p = selection_probabilities(counts, gamma=gamma)
    draws = 20_000
    picks = sample_devices(counts, draws, gamma=gamma, replace=True, rng=np.random.default_rng(seed))
    frequency = np.bincount(picks, minlength=len(counts)) / draws
    tolerance = 5 * np.sqrt(p * (1 - p) / draws) + 1e-9
    assert np.all(np.abs(frequency - p) <= tolerance), (frequency, p)


@settings(max_examples=40, deadline=None)
@given(counts=counts_strategy, gamma=gammas, seed=st.integers(0, 2**32 - 1), data=st.data())
def test_without_replacement_no_duplicates_and_zero_devices_never_picked(counts, gamma, seed, data):
    counts = np.array(counts)
    available = int(np.count_nonzero(counts))
    m = data.draw(st.integers(1, available))
    rng = np.random.default_rng(seed)
    for _ in range(20):
        picks = sample_devices(counts, m, gamma=gamma, replace=False, rng=rng)
        assert len(picks) == m
        assert len(set(picks.tolist())) == m
        assert np.all(counts[picks] > 0)


@settings(max_examples=8, deadline=None)
@given(counts=counts_strategy, seed=st.integers(0, 2**32 - 1))
def test_first_draw_without_replacement_follows_p(counts, seed):
    """With m = 1 the two sampling modes coincide: frequencies match p."""
    counts = np.array(counts)
    p = selection_probabilities(counts, gamma=1.0)
    rng = np.random.default_rng(seed)
    draws = 3_000
    picks = np.array([sample_devices(counts, 1, gamma=1.0, rng=rng)[0] for _ in range(draws)])
    frequency = np.bincount(picks, minlength=len(counts)) / draws
    assert np.all(np.abs(frequency - p) <= 5 * np.sqrt(p * (1 - p) / draws) + 1e-9)


@given(counts=counts_strategy, gamma=gammas)
def test_probabilities_sum_to_one_and_follow_n_to_the_gamma(counts, gamma):
    counts = np.array(counts)
    p = selection_probabilities(counts, gamma=gamma)
    assert p.sum() == pytest.approx(1.0)
    assert np.all(p[counts == 0] == 0)
    has = counts > 0
    reference = counts[has].astype(float) ** gamma
    np.testing.assert_allclose(p[has], reference / reference.sum(), rtol=1e-9)


def test_gamma_zero_is_uniform_over_devices_with_data():
    p = selection_probabilities([0, 1, 10, 1000], gamma=0.0)
    np.testing.assert_allclose(p, [0, 1 / 3, 1 / 3, 1 / 3])


def test_huge_counts_and_gamma_do_not_overflow():
    p = selection_probabilities([10**6, 10**6, 1], gamma=80.0)
    assert np.all(np.isfinite(p)) and p[:2] == pytest.approx([0.5, 0.5])


def test_inclusion_without_replacement_grows_with_activity():
    counts = np.array([1, 5, 20, 100])
    rng = np.random.default_rng(0)
    included = np.zeros(4)
    for _ in range(4000):
        included[sample_devices(counts, 2, gamma=1.0, rng=rng)] += 1
    assert np.all(np.diff(included) > 0)


def test_top_devices_picks_the_most_active_with_stable_ties():
    assert top_devices([5, 9, 9, 0, 1], 2).tolist() == [1, 2]
    assert top_devices([5, 9, 9, 0, 1], 3).tolist() == [1, 2, 0]
    with pytest.raises(ValueError, match="devices_per_round=5 exceeds the 4 devices"):
        top_devices([5, 9, 9, 0, 1], 5)


def test_aggregation_weights():
    counts = np.array([10, 30, 0, 60])
    np.testing.assert_allclose(aggregation_weights([0, 1], counts), [0.25, 0.75])
    np.testing.assert_allclose(aggregation_weights([3, 3, 1], counts, rule="mean"), [1 / 3] * 3)
    devices, weights = collapse([3, 3, 1], [1 / 3] * 3)
    assert devices.tolist() == [3, 1] and weights == pytest.approx([2 / 3, 1 / 3])
    with pytest.raises(ValueError, match="no data"):
        aggregation_weights([2], counts)
    with pytest.raises(ValueError, match="rule must be one of"):
        aggregation_weights([0], counts, rule="median")


def test_unbiased_alternative_matches_the_data_weighted_mean_in_expectation():
    """Sampling ∝ n with replacement + plain mean: E[Σ w_i x_{k_i}] = Σ_k (n_k/n) x_k."""
    counts = np.array([1, 4, 20, 75])
    values = np.array([1.0, -2.0, 3.0, 0.5])
    selection = unbiased_activity()
    rng = np.random.default_rng(1)
    estimates = []
    for _ in range(6_000):
        picks = selection.select(counts, 3, rng)
        estimates.append(np.dot(selection.weights(picks, counts), values[picks]))
    target = np.dot(counts / counts.sum(), values)
    assert np.mean(estimates) == pytest.approx(target, abs=0.03)
    # n-weighting of the same activity sample double counts the heavy devices: a clearly different mean.
    biased = Selection("activity", gamma=1.0, replace=True, aggregation="weighted")
    rng = np.random.default_rng(1)
    biased_mean = np.mean([np.dot(biased.weights(p, counts), values[p])
                           for p in (biased.select(counts, 3, rng) for _ in range(6_000))])
    assert abs(biased_mean - target) > 0.05


def test_round_rng_is_reproducible_and_differs_by_round():
    a = round_rng(3, 1).integers(1 << 30, size=4)
    assert np.array_equal(a, round_rng(3, 1).integers(1 << 30, size=4))
    assert not np.array_equal(a, round_rng(3, 2).integers(1 << 30, size=4))


@pytest.mark.parametrize("call, message", [
    (lambda: selection_probabilities([1, 2], gamma=-0.5), "gamma must be a finite number >= 0"),
    (lambda: Selection("activity", gamma=-1), "gamma must be"),
    (lambda: Selection("best"), "scheme must be one of"),
    (lambda: Selection("top", replace=True), "replace=True makes no sense"),
    (lambda: selection_probabilities([0, 0]), "no device holds any data"),
    (lambda: selection_probabilities([3, -1]), "non-negative integers"),
    (lambda: selection_probabilities([]), "non-empty"),
    (lambda: sample_devices([1, 0, 4], 3, rng=np.random.default_rng(0)), "exceeds the 2 devices that hold data"),
    (lambda: sample_devices([1, 4], 0, rng=np.random.default_rng(0)), "devices_per_round must be >= 1"),
])
def test_bad_input_is_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_with_replacement_may_ask_for_more_draws_than_devices():
    picks = sample_devices([1, 3], 5, replace=True, rng=np.random.default_rng(0))
    assert len(picks) == 5 and set(picks.tolist()) <= {0, 1}
