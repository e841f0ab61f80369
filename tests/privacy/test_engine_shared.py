"""The engine on shared (tied) parameters, broadcast inputs and bad input: exact, or a clear refusal.

References are per-example loops of ordinary backward passes written here (float64), so that the
engine is not only compared with the project's own ``naive_clipped_sum``.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trustml.privacy import DPSGD, ClippingEngine, UnsupportedLayerError
from trustml.privacy.engine import STABILITY

TOL = dict(rtol=1e-6, atol=1e-10)


def loop_clipped_sum(model, loss_fn, batch, *, max_grad_norm, groups=None):
    """Σ_u clip(∇ mean-loss of unit u): one backward per example (or micro-batch), autograd adding every use
    of a tied parameter. Returns ({name: sum}, norms)."""
    params = dict(model.named_parameters())  # each shared parameter once
    params = {n: p for n, p in params.items() if p.requires_grad}
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    units = ([torch.tensor([i]) for i in range(len(batch[0]))] if groups is None else
             [torch.nonzero(groups == g).flatten() for g in torch.unique(groups)])
    norms = []
    for index in units:
        loss = loss_fn(model, tuple(t[index] for t in batch)).mean()
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params.values(), grads)]
        norm = torch.sqrt(sum(g.square().sum() for g in grads))
        norms.append(norm)
        factor = min(1.0, max_grad_norm / (float(norm) + STABILITY))
        for n, g in zip(params, grads):
            total[n] += factor * g
    return total, torch.stack(norms)


def engine_clipped_sum(model, loss_fn, batch, *, max_grad_norm, groups=None, **options):
    engine = ClippingEngine(model, max_grad_norm=max_grad_norm, **options)
    stats = engine.clipped_sum(loss_fn(model, batch), groups=groups)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    engine.remove()
    for p in model.parameters():
        p.grad = None
    return grads, stats


def check(model, loss_fn, batch, *, groups=None, **options):
    """The engine equals the loop, with a bound that clips some units and not others."""
    model = model.double()
    _, norms = loop_clipped_sum(model, loss_fn, batch, max_grad_norm=1e9, groups=groups)
    bound = float(norms.median())
    reference, _ = loop_clipped_sum(model, loss_fn, batch, max_grad_norm=bound, groups=groups)
    micro = {} if groups is None else {"mode": "micro_batch", "micro_batch_size": 3}
    grads, stats = engine_clipped_sum(model, loss_fn, batch, max_grad_norm=bound, groups=groups, **micro, **options)
    assert 0 < stats.clipped_fraction < 1
    assert grads.keys() == reference.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], reference[name], **TOL, msg=lambda m, n=name: f"{n}: {m}")


def cross_entropy(model, batch):
    inputs, labels = batch
    return nn.functional.cross_entropy(model(inputs), labels, reduction="none")


def ids_batch(B=12, T=5, V=9, *, classes=None, seed=0, pad=False):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1 if pad else 0, V, (B, T), generator=generator)
    if pad:
        lengths = torch.randint(1, T + 1, (B,), generator=generator)
        ids[torch.arange(T) >= lengths[:, None]] = 0
    return ids, torch.randint(0, classes or V, (B,), generator=generator)


class TiedLM(nn.Module):
    """Token embedding tied to the output projection (GPT-2, BERT's MLM head), with padding tokens."""

    def __init__(self, V=9, d=4, padding_idx=None):
        super().__init__()
        self.embed = nn.Embedding(V, d, padding_idx=padding_idx)
        self.mix = nn.Linear(d, d)
        self.out = nn.Linear(d, V, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, ids):
        return self.out(torch.tanh(self.mix(self.embed(ids)))).mean(1)


class SharedLinear(nn.Module):
    """Two Linear modules holding the same weight (and their own biases), and two LayerNorms sharing both
    parameters."""

    def __init__(self, d=4):
        super().__init__()
        self.embed = nn.Embedding(9, d)
        self.first, self.second = nn.Linear(d, d), nn.Linear(d, d)
        self.second.weight = self.first.weight
        self.norm_a, self.norm_b = nn.LayerNorm(d), nn.LayerNorm(d)
        self.norm_b.weight, self.norm_b.bias = self.norm_a.weight, self.norm_a.bias
        with torch.no_grad():
            self.norm_a.weight.normal_()
            self.norm_a.bias.normal_()
        self.head = nn.Linear(d, 3)

    def forward(self, ids):
        x = self.embed(ids)
        x = self.norm_a(torch.tanh(self.first(x)))
        return self.head(self.norm_b(torch.tanh(self.second(x)) + x)).mean(1)


class TwoEmbeddings(nn.Module):
    """One embedding table read by two Embedding modules (shared input and output vocabularies)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Embedding(9, 4, padding_idx=0), nn.Embedding(9, 4)
        self.b.weight = self.a.weight
        self.head = nn.Linear(4, 3)

    def forward(self, ids):
        return self.head(torch.tanh(self.a(ids) * self.b(ids.flip(1)))).mean(1)


@pytest.mark.parametrize("strategy", ["bookkeeping", "ghost"])
@pytest.mark.parametrize("padding_idx", [None, 0])
def test_embedding_tied_to_the_output_projection(strategy, padding_idx):
    torch.manual_seed(0)
    check(TiedLM(padding_idx=padding_idx), cross_entropy, ids_batch(pad=padding_idx is not None), strategy=strategy)


@pytest.mark.parametrize("model", [SharedLinear, TwoEmbeddings], ids=["linear+layernorm", "embedding"])
@pytest.mark.parametrize("strategy", ["bookkeeping", "ghost"])
def test_parameters_shared_by_modules_of_one_type(model, strategy):
    torch.manual_seed(0)
    check(model(), cross_entropy, ids_batch(B=14, classes=3), strategy=strategy)


@pytest.mark.parametrize("strategy", ["bookkeeping", "ghost"])
def test_tied_parameters_in_micro_batch_mode(strategy):
    torch.manual_seed(0)
    groups = torch.randint(0, 5, (14,), generator=torch.Generator().manual_seed(1))
    check(TiedLM(padding_idx=0), cross_entropy, ids_batch(B=14, pad=True), groups=groups, strategy=strategy)


def test_tied_parameter_gets_one_noise_draw_and_one_division():
    # Each parameter must receive N(0, σ²C²) once and be divided by the expected batch once, however many
    # layers use it (the old step noised and divided the tied matrix twice).
    torch.manual_seed(0)
    model = TiedLM(V=50, d=40)
    with torch.no_grad():
        model.embed.weight.zero_()  # zero weight: every per-example gradient of it is 0, only noise remains
    dp = DPSGD(model, torch.optim.SGD(model.parameters(), lr=0.0), noise_multiplier=1.0, max_grad_norm=1.0, seed=0)
    ids, labels = ids_batch(B=4, V=50)
    dp.step(cross_entropy(model, (ids, labels)))
    noise = model.embed.weight.grad * dp.expected_units(4)
    assert float(noise.std()) == pytest.approx(1.0, rel=0.05)


def test_tied_pair_without_a_cross_term_rule_is_refused():
    from transformers.pytorch_utils import Conv1D

    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear, self.conv = nn.Linear(4, 4, bias=False), Conv1D(4, 4)
            self.conv.weight = self.linear.weight

        def forward(self, x):
            return self.conv(self.linear(x))

    with pytest.raises(UnsupportedLayerError, match=r"parameter linear\.weight is shared with conv\.weight"):
        ClippingEngine(Mixed(), max_grad_norm=1.0)


def test_per_layer_clipping_of_a_tied_parameter_is_refused():
    with pytest.raises(ValueError, match=r"embed\.weight.*shared"):
        ClippingEngine(TiedLM(), max_grad_norm=1.0, clipping="per_layer")


# ------------------------------------------------------------------ broadcast inputs
class BroadcastPositions(nn.Module):
    """Position ids of shape (1, T) broadcast over the batch (as Hugging Face models build them), and a
    Linear layer applied to a one-row parameter-free input."""

    def __init__(self):
        super().__init__()
        self.token, self.position = nn.Embedding(9, 4), nn.Embedding(8, 4)
        self.bias_net = nn.Linear(3, 4)
        self.head = nn.Linear(4, 3)
        self.register_buffer("prototype", torch.linspace(-1, 1, 3).view(1, 1, 3))

    def forward(self, ids):
        positions = torch.arange(ids.shape[1]).unsqueeze(0)  # (1, T)
        x = self.token(ids) + self.position(positions) + self.bias_net(self.prototype)
        return self.head(torch.tanh(x)).mean(1)


@pytest.mark.parametrize("strategy", ["bookkeeping", "ghost"])
def test_broadcast_inputs_are_exact(strategy):
    torch.manual_seed(0)
    check(BroadcastPositions(), cross_entropy, ids_batch(B=10, classes=3), strategy=strategy)


def test_broadcast_inputs_in_micro_batch_mode():
    torch.manual_seed(0)
    groups = torch.randint(0, 4, (10,), generator=torch.Generator().manual_seed(2))
    check(BroadcastPositions(), cross_entropy, ids_batch(B=10, classes=3), groups=groups)


def test_broadcast_with_losses_of_another_batch_is_refused():
    model = BroadcastPositions()
    engine = ClippingEngine(model, max_grad_norm=1.0)
    ids, labels = ids_batch(B=6, classes=3)
    losses = cross_entropy(model, (ids, labels))
    model(ids[:3])  # a second forward pass on another batch
    with pytest.raises(ValueError, match="broadcast"):
        engine.clipped_sum(losses)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_loss_is_refused_before_anything_is_written(bad):
    torch.manual_seed(0)
    model = TiedLM()
    dp = DPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=1.0, max_grad_norm=1.0, seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = cross_entropy(model, ids_batch())
    losses = torch.cat([losses[:3], losses[3:4] * bad, losses[4:]])
    with pytest.raises(ValueError, match=r"finite; examples \[3\]"):
        dp.step(losses)
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert dp.steps_taken == 0 and not dp.history
    dp.step(cross_entropy(model, ids_batch()))  # the engine is usable again (the bad pass was dropped)
    assert dp.steps_taken == 1


def test_an_empty_batch_outside_the_poisson_loader_is_refused():
    model = TiedLM()
    dp = DPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=1.0, max_grad_norm=1.0, seed=0)
    ids, labels = ids_batch()
    with pytest.raises(ValueError, match="empty batch"):
        dp.step(cross_entropy(model, (ids[:0], labels[:0])))
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("losses, message", [
    (torch.ones(3, 2), "per-example losses"),
    (torch.ones(3, dtype=torch.long), "floating point"),
])
def test_bad_losses(losses, message):
    model = TiedLM()
    engine = ClippingEngine(model, max_grad_norm=1.0)
    with pytest.raises(ValueError, match=message):
        engine.clipped_sum(losses)


def test_sequence_first_layers_are_refused():
    # With B == T a sequence-first model's norms would silently be those of token positions.
    class SequenceFirst(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(4, 4).requires_grad_(False)  # frozen, but it makes the data sequence-first
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.rnn(x)[0])

    with pytest.raises(UnsupportedLayerError, match="batch_first=False"):
        ClippingEngine(SequenceFirst(), max_grad_norm=1.0)


def test_the_written_gradients_hold_no_graph():
    # p.grad built from stored activations must not keep the step's autograd graph (and every activation)
    # alive until the next step.
    torch.manual_seed(0)
    model = TiedLM()
    engine = ClippingEngine(model, max_grad_norm=1.0)
    engine.clipped_sum(cross_entropy(model, ids_batch()))
    assert not any(p.grad.requires_grad for p in model.parameters())


def test_a_submodule_called_alone_does_not_reuse_the_last_batch_size():
    # The batch size comes from the hooked model's own call; calling only a part of it afterwards must not
    # expand one-row outputs to the previous batch's size.
    model = BroadcastPositions()
    engine = ClippingEngine(model, max_grad_norm=1.0)
    ids, labels = ids_batch(B=6, classes=3)
    engine.clipped_sum(cross_entropy(model, (ids, labels)))
    positions = model.position(torch.arange(5).unsqueeze(0))  # (1, T, d): no broadcast without the model call
    losses = (model.token(ids[:4]) + positions).sum((1, 2))
    with pytest.raises(ValueError, match="saw a batch of 1 rows"):
        engine.clipped_sum(losses)
