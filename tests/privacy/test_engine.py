"""The fast clipping engine against plain per-example loops (float64, 1e-6)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from trustml.models import EmbeddingClassifier, TransformerClassifier
from trustml.privacy import (
    ClippingEngine, LayerRule, UnsupportedLayerError, layer_bounds, naive_clipped_sum, register_rule,
)
from trustml.privacy.rules import RULES, embedding_norms_sq, linear_weight_norms_sq

TOL = dict(rtol=1e-6, atol=1e-9)


def classification_loss(model, batch):
    inputs, labels = batch
    return nn.functional.cross_entropy(model(inputs), labels, reduction="none")


def regression_loss(model, batch):
    inputs, targets = batch
    return (model(inputs) - targets).square().flatten(1).sum(1)


class Pool(nn.Module):
    """(B, T, d) -> (B, d) so that a token model ends in a per-example output."""

    def forward(self, x):
        return x.mean(1)


def token_ids(B, T, V, *, seed=0, pad_tail=True):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, V, (B, T), generator=generator)
    if pad_tail:  # variable lengths, right padding with id 0, and repeated ids inside examples
        lengths = torch.randint(1, T + 1, (B,), generator=generator)
        ids[torch.arange(T) >= lengths[:, None]] = 0
    return ids


def engine_grads(model, loss_fn, batch, **options):
    engine = ClippingEngine(model, **options)
    stats = engine.clipped_sum(loss_fn(model, batch))
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    engine.remove()
    for p in model.parameters():
        p.grad = None
    return grads, stats


def median_norm(model, loss_fn, batch):
    """A clipping bound that clips about half the examples (so the test exercises both branches)."""
    params = list(model.parameters())
    norms = []
    for i in range(len(batch[0])):
        grads = torch.autograd.grad(loss_fn(model, tuple(t[i:i + 1] for t in batch)).sum(), params, allow_unused=True)
        norms.append(torch.sqrt(sum(g.square().sum() for g in grads if g is not None)))
    return float(torch.stack(norms).median())


def assert_same(grads, reference):
    assert grads.keys() == reference.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], reference[name], **TOL, msg=lambda m, n=name: f"{n}: {m}")


def check_against_loop(model, loss_fn, batch, **options):
    model = model.double()
    bound = median_norm(model, loss_fn, batch)
    grads, stats = engine_grads(model, loss_fn, batch, max_grad_norm=bound, **options)
    reference = naive_clipped_sum(model, loss_fn, batch, max_grad_norm=bound)
    assert 0 < stats.clipped_fraction < 1, "the bound should clip some examples and not others"
    assert_same(grads, reference)


def float_batch(B, shape, out, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(B, *shape, generator=generator, dtype=torch.float64), \
        torch.randn(B, out, generator=generator, dtype=torch.float64)


# ------------------------------------------------------------------ each layer type
def test_linear_2d():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
    check_against_loop(model, regression_loss, float_batch(12, (5,), 3))


@pytest.mark.parametrize("T", [2, 12], ids=["ghost-norm", "direct-norm"])
def test_linear_3d_both_norm_formulas(T):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 3), Pool())
    check_against_loop(model, regression_loss, float_batch(10, (T, 6), 3))


def test_linear_norm_formulas_agree_with_materialised_gradients():
    generator = torch.Generator().manual_seed(1)
    for T in (1, 3, 40):
        A = torch.randn(7, T, 5, generator=generator, dtype=torch.float64)
        G = torch.randn(7, T, 4, generator=generator, dtype=torch.float64)
        expected = torch.einsum("btp,btd->bpd", G, A).square().sum((1, 2))
        torch.testing.assert_close(linear_weight_norms_sq(A, G), expected)


def test_linear_4d_input():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Flatten(1), nn.Linear(3 * 2 * 5, 2))
    check_against_loop(model, regression_loss, float_batch(9, (3, 2, 4), 2))


@pytest.mark.parametrize("padding_idx", [None, 0])
def test_embedding_with_and_without_padding_idx(padding_idx):
    # Flatten (not a masked mean) so that padding positions DO receive gradient: the true gradient of E
    # still has a zero padding row, and the engine must not count those positions.
    torch.manual_seed(0)
    V, T, d = 7, 6, 3
    model = nn.Sequential(nn.Embedding(V, d, padding_idx=padding_idx), nn.Flatten(1), nn.Linear(T * d, 2))
    batch = (token_ids(16, T, V), torch.randint(0, 2, (16,)))
    check_against_loop(model, classification_loss, batch)


def test_embedding_long_sequences_use_the_index_add_path():
    torch.manual_seed(0)
    V, T, d = 11, 80, 3
    model = nn.Sequential(nn.Embedding(V, d, padding_idx=0), nn.Linear(d, 2), Pool())
    batch = (token_ids(8, T, V), torch.randn(8, 2, dtype=torch.float64))
    check_against_loop(model, regression_loss, batch)
    generator = torch.Generator().manual_seed(2)
    ids = token_ids(5, T, V).masked_fill(token_ids(5, T, V) == 0, -1)  # -1: excluded (padding) positions
    G = torch.randn(5, T, 3, generator=generator, dtype=torch.float64)
    dense = torch.zeros(5, V, 3, dtype=torch.float64)
    valid = ids >= 0
    for b in range(5):
        dense[b].index_add_(0, ids[b][valid[b]], G[b][valid[b]])
    torch.testing.assert_close(embedding_norms_sq(ids, G), dense.square().sum((1, 2)))  # T > 64: index_add
    torch.testing.assert_close(embedding_norms_sq(ids[:, :40], G[:, :40]),  # T <= 64: pair mask
                               torch.stack([dense_norm(ids[b, :40], G[b, :40], V) for b in range(5)]))


def dense_norm(ids, G, V):
    valid = ids >= 0
    return torch.zeros(V, G.shape[-1], dtype=G.dtype).index_add_(0, ids[valid], G[valid]).square().sum()


def test_layer_norm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Linear(6, 2), Pool())
    with torch.no_grad():  # non-trivial affine parameters
        model[1].weight.normal_()
        model[1].bias.normal_()
    check_against_loop(model, regression_loss, float_batch(10, (5, 4), 2))


class ThreeProjections(nn.Module):
    """Three Linear layers reading one input, like attention's query, key and value projections."""

    def __init__(self, bias: bool):
        super().__init__()
        self.projections = nn.ModuleList(nn.Linear(6, 4, bias=bias) for _ in range(3))
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        q, k, v = (projection(x) for projection in self.projections)
        return self.head(torch.tanh(q) * k + v).mean(1)


