"""Empirical privacy audit: a lower bound on ε from what an attack achieved.

If training is (ε, δ)-DP then *every* membership test with true-positive rate TPR and false-positive
rate FPR satisfies (Kairouz et al. 2015; Jagielski et al. 2020, "Auditing differentially private machine
learning")

    TPR ≤ e^ε · FPR + δ      and      1 − FPR ≤ e^ε · (1 − TPR) + δ.

So any measured (TPR, FPR) gives ε ≥ max( log((TPR − δ)/FPR), log((1 − FPR − δ)/(1 − TPR)) ). TPR and
FPR are estimated from finitely many members / non-members, so we use Clopper–Pearson intervals — the
lower end of TPR and the upper end of FPR — and the bound holds with the stated confidence. The
accountant's ε is an *upper* bound; an audit's ε_lb above it would reveal a bug (or a broken proof).

Caveats, stated where the numbers are shown: taking the maximum over all thresholds is mildly optimistic
(multiple comparisons; pass a ``threshold`` chosen beforehand, e.g. on shadow models, for a strict
audit), and treating the examples of one training run as independent trials is the one-run audit of
Steinke, Nasr & Jagielski (2023), which loses some tightness.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from scipy.stats import beta

from trustml.privacy.attacks.results import AttackResult, check_membership


def clopper_pearson(successes, trials, *, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Exact two-sided binomial interval (Clopper & Pearson 1934): Beta(α/2; k, n−k+1), Beta(1−α/2; k+1, n−k)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    k, n = np.asarray(successes, dtype=np.float64), np.asarray(trials, dtype=np.float64)
    if (n < 1).any() or (k < 0).any() or (k > n).any():
        raise ValueError("need 0 <= successes <= trials and trials >= 1")
    alpha = 1.0 - confidence
    low = np.where(k > 0, beta.ppf(alpha / 2, k, n - k + 1), 0.0)
    high = np.where(k < n, beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)
    return low, high


def _epsilon(tpr, fpr, delta):
    """max(log((TPR − δ)/FPR), log((1 − FPR − δ)/(1 − TPR))), −inf where a ratio is not positive."""
    with np.errstate(divide="ignore", invalid="ignore"):
        first = np.where((tpr - delta > 0) & (fpr > 0), np.log((tpr - delta) / fpr), -np.inf)
        first = np.where((tpr - delta > 0) & (fpr == 0), np.inf, first)
        second = np.where((1 - fpr - delta > 0) & (tpr < 1), np.log((1 - fpr - delta) / (1 - tpr)), -np.inf)
        second = np.where((1 - fpr - delta > 0) & (tpr == 1), np.inf, second)
    return np.maximum(first, second)


@dataclasses.dataclass(frozen=True)
class AuditResult:
    """ε lower bound at the best threshold, with the (TPR, FPR) estimates and their interval ends."""

    epsilon_lower: float  # from TPR_low, FPR_high: holds with probability >= confidence
    epsilon_point: float  # from the raw TPR and FPR at the same threshold (no interval; inf when FPR = 0)
    threshold: float
    tpr: float
    fpr: float
    tpr_low: float
    fpr_high: float
    delta: float
    confidence: float
    n_members: int
    n_nonmembers: int
    attack: str = ""
    epsilon_claimed: float | None = None  # the accountant's ε, shown next to the bound

    def to_frame(self) -> pd.DataFrame:
        row = {"attack": self.attack, "ε lower bound": self.epsilon_lower, "ε point estimate": self.epsilon_point,
               "accountant ε": self.epsilon_claimed if self.epsilon_claimed is not None else np.inf,
               "TPR": self.tpr, "FPR": self.fpr, "TPR low": self.tpr_low, "FPR high": self.fpr_high,
               "δ": self.delta, "confidence": self.confidence}
        return pd.DataFrame([row]).set_index("attack")

    def summary(self) -> str:
        claimed = "∞ (no DP)" if self.epsilon_claimed is None or np.isinf(self.epsilon_claimed) else \
            f"{self.epsilon_claimed:.2f}"
        return (f"audit{f' ({self.attack})' if self.attack else ''}: ε ≥ {self.epsilon_lower:.3f} with "
                f"{self.confidence:.0%} confidence (point estimate {self.epsilon_point:.3f}); "
                f"accountant ε = {claimed}\n"
                f"  at threshold {self.threshold:.4g}: TPR {self.tpr:.3f} (≥ {self.tpr_low:.3f}), "
                f"FPR {self.fpr:.3f} (≤ {self.fpr_high:.3f}); {self.n_members} members, {self.n_nonmembers} "
                f"non-members, δ = {self.delta:g}")


def epsilon_lower_bound(scores, is_member=None, *, delta: float, confidence: float = 0.95,
                        threshold: float | None = None, epsilon_claimed: float | None = None) -> AuditResult:
    """Lower bound on ε from an attack's scores ("member" when score ≥ threshold).

    ``scores`` is an array (with ``is_member``) or an ``AttackResult``. With ``threshold=None`` every
    threshold of the ROC is tried and the largest lower bound is returned; else only the given one."""
    name = ""
    if isinstance(scores, AttackResult):
        if is_member is not None:
            raise ValueError("pass is_member only with a score array, not with an AttackResult")
        name, is_member, scores = scores.name, scores.is_member, scores.scores
    elif is_member is None:
        raise ValueError("is_member is required with a score array")
    scores, is_member = check_membership(scores, is_member)
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"delta must be in [0, 1), got {delta}")
    n_pos, n_neg = int(is_member.sum()), int((~is_member).sum())
    if threshold is None:
        thresholds = np.unique(scores)
    else:
        thresholds = np.asarray([float(threshold)])
    # Counts of scores >= t among members / non-members, for every candidate t at once.
    pos_sorted, neg_sorted = np.sort(scores[is_member]), np.sort(scores[~is_member])
    tp = n_pos - np.searchsorted(pos_sorted, thresholds, side="left")
    fp = n_neg - np.searchsorted(neg_sorted, thresholds, side="left")
    tpr_low, tpr_high = clopper_pearson(tp, n_pos, confidence=confidence)
    fpr_low, fpr_high = clopper_pearson(fp, n_neg, confidence=confidence)
    # Conservative ends for each inequality: TPR low / FPR high, and 1−FPR low / 1−TPR high.
    with np.errstate(divide="ignore", invalid="ignore"):
        first = np.where((tpr_low > delta) & (fpr_high > 0), np.log((tpr_low - delta) / fpr_high), -np.inf)
        second = np.where((1 - fpr_high > delta) & (tpr_low < 1), np.log((1 - fpr_high - delta) / (1 - tpr_low)),
                          -np.inf)
    bound = np.maximum(first, second)
    best = int(np.argmax(bound))
    tpr, fpr = tp / n_pos, fp / n_neg
    return AuditResult(
        epsilon_lower=float(max(bound[best], 0.0)),
        epsilon_point=float(max(_epsilon(tpr[best], fpr[best], delta), 0.0)),
        threshold=float(thresholds[best]), tpr=float(tpr[best]), fpr=float(fpr[best]), tpr_low=float(tpr_low[best]),
        fpr_high=float(fpr_high[best]), delta=float(delta), confidence=float(confidence), n_members=n_pos,
        n_nonmembers=n_neg, attack=name, epsilon_claimed=epsilon_claimed,
    )
