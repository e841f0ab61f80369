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
import functools
import operator
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

Tensors = dict[str, torch.Tensor]


def add_all(tensors):
    """t₁ + t₂ + … (Python's ``sum`` would add a first ``0 + t₁`` operation)."""
    return functools.reduce(operator.add, tensors)


def same_dtype(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return x if x.dtype == dtype else x.to(dtype)  # skips a dispatched no-op call


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

    @staticmethod
    def _key(x: torch.Tensor) -> tuple:
        return x.data_ptr(), x.storage_offset(), tuple(x.shape), x.stride(), x.dtype

    def gram(self, x: torch.Tensor) -> torch.Tensor:
        key = self._key(x)
        if key not in self._grams:  # keep x alive: its memory must not be reused by another key
            self._grams[key] = (x, gram(x))
        return self._grams[key][1]

    def cached_gram(self, x: torch.Tensor) -> torch.Tensor | None:
        """x's Gram matrix if another layer already computed it this step, else None."""
        found = self._grams.get(self._key(x))
        return None if found is None else found[1]

    def state(self, name: str) -> dict:
        return self._states.setdefault(name, {})


@dataclasses.dataclass(frozen=True)
class LayerRule:
    """How the engine handles one layer type (see the module docstring).

    ``norms_sq(module, A, G, step, state)`` and ``clipped_sum(module, A, G, c, step, state)``; ``state`` is
    the layer's dict of this step. Optional: ``check(module)`` raises for configurations the rule cannot
    handle; ``finish(module, A)`` turns the stored input into what the two functions read and runs once
    per step after padding tokens are dropped (so its work is done on real tokens only); ``span(module, A)``
    gives the token range that can contribute (else the engine finds it from ``G``). ``prepare`` may keep
    a tuple of (B, T, ·) tensors (sliced and concatenated along T alike); ``finish`` then makes one tensor.
    """

    # Each function takes the layer (of the rule's type) first, so their arguments are typed loosely here.
    # (module, raw layer input, layer output) -> a (B, T, ·) tensor, or a tuple of them, kept from the forward hook
    prepare: Callable[..., torch.Tensor | tuple[torch.Tensor, ...]]
    norms_sq: Callable[..., Tensors]
    clipped_sum: Callable[..., Tensors] | None = None
    check: Callable[..., None] | None = None  # (module)
    finish: Callable[..., torch.Tensor] | None = None  # (module, prepared input)
    span: Callable[..., tuple[int, int] | None] | None = None  # (module, prepared input)
    # clipped_sum for several layers of this type that read the same input A:
    # (modules, A, [G], [c], step, [state]) -> [Tensors]
    clipped_sum_shared: Callable[..., list[Tensors]] | None = None
    # Σ over those layers of the squared per-example norms, for flat clipping (which needs only the total):
    # (modules, A, [G], step, [state]) -> (B,) tensor
    norms_sq_shared: Callable[..., torch.Tensor] | None = None


RULES: dict[type[nn.Module], LayerRule] = {}
#: Rules for layer types of optional libraries, by qualified class name: registered on first sight, so that
#: importing trustml does not import them (``transformers`` alone takes over a second).
LAZY_RULES: dict[str, Callable[[], LayerRule]] = {}


def register_rule(layer_type: type[nn.Module], rule: LayerRule) -> None:
    """Teach the engine a new layer type (a rule without ``clipped_sum`` falls back to ghost clipping)."""
    RULES[layer_type] = rule


def _qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def rule_for(module: nn.Module) -> LayerRule | None:
    """The rule of ``module``'s type or of its nearest registered base class."""
    for cls in type(module).__mro__:
        if cls not in RULES and _qualified_name(cls) in LAZY_RULES:
            register_rule(cls, LAZY_RULES[_qualified_name(cls)]())
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
def uses_ghost_norm(T: int, d: int, p: int) -> bool:
    """Whether the ghost norm (B·T²·(d+p) work) is cheaper than the direct one (B·T·d·p) for a Linear layer."""
    return T > 1 and T * (d + p) <= d * p


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
    if uses_ghost_norm(T, d, p):
        return (gram(A) * gram(G)).sum((1, 2))
    return torch.bmm(G.transpose(1, 2), A).square().sum((1, 2))


def _linear_norms_sq(module: nn.Linear, A: torch.Tensor, G: torch.Tensor, step: Step, state: dict) -> Tensors:
    norms = {}
    if module.weight.requires_grad:
        norms["weight"] = linear_weight_norms_sq(A, G, step.gram)
    if module.bias is not None and module.bias.requires_grad:
        if module.weight.requires_grad and uses_ghost_norm(G.shape[1], A.shape[-1], G.shape[-1]):
            # ‖∇b_i‖² = ‖Σ_t g_it‖² = Σ_{t,s} ⟨g_it, g_is⟩: the entries of the Gram matrix just computed.
            norms["bias"] = step.gram(G).sum((1, 2))
        else:
            bias_grads = G.sum(1)  # ∇b_i = Σ_t g_it
            norms["bias"] = bias_grads.square().sum(1)
            if not step.grouped:
                state["bias"] = bias_grads
    return norms


def _linear_clipped_sum(module: nn.Linear, A: torch.Tensor, G: torch.Tensor, c: torch.Tensor, step: Step,
                        state: dict) -> Tensors:
    # Σ_i c_i G_iᵀA_i = (c·G)ᵀA = Gᵀ(c·A) over all B·T rows: one weight gradient's cost.
    sums, scaled = {}, None
    if module.weight.requires_grad:
        p, d = G.shape[-1], A.shape[-1]
        # The scaled side is a new tensor, and the other side is copied by the product unless it is
        # contiguous: scale the narrower side, or G when A is copied anyway (then the bias sum can read
        # the scaled rows while they are in cache).
        if p <= d or not A.is_contiguous():
            scaled = G * c.view(-1, 1, 1)
            sums["weight"] = scaled.reshape(-1, p).T @ A.reshape(-1, d)
        else:
            sums["weight"] = G.reshape(-1, p).T @ (A * c.view(-1, 1, 1)).reshape(-1, d)
    if module.bias is not None and module.bias.requires_grad:
        # Σ_i c_i Σ_t g_it: from the per-example sums the norms kept, else the scaled rows, else G.
        sums["bias"] = (c @ state["bias"] if "bias" in state else
                        scaled.sum((0, 1)) if scaled is not None else c @ G.sum(1))
    return sums


def _linear_norms_sq_shared(modules: list[nn.Linear], A: torch.Tensor, Gs: list[torch.Tensor], step: Step,
                            states: list[dict]) -> torch.Tensor:
    # Σ_l ⟨A_iA_iᵀ, G_l,iG_l,iᵀ⟩ = ⟨A_iA_iᵀ, [G_1 … G_k]_i[G_1 … G_k]_iᵀ⟩: one Gram matrix of the joined
    # gradients instead of k, and the joined G is the left side of the shared book-keeping product too.
    # Bias terms Σ_l ‖Σ_t g_l,it‖² are the sum of all entries of that Gram matrix.
    T, d, p = A.shape[1], A.shape[-1], sum(G.shape[-1] for G in Gs)
    all_bias = all(m.bias is not None and m.bias.requires_grad for m in modules)
    if not (all(m.weight.requires_grad for m in modules) and all_bias and uses_ghost_norm(T, d, p)):
        return add_all(n for m, G, state in zip(modules, Gs, states)
                       for n in _linear_norms_sq(m, A, G, step, state).values())
    joined = torch.cat(Gs, dim=-1)
    if not step.grouped:
        states[0]["joined"] = joined
    joined_gram = gram(joined)
    return (step.gram(A) * joined_gram).sum((1, 2)) + joined_gram.sum((1, 2))


def _linear_clipped_sum_shared(modules: list[nn.Linear], A: torch.Tensor, Gs: list[torch.Tensor],
                               cs: list[torch.Tensor], step: Step, states: list[dict]) -> list[Tensors]:
    # [Σ_i c_i G_iᵀA_i for each layer] = one product [G_1 … G_k]ᵀ(c·A), split by rows (with one clipping
    # factor per example; per-layer clipping scales each G by its own factors instead).
    if not all(m.weight.requires_grad for m in modules):
        return [_linear_clipped_sum(m, A, G, c, step, state) for m, G, c, state in zip(modules, Gs, cs, states)]
    widths = [G.shape[-1] for G in Gs]
    if all(c is cs[0] for c in cs):
        left = states[0].pop("joined") if "joined" in states[0] else torch.cat(Gs, dim=-1)
        right = A * cs[0].view(-1, 1, 1)
        biases = (cs[0] @ left.sum(1)).split(widths)  # Σ_i c_i Σ_t g_it for every layer at once
    else:
        left, right = torch.cat([G * c.view(-1, 1, 1) for G, c in zip(Gs, cs)], dim=-1), A
        biases = left.sum((0, 1)).split(widths)  # rows already scaled by c
    weights = (left.reshape(-1, left.shape[-1]).T @ right.reshape(-1, right.shape[-1])).split(widths)
    sums = []
    for module, weight, bias in zip(modules, weights, biases):
        grads = {"weight": weight}
        if module.bias is not None and module.bias.requires_grad:
            grads["bias"] = bias
        sums.append(grads)
    return sums


register_rule(nn.Linear, LayerRule(
    prepare=lambda module, x, output: as_tokens(x), norms_sq=_linear_norms_sq, clipped_sum=_linear_clipped_sum,
    clipped_sum_shared=_linear_clipped_sum_shared, norms_sq_shared=_linear_norms_sq_shared,
))


# ---------------------------------------------------------------- Embedding
def _embedding_check(module: nn.Embedding) -> None:
    if module.scale_grad_by_freq:
        raise ValueError("Embedding with scale_grad_by_freq=True has no per-example gradient "
                         "(it depends on the whole batch's token counts); set it to False")
    if module.sparse:
        raise ValueError("Embedding with sparse=True is not supported by the clipping engine; use sparse=False")


def _embedding_ids(module: nn.Embedding, ids: torch.Tensor, output: torch.Tensor | None = None) -> torch.Tensor:
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
    state["shared_ids"] = _shared_distinct_ids(ids)  # (a device sync: once per step, reused by the sum)
    if state["shared_ids"]:  # each row of ∇E_i is one g_t: no pairs to match, ‖∇E_i‖² = Σ_t ‖g_t‖²
        known = step.cached_gram(G)  # e.g. the token embedding's, when the two embeddings are added
        if known is not None:
            return {"weight": torch.diagonal(known, dim1=1, dim2=2).sum(1)}
        return {"weight": G.square().sum((1, 2))}
    return {"weight": embedding_norms_sq(ids, G, step.gram)}


def _embedding_clipped_sum(module: nn.Embedding, ids: torch.Tensor, G: torch.Tensor, c: torch.Tensor, step: Step,
                           state: dict) -> Tensors:
    if not module.weight.requires_grad:
        return {}
    shared = state["shared_ids"] if "shared_ids" in state and not step.grouped else _shared_distinct_ids(ids)
    if shared:  # same ids in every row: weight the batch first, then T row updates
        rows, index = (c @ G.reshape(G.shape[0], -1)).view(G.shape[1:]), ids[0]
    else:
        # index_add touches only the rows that occur (never a per-example vocab × d tensor); excluded
        # positions get weight 0 and a harmless row index.
        weights = (c.view(-1, 1) * (ids >= 0)).unsqueeze(-1).to(G.dtype)
        rows, index = (G * weights).reshape(-1, G.shape[-1]), ids.clamp(min=0).reshape(-1)
    return {"weight": torch.zeros_like(module.weight).index_add_(0, index, same_dtype(rows, module.weight.dtype))}


register_rule(nn.Embedding, LayerRule(
    prepare=_embedding_ids, norms_sq=_embedding_norms_sq, clipped_sum=_embedding_clipped_sum, check=_embedding_check,
    span=_embedding_span,
))


# ---------------------------------------------------------------- LayerNorm
def _layer_norm_prepare(module: nn.LayerNorm, x: torch.Tensor, output: torch.Tensor
                        ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n = _tokens(module.normalized_shape)
    x = x.detach().reshape(x.shape[0], _tokens(x.shape[1:]) // n, n)
    node: Any = output.grad_fn  # autograd's node: its saved tensors are untyped attributes
    if type(node).__name__ == "NativeLayerNormBackward0":
        # Autograd saved each token's mean μ and 1/√(σ² + eps) for its own backward: keep references,
        # so that x̂ costs two element-wise operations later instead of a second normalisation.
        return x, node._saved_result1.reshape(x.shape[0], -1, 1), node._saved_result2.reshape(x.shape[0], -1, 1)
    return x


def _layer_norm_finish(module: nn.LayerNorm, x) -> torch.Tensor:
    # x̂ = (x − μ)/√(σ² + eps) per token; the affine weight's per-example gradient is Σ_t g_t ⊙ x̂_t.
    if isinstance(x, tuple):
        x, mean, inverse_std = x
        return torch.sub(x, mean).mul_(inverse_std)
    return nn.functional.layer_norm(x, x.shape[-1:], None, None, module.eps)


def _layer_norm_per_example(module: nn.LayerNorm, xhat: torch.Tensor, G: torch.Tensor, *,
                            overwrite: bool = False) -> Tensors:
    G = G.reshape(xhat.shape)
    grads = {}
    if module.weight is not None and module.weight.requires_grad:
        # overwrite: x̂ is this step's own tensor and is not read again, so G ⊙ x̂ can reuse its memory
        grads["weight"] = (xhat.mul_(G) if overwrite else G * xhat).sum(1)
    if module.bias is not None and module.bias.requires_grad:
        grads["bias"] = G.sum(1)
    return grads


def _layer_norm_norms_sq(module: nn.LayerNorm, xhat: torch.Tensor, G: torch.Tensor, step: Step,
                         state: dict) -> Tensors:
    # The per-example gradients are only (B, n): computing them directly is the cheap way, and the
    # book-keeping sum reuses them.
    # x̂ (finished for this step, or a micro-batch copy of it) is read again only by the micro-batch
    # sum, which takes the ungrouped tensor.
    grads = _layer_norm_per_example(module, xhat, G, overwrite=True)
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


# ---------------------------------------------------------------- Conv1D (Hugging Face: GPT-2)
def _conv1d_clipped_sum(module: nn.Module, A: torch.Tensor, G: torch.Tensor, c: torch.Tensor, step: Step,
                        state: dict) -> Tensors:
    # Conv1D computes x W + b with W of shape (d_in, d_out), the transpose of nn.Linear's: ∇W_i = A_iᵀG_i and
    # Σ_i c_i A_iᵀG_i = Aᵀ(c·G) over all B·T rows (norms are those of the transpose: the Linear rule's).
    sums = {}
    if module.weight.requires_grad:
        sums["weight"] = A.reshape(-1, A.shape[-1]).T @ (G * c.view(-1, 1, 1)).reshape(-1, G.shape[-1])
    if module.bias is not None and module.bias.requires_grad:
        sums["bias"] = c @ state["bias"] if "bias" in state else c @ G.sum(1)
    return sums


def _conv1d_rule() -> LayerRule:
    return LayerRule(prepare=lambda module, x, output: as_tokens(x), norms_sq=_linear_norms_sq,
                     clipped_sum=_conv1d_clipped_sum)


LAZY_RULES["transformers.pytorch_utils.Conv1D"] = _conv1d_rule


def supported_layers() -> list[str]:
    return sorted([cls.__name__ for cls in RULES] + [name for name in LAZY_RULES
                                                     if not any(_qualified_name(cls) == name for cls in RULES)])


# ---------------------------------------------------------------- shared (tied) parameters
# A parameter θ used by two layers a and b (GPT-2's output projection is its token embedding) has the
# per-example gradient ∇θ_i = ∇ᵃθ_i + ∇ᵇθ_i, so ‖∇θ_i‖² = ‖∇ᵃθ_i‖² + ‖∇ᵇθ_i‖² + 2⟨∇ᵃθ_i, ∇ᵇθ_i⟩: the engine
# adds the cross term from these functions, ``inner(module_a, A_a, G_a, module_b, A_b, G_b) -> (B,)``. Clipped
# sums simply add. A pair of layer types (and parameter names) without an entry is refused.
InnerFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
CROSS_TERMS: dict[tuple[type[nn.Module], str, type[nn.Module], str], InnerFn] = {}


def register_cross_term(type_a: type[nn.Module], name_a: str, type_b: type[nn.Module], name_b: str,
                        inner: InnerFn) -> None:
    """Teach the engine ⟨∇ᵃθ_i, ∇ᵇθ_i⟩ for a parameter shared as ``type_a.name_a`` and ``type_b.name_b``."""
    CROSS_TERMS[(type_a, name_a, type_b, name_b)] = inner


def cross_term_for(module_a: nn.Module, name_a: str, module_b: nn.Module, name_b: str) -> InnerFn | None:
    """The inner-product function for this pair (either order; nearest registered base classes), or None."""
    for cls_a in type(module_a).__mro__:
        for cls_b in type(module_b).__mro__:
            if (cls_a, name_a, cls_b, name_b) in CROSS_TERMS:
                return CROSS_TERMS[(cls_a, name_a, cls_b, name_b)]
            if (cls_b, name_b, cls_a, name_a) in CROSS_TERMS:
                return _swapped(CROSS_TERMS[(cls_b, name_b, cls_a, name_a)])
    return None


def _swapped(inner: InnerFn) -> InnerFn:
    def swapped(ma, Aa, Ga, mb, Ab, Gb) -> torch.Tensor:
        return inner(mb, Ab, Gb, ma, Aa, Ga)
    return swapped


def _linear_weight_inner(ma, A, G, mb, A2, G2) -> torch.Tensor:
    # ⟨G_iᵀA_i, G'_iᵀA'_i⟩ = Σ_{t,s} ⟨a_t, a'_s⟩⟨g_t, g'_s⟩: the ghost norm's formula across the two layers
    return (torch.bmm(A, A2.transpose(1, 2)) * torch.bmm(G, G2.transpose(1, 2))).sum((1, 2))


def _bias_inner(ma, A, G, mb, A2, G2) -> torch.Tensor:
    return (G.sum(1) * G2.sum(1)).sum(1)  # ⟨Σ_t g_t, Σ_s g'_s⟩


def _embedding_inner(ma, ids, G, mb, ids2, G2) -> torch.Tensor:
    # ⟨∇E_i, ∇'E_i⟩ = Σ_{t,s} [id_t = id'_s ≠ pad] ⟨g_t, g'_s⟩
    same = (ids.unsqueeze(2) == ids2.unsqueeze(1)) & (ids >= 0).unsqueeze(2)
    return (torch.bmm(G, G2.transpose(1, 2)) * same.to(G.dtype)).sum((1, 2))


def _embedding_linear_inner(me, ids, G_e, ml, A, G_l) -> torch.Tensor:
    # ∇E_i = Σ_t e_{id_t} g_tᵀ (rows of E) and ∇W_i = Σ_s g'_s a_sᵀ with W = E (V × d, an output projection
    # tied to the embedding), so ⟨∇E_i, ∇W_i⟩ = Σ_{t,s} g'_s[id_t] ⟨g_t, a_s⟩: no (V × d) tensor per example.
    index = ids.clamp(min=0).unsqueeze(1).expand(-1, G_l.shape[1], -1)  # (B, S, T)
    picked = torch.gather(G_l, 2, index) * (ids >= 0).unsqueeze(1).to(G_l.dtype)  # g'_s[id_t], padding excluded
    return (picked * torch.bmm(A, G_e.transpose(1, 2))).sum((1, 2))


def _layer_norm_inner(name: str) -> InnerFn:
    def inner(ma, xhat, G, mb, xhat2, G2) -> torch.Tensor:
        return (_layer_norm_per_example(ma, xhat, G)[name] * _layer_norm_per_example(mb, xhat2, G2)[name]).sum(1)
    return inner


for _name, _inner in (("weight", _linear_weight_inner), ("bias", _bias_inner)):
    register_cross_term(nn.Linear, _name, nn.Linear, _name, _inner)
    register_cross_term(nn.LayerNorm, _name, nn.LayerNorm, _name, _layer_norm_inner(_name))
register_cross_term(nn.Embedding, "weight", nn.Embedding, "weight", _embedding_inner)
register_cross_term(nn.Embedding, "weight", nn.Linear, "weight", _embedding_linear_inner)