@pytest.mark.parametrize("T", [2, 12], ids=["ghost-norm", "direct-norm"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_layers_reading_one_input_share_their_norm(T, bias, monkeypatch):
    calls = []
    rule = RULES[nn.Linear]

    def counted(*args):
        calls.append(len(args[0]))
        return rule.norms_sq_shared(*args)
    monkeypatch.setitem(RULES, nn.Linear, dataclasses.replace(rule, norms_sq_shared=counted))
    torch.manual_seed(0)
    check_against_loop(ThreeProjections(bias), regression_loss, float_batch(10, (T, 6), 3))
    assert calls == [3]  # the three projections' norms came from one call


def test_a_layer_called_twice_counts_both_calls():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(4, 4)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return self.head(torch.tanh(self.layer(torch.tanh(self.layer(x)))))

    torch.manual_seed(0)
    check_against_loop(Shared(), regression_loss, float_batch(10, (4,), 2))


def test_frozen_layers_are_skipped():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(9, 4, padding_idx=0), nn.Linear(4, 3), Pool()).double()
    model[0].weight.requires_grad_(False)
    batch = (token_ids(10, 5, 9), torch.randn(10, 3, dtype=torch.float64))
    grads, _ = engine_grads(model, regression_loss, batch, max_grad_norm=0.5)
    reference = naive_clipped_sum(model, regression_loss, batch, max_grad_norm=0.5)
    assert "0.weight" not in reference
    assert_same(grads, reference)


# ------------------------------------------------------------------ the book's models
def book_batch(B=24, T=10, V=30, classes=5):
    torch.manual_seed(0)
    return token_ids(B, T, V), torch.randint(0, classes, (B,))


def test_embedding_classifier():
    torch.manual_seed(0)
    check_against_loop(EmbeddingClassifier(30, 5, embed_dim=8, hidden_dim=6), classification_loss, book_batch())


def test_transformer_classifier():
    torch.manual_seed(0)
    model = TransformerClassifier(30, 5, d_model=8, n_heads=2, n_layers=2, d_ff=12, max_length=10)
    check_against_loop(model, classification_loss, book_batch())


@pytest.mark.parametrize("trim", [True, False], ids=["trim-zero-tokens", "all-tokens"])
def test_ghost_clipping_strategy(trim):
    torch.manual_seed(0)
    model = TransformerClassifier(30, 5, d_model=8, n_heads=2, n_layers=1, d_ff=12, max_length=10)
    check_against_loop(model, classification_loss, book_batch(), strategy="ghost", trim_zero_tokens=trim)


def test_a_rule_without_bookkeeping_falls_back_to_ghost_clipping():
    class NormOnlyLinear(nn.Linear):
        """A layer type whose rule gives norms only: its clipped sum must come from a second backward."""

    linear = RULES[nn.Linear]
    register_rule(NormOnlyLinear, LayerRule(prepare=linear.prepare, norms_sq=linear.norms_sq))
    try:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), NormOnlyLinear(4, 3))
        engine = ClippingEngine(model, max_grad_norm=1.0)
        assert [layer.name for layer in engine.ghost_layers] == ["2"]
        engine.remove()
        check_against_loop(model, regression_loss, float_batch(12, (5,), 3))
    finally:
        del RULES[NormOnlyLinear]


