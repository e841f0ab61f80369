"""Group metrics equal Fairlearn's; the bootstrap's fast path equals MetricFrame on resampled rows."""

import warnings

import numpy as np
import pandas as pd
import pytest
from fairlearn import metrics as flm
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import accuracy_score

from trustml.fairness import group_accuracy, group_metrics
from trustml.fairness.group import BINARY_METRICS, DISPARITIES, _binary_counts, _binary_disparities, \
    bootstrap_indices


def random_predictions(seed, n=600, groups=("a", "b", "c")):
    rng = np.random.default_rng(seed)
    sensitive = rng.choice(groups, size=n)
    y_true = rng.integers(0, 2, size=n)
    # Group-dependent error rates so the disparities are not all zero.
    flip = rng.random(n) < np.where(sensitive == groups[0], 0.1, 0.35)
    return y_true, np.where(flip, 1 - y_true, y_true), sensitive


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_point_estimates_equal_fairlearn(seed):
    y_true, y_pred, sensitive = random_predictions(seed)
    report = group_metrics(y_true, y_pred, sensitive_features=sensitive)
    frame = flm.MetricFrame(metrics={"acc": accuracy_score, "fpr": flm.false_positive_rate,
                                     "fnr": flm.false_negative_rate, "sel": flm.selection_rate},
                            y_true=y_true, y_pred=y_pred, sensitive_features=sensitive)
    for ours, theirs in [("accuracy", "acc"), ("false_positive_rate", "fpr"), ("false_negative_rate", "fnr"),
                         ("selection_rate", "sel")]:
        np.testing.assert_allclose(report.by_group[ours].to_numpy(), frame.by_group[theirs].to_numpy())
    expected = {name: getattr(flm, name)(y_true, y_pred, sensitive_features=sensitive) for name in (
        "demographic_parity_difference", "demographic_parity_ratio", "equalized_odds_difference",
        "equalized_odds_ratio")}
    for name, value in expected.items():
        assert report.disparities.loc[name, "value"] == pytest.approx(value)
    assert report.disparities.loc["equalized_odds_difference", "value"] > 0.1
    assert report.by_group["count"].sum() == len(y_true)


def test_bootstrap_fast_path_equals_metricframe_on_resamples():
    y_true, y_pred, sensitive = random_predictions(3)
    levels = ["a", "b", "c"]
    codes = pd.Categorical(sensitive, categories=levels).codes.astype(np.int64)
    strata = [np.flatnonzero(codes == g) for g in range(3)]
    for index in list(bootstrap_indices(strata, n_boot=3, seed=0)):
        counts = _binary_counts(codes[index], y_true[index], y_pred[index], 3)
        frame = flm.MetricFrame(metrics=BINARY_METRICS, y_true=y_true[index], y_pred=y_pred[index],
                                sensitive_features=sensitive[index])
        for metric in BINARY_METRICS:
            np.testing.assert_allclose(counts[metric], frame.by_group.loc[levels, metric].to_numpy(dtype=float))
        ours = _binary_disparities(counts)
        for name, function in DISPARITIES.items():
            assert ours[name] == pytest.approx(function(y_true[index], y_pred[index],
                                                        sensitive_features=sensitive[index])), name


def test_bootstrap_intervals_are_seeded_and_cover_group_estimates():
    y_true, y_pred, sensitive = random_predictions(4, n=1500)
    report = group_metrics(y_true, y_pred, sensitive_features=sensitive, n_boot=300, seed=1)
    again = group_metrics(y_true, y_pred, sensitive_features=sensitive, n_boot=300, seed=1)
    pd.testing.assert_frame_equal(report.by_group, again.by_group)
    by_group = report.by_group
    for metric in ("accuracy", "false_positive_rate", "false_negative_rate", "selection_rate"):
        assert (by_group[f"{metric}_low"] <= by_group[metric]).all()
        assert (by_group[metric] <= by_group[f"{metric}_high"]).all()
        assert (by_group[f"{metric}_high"] - by_group[f"{metric}_low"] < 0.2).all()
    assert {"ci_low", "ci_high"} <= set(report.disparities.columns)
    wider = group_metrics(y_true, y_pred, sensitive_features=sensitive, n_boot=300, seed=1, confidence=0.99)
    assert (wider.by_group["accuracy_high"] - wider.by_group["accuracy_low"]
            >= by_group["accuracy_high"] - by_group["accuracy_low"]).all()


