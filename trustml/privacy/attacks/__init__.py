"""Measuring leakage: membership inference, privacy audits, canaries and their extraction (ModIvA).

- ``mia``: LOSS threshold, shadow-model attack, LiRA offline/online — one ``ATTACKS`` registry;
- ``shadow``: the membership game (k models on balanced random halves, each the target in turn);
- ``results``: ``AttackResult`` (AUC, advantage, TPR at low FPR, ``.summary()``, ``.to_frame()``), log-log ROC;
- ``audit``: empirical lower bounds on ε with a stated confidence — the one-run audit (Steinke et al. 2023)
  with attack and guesses chosen on held-out examples, and Clopper–Pearson for independent trials;
- ``canary`` / ``modiva``: planted secrets, exposure over all candidates, white-box inversion;
- ``targets`` / ``defences``: how targets are trained (DP-SGD via ``trustml.privacy.train_private``).
"""

from trustml.privacy.attacks.audit import (
    AuditResult, OneRunAudit, audit_with_selection, best_threshold, clopper_pearson, epsilon_lower_bound, guesses,
    one_run_audit, one_run_epsilon_lower_bound, one_run_p_value,
)
from trustml.privacy.attacks.canary import (
    DIGITS, PHONE_TEMPLATE, PIN_TEMPLATE, CanaryProbe, ExposureResult, canary_probe, canary_table, candidate_losses,
    exposure, make_canaries, rank_exposure,
)
from trustml.privacy.attacks.defences import (
    DEFENCES, Setting, attack_canaries, canary_experiment, recovery_by, run_setting, train_nlu_model,
    validation_split,
)
from trustml.privacy.attacks.mia import (
    ATTACKS, attack_features, lira_offline, lira_online, loss_attack, shadow_attack,
)
from trustml.privacy.attacks.modiva import InversionResult, modiva
from trustml.privacy.attacks.results import AttackResult, check_fpr, plot_roc, results_table, roc_points
from trustml.privacy.attacks.scores import logit_confidence, model_logits, per_example_loss
from trustml.privacy.attacks.shadow import (
    MembershipGame, balanced_membership, independent_membership, random_halves,
)
from trustml.privacy.attacks.targets import (
    make_trainer, train_model, train_with_early_stopping,
)

__all__ = [
    "ATTACKS", "DEFENCES", "DIGITS", "PHONE_TEMPLATE", "PIN_TEMPLATE", "AttackResult", "AuditResult",
    "CanaryProbe", "ExposureResult", "InversionResult", "MembershipGame", "OneRunAudit", "Setting", "attack_canaries",
    "attack_features", "audit_with_selection", "balanced_membership", "best_threshold", "canary_experiment",
    "canary_probe", "canary_table", "candidate_losses", "check_fpr", "clopper_pearson", "epsilon_lower_bound",
    "exposure", "guesses", "independent_membership", "lira_offline", "lira_online", "logit_confidence",
    "loss_attack", "make_canaries", "make_trainer", "model_logits", "modiva", "one_run_audit",
    "one_run_epsilon_lower_bound", "one_run_p_value", "per_example_loss", "plot_roc", "random_halves",
    "recovery_by", "results_table", "roc_points", "run_setting", "shadow_attack", "train_model",
    "train_nlu_model", "train_with_early_stopping", "validation_split",
]
