"""Per-example signals an attacker reads from a model's output: loss and logit-scaled confidence."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import TensorDataset


def check_logits_labels(logits, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """``logits`` (..., n, C) and ``labels`` (n,) as tensors; lengths must match, labels lie in [0, C)."""
    logits = torch.as_tensor(np.asarray(logits) if not torch.is_tensor(logits) else logits, dtype=torch.float64)
    labels = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels).long()
    if logits.ndim < 2:
        raise ValueError(f"logits must have shape (..., n_examples, n_classes), got {tuple(logits.shape)}")
    if labels.ndim != 1 or logits.shape[-2] != len(labels):
        raise ValueError(f"logits and labels must have the same length, got {logits.shape[-2]} and {len(labels)}")
    n_classes = logits.shape[-1]
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        bad = labels[(labels < 0) | (labels >= n_classes)].unique().tolist()
        raise ValueError(f"labels must be in [0, {n_classes}) (the model's classes), got {bad[:5]}")
    return logits, labels


def per_example_loss(logits, labels) -> np.ndarray:
    """Cross-entropy ℓ = −log softmax(z)_y of each example (the LOSS attack's signal, Yeom et al. 2018)."""
    logits, labels = check_logits_labels(logits, labels)
    index = labels.expand(logits.shape[:-1]).unsqueeze(-1)
    return (torch.logsumexp(logits, -1) - logits.gather(-1, index).squeeze(-1)).numpy()


def logit_confidence(logits, labels) -> np.ndarray:
    """Logit-scaled confidence φ = log(p_y / (1 − p_y)) (Carlini et al. 2022, §IV-C), computed stably.

    With p = softmax(z): log p_y = z_y − LSE(z) and log(1 − p_y) = LSE(z_{≠y}) − LSE(z), so
    φ = z_y − LSE_{k≠y} z_k — no probability is formed, so φ stays finite when p_y rounds to 1.
    Unlike p_y, φ is close to Gaussian across training runs, which is what LiRA's fits assume."""
    logits, labels = check_logits_labels(logits, labels)
    index = labels.expand(logits.shape[:-1]).unsqueeze(-1)
    true_logit = logits.gather(-1, index).squeeze(-1)
    others = logits.scatter(-1, index, float("-inf"))
    return (true_logit - torch.logsumexp(others, -1)).numpy()


@torch.no_grad()
def model_logits(model: torch.nn.Module, dataset: TensorDataset, *, batch_size: int = 1024) -> np.ndarray:
    """Logits (n, C) of a model on a dataset's inputs, in eval mode (float64 numpy)."""
    from trustml.models import predict

    return predict(model, dataset, batch_size=batch_size).double().numpy()
