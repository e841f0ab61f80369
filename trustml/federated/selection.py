"""Which devices train in a round, and how their updates are weighted.

A federated round asks ``m`` of the ``K`` devices for an update. How they are picked matters on real
device data, where activity — the number of samples ``n_k`` a device holds — is heavy-tailed:

- ``"uniform"``: every device with data is equally likely (the FedAvg default);
- ``"activity"``: ``p_k ∝ n_k^γ`` (γ = 0 is uniform, γ = 1 proportional to activity);
- ``"top"``: the ``m`` most active devices, every round (deterministic; ties go to the lower index).

Sampling is without replacement by default (a device trains at most once per round); with
``replace=True`` a device may be drawn several times. Without replacement numpy draws successively
(each draw ∝ p among the devices not yet drawn), so only the first draw has probability exactly ``p``.

Devices with ``n_k = 0`` hold nothing to train on (e.g. no new data in a continual period): they are
never selected, under any scheme, and asking for more devices than hold data is an error.

Aggregation weights (McMahan et al. 2017; Li et al. 2020, "On the convergence of FedAvg on non-IID
data", sampling schemes I and II):

- ``"weighted"``: ``w_k = n_k / Σ_{j∈S} n_j`` — FedAvg's rule. Combined with activity sampling (γ = 1)
  heavy devices count twice (once in being picked, once in the weight): the round's expected update
  leans further towards them than the data does;
- ``"mean"``: ``w_k = c_k / m`` with ``c_k`` how often device k was drawn — unbiased for the
  data-weighted objective ``Σ_k (n_k/n) F_k`` when devices are sampled ∝ ``n_k`` *with* replacement.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

SCHEMES = ("uniform", "activity", "top")


def check_counts(counts) -> np.ndarray:
    """``counts`` as a 1-D int array of samples per device; negative or all-zero counts are errors."""
    counts = np.asarray(counts)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(f"counts must be a non-empty 1-D sequence of samples per device, got shape {counts.shape}")
    if not np.issubdtype(counts.dtype, np.number) or np.any(counts < 0) or np.any(counts != np.round(counts)):
        raise ValueError("counts must be non-negative integers (samples per device)")
    if not np.any(counts > 0):
        raise ValueError("counts: no device holds any data (all counts are 0)")
    return counts.astype(np.int64)


def check_gamma(gamma: float) -> float:
    if not np.isfinite(gamma) or gamma < 0:
        raise ValueError(f"gamma must be a finite number >= 0 (0 = uniform, 1 = ∝ activity), got {gamma}")
    return float(gamma)


def selection_probabilities(counts, *, gamma: float = 1.0) -> np.ndarray:
    """p_k = n_k^γ / Σ_j n_j^γ over devices with n_k > 0; devices with n_k = 0 get p_k = 0.

    γ = 0 is uniform over the devices that hold data, γ = 1 is proportional to activity.
    """
    counts = check_counts(counts)
    gamma = check_gamma(gamma)
    has_data = counts > 0
    # Work in log space: n^γ overflows float64 for large n and γ.
    log_weight = np.where(has_data, gamma * np.log(np.maximum(counts, 1)), -np.inf)
    weight = np.exp(log_weight - log_weight[has_data].max())
    return weight / weight.sum()


def check_devices_per_round(devices_per_round: int, available: int, *, replace: bool) -> int:
    if isinstance(devices_per_round, bool) or not isinstance(devices_per_round, (int, np.integer)):
        raise TypeError(f"devices_per_round must be an int, got {type(devices_per_round).__name__}")
    if devices_per_round < 1:
        raise ValueError(f"devices_per_round must be >= 1, got {devices_per_round}")
    if not replace and devices_per_round > available:
        raise ValueError(
            f"devices_per_round={devices_per_round} exceeds the {available} devices that hold data "
            "(without replacement each device trains at most once per round)"
        )
    return int(devices_per_round)


def sample_devices(counts, devices_per_round: int, *, gamma: float = 1.0, replace: bool = False,
                   rng: np.random.Generator) -> np.ndarray:
    """Draw ``devices_per_round`` device indices with p_k ∝ n_k^γ (see ``selection_probabilities``)."""
    p = selection_probabilities(counts, gamma=gamma)
    m = check_devices_per_round(devices_per_round, int(np.count_nonzero(p)), replace=replace)
    return rng.choice(len(p), size=m, replace=replace, p=p)


def top_devices(counts, devices_per_round: int) -> np.ndarray:
    """The ``devices_per_round`` most active devices (ties broken by lower index), most active first."""
    counts = check_counts(counts)
    m = check_devices_per_round(devices_per_round, int(np.count_nonzero(counts)), replace=False)
    return np.argsort(-counts, kind="stable")[:m]


@dataclasses.dataclass(frozen=True)
class Selection:
    """A device-selection rule: ``Selection("activity", gamma=1.0)``, ``Selection("uniform")``, ``Selection("top")``.

    ``select(counts, m, rng)`` returns the indices of the selected devices (repeats only with
    ``replace=True``); ``aggregation`` names the matching weight rule (see ``aggregation_weights``).
    """

    scheme: str = "uniform"
    gamma: float = 1.0
    replace: bool = False
    aggregation: str = "weighted"

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {self.scheme!r}")
        check_gamma(self.gamma)
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {sorted(AGGREGATIONS)}, got {self.aggregation!r}")
        if self.scheme == "top" and self.replace:
            raise ValueError("replace=True makes no sense with scheme='top' (the m most active devices)")

    @property
    def effective_gamma(self) -> float:
        return 0.0 if self.scheme == "uniform" else self.gamma

    def probabilities(self, counts) -> np.ndarray:
        """Per-draw selection probabilities (not defined for the deterministic ``"top"`` scheme)."""
        if self.scheme == "top":
            raise ValueError("scheme='top' is deterministic: it has no sampling probabilities")
        return selection_probabilities(counts, gamma=self.effective_gamma)

    def select(self, counts, devices_per_round: int, rng: np.random.Generator) -> np.ndarray:
        if self.scheme == "top":
            return top_devices(counts, devices_per_round)
        return sample_devices(counts, devices_per_round, gamma=self.effective_gamma, replace=self.replace, rng=rng)

    def weights(self, selected, counts) -> np.ndarray:
        return aggregation_weights(selected, counts, rule=self.aggregation)

    @property
    def label(self) -> str:
        name = {"uniform": "uniform", "top": "top-m"}.get(self.scheme, f"activity γ={self.gamma:g}")
        return name + (" (with replacement)" if self.replace else "") + (
            ", mean" if self.aggregation == "mean" else "")


def unbiased_activity() -> Selection:
    """Sample ∝ n_k with replacement and average plainly: the unbiased alternative to n-weighting."""
    return Selection("activity", gamma=1.0, replace=True, aggregation="mean")


def weighted_by_samples(selected: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """w_i = n_{k_i} / Σ_j n_{k_j} over the selected list (FedAvg, McMahan et al. 2017)."""
    n = counts[selected].astype(np.float64)
    return n / n.sum()


def plain_mean(selected: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """w_i = 1/m for each of the m draws (a device drawn twice gets 2/m in total; Li et al. 2020, scheme I)."""
    return np.full(len(selected), 1.0 / len(selected))


AGGREGATIONS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "weighted": weighted_by_samples,
    "mean": plain_mean,
}


def aggregation_weights(selected, counts, *, rule: str = "weighted") -> np.ndarray:
    """One weight per entry of ``selected`` (summing to 1) under ``rule`` ("weighted" or "mean")."""
    if rule not in AGGREGATIONS:
        raise ValueError(f"rule must be one of {sorted(AGGREGATIONS)}, got {rule!r}")
    counts = check_counts(counts)
    selected = np.asarray(selected, dtype=np.int64)
    if selected.ndim != 1 or selected.size == 0:
        raise ValueError("selected must be a non-empty 1-D sequence of device indices")
    if selected.min() < 0 or selected.max() >= len(counts):
        raise ValueError(f"selected holds indices outside [0, {len(counts)})")
    if np.any(counts[selected] == 0):
        raise ValueError("selected contains devices with no data (n_k = 0): they cannot contribute an update")
    return AGGREGATIONS[rule](selected, counts)


def collapse(selected, weights) -> tuple[np.ndarray, np.ndarray]:
    """Merge repeated draws: unique devices (in first-drawn order) and their summed weights."""
    selected = np.asarray(selected)
    unique, first, inverse = np.unique(selected, return_index=True, return_inverse=True)
    summed = np.bincount(inverse, weights=np.asarray(weights, dtype=np.float64))
    order = np.argsort(first)
    return unique[order], summed[order]


def round_rng(seed: int, server_round: int) -> np.random.Generator:
    """The generator that selects devices in ``server_round`` (the in-process loop and Flower share it)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), 1, int(server_round)]))


__all__ = [
    "AGGREGATIONS", "SCHEMES", "Selection", "aggregation_weights", "check_counts", "collapse", "plain_mean",
    "round_rng", "sample_devices", "selection_probabilities", "top_devices", "unbiased_activity",
    "weighted_by_samples",
]
