"""What a membership-inference attack achieved: ROC, AUC, advantage, TPR at low FPR, and a log-log plot.

An attack outputs one *score* per example (higher = "more likely a member"); sweeping a threshold over
the scores gives the ROC curve. Following Carlini et al. (2022, "Membership inference attacks from first
principles") the headline number is the true-positive rate at a *low* false-positive rate — an attack
that confidently identifies a few members is a privacy failure even when its AUC is modest.
ROC and AUC come from scikit-learn.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score, roc_curve

REPORTED_FPRS = (0.01, 0.001)


def check_fpr(fpr: float) -> float:
    if not 0.0 < fpr < 1.0:
        raise ValueError(f"fpr must be in (0, 1), got {fpr}")
    return float(fpr)


def check_membership(scores, is_member) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (scores, is_member) pair: same length, finite scores, both members and non-members."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    is_member = np.asarray(is_member).ravel()
    if len(scores) != len(is_member):
        raise ValueError(f"scores and is_member must have the same length, got {len(scores)} and {len(is_member)}")
    if is_member.dtype != bool:
        if not np.isin(is_member, (0, 1)).all():
            raise ValueError("is_member must be boolean (or 0/1)")
        is_member = is_member.astype(bool)
    if is_member.all() or not is_member.any():
        raise ValueError("is_member must contain both members and non-members")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite (no NaN or inf)")
    return scores, is_member


@dataclasses.dataclass(frozen=True, eq=False)
class AttackResult:
    """Scores of one attack against known membership; every metric is derived from them."""

    name: str
    scores: np.ndarray
    is_member: np.ndarray

    def __post_init__(self) -> None:
        scores, is_member = check_membership(self.scores, self.is_member)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "is_member", is_member)

    @functools.cached_property
    def roc(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(fpr, tpr, thresholds)`` from ``sklearn.metrics.roc_curve`` (all thresholds kept)."""
        return roc_curve(self.is_member, self.scores, drop_intermediate=False)

    @property
    def fpr(self) -> np.ndarray:
        return self.roc[0]

    @property
    def tpr(self) -> np.ndarray:
        return self.roc[1]

    @property
    def thresholds(self) -> np.ndarray:
        return self.roc[2]

    @property
    def n_members(self) -> int:
        return int(self.is_member.sum())

    @property
    def n_nonmembers(self) -> int:
        return int((~self.is_member).sum())

    @functools.cached_property
    def auc(self) -> float:
        """Area under the ROC curve (0.5 = guessing), ``sklearn.metrics.roc_auc_score``."""
        return float(roc_auc_score(self.is_member, self.scores))

    @functools.cached_property
    def advantage(self) -> float:
        """Membership advantage max_t |TPR(t) − FPR(t)| (Yeom et al. 2018, Def. 4; 0 = guessing)."""
        return float(np.max(np.abs(self.tpr - self.fpr)))

    def tpr_at(self, fpr: float) -> float:
        """Highest TPR among thresholds whose FPR is ≤ ``fpr`` (Carlini et al. 2022, §IV).

        With n non-members the smallest non-zero FPR is 1/n: below that the value measures only
        thresholds that flag no non-member at all (see ``summary``'s resolution note)."""
        fpr = check_fpr(fpr)
        return float(self.tpr[self.fpr <= fpr].max())

    def metrics(self) -> dict[str, float]:
        row = {"AUC": self.auc, "advantage": self.advantage}
        row.update({f"TPR@{f:.1%}FPR": self.tpr_at(f) for f in REPORTED_FPRS})
        return row

    def to_frame(self) -> pd.DataFrame:
        """One row: attack name, AUC, advantage, TPR at 1 % and 0.1 % FPR, members, non-members."""
        row = {"attack": self.name, **self.metrics(), "members": self.n_members, "non-members": self.n_nonmembers}
        return pd.DataFrame([row]).set_index("attack")

    def summary(self) -> str:
        lines = [
            f"{self.name}: {self.n_members} members, {self.n_nonmembers} non-members",
            f"  AUC {self.auc:.3f}   advantage max|TPR-FPR| {self.advantage:.3f}",
        ]
        lines += [f"  TPR at {f:.1%} FPR: {self.tpr_at(f):.3f}" for f in REPORTED_FPRS]
        resolution = 1.0 / self.n_nonmembers
        if resolution > min(REPORTED_FPRS):
            lines.append(f"  (note: {self.n_nonmembers} non-members resolve FPRs down to {resolution:.2%} only)")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"AttackResult({self.name!r}, AUC={self.auc:.3f}, TPR@0.1%FPR={self.tpr_at(0.001):.3f})"


def _as_list(results) -> list[AttackResult]:
    if isinstance(results, AttackResult):
        return [results]
    results = list(results.values()) if isinstance(results, dict) else list(results)
    if not results:
        raise ValueError("results must not be empty")
    return results


def results_table(results, **columns) -> pd.DataFrame:
    """Stack the ``to_frame`` rows of several results (a list, or a dict name → result); keyword
    arguments add constant columns (e.g. ``results_table(results, epsilon=2.0)``)."""
    table = pd.concat([r.to_frame() for r in _as_list(results)])
    for name, value in columns.items():
        table[name] = value
    return table


def roc_points(results, *, fprs=None, **columns) -> pd.DataFrame:
    """Long table (attack, FPR, TPR) with TPR read at each FPR of ``fprs`` (default: 10⁻³ … 1, log-spaced)."""
    fprs = np.logspace(-3, 0, 25) if fprs is None else np.asarray(fprs, dtype=float)
    rows = [{"attack": r.name, "FPR": f, "TPR": r.tpr_at(f) if f < 1 else 1.0, **columns}
            for r in _as_list(results) for f in fprs]
    return pd.DataFrame(rows)


def plot_roc(results, *, ax=None, title: str = "Membership inference ROC (log-log)"):
    """ROC curves on log-log axes (where the low-FPR regime is visible), with the chance diagonal."""
    import matplotlib.pyplot as plt

    results = _as_list(results)
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4.5))
    floor = min(1.0 / max(r.n_nonmembers, 1) for r in results) / 2
    for result in results:
        fpr, tpr = np.clip(result.fpr, floor, 1), np.clip(result.tpr, floor, 1)
        ax.plot(fpr, tpr, label=f"{result.name} (AUC {result.auc:.2f})")
    ax.plot([floor, 1], [floor, 1], "k--", lw=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1)
    ax.set_ylim(floor, 1.05)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(fontsize="small", loc="lower right")
    ax.grid(alpha=0.3, which="both")
    ax.figure.tight_layout()
    return ax.figure
