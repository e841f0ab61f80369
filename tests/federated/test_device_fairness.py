"""Per-device accuracy and its summaries (chapter federated/06): exact values on small hand-made federations,
and bad input refused with the parameter's name."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trustml.federated.experiments import (
    accuracy_variance,
    device_accuracy,
    device_outcomes,
    low_activity_accuracy,
    who_benefits,
    worst_decile_accuracy,
)


def test_device_accuracy_weighs_class_accuracy_by_each_device_s_intent_mix():
    mix = pd.DataFrame([[0.5, 0.5, 0.0], [0.0, 0.2, 0.8], [0.0, 0.0, 1.0]], index=[10, 11, 12])
    class_accuracy = np.array([1.0, 0.5, 0.25])
    expected = [sum(mix.loc[k, c] * class_accuracy[c] for c in range(3)) for k in mix.index]
    np.testing.assert_allclose(device_accuracy(mix, class_accuracy).to_numpy(), expected)


def test_a_class_without_test_utterances_is_left_out_and_the_mix_renormalised():
    mix = pd.DataFrame([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]], index=["a", "b"])
    accuracy = device_accuracy(mix, np.array([1.0, 0.5, np.nan]))
    assert accuracy["a"] == pytest.approx(0.75)
    assert np.isnan(accuracy["b"])  # every intent of b lacks test utterances: undefined, not 0


@pytest.mark.parametrize("class_accuracy, message", [
    (np.array([1.0, 0.5]), "one value per class"),
    (np.array([[1.0, 0.5, 0.2]]), "one value per class"),
    (np.array([1.0, np.inf, 0.2]), r"in \[0, 1\]"),
    (np.array([1.0, 1.5, 0.2]), r"in \[0, 1\]"),
])
def test_device_accuracy_refuses_bad_class_accuracy(class_accuracy, message):
    mix = pd.DataFrame([[0.5, 0.5, 0.0]])
    with pytest.raises(ValueError, match=f"class_accuracy.*{message}"):
        device_accuracy(mix, class_accuracy)


def test_device_accuracy_refuses_a_bad_mix():
    with pytest.raises(ValueError, match="mix must hold finite, non-negative"):
        device_accuracy(pd.DataFrame([[0.5, np.nan]]), np.array([1.0, 0.5]))
    with pytest.raises(ValueError, match="mix must hold finite, non-negative"):
        device_accuracy(pd.DataFrame([[1.5, -0.5]]), np.array([1.0, 0.5]))


def test_worst_decile_is_the_mean_of_the_lowest_tenth_and_at_least_one_device():
    accuracy = np.linspace(0.05, 1.0, 20)  # 20 devices: the worst decile is the 2 lowest
    assert worst_decile_accuracy(accuracy) == pytest.approx((0.05 + 0.1) / 2)
    assert worst_decile_accuracy([0.9, 0.3, 0.6]) == pytest.approx(0.3)  # fewer than 10 devices: the worst one
    assert worst_decile_accuracy([0.7] * 30) == pytest.approx(0.7)  # one value repeated
    assert worst_decile_accuracy(accuracy, fraction=1.0) == pytest.approx(accuracy.mean())


@pytest.mark.parametrize("accuracy", [[], [[0.5, 0.6]], [0.5, np.nan], [0.5, 1.2], [-0.1, 0.5]])
def test_summaries_refuse_bad_accuracy(accuracy):
    for summary in (worst_decile_accuracy, accuracy_variance):
        with pytest.raises(ValueError, match="accuracy must"):
            summary(accuracy)


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, np.nan])
def test_worst_decile_refuses_a_fraction_outside_0_1(fraction):
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        worst_decile_accuracy([0.5, 0.6], fraction=fraction)


def test_accuracy_variance_is_the_population_variance():
    assert accuracy_variance([0.2, 0.4, 0.9]) == pytest.approx(np.var([0.2, 0.4, 0.9]))
    assert accuracy_variance([0.6]) == 0.0


def test_low_activity_accuracy_averages_the_lightest_quartile():
    accuracy = [0.1, 0.2, 0.8, 0.9, 0.95, 1.0, 0.7, 0.6]
    activity = [1, 2, 50, 60, 70, 80, 40, 30]  # the 25 % quantile is 23.5: devices 0, 1
    assert low_activity_accuracy(accuracy, activity) == pytest.approx(0.15)
    assert low_activity_accuracy([0.3, 0.5], [4, 4]) == pytest.approx(0.4)  # all equally active: all are light


@pytest.mark.parametrize("activity, quantile, message", [
    ([1, 2], 0.25, "one activity per device"),
    ([1, np.nan, 3], 0.25, "activity must hold finite, non-negative"),
    ([1, -2, 3], 0.25, "activity must hold finite, non-negative"),
    ([1, 2, 3], 0.0, r"quantile must be in \(0, 1\)"),
    ([1, 2, 3], 1.0, r"quantile must be in \(0, 1\)"),
])
def test_low_activity_accuracy_refuses_bad_input(activity, quantile, message):
    with pytest.raises(ValueError, match=message):
        low_activity_accuracy([0.2, 0.5, 0.9], activity, quantile=quantile)


def test_device_outcomes_count_each_device_once_and_leave_out_undefined_devices():
    table = pd.DataFrame({"selection": ["u"] * 4 + ["a"] * 4,
                          "device_id": [0, 1, 2, 3] * 2,
                          "activity": [1, 5, 50, 100] * 2,
                          "accuracy": [0.2, 0.4, 0.8, np.nan, 0.6, 0.6, 0.9, 0.9]})
    outcomes = device_outcomes(table, ["selection"]).set_index("selection")
    assert outcomes.loc["u", "mean accuracy"] == pytest.approx(np.mean([0.2, 0.4, 0.8]))
    assert outcomes.loc["u", "worst-decile accuracy"] == pytest.approx(0.2)
    assert outcomes.loc["a", "variance"] == pytest.approx(np.var([0.6, 0.6, 0.9, 0.9]))
    assert outcomes.loc["a", "light devices' accuracy"] == pytest.approx(0.6)


def test_device_outcomes_refuse_a_group_without_any_accuracy_and_missing_columns():
    table = pd.DataFrame({"selection": ["u", "a"], "activity": [3, 4], "accuracy": [0.5, np.nan]})
    with pytest.raises(ValueError, match=r"no device has an accuracy in group\(s\) \['a'\]"):
        device_outcomes(table, ["selection"])
    with pytest.raises(ValueError, match=r"no column\(s\) \['seed'\]"):
        device_outcomes(table, ["seed"])


@pytest.mark.parametrize("rounds, continual", [(0, False), ([], False), ([0, 5], False), ([5, 10], True)])
def test_who_benefits_refuses_bad_rounds_before_training(rounds, continual):
    with pytest.raises(ValueError, match="rounds must be an int >= 1"):
        who_benefits(None, {}, rounds=rounds, devices_per_round=2, seeds=[0], continual=continual)
