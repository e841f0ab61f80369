"""Privacy accounting for DP-SGD through Opacus' accountants (RDP and PRV), including per-step σ.

DP-SGD with Poisson sampling rate q and noise multiplier σ_t at step t is a composition of
Sampled Gaussian Mechanisms. The accountants bound its (ε, δ):

- ``"rdp"``: Rényi DP of the Sampled Gaussian Mechanism, composed additively over steps and converted
  to (ε, δ) (Mironov 2017; Mironov, Talwar & Zhang 2019);
- ``"prv"``: numerical composition of privacy-loss random variables by FFT (Gopi, Lee & Wutschitz 2021),
  tighter than RDP.

A schedule of σ (e.g. epoch-wise decay σ_e = σ₀γ^e) is passed as one σ per step; consecutive equal
values are grouped into the accountant's ``(σ, q, steps)`` history.

PRV's limits. PRV discretises the privacy loss on a grid whose half-width L is RDP's ε at a tiny δ and whose
mesh shrinks like 1/√steps (Gopi et al. 2021, §5). For small σ the loss is huge (L grows like 1/σ²): at σ = 0.1,
q = 0.01 and 1000 steps the grid has ~2·10⁸ points per history entry, minutes of FFTs and over 10 GB. The grid
size is computed first (in milliseconds, from Opacus' own domain rule); above :data:`MAX_PRV_GRID_POINTS` the
ε comes from RDP instead — a valid but looser upper bound for the same history — and a
:class:`PRVFallbackWarning` says so.
"""

from __future__ import annotations

import functools
import itertools
import math
import warnings
from collections.abc import Sequence

import numpy as np
from opacus.accountants import create_accountant
from opacus.accountants.analysis.prv import PoissonSubsampledGaussianPRV, compute_safe_domain_size
from opacus.accountants.utils import get_noise_multiplier as _opacus_noise_multiplier

from trustml.privacy.validation import check_delta, check_epochs, check_positive, check_sample_rate, check_steps

ACCOUNTANTS = ("rdp", "prv")
MAX_NOISE_MULTIPLIER = 1e4
#: Largest PRV discretisation (grid points summed over the history's entries) computed: about 1 s and
#: 0.35 GB on one laptop core. Beyond it :func:`epsilon_of_history` answers with RDP and warns.
MAX_PRV_GRID_POINTS = 2_000_000
PRV_EPS_ERROR = 0.01  # Opacus' defaults for PRVAccountant.get_epsilon: ε error, and δ error = δ/1000
PRV_DELTA_ERROR_FRACTION = 1e-3

Entry = tuple[float, float, int]


class PRVFallbackWarning(UserWarning):
    """The PRV accountant's grid would be too large; the ε reported is RDP's (valid, looser)."""


def check_accountant(accountant: str) -> str:
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {accountant!r}")
    return accountant


def steps_per_epoch(sample_rate: float) -> int:
    """Steps in one epoch of Poisson sampling: ⌊1/q⌋ (an expected pass over the data, as Opacus)."""
    return max(1, int(1 / check_sample_rate(sample_rate)))


def noise_schedule(noise_multiplier: float, *, steps: int, steps_per_epoch: int, noise_decay: float = 1.0
                   ) -> list[float]:
    """Per-step σ for epoch-wise decay: σ_t = σ₀ · γ^⌊t / steps_per_epoch⌋ (γ = ``noise_decay``)."""
    check_positive("noise_multiplier", noise_multiplier)
    check_steps(steps)
    check_steps(steps_per_epoch)
    check_positive("noise_decay", noise_decay)
    return [noise_multiplier * noise_decay ** (t // steps_per_epoch) for t in range(steps)]


def history(noise_multiplier: float | Sequence[float], sample_rate: float, steps: int | None
            ) -> list[tuple[float, float, int]]:
    """The accountant history ``[(σ, q, n_steps), ...]`` for a constant σ or a per-step sequence."""
    sample_rate = check_sample_rate(sample_rate)
    if isinstance(noise_multiplier, (int, float)):
        check_positive("noise_multiplier", noise_multiplier)
        return [(float(noise_multiplier), sample_rate, check_steps(steps))]
    sigmas = [float(s) for s in noise_multiplier]
    if not sigmas:
        raise ValueError("noise_multiplier must not be an empty sequence")
    if steps is not None and steps != len(sigmas):
        raise ValueError(f"steps={steps} but noise_multiplier has {len(sigmas)} per-step values")
    for t, sigma in enumerate(sigmas):
        check_positive(f"noise_multiplier[{t}]", sigma)
    return [(sigma, sample_rate, len(list(run))) for sigma, run in itertools.groupby(sigmas)]


def check_history(entries) -> list[Entry]:
    """An accountant history: a sequence of ``(σ, q, steps)`` with σ > 0 finite, q in (0, 1], steps >= 1."""
    checked = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, (tuple, list)) or len(entry) != 3:
            raise ValueError(f"history entry {i} must be a (noise_multiplier, sample_rate, steps) triple, "
                             f"got {entry!r}")
        sigma, q, n = entry
        check_positive(f"noise_multiplier of history entry {i}", sigma)
        if not isinstance(q, (int, float)) or isinstance(q, bool) or not 0 < q <= 1:
            raise ValueError(f"sample_rate of history entry {i} must be in (0, 1], got {q!r}")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"steps of history entry {i} must be an integer >= 1, got {n!r}")
        checked.append((float(sigma), float(q), int(n)))
    return checked


