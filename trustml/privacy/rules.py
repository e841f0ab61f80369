"""Per-layer rules of the fast clipping engine: per-example gradient norms and book-keeping sums.

For a layer called on a batch, the engine stores the layer's input ``A`` (batch-first) and, after one
backward pass that computes only activation gradients, the gradient ``G`` of the summed per-example
loss with respect to the layer's output. Every supported layer's per-example weight gradient is a sum
over the tokens ``t`` of example ``i`` of something built from ``A_i`` and ``G_i``; each rule gives

- ``norms_sq(module, A, G)``: ``{parameter name: (B,) tensor}`` of squared per-example gradient norms,
  computed *without* materialising per-example gradients where that is cheaper ("ghost norms",
  Goodfellow 2015; Li et al. 2022, "Large language models can be strong differentially private learners");
- ``clipped_sum(module, A, G, c)``: ``{parameter name: tensor}`` = ``Σ_i c_i ∇_θ ℓ_i``, the clipped
  gradient sum from the stored ``A`` and ``G`` at the cost of one ordinary weight gradient
  ("book-keeping", Bu et al. 2023, "Differentially private optimization on large model at small cost").
  A rule without it (``clipped_sum = None``) is served by ghost clipping: a second backward on ``Σ_i c_i ℓ_i``.

All tensors handed to a rule are 3-D: ``(B, T, ·)`` with ``T`` tokens per example (T = 1 for 2-D inputs).
Tokens whose output gradient is zero contribute nothing to any of the formulas (the engine may drop them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn

Tensors = dict[str, torch.Tensor]


@dataclasses.dataclass(frozen=True)
class LayerRule:
    """How the engine handles one layer type (see the module docstring for the two functions)."""

    prepare: Callable[[nn.Module, torch.Tensor], torch.Tensor]  # raw layer input -> (B, T, ·) activation
    norms_sq: Callable[[nn.Module, torch.Tensor, torch.Tensor], Tensors]
    clipped_sum: Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], Tensors] | None = None
    check: Callable[[nn.Module], None] | None = None  # raises for configurations the rule cannot handle


RULES: dict[type[nn.Module], LayerRule] = {}


def register_rule(layer_type: type[nn.Module], rule: LayerRule) -> None:
    """Teach the engine a new layer type (a rule without ``clipped_sum`` falls back to ghost clipping)."""
    RULES[layer_type] = rule


def rule_for(module: nn.Module) -> LayerRule | None:
    """The rule of ``module``'s type or of its nearest registered base class."""
    for cls in type(module).__mro__:
        if cls in RULES:
            return RULES[cls]
    return None


