"""DPSGD: the noise it adds, the ε it reports, Poisson sampling, optimizers and train_private."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from trustml.models import EmbeddingClassifier, accuracy
from trustml.privacy import (
    DPSGD, PoissonBatches, PoissonSamplingRequired, epsilon_of_history, get_epsilon, noise_schedule, train_private,
)


class ZeroGradient(nn.Module):
    """A model whose loss does not depend on its parameters' values: every per-example gradient is 0."""

    def __init__(self, size=500):
        super().__init__()
        self.linear = nn.Linear(size, 1)

    def forward(self, x):
        return self.linear(x) * 0.0


def tiny_task(n=400, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 20, (n, 6), generator=generator)
    labels = (ids.float().mean(1) > 10).long()  # learnable from the mean-pooled tokens
    return TensorDataset(ids, labels)


@pytest.mark.parametrize("mode, sensitivity", [("per_example", 1.0), ("micro_batch", 2.0)])
def test_noise_has_std_sigma_times_sensitivity(mode, sensitivity):
    model = ZeroGradient()
    sigma, bound, batch = 0.7, 1.5, 8
    dp = DPSGD(model, torch.optim.SGD(model.parameters(), lr=0.0), noise_multiplier=sigma, max_grad_norm=bound,
               mode=mode, micro_batch_size=4 if mode == "micro_batch" else None, seed=0)
    draws = []
    for _ in range(40):
        x = torch.randn(batch, 500)
        dp.step(model(x).squeeze(1))
        draws.append(model.linear.weight.grad.flatten() * dp.expected_units(batch))
    draws = torch.cat(draws)  # 20 000 noise coordinates
    assert abs(float(draws.mean())) < 0.05 * sigma * bound * sensitivity
    assert float(draws.std()) == pytest.approx(sigma * bound * sensitivity, rel=0.03)
    assert dp.noise_std == pytest.approx(sigma * bound * sensitivity)


def test_epsilon_equals_the_accountant_for_the_same_history():
    torch.manual_seed(0)
    data = tiny_task()
    model = EmbeddingClassifier(20, 2, embed_dim=8, hidden_dim=8)
    dp = DPSGD(model, torch.optim.Adam(model.parameters(), lr=0.01), noise_multiplier=1.2, max_grad_norm=1.0,
               noise_decay=0.8, delta=1e-4, seed=0)
    loader = dp.poisson_loader(data, batch_size=40, epochs=3)
    for inputs, labels in loader:
        dp.step(nn.functional.cross_entropy(model(inputs), labels, reduction="none"))
    assert dp.steps_taken == 30 and len(loader) == 30
    schedule = noise_schedule(1.2, steps=30, steps_per_epoch=10, noise_decay=0.8)
    expected = get_epsilon(noise_multiplier=schedule, sample_rate=0.1, delta=1e-4)
    assert dp.epsilon() == pytest.approx(expected, rel=1e-12)
    assert epsilon_of_history(dp.history, delta=1e-4) == pytest.approx(expected, rel=1e-12)


def test_epsilon_is_refused_without_poisson_sampling():
    data = tiny_task()
    model = EmbeddingClassifier(20, 2, embed_dim=8, hidden_dim=8)
    dp = DPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=1.0, max_grad_norm=1.0,
               delta=1e-4)
    dp.poisson_loader(data, batch_size=40, epochs=1)  # q is known, but the batch below is not Poisson-sampled
    inputs, labels = data.tensors[0][:40], data.tensors[1][:40]
    dp.step(nn.functional.cross_entropy(model(inputs), labels, reduction="none"))
    with pytest.raises(PoissonSamplingRequired, match="Poisson"):
        dp.epsilon()


