"""Differential privacy for language models: accounting, the fast DP-SGD engine (eDP-SGD), training.

- ``get_epsilon`` / ``get_noise_multiplier``: Opacus' RDP and PRV accountants, σ may vary per step;
- ``ClippingEngine``: exact per-example clipping from ghost norms and book-keeping, no per-example gradients;
- ``DPSGD``: DP-SGD around any optimizer with Poisson sampling and accounting; ``train_private`` for chapters;
- ``UserLevelDPSGD``: the same with users as the privacy unit (Poisson-sampled users, per-user clipping);
  ``train_user_level`` for chapters.
"""

from trustml.privacy.accounting import (
    ACCOUNTANTS, PRVFallbackWarning, epsilon_curve, epsilon_of_history, get_epsilon, get_noise_multiplier,
    noise_schedule, steps_per_epoch,
)
from trustml.privacy.dpsgd import (
    DPSGD, SENSITIVITY, PoissonSamplingRequired, PrivacyBudgetExceeded, PrivateTraining, train_private,
)
from trustml.privacy.engine import ClippingEngine, ClipStats, UnsupportedLayerError, layer_bounds
from trustml.privacy.mechanisms import (
    classic_gaussian_noise_multiplier, gaussian_delta, gaussian_epsilon, gaussian_mechanism, max_advantage,
    privacy_loss, tpr_bound,
)
from trustml.privacy.reference import naive_clipped_sum, per_example_gradient_memory
from trustml.privacy.rules import RULES, LayerRule, register_rule, supported_layers
from trustml.privacy.sampling import PoissonBatches
from trustml.privacy.user_level import UserBatches, UserLevelDPSGD, group_privacy, train_user_level, user_rows

__all__ = [
    "ACCOUNTANTS", "DPSGD", "RULES", "SENSITIVITY", "ClipStats", "ClippingEngine", "LayerRule", "PRVFallbackWarning",
    "PoissonBatches", "PoissonSamplingRequired", "PrivacyBudgetExceeded", "PrivateTraining", "UnsupportedLayerError",
    "classic_gaussian_noise_multiplier", "epsilon_curve", "epsilon_of_history", "gaussian_delta", "gaussian_epsilon",
    "gaussian_mechanism", "get_epsilon", "get_noise_multiplier", "layer_bounds", "max_advantage", "naive_clipped_sum",
    "noise_schedule", "per_example_gradient_memory", "privacy_loss", "register_rule", "steps_per_epoch",
    "supported_layers", "tpr_bound", "train_private", "UserBatches", "UserLevelDPSGD", "group_privacy",
    "train_user_level", "user_rows",
]
