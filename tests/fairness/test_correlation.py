"""Spearman intervals: every replicate is scipy's spearmanr on the resampled units, the percentile interval
agrees with scipy.stats.bootstrap, paired differences, degenerate resamples and clear errors."""

import warnings

import numpy as np
import pytest
from scipy import stats

from trustml.fairness.correlation import DegenerateResampleWarning, spearman_intervals


def scores(seed, n=12, noise=1.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return x, x + noise * rng.normal(size=n)


def test_replicates_are_spearmanr_on_the_resampled_units():
    x, y = scores(0)
    y[3] = y[4]  # a tie: average ranks, as scipy
    result = spearman_intervals({"p": (x, y)}, n_boot=50, seed=3)
    index = np.random.default_rng(3).integers(0, len(x), size=(50, len(x)))
    for b in (0, 17, 49):
        expected = stats.spearmanr(x[index[b]], y[index[b]]).statistic
        assert result.replicates["p"].iloc[b] == pytest.approx(expected)
    assert result.table.loc["p", "rho"] == pytest.approx(stats.spearmanr(x, y).statistic)


def test_interval_agrees_with_scipy_bootstrap():
    x, y = scores(1, n=20)
    ours = spearman_intervals({"p": (x, y)}, n_boot=4000, seed=0).table.loc["p"]
    theirs = stats.bootstrap((x, y), lambda a, b: stats.spearmanr(a, b).statistic, paired=True, vectorized=False,
                             method="percentile", n_resamples=4000, random_state=0).confidence_interval
    assert ours["low"] == pytest.approx(theirs.low, abs=0.05)
    assert ours["high"] == pytest.approx(theirs.high, abs=0.05)
    assert ours["low"] < ours["rho"] < ours["high"]


def test_paired_differences():
    x, y = scores(2)
    result = spearman_intervals({"a": (x, y), "same": (x.copy(), y.copy()), "flipped": (x, -y)}, reference="a",
                                n_boot=300)
    table = result.table
    assert table.loc["same", ["difference", "difference_low", "difference_high"]].tolist() == [0, 0, 0]
    assert table.loc["flipped", "rho"] == pytest.approx(-table.loc["a", "rho"])
    assert table.loc["flipped", "difference_high"] < 0
    # A strong and a weak relation on the same units: the difference is resolved.
    strong, weak = scores(3, n=40, noise=0.1), scores(3, n=40, noise=3.0)
    both = spearman_intervals({"strong": strong, "weak": (strong[0], weak[1])}, reference="weak", n_boot=500)
    assert both.table.loc["strong", "difference_low"] > 0


def test_few_units_leave_out_constant_resamples_and_warn():
    x, y = np.array([0.0, 1.0, 2.0]), np.array([0.0, 2.0, 1.0])
    with pytest.warns(DegenerateResampleWarning, match="constant score"):
        result = spearman_intervals({"p": (x, y)}, n_boot=400)
    # A resample of 3 units has a repeated unit with probability 1 − 3!/27; all-equal ones are dropped.
    assert 0 < result.undefined < 400 and result.replicates["p"].isna().sum() == result.undefined
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spearman_intervals({"p": scores(4, n=15)}, n_boot=200)


@pytest.mark.parametrize("pairs, options, match", [
    ({}, {}, "pairs is empty"),
    ({"p": (np.arange(4.0), np.arange(3.0))}, {}, "equal length"),
    ({"p": (np.arange(2.0), np.arange(2.0))}, {}, "at least 3"),
    ({"p": (np.array([0, 1, np.nan]), np.arange(3.0))}, {}, "NaN"),
    ({"p": (np.ones(4), np.arange(4.0))}, {}, "constant"),
    ({"p": (np.arange(4.0), np.arange(4.0)), "q": (np.arange(5.0), np.arange(5.0))}, {}, "same units"),
    ({"p": [np.arange(4.0), np.arange(4.0)]}, {}, "tuple"),
    ({"p": (np.arange(4.0), np.arange(4.0))}, {"reference": "z"}, "reference"),
    ({"p": (np.arange(4.0), np.arange(4.0))}, {"n_boot": 0}, "n_boot"),
    ({"p": (np.arange(4.0), np.arange(4.0))}, {"confidence": 0.0}, "confidence"),
    ({"p": (np.arange(4.0), np.arange(4.0))}, {"max_undefined": 2.0}, "max_undefined"),
])
def test_bad_input(pairs, options, match):
    with pytest.raises(ValueError, match=match):
        spearman_intervals(pairs, **options)
