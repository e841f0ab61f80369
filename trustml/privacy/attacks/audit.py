"""Empirical privacy audits: lower bounds on ε from what an attack achieved, valid at a stated confidence.

If training is (ε, δ)-DP, every membership test with true-positive rate TPR and false-positive rate FPR
satisfies TPR ≤ e^ε · FPR + δ and 1 − FPR ≤ e^ε · (1 − TPR) + δ (Kairouz et al. 2015). An attack that
does better *proves* a lower bound on ε — if the bound is computed honestly. Two traps make a bound invalid:

1. **Choosing after looking.** The best of many ROC thresholds (or of several attacks) measured on the
   same data is biased upwards; on a mechanism that leaks nothing (ε = 0) it reports a positive "95 %
   bound" far more often than 5 % of the time. The choice must be made on data the bound does not use.
2. **Dependent trials.** The examples of one training run are not independent runs of the mechanism, so
   a binomial interval on their TPR/FPR is not justified by itself.

This module offers two valid procedures:

- :func:`one_run_audit` — the one-run audit of Steinke, Nasr & Jagielski (2023, "Privacy auditing with
  one (1) training run", Thm. 5.2 / Alg. 1). Each audit example is included in training independently with
  probability ½; the auditor guesses "member" for its k₊ highest scores and "non-member" for its k₋
  lowest and abstains on the rest. Under (ε, δ)-DP the number of correct guesses W among r = k₊ + k₋ obeys
      P[W ≥ v] ≤ P[Bin(r, p_ε) ≥ v] + 2mδ · max_{i=1..v} P[v − i ≤ Bin(r, p_ε) < v] / i,   p_ε = e^ε/(1 + e^ε),
  and the audit reports the largest ε this rejects at the stated confidence. Several independent training
  runs may be pooled: example i of run j is its own canary (it changes run j only), m = Σ_j m_j.
- :func:`audit_with_selection` — the honest way to use several attacks: split the audit examples at
  random; on the *selection* part choose the attack and the guess counts (k₊, k₋ as fractions); report
  the one-run bound of that single choice on the *audit* part, whose memberships were never looked at.

:func:`epsilon_lower_bound` is the classical audit for **independent trials** (one mechanism run per
trial, e.g. randomized response, or one canary per training run): Clopper–Pearson intervals on TPR and
FPR at a threshold fixed in advance. :func:`best_threshold` picks such a threshold on *other* data.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.special import bdtrc, gammaln
from scipy.stats import beta

from trustml.privacy.attacks.results import AttackResult, check_membership

#: Guess counts tried on the selection data, as fractions of the examples: k₊ ("member") and k₋ ("non-member").
GUESS_FRACTIONS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
EPSILON_RESOLUTION = 1e-4  # bisection width of the one-run bound (the lower end is returned)


def _check_confidence(confidence) -> float:
    if not isinstance(confidence, (int, float)) or isinstance(confidence, bool) or not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return float(confidence)


def _check_delta(delta) -> float:
    if not isinstance(delta, (int, float)) or isinstance(delta, bool) or not 0.0 <= delta < 1.0:
        raise ValueError(f"delta must be in [0, 1), got {delta!r}")
    return float(delta)


# ------------------------------------------------------------------ independent trials (classical audit)

def clopper_pearson(successes, trials, *, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Exact two-sided binomial interval (Clopper & Pearson 1934): Beta(α/2; k, n−k+1), Beta(1−α/2; k+1, n−k)."""
    _check_confidence(confidence)
    k, n = np.asarray(successes, dtype=np.float64), np.asarray(trials, dtype=np.float64)
    if not (np.isfinite(k).all() and np.isfinite(n).all()):
        raise ValueError("successes and trials must be finite")
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


def _counts_at(scores: np.ndarray, is_member: np.ndarray, thresholds: np.ndarray):
    """Members and non-members with score >= t, for every t at once."""
    pos_sorted, neg_sorted = np.sort(scores[is_member]), np.sort(scores[~is_member])
    tp = len(pos_sorted) - np.searchsorted(pos_sorted, thresholds, side="left")
    fp = len(neg_sorted) - np.searchsorted(neg_sorted, thresholds, side="left")
    return tp, fp


