"""Membership-inference attacks: LOSS threshold, shadow-model attack, LiRA (offline and online).

Every attack maps the *target* model's logits on candidate examples to one score per example (higher =
"more likely a training member"). All attacks share one signature so they sit in the ``ATTACKS``
registry::

    attack(target_logits (n, C), labels (n,), shadow_logits (k, n, C), shadow_membership (k, n)) -> (n,)

``shadow_logits[j]`` are the logits of shadow model j — trained *like the target* on data the attacker
controls — and ``shadow_membership[j, i]`` says whether example i was in shadow model j's training set.
The LOSS attack ignores the shadows; the others learn from them what members look like.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy.stats import norm

from trustml.threads import limit_threads
from trustml.privacy.attacks.scores import check_logits_labels, logit_confidence, per_example_loss


def _check_shadows(target_logits, labels, shadow_logits, shadow_membership):
    target_logits, labels = check_logits_labels(target_logits, labels)
    shadow_logits = np.asarray(shadow_logits, dtype=np.float64)
    shadow_membership = np.asarray(shadow_membership, dtype=bool)
    if shadow_logits.ndim != 3 or shadow_logits.shape[1:] != tuple(target_logits.shape):
        raise ValueError(f"shadow_logits must have shape (n_shadows, {len(labels)}, {target_logits.shape[-1]}), "
                         f"got {shadow_logits.shape}")
    if shadow_membership.shape != shadow_logits.shape[:2]:
        raise ValueError(f"shadow_membership must have shape {shadow_logits.shape[:2]}, got {shadow_membership.shape}")
    return target_logits.numpy(), labels.numpy(), shadow_logits, shadow_membership


def loss_attack(target_logits, labels, shadow_logits=None, shadow_membership=None) -> np.ndarray:
    """LOSS threshold attack (Yeom et al. 2018): score = −ℓ(x, y); members have lower loss.

    Yeom et al. predict "member" when ℓ is below the mean training loss; the ROC sweeps every threshold."""
    return -per_example_loss(target_logits, labels)


def _gaussian_fit(phi: np.ndarray, mask: np.ndarray, *, fixed_variance: bool, which: str):
    """Per-example mean of φ over the shadows where ``mask`` holds, and a std (per example or pooled)."""
    counts = mask.sum(0)
    if (counts == 0).any():
        raise ValueError(f"{int((counts == 0).sum())} examples have no '{which}' shadow model; "
                         "train more shadow models (n_models >= 4 with the balanced split)")
    values = np.where(mask, phi, np.nan)
    mean = np.nanmean(values, 0)
    if fixed_variance:  # Carlini et al. 2022 §VI-A: one global σ is better with few shadows (< 64)
        std = np.full_like(mean, np.nanstd(values - mean))
    else:
        if (counts < 2).any():
            raise ValueError("per-example variances need >= 2 shadows of each kind per example; "
                             "use fixed_variance=True or more shadow models")
        std = np.nanstd(values, 0, ddof=1)
    return mean, np.maximum(std, 1e-6)


def lira_online(target_logits, labels, shadow_logits, shadow_membership, *, fixed_variance: bool = True) -> np.ndarray:
    """Online LiRA (Carlini et al. 2022, Alg. 1): a per-example likelihood-ratio test on φ.

    Fit N(μ_in, σ_in²) to φ of the shadows trained *with* x and N(μ_out, σ_out²) to those trained
    *without*; score = log N(φ_target; μ_in, σ_in²) − log N(φ_target; μ_out, σ_out²)."""
    target_logits, labels, shadow_logits, membership = _check_shadows(target_logits, labels, shadow_logits,
                                                                      shadow_membership)
    phi_shadow, phi_target = logit_confidence(shadow_logits, labels), logit_confidence(target_logits, labels)
    mu_in, sigma_in = _gaussian_fit(phi_shadow, membership, fixed_variance=fixed_variance, which="in")
    mu_out, sigma_out = _gaussian_fit(phi_shadow, ~membership, fixed_variance=fixed_variance, which="out")
    return norm.logpdf(phi_target, mu_in, sigma_in) - norm.logpdf(phi_target, mu_out, sigma_out)


def lira_offline(target_logits, labels, shadow_logits, shadow_membership, *, fixed_variance: bool = True) -> np.ndarray:
    """Offline LiRA (Carlini et al. 2022, §VI-C): only shadows trained *without* x are needed.

    One-sided test against N(μ_out, σ_out²): the score 1 − P[Z > φ_target] = Φ(z) with
    z = (φ_target − μ_out)/σ_out. Φ is monotone, so we return z (same ROC, no saturation at Φ ≈ 1)."""
    target_logits, labels, shadow_logits, membership = _check_shadows(target_logits, labels, shadow_logits,
                                                                      shadow_membership)
    phi_shadow, phi_target = logit_confidence(shadow_logits, labels), logit_confidence(target_logits, labels)
    mu_out, sigma_out = _gaussian_fit(phi_shadow, ~membership, fixed_variance=fixed_variance, which="out")
    return (phi_target - mu_out) / sigma_out


def attack_features(logits, labels, *, top_k: int = 3) -> np.ndarray:
    """Features of one model's output per example: φ, loss, the top-k sorted log-probabilities, entropy.

    Shokri et al. feed the whole probability vector to one attack model per class; like Salem et al.
    (2019, "ML-Leaks") we sort it, which makes one attack model serve every class."""
    logits, labels = check_logits_labels(logits, labels)
    log_p = torch.log_softmax(logits, -1).numpy()
    top = np.sort(log_p, axis=-1)[..., ::-1][..., :top_k]
    entropy = -(np.exp(log_p) * log_p).sum(-1, keepdims=True)
    return np.concatenate([logit_confidence(logits, labels)[..., None], per_example_loss(logits, labels)[..., None],
                           top, entropy], axis=-1)


def shadow_attack(target_logits, labels, shadow_logits, shadow_membership, *, seed: int = 0) -> np.ndarray:
    """Shadow-model attack (Shokri et al. 2017): learn "member or not" from the shadows' outputs.

    Each shadow model gives labelled examples (its outputs on its own members and non-members); an
    attack classifier (gradient-boosted trees, scikit-learn) is trained on them and scores the target."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    target_logits, labels, shadow_logits, membership = _check_shadows(target_logits, labels, shadow_logits,
                                                                      shadow_membership)
    if membership.all() or not membership.any():
        raise ValueError("the shadow models need both members and non-members to train the attack model")
    features = attack_features(shadow_logits, labels).reshape(-1, attack_features(target_logits, labels).shape[-1])
    classifier = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, random_state=seed)
    with limit_threads(1):  # the fit is tiny; competing thread pools make it ~50x slower
        classifier.fit(features, membership.ravel())
        return classifier.predict_proba(attack_features(target_logits, labels))[:, 1]


Attack = Callable[..., np.ndarray]  # (target_logits, labels, shadow_logits, shadow_membership) -> scores (n,)

ATTACKS: dict[str, Attack] = {
    "LOSS": loss_attack,
    "shadow": shadow_attack,
    "LiRA offline": lira_offline,
    "LiRA online": lira_online,
}