def prv_grid_points(entries: Sequence[Entry], *, delta: float, eps_error: float = PRV_EPS_ERROR) -> float:
    """Points of the grid Opacus' PRV accountant would discretise, summed over the history's entries.

    Opacus' own rule (``PRVAccountant._get_domain``): half-width L from ``compute_safe_domain_size`` (RDP
    at a tiny δ), mesh ε_error / √(steps · ln(12/δ_error) / 2); one grid of 2L/mesh points per entry."""
    delta_error = delta * PRV_DELTA_ERROR_FRACTION
    steps = [n for _, _, n in entries]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the")  # RDP's advice, for a size estimate
        half_width = compute_safe_domain_size([PoissonSubsampledGaussianPRV(q, s) for s, q, _ in entries], steps,
                                              eps_error, delta_error)
    mesh = eps_error / math.sqrt(sum(steps) * math.log(12 / delta_error) / 2)
    return len(entries) * 2 * float(half_width) / mesh


def _epsilon(entries: list[Entry], delta: float, accountant: str) -> tuple[float, str]:
    """(ε, the accountant that computed it): PRV falls back to RDP when its grid would be too large."""
    if not entries:
        return 0.0, accountant
    if accountant == "prv" and prv_grid_points(entries, delta=delta) > MAX_PRV_GRID_POINTS:
        accountant = "rdp"
    acc = create_accountant(mechanism=accountant)
    acc.history = list(entries)
    with np.errstate(divide="ignore"):  # Opacus' PRV takes log(1 − q) = log 0 at q = 1 (harmless there)
        return float(acc.get_epsilon(delta=delta)), accountant


def _warn_fallback(entries: list[Entry], delta: float, stacklevel: int = 3) -> None:
    warnings.warn(f"the PRV accountant would need a grid of {prv_grid_points(entries, delta=delta):.3g} points "
                  f"(limit {MAX_PRV_GRID_POINTS:.3g}: small noise multipliers make its privacy-loss range huge); "
                  "the ε reported is the RDP accountant's, a valid but looser upper bound for the same history",
                  PRVFallbackWarning, stacklevel=stacklevel)


def epsilon_of_history(entries: Sequence[Entry], *, delta: float, accountant: str = "rdp") -> float:
    """ε of an explicit accountant history (what :class:`~trustml.privacy.DPSGD` records step by step).

    ``entries``: ``[(σ, q, steps), ...]``. With ``accountant="prv"`` and a grid above
    :data:`MAX_PRV_GRID_POINTS`, RDP's ε is returned with a :class:`PRVFallbackWarning`."""
    check_accountant(accountant)
    check_delta(delta)
    checked = check_history(entries)
    epsilon, used = _epsilon(checked, float(delta), accountant)
    if used != accountant:
        _warn_fallback(checked, float(delta))
    return epsilon


def get_epsilon(*, noise_multiplier: float | Sequence[float], sample_rate: float, steps: int | None = None,
                delta: float, accountant: str = "rdp", dataset_size: int | None = None) -> float:
    """ε spent by ``steps`` Poisson-sampled Gaussian steps, from Opacus' ``accountant`` ("rdp" or "prv").

    ``noise_multiplier`` is σ (noise std / clipping bound) — one value, or one value per step (then
    ``steps`` may be omitted). ``dataset_size`` enables the δ ≥ 1/N warning.
    """
    check_delta(delta, dataset_size)
    return epsilon_of_history(history(noise_multiplier, sample_rate, steps), delta=delta, accountant=accountant)


def _resolve_steps(sample_rate: float, steps: int | None, epochs: float | None) -> int:
    if (steps is None) == (epochs is None):
        raise ValueError("pass exactly one of steps and epochs")
    if steps is not None:
        return check_steps(steps)
    return max(1, round(check_epochs(epochs) * steps_per_epoch(sample_rate)))