def _interval_bound(tp, fp, n_pos, n_neg, delta, confidence):
    """The Clopper–Pearson lower bound on ε at each threshold, and the interval ends it used."""
    tpr_low, _ = clopper_pearson(tp, n_pos, confidence=confidence)
    _, fpr_high = clopper_pearson(fp, n_neg, confidence=confidence)
    # Both inequalities use the same conservative ends (TPR low, FPR high): one event of probability
    # >= confidence makes both valid, so their maximum is too.
    with np.errstate(divide="ignore", invalid="ignore"):
        first = np.where((tpr_low > delta) & (fpr_high > 0), np.log((tpr_low - delta) / fpr_high), -np.inf)
        second = np.where((1 - fpr_high > delta) & (tpr_low < 1), np.log((1 - fpr_high - delta) / (1 - tpr_low)),
                          -np.inf)
    return np.maximum(first, second), tpr_low, fpr_high


def _unpack(scores, is_member) -> tuple[str, np.ndarray, np.ndarray]:
    if isinstance(scores, AttackResult):
        if is_member is not None:
            raise ValueError("pass is_member only with a score array, not with an AttackResult")
        return scores.name, scores.scores, scores.is_member
    if is_member is None:
        raise ValueError("is_member is required with a score array")
    scores, is_member = check_membership(scores, is_member)
    return "", scores, is_member


@dataclasses.dataclass(frozen=True)
class AuditResult:
    """A Clopper–Pearson audit at one threshold fixed in advance (independent trials)."""

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
        return (f"audit{f' ({self.attack})' if self.attack else ''} at a threshold fixed in advance: "
                f"ε ≥ {self.epsilon_lower:.3f} with {self.confidence:.0%} confidence (point estimate "
                f"{self.epsilon_point:.3f}); accountant ε = {_claimed(self.epsilon_claimed)}\n"
                f"  at threshold {self.threshold:.4g}: TPR {self.tpr:.3f} (≥ {self.tpr_low:.3f}), "
                f"FPR {self.fpr:.3f} (≤ {self.fpr_high:.3f}); {self.n_members} members, {self.n_nonmembers} "
                f"non-members, δ = {self.delta:g}")


def _claimed(epsilon_claimed: float | None) -> str:
    if epsilon_claimed is None or np.isinf(epsilon_claimed):
        return "∞ (no DP)"
    return f"{epsilon_claimed:.2f}"


def epsilon_lower_bound(scores, is_member=None, *, threshold: float, delta: float, confidence: float = 0.95,
                        epsilon_claimed: float | None = None) -> AuditResult:
    """Lower bound on ε from **independent trials** at a ``threshold`` fixed in advance ("member" when
    score ≥ threshold), with Clopper–Pearson intervals on TPR and FPR.

    Valid when each (score, membership) pair is one independent run of the mechanism and ``threshold``
    was chosen without these data (e.g. by :func:`best_threshold` on other trials). For many examples of
    one training run use :func:`one_run_audit` instead."""
    name, scores, is_member = _unpack(scores, is_member)
    delta, confidence = _check_delta(delta), _check_confidence(confidence)
    if not isinstance(threshold, (int, float, np.floating)) or not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number chosen in advance, got {threshold!r}")
    n_pos, n_neg = int(is_member.sum()), int((~is_member).sum())
    tp, fp = _counts_at(scores, is_member, np.asarray([float(threshold)]))
    bound, tpr_low, fpr_high = _interval_bound(tp, fp, n_pos, n_neg, delta, confidence)
    tpr, fpr = tp / n_pos, fp / n_neg
    return AuditResult(
        epsilon_lower=float(max(bound[0], 0.0)), epsilon_point=float(max(_epsilon(tpr[0], fpr[0], delta), 0.0)),
        threshold=float(threshold), tpr=float(tpr[0]), fpr=float(fpr[0]), tpr_low=float(tpr_low[0]),
        fpr_high=float(fpr_high[0]), delta=delta, confidence=confidence, n_members=n_pos, n_nonmembers=n_neg,
        attack=name, epsilon_claimed=epsilon_claimed,
    )


