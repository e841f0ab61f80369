"""Server-side aggregation as pure functions: tensors in, tensors out, no hidden state.

- ``weighted_average``: FedAvg's ``w_{t+1} = Σ_i a_i w^{(i)}`` (McMahan et al. 2017);
- ``clip_update``: ``Δ · min(1, C/‖Δ‖₂)``, Flower's ``compute_clip_model_update``;
- ``noised_clipped_mean``: DP-FedAvg's ``w_t + (Σ_k clip(Δ_k) + N(0, σ²C²)) / (qK)`` (McMahan et al. 2018);
- ``adam_server_step``: FedOpt's server Adam on the pseudo-gradient ``Δ_t = w̄ − w_t`` (Reddi et al. 2021,
  "Adaptive Federated Optimization"), written as Flower's ``FedAdam.aggregate_train`` computes it — including
  its bias correction with exponent ``t + 1`` — so that the two agree on the same inputs (tested).

The plans in ``trustml.federated.plans`` call these; so can anyone who wants one step by hand.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import torch


def _check_updates(params: torch.Tensor, updates: Sequence[torch.Tensor]) -> None:
    if not len(updates):
        raise ValueError("updates must hold at least one device's model")
    for k, update in enumerate(updates):
        if update.shape != params.shape:
            raise ValueError(f"updates[{k}] has shape {tuple(update.shape)}, the global model {tuple(params.shape)}")


def weighted_average(updates: Sequence[torch.Tensor], weights: Sequence[float] | np.ndarray) -> torch.Tensor:
    """Σ_i a_i w^{(i)} for weights ``a`` that sum to 1 (FedAvg's aggregate of the returned models)."""
    if not len(updates):
        raise ValueError("updates must hold at least one device's model")
    a = np.asarray(weights, dtype=np.float64)
    if a.ndim != 1 or len(a) != len(updates) or len(a) == 0:
        raise ValueError(f"weights must be one number per update ({len(updates)}), got shape {a.shape}")
    if not np.all(np.isfinite(a)) or np.any(a < 0) or not math.isclose(a.sum(), 1.0, rel_tol=1e-9, abs_tol=1e-9):
        raise ValueError(f"weights must be finite, >= 0 and sum to 1, got sum {a.sum()!r}")
    _check_updates(updates[0], updates)
    total = torch.zeros_like(updates[0])
    for update, weight in zip(updates, a):
        total += update * float(weight)
    return total


def clip_update(update: torch.Tensor, max_grad_norm: float) -> torch.Tensor:
    """Δ · min(1, C/‖Δ‖₂) — as Flower's ``compute_clip_model_update``."""
    if not max_grad_norm > 0 or not math.isfinite(max_grad_norm):
        raise ValueError(f"max_grad_norm must be a finite number > 0, got {max_grad_norm}")
    norm = torch.linalg.vector_norm(update).item()
    if not math.isfinite(norm):
        raise ValueError("the update holds NaN or inf: local training diverged")
    return update * min(1.0, max_grad_norm / norm) if norm > 0 else update


def noised_clipped_mean(params: torch.Tensor, updates: Sequence[torch.Tensor], *, noise_multiplier: float,
                        max_grad_norm: float, expected_devices: float, generator: torch.Generator) -> torch.Tensor:
    """DP-FedAvg's server step: ``w_t + (Σ_k clip(w^{(k)} − w_t) + N(0, σ²C²)) / (qK)``.

    ``updates`` are the returned models (possibly none: a Poisson sample can be empty, and the noise is added
    anyway); ``expected_devices`` is the fixed denominator qK. The sum's sensitivity is C (one device in or
    out), so the released model is the sampled Gaussian mechanism the accountant composes.
    """
    if not noise_multiplier >= 0 or not math.isfinite(noise_multiplier):
        raise ValueError(f"noise_multiplier must be a finite number >= 0, got {noise_multiplier}")
    if not expected_devices > 0:
        raise ValueError(f"expected_devices must be > 0, got {expected_devices}")
    total = torch.zeros_like(params)
    for k, update in enumerate(updates):
        if update.shape != params.shape:
            raise ValueError(f"updates[{k}] has shape {tuple(update.shape)}, the global model {tuple(params.shape)}")
        total += clip_update(update - params, max_grad_norm)
    noise = torch.normal(0.0, noise_multiplier * max_grad_norm, params.shape, generator=generator)
    return params + (total + noise) / expected_devices


@dataclasses.dataclass(frozen=True)
class AdamMoments:
    """The server optimiser's state: first and second moments of the pseudo-gradient."""

    m: torch.Tensor
    v: torch.Tensor


def adam_server_step(params: torch.Tensor, averaged: torch.Tensor, moments: AdamMoments | None, *,
                     server_round: int, eta: float, beta_1: float, beta_2: float, tau: float
                     ) -> tuple[torch.Tensor, AdamMoments]:
    """One FedAdam server step from the averaged model ``w̄`` (Reddi et al. 2021, Algorithm 2):

    Δ_t = w̄ − w_t,  m_t = β₁ m_{t−1} + (1 − β₁) Δ_t,  v_t = β₂ v_{t−1} + (1 − β₂) Δ_t²,
    w_{t+1} = w_t + η_t m_t / (√v_t + τ),  η_t = η √(1 − β₂^{t+1}) / (1 − β₁^{t+1})

    (the bias-corrected step of Flower's ``FedAdam``; moments start at 0). Returns the new model and moments.
    """
    if isinstance(server_round, bool) or not isinstance(server_round, (int, np.integer)) or server_round < 1:
        raise ValueError(f"server_round must be an int >= 1, got {server_round!r}")
    if averaged.shape != params.shape:
        raise ValueError(f"averaged has shape {tuple(averaged.shape)}, the global model {tuple(params.shape)}")
    delta = averaged - params
    m = torch.zeros_like(params) if moments is None else moments.m
    v = torch.zeros_like(params) if moments is None else moments.v
    m = beta_1 * m + (1 - beta_1) * delta
    v = beta_2 * v + (1 - beta_2) * delta.square()
    step = eta * math.sqrt(1 - beta_2 ** (server_round + 1.0)) / (1 - beta_1 ** (server_round + 1.0))
    return params + step * m / (v.sqrt() + tau), AdamMoments(m, v)


__all__ = ["AdamMoments", "adam_server_step", "clip_update", "noised_clipped_mean", "weighted_average"]
