"""DP-SGD's disparate impact: who pays for differential privacy, why, and what moving the cost costs.

Bagdasaryan, Poursaeed & Shmatikov (2019, "Differential Privacy Has Disparate Impact on Model Accuracy",
NeurIPS) found that DP-SGD lowers the accuracy of under-represented groups more than the majority's: "the poor
get poorer". Their mechanism: examples of a small, harder group have larger gradients, so clipping cuts them
more, and the few that remain are drowned by noise calibrated to every example alike.

* :func:`train_private_by_group` — DP-SGD (:class:`trustml.privacy.DPSGD`, trained by
  :func:`trustml.models.fit`) that records every sampled example's gradient norm with its group (the engine's
  :class:`~trustml.privacy.ClipStats`), and can **oversample** groups: each group g is Poisson-sampled at its
  own rate q_g (:class:`GroupPoissonBatches`, :func:`group_sample_rates`).
* :func:`clipping_by_group` — the clipped fraction and gradient-norm summaries per group from that log.
* :func:`accuracy_gaps` — per-group accuracy of several settings (e.g. ε values) averaged over training seeds,
  the gap between two groups, and the change of the gap against a reference setting, each with a paired
  percentile bootstrap over test examples.

**Privacy with per-group rates.** Under add/remove adjacency with Poisson sampling an example's privacy loss
depends only on its own inclusion probability: the other examples are sampled independently and identically
on both neighbouring datasets. So DP-SGD whose examples of group g join each batch with probability q_g gives
every example of g the guarantee of the Sampled Gaussian Mechanism at rate q_g — the accountant's ε for
(σ, q_g, steps) (individual accounting, Feldman & Zrnic 2021). Oversampling a group therefore raises *its*
ε, unless σ is raised for everybody; :func:`train_private_by_group` reports ε per group and calibrates σ to the
group named by ``calibrate_to`` (default: the largest rate, so that every example keeps ε ≤ the target).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Hashable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import TensorDataset

from trustml.fairness.group import bootstrap_indices, check_bootstrap


def _group_codes(groups, n: int, name: str = "groups") -> tuple[np.ndarray, list]:
    """Integer codes 0..G-1 of ``groups`` (one label per row) and the labels in sorted order."""
    labels = np.asarray(groups)
    if labels.ndim != 1 or len(labels) != n:
        raise ValueError(f"{name} must give one group label per row: expected {n} labels, got shape {labels.shape}")
    if pd.isna(labels).any():
        raise ValueError(f"{name} contains missing labels (None/NaN)")
    levels = sorted(pd.unique(labels).tolist(), key=str)
    codes = pd.Categorical(labels, categories=levels).codes.astype(np.int64)
    return codes, levels


def group_sample_rates(group_sizes: Mapping[Hashable, int], *, batch_size: float,
                       oversample: Mapping[Hashable, float] | None = None) -> dict[Hashable, float]:
    """Poisson rates per group with the expected batch size fixed: ``q_g = k_g · q₀``, ``Σ_g q_g N_g = B``.

    ``k_g = oversample.get(g, 1)`` multiplies group g's rate; without ``oversample`` every rate is B/N.
    """
    if not group_sizes:
        raise ValueError("group_sizes is empty")
    for group, size in group_sizes.items():
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"group_sizes[{group!r}] must be an int >= 1 (a group with no examples cannot be "
                             f"sampled), got {size!r}")
    factors = dict.fromkeys(group_sizes, 1.0)
    for group, factor in (oversample or {}).items():
        if group not in group_sizes:
            raise ValueError(f"oversample names group {group!r}, which is not one of {list(group_sizes)}")
        if not (isinstance(factor, (int, float)) and not isinstance(factor, bool) and 0 < factor < math.inf):
            raise ValueError(f"oversample[{group!r}] must be a finite number > 0, got {factor!r}")
        factors[group] = float(factor)
    total = sum(group_sizes.values())
    if not (isinstance(batch_size, (int, float)) and 0 < batch_size <= total):
        raise ValueError(f"batch_size must be in (0, {total}] (the number of examples), got {batch_size!r}")
    base = batch_size / sum(factors[g] * n for g, n in group_sizes.items())
    rates = {g: factors[g] * base for g in group_sizes}
    too_high = {g: round(q, 3) for g, q in rates.items() if q > 1}
    if too_high:
        raise ValueError(f"sampling rates {too_high} exceed 1: lower batch_size or the oversampling factors")
    return rates


class GroupPoissonBatches:
    """``steps`` batches of ``dataset`` in which row i appears independently with probability ``rates[i]``.

    ``rates`` holds one Poisson rate per row (e.g. its group's rate). Seeded: the same seed gives the same
    batches; iterating again draws fresh ones.
    """

    def __init__(self, dataset: TensorDataset, rates, *, steps: int, seed: int = 0):
        if len(dataset) < 1:
            raise ValueError("dataset must not be empty")
        self.dataset = dataset
        self.rates = torch.as_tensor(np.asarray(rates, dtype=np.float64))
        if self.rates.shape != (len(dataset),):
            raise ValueError(f"rates must hold one rate per row ({len(dataset)}), got shape {tuple(self.rates.shape)}")
        if not bool(((self.rates > 0) & (self.rates <= 1)).all()):
            raise ValueError("every rate must be in (0, 1]")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        self.steps = steps
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def expected_batch_size(self) -> float:
        return float(self.rates.sum())

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        for _ in range(self.steps):
            rows = torch.nonzero(torch.rand(len(self.rates), generator=self.generator, dtype=torch.float64)
                                 < self.rates).flatten()
            yield tuple(t[rows] for t in self.dataset.tensors)


@dataclasses.dataclass
class GroupedPrivateTraining:
    """Result of :func:`train_private_by_group`.

    ``epsilon[g]``: the accountant's ε at ``delta`` for group g's sampling rate (``inf`` without DP);
    ``clip_log``: one row per sampled example and step — ``step``, ``group``, ``norm`` (its unclipped gradient
    norm); empty for non-private training.
    """

    model: nn.Module
    epsilon: dict[Hashable, float]
    delta: float
    noise_multiplier: float
    sample_rates: dict[Hashable, float]
    steps: int
    max_grad_norm: float
    clip_log: pd.DataFrame
    losses: list[float]

    @property
    def max_epsilon(self) -> float:
        """The guarantee every example has: the largest per-group ε."""
        return max(self.epsilon.values())

    def clipping(self) -> pd.DataFrame:
        """:func:`clipping_by_group` of this run's log."""
        return clipping_by_group(self.clip_log, max_grad_norm=self.max_grad_norm)


def train_private_by_group(model: nn.Module, dataset: TensorDataset, *, groups, epsilon: float | None = None,
                           noise_multiplier: float | None = None, delta: float = 1e-5, epochs: float = 3,
                           batch_size: int = 256, lr: float = 1e-2, optimizer: str = "adam", max_grad_norm: float = 1.0,
                           oversample: Mapping[Hashable, float] | None = None, calibrate_to: Hashable | None = None,
                           loss_weights: Mapping[Hashable, float] | None = None, accountant: str = "rdp",
                           seed: int = 0, progress: bool = False) -> GroupedPrivateTraining:
    """DP-SGD on ``dataset`` = ``(input_ids, labels)`` that logs each example's gradient norm with its group.

    ``groups``: one label per row. Give exactly one of ``epsilon`` (a target; ``math.inf`` trains without
    clipping or noise on the same Poisson-sampled batches, and logs nothing) and ``noise_multiplier`` (a
    fixed σ). Without ``oversample`` this is :func:`trustml.privacy.train_private` step for step (same batches,
    same σ, the same model; tested), and every group has the accountant's ε. With ``oversample={g: k}`` group g
    is sampled k times as often as the others at the same expected batch size (:func:`group_sample_rates`);
    with a target ``epsilon``, σ is calibrated so that the group ``calibrate_to`` (default: the most often
    sampled, so that no example exceeds the target) spends exactly ``epsilon``. Each group's ε is the
    accountant's for its own rate (see the module docstring).

    ``loss_weights={g: w}`` multiplies group g's per-example losses by w (default 1). It costs no ε: the
    clipped contribution ``clip_C(w·g_i)`` of every example still has norm at most C. (The logged norms are
    those of the weighted gradients, the ones the engine clips.)
    """
    from trustml.models.training import classification_loss, fit, gradient_step, make_optimizer
    from trustml.privacy import DPSGD, get_epsilon, get_noise_multiplier, steps_per_epoch
    from trustml.privacy.sampling import PoissonBatches

    from trustml.privacy.validation import check_delta, check_epochs

    if len(dataset.tensors) != 2:
        raise ValueError(f"dataset must be a TensorDataset of (input_ids, labels), got {len(dataset.tensors)} tensors")
    inputs, labels = dataset.tensors
    check_delta(delta, len(dataset))
    check_epochs(epochs)
    codes, levels = _group_codes(groups, len(dataset))
    weights = torch.ones(len(levels))
    for group, weight in (loss_weights or {}).items():
        if group not in levels:
            raise ValueError(f"loss_weights names group {group!r}, which is not one of {levels}")
        if not (isinstance(weight, (int, float)) and not isinstance(weight, bool) and 0 < weight < math.inf):
            raise ValueError(f"loss_weights[{group!r}] must be a finite number > 0, got {weight!r}")
        weights[levels.index(group)] = float(weight)
    sizes = {g: int((codes == i).sum()) for i, g in enumerate(levels)}
    rates = group_sample_rates(sizes, batch_size=batch_size, oversample=oversample)
    if calibrate_to is not None and calibrate_to not in rates:
        raise ValueError(f"calibrate_to must be one of the groups {levels}, got {calibrate_to!r}")
    if (epsilon is None) == (noise_multiplier is None):
        raise ValueError("pass exactly one of epsilon (a target ε; math.inf: no DP) and noise_multiplier")
    if epsilon is not None and not (isinstance(epsilon, (int, float)) and epsilon > 0):
        raise ValueError(f"epsilon must be > 0 (math.inf: no DP), got {epsilon!r}")
    private = epsilon is None or math.isfinite(epsilon)
    uniform = len(set(rates.values())) == 1
    if not private and not uniform:
        raise ValueError("oversample applies to private training (finite epsilon or a noise_multiplier) only")
    if calibrate_to is not None and (uniform or epsilon is None):
        raise ValueError("calibrate_to applies with oversample and a target epsilon only (it picks the group whose "
                         "rate σ is calibrated to)")
    q = batch_size / len(dataset)
    per_epoch = steps_per_epoch(q)
    n_steps = max(1, round(epochs * per_epoch))
    coded = TensorDataset(inputs, labels, torch.as_tensor(codes))
    torch.manual_seed(seed)
    opt = make_optimizer(optimizer, model.parameters(), lr=lr)
    device = next(model.parameters()).device
    classify = classification_loss(device)
    last_groups: list[torch.Tensor] = []  # the group codes of the batch whose losses the update receives

    def loss(model: nn.Module, batch) -> torch.Tensor:
        batch_inputs, batch_labels, batch_groups = batch
        last_groups[:] = [batch_groups]
        losses = classify(model, (batch_inputs, batch_labels))
        return losses if loss_weights is None else losses * weights[batch_groups].to(losses.device)

    if not private:
        loader = PoissonBatches(coded, sample_rate=q, steps=n_steps, seed=seed)
        steps = iter(loader)
        losses = fit(model, lambda epoch: itertools.islice(steps, per_epoch), loss=loss, update=gradient_step(opt),
                     epochs=math.ceil(n_steps / per_epoch), progress=progress, desc="epochs")
        return GroupedPrivateTraining(model, dict.fromkeys(levels, math.inf), delta, 0.0, rates, n_steps,
                                      float(max_grad_norm), pd.DataFrame({"step": [], "group": [], "norm": []}),
                                      losses)

    if uniform:
        dp = DPSGD(model, opt, max_grad_norm=max_grad_norm, noise_multiplier=noise_multiplier,
                   target_epsilon=epsilon, delta=delta, epochs=epochs, accountant=accountant, seed=seed)
        batches = iter(dp.poisson_loader(coded, batch_size=batch_size, epochs=epochs, seed=seed))
    else:
        if epsilon is not None:
            calibrate_to = max(rates, key=rates.__getitem__) if calibrate_to is None else calibrate_to
            noise_multiplier = get_noise_multiplier(target_epsilon=epsilon, sample_rate=rates[calibrate_to],
                                                    delta=delta, steps=n_steps, accountant=accountant)
        dp = DPSGD(model, opt, max_grad_norm=max_grad_norm, noise_multiplier=noise_multiplier, delta=delta,
                   accountant=accountant, seed=seed)
        # poisson_loader fixes the divisor of the noisy sum at the expected batch size qN = Σ_g q_g N_g; the
        # batches themselves come from the per-group sampler (DPSGD's single-rate accountant is not used).
        dp.poisson_loader(coded, sample_rate=q, steps=n_steps)
        row_rates = np.array([rates[g] for g in levels])[codes]
        batches = iter(GroupPoissonBatches(coded, row_rates, steps=n_steps, seed=seed))
    step_of, group_of, norm_of = [], [], []

    def update(losses: torch.Tensor) -> None:
        stats = dp.step(losses)
        step_of.append(np.full(stats.n_units, dp.steps_taken - 1))
        group_of.append(last_groups[0].numpy())
        norm_of.append(stats.norms.detach().cpu().numpy())

    try:
        losses = fit(model, lambda epoch: itertools.islice(batches, per_epoch), loss=loss, update=update,
                     epochs=math.ceil(n_steps / per_epoch), progress=progress, desc="epochs")
    finally:
        dp.detach()
    sigma = dp.current_noise_multiplier  # σ is known once the loader is made (no decay here: constant)
    if uniform:
        spent = dict.fromkeys(levels, dp.epsilon(delta))
    else:
        spent = {g: get_epsilon(noise_multiplier=sigma, sample_rate=rate, steps=dp.steps_taken, delta=delta,
                                accountant=accountant) for g, rate in rates.items()}
    log = pd.DataFrame({"step": np.concatenate(step_of), "group": np.asarray(levels, dtype=object)[
        np.concatenate(group_of)], "norm": np.concatenate(norm_of)})
    return GroupedPrivateTraining(model, spent, delta, sigma, rates, dp.steps_taken,
                                  float(max_grad_norm), log, losses)


def clipping_by_group(clip_log: pd.DataFrame, *, max_grad_norm: float, by: Sequence[str] = ("group",)
                      ) -> pd.DataFrame:
    """Per group (and any other ``by`` column of the log): examples seen, the clipped fraction
    ``P(‖g_i‖ > C)``, the mean clipping factor ``E[min(1, C/‖g_i‖)]`` (the share of its gradient an example
    keeps), and the median and mean gradient norm."""
    if not (isinstance(max_grad_norm, (int, float)) and 0 < max_grad_norm < math.inf):
        raise ValueError(f"max_grad_norm must be a finite number > 0, got {max_grad_norm!r}")
    missing = [c for c in ("norm", *by) if c not in clip_log.columns]
    if missing:
        raise KeyError(f"clip_log has no column(s) {missing}; it has {list(clip_log.columns)}")
    if clip_log.empty:
        raise ValueError("clip_log is empty (non-private training clips nothing)")
    norms = clip_log["norm"].to_numpy(dtype=float)
    if not np.isfinite(norms).all() or (norms < 0).any():
        raise ValueError("clip_log['norm'] must hold finite norms >= 0")
    frame = clip_log.assign(clipped=norms > max_grad_norm, kept=np.minimum(1.0, max_grad_norm / np.maximum(norms,
                                                                                                        1e-12)))
    return frame.groupby(list(by)).agg(examples=("norm", "size"), clipped_fraction=("clipped", "mean"),
                                       kept_share=("kept", "mean"), median_norm=("norm", "median"),
                                       mean_norm=("norm", "mean"))


@dataclasses.dataclass
class GapReport:
    """``by_group``: one row per (setting, group) — accuracy (mean over seeds) and its interval; ``gaps``: one
    row per setting — the gap ``accuracy(groups[0]) − accuracy(groups[1])``, its interval, and its change
    against the reference setting with that change's interval (paired: the same resampled test examples)."""

    by_group: pd.DataFrame
    gaps: pd.DataFrame
    groups: tuple
    reference: Hashable
    n_boot: int
    confidence: float


def accuracy_gaps(y_true, predictions: Mapping[Hashable, np.ndarray], *, sensitive_features,
                  groups: tuple[Hashable, Hashable], reference: Hashable | None = None, clusters=None,
                  n_boot: int = 1000, confidence: float = 0.95, seed: int = 0) -> GapReport:
    """Per-group accuracy and the gap between two groups for several settings, with bootstrap intervals.

    ``predictions[setting]``: predicted labels ``(n,)``, or ``(n_seeds, n)`` for several training seeds (the
    accuracy is their mean). Each bootstrap replicate resamples the test examples within each group (seeded)
    and evaluates **every** setting and seed on the same resample, so the change of the gap between settings
    is a paired comparison. ``reference`` (default: the first setting) is what the changes are measured against.

    ``clusters`` (optional, one id per example, e.g. the speaker's device): resample whole clusters within each
    group instead of single examples (a cluster bootstrap). Utterances of one speaker share the speaker's
    attributes and habits, so they are not independent; resampling them one by one would give intervals that
    are too narrow. Every cluster must lie in one group.
    """
    y_true = np.asarray(y_true)
    if y_true.ndim != 1 or len(y_true) == 0:
        raise ValueError(f"y_true must be a non-empty 1-D array of labels, got shape {y_true.shape}")
    if y_true.dtype.kind == "f" and not np.isfinite(y_true).all():
        raise ValueError("y_true contains NaN or infinite values")
    if not predictions:
        raise ValueError("predictions is empty: give at least one setting")
    check_bootstrap(n_boot, confidence)
    codes, levels = _group_codes(sensitive_features, len(y_true), "sensitive_features")
    if len(groups) != 2 or groups[0] == groups[1]:
        raise ValueError(f"groups must name two different groups (advantaged, disadvantaged), got {groups!r}")
    unknown = [g for g in groups if g not in levels]
    if unknown:
        raise ValueError(f"groups {unknown} do not occur in sensitive_features (present: {levels})")
    settings = list(predictions)
    reference = settings[0] if reference is None else reference
    if reference not in predictions:
        raise ValueError(f"reference {reference!r} is not one of the settings {settings}")
    correct = []
    for setting in settings:
        predicted = np.asarray(predictions[setting])
        predicted = predicted[None] if predicted.ndim == 1 else predicted
        if predicted.ndim != 2 or predicted.shape[1] != len(y_true) or predicted.shape[0] < 1:
            raise ValueError(f"predictions[{setting!r}] must have shape (n,) or (n_seeds, n) with n = {len(y_true)}, "
                             f"got {np.asarray(predictions[setting]).shape}")
        if predicted.dtype.kind == "f" and not np.isfinite(predicted).all():
            raise ValueError(f"predictions[{setting!r}] contains NaN or infinite values")
        correct.append((predicted == y_true).mean(axis=0))  # per example: share of seeds that got it right
    hits = np.stack(correct)  # (settings, n)
    strata = [np.flatnonzero(codes == g) for g in range(len(levels))]
    if clusters is not None:
        cluster_codes, _ = _group_codes(clusters, len(y_true), "clusters")
        mixed = pd.Series(codes).groupby(cluster_codes).nunique()
        if (mixed > 1).any():
            raise ValueError(f"clusters {mixed.index[mixed > 1].tolist()[:5]} span several groups; each cluster "
                             "(e.g. a device) must belong to one group")
        members = pd.Series(np.arange(len(y_true))).groupby(cluster_codes).indices  # cluster -> its rows
        cluster_strata = [np.unique(cluster_codes[rows]) for rows in strata]
    one_hot = np.eye(len(levels))[codes]  # (n, G)

    def per_group(index: np.ndarray) -> np.ndarray:  # (settings, G) accuracy on the rows ``index``
        return hits[:, index] @ one_hot[index] / one_hot[index].sum(0)

    first, second = levels.index(groups[0]), levels.index(groups[1])
    point = per_group(np.arange(len(y_true)))
    if clusters is None:
        resamples = bootstrap_indices(strata, n_boot=n_boot, seed=seed)
    else:
        resamples = (np.concatenate([members[c] for c in chosen])
                     for chosen in bootstrap_indices(cluster_strata, n_boot=n_boot, seed=seed))
    replicates = np.stack([per_group(index) for index in resamples])
    alpha = (1 - confidence) / 2
    low, high = np.quantile(replicates, alpha, axis=0), np.quantile(replicates, 1 - alpha, axis=0)
    by_group = pd.DataFrame([{"setting": s, "group": g, "accuracy": point[i, j], "low": low[i, j],
                              "high": high[i, j]} for i, s in enumerate(settings) for j, g in enumerate(levels)])
    gap, gap_replicates = point[:, first] - point[:, second], replicates[:, :, first] - replicates[:, :, second]
    r = settings.index(reference)
    change, change_replicates = gap - gap[r], gap_replicates - gap_replicates[:, [r]]
    gaps = pd.DataFrame({"setting": settings, "gap": gap, "low": np.quantile(gap_replicates, alpha, axis=0),
                         "high": np.quantile(gap_replicates, 1 - alpha, axis=0), "change": change,
                         "change_low": np.quantile(change_replicates, alpha, axis=0),
                         "change_high": np.quantile(change_replicates, 1 - alpha, axis=0)})
    return GapReport(by_group, gaps, tuple(groups), reference, n_boot, confidence)


__all__ = ["GapReport", "GroupPoissonBatches", "GroupedPrivateTraining", "accuracy_gaps", "clipping_by_group",
           "group_sample_rates", "train_private_by_group"]