def as_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, d) -> (B, 1, d); (B, T, d) unchanged; (B, T1, T2, ..., d) -> (B, T1·T2·..., d)."""
    if x.dim() == 2:
        return x.unsqueeze(1)
    return x.reshape(x.shape[0], _tokens(x.shape[1:-1]), x.shape[-1])


def _tokens(shape) -> int:
    """Number of token positions in the dimensions ``shape`` (explicit, so empty batches reshape too)."""
    n = 1
    for size in shape:
        n *= size
    return n


# ---------------------------------------------------------------- Linear
def linear_weight_norms_sq(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """‖∇W_i‖² for W of a Linear layer, ∇W_i = G_iᵀA_i (A_i: T×d, G_i: T×p).

    Two exact formulas; the cheaper one is used (Li et al. 2022, §4):
    ghost norm ⟨A_iA_iᵀ, G_iG_iᵀ⟩ costs B·T²·(d+p) and reduces to ‖a_i‖²‖g_i‖² when T = 1;
    the direct per-example gradient costs B·T·d·p (and B·d·p memory, one layer at a time).
    """
    B, T, d = A.shape
    p = G.shape[-1]
    if T == 1:
        return A.square().sum((1, 2)) * G.square().sum((1, 2))
    if T * (d + p) <= d * p:
        return (torch.bmm(A, A.transpose(1, 2)) * torch.bmm(G, G.transpose(1, 2))).sum((1, 2))
    return torch.bmm(G.transpose(1, 2), A).square().sum((1, 2))


def _linear_norms_sq(module: nn.Linear, A: torch.Tensor, G: torch.Tensor) -> Tensors:
    norms = {}
    if module.weight.requires_grad:
        norms["weight"] = linear_weight_norms_sq(A, G)
    if module.bias is not None and module.bias.requires_grad:
        norms["bias"] = G.sum(1).square().sum(1)  # ∇b_i = Σ_t g_it
    return norms


def _linear_clipped_sum(module: nn.Linear, A: torch.Tensor, G: torch.Tensor, c: torch.Tensor) -> Tensors:
    # Σ_i c_i G_iᵀA_i = (c·G)ᵀA over all B·T rows: one weight gradient's cost.
    cG = G * c.view(-1, 1, 1)
    sums = {}
    if module.weight.requires_grad:
        sums["weight"] = cG.reshape(-1, cG.shape[-1]).T @ A.reshape(-1, A.shape[-1])
    if module.bias is not None and module.bias.requires_grad:
        sums["bias"] = cG.sum((0, 1))
    return sums


register_rule(nn.Linear, LayerRule(
    prepare=lambda module, x: as_tokens(x), norms_sq=_linear_norms_sq, clipped_sum=_linear_clipped_sum,
))


# ---------------------------------------------------------------- Embedding
def _embedding_check(module: nn.Embedding) -> None:
    if module.scale_grad_by_freq:
        raise ValueError("Embedding with scale_grad_by_freq=True has no per-example gradient "
                         "(it depends on the whole batch's token counts); set it to False")
    if module.sparse:
        raise ValueError("Embedding with sparse=True is not supported by the clipping engine; use sparse=False")


def _embedding_ids(module: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
    ids = ids.reshape(ids.shape[0], _tokens(ids.shape[1:]))
    # The true gradient of E never touches the padding row (PyTorch zeroes it), so its positions are
    # marked -1 and excluded from norms and sums; treating them as ordinary rows would over-count ‖∇E_i‖.
    if module.padding_idx is not None:
        ids = ids.masked_fill(ids == module.padding_idx, -1)
    return ids


def embedding_norms_sq(ids: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """‖∇E_i‖² = Σ_{t,s} [id_t = id_s ≠ pad] ⟨g_t, g_s⟩ — never a (vocab × d) tensor per example.

    Row v of ∇E_i is Σ_{t: id_t = v} g_t, so ‖∇E_i‖² sums ⟨g_t, g_s⟩ over token pairs with equal ids.
    For short sequences the (B, T, T) pair mask is cheapest; for long ones the per-example rows are
    summed with ``index_add`` over the (example, id) pairs that occur (B·T·d work).
    """
    B, T = ids.shape
    valid = ids >= 0
    if T <= 64:
        same = (ids.unsqueeze(2) == ids.unsqueeze(1)) & valid.unsqueeze(2)
        return (torch.bmm(G, G.transpose(1, 2)) * same).sum((1, 2))
    keys = ids + (torch.arange(B, device=ids.device) * (int(ids.max()) + 2)).unsqueeze(1)
    keys = keys[valid]
    unique, inverse = torch.unique(keys, return_inverse=True)
    rows = torch.zeros(len(unique), G.shape[-1], dtype=G.dtype, device=G.device).index_add_(0, inverse, G[valid])
    example_of_row = torch.zeros(len(unique), dtype=torch.long, device=G.device).index_copy_(
        0, inverse, torch.arange(B, device=G.device).unsqueeze(1).expand(B, T)[valid])
    return torch.zeros(B, dtype=G.dtype, device=G.device).index_add_(0, example_of_row, rows.square().sum(1))


def _embedding_norms_sq(module: nn.Embedding, ids: torch.Tensor, G: torch.Tensor) -> Tensors:
    return {"weight": embedding_norms_sq(ids, G)} if module.weight.requires_grad else {}


def _embedding_clipped_sum(module: nn.Embedding, ids: torch.Tensor, G: torch.Tensor, c: torch.Tensor) -> Tensors:
    if not module.weight.requires_grad:
        return {}
    valid = ids >= 0
    weighted = (G * c.view(-1, 1, 1))[valid]  # sparse-friendly: only the rows that occur are touched
    grad = torch.zeros_like(module.weight).index_add_(0, ids[valid], weighted.to(module.weight.dtype))
    return {"weight": grad}


register_rule(nn.Embedding, LayerRule(
    prepare=_embedding_ids, norms_sq=_embedding_norms_sq, clipped_sum=_embedding_clipped_sum, check=_embedding_check,
))


# ---------------------------------------------------------------- LayerNorm
def _layer_norm_prepare(module: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    # Store x̂ = (x − μ)/√(σ² + eps); the affine weight's per-example gradient is Σ_t g_t ⊙ x̂_t.
    with torch.no_grad():
        normalized = nn.functional.layer_norm(x, module.normalized_shape, None, None, module.eps)
    n = _tokens(module.normalized_shape)
    return normalized.reshape(x.shape[0], _tokens(x.shape[1:]) // n, n)


def _layer_norm_per_example(module: nn.LayerNorm, xhat: torch.Tensor, G: torch.Tensor) -> Tensors:
    G = G.reshape(xhat.shape)
    grads = {}
    if module.weight is not None and module.weight.requires_grad:
        grads["weight"] = (G * xhat).sum(1)
    if module.bias is not None and module.bias.requires_grad:
        grads["bias"] = G.sum(1)
    return grads


def _layer_norm_norms_sq(module: nn.LayerNorm, xhat: torch.Tensor, G: torch.Tensor) -> Tensors:
    # The per-example gradients are only (B, d): computing them directly is the cheap way.
    return {name: g.square().sum(1) for name, g in _layer_norm_per_example(module, xhat, G).items()}


def _layer_norm_clipped_sum(module: nn.LayerNorm, xhat: torch.Tensor, G: torch.Tensor, c: torch.Tensor) -> Tensors:
    shapes = {"weight": module.weight, "bias": module.bias}
    return {name: (c.view(-1, 1) * g).sum(0).reshape(shapes[name].shape)
            for name, g in _layer_norm_per_example(module, xhat, G).items()}


register_rule(nn.LayerNorm, LayerRule(
    prepare=_layer_norm_prepare, norms_sq=_layer_norm_norms_sq, clipped_sum=_layer_norm_clipped_sum,
))


def supported_layers() -> list[str]:
    return sorted(cls.__name__ for cls in RULES)