def get_noise_multiplier(*, target_epsilon: float, sample_rate: float, delta: float, steps: int | None = None,
                         epochs: float | None = None, accountant: str = "rdp", noise_decay: float = 1.0,
                         epsilon_tolerance: float = 0.01, dataset_size: int | None = None) -> float:
    """The smallest σ₀ (to ``epsilon_tolerance``) whose training spends at most ``target_epsilon``.

    A constant schedule is Opacus' ``get_noise_multiplier``; with ``noise_decay`` γ ≠ 1 the schedule
    σ_e = σ₀γ^e is searched by bisection on σ₀ with :func:`get_epsilon` (ε falls monotonically in σ₀).
    """
    check_positive("target_epsilon", target_epsilon)
    check_sample_rate(sample_rate)
    check_delta(delta, dataset_size)
    check_accountant(accountant)
    check_positive("noise_decay", noise_decay)
    check_positive("epsilon_tolerance", epsilon_tolerance)
    steps = _resolve_steps(sample_rate, steps, epochs)
    sigma, used = _search_noise_multiplier(float(target_epsilon), float(sample_rate), float(delta), steps, accountant,
                                           float(noise_decay), float(epsilon_tolerance))
    if used != accountant:
        _warn_fallback(history(noise_schedule(sigma, steps=steps, steps_per_epoch=steps_per_epoch(sample_rate),
                                              noise_decay=noise_decay), sample_rate, None), float(delta))
    return sigma


@functools.lru_cache(maxsize=256)  # a pure function of its arguments; interactive re-training asks again
def _search_noise_multiplier(target_epsilon: float, sample_rate: float, delta: float, steps: int, accountant: str,
                             noise_decay: float, epsilon_tolerance: float) -> tuple[float, str]:
    """(σ₀, the accountant whose ε certified it). RDP with a constant σ is Opacus' own search; otherwise the
    same bisection (Opacus' steps: σ_high from 20 doubling, then halving [σ_low, σ_high]) over ε values that
    PRV computes only where its grid stays small (:func:`_epsilon`)."""
    if noise_decay == 1.0 and accountant == "rdp":
        try:
            return float(_opacus_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta,
                                                  sample_rate=sample_rate, steps=steps, accountant=accountant,
                                                  epsilon_tolerance=epsilon_tolerance)), accountant
        except ValueError as error:
            raise ValueError(f"target_epsilon={target_epsilon} is unreachable with delta={delta}, "
                             f"sample_rate={sample_rate}, steps={steps}: {error}") from error
    per_epoch = steps_per_epoch(sample_rate)

    def epsilon(sigma0: float) -> tuple[float, str]:
        schedule = noise_schedule(sigma0, steps=steps, steps_per_epoch=per_epoch, noise_decay=noise_decay)
        return _epsilon(history(schedule, sample_rate, None), delta, accountant)

    low, high, eps_high, used_high = 0.0, 10.0, math.inf, accountant
    while eps_high > target_epsilon:
        high *= 2
        if high > MAX_NOISE_MULTIPLIER:
            raise ValueError(f"target_epsilon={target_epsilon} is unreachable: even σ₀={MAX_NOISE_MULTIPLIER:g} "
                             "spends more")
        eps_high, used_high = epsilon(high)
    # The width condition ends the search where ε(σ) jumps (PRV above, RDP's looser value below a σ).
    while target_epsilon - eps_high > epsilon_tolerance and high - low > 1e-6 * high:
        middle = (low + high) / 2
        eps_middle, used_middle = epsilon(middle)
        if eps_middle < target_epsilon:
            high, eps_high, used_high = middle, eps_middle, used_middle
        else:
            low = middle
    return high, used_high


def epsilon_curve(*, noise_multiplier: float | Sequence[float], sample_rate: float, delta: float,
                  steps: int | None = None, accountants: Sequence[str] = ACCOUNTANTS, points: int = 10):
    """ε spent after ``points`` evenly spaced step counts up to ``steps``, for each accountant.

    Returns a long table with columns ``step``, ``epoch`` (= step · q), ``accountant``, ``epsilon``.
    """
    import pandas as pd

    schedule = history(noise_multiplier, sample_rate, steps)
    per_step = [sigma for sigma, _, n in schedule for _ in range(n)]
    total = len(per_step)
    if isinstance(points, bool) or not isinstance(points, int) or points < 1:
        raise ValueError(f"points must be an integer >= 1, got {points!r}")
    marks = sorted({max(1, round(total * k / points)) for k in range(1, points + 1)})
    rows = [{"step": t, "epoch": t * sample_rate, "accountant": name,
             "epsilon": get_epsilon(noise_multiplier=per_step[:t], sample_rate=sample_rate, delta=delta,
                                    accountant=name)}
            for name in accountants for t in marks]
    return pd.DataFrame(rows)


__all__ = ["ACCOUNTANTS", "MAX_PRV_GRID_POINTS", "PRVFallbackWarning", "check_history", "epsilon_curve",
           "epsilon_of_history", "get_epsilon", "get_noise_multiplier", "history", "noise_schedule", "prv_grid_points",
           "steps_per_epoch"]
