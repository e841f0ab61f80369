"""Argument checks shared by the privacy modules: bad input is an error that names the allowed range."""

from __future__ import annotations

import math
import warnings


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def check_positive(name: str, value) -> float:
    """``value`` must be a finite number > 0."""
    if not _is_number(value) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_sample_rate(sample_rate) -> float:
    """The Poisson sampling rate q must lie in (0, 1]."""
    if not _is_number(sample_rate) or not 0 < sample_rate <= 1:
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
    return float(sample_rate)


def check_delta(delta, dataset_size: int | None = None) -> float:
    """δ must lie in (0, 1); δ ≥ 1/N warns: such a δ allows leaking one whole record outright."""
    if not _is_number(delta) or not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    if dataset_size is not None and delta >= 1 / dataset_size:
        warnings.warn(f"delta={delta:g} >= 1/N = {1 / dataset_size:g}: a mechanism that publishes one random "
                      "record satisfies this guarantee; choose delta well below 1/N (e.g. 1/N^1.1)",
                      UserWarning, stacklevel=3)
    return float(delta)


def check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    return steps


def check_epochs(epochs) -> float:
    return check_positive("epochs", epochs)
