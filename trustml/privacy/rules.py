"""Per-layer rules of the fast clipping engine: per-example gradient norms and book-keeping sums.

For a layer called on a batch, the engine stores the layer's input ``A`` (batch-first) and, after one
backward pass that computes only activation gradients, the gradient ``G`` of the summed per-example
loss with respect to the layer's output. Every supported layer's per-example weight gradient is a sum
over the tokens ``t`` of example ``i`` of something built from ``A_i`` and ``G_i``; each rule gives

- ``norms_sq(module, A, G, ...)``: ``{parameter name: (B,) tensor}`` of squared per-example gradient norms,
  computed *without* materialising per-example gradients where that is cheaper ("ghost norms",
  Goodfellow 2015; Li et al. 2022, "Large language models can be strong differentially private learners");
- ``clipped_sum(module, A, G, c, ...)``: ``{parameter name: tensor}`` = ``Σ_i c_i ∇_θ ℓ_i``, the clipped
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


def gram(x: torch.Tensor) -> torch.Tensor:
    """Per-example Gram matrix X_i X_iᵀ over tokens: (B, T, k) -> (B, T, T)."""
    return torch.bmm(x, x.transpose(1, 2))


class Step:
    """Scratch space of one engine step, handed to every rule call.

    ``gram`` is memoised by storage, shape and strides: layers that share an input (the query, key and
    value projections read the same normalised activations) or an output gradient pay for its Gram
    matrix once. ``state(name)`` is a per-layer dict that ``norms_sq`` may fill for ``clipped_sum``;
    ``grouped`` is True when norms are computed on micro-batches (then the two calls see different rows).
    """

    def __init__(self, *, grouped: bool = False):
        self.grouped = grouped
        self._grams: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._states: dict[str, dict] = {}

    def gram(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.data_ptr(), x.storage_offset(), tuple(x.shape), x.stride(), x.dtype)
        if key not in self._grams:  # keep x alive: its memory must not be reused by another key
            self._grams[key] = (x, gram(x))
        return self._grams[key][1]

    def state(self, name: str) -> dict:
        return self._states.setdefault(name, {})


@dataclasses.dataclass(frozen=True)
class LayerRule:
    """How the engine handles one layer type (see the module docstring).

    ``norms_sq(module, A, G, step, state)`` and ``clipped_sum(module, A, G, c, step, state)``; ``state`` is
    the layer's dict of this step. Optional: ``check(module)`` raises for configurations the rule cannot
    handle; ``finish(module, A)`` turns the stored input into what the two functions read and runs once
    per step after padding tokens are dropped (so its work is done on real tokens only); ``span(module, A)``
    gives the token range that can contribute (else the engine finds it from ``G``).
    """

    prepare: Callable[[nn.Module, torch.Tensor], torch.Tensor]  # raw layer input -> (B, T, ·), in the hook
    norms_sq: Callable[..., Tensors]
    clipped_sum: Callable[..., Tensors] | None = None
    check: Callable[[nn.Module], None] | None = None
    finish: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None
    span: Callable[[nn.Module, torch.Tensor], tuple[int, int] | None] | None = None
    # clipped_sum for several layers of this type that read the same input A:
    # (modules, A, [G], [c], step, [state]) -> [Tensors]
    clipped_sum_shared: Callable[..., list[Tensors]] | None = None


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
def linear_weight_norms_sq(A: torch.Tensor, G: torch.Tensor, gram: Callable = gram) -> torch.Tensor:
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
        return (gram(A) * gram(G)).sum((1, 2))
    return torch.bmm(G.transpose(1, 2), A).square().sum((1, 2))


def _linear_norms_sq(module: nn.Linear, A: torch.Tensor, G: torch.Tensor, step: Step, state: dict) -> Tensors:
    norms = {}
    if module.weight.requires_grad:
        norms["weight"] = linear_weight_norms_sq(A, G, step.gram)
    if module.bias is not None and module.bias.requires_grad:
        bias_grads = G.sum(1)  # ∇b_i = Σ_t g_it
        norms["bias"] = bias_grads.square().sum(1)
        if not step.grouped:
            state["bias"] = bias_grads
    return norms


def _linear_clipped_sum(module: nn.Linear, A: torch.Tensor, G: torch.Tensor, c: torch.Tensor, step: Step,
                        state: dict) -> Tensors:
    # Σ_i c_i G_iᵀA_i = (c·G)ᵀA = Gᵀ(c·A) over all B·T rows: one weight gradient's cost
    # (c scales whichever side is narrower).
    sums = {}
    if module.weight.requires_grad:
        p, d = G.shape[-1], A.shape[-1]
        left, right = (G * c.view(-1, 1, 1), A) if p <= d else (G, A * c.view(-1, 1, 1))
        sums["weight"] = left.reshape(-1, p).T @ right.reshape(-1, d)
    if module.bias is not None and module.bias.requires_grad:
        sums["bias"] = c @ (state["bias"] if "bias" in state else G.sum(1))
    return sums


def _linear_clipped_sum_shared(modules: list[nn.Linear], A: torch.Tensor, Gs: list[torch.Tensor],
                               cs: list[torch.Tensor], step: Step, states: list[dict]) -> list[Tensors]:
    # [Σ_i c_i G_iᵀA_i for each layer] = one product [(c·G_1) … (c·G_k)]ᵀA, split by rows.
    if not all(m.weight.requires_grad for m in modules):
        return [_linear_clipped_sum(m, A, G, c, step, state) for m, G, c, state in zip(modules, Gs, cs, states)]
    scaled = torch.cat([G * c.view(-1, 1, 1) for G, c in zip(Gs, cs)], dim=-1)
    weights = (scaled.reshape(-1, scaled.shape[-1]).T @ A.reshape(-1, A.shape[-1])).split(
        [G.shape[-1] for G in Gs])
    sums = []
    for module, weight, G, c, state in zip(modules, weights, Gs, cs, states):
        grads = {"weight": weight}
        if module.bias is not None and module.bias.requires_grad:
            grads["bias"] = c @ (state["bias"] if "bias" in state else G.sum(1))
        sums.append(grads)
    return sums


register_rule(nn.Linear, LayerRule(
    prepare=lambda module, x: as_tokens(x), norms_sq=_linear_norms_sq, clipped_sum=_linear_clipped_sum,
    clipped_sum_shared=_linear_clipped_sum_shared,
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


def _embedding_span(module: nn.Embedding, ids: torch.Tensor) -> tuple[int, int] | None:
    if module.padding_idx is None:
        return None
    present = torch.nonzero((ids >= 0).any(0)).flatten()  # positions holding a real token in some row
    return (int(present[0]), int(present[-1]) + 1) if len(present) else (0, 0)


def _shared_distinct_ids(ids: torch.Tensor) -> bool:
    """Every row holds the same ids, all different (position ids ``arange(T).expand(B, T)``)."""
    return ids.shape[0] > 0 and ids.stride(0) == 0 and bool((ids[0] >= 0).all()) and \
        len(torch.unique(ids[0])) == ids.shape[1]


def embedding_norms_sq(ids: torch.Tensor, G: torch.Tensor, gram: Callable = gram) -> torch.Tensor:
    """‖∇E_i‖² = Σ_{t,s} [id_t = id_s ≠ pad] ⟨g_t, g_s⟩ — never a (vocab × d) tensor per example.

    Row v of ∇E_i is Σ_{t: id_t = v} g_t, so ‖∇E_i‖² sums ⟨g_t, g_s⟩ over token pairs with equal ids.
    For short sequences the (B, T, T) pair mask is cheapest; for long ones the per-example rows are
    summed with ``index_add`` over the (example, id) pairs that occur (B·T·d work).
    """
    B, T = ids.shape
    valid = ids >= 0
    if T <= 64:
        same = (ids.unsqueeze(2) == ids.unsqueeze(1)) & valid.unsqueeze(2)
        return torch.einsum("bij,bij->b", gram(G), same.to(G.dtype))
    keys = ids + (torch.arange(B, device=ids.device) * (int(ids.max()) + 2)).unsqueeze(1)
    keys = keys[valid]
    unique, inverse = torch.unique(keys, return_inverse=True)
    rows = torch.zeros(len(unique), G.shape[-1], dtype=G.dtype, device=G.device).index_add_(0, inverse, G[valid])
    example_of_row = torch.zeros(len(unique), dtype=torch.long, device=G.device).index_copy_(
        0, inverse, torch.arange(B, device=G.device).unsqueeze(1).expand(B, T)[valid])
    return torch.zeros(B, dtype=G.dtype, device=G.device).index_add_(0, example_of_row, rows.square().sum(1))


def _embedding_norms_sq(module: nn.Embedding, ids: torch.Tensor, G: torch.Tensor, step: Step, state: dict) -> Tensors:
    if not module.weight.requires_grad:
        return {}
    if _shared_distinct_ids(ids):  # each row of ∇E_i is one g_t: no pairs to match
        return {"weight": G.square().sum((1, 2))}
    return {"weight": embedding_norms_sq(ids, G, step.gram)}


def _embedding_clipped_sum(module: nn.Embedding, ids: torch.Tensor, G: torch.Tensor, c: torch.Tensor, step: Step,
                           state: dict) -> Tensors:
    if not module.weight.requires_grad:
        return {}
    if _shared_distinct_ids(ids):  # same ids in every row: weight the batch first, then T row updates
        rows, index = (c @ G.reshape(G.shape[0], -1)).view(G.shape[1:]), ids[0]
    else:
        # index_add touches only the rows that occur (never a per-example vocab × d tensor); excluded
        # positions get weight 0 and a harmless row index.
        weights = (c.view(-1, 1) * (ids >= 0)).unsqueeze(-1).to(G.dtype)
        rows, index = (G * weights).reshape(-1, G.shape[-1]), ids.clamp(min=0).reshape(-1)
    return {"weight": torch.zeros_like(module.weight).index_add_(0, index, rows.to(module.weight.dtype))}


register_rule(nn.Embedding, LayerRule(
    prepare=_embedding_ids, norms_sq=_embedding_norms_sq, clipped_sum=_embedding_clipped_sum, check=_embedding_check,
    span=_embedding_span,
))


# ---------------------------------------------------------------- LayerNorm
def _layer_norm_prepare(module: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    n = _tokens(module.normalized_shape)
    return x.detach().reshape(x.shape[0], _tokens(x.shape[1:]) // n, n)


def _layer_norm_finish(module: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    # x̂ = (x − μ)/√(σ² + eps) per token; the affine weight's per-example gradient is Σ_t g_t ⊙ x̂_t.
    return nn.functional.layer_norm(x, x.shape[-1:], None, None, module.eps)


def _layer_norm_per_example(module: nn.LayerNorm, xhat: torch.Tensor, G: torch.Tensor) -> Tensors:
    G = G.reshape(xhat.shape)
    grads = {}
    if module.weight is not None and module.weight.requires_grad:
        grads["weight"] = (G * xhat).sum(1)
    if module.bias is not None and module.bias.requires_grad:
        grads["bias"] = G.sum(1)
    return grads


def _layer_norm_norms_sq(module: nn.LayerNorm, xhat: torch.Tensor, G: torch.Tensor, step: Step,
                         state: dict) -> Tensors:
    # The per-example gradients are only (B, n): computing them directly is the cheap way, and the
    # book-keeping sum reuses them.
    grads = _layer_norm_per_example(module, xhat, G)
    if not step.grouped:
        state["per_example"] = grads
    return {name: g.square().sum(1) for name, g in grads.items()}


def _layer_norm_clipped_sum(module: nn.LayerNorm, xhat: torch.Tensor, G: torch.Tensor, c: torch.Tensor, step: Step,
                            state: dict) -> Tensors:
    grads = state.get("per_example") or _layer_norm_per_example(module, xhat, G)
    shapes = {"weight": module.weight, "bias": module.bias}
    return {name: (c @ g).reshape(shapes[name].shape) for name, g in grads.items()}


register_rule(nn.LayerNorm, LayerRule(
    prepare=_layer_norm_prepare, norms_sq=_layer_norm_norms_sq, clipped_sum=_layer_norm_clipped_sum,
    finish=_layer_norm_finish,
))


def supported_layers() -> list[str]:
    return sorted(cls.__name__ for cls in RULES)
