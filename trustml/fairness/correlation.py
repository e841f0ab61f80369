"""Rank correlations between bias metrics, with paired bootstrap intervals.

Studies that ask whether intrinsic bias metrics predict extrinsic ones (Goldfarb-Tarrant et al. 2021; Cao et
al. 2022) report Spearman's ρ between the two scores of a set of models — often a dozen or fewer. With so few
points ρ is fragile, so :func:`spearman_intervals` attaches percentile bootstrap intervals: each replicate
resamples the **units** (the models, or encoder variants) with replacement and recomputes every correlation on
the same resample, so the difference between two correlations measured on the same units (e.g. an aligned and
a non-aligned intrinsic test) is a paired comparison with its own interval.

Spearman's ρ is Pearson's correlation of the ranks (ties share their average rank), as
``scipy.stats.spearmanr`` computes it; the tests check every replicate against ``spearmanr``. A replicate in
which one score takes a single value has no ρ (0/0). scipy's ``bootstrap`` then returns no interval at all;
here such replicates are left out, counted in ``undefined``, and a warning is raised when they exceed
``max_undefined`` of the replicates — with very few units the interval is then conditional on resamples that
keep at least two distinct values.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Hashable, Mapping

import numpy as np
import pandas as pd
from scipy import stats

from trustml.fairness.group import check_bootstrap


class DegenerateResampleWarning(UserWarning):
    """Many bootstrap resamples had a constant score, so their correlation is undefined and left out."""


def _pair(name, pair, n: int | None) -> tuple[np.ndarray, np.ndarray]:
    if not (isinstance(pair, tuple) and len(pair) == 2):
        raise ValueError(f"pairs[{name!r}] must be a tuple (x, y) of two score arrays")
    x, y = (np.asarray(v, dtype=np.float64) for v in pair)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"pairs[{name!r}]: x and y must be 1-D of equal length, got shapes {x.shape} and {y.shape}")
    if n is not None and len(x) != n:
        raise ValueError(f"pairs[{name!r}] has {len(x)} units, the others {n}: every pair must score the same units")
    if len(x) < 3:
        raise ValueError(f"pairs[{name!r}] has {len(x)} units; a rank correlation needs at least 3")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError(f"pairs[{name!r}] contains NaN or infinite scores")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        raise ValueError(f"pairs[{name!r}]: a score is constant over the units, so its correlation is undefined")
    return x, y


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ρ of each row of ``x`` and ``y`` (``(B, n)`` arrays): Pearson on average ranks; NaN for a constant row."""
    rx, ry = stats.rankdata(x, axis=1), stats.rankdata(y, axis=1)
    rx, ry = rx - rx.mean(1, keepdims=True), ry - ry.mean(1, keepdims=True)
    scale = np.sqrt((rx * rx).sum(1) * (ry * ry).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(scale > 0, (rx * ry).sum(1) / scale, np.nan)


@dataclasses.dataclass(frozen=True)
class CorrelationIntervals:
    """``table``: one row per pair — ``rho``, ``low``, ``high`` and, with a reference, the difference to the
    reference's ρ (``difference``, ``difference_low``, ``difference_high``); ``replicates``: every replicate's
    ρ per pair (NaN where undefined); ``undefined``: replicates left out."""

    table: pd.DataFrame
    replicates: pd.DataFrame
    n_units: int
    n_boot: int
    undefined: int
    confidence: float


def spearman_intervals(pairs: Mapping[Hashable, tuple], *, reference: Hashable | None = None, n_boot: int = 2000,
                       confidence: float = 0.95, max_undefined: float = 0.05, seed: int = 0) -> CorrelationIntervals:
    """Spearman's ρ of each ``pairs[name] = (x, y)`` with paired percentile bootstrap intervals.

    Every pair scores the same ``n`` units in the same order (e.g. x = an intrinsic score and y = an extrinsic
    gap, one value per encoder variant). Each of ``n_boot`` replicates draws n units with replacement (seeded)
    and recomputes every ρ on them; ``reference`` (optional) adds, for every pair, the difference
    ``ρ(pair) − ρ(reference)`` and its interval from the same replicates.
    """
    if not pairs:
        raise ValueError("pairs is empty")
    check_bootstrap(n_boot, confidence)
    if not 0 <= max_undefined <= 1:
        raise ValueError(f"max_undefined must be in [0, 1], got {max_undefined!r}")
    if reference is not None and reference not in pairs:
        raise ValueError(f"reference {reference!r} is not one of the pairs {list(pairs)}")
    checked: dict[Hashable, tuple[np.ndarray, np.ndarray]] = {}
    n: int | None = None
    for name, pair in pairs.items():
        checked[name] = _pair(name, pair, n)
        n = len(checked[name][0])
    assert n is not None
    index = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    point = {name: float(stats.spearmanr(x, y).statistic) for name, (x, y) in checked.items()}
    replicates = pd.DataFrame({name: _spearman_rows(x[index], y[index]) for name, (x, y) in checked.items()})
    defined = replicates.notna().all(axis=1)
    undefined = int((~defined).sum())
    if undefined > max_undefined * n_boot:
        warnings.warn(f"{undefined} of {n_boot} resamples of {n} units had a constant score (ρ undefined) and are "
                      "left out: the intervals are conditional on resamples with at least two distinct values",
                      DegenerateResampleWarning, stacklevel=2)
    if not defined.any():
        raise ValueError(f"every one of the {n_boot} resamples had a constant score: no interval can be computed")
    kept = replicates[defined]
    alpha = (1 - confidence) / 2
    table = pd.DataFrame({"rho": point, "low": kept.quantile(alpha), "high": kept.quantile(1 - alpha)})
    if reference is not None:
        differences = kept.sub(kept[reference], axis=0)
        table["difference"] = table["rho"] - point[reference]
        table["difference_low"] = differences.quantile(alpha)
        table["difference_high"] = differences.quantile(1 - alpha)
    table.index.name = "pair"
    return CorrelationIntervals(table, replicates, n, n_boot, undefined, confidence)


__all__ = ["CorrelationIntervals", "DegenerateResampleWarning", "spearman_intervals"]
