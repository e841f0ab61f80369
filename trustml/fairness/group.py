"""Group (extrinsic) fairness metrics of a classifier's predictions, built on Fairlearn.

``group_metrics(y_true, y_pred, *, sensitive_features)`` returns per-group accuracy, selection rate,
false-positive and false-negative rate (Fairlearn's ``MetricFrame``) and the disparities Fairlearn defines:

* demographic parity difference / ratio: ``max_g P(ŷ=1 | g) − min_g P(ŷ=1 | g)`` / ``min_g … / max_g …``;
* equalized-odds difference: ``max(TPR difference, FPR difference)``; ratio: ``min(TPR ratio, FPR ratio)``
  (Hardt, Price & Srebro 2016; Fairlearn's ``equalized_odds_difference``/``_ratio``);
* accuracy, FPR and FNR differences (between groups: max − min).

With ``n_boot > 0`` every number gets a percentile bootstrap confidence interval. The bootstrap resamples
rows **within each (group, true label) cell** (seeded), so every replicate keeps every group and its base
rate and FPR/FNR stay defined. Point estimates come from Fairlearn; the replicates are computed from
per-cell confusion counts with numpy, because one ``MetricFrame`` costs ~50 ms and a thousand replicates
would take a minute (``tests/fairness/test_group_metrics.py`` checks the count path against ``MetricFrame`` on
resampled data).

**Undefined rates.** A group with no positives (``y_true = 1``) has no true-positive or false-negative
rate: ``TPR = TP / (TP + FN)`` is 0/0. scikit-learn's ``confusion_matrix(normalize="true")``, and so
Fairlearn's ``true_positive_rate``, report 0 for both TPR and FNR there (which cannot both hold: TPR + FNR
= 1), and the equalized-odds difference then compares a real TPR with that 0. Here an undefined rate is
NaN and raises scikit-learn's ``UndefinedMetricWarning``, naming the group; a disparity that needs an
undefined rate (the TPR/FNR differences, the equalized-odds difference and ratio) is NaN too, never a
number computed from a placeholder. The same holds for FPR in a group with no negatives. Where every rate
is defined the numbers equal Fairlearn's (tested).

``group_accuracy`` does the same for multi-class predictions (e.g. the intent classifier by speaker
attribute): per-group accuracy and its difference and ratio.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from fairlearn import metrics as flm
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import accuracy_score

def _conditional_rate(rate: Callable, given: int) -> Callable:
    """Fairlearn's ``rate`` on the rows with ``y_true == given``, NaN when there are none (Fairlearn says 0)."""
    def metric(y_true, y_pred) -> float:
        return float(rate(y_true, y_pred, pos_label=1)) if np.any(np.asarray(y_true) == given) else float("nan")
    metric.__name__ = rate.__name__
    return metric


#: Per-group metrics (Fairlearn / scikit-learn functions, used through ``MetricFrame``). The error rates
#: condition on the true label: NaN for a group without rows of that label.
BINARY_METRICS: dict[str, Callable] = {
    "count": flm.count,
    "accuracy": accuracy_score,
    "selection_rate": flm.selection_rate,
    "false_positive_rate": _conditional_rate(flm.false_positive_rate, given=0),
    "false_negative_rate": _conditional_rate(flm.false_negative_rate, given=1),
    "true_positive_rate": _conditional_rate(flm.true_positive_rate, given=1),
}

#: Disparity metrics: Fairlearn's functions, each ``f(y_true, y_pred, *, sensitive_features)``. trustml computes
#: them from the per-group rates with the same definitions (:func:`_binary_disparities`), NaN where a rate is
#: undefined; the tests compare with these functions where every rate is defined.
DISPARITIES: dict[str, Callable] = {
    "demographic_parity_difference": flm.demographic_parity_difference,
    "demographic_parity_ratio": flm.demographic_parity_ratio,
    "equalized_odds_difference": flm.equalized_odds_difference,
    "equalized_odds_ratio": flm.equalized_odds_ratio,
    "accuracy_difference": flm.accuracy_score_difference,
    "false_positive_rate_difference": flm.false_positive_rate_difference,
    "false_negative_rate_difference": flm.false_negative_rate_difference,
}


