"""DP-SGD (Abadi et al. 2016) around any optimizer, on the fast clipping engine (eDP-SGD).

One step: clip each unit's gradient (an example, or a micro-batch's mean), sum, add N(0, σ²Δ²) per
coordinate, divide by the expected number of units, hand the result to the optimizer (SGD, Adam, ...),
and record (σ, q) with an Opacus accountant. Δ is the sensitivity of the clipped sum to adding or
removing one example: C for per-example clipping, 2C for micro-batch clipping (the example's
micro-batch mean can swing from one clipped vector to another; see :data:`SENSITIVITY`).

    dp = DPSGD(model, torch.optim.Adam(model.parameters(), lr=1e-2), max_grad_norm=1.0,
               target_epsilon=4.0, delta=1e-5, epochs=3)
    for inputs, labels in dp.poisson_loader(train, batch_size=256):
        dp.step(F.cross_entropy(model(inputs), labels, reduction="none"))
    dp.epsilon()
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import warnings
from collections.abc import Mapping, Sized
from typing import cast

import torch
from opacus.accountants import create_accountant
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from trustml.privacy.accounting import (
    check_accountant, epsilon_of_history, get_epsilon, get_noise_multiplier, noise_schedule, steps_per_epoch,
)
from trustml.privacy.engine import ClippingEngine, ClipStats
from trustml.privacy.sampling import PoissonBatches
from trustml.privacy.validation import check_delta, check_epochs, check_positive, check_sample_rate

#: Sensitivity of the clipped sum, in units of C, under add/remove-one adjacency.
#: Micro-batch: adding x to a non-empty micro-batch changes clip(mean) by up to 2C (‖clip(a) − clip(b)‖ ≤ 2C).
SENSITIVITY = {"per_example": 1.0, "micro_batch": 2.0}


def _written_grad(p: torch.Tensor) -> torch.Tensor:
    if p.grad is None:  # the engine writes every parameter it clips; noise must never skip one
        raise RuntimeError(f"no clipped gradient was written for a parameter of shape {tuple(p.shape)}")
    return p.grad


class PoissonSamplingRequired(RuntimeError):
    """ε was requested for training whose batches were not all Poisson-sampled."""


class PrivacyBudgetExceeded(UserWarning):
    """Training runs (or ran) past the steps its target ε was calibrated for: it spends more than the target."""



def resolve_sample_rate(*, expected: tuple[str, float | None], sample_rate: float | None,
                        population: tuple[str, int]) -> float:
    """Poisson rate q: the expected batch over the population (``expected`` and ``population`` are (name,
    value) pairs, named in errors), or ``sample_rate`` itself; exactly one of the two."""
    (expected_name, count), (population_name, size) = expected, population
    if (count is None) == (sample_rate is None):
        raise ValueError(f"pass exactly one of {expected_name} (expected) and sample_rate")
    if count is not None:
        check_positive(expected_name, count)
        if count > size:
            raise ValueError(f"{expected_name} must be <= {population_name} = {size}, got {count}")
        sample_rate = count / size
    return check_sample_rate(sample_rate)

class DPSGD:
    """Differentially private training of ``model`` with ``optimizer`` (see the module docstring).

    Give exactly one of ``noise_multiplier`` (σ) and ``target_epsilon`` (then also ``delta`` and
    ``epochs``; σ is found when :meth:`poisson_loader` fixes q). ``noise_decay`` γ multiplies σ by γ after
    every epoch (σ_e = σ₀γ^e) and the accountant records every step's σ.
    """

    #: The method that draws the sampled batches the accountant assumes.
    sampled_loader = "poisson_loader"

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, max_grad_norm: float,
                 noise_multiplier: float | None = None, target_epsilon: float | None = None,
                 delta: float | None = None, epochs: float | None = None, noise_decay: float = 1.0,
                 mode: str = "per_example", micro_batch_size: int | None = None, clipping: str = "flat",
                 layer_max_grad_norms: Mapping[str, float] | None = None, strategy: str = "bookkeeping",
                 accountant: str = "rdp", seed: int | None = None):
        if (noise_multiplier is None) == (target_epsilon is None):
            raise ValueError("pass exactly one of noise_multiplier and target_epsilon")
        if noise_multiplier is not None:
            check_positive("noise_multiplier", noise_multiplier)
        else:
            check_positive("target_epsilon", target_epsilon)
            if delta is None or epochs is None:
                raise ValueError("target_epsilon needs delta and epochs (σ is chosen to spend it in that many epochs)")
            check_epochs(epochs)
        if delta is not None:
            check_delta(delta)
        self.noise_decay = check_positive("noise_decay", noise_decay)
        self.model, self.optimizer = model, optimizer
        self.engine = ClippingEngine(model, max_grad_norm=max_grad_norm, mode=mode, micro_batch_size=micro_batch_size,
                                     clipping=clipping, layer_max_grad_norms=layer_max_grad_norms, strategy=strategy)
        self.max_grad_norm, self.mode = float(max_grad_norm), mode
        self.sensitivity = SENSITIVITY[mode] * self.max_grad_norm
        self.noise_multiplier, self.target_epsilon = noise_multiplier, target_epsilon
        self.delta, self.epochs = delta, epochs
        self.accountant_name = check_accountant(accountant)
        self.accountant = create_accountant(mechanism=accountant)
        self.sample_rate: float | None = None
        self.dataset_size: int | None = None
        self.steps_per_epoch: int | None = None
        self.steps_taken, self.unsampled_steps = 0, 0
        self.planned_steps: int | None = None  # steps σ was calibrated for (with target_epsilon)
        self._budget_warned: set[str] = set()  # "planned" (a loader's forecast), "spent" (steps taken)
        self._poisson_pending = False
        self._seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}

    # ------------------------------------------------------------------ data
    def poisson_loader(self, dataset: Dataset, *, batch_size: float | None = None, sample_rate: float | None = None,
                       epochs: float | None = None, steps: int | None = None,
                       seed: int | None = None) -> PoissonBatches:
        """Poisson-sampled batches of ``dataset`` with rate q = ``batch_size``/N (or ``sample_rate``).

        Runs ``steps`` steps, or ``epochs`` × ⌊1/q⌋ (default: the ``epochs`` given to the constructor).
        Fixes q and N for the accountant and, with a target ε, the noise multiplier.
        """
        n = len(cast(Sized, dataset))  # a map-style dataset with __len__
        q = resolve_sample_rate(expected=("batch_size", batch_size), sample_rate=sample_rate,
                                population=("len(dataset)", n))
        steps = self._fix_sampling(q, n, epochs=epochs, steps=steps)
        return PoissonBatches(dataset, sample_rate=q, steps=steps,
                              seed=self._seed if seed is None else seed, on_batch=self._mark_poisson)

    def _fix_sampling(self, q: float, n: int, *, epochs: float | None, steps: int | None) -> int:
        """Fix the sample rate q of the n sampling units for the accountant (and σ, with a target ε); return the
        loader's number of steps (``steps``, or ``epochs`` × ⌊1/q⌋) and warn if they overrun the budget."""
        if self.sample_rate is not None and self.steps_taken and (q != self.sample_rate or n != self.dataset_size):
            raise ValueError("the sample rate and dataset are fixed once training has started")
        self.sample_rate, self.dataset_size, self.steps_per_epoch = q, n, steps_per_epoch(q)
        if self.delta is not None:
            check_delta(self.delta, n)
        if steps is None:
            epochs = self.epochs if epochs is None else epochs
            if epochs is None:
                raise ValueError("pass epochs or steps (or epochs to the constructor)")
            steps = max(1, round(check_epochs(epochs) * self.steps_per_epoch))
        if self.target_epsilon is not None and self.noise_multiplier is None:
            if self.epochs is None or self.delta is None:  # the constructor requires both with target_epsilon
                raise RuntimeError("target_epsilon needs delta and epochs")
            self.planned_steps = max(1, round(self.epochs * self.steps_per_epoch))
            self.noise_multiplier = get_noise_multiplier(
                target_epsilon=self.target_epsilon, sample_rate=q, delta=self.delta, steps=self.planned_steps,
                accountant=self.accountant_name, noise_decay=self.noise_decay)
        if self.planned_steps is not None and self.steps_taken + steps > self.planned_steps:
            assert self.noise_multiplier is not None and self.delta is not None  # both set with target_epsilon
            schedule = noise_schedule(self.noise_multiplier, steps=self.steps_taken + steps,
                                      steps_per_epoch=self.steps_per_epoch, noise_decay=self.noise_decay)
            self._check_budget(get_epsilon(noise_multiplier=schedule, sample_rate=q, delta=self.delta,
                                           accountant=self.accountant_name),
                               "planned", f"this loader runs {steps} steps after {self.steps_taken} taken, ")
        return steps

    def _mark_poisson(self) -> None:
        self._poisson_pending = True

    def _check_budget(self, epsilon: float, kind: str, what: str = "") -> None:
        """Warn (once per ``kind``) when ``epsilon`` exceeds the target σ was calibrated for."""
        if self.target_epsilon is None or epsilon <= self.target_epsilon or kind in self._budget_warned:
            return
        self._budget_warned.add(kind)
        verb = "will exceed" if kind == "planned" else "exceeds"
        warnings.warn(f"{what}ε = {epsilon:.3g} {verb} target_epsilon = {self.target_epsilon:g}: σ was calibrated for "
                      f"{self.planned_steps} steps ({self.epochs:g} epochs of ⌊1/q⌋ = {self.steps_per_epoch} "
                      "steps); train fewer steps or pass the real number of epochs to DPSGD",
                      PrivacyBudgetExceeded, stacklevel=3)

    # ------------------------------------------------------------------ the step
    @property
    def current_noise_multiplier(self) -> float:
        """σ of the next step: σ₀ · γ^epoch."""
        if self.noise_multiplier is None:
            raise RuntimeError("σ is not known yet: with target_epsilon, create the loader with poisson_loader() first")
        if self.noise_decay == 1.0:
            return self.noise_multiplier
        if self.steps_per_epoch is None:
            raise RuntimeError("noise_decay needs epochs: create the loader with poisson_loader() first")
        return self.noise_multiplier * self.noise_decay ** (self.steps_taken // self.steps_per_epoch)

    @property
    def noise_std(self) -> float:
        """Std of the Gaussian noise added to the clipped sum: σ·Δ."""
        return self.current_noise_multiplier * self.sensitivity

    def expected_units(self, batch_size: int) -> float:
        """The divisor of the noisy sum: the expected batch size qN (or the number of micro-batches)."""
        expected = (self.sample_rate * self.dataset_size if self.sample_rate is not None and self.dataset_size
                    else batch_size)
        if self.engine.micro_batch_size is not None:  # micro_batch mode
            return float(max(1, math.ceil(expected / self.engine.micro_batch_size)))
        return float(expected)

    def _generator(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            generator = torch.Generator(device=device)
            if self._seed is None:
                generator.seed()
            else:
                generator.manual_seed(self._seed + 1)
            self._generators[device] = generator
        return self._generators[device]

    def privatize(self, losses: torch.Tensor) -> ClipStats:
        """Replace every ``p.grad`` by the noisy mean clipped gradient of this batch and record the step."""
        sigma, batch = self.current_noise_multiplier, losses.shape[0] if losses.dim() else 0
        if batch == 0 and losses.dim() == 1 and not self._poisson_pending:
            raise ValueError("empty batch: only a Poisson-sampled batch (DPSGD.poisson_loader) may be empty, where "
                             "the step adds pure noise divided by the expected batch size qN; pass at least one "
                             "example")
        stats = self.engine.clipped_sum(losses, groups=self._clipping_groups(batch, losses.device))
        divisor = self.expected_units(batch)
        with torch.no_grad():
            # each parameter once: a tied parameter gets one noise draw and one division
            self._noise_and_average([_written_grad(p) for p in self.engine.parameters()],
                                    std=sigma * self.sensitivity, divisor=divisor)
        if self._poisson_pending:
            self.accountant.step(noise_multiplier=sigma, sample_rate=self.sample_rate)
        else:
            self.unsampled_steps += 1
        self._poisson_pending = False
        self.steps_taken += 1
        if self.planned_steps is not None and self.steps_taken == self.planned_steps + 1 and not self.unsampled_steps:
            self._check_budget(self._spent(self.delta), "spent", f"after {self.steps_taken} steps, ")
        return stats

    def _clipping_groups(self, batch: int, device: torch.device) -> torch.Tensor | None:
        """The unit each row is clipped in: None (each example), or random micro-batches."""
        if self.mode != "micro_batch":
            return None
        return self.engine.micro_batch_groups(batch, n_groups=int(self.expected_units(batch)),
                                              generator=self._generator(torch.device("cpu")), device=device)

    def _add_noise(self, grads: list[torch.Tensor], *, std: float) -> None:
        noises = [torch.randn(g.shape, generator=self._generator(g.device), device=g.device, dtype=g.dtype)
                  for g in grads]
        torch._foreach_add_(grads, noises, alpha=std)  # one call for all parameters

    def _noise_and_average(self, grads: list[torch.Tensor], *, std: float, divisor: float) -> None:
        """Clipped sums -> (sum + N(0, std²)) / divisor, in place (multi-process training also all-reduces)."""
        self._add_noise(grads, std=std)
        torch._foreach_div_(grads, divisor)

    def step(self, losses: torch.Tensor) -> ClipStats:
        """One DP-SGD step from the (B,) per-example ``losses`` of the last forward pass."""
        stats = self.privatize(losses)
        self.optimizer.step()
        return stats

    # ------------------------------------------------------------------ accounting
    @property
    def history(self) -> list[tuple[float, float, int]]:
        """The accountant's history: ``[(σ, q, steps), ...]``."""
        return list(self.accountant.history)

    def epsilon(self, delta: float | None = None) -> float:
        """ε spent so far at ``delta`` (default: the constructor's), from the Opacus accountant."""
        delta = self.delta if delta is None else delta
        if delta is None:
            raise ValueError("pass delta (or give delta to the constructor)")
        check_delta(delta, self.dataset_size)
        if self.unsampled_steps:
            raise PoissonSamplingRequired(
                f"{self.unsampled_steps} of {self.steps_taken} steps used batches that were not Poisson-sampled; the "
                "accountants assume Poisson sampling, so no ε is reported (draw batches with "
                f"{type(self).__name__}.{self.sampled_loader})")
        epsilon = self._spent(delta)
        if delta == self.delta:
            self._check_budget(epsilon, "spent")
        return epsilon

    def _spent(self, delta) -> float:
        # Through epsilon_of_history: PRV's grid is bounded there (RDP answers, with a warning, beyond it).
        return epsilon_of_history(self.accountant.history, delta=delta, accountant=self.accountant_name)

    def detach(self) -> nn.Module:
        """Remove the engine's hooks and return the (trained) model."""
        self.engine.remove()
        return self.model


@dataclasses.dataclass
class PrivateTraining:
    """Result of :func:`train_private`."""

    model: nn.Module
    epsilon: float  # the accountant's ε at ``delta`` (inf for non-private training)
    delta: float
    noise_multiplier: float  # σ₀ (0 for non-private training)
    sample_rate: float
    steps: int
    accountant: str
    history: list[tuple[float, float, int]]  # the accountant's (σ, q, steps) entries
    losses: list[float]  # mean training loss per epoch
    mode: str = "per_example"
    noise_decay: float = 1.0

    def summary(self) -> dict:
        return {"epsilon": self.epsilon, "delta": self.delta, "noise_multiplier": self.noise_multiplier,
                "sample_rate": self.sample_rate, "steps": self.steps, "accountant": self.accountant, "mode": self.mode,
                "noise_decay": self.noise_decay, "final_loss": self.losses[-1] if self.losses else float("nan")}


def fit_sampled(model: nn.Module, loader, *, update, progress: bool = False, on_epoch_end=None) -> list[float]:
    """Train on one pass of a sampled ``loader`` (Poisson batches, or sampled users) with ``update`` (``dp.step``
    or a plain gradient step); the loss history has one entry per epoch of ⌊1/q⌋ steps."""
    from trustml.models.training import classification_loss, fit

    per_epoch = steps_per_epoch(loader.sample_rate)
    steps = iter(loader)
    return fit(model, lambda epoch: itertools.islice(steps, per_epoch),
               loss=classification_loss(next(model.parameters()).device), update=update,
               epochs=math.ceil(len(loader) / per_epoch), progress=progress, desc="epochs",
               on_epoch_end=on_epoch_end)


def train_private(model: nn.Module, dataset: TensorDataset, *, epsilon: float | None = None,
                  noise_multiplier: float | None = None, delta: float = 1e-5, epochs: float = 3,
                  batch_size: int = 256, lr: float = 1e-2, optimizer: str = "adam", max_grad_norm: float = 1.0,
                  mode: str = "per_example", micro_batch_size: int | None = None, clipping: str = "flat",
                  noise_decay: float = 1.0, accountant: str = "rdp", seed: int = 0,
                  progress: bool = False) -> PrivateTraining:
    """Train a classifier on ``(input_ids, labels)`` with DP-SGD at privacy budget ``epsilon`` (or a fixed σ).

    ``epsilon=math.inf`` trains without clipping or noise on the same Poisson-sampled batches (the
    non-private reference). Returns the model (hooks removed, eval mode) and the accountant's ε.
    """
    from trustml.models.training import gradient_step, make_optimizer

    if (epsilon is None) == (noise_multiplier is None):
        raise ValueError("pass exactly one of epsilon and noise_multiplier")
    check_delta(delta, len(dataset))
    torch.manual_seed(seed)
    opt = make_optimizer(optimizer, model.parameters(), lr=lr)
    private = not (epsilon is not None and math.isinf(epsilon) and epsilon > 0)
    if private:
        dp = DPSGD(model, opt, max_grad_norm=max_grad_norm, noise_multiplier=noise_multiplier,
                   target_epsilon=epsilon, delta=delta, epochs=epochs, noise_decay=noise_decay, mode=mode,
                   micro_batch_size=micro_batch_size, clipping=clipping, accountant=accountant, seed=seed)
        loader = dp.poisson_loader(dataset, batch_size=batch_size, epochs=epochs, seed=seed)
    else:
        check_epochs(epochs)
        q = batch_size / len(dataset)
        loader = PoissonBatches(dataset, sample_rate=q, steps=max(1, round(epochs * steps_per_epoch(q))), seed=seed)
    try:
        losses = fit_sampled(model, loader, update=dp.step if private else gradient_step(opt), progress=progress)
    finally:
        if private:
            dp.detach()
    if private:
        if dp.noise_multiplier is None or dp.sample_rate is None:  # poisson_loader fixed both before training
            raise RuntimeError("training ended without a noise multiplier and sample rate")
        return PrivateTraining(model, dp.epsilon(delta), delta, dp.noise_multiplier, dp.sample_rate, dp.steps_taken,
                               accountant, dp.history, losses, mode, noise_decay)
    return PrivateTraining(model, math.inf, delta, 0.0, loader.sample_rate, len(loader), accountant, [], losses,
                           "non_private", 1.0)