# ------------------------------------------------------------------ modes
def test_per_layer_clipping_on_the_transformer_with_equal_split():
    torch.manual_seed(0)
    model = TransformerClassifier(30, 5, d_model=8, n_heads=2, n_layers=1, d_ff=12, max_length=10).double()
    batch = book_batch()
    engine = ClippingEngine(model, max_grad_norm=0.2, clipping="per_layer")
    engine.clipped_sum(classification_loss(model, batch))
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    engine.remove()
    reference = naive_clipped_sum(model, classification_loss, batch, max_grad_norm=0.2,
                                  layer_max_grad_norms=engine.bounds)
    assert_same(grads, reference)


def test_per_layer_clipping_against_its_loop():
    torch.manual_seed(0)
    model = EmbeddingClassifier(30, 5, embed_dim=8, hidden_dim=6).double()
    batch = book_batch()
    names = ["embedding", "hidden", "head"]
    bounds = {"embedding": 0.05, "hidden": 0.1, "head": 0.2}
    total = sum(b * b for b in bounds.values()) ** 0.5
    grads, _ = engine_grads(model, classification_loss, batch, max_grad_norm=total, clipping="per_layer",
                            layer_max_grad_norms=bounds)
    reference = naive_clipped_sum(model, classification_loss, batch, max_grad_norm=total, layer_max_grad_norms=bounds)
    assert_same(grads, reference)
    flat = naive_clipped_sum(model, classification_loss, batch, max_grad_norm=total)
    assert not torch.allclose(flat["head.weight"], reference["head.weight"]), "per-layer should differ from flat"
    assert layer_bounds(names, 2.0, None) == pytest.approx({n: 2.0 / 3 ** 0.5 for n in names})


@pytest.mark.parametrize("model_name", ["embedding", "transformer"])
def test_micro_batch_clipping_against_its_loop(model_name):
    torch.manual_seed(0)
    model = (EmbeddingClassifier(30, 5, embed_dim=8, hidden_dim=6) if model_name == "embedding" else
             TransformerClassifier(30, 5, d_model=8, n_heads=2, n_layers=1, d_ff=12, max_length=10)).double()
    batch = book_batch(B=23)
    groups = torch.randint(0, 6, (23,), generator=torch.Generator().manual_seed(3))
    unclipped = ClippingEngine(model, max_grad_norm=1e9, mode="micro_batch", micro_batch_size=4)
    bound = float(unclipped.clipped_sum(classification_loss(model, batch), groups=groups).norms.median())
    unclipped.remove()
    engine = ClippingEngine(model, max_grad_norm=bound, mode="micro_batch", micro_batch_size=4)
    stats = engine.clipped_sum(classification_loss(model, batch), groups=groups)
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    engine.remove()
    reference = naive_clipped_sum(model, classification_loss, batch, max_grad_norm=bound, groups=groups)
    assert stats.n_units == len(torch.unique(groups))
    assert 0 < stats.clipped_fraction < 1
    assert_same(grads, reference)