@dataclasses.dataclass
class GroupReport:
    """``by_group``: one row per group (metric columns, plus ``<metric>_low``/``_high`` with a bootstrap);
    ``disparities``: one row per disparity metric with ``value`` (and ``ci_low``, ``ci_high``);
    ``overall``: the metrics on all rows."""

    by_group: pd.DataFrame
    disparities: pd.DataFrame
    overall: pd.Series
    n_boot: int
    confidence: float

    def summary(self) -> str:
        lines = [f"{name}: {row['value']:.3f}" + (f" [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
                                                   if "ci_low" in row else "")
                 for name, row in self.disparities.iterrows()]
        return "\n".join(lines)


def _validate(y_true, y_pred, sensitive_features, groups: Sequence | None, *, binary: bool):
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    sensitive = np.asarray(sensitive_features)
    if y_true.ndim != 1 or y_pred.ndim != 1 or sensitive.ndim != 1:
        raise ValueError("y_true, y_pred and sensitive_features must be 1-D (one value per example)")
    if not len(y_true) == len(y_pred) == len(sensitive):
        raise ValueError(f"y_true, y_pred and sensitive_features must have equal lengths, got "
                         f"{len(y_true)}, {len(y_pred)} and {len(sensitive)}")
    if len(y_true) == 0:
        raise ValueError("y_true is empty")
    for name, values in (("y_true", y_true), ("y_pred", y_pred)):
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise ValueError(f"{name} contains NaN or infinite values; labels must be finite")
    if pd.isna(sensitive).any():
        raise ValueError("sensitive_features contains missing values (None/NaN); give every row a group label")
    if binary:
        for name, values in (("y_true", y_true), ("y_pred", y_pred)):
            bad = sorted(set(np.unique(values).tolist()) - {0, 1})
            if bad:
                raise ValueError(f"{name} must be binary with labels 0 and 1 (1 = positive), got labels {bad[:5]}")
    present = pd.unique(sensitive).tolist()  # plain Python values, for readable messages
    if groups is not None:
        groups = list(groups)
        unknown = [g for g in present if g not in groups]
        if unknown:
            raise ValueError(f"sensitive_features has group labels {unknown[:5]} that are not in groups={groups}")
        absent = [g for g in groups if g not in present]
        if absent:
            raise ValueError(f"groups {absent[:5]} do not occur in sensitive_features (present: {present})")
    levels = sorted(present, key=str) if groups is None else groups
    if len(levels) < 2:
        raise ValueError(f"group metrics compare groups: sensitive_features needs at least two groups, got {levels}")
    return y_true, y_pred, sensitive, levels


def _cells(codes: np.ndarray, y_true: np.ndarray) -> list[np.ndarray]:
    """Row indices of each (group, true label) cell: the bootstrap's strata."""
    keys = pd.Series(list(zip(codes.tolist(), y_true.tolist())))
    return [np.asarray(rows) for rows in keys.groupby(keys).indices.values()]


