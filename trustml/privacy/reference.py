"""Plain references for the fast engine: autograd one example (or micro-batch) at a time.

Slow by design — B backward passes per step — and therefore obviously right: the tests compare the
engine against these loops, and the benchmark times :func:`naive_clipped_sum` as "naive per-example loop".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from trustml.privacy.engine import STABILITY

LossFn = Callable[[nn.Module, tuple], torch.Tensor]  # (model, batch) -> (b,) per-example losses


def _rows(batch: tuple, index: torch.Tensor) -> tuple:
    return tuple(t[index] for t in batch)


def _module_of(model: nn.Module) -> dict[str, str]:
    """Parameter name -> name of the layer (module) that owns it."""
    return {f"{m}.{p}" if m else p: m or "<model>"
            for m, module in model.named_modules() for p, _ in module.named_parameters(recurse=False)}


def naive_clipped_sum(model: nn.Module, loss_fn: LossFn, batch: tuple, *, max_grad_norm: float,
                      groups: torch.Tensor | None = None, layer_max_grad_norms: Mapping[str, float] | None = None,
                      ) -> dict[str, torch.Tensor]:
    """``Σ_u clip(g_u)`` by brute force; ``g_u`` = one example's gradient, or (``groups``) a micro-batch's mean.

    Flat clipping to ``max_grad_norm``, or per-layer clipping when ``layer_max_grad_norms`` maps layer
    (module) names to bounds. Returns ``{parameter name: summed clipped gradient}``.
    """
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    owner = _module_of(model)
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    size = len(batch[0])
    units = [torch.tensor([i]) for i in range(size)] if groups is None else \
        [torch.nonzero(groups == g).flatten() for g in torch.unique(groups)]
    for index in units:
        raw = torch.autograd.grad(loss_fn(model, _rows(batch, index)).mean(), list(params.values()),
                                  allow_unused=True)
        grads = {n: torch.zeros_like(p) if g is None else g for (n, p), g in zip(params.items(), raw)}
        if layer_max_grad_norms is None:
            norm = torch.stack([g.square().sum() for g in grads.values()]).sum().sqrt()
            factor = {n: (max_grad_norm / (norm + STABILITY)).clamp(max=1.0) for n in grads}
        else:
            layer_norm: dict[str, torch.Tensor] = {}
            for n, g in grads.items():
                layer_norm[owner[n]] = layer_norm.get(owner[n], torch.zeros((), dtype=g.dtype)) + g.square().sum()
            factor = {n: (layer_max_grad_norms[owner[n]] / (layer_norm[owner[n]].sqrt() + STABILITY)).clamp(max=1.0)
                      for n in grads}
        for n, g in grads.items():
            total[n] += factor[n] * g
    return total


def per_example_gradient_memory(model: nn.Module, batch_size: int, *, bytes_per_value: int = 4) -> int:
    """Bytes needed to materialise every per-example gradient at once: B × (number of parameters)."""
    return batch_size * sum(p.numel() for p in model.parameters() if p.requires_grad) * bytes_per_value