def test_group_accuracy_multiclass_equals_fairlearn():
    rng = np.random.default_rng(5)
    y_true = rng.integers(0, 5, size=800)
    sensitive = rng.choice(["majority", "minority"], size=800, p=[0.8, 0.2])
    y_pred = np.where(rng.random(800) < np.where(sensitive == "minority", 0.6, 0.9), y_true, (y_true + 1) % 5)
    report = group_accuracy(y_true, y_pred, sensitive_features=sensitive, n_boot=200)
    frame = flm.MetricFrame(metrics=accuracy_score, y_true=y_true, y_pred=y_pred, sensitive_features=sensitive)
    np.testing.assert_allclose(report.by_group["accuracy"], frame.by_group.loc[["majority", "minority"]])
    assert report.disparities.loc["accuracy_difference", "value"] == pytest.approx(frame.difference())
    assert report.disparities.loc["accuracy_ratio", "value"] == pytest.approx(frame.ratio())
    low, high = report.by_group["accuracy_low"], report.by_group["accuracy_high"]
    assert high["minority"] < low["majority"]  # a planted gap of 0.3 is resolved by the intervals


@pytest.mark.parametrize("kwargs, match", [
    (dict(sensitive_features=["a"] * 10), "at least two groups"),
    (dict(sensitive_features=["a", "b"] * 4), "equal lengths"),
    (dict(sensitive_features=["a", "b"] * 5, groups=["a", "c"]), r"group labels \['b'\]"),
    (dict(sensitive_features=["a", "b"] * 5, groups=["a", "b", "c"]), r"groups \['c'\] do not occur"),
    (dict(sensitive_features=["a", "b"] * 5, n_boot=-1), "n_boot"),
    (dict(sensitive_features=["a", "b"] * 5, confidence=1.5), "confidence"),
])
def test_bad_input(kwargs, match):
    y = np.array([0, 1] * 5)
    with pytest.raises(ValueError, match=match):
        group_metrics(y, y, **kwargs)


def test_non_binary_labels_are_rejected():
    with pytest.raises(ValueError, match="binary"):
        group_metrics([0, 1, 2, 1], [0, 1, 1, 1], sensitive_features=["a", "b", "a", "b"])
    with pytest.raises(ValueError, match="at least two groups"):
        group_accuracy([0, 1, 2], [0, 1, 2], sensitive_features=["a", "a", "a"])


# A group with no positives: group "a" has only y_true = 0, group "b" is predicted perfectly (TPR 1).
NO_POSITIVES = dict(y_true=np.array([0, 0, 0, 0, 1, 0, 1, 0]), y_pred=np.array([0, 1, 0, 0, 1, 0, 1, 0]),
                    sensitive_features=np.array(list("aaaabbbb")))


def test_group_without_positives_has_undefined_tpr_fnr_and_equalized_odds():
    # Fairlearn (through scikit-learn's normalised confusion matrix) reports TPR = FNR = 0 for "a" — impossible,
    # since TPR + FNR = 1 — and so an equalized-odds difference of 1.0 that compares TPR 1 with a placeholder.
    a = NO_POSITIVES["sensitive_features"] == "a"
    assert flm.true_positive_rate(NO_POSITIVES["y_true"][a], NO_POSITIVES["y_pred"][a]) == 0
    assert flm.false_negative_rate(NO_POSITIVES["y_true"][a], NO_POSITIVES["y_pred"][a]) == 0
    assert flm.equalized_odds_difference(**NO_POSITIVES) == 1.0
    with pytest.warns(UndefinedMetricWarning, match=r"groups \['a'\] have no positives"):
        report = group_metrics(**NO_POSITIVES)
    by_group, value = report.by_group, report.disparities["value"]
    assert np.isnan(by_group.loc["a", "true_positive_rate"]) and np.isnan(by_group.loc["a", "false_negative_rate"])
    assert by_group.loc["b", "true_positive_rate"] == 1 and by_group.loc["b", "false_negative_rate"] == 0
    for name in ("equalized_odds_difference", "equalized_odds_ratio", "false_negative_rate_difference"):
        assert np.isnan(value[name]), name
    # What does not use the missing rates stays defined and equals Fairlearn.
    assert by_group.loc["a", "false_positive_rate"] == pytest.approx(0.25)
    for name in ("demographic_parity_difference", "demographic_parity_ratio", "false_positive_rate_difference",
                 "accuracy_difference"):
        assert value[name] == pytest.approx(DISPARITIES[name](**NO_POSITIVES)), name


