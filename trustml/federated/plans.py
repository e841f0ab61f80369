"""What a federated round does around local training: a **plan** samples the devices and aggregates their models.

The round loop (``trustml.federated.simulate.run_rounds``) is the same for every method; the method is the plan,
and features are wrappers around a plan — as Flower's ``DifferentialPrivacyServerSideFixedClipping`` and
``FedAdam`` wrap or extend ``FedAvg``:

- ``FedAvgPlan(selection)``: draw devices with a ``Selection`` (uniform, ∝ n^γ, top-m) and average their models
  with its aggregation weights;
- ``DeviceDPPlan(plan, dp)``: DP-FedAvg (McMahan et al. 2018). Replaces the inner plan's sampling by Poisson
  sampling with rate q = m/K and its aggregation by the clipped, noised mean with the fixed denominator qK.
  Only an inner plan with uniform selection is accepted (the accountant's q is the probability of taking part);
- ``FedOptPlan(plan, server)``: FedOpt (Reddi et al. 2021): the inner plan's aggregate becomes a pseudo-gradient
  for a server optimiser (``ServerAdam``: FedAdam). Composes with DP (post-processing of the private mean).

A plan is a frozen configuration; what changes during a run (the server optimiser's moments) is the ``state`` the
loop threads through ``aggregate`` — so one plan can be reused for many runs without leaking state between them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch

from trustml.federated.aggregation import AdamMoments, adam_server_step, noised_clipped_mean, weighted_average
from trustml.federated.selection import Selection, check_devices_per_round, collapse


class Plan(Protocol):
    """Sampling and aggregation of one federated round (the parts of a Flower strategy around ``train``)."""

    def check(self, counts: np.ndarray, devices_per_round: int) -> None:
        """Raise a clear error if this plan cannot run ``devices_per_round`` devices per round on ``counts``."""

    def sample(self, counts: np.ndarray, devices_per_round: int, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray]:
        """The devices that train this round (unique) and their aggregation weights."""

    def aggregate(self, params: torch.Tensor, models: Sequence[torch.Tensor], weights: np.ndarray, *,
                  server_round: int, devices_per_round: int, rng: np.random.Generator, state: Any
                  ) -> tuple[torch.Tensor, Any]:
        """The next global model from the returned ``models`` (and the plan's new state); ``devices_per_round``
        is the m the run asked for (DP-FedAvg divides by it even when the Poisson sample is smaller)."""


@dataclasses.dataclass(frozen=True)
class FedAvgPlan:
    """FedAvg with a device ``Selection``: ``w_{t+1} = Σ_i a_i w^{(i)}`` with the selection's weights ``a``."""

    selection: Selection = Selection("uniform")

    def check(self, counts: np.ndarray, devices_per_round: int) -> None:
        check_devices_per_round(devices_per_round, int(np.count_nonzero(counts)), replace=self.selection.replace)

    def sample(self, counts, devices_per_round, rng):
        drawn = self.selection.select(counts, devices_per_round, rng)
        return collapse(drawn, self.selection.weights(drawn, counts))

    def aggregate(self, params, models, weights, *, server_round, devices_per_round, rng, state):
        return weighted_average(models, weights), state


@dataclasses.dataclass(frozen=True)
class DeviceDP:
    """Device-level DP for FedAvg: clip each update to ``max_grad_norm`` (C) and add N(0, σ²C²) to the sum."""

    noise_multiplier: float
    max_grad_norm: float

    def __post_init__(self) -> None:
        for name in ("noise_multiplier", "max_grad_norm"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if not self.noise_multiplier >= 0:
            raise ValueError(f"noise_multiplier must be >= 0 (0 = clipping only, no privacy), got "
                             f"{self.noise_multiplier}")
        if not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0, got {self.max_grad_norm}")


@dataclasses.dataclass(frozen=True)
class DeviceDPPlan:
    """DP-FedAvg around a uniform ``FedAvgPlan``: Poisson sampling with q = m/K, clipped and noised mean over qK.

    Devices without data can be sampled (the sampling must not look at the data); they return the global model
    unchanged, a zero update.
    """

    inner: FedAvgPlan
    dp: DeviceDP

    def __post_init__(self) -> None:
        if not isinstance(self.inner, FedAvgPlan) or self.inner.selection.scheme != "uniform":
            scheme = getattr(getattr(self.inner, "selection", None), "scheme", type(self.inner).__name__)
            raise ValueError("dp: device-level DP accounting needs uniform (Poisson) device sampling; "
                             f"got selection scheme {scheme!r}")

    def check(self, counts, devices_per_round):
        check_devices_per_round(devices_per_round, len(counts), replace=False)

    def sample(self, counts, devices_per_round, rng):
        q = devices_per_round / len(counts)
        devices = np.flatnonzero(rng.random(len(counts)) < q)
        return devices, np.full(len(devices), 1.0 / devices_per_round)

    def aggregate(self, params, models, weights, *, server_round, devices_per_round, rng, state):
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        return noised_clipped_mean(params, models, noise_multiplier=self.dp.noise_multiplier,
                                   max_grad_norm=self.dp.max_grad_norm, generator=generator,
                                   expected_devices=devices_per_round), state


@dataclasses.dataclass(frozen=True)
class ServerAdam:
    """FedAdam's server optimiser (Reddi et al. 2021), with Flower's ``FedAdam`` names and defaults."""

    eta: float = 0.1
    beta_1: float = 0.9
    beta_2: float = 0.99
    tau: float = 1e-3

    def __post_init__(self) -> None:
        if not (math.isfinite(self.eta) and self.eta > 0):
            raise ValueError(f"eta (server learning rate) must be a finite number > 0, got {self.eta}")
        for name in ("beta_1", "beta_2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not (math.isfinite(self.tau) and self.tau > 0):
            raise ValueError(f"tau (adaptivity) must be a finite number > 0, got {self.tau}")


@dataclasses.dataclass(frozen=True)
class FedOptPlan:
    """FedOpt around any plan: its aggregate w̄ gives the pseudo-gradient w̄ − w_t of a server ``ServerAdam`` step."""

    inner: Plan
    server: ServerAdam = ServerAdam()

    def check(self, counts, devices_per_round):
        self.inner.check(counts, devices_per_round)

    def sample(self, counts, devices_per_round, rng):
        return self.inner.sample(counts, devices_per_round, rng)

    def aggregate(self, params, models, weights, *, server_round, devices_per_round, rng, state):
        inner_state, moments = state if state is not None else (None, None)
        averaged, inner_state = self.inner.aggregate(params, models, weights, server_round=server_round,
                                                     devices_per_round=devices_per_round, rng=rng, state=inner_state)
        new, moments = adam_server_step(params, averaged, moments, server_round=server_round,
                                        eta=self.server.eta, beta_1=self.server.beta_1, beta_2=self.server.beta_2,
                                        tau=self.server.tau)
        return new, (inner_state, moments)


def make_plan(selection: Selection = Selection("uniform"), *, dp: DeviceDP | None = None,
              server_optimizer: ServerAdam | None = None) -> Plan:
    """FedAvg with ``selection``, wrapped in DP-FedAvg if ``dp`` and in FedOpt if ``server_optimizer``."""
    plan: Plan = FedAvgPlan(selection)
    if dp is not None:
        plan = DeviceDPPlan(FedAvgPlan(selection), dp)
    if server_optimizer is not None:
        plan = FedOptPlan(plan, server_optimizer)
    return plan


__all__ = ["AdamMoments", "DeviceDP", "DeviceDPPlan", "FedAvgPlan", "FedOptPlan", "Plan", "ServerAdam", "make_plan"]