def test_poisson_batches_have_binomial_sizes_and_empty_batches_work():
    data = tiny_task(n=1000)
    sizes = [len(batch[0]) for batch in PoissonBatches(data, sample_rate=0.05, steps=400, seed=1)]
    assert sum(sizes) / len(sizes) == pytest.approx(50, rel=0.05)
    assert torch.tensor(sizes, dtype=torch.float).std() == pytest.approx(math.sqrt(1000 * 0.05 * 0.95), rel=0.2)
    # An empty Poisson batch still takes a (pure-noise) step and is accounted.
    model = EmbeddingClassifier(20, 2, embed_dim=8, hidden_dim=8)
    dp = DPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=1.0, max_grad_norm=1.0, seed=0)
    dp.poisson_loader(data, sample_rate=0.01, steps=1)
    dp._mark_poisson()
    empty = data.tensors[0][:0]
    before = model.head.weight.detach().clone()
    dp.step(nn.functional.cross_entropy(model(empty), data.tensors[1][:0], reduction="none"))
    assert not torch.equal(before, model.head.weight)
    assert dp.epsilon(delta=1e-5) > 0


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_private_training_learns_with_any_optimizer(optimizer):
    torch.manual_seed(0)
    data, test = tiny_task(n=2000), tiny_task(n=500, seed=1)
    result = train_private(EmbeddingClassifier(20, 2, embed_dim=16, hidden_dim=16), data, epsilon=8.0, delta=1e-4,
                           epochs=4, batch_size=200, lr=0.05 if optimizer == "adam" else 2.0, optimizer=optimizer)
    assert accuracy(result.model, test) > 0.8
    assert result.epsilon <= 8.0 and result.epsilon > 7.5
    assert result.epsilon == pytest.approx(epsilon_of_history(result.history, delta=1e-4))
    assert not result.model._forward_hooks and all(not m._forward_hooks for m in result.model.modules())


def test_train_private_without_privacy_reports_infinite_epsilon():
    result = train_private(EmbeddingClassifier(20, 2, embed_dim=8, hidden_dim=8), tiny_task(), epsilon=math.inf,
                           epochs=1, batch_size=40)
    assert math.isinf(result.epsilon) and result.noise_multiplier == 0.0 and result.steps == 10


def test_target_epsilon_with_decay_and_micro_batches_is_met():
    result = train_private(EmbeddingClassifier(20, 2, embed_dim=8, hidden_dim=8), tiny_task(), epsilon=2.0,
                           delta=1e-4, epochs=2, batch_size=40, noise_decay=0.9, mode="micro_batch",
                           micro_batch_size=4, accountant="prv")
    assert 1.95 <= result.epsilon <= 2.0
    assert result.history[0][0] == pytest.approx(result.noise_multiplier)
    assert result.history[-1][0] == pytest.approx(result.noise_multiplier * 0.9)


@pytest.mark.parametrize("kwargs, message", [
    (dict(noise_multiplier=0.0), "noise_multiplier"),
    (dict(noise_multiplier=1.0, max_grad_norm=0.0), "max_grad_norm"),
    (dict(noise_multiplier=1.0, max_grad_norm=-1.0), "max_grad_norm"),
    (dict(noise_multiplier=1.0, delta=1.0), "delta"),
    (dict(target_epsilon=0.0, delta=1e-5, epochs=1), "target_epsilon"),
    (dict(target_epsilon=1.0), "delta and epochs"),
    (dict(noise_multiplier=1.0, target_epsilon=1.0), "exactly one"),
    (dict(noise_multiplier=1.0, noise_decay=0.0), "noise_decay"),
])
def test_bad_dpsgd_options(kwargs, message):
    model = nn.Linear(2, 1)
    arguments = dict(max_grad_norm=1.0) | kwargs
    with pytest.raises(ValueError, match=message):
        DPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1), **arguments)


def test_bad_loader_options_and_large_delta():
    model = EmbeddingClassifier(20, 2, embed_dim=8, hidden_dim=8)
    dp = DPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=1.0, max_grad_norm=1.0,
               delta=0.01)
    with pytest.raises(ValueError, match="sample_rate"):
        dp.poisson_loader(tiny_task(), sample_rate=1.5, epochs=1)
    with pytest.warns(UserWarning, match="1/N"):
        dp.poisson_loader(tiny_task(), batch_size=40, epochs=1)