def test_group_without_negatives_has_undefined_fpr():
    y_true = np.array([1, 1, 1, 0, 1, 0])
    y_pred = np.array([1, 0, 1, 1, 1, 0])
    sensitive = np.array(list("aaabbb"))
    with pytest.warns(UndefinedMetricWarning, match=r"groups \['a'\] have no negatives.*FPR"):
        report = group_metrics(y_true, y_pred, sensitive_features=sensitive)
    assert np.isnan(report.by_group.loc["a", "false_positive_rate"])
    assert np.isnan(report.disparities.loc["false_positive_rate_difference", "value"])
    assert np.isnan(report.disparities.loc["equalized_odds_difference", "value"])
    assert report.disparities.loc["false_negative_rate_difference", "value"] == pytest.approx(1 / 3)


def test_bootstrap_keeps_undefined_rates_undefined_and_defined_ones_finite():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = group_metrics(**NO_POSITIVES, n_boot=50, seed=0)
    # One warning per undefined condition, and no numpy "All-NaN slice" noise from the intervals.
    assert [w.category for w in caught] == [UndefinedMetricWarning]
    by_group = report.by_group
    assert by_group.loc["a", ["true_positive_rate_low", "true_positive_rate_high"]].isna().all()
    assert by_group.loc["b", ["true_positive_rate_low", "true_positive_rate_high"]].notna().all()
    assert report.disparities.loc["equalized_odds_difference", ["ci_low", "ci_high"]].isna().all()
    assert report.disparities.loc["demographic_parity_difference", ["ci_low", "ci_high"]].notna().all()


def test_every_rate_defined_gives_no_warning_and_all_zero_selection_has_no_ratio():
    y_true, y_pred, sensitive = random_predictions(6, n=200)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        group_metrics(y_true, y_pred, sensitive_features=sensitive, n_boot=20)
    # Nobody selected: the demographic-parity ratio is 0/0 (NaN, as Fairlearn), the difference 0.
    none = np.zeros_like(y_true)
    report = group_metrics(y_true, none, sensitive_features=sensitive)
    assert np.isnan(report.disparities.loc["demographic_parity_ratio", "value"])
    assert np.isnan(flm.demographic_parity_ratio(y_true, none, sensitive_features=sensitive))
    assert report.disparities.loc["demographic_parity_difference", "value"] == 0


def test_group_accuracy_degenerate_inputs():
    # One row per group, and a group that is always wrong: accuracy 0 and ratio 0, not an error.
    report = group_accuracy([1, 2], [1, 0], sensitive_features=["a", "b"])
    assert report.by_group["accuracy"].tolist() == [1.0, 0.0]
    assert report.disparities.loc["accuracy_ratio", "value"] == 0
    # Every group always wrong: the ratio 0/0 is undefined.
    report = group_accuracy([1, 2, 3, 4], [0, 0, 0, 0], sensitive_features=list("abab"), n_boot=10)
    assert np.isnan(report.disparities.loc["accuracy_ratio", "value"])
    assert np.isnan(report.disparities.loc["accuracy_ratio", "ci_low"])
    with pytest.raises(ValueError, match="NaN"):
        group_accuracy(np.array([0, 1, np.nan, 1.0]), np.array([0, 1, 1, 1.0]), sensitive_features=list("abab"))
    with pytest.raises(ValueError, match="missing values"):
        group_metrics([0, 1, 0, 1], [0, 1, 0, 1], sensitive_features=np.array(["a", "b", None, "a"], dtype=object))
    with pytest.raises(ValueError, match="empty"):
        group_accuracy([], [], sensitive_features=[])


@pytest.mark.parametrize("n_boot, confidence, message", [
    (-1, 0.95, r"n_boot must be an int >= 0"), (2.5, 0.95, r"n_boot must be an int >= 0"),
    (True, 0.95, r"n_boot must be an int >= 0"), (10, 1.0, r"confidence must be in \(0, 1\)"),
    (10, float("nan"), r"confidence must be in \(0, 1\)"),
])
def test_bootstrap_settings_are_refused_with_their_name(n_boot, confidence, message):
    """One check for every bootstrap of trustml.fairness (group metrics, correlations, DP gaps)."""
    y = np.array([0, 1, 1, 0])
    for metric in (group_metrics, group_accuracy):
        with pytest.raises(ValueError, match=message):
            metric(y, y, sensitive_features=["a", "a", "b", "b"], n_boot=n_boot, confidence=confidence)
