"""The fast clipping engine of eDP-SGD: exact per-example clipping without per-example gradients.

One training step of DP-SGD needs ``Σ_i clip_C(∇ℓ_i)``. The engine gets it in four moves:

1. forward hooks keep each parameterised layer's input ``A`` and output;
2. ONE backward pass computes only the gradients ``G`` of ``Σ_i ℓ_i`` with respect to those outputs
   (``torch.autograd.grad`` on the outputs skips every weight-gradient product);
3. per-example (or per-micro-batch) gradient norms from ``A`` and ``G`` layer by layer (``rules.py``),
   giving clipping factors ``f_i = min(1, C / (‖∇ℓ_i‖ + 10⁻⁶))``;
4. the clipped sum ``Σ_i f_i ∇ℓ_i`` per layer from the same ``A`` and ``G`` (book-keeping), or, for a
   layer whose rule has no book-keeping sum, by a second backward on ``Σ_i f_i ℓ_i`` (ghost clipping).

Modes: ``per_example`` (unit = one example) and ``micro_batch`` (unit = a micro-batch; its *mean*
gradient is clipped, as TF Privacy's ``num_microbatches``); clipping ``flat`` (one bound C) or
``per_layer`` (a bound C_l per layer with Σ_l C_l² = C²). Noise and accounting live in ``dpsgd.py``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import cast

import torch
from torch import nn
from torch.autograd.graph import get_gradient_edge

from trustml.privacy.rules import (
    InnerFn, LayerRule, Step, add_all, cross_term_for, rule_for, same_dtype, supported_layers,
)
from trustml.privacy.validation import check_positive

MODES = ("per_example", "micro_batch")
CLIPPINGS = ("flat", "per_layer")
STRATEGIES = ("bookkeeping", "ghost")
STABILITY = 1e-6  # as Opacus: f = C / (‖g‖ + 1e-6), capped at 1


class UnsupportedLayerError(TypeError):
    """A layer holds trainable parameters but the engine has no per-example rule for it."""


Prepared = torch.Tensor | tuple[torch.Tensor, ...]  # what a rule's ``prepare`` keeps: (B, T, ·) tensor(s)


@dataclasses.dataclass
class _Layer:
    name: str
    module: nn.Module
    rule: LayerRule
    params: dict[str, nn.Parameter]
    records: list = dataclasses.field(default_factory=list)  # (prepared input, gradient edge of the output)


@dataclasses.dataclass
class _Tie:
    """Two layers that share parameters (tied weights): the cross terms ⟨∇ᵃθ_i, ∇ᵇθ_i⟩ of their norms."""

    a: _Layer
    b: _Layer
    inners: list[InnerFn]  # one per shared parameter


def n_tokens(inputs: Prepared) -> int:
    return (inputs[0] if isinstance(inputs, tuple) else inputs).shape[1]


def slice_tokens(inputs: Prepared, start: int, stop: int) -> Prepared:
    if isinstance(inputs, tuple):
        return tuple(part[:, start:stop] for part in inputs)
    return inputs[:, start:stop]


def cat_tokens(calls: list[Prepared]) -> Prepared:
    if len(calls) == 1:
        return calls[0]
    if isinstance(calls[0], tuple):
        return tuple(torch.cat(parts, 1) for parts in zip(*cast(list[tuple[torch.Tensor, ...]], calls)))
    return torch.cat(cast(list[torch.Tensor], calls), 1)


@dataclasses.dataclass
class ClipStats:
    """What one call of :meth:`ClippingEngine.clipped_sum` saw."""

    batch_size: int
    n_units: int  # examples (per_example) or non-empty micro-batches
    norms: torch.Tensor  # (n_units,) unclipped gradient norm of each unit
    max_grad_norm: float

    @property
    def clipped_fraction(self) -> float:
        """Share of units whose gradient norm exceeded C (computed on demand: it costs a device sync)."""
        return float((self.norms > self.max_grad_norm).float().mean()) if self.n_units else float("nan")


def _per_token(G: torch.Tensor) -> torch.Tensor:
    """(B, T) non-negative, zero exactly where the example's gradient at that token is zero.

    Per-token 2-norms are one fused reduction when G's last dimension is contiguous (a token counts as
    zero only if its squares underflow, every entry below ~1e-19 in float32: nothing a norm resolves).
    """
    return torch.linalg.vector_norm(G, 2, dim=2) if G.stride(2) == 1 else G.abs().sum(2)


def _any_nonzero(G: torch.Tensor) -> bool:
    """Whether G (B, T, p) holds a non-zero entry (up to the underflow noted in :func:`_per_token`).

    Norms reduce along contiguous memory, the fast direction: each example's whole block when it is
    contiguous, else along the tokens when they are (e.g. the key projection's transposed gradient).
    """
    B, T, p = G.shape
    if G.stride(2) == 1 and (G.stride(1) == p or T == 1):
        return bool(torch.linalg.vector_norm(G.reshape(B, T * p), 2, dim=1).any())
    return bool(torch.linalg.vector_norm(G, 2, dim=1 if G.stride(1) == 1 else 2).any())


def _token_mass(G: torch.Tensor) -> torch.Tensor:
    """(T,) non-negative, zero exactly where every example's gradient at that token is zero."""
    return _per_token(G).sum(0)


def nonzero_span(G: torch.Tensor, hint: tuple[int, int] | None = None) -> tuple[int, int]:
    """[first, last) token positions of ``G`` (B, T, p) holding a non-zero gradient in some example.

    ``hint``: a span found for another layer; if G is zero outside it (reading only that part of G),
    it is kept — a wider span than needed is still exact, only less trimmed.
    """
    T = G.shape[1]
    if hint is not None and hint != (0, T):
        outside = [(0, hint[0]), (hint[1], T)]
        if not any(_any_nonzero(G[:, start:stop]) for start, stop in outside if stop > start):
            return hint
    nonzero = torch.nonzero(_token_mass(G)).flatten()
    return (int(nonzero[0]), int(nonzero[-1]) + 1) if len(nonzero) else (0, 0)


def layer_bounds(names: list[str], max_grad_norm: float, layer_max_grad_norms: Mapping[str, float] | None
                 ) -> dict[str, float]:
    """Per-layer bounds C_l with Σ C_l² = C²: equal split C/√L unless given (then they must add up)."""
    if layer_max_grad_norms is None:
        return {name: max_grad_norm / math.sqrt(len(names)) for name in names}
    unknown, missing = set(layer_max_grad_norms) - set(names), set(names) - set(layer_max_grad_norms)
    if unknown or missing:
        raise ValueError(f"layer_max_grad_norms must name exactly the layers {names}; "
                         f"unknown: {sorted(unknown)}, missing: {sorted(missing)}")
    for name, bound in layer_max_grad_norms.items():
        check_positive(f"layer_max_grad_norms[{name!r}]", bound)
    total = math.sqrt(sum(b * b for b in layer_max_grad_norms.values()))
    if not math.isclose(total, max_grad_norm, rel_tol=1e-6):
        raise ValueError(f"layer_max_grad_norms must satisfy Σ C_l² = max_grad_norm² = {max_grad_norm ** 2:g}; "
                         f"got √Σ C_l² = {total:g}")
    return dict(layer_max_grad_norms)


def _refuse_sequence_first(model: nn.Module) -> None:
    for name, module in model.named_modules():
        if getattr(module, "batch_first", None) is False:
            raise UnsupportedLayerError(
                f"layer {name or '<model>'!r} ({type(module).__name__}) has batch_first=False: the engine reads row "
                "i of every tensor as example i, so sequence-first data would give the norms of token positions; "
                "build it with batch_first=True")


class ClippingEngine:
    """Hooks a model and turns per-example losses into the clipped gradient sum in ``p.grad``.

    ``engine.clipped_sum(losses)`` after a forward pass of the hooked model writes
    ``Σ_units f_u · g_u`` into every trainable parameter's ``.grad`` (no noise, no averaging), where
    ``g_u`` is an example's gradient (``per_example``) or a micro-batch's mean gradient (``micro_batch``).

    What the model may do:

    - **Batch-first** tensors: row i of every layer's input and output belongs to example i. Layers with
      ``batch_first=False`` (``nn.MultiheadAttention``, ``nn.Transformer*``, RNNs) are refused; a layer fed
      sequence-first data by other means is detected when T ≠ B (its rows do not match the losses), but
      NOT when T == B: then its norms are silently those of token positions, not examples.
    - **Broadcast inputs**: a layer whose input and output have one row while the batch has B (Hugging Face
      position ids of shape (1, T)) is treated as applied to every example: its output is replaced by a
      stride-0 view expanded to B rows (no copy), so each example gets the exact gradient of its own use.
      The batch size is the first dimension of the model's first tensor argument; the expanded output must
      be consumed by broadcasting operations (``x + positions``), as such outputs are.
    - **Shared (tied) parameters**: a parameter used by several layers (GPT-2's output projection is its
      token embedding) gets the exact per-example norm, cross terms included (``rules.CROSS_TERMS``), and
      the exact clipped sum; a pair of layer types without a cross-term rule is refused when the engine is
      built, naming the parameter. A layer called several times needs nothing special (its calls'
      tokens are joined).
    - One forward pass per step; per-example losses must be finite (a NaN or inf loss is refused before
      any gradient is written).
    """

    def __init__(self, model: nn.Module, *, max_grad_norm: float, mode: str = "per_example",
                 micro_batch_size: int | None = None, clipping: str = "flat",
                 layer_max_grad_norms: Mapping[str, float] | None = None, strategy: str = "bookkeeping",
                 trim_zero_tokens: bool = True):
        check_positive("max_grad_norm", max_grad_norm)
        for option, value, allowed in (("mode", mode, MODES), ("clipping", clipping, CLIPPINGS),
                                       ("strategy", strategy, STRATEGIES)):
            if value not in allowed:
                raise ValueError(f"{option} must be one of {allowed}, got {value!r}")
        if mode == "micro_batch":
            if micro_batch_size is None or int(micro_batch_size) != micro_batch_size or micro_batch_size < 1:
                raise ValueError("micro_batch_size must be an integer >= 1 in micro_batch mode, "
                                 f"got {micro_batch_size}")
        elif micro_batch_size is not None:
            raise ValueError("micro_batch_size applies to mode='micro_batch' only")
        if layer_max_grad_norms is not None and clipping != "per_layer":
            raise ValueError("layer_max_grad_norms applies to clipping='per_layer' only")
        self.model, self.max_grad_norm, self.mode, self.clipping = model, float(max_grad_norm), mode, clipping
        self.micro_batch_size, self.strategy, self.trim_zero_tokens = micro_batch_size, strategy, trim_zero_tokens
        _refuse_sequence_first(model)
        self.layers = self._find_layers(model)
        self._parameters = list({id(p): p for layer in self.layers for p in layer.params.values()}.values())
        self.ties = self._find_ties(self.layers)
        if self.ties and clipping == "per_layer":
            shared = self._shared_names(self.ties[0])
            raise ValueError(f"per_layer clipping cannot bound the parameter {shared} shared by layers "
                             f"{self.ties[0].a.name!r} and {self.ties[0].b.name!r} (it belongs to both); "
                             "use clipping='flat'")
        self.bounds = (layer_bounds([layer.name for layer in self.layers], self.max_grad_norm, layer_max_grad_norms)
                       if clipping == "per_layer" else None)
        self.ghost_layers = [layer for layer in self.layers
                             if strategy == "ghost" or layer.rule.clipped_sum is None]
        if self.ghost_layers and clipping == "per_layer":
            names = [layer.name for layer in self.ghost_layers]
            raise ValueError(f"per_layer clipping needs book-keeping sums; layers {names} would need ghost clipping "
                             "(one second backward can apply only one clipping factor per example)")
        # A parameter shared with a ghost-clipped layer gets its whole clipped sum from the second backward.
        ghost_ids = {id(p) for layer in self.ghost_layers for p in layer.params.values()}
        self._ghost_params = [p for p in self.parameters() if id(p) in ghost_ids]
        self._batch_size: int | None = None  # rows of the current forward pass (from the model's first input)
        self._broadcast: list[str] = []  # layers whose one-row output was expanded in this forward pass
        self._handles = [model.register_forward_pre_hook(self._batch_rows, with_kwargs=True)]
        self._handles += [layer.module.register_forward_hook(self._capture(layer)) for layer in self.layers]

    # ------------------------------------------------------------------ set-up
    @staticmethod
    def _find_layers(model: nn.Module) -> list[_Layer]:
        layers = []
        for name, module in model.named_modules():
            params = {n: p for n, p in module.named_parameters(recurse=False) if p.requires_grad}
            if not params:
                continue
            rule = rule_for(module)
            if rule is None:
                raise UnsupportedLayerError(
                    f"layer {name or '<model>'!r} ({type(module).__name__}) has trainable parameters "
                    f"{sorted(params)} but no per-example gradient rule; supported layers: {supported_layers()} "
                    "(freeze it with requires_grad_(False), or add a rule with trustml.privacy.register_rule)")
            if rule.check is not None:
                try:
                    rule.check(module)
                except ValueError as error:
                    raise UnsupportedLayerError(f"layer {name!r}: {error}") from error
            layers.append(_Layer(name or "<model>", module, rule, params))
        if not layers:
            raise ValueError("the model has no trainable parameters")
        return layers

    @staticmethod
    def _find_ties(layers: list[_Layer]) -> list[_Tie]:
        owners: dict[int, list[tuple[_Layer, str]]] = {}
        for layer in layers:
            for name, p in layer.params.items():
                owners.setdefault(id(p), []).append((layer, name))
        ties: dict[tuple[str, str], _Tie] = {}
        for users in owners.values():
            for i, (a, name_a) in enumerate(users):
                for b, name_b in users[i + 1:]:
                    inner = cross_term_for(a.module, name_a, b.module, name_b)
                    if inner is None:
                        raise UnsupportedLayerError(
                            f"parameter {a.name}.{name_a} is shared with {b.name}.{name_b} "
                            f"({type(a.module).__name__} and {type(b.module).__name__}), and the engine has no "
                            "rule for the cross term of their per-example gradients, so it cannot clip them "
                            "exactly (add one with trustml.privacy.rules.register_cross_term, or untie them)")
                    tie = ties.setdefault((a.name, b.name), _Tie(a, b, []))
                    tie.inners.append(inner)
        return list(ties.values())

    @staticmethod
    def _shared_names(tie: _Tie) -> list[str]:
        b_params = {id(p) for p in tie.b.params.values()}
        return [f"{tie.a.name}.{name}" for name, p in tie.a.params.items() if id(p) in b_params]

    def parameters(self) -> list[nn.Parameter]:
        """The trainable parameters the engine writes, each once (a tied parameter belongs to several layers)."""
        return list(self._parameters)

    def _batch_rows(self, module, args, kwargs):
        first = next((x for x in (*args, *kwargs.values()) if isinstance(x, torch.Tensor) and x.dim() > 0), None)
        self._batch_size = None if first is None else first.shape[0]

    def _capture(self, layer: _Layer):
        def hook(module, inputs, output):
            if not (torch.is_grad_enabled() and isinstance(output, torch.Tensor) and output.requires_grad):
                return None
            # A detached input: the clipped sums built from it must not hold the step's graph (p.grad would
            # keep every activation alive into the next step).
            x = inputs[0].detach() if isinstance(inputs[0], torch.Tensor) else inputs[0]
            prepared = layer.rule.prepare(module, x, output)
            B = self._batch_size
            broadcast = (B is not None and B != 1 and output.dim() > 0 and output.shape[0] == 1
                         and isinstance(inputs[0], torch.Tensor) and inputs[0].dim() > 0 and inputs[0].shape[0] == 1)
            if broadcast:
                # Broadcast input (one row for the whole batch): the gradient each example's loss sends to
                # the expanded view is that example's own; the view costs no memory.
                self._broadcast.append(layer.name)
                output = output.expand(B, *output.shape[1:])
                prepared = (tuple(part.expand(B, *part.shape[1:]) for part in prepared)
                            if isinstance(prepared, tuple) else prepared.expand(B, *prepared.shape[1:]))
            # The output's gradient edge, not the output: the tensor's memory can be freed, and the
            # edge still receives the gradient of this value if the output is later changed in place.
            layer.records.append((prepared, get_gradient_edge(output)))
            return output if broadcast else None
        return hook

    def remove(self) -> None:
        """Detach the hooks (the model is then an ordinary model again)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.clear()

    def clear(self) -> None:
        for layer in self.layers:
            layer.records.clear()
        self._broadcast = []
        self._batch_size = None  # set again by the next forward pass of the whole model

    # ------------------------------------------------------------------ the step
    def micro_batch_groups(self, batch_size: int, *, n_groups: int | None = None,
                           generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """Random micro-batch of each example: uniform over ``n_groups`` groups, independently per example.

        Independent assignment keeps the privacy analysis local: adding or removing one example
        changes only its own micro-batch (a fixed partition by position would shift every later one).
        """
        if n_groups is None:
            if self.micro_batch_size is None:
                raise ValueError("n_groups is needed outside mode='micro_batch' (no micro_batch_size)")
            n_groups = max(1, math.ceil(batch_size / self.micro_batch_size))
        return torch.randint(n_groups, (batch_size,), generator=generator, device="cpu").to(device)

    def clipped_sum(self, losses: torch.Tensor, *, groups: torch.Tensor | None = None) -> ClipStats:
        """Write the clipped gradient sum into ``p.grad`` for the last forward pass; return statistics.

        ``losses``: the (B,) per-example losses (``reduction="none"``), all finite. ``groups`` (micro_batch
        mode): the micro-batch index of each example (default: :meth:`micro_batch_groups`). On an error
        no ``p.grad`` is changed and the recorded forward pass is dropped.
        """
        try:
            self._check_losses(losses)
        except ValueError:
            self.clear()
            raise
        B = losses.shape[0]
        if B == 0:  # an empty Poisson batch: the clipped sum is zero (the noise still comes)
            self.clear()
            for p in self._parameters:
                p.grad = torch.zeros_like(p)
            return ClipStats(0, 0, losses.new_zeros(0), self.max_grad_norm)
        active = [layer for layer in self.layers if layer.records]
        outputs = [edge for layer in active for _, edge in layer.records]
        if not outputs:
            self.clear()
            raise RuntimeError("no forward pass of the model was recorded before clipped_sum() (run the model in "
                               "train mode with gradients enabled, on the batch whose losses you pass)")
        try:
            if self._broadcast and self._batch_size != B:
                raise ValueError(f"layers {self._broadcast} had one-row inputs broadcast to the model's batch of "
                                 f"{self._batch_size} rows, but losses has {B}")
            grads = torch.autograd.grad(losses.sum(), outputs, allow_unused=True,
                                        retain_graph=bool(self._ghost_params))
            data = self._collect(active, grads, B)
            unit_of, unit_size, n_units = self._units(B, groups, losses.device)
            step = Step(grouped=unit_of is not None)
            factors, norms = self._factors(data, unit_of, unit_size, n_units, step)
            self._write_grads(data, factors, losses, step)
        finally:
            self.clear()
        return ClipStats(B, n_units, norms, self.max_grad_norm)

    @staticmethod
    def _check_losses(losses: torch.Tensor) -> None:
        if not isinstance(losses, torch.Tensor) or losses.dim() != 1:
            shape = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
            raise ValueError(f"losses must be the (batch,) per-example losses (use reduction='none'), got {shape}")
        if not losses.dtype.is_floating_point:
            raise ValueError(f"losses must be floating point, got {losses.dtype}")
        finite = torch.isfinite(losses.detach())
        if not bool(finite.all()):
            bad = torch.nonzero(~finite).flatten()[:10].tolist()
            raise ValueError(f"losses must be finite; examples {bad} have NaN or inf losses (no gradient was "
                             "written: drop or fix those examples, or lower the learning rate if training diverged)")

    def _collect(self, active: list[_Layer], grads, B: int) -> list[tuple[_Layer, torch.Tensor, torch.Tensor]]:
        """(layer, A, G) with the calls of a layer concatenated along the token axis."""
        data, position = [], 0
        spans: dict[int, tuple[int, int]] = {}  # token count T -> the last span found for it
        for layer in active:
            As, Gs = [], []
            for A, _ in layer.records:
                G = grads[position]
                position += 1
                if G is None:  # this call did not contribute to the loss
                    continue
                if G.shape[0] != B:
                    raise ValueError(f"layer {layer.name!r} saw a batch of {G.shape[0]} rows but losses has {B}: "
                                     "the engine assumes batch-first inputs and one forward pass per step (a "
                                     "one-row input is broadcast only when the hooked model itself is called, "
                                     "its first tensor argument giving the batch size)")
                As.append(A)
                Gs.append(G.reshape(B, n_tokens(A), -1))
            if not As:
                continue
            A, G = cat_tokens(As), (torch.cat(Gs, 1) if len(Gs) > 1 else Gs[0])
            G = G.detach()
            if self.trim_zero_tokens and G.shape[1] > 1:
                # Tokens that contribute nothing to any formula (padding) are dropped: the rule may know
                # the span from its input (e.g. embedding ids), else keep the positions with a non-zero
                # output gradient. Norms and sums then skip the same tokens, so every example's clipped
                # contribution still has norm <= C.
                span = layer.rule.span(layer.module, A) if layer.rule.span is not None else None
                if span is None:
                    span = nonzero_span(G, hint=spans.get(G.shape[1]))
                spans[G.shape[1]] = span
                if span != (0, G.shape[1]):
                    A, G = slice_tokens(A, *span), G[:, span[0]:span[1]]
            if layer.rule.finish is not None:
                A = layer.rule.finish(layer.module, A)
            data.append((layer, A, G))
        return data

    def _units(self, B: int, groups: torch.Tensor | None, device):
        if self.mode == "per_example":
            if groups is not None:
                raise ValueError("groups applies to mode='micro_batch' only")
            return None, None, B
        if groups is None:
            groups = self.micro_batch_groups(B, device=device)
        groups = torch.as_tensor(groups, device=device).long()
        if groups.shape != (B,) or (B and groups.min() < 0):
            raise ValueError("groups must be a (batch,) tensor of micro-batch indices >= 0, "
                             f"got shape {tuple(groups.shape)}")
        # Renumber to the non-empty micro-batches 0..U-1.
        present, unit_of = torch.unique(groups, return_inverse=True)
        unit_size = torch.bincount(unit_of, minlength=len(present))
        return unit_of, unit_size, len(present)

    @staticmethod
    def _group(x: torch.Tensor, unit_of: torch.Tensor, unit_size: torch.Tensor, n_units: int) -> torch.Tensor:
        """(B, T, ·) -> (U, M·T, ·): each micro-batch becomes one "example" whose tokens are its members'.

        The gradient of a micro-batch's summed loss is the sum of its members' gradients, i.e. the same
        token sums over more tokens; zero-padded slots add nothing because their G is zero.
        """
        order = torch.argsort(unit_of, stable=True)
        starts = torch.cumsum(unit_size, 0) - unit_size
        slot = torch.empty_like(unit_of)
        slot[order] = torch.arange(len(unit_of), device=unit_of.device) - starts[unit_of[order]]
        M = int(unit_size.max()) if len(unit_size) else 1
        fill = -1 if x.dtype == torch.long else 0  # -1: an excluded embedding id
        out = torch.full((n_units, M, *x.shape[1:]), fill, dtype=x.dtype, device=x.device)
        out[unit_of, slot] = x
        return out.reshape(n_units, M * x.shape[1], *x.shape[2:])

    @staticmethod
    def _by_input(data, shared: str | None) -> list[list]:
        """``data`` in lists of (layer, A, G): the layers of one type that read the same input A together
        when their rule has the ``shared`` function (the query, key and value projections), else one each."""
        groups: dict[tuple, list] = {}
        for layer, A, G in data:
            joint = shared is not None and getattr(layer.rule, shared) is not None
            key = (id(layer.rule), A.data_ptr(), tuple(A.shape), A.stride()) if joint else (layer.name,)
            groups.setdefault(key, []).append((layer, A, G))
        return list(groups.values())

    def _factors(self, data, unit_of, unit_size, n_units: int, step: Step):
        """Per-example coefficients c (one per layer for per_layer clipping) and the unit norms."""
        # layer names -> Σ of their squared norms (one name each under per-layer clipping; () for cross terms)
        norms_sq: dict[tuple[str, ...], torch.Tensor] = {}
        # Cross terms of tied parameters first: the LayerNorm rule's norms reuse x̂'s memory.
        cross = self._cross_terms(data, unit_of, unit_size, n_units)
        if cross is not None:
            norms_sq[()] = cross
        # Flat clipping needs only the total norm: layers sharing an input may compute theirs jointly.
        for members in self._by_input(data, "norms_sq_shared" if self.clipping == "flat" else None):
            layers, A, Gs = [layer for layer, _, _ in members], members[0][1], [G for _, _, G in members]
            if unit_of is not None:
                A, *Gs = (self._group(t, unit_of, unit_size, n_units) for t in (A, *Gs))
            states = [step.state(layer.name) for layer in layers]
            if len(layers) > 1:
                total = layers[0].rule.norms_sq_shared([layer.module for layer in layers], A, Gs, step, states)
            else:
                total = add_all(layers[0].rule.norms_sq(layers[0].module, A, Gs[0], step, states[0]).values())
            norms_sq[tuple(layer.name for layer in layers)] = total
        if self.mode == "micro_batch":  # the micro-batch *mean*: divide the sum's norm by the size
            scale = unit_size.to(next(iter(norms_sq.values())).dtype)
            norms_sq = {names: n / scale.square() for names, n in norms_sq.items()}
        # Ghost norms are sums of products that can round a tiny norm² below zero: floor at 0.
        norm = add_all(norms_sq.values()).clamp_min(0.0).sqrt_()
        if self.bounds is None:  # flat clipping
            f = (self.max_grad_norm / (norm + STABILITY)).clamp_(max=1.0)
            factors = {name: f for names in norms_sq for name in names}
        else:  # per-layer: one layer per key (tied parameters are refused)
            bounds = self.bounds
            factors = {names[0]: (bounds[names[0]] / (n.clamp_min(0.0).sqrt_() + STABILITY)).clamp_(max=1.0)
                       for names, n in norms_sq.items()}
        if self.mode == "micro_batch":  # per-example coefficient c_i = f_unit(i) / |unit(i)|
            factors = {name: (f / unit_size.to(f.dtype))[unit_of] for name, f in factors.items()}
        return factors, norm.detach()

    def _cross_terms(self, data, unit_of, unit_size, n_units: int) -> torch.Tensor | None:
        """Σ over tied layer pairs of 2⟨∇ᵃθ_i, ∇ᵇθ_i⟩ (None without tied parameters in this pass)."""
        found = {layer.name: (A, G) for layer, A, G in data}
        terms = []
        for tie in self.ties:
            if tie.a.name not in found or tie.b.name not in found:
                continue  # one of the two did not contribute to the loss: no cross term
            A_a, G_a, A_b, G_b = (*found[tie.a.name], *found[tie.b.name])
            if unit_of is not None:
                A_a, G_a, A_b, G_b = (self._group(t, unit_of, unit_size, n_units) for t in (A_a, G_a, A_b, G_b))
            terms += [2 * inner(tie.a.module, A_a, G_a, tie.b.module, A_b, G_b) for inner in tie.inners]
        return add_all(terms) if terms else None

    def _write_grads(self, data, factors, losses: torch.Tensor, step: Step) -> None:
        seen = {layer.name for layer, _, _ in data}
        ghost = {layer.name for layer in self.ghost_layers}
        ghost_ids = {id(p) for p in self._ghost_params}
        written: set[int] = set()

        def write(p: torch.Tensor, grad: torch.Tensor) -> None:
            grad = same_dtype(grad, p.dtype)
            if id(p) not in written:
                p.grad = grad
                written.add(id(p))
            elif p.grad is None:
                raise RuntimeError("a written gradient disappeared during the step")
            elif p.grad._base is None:  # a tied parameter: its layers' sums add up
                p.grad.add_(grad)
            else:  # a view of another tensor (e.g. one split of a joint product): do not write through it
                p.grad = p.grad + grad
        # Layers of one type that read the same input (query, key and value projections) share one
        # book-keeping product when their rule offers it: one copy of A, one larger matrix product.
        for members in self._by_input([item for item in data if item[0].name not in ghost], "clipped_sum_shared"):
            layers = [layer for layer, _, _ in members]
            cs = [same_dtype(factors[layer.name], G.dtype) for layer, _, G in members]
            states = [step.state(layer.name) for layer in layers]
            if len(members) > 1:
                sums = layers[0].rule.clipped_sum_shared([layer.module for layer in layers], members[0][1],
                                                         [G for _, _, G in members], cs, step, states)
            else:
                (layer, A, G), = members
                sums = [layer.rule.clipped_sum(layer.module, A, G, cs[0], step, states[0])]
            for layer, grads in zip(layers, sums):
                for name, grad in grads.items():
                    if id(layer.params[name]) not in ghost_ids:
                        write(layer.params[name], grad)
        used = {id(p) for layer in self.layers if layer.name in seen for p in layer.params.values()}
        ghost_params = [p for p in self._ghost_params if id(p) in used]
        if ghost_params:
            # Ghost clipping (Li et al. 2022): one more backward, on the re-weighted loss Σ_i c_i ℓ_i
            # (autograd adds up every use of a tied parameter).
            c = next(iter(factors.values())).detach().to(losses.dtype)
            for p, grad in zip(ghost_params, torch.autograd.grad((c * losses).sum(), ghost_params)):
                write(p, grad)
        for p in self._parameters:  # a parameter unused in this forward pass has a zero clipped sum
            if id(p) not in written:
                p.grad = torch.zeros_like(p)