# ------------------------------------------------------------------ errors
def test_unsupported_layer_is_named():
    model = nn.Sequential(nn.Embedding(10, 4), nn.GRU(4, 4, batch_first=True))
    with pytest.raises(UnsupportedLayerError, match=r"'1' \(GRU\)"):
        ClippingEngine(model, max_grad_norm=1.0)


def test_embedding_with_batch_dependent_gradient_is_refused():
    with pytest.raises(UnsupportedLayerError, match="scale_grad_by_freq"):
        ClippingEngine(nn.Embedding(10, 4, scale_grad_by_freq=True), max_grad_norm=1.0)


@pytest.mark.parametrize("options, message", [
    ({"max_grad_norm": 0.0}, "max_grad_norm"),
    ({"max_grad_norm": -1.0}, "max_grad_norm"),
    ({"max_grad_norm": 1.0, "mode": "per_token"}, "mode"),
    ({"max_grad_norm": 1.0, "mode": "micro_batch"}, "micro_batch_size"),
    ({"max_grad_norm": 1.0, "mode": "micro_batch", "micro_batch_size": 0}, "micro_batch_size"),
    ({"max_grad_norm": 1.0, "clipping": "per_layer", "layer_max_grad_norms": {"0": 1.0}}, "layer_max_grad_norms"),
])
def test_bad_engine_options(options, message):
    with pytest.raises(ValueError, match=message):
        ClippingEngine(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1)), **options)


def test_scalar_loss_is_refused():
    model = nn.Linear(3, 1)
    engine = ClippingEngine(model, max_grad_norm=1.0)
    with pytest.raises(ValueError, match="per-example losses"):
        engine.clipped_sum(model(torch.randn(4, 3)).mean())


# ------------------------------------------------------------------ internals that must stay exact
def test_an_output_changed_in_place_later_still_gets_its_own_gradient():
    class InPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.first, self.second = nn.Linear(4, 5), nn.Linear(5, 2)

        def forward(self, x):
            return self.second(torch.tanh_(self.first(x)))  # overwrites the first layer's output

    torch.manual_seed(0)
    check_against_loop(InPlace(), regression_loss, float_batch(10, (4,), 2))


def test_position_ids_shared_by_all_rows():
    class Positions(nn.Module):
        def __init__(self):
            super().__init__()
            self.position, self.head = nn.Embedding(6, 3), nn.Linear(3, 2)

        def forward(self, x):
            ids = torch.arange(x.shape[1]).expand(x.shape[0], x.shape[1])  # stride 0 over the batch
            return self.head(torch.tanh(self.position(ids) + x)).mean(1)

    from trustml.privacy.rules import _shared_distinct_ids
    assert _shared_distinct_ids(torch.arange(6).expand(4, 6))
    assert not _shared_distinct_ids(torch.tensor([[1, 2], [1, 2]]))  # equal rows, but not a stride-0 view
    torch.manual_seed(0)
    check_against_loop(Positions(), regression_loss, float_batch(10, (6, 3), 2))


def test_nonzero_span_with_and_without_a_hint():
    from trustml.privacy.engine import nonzero_span

    G = torch.zeros(3, 8, 2, dtype=torch.float64)
    G[1, 2] = 1.0
    G[0, 5, 1] = -1e-30  # tiny but non-zero (float64 resolves it)
    assert nonzero_span(G) == (2, 6)
    assert nonzero_span(G, hint=(1, 7)) == (1, 7)  # zero outside the hint: the hint is kept
    assert nonzero_span(G, hint=(2, 4)) == (2, 6)  # non-zero outside: searched again
    transposed = G.transpose(1, 2).contiguous().transpose(1, 2)  # non-contiguous last dim (as q @ kᵀ gives)
    assert nonzero_span(transposed) == (2, 6)
    assert nonzero_span(transposed, hint=(1, 7)) == (1, 7)
    assert nonzero_span(transposed, hint=(2, 5)) == (2, 6)
    assert nonzero_span(torch.zeros(2, 4, 3)) == (0, 0)