def best_threshold(scores, is_member=None, *, delta: float, confidence: float = 0.95) -> float:
    """The threshold whose Clopper–Pearson bound is largest on these data — a **selection** step.

    The bound at the selected threshold on the *same* data is not a confidence bound (it is the maximum of
    many); pass the threshold to :func:`epsilon_lower_bound` on fresh trials."""
    _, scores, is_member = _unpack(scores, is_member)
    delta, confidence = _check_delta(delta), _check_confidence(confidence)
    thresholds = np.unique(scores)
    tp, fp = _counts_at(scores, is_member, thresholds)
    bound, _, _ = _interval_bound(tp, fp, int(is_member.sum()), int((~is_member).sum()), delta, confidence)
    return float(thresholds[int(np.argmax(bound))])


# ------------------------------------------------------------------ one training run (Steinke et al. 2023)

def _check_counts(n_examples, n_guesses, n_correct) -> tuple[int, int, int]:
    for name, value in (("n_examples", n_examples), ("n_guesses", n_guesses), ("n_correct", n_correct)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    if not 0 <= n_correct <= n_guesses <= n_examples:
        raise ValueError(f"need 0 <= n_correct <= n_guesses <= n_examples, got {n_correct}, {n_guesses}, "
                         f"{n_examples}")
    return int(n_examples), int(n_guesses), int(n_correct)


def one_run_p_value(*, n_examples: int, n_guesses: int, n_correct: int, epsilon: float, delta: float) -> float:
    """P[≥ ``n_correct`` of ``n_guesses`` guesses right] for an (ε, δ)-DP training run with ``n_examples``
    independently included audit examples: Steinke, Nasr & Jagielski (2023), Thm. 5.2 (see the module)."""
    m, r, v = _check_counts(n_examples, n_guesses, n_correct)
    delta = _check_delta(delta)
    if not isinstance(epsilon, (int, float)) or isinstance(epsilon, bool) or not 0 <= epsilon < math.inf:
        raise ValueError(f"epsilon must be a finite number >= 0, got {epsilon!r}")
    if v == 0:
        return 1.0
    p = 1.0 / (1.0 + math.exp(-epsilon))  # the accuracy of ε-DP randomized response
    tail = float(bdtrc(v - 1, r, p))  # P[Bin(r, p) >= v] (scipy.special: the audits call this thousands of times)
    if delta == 0.0:
        return min(1.0, tail)
    # α = max_i P[v − i <= Bin < v] / i: cumulative masses below v, divided by their widths.
    k = np.arange(v - 1, -1, -1)
    log_pmf = gammaln(r + 1) - gammaln(k + 1) - gammaln(r - k + 1) + k * math.log(p) + (r - k) * math.log1p(-p)
    alpha = float(np.max(np.cumsum(np.exp(log_pmf)) / np.arange(1, v + 1)))
    return min(1.0, tail + 2 * m * delta * alpha)


def one_run_epsilon_lower_bound(*, n_examples: int, n_guesses: int, n_correct: int, delta: float,
                                confidence: float = 0.95) -> float:
    """The largest ε that ``n_correct`` right guesses out of ``n_guesses`` reject at ``confidence``: the
    one-run audit's lower bound (0 when even ε = 0 is not rejected). Bisection on the p-value, which
    rises with ε."""
    m, r, v = _check_counts(n_examples, n_guesses, n_correct)
    delta, confidence = _check_delta(delta), _check_confidence(confidence)
    level = 1.0 - confidence

    def rejects(epsilon: float) -> bool:
        return one_run_p_value(n_examples=m, n_guesses=r, n_correct=v, epsilon=epsilon, delta=delta) < level

    if not rejects(0.0):
        return 0.0
    low, high = 0.0, 1.0
    while rejects(high):  # v <= r bounds it: ε → ∞ gives p → 1 (all correct is certain)
        low, high = high, 2 * high
    while high - low > EPSILON_RESOLUTION:  # the bound is rounded down, never up
        middle = (low + high) / 2
        low, high = (middle, high) if rejects(middle) else (low, middle)
    return low


def guesses(scores: np.ndarray, *, k_member: int, k_nonmember: int) -> np.ndarray:
    """+1 for the ``k_member`` highest scores, −1 for the ``k_nonmember`` lowest, 0 (abstain) otherwise.

    Ties are broken by position (a fixed rule that does not look at membership)."""
    n = len(scores)
    if k_member < 0 or k_nonmember < 0 or k_member + k_nonmember > n:
        raise ValueError(f"need k_member, k_nonmember >= 0 and k_member + k_nonmember <= {n}, "
                         f"got {k_member} and {k_nonmember}")
    order = np.argsort(scores, kind="stable")
    guess = np.zeros(n, dtype=np.int8)
    guess[order[n - k_member:]] = 1
    guess[order[:k_nonmember]] = -1
    return guess


@dataclasses.dataclass(frozen=True)
class OneRunAudit:
    """The one-run audit of Steinke et al. (2023): a lower bound on ε at ``confidence``."""

    epsilon_lower: float
    n_examples: int  # m: audit examples, each included independently with probability ½
    n_guesses: int  # r = k₊ + k₋
    n_correct: int  # v
    k_member: int
    k_nonmember: int
    delta: float
    confidence: float
    attack: str = ""
    epsilon_claimed: float | None = None
    selection: pd.DataFrame | None = dataclasses.field(default=None, compare=False)  # what was tried, if chosen

    @property
    def accuracy(self) -> float:
        """Share of right guesses (0.5 = chance)."""
        return self.n_correct / self.n_guesses if self.n_guesses else float("nan")

    def to_frame(self) -> pd.DataFrame:
        row = {"attack": self.attack, "ε lower bound": self.epsilon_lower,
               "accountant ε": self.epsilon_claimed if self.epsilon_claimed is not None else np.inf,
               "guesses": self.n_guesses, "correct": self.n_correct, "guess accuracy": self.accuracy,
               "audit examples": self.n_examples, "δ": self.delta, "confidence": self.confidence}
        return pd.DataFrame([row]).set_index("attack")

    def summary(self) -> str:
        return (f"one-run audit (Steinke et al. 2023){f', {self.attack}' if self.attack else ''}: ε ≥ "
                f"{self.epsilon_lower:.3f} with {self.confidence:.0%} confidence; accountant ε = "
                f"{_claimed(self.epsilon_claimed)}\n  {self.n_correct} of {self.n_guesses} guesses right "
                f"({self.k_member} 'member', {self.k_nonmember} 'non-member') over {self.n_examples} audit "
                f"examples, δ = {self.delta:g}")


def one_run_audit(scores, is_member=None, *, k_member: int, k_nonmember: int, delta: float,
                  confidence: float = 0.95, epsilon_claimed: float | None = None) -> OneRunAudit:
    """One-run audit of an attack's scores with guess counts ``k_member``/``k_nonmember`` fixed in advance.

    Valid when every audit example was included in training independently with probability ½ (see
    :meth:`~trustml.privacy.attacks.MembershipGame.train`, whose targets are drawn that way) and the counts
    were chosen without looking at these examples' memberships."""
    name, scores, is_member = _unpack(scores, is_member)
    guess = guesses(scores, k_member=k_member, k_nonmember=k_nonmember)
    n_correct = int(((guess == 1) & is_member).sum() + ((guess == -1) & ~is_member).sum())
    n_guesses = int(k_member + k_nonmember)
    bound = one_run_epsilon_lower_bound(n_examples=len(scores), n_guesses=n_guesses, n_correct=n_correct,
                                        delta=delta, confidence=confidence)
    return OneRunAudit(bound, len(scores), n_guesses, n_correct, int(k_member), int(k_nonmember), float(delta),
                       float(confidence), name, epsilon_claimed)


def _counts(fraction: float, n: int) -> int:
    return int(round(fraction * n))


def audit_with_selection(results: AttackResult | Mapping[str, AttackResult] | Sequence[AttackResult], *,
                         delta: float, confidence: float = 0.95, selection_fraction: float = 0.5,
                         fractions: Sequence[float] = GUESS_FRACTIONS, seed: int = 0,
                         epsilon_claimed: float | None = None) -> OneRunAudit:
    """Choose the attack and the guess counts on a random *selection* part of the examples, then report the
    one-run bound of that one choice on the remaining *audit* part (Steinke et al. 2023 with honest selection).

    All results must score the same examples (same membership). The split depends only on ``seed``; the
    guess counts are fractions (of ``fractions``) of each part's size. The returned audit's ``selection``
    table lists the bound of every (attack, k₊, k₋) on the selection part: a choice, not a result."""
    if isinstance(results, AttackResult):
        results = [results]
    results = list(results.values()) if isinstance(results, Mapping) else list(results)
    if not results:
        raise ValueError("results must not be empty")
    membership = results[0].is_member
    if any(len(r.is_member) != len(membership) or not np.array_equal(r.is_member, membership) for r in results):
        raise ValueError("every attack result must score the same examples (identical is_member)")
    if not 0.0 < selection_fraction < 1.0:
        raise ValueError(f"selection_fraction must be in (0, 1), got {selection_fraction!r}")
    fractions = sorted({float(f) for f in fractions})
    if not fractions or fractions[0] < 0 or fractions[-1] > 0.5:
        raise ValueError(f"fractions must be a non-empty set of numbers in [0, 0.5], got {fractions}")
    delta, confidence = _check_delta(delta), _check_confidence(confidence)
    n = len(membership)
    selected = np.zeros(n, dtype=bool)
    selected[np.random.default_rng(seed).permutation(n)[: int(round(selection_fraction * n))]] = True
    if selected.all() or not selected.any():
        raise ValueError(f"{n} examples are too few to split into a selection and an audit part")
    rows = []
    for result in results:
        scores, member = result.scores[selected], membership[selected]
        for f_member in fractions:
            for f_nonmember in fractions:
                k_member, k_nonmember = _counts(f_member, len(scores)), _counts(f_nonmember, len(scores))
                if k_member + k_nonmember == 0:
                    continue
                trial = one_run_audit(scores, member, k_member=k_member, k_nonmember=k_nonmember, delta=delta,
                                      confidence=confidence)
                rows.append({"attack": result.name, "member fraction": f_member,
                             "non-member fraction": f_nonmember, "ε lower bound": trial.epsilon_lower,
                             "guess accuracy": trial.accuracy})
    selection = pd.DataFrame(rows)
    # Ties (e.g. every choice 0 on a private model) go to the first row: a fixed, membership-blind order.
    choice = selection.loc[selection["ε lower bound"].idxmax()]
    chosen = next(r for r in results if r.name == choice["attack"])
    audit_scores = chosen.scores[~selected]
    audit = one_run_audit(
        audit_scores, membership[~selected], k_member=_counts(choice["member fraction"], len(audit_scores)),
        k_nonmember=_counts(choice["non-member fraction"], len(audit_scores)), delta=delta, confidence=confidence,
        epsilon_claimed=epsilon_claimed)
    return dataclasses.replace(audit, attack=chosen.name, selection=selection)


__all__ = ["GUESS_FRACTIONS", "AuditResult", "OneRunAudit", "audit_with_selection", "best_threshold",
           "clopper_pearson", "epsilon_lower_bound", "guesses", "one_run_audit", "one_run_epsilon_lower_bound",
           "one_run_p_value"]