def bootstrap_indices(strata: Sequence[np.ndarray], *, n_boot: int, seed: int = 0):
    """Yield ``n_boot`` resampled row-index arrays: each stratum resampled with replacement to its size."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        yield np.concatenate([rows[rng.integers(0, len(rows), len(rows))] for rows in strata])


def _binary_counts(codes, y_true, y_pred, n_groups) -> dict[str, np.ndarray]:
    cell = codes * 4 + y_true * 2 + y_pred  # (group, y, ŷ) → one bincount
    counts = np.bincount(cell, minlength=4 * n_groups).reshape(n_groups, 4)
    tn, fp, fn, tp = counts.T.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "count": tn + fp + fn + tp, "accuracy": (tp + tn) / (tn + fp + fn + tp),
            "selection_rate": (tp + fp) / (tn + fp + fn + tp), "false_positive_rate": fp / (fp + tn),
            "false_negative_rate": fn / (fn + tp), "true_positive_rate": tp / (tp + fn),
        }


def _difference(values: np.ndarray) -> float:
    """``max_g − min_g`` (Fairlearn's ``between_groups`` difference); NaN if any group's value is undefined."""
    return float(np.max(values) - np.min(values))  # np.max/np.min propagate NaN


def _ratio(values: np.ndarray) -> float:
    """``min_g / max_g`` (Fairlearn's ratio); NaN if a value is undefined or every value is 0."""
    return float(np.min(values) / np.max(values)) if np.max(values) > 0 else float("nan")


def _binary_disparities(m: dict[str, np.ndarray]) -> dict[str, float]:
    """Fairlearn's definitions (between groups: max − min, ratio min / max), from per-group rates ``m``.

    Equalized odds (Hardt, Price & Srebro 2016): difference ``max(ΔTPR, ΔFPR)``, ratio
    ``min(ratio TPR, ratio FPR)``; NaN when either needs an undefined rate.
    """
    def worst(values: list[float], pick: Callable) -> float:
        return float("nan") if any(np.isnan(values)) else float(pick(values))

    tpr, fpr = m["true_positive_rate"], m["false_positive_rate"]
    return {
        "demographic_parity_difference": _difference(m["selection_rate"]),
        "demographic_parity_ratio": _ratio(m["selection_rate"]),
        "equalized_odds_difference": worst([_difference(tpr), _difference(fpr)], max),
        "equalized_odds_ratio": worst([_ratio(tpr), _ratio(fpr)], min),
        "accuracy_difference": _difference(m["accuracy"]),
        "false_positive_rate_difference": _difference(fpr),
        "false_negative_rate_difference": _difference(m["false_negative_rate"]),
    }


def _warn_undefined(by_group: pd.DataFrame) -> None:
    """An ``UndefinedMetricWarning`` naming the groups whose rates are undefined, and what that makes NaN."""
    cases = (("true_positive_rate", "no positives (y_true = 1)", "TPR and FNR"),
             ("false_positive_rate", "no negatives (y_true = 0)", "FPR"))
    for column, reason, rates in cases:
        undefined = by_group.index[by_group[column].isna()].tolist()
        if undefined:
            warnings.warn(f"groups {undefined} have {reason}: their {rates} are undefined (NaN), and so is every "
                          "difference or ratio that uses them (equalized odds included)", UndefinedMetricWarning,
                          stacklevel=3)


def _intervals(replicates: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile intervals per column; NaN for a quantity that is undefined in the replicates.

    The strata keep every (group, label) cell, so a rate is either defined in every replicate or in none.
    """
    alpha = (1 - confidence) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: undefined rates, warned about once
        return np.nanquantile(replicates, alpha, axis=0), np.nanquantile(replicates, 1 - alpha, axis=0)


def check_bootstrap(n_boot, confidence, *, minimum: int = 1) -> None:
    """A bootstrap's settings: ``n_boot`` an int >= ``minimum`` (0 where it means "no intervals"), ``confidence``
    in (0, 1). Shared by every bootstrap of trustml.fairness."""
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < minimum:
        raise ValueError(f"n_boot must be an int >= {minimum}"
                         + (" (0 = no confidence intervals)" if minimum == 0 else "") + f", got {n_boot!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")


def group_metrics(y_true, y_pred, *, sensitive_features, groups: Sequence | None = None, n_boot: int = 0,
                  confidence: float = 0.95, seed: int = 0) -> GroupReport:
    """Per-group metrics and disparities of binary predictions (labels 0/1, 1 = positive), via Fairlearn.

    ``groups`` (optional) lists the expected group labels: a label outside it, or a listed group with no
    rows, is an error. ``n_boot`` bootstrap replicates (0: none) give ``confidence`` percentile intervals.
    """
    check_bootstrap(n_boot, confidence, minimum=0)
    y_true, y_pred, sensitive, levels = _validate(y_true, y_pred, sensitive_features, groups, binary=True)
    frame = flm.MetricFrame(metrics=BINARY_METRICS, y_true=y_true, y_pred=y_pred, sensitive_features=sensitive)
    by_group = frame.by_group.loc[levels]
    by_group.index.name = "group"
    by_group["count"] = by_group["count"].astype(int)
    _warn_undefined(by_group)
    rates = {metric: by_group[metric].to_numpy(dtype=float) for metric in BINARY_METRICS}
    disparities = pd.DataFrame({"value": _binary_disparities(rates)})
    if n_boot:
        codes = pd.Categorical(sensitive, categories=levels).codes.astype(np.int64)
        yt, yp = y_true.astype(np.int64), y_pred.astype(np.int64)
        per_group, per_disparity = [], []
        for index in bootstrap_indices(_cells(codes, yt), n_boot=n_boot, seed=seed):
            counts = _binary_counts(codes[index], yt[index], yp[index], len(levels))
            per_group.append(np.stack([counts[m] for m in BINARY_METRICS], axis=1))
            per_disparity.append([_binary_disparities(counts)[name] for name in DISPARITIES])
        low, high = _intervals(np.stack(per_group), confidence)
        for j, metric in enumerate(BINARY_METRICS):
            if metric != "count":
                by_group[f"{metric}_low"], by_group[f"{metric}_high"] = low[:, j], high[:, j]
        disparities["ci_low"], disparities["ci_high"] = _intervals(np.asarray(per_disparity), confidence)
    disparities.index.name = "metric"
    return GroupReport(by_group, disparities, frame.overall, n_boot, confidence)


def group_accuracy(y_true, y_pred, *, sensitive_features, groups: Sequence | None = None, n_boot: int = 0,
                   confidence: float = 0.95, seed: int = 0) -> GroupReport:
    """Per-group accuracy of any (e.g. multi-class) predictions, its difference (max − min) and ratio
    (min / max), with bootstrap intervals that resample rows within each group (seeded)."""
    check_bootstrap(n_boot, confidence, minimum=0)
    y_true, y_pred, sensitive, levels = _validate(y_true, y_pred, sensitive_features, groups, binary=False)
    frame = flm.MetricFrame(metrics={"count": flm.count, "accuracy": accuracy_score}, y_true=y_true, y_pred=y_pred,
                            sensitive_features=sensitive)
    by_group = frame.by_group.loc[levels]
    by_group.index.name = "group"
    by_group["count"] = by_group["count"].astype(int)
    disparities = pd.DataFrame({"value": {"accuracy_difference": float(frame.difference()["accuracy"]),
                                          "accuracy_ratio": float(frame.ratio()["accuracy"])}})
    if n_boot:
        codes = pd.Categorical(sensitive, categories=levels).codes.astype(np.int64)
        correct = (y_true == y_pred).astype(float)
        # Strata: the groups (their sizes stay fixed; the accuracy varies through the resample).
        strata = [np.flatnonzero(codes == g) for g in range(len(levels))]
        replicates = np.stack([np.bincount(codes[index], weights=correct[index], minlength=len(levels))
                               / np.bincount(codes[index], minlength=len(levels))
                               for index in bootstrap_indices(strata, n_boot=n_boot, seed=seed)])
        low, high = _intervals(replicates, confidence)
        by_group["accuracy_low"], by_group["accuracy_high"] = low, high
        summaries = np.array([[_difference(row), _ratio(row)] for row in replicates])
        disparities["ci_low"], disparities["ci_high"] = _intervals(summaries, confidence)
    disparities.index.name = "metric"
    return GroupReport(by_group, disparities, frame.overall, n_boot, confidence)


__all__ = ["BINARY_METRICS", "DISPARITIES", "GroupReport", "UndefinedMetricWarning", "bootstrap_indices",
           "group_accuracy", "group_metrics"]
